//! Configuration, read once per cold start from the environment.
//!
//! A missing or malformed setting fails the cold start with one clear line; no request is ever served
//! with a half-valid configuration.

use std::time::Duration;

use secrecy::SecretBox;

mod idp;
mod keyring;

use crate::crypto::{Keyring, MasterKey};

pub use idp::{ClaimRules, IdpProfile, MachineRule};
pub use keyring::{KEYRING_PURPOSE, SealedKeyring};

/// Default `iss` when `VAULT_JWT_ISSUER` is unset (local development).
pub const DEFAULT_ISSUER: &str = "https://vault.local/";
/// Default `aud` when `VAULT_JWT_AUDIENCE` is unset (local development).
pub const DEFAULT_AUDIENCE: &str = "token-vault";
/// Default audit retention.
pub(crate) const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 365;
/// How long a retrieval waits for its audit event before failing closed.
pub(crate) const DEFAULT_AUDIT_TIMEOUT: Duration = Duration::from_millis(2_000);
/// The overall deadline of one request: below the functions' 10 s Lambda timeout (template.yaml), so a
/// slow DynamoDB gives the caller a 503 with `Retry-After` rather than a Lambda timeout.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(8_000);

/// A JWKS document is fetched again on an unknown `kid` at most this often.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// A JWKS URL must be `https://`, or plain `http://` to a loopback host (a local identity provider);
/// never with credentials in it. Parsed, not matched by prefix: `http://localhost.evil.example/` and
/// `http://localhost@evil.example/` are not local.
pub(crate) fn check_jwks_url(url: &str) -> Result<(), &'static str> {
    let uri: lambda_http::http::Uri = url.parse().map_err(|_| "must be an absolute URL")?;
    let authority = uri.authority().ok_or("must be an absolute URL")?;
    if authority.as_str().contains('@') {
        return Err("must not hold credentials (user@host)");
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err("must be an https:// URL (plain http only for a loopback host)"),
    }
}

/// Where token signing keys come from.
pub enum JwtKeySource {
    /// `VAULT_JWKS_URL`: RS256/ES256 keys from the identity provider's JWKS document.
    Jwks { url: String },
    /// `VAULT_JWT_HS256_SECRET`: a shared HS256 secret, for local development and tests.
    Hs256 { secret: SecretBox<Vec<u8>> },
}

impl std::fmt::Debug for JwtKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Jwks { url } => f.debug_struct("Jwks").field("url", url).finish(),
            Self::Hs256 { .. } => f.write_str("Hs256([REDACTED])"),
        }
    }
}

/// How bearer tokens are verified.
#[derive(Debug)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub keys: JwtKeySource,
    /// Shortest time between two JWKS fetches (one minute; shorter only in tests).
    pub jwks_min_refresh: Duration,
    /// Which claims say who the caller is.
    pub claims: ClaimRules,
}

/// Everything a function needs, from the environment.
#[derive(Debug)]
pub struct Config {
    pub secrets_table: String,
    pub audit_table: String,
    /// `VAULT_KEYS_TABLE`: the organizations' salts, in a table of their own without point-in-time
    /// recovery, so that no backup of the secrets table holds what a shred destroys.
    pub keys_table: String,
    /// The master keys: `VAULT_MASTER_KEYS` (`id:hex,...`, first active) or a lone `VAULT_MASTER_KEY`.
    /// `None` in a function that handles no secret value (the audit reader), which never reads them.
    pub keyring: Option<Keyring>,
    /// The key ring as an AWS KMS ciphertext, until [`Config::unseal_keyring`] opens it into `keyring`.
    pub sealed_keyring: Option<SealedKeyring>,
    pub jwt: JwtConfig,
    pub audit_retention_days: u32,
    pub audit_timeout: Duration,
    /// `VAULT_REQUEST_TIMEOUT_MS`: the overall deadline of one request.
    pub request_timeout: Duration,
    /// The proxy's settings (and, for every writer, whether loopback upstreams may be written).
    pub proxy: ProxySettings,
}

/// How the proxy calls upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxySettings {
    /// `VAULT_PROXY_ALLOW_LOOPBACK=true`: the local-development switch. Upstreams on loopback
    /// (`localhost`, `127.0.0.0/8`, `[::1]`, and plain `http://` to them) may then be written and called;
    /// private, link-local and metadata addresses stay refused. Refused with a KMS-sealed key ring.
    pub allow_loopback: bool,
    /// `VAULT_PROXY_FIRST_BYTE_TIMEOUT_MS`: from sending the request to the upstream's response head
    /// (a non-streamed completion may take minutes).
    pub first_byte_timeout: Duration,
    /// `VAULT_PROXY_IDLE_TIMEOUT_MS`: longest pause between two parts of the upstream's body.
    pub idle_timeout: Duration,
    /// `VAULT_PROXY_MAX_DURATION_MS`: the longest one proxied call lasts, streaming included (below the
    /// function's 15-minute timeout).
    pub max_duration: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            max_duration: Duration::from_secs(870),
        }
    }
}

