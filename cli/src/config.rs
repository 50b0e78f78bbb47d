//! Where the vault is and which token to send: flags, then the environment, then the config file
//! (`$XDG_CONFIG_HOME/tvault/config.json`, else `~/.config/tvault/config.json`); the token from
//! `--token-file`, `TOKEN_VAULT_TOKEN`, `TOKEN_VAULT_TOKEN_FILE`, the config file's `tokenFile`, or the
//! token `tvault login` cached (`token.json` beside the config, mode 0600).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::api::Failure;

/// The config file. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub url: Option<String>,
    pub proxy_url: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// The token `tvault login` caches.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedToken {
    pub access_token: String,
    /// Epoch seconds; `None` when neither the provider nor the token said.
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Drop for CachedToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.access_token);
    }
}

pub fn config_dir() -> Result<PathBuf, Failure> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("tvault"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("tvault")),
        None => Err(Failure::Other("neither XDG_CONFIG_HOME nor HOME is set: no config directory".into())),
    }
}

pub fn load_file_config() -> Result<FileConfig, Failure> {
    let path = config_dir()?.join("config.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| Failure::Invalid(format!("{} is not a valid config file: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(Failure::Other(format!("could not read {}: {e}", path.display()))),
    }
}

/// The vault URL: the flag (or `TOKEN_VAULT_URL`, which clap reads), else the config file's.
pub fn vault_url(flag: Option<&str>, file: &FileConfig) -> Result<String, Failure> {
    let url = flag.map(str::to_owned).or_else(|| file.url.clone()).ok_or_else(|| {
        Failure::Usage(
            "no vault URL: pass --url, set TOKEN_VAULT_URL, or put \"url\" in the config file \
             (for the local stack: http://127.0.0.1:9000)"
                .into(),
        )
    })?;
    check_url(&url)?;
    Ok(url.trim_end_matches('/').to_owned())
}

/// The proxy URL: the flag (or `TOKEN_VAULT_PROXY_URL`), else the config file's, else the vault URL
/// (the local stack serves both on one port).
pub fn proxy_url(flag: Option<&str>, file: &FileConfig, vault: &str) -> Result<String, Failure> {
    let url = flag.map(str::to_owned).or_else(|| file.proxy_url.clone()).unwrap_or_else(|| vault.to_owned());
    check_url(&url)?;
    Ok(url.trim_end_matches('/').to_owned())
}

fn check_url(url: &str) -> Result<(), Failure> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Failure::Invalid(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Failure::Invalid(format!("{url:?} is not an http(s) URL")));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(Failure::Invalid(format!("{url:?}: give the base URL alone (no query, fragment or user)")));
    }
    check_transport(&parsed)
}

/// Tokens and secrets travel over HTTPS; plain HTTP only to this machine (the local stack).
pub fn check_transport(url: &reqwest::Url) -> Result<(), Failure> {
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(Failure::Invalid(format!(
            "{url} is plain HTTP to another machine: tokens and secrets would travel unencrypted; use https://"
        )));
    }
    Ok(())
}

/// The bearer token, from the first source that has one.
pub fn token(flag_file: Option<&Path>, file: &FileConfig) -> Result<Zeroizing<String>, Failure> {
    if let Some(path) = flag_file {
        return read_token_file(path);
    }
    if let Some(t) = std::env::var("TOKEN_VAULT_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok(Zeroizing::new(t.trim().to_owned()));
    }
    if let Some(path) = std::env::var_os("TOKEN_VAULT_TOKEN_FILE").filter(|p| !p.is_empty()) {
        return read_token_file(Path::new(&path));
    }
    if let Some(path) = &file.token_file {
        return read_token_file(path);
    }
    let cache = config_dir()?.join("token.json");
    let text = match std::fs::read_to_string(&cache) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::Denied(
                "no token: set TOKEN_VAULT_TOKEN, pass --token-file, or run `tvault login`".into(),
            ));
        }
        Err(e) => return Err(Failure::Other(format!("could not read {}: {e}", cache.display()))),
    };
    let cached: CachedToken = serde_json::from_str(&text)
        .map_err(|_| Failure::Denied(format!("{} is damaged; run `tvault login` again", cache.display())))?;
    if let Some(at) = cached.expires_at
        && at <= now() + 10
    {
        return Err(Failure::Denied(format!(
            "the token `tvault login` cached expired at {}; run `tvault login` again",
            crate::output::date(at)
        )));
    }
    Ok(Zeroizing::new(cached.access_token.clone()))
}

fn read_token_file(path: &Path) -> Result<Zeroizing<String>, Failure> {
    let text = std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| Failure::Other(format!("could not read the token file {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Failure::Denied(format!("the token file {} is empty", path.display())));
    }
    Ok(Zeroizing::new(token.to_owned()))
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A JWT's `exp` claim, read without verifying (the vault verifies; this only says when to stop using it).
pub fn jwt_expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_i64()
}

/// Writes the cached token, readable by its owner alone (the directory too).
pub fn save_token(token: &CachedToken) -> Result<PathBuf, Failure> {
    let dir = config_dir()?;
    let fail = |what: &str, e: std::io::Error| Failure::Other(format!("could not {what}: {e}"));
    std::fs::create_dir_all(&dir).map_err(|e| fail(&format!("create {}", dir.display()), e))?;
    let path = dir.join("token.json");
    let tmp = dir.join(".token.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(&format!("restrict {}", dir.display()), e))?;
    }
    let text = Zeroizing::new(
        serde_json::to_string(token).map_err(|e| Failure::Other(format!("could not encode the token: {e}")))?,
    );
    let mut f = options.open(&tmp).map_err(|e| fail(&format!("write {}", tmp.display()), e))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| fail("write the token", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| fail(&format!("write {}", path.display()), e))?;
    Ok(path)
}

pub fn forget_token() -> Result<bool, Failure> {
    let path = config_dir()?.join("token.json");
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Failure::Other(format!("could not remove {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwts_expiry_is_read_from_its_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"a","exp":1900000000}"#);
        assert_eq!(jwt_expiry(&format!("h.{payload}.s")), Some(1_900_000_000));
        assert_eq!(jwt_expiry("not-a-jwt"), None);
    }

    #[test]
    fn urls_are_checked_and_trimmed() {
        let file = FileConfig::default();
        assert_eq!(vault_url(Some("http://127.0.0.1:9000/"), &file).unwrap(), "http://127.0.0.1:9000");
        assert!(matches!(vault_url(Some("ftp://x"), &file), Err(Failure::Invalid(_))));
        assert!(matches!(vault_url(Some("https://x/?a=1"), &file), Err(Failure::Invalid(_))));
        assert!(matches!(vault_url(Some("http://vault.example.com"), &file), Err(Failure::Invalid(_))));
        assert!(
            vault_url(Some("http://localhost:9000"), &file).is_ok() && vault_url(Some("http://[::1]:9"), &file).is_ok()
        );
        assert!(matches!(vault_url(None, &file), Err(Failure::Usage(_))));
        let with = FileConfig { url: Some("https://vault.example".into()), ..FileConfig::default() };
        assert_eq!(vault_url(None, &with).unwrap(), "https://vault.example");
        assert_eq!(proxy_url(None, &with, "https://vault.example").unwrap(), "https://vault.example");
    }
}