/// A configuration problem, named precisely enough to fix from one log line. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
}

/// Whether a function works with master keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// It seals or opens values: the keys must be set and valid.
    Required,
    /// It never touches a value: the keys are not read, even where the environment holds them.
    None,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env(keys: KeyUse) -> Result<Self, ConfigError> {
        Self::from_lookup_for(|name| std::env::var(name).ok(), keys)
    }

    /// Reads the configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_lookup_for(lookup, KeyUse::Required)
    }

    /// As [`Config::from_lookup`], for a function with the given use of keys.
    pub fn from_lookup_for(lookup: impl Fn(&str) -> Option<String>, keys: KeyUse) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let require = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));

        // On AWS the ring arrives sealed under KMS (VAULT_KEYRING_CIPHERTEXT), opened at cold start by
        // `Config::unseal_keyring`; locally, in plain text.
        let sealed = if keys == KeyUse::None { None } else { SealedKeyring::from_lookup(&get)? };
        let keyring = match (&sealed, keys) {
            (_, KeyUse::None) | (Some(_), _) => {
                if sealed.is_some() && (get("VAULT_MASTER_KEY").is_some() || get("VAULT_MASTER_KEYS").is_some()) {
                    return Err(ConfigError::Invalid {
                        name: "VAULT_KEYRING_CIPHERTEXT",
                        why: "set either the KMS-sealed key ring or VAULT_MASTER_KEY(S), not both".into(),
                    });
                }
                None
            }
            (None, KeyUse::Required) => Some(Self::keyring(get("VAULT_MASTER_KEYS"), get("VAULT_MASTER_KEY"))?),
        };

        let keys = match (get("VAULT_JWKS_URL"), get("VAULT_JWT_HS256_SECRET")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "VAULT_JWKS_URL",
                    why: "set either VAULT_JWKS_URL or VAULT_JWT_HS256_SECRET, not both".into(),
                });
            }
            (Some(url), None) => {
                check_jwks_url(&url).map_err(|why| ConfigError::Invalid { name: "VAULT_JWKS_URL", why: why.into() })?;
                JwtKeySource::Jwks { url }
            }
            (None, Some(_)) if sealed.is_some() => {
                // A stack whose key ring is sealed under KMS is a deployed one: its tokens come from an
                // identity provider, never from a shared secret that sits in its configuration.
                return Err(ConfigError::Invalid {
                    name: "VAULT_JWT_HS256_SECRET",
                    why: "HS256 is for local stacks only; a stack with a KMS-sealed key ring verifies tokens through VAULT_JWKS_URL".into(),
                });
            }
            (None, Some(secret)) => {
                if secret.len() < 32 {
                    return Err(ConfigError::Invalid {
                        name: "VAULT_JWT_HS256_SECRET",
                        why: "must be at least 32 characters".into(),
                    });
                }
                JwtKeySource::Hs256 { secret: SecretBox::new(Box::new(secret.into_bytes())) }
            }
            (None, None) => return Err(ConfigError::Missing("VAULT_JWKS_URL or VAULT_JWT_HS256_SECRET")),
        };

        let number = |name: &'static str, range: std::ops::RangeInclusive<u64>, unit: &str, note: &str| {
            get(name)
                .map(|v| {
                    v.parse::<u64>().ok().filter(|n| range.contains(n)).ok_or_else(|| ConfigError::Invalid {
                        name,
                        why: format!(
                            "must be a whole number of {unit} from {} to {}{note}",
                            range.start(),
                            range.end()
                        ),
                    })
                })
                .transpose()
        };
        let audit_retention_days = number("VAULT_AUDIT_RETENTION_DAYS", 1..=36_500, "days", "")?
            .map_or(DEFAULT_AUDIT_RETENTION_DAYS, |d| u32::try_from(d).unwrap_or(DEFAULT_AUDIT_RETENTION_DAYS));
        let audit_timeout = number("VAULT_AUDIT_TIMEOUT_MS", 1..=30_000, "milliseconds", "")?
            .map_or(DEFAULT_AUDIT_TIMEOUT, Duration::from_millis);
        let request_timeout =
            number("VAULT_REQUEST_TIMEOUT_MS", 100..=60_000, "milliseconds", " (keep it below the Lambda timeout)")?
                .map_or(DEFAULT_REQUEST_TIMEOUT, Duration::from_millis);

        let defaults = ProxySettings::default();
        let proxy_time = |name: &'static str, default: Duration| {
            number(name, 100..=900_000, "milliseconds", " (at most the proxy's 15-minute Lambda timeout)")
                .map(|v| v.map_or(default, Duration::from_millis))
        };
        let allow_loopback = match get("VAULT_PROXY_ALLOW_LOOPBACK").as_deref() {
            None | Some("false") => false,
            Some("true") if sealed.is_some() => {
                return Err(ConfigError::Invalid {
                    name: "VAULT_PROXY_ALLOW_LOOPBACK",
                    why: "the loopback switch is for local stacks only; a stack with a KMS-sealed key ring never calls loopback upstreams".into(),
                });
            }
            Some("true") => true,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "VAULT_PROXY_ALLOW_LOOPBACK",
                    why: "must be true or false".into(),
                });
            }
        };
        let proxy = ProxySettings {
            allow_loopback,
            first_byte_timeout: proxy_time("VAULT_PROXY_FIRST_BYTE_TIMEOUT_MS", defaults.first_byte_timeout)?,
            idle_timeout: proxy_time("VAULT_PROXY_IDLE_TIMEOUT_MS", defaults.idle_timeout)?,
            max_duration: proxy_time("VAULT_PROXY_MAX_DURATION_MS", defaults.max_duration)?,
        };

        let audience = get("VAULT_JWT_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.into());
        let profile = match get("VAULT_IDP_PROFILE") {
            Some(name) => IdpProfile::parse(&name).ok_or_else(|| ConfigError::Invalid {
                name: "VAULT_IDP_PROFILE",
                why: "must be one of auth0, okta, entra, cognito, keycloak, rfc9068".into(),
            })?,
            // The local stack's HS256 tokens are Auth0-shaped; a real provider must be named.
            None if matches!(keys, JwtKeySource::Hs256 { .. }) => IdpProfile::Auth0,
            None => {
                return Err(ConfigError::Missing(
                    "VAULT_IDP_PROFILE (the identity provider: auth0, okta, entra, cognito, keycloak or rfc9068)",
                ));
            }
        };
        let claims = ClaimRules::from_lookup(&get, profile, &audience)?;

        Ok(Self {
            secrets_table: require("VAULT_SECRETS_TABLE")?,
            audit_table: require("VAULT_AUDIT_TABLE")?,
            keys_table: require("VAULT_KEYS_TABLE")?,
            keyring,
            sealed_keyring: sealed,
            jwt: JwtConfig {
                issuer: get("VAULT_JWT_ISSUER").unwrap_or_else(|| DEFAULT_ISSUER.into()),
                audience,
                keys,
                jwks_min_refresh: JWKS_REFRESH_INTERVAL,
                claims,
            },
            audit_retention_days,
            audit_timeout,
            request_timeout,
            proxy,
        })
    }

    fn keyring(ring: Option<String>, lone: Option<String>) -> Result<Keyring, ConfigError> {
        match (ring, lone) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                name: "VAULT_MASTER_KEYS",
                why: "set either VAULT_MASTER_KEYS or VAULT_MASTER_KEY, not both".into(),
            }),
            (Some(spec), None) => {
                Keyring::parse(&spec).map_err(|why| ConfigError::Invalid { name: "VAULT_MASTER_KEYS", why })
            }
            (None, Some(hex_key)) => MasterKey::from_hex(&hex_key)
                .map(Keyring::single)
                .map_err(|why| ConfigError::Invalid { name: "VAULT_MASTER_KEY", why: why.to_owned() }),
            (None, None) => Err(ConfigError::Missing(
                "VAULT_KEYRING_CIPHERTEXT (the KMS-sealed key ring; on a local stack, VAULT_MASTER_KEY)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    /// The base environment with `extra` added.
    fn with(extra: (&'static str, &'static str)) -> Result<Config, ConfigError> {
        let mut e = base();
        e.push(extra);
        env(&e)
    }

    /// The base environment verifying tokens through the JWKS at `url` instead of HS256.
    fn jwks_env(url: &str) -> Result<Config, ConfigError> {
        let mut e: Vec<(&str, &str)> = base().into_iter().filter(|(k, _)| *k != "VAULT_JWT_HS256_SECRET").collect();
        e.push(("VAULT_JWKS_URL", url));
        e.push(("VAULT_IDP_PROFILE", "auth0"));
        env(&e)
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("VAULT_MASTER_KEY", KEY),
            ("VAULT_JWT_HS256_SECRET", "a-development-secret-of-32-chars!!"),
            ("VAULT_SECRETS_TABLE", "secrets"),
            ("VAULT_AUDIT_TABLE", "audit"),
            ("VAULT_KEYS_TABLE", "keys"),
        ]
    }

    #[test]
    fn defaults_apply() {
        let c = env(&base()).unwrap();
        assert_eq!(c.jwt.issuer, DEFAULT_ISSUER);
        assert_eq!(c.jwt.audience, DEFAULT_AUDIENCE);
        assert_eq!(c.audit_retention_days, 365);
    }

    #[test]
    fn missing_master_key_is_named() {
        let mut e = base();
        e.retain(|(k, _)| *k != "VAULT_MASTER_KEY");
        assert_eq!(
            env(&e).unwrap_err().to_string(),
            "VAULT_KEYRING_CIPHERTEXT (the KMS-sealed key ring; on a local stack, VAULT_MASTER_KEY) is not set"
        );
    }

    #[test]
    fn a_keyless_function_never_reads_the_keys() {
        let mut e = base();
        e[0] = ("VAULT_MASTER_KEY", "not-a-key");
        let c = Config::from_lookup_for(|k| e.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()), KeyUse::None);
        assert!(c.unwrap().keyring.is_none());
    }

    #[test]
    fn malformed_master_key_is_refused_without_echoing_it() {
        for bad in [&KEY[..62], "zz02030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", &format!("{KEY}00")] {
            let mut e = base();
            e[0] = ("VAULT_MASTER_KEY", bad);
            let err = env(&e).unwrap_err().to_string();
            assert!(err.starts_with("VAULT_MASTER_KEY is invalid"), "{err}");
            assert!(!err.contains(&bad[2..20]), "error echoes the key: {err}");
        }
    }

    #[test]
    fn a_keyring_replaces_the_lone_key() {
        let mut e = base();
        e.retain(|(k, _)| *k != "VAULT_MASTER_KEY");
        let ring = format!("k2:{},k1:{KEY}", "ab".repeat(32));
        e.push(("VAULT_MASTER_KEYS", &ring));
        let c = env(&e).unwrap();
        let ring = c.keyring.unwrap();
        assert_eq!(ring.active().id(), "k2");
        assert_eq!(ring.keys().len(), 2);
        e.push(("VAULT_MASTER_KEY", KEY));
        assert!(env(&e).unwrap_err().to_string().contains("not both"));
        let mut e = base();
        e.retain(|(k, _)| *k != "VAULT_MASTER_KEY");
        e.push(("VAULT_MASTER_KEYS", "k1:00"));
        let err = env(&e).unwrap_err().to_string();
        assert!(err.starts_with("VAULT_MASTER_KEYS is invalid"), "{err}");
    }

    #[test]
    fn key_sources_are_exclusive_and_required() {
        assert!(with(("VAULT_JWKS_URL", "https://idp.example/.well-known/jwks.json")).is_err());
        let mut e = base();
        e.retain(|(k, _)| *k != "VAULT_JWT_HS256_SECRET");
        assert!(env(&e).unwrap_err().to_string().contains("VAULT_JWKS_URL or VAULT_JWT_HS256_SECRET"));
        e.push(("VAULT_JWKS_URL", "http://idp.example/jwks.json"));
        assert!(env(&e).is_err(), "plain http JWKS must be refused");
    }

    #[test]
    fn jwks_urls_are_parsed_not_prefix_matched() {
        for ok in [
            "https://idp.example/.well-known/jwks.json",
            "http://localhost:9400/jwks",
            "http://127.0.0.1:9400/jwks",
            "http://127.1.2.3/jwks",
            "http://[::1]:9400/jwks",
        ] {
            assert_eq!(check_jwks_url(ok), Ok(()), "{ok}");
            assert!(jwks_env(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://localhost.evil.example/jwks",
            "http://localhost@evil.example/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "http://127.0.0.1@evil.example/jwks",
            "https://user:pass@idp.example/jwks",
            "http://idp.example/jwks",
            "ftp://localhost/jwks",
            "localhost/jwks",
            "",
        ] {
            assert!(check_jwks_url(bad).is_err(), "{bad}");
            assert!(jwks_env(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert!(with(("VAULT_AUDIT_RETENTION_DAYS", "0")).is_err());
        assert!(with(("VAULT_AUDIT_TIMEOUT_MS", "soon")).is_err());
        for bad in ["0", "99", "60001", "fast", "-5"] {
            let err = with(("VAULT_REQUEST_TIMEOUT_MS", bad)).unwrap_err().to_string();
            assert!(err.starts_with("VAULT_REQUEST_TIMEOUT_MS is invalid"), "{err}");
        }
    }

    #[test]
    fn request_deadline_defaults_below_the_lambda_timeout() {
        assert_eq!(env(&base()).unwrap().request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(DEFAULT_REQUEST_TIMEOUT < Duration::from_secs(10));
        assert_eq!(with(("VAULT_REQUEST_TIMEOUT_MS", "1500")).unwrap().request_timeout, Duration::from_millis(1500));
    }
}
