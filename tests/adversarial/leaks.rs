//! Leaks: everything the suites of this binary produced (every captured log line, every error body,
//! every body and header the proxy relayed, every audit record) must hold no secret value, master key, organization or data key, HS256 secret or
//! bearer token. The suites hand over their stores and audit tables with [`keep`] before they end.

use std::sync::Mutex;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use vault_tests::*;

/// Every secret value written in this binary starts with this, so any leak of any value is found.
pub const VALUE_MARKER: &str = "SECRETVALUE";

/// A secret value for `label`, carrying the marker.
pub fn value(label: &str) -> String {
    format!("{VALUE_MARKER}-{label}-{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    h.finish()
}

struct Kept {
    audit: Vec<String>,
    secrets: Vec<Item>,
}

fn kept() -> &'static Mutex<Kept> {
    static KEPT: Mutex<Kept> = Mutex::new(Kept { audit: Vec::new(), secrets: Vec::new() });
    &KEPT
}

/// Hands a suite's audit records and secret items to the leak check.
pub async fn keep(t: &TestVault) {
    let audit: Vec<String> = t.all_audit_items().await.iter().map(|i| format!("{i:?}")).collect();
    // The secrets, and the salts (in the keys table) the check re-derives their keys from.
    let mut secrets = t.all_secret_items().await;
    secrets.extend(t.all_key_items().await);
    let mut k = kept().lock().unwrap();
    k.audit.extend(audit);
    k.secrets.extend(secrets);
}

/// HKDF-SHA256 of the organization key, re-derived from the README's documented hierarchy.
fn org_key(master: &[u8], org: &str, salt: &[u8]) -> [u8; 32] {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), master);
    let mut info = Vec::new();
    field(&mut info, b"token-vault/v1/org-key");
    field(&mut info, org.as_bytes());
    let mut out = [0u8; 32];
    hk.expand(&info, &mut out).unwrap();
    out
}

fn field(out: &mut Vec<u8>, f: &[u8]) {
    out.extend_from_slice(&(f.len() as u64).to_be_bytes());
    out.extend_from_slice(f);
}

/// The data key of a stored secret item, unwrapped independently of the vault's code.
fn data_key(master: &[u8], org: &str, salt: &[u8], item: &Item) -> Option<Vec<u8>> {
    let key = org_key(master, org, salt);
    let wrapped = item.get("wrappedKey")?.as_b().ok()?.as_ref().to_vec();
    let (kind, id) = match s(item, "ownership").as_str() {
        "app" => ("app", s(item, "clientId")),
        _ => ("user", unescape(s(item, "pk").rsplit_once("#user#")?.1)),
    };
    let version: u8 = item.get("encVersion")?.as_n().ok()?.parse().ok()?;
    let mut aad = Vec::new();
    field(&mut aad, b"token-vault/data-key");
    field(&mut aad, s(item, "keyId").as_bytes());
    field(&mut aad, &[version]);
    field(&mut aad, org.as_bytes());
    field(&mut aad, kind.as_bytes());
    field(&mut aad, id.as_bytes());
    field(&mut aad, s(item, "sk").split('#').next().unwrap_or("").as_bytes());
    if version >= 2 {
        // Format 2 binds the access mode and the upstream too (README, "Encryption").
        field(&mut aad, if s(item, "access").is_empty() { b"readable" } else { b"use-only" });
        match item.get("upstream").and_then(|u| u.as_s().ok()) {
            None => field(&mut aad, b"no-upstream"),
            Some(json) => {
                let up: serde_json::Value = serde_json::from_str(json).ok()?;
                let text = |k: &str| up[k].as_str().unwrap_or("").as_bytes().to_vec();
                field(&mut aad, b"upstream");
                field(&mut aad, &text("baseUrl"));
                if up.get("query").is_some() {
                    field(&mut aad, b"query");
                    field(&mut aad, &text("query"));
                } else {
                    field(&mut aad, b"header");
                    field(&mut aad, &text("header"));
                    field(&mut aad, &text("template"));
                }
                for list in ["methods", "paths"] {
                    let entries = up[list].as_array().cloned().unwrap_or_default();
                    field(&mut aad, &(entries.len() as u64).to_be_bytes());
                    for e in entries {
                        field(&mut aad, e.as_str().unwrap_or("").as_bytes());
                    }
                }
            }
        }
    }
    let (nonce, body) = wrapped.split_at(12);
    Aes256Gcm::new((&key).into()).decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: &aad }).ok()
}

fn unescape(id: &str) -> String {
    id.replace("%23", "#").replace("%25", "%")
}

/// Every encoding of `bytes` a careless log line could hold.
fn encodings(bytes: &[u8]) -> Vec<String> {
    vec![hex::encode(bytes), hex::encode_upper(bytes), STANDARD.encode(bytes), URL_SAFE_NO_PAD.encode(bytes)]
}

pub async fn nothing_secret_in_logs_bodies_or_audit() {
    let logs = logs();
    let error_bodies: Vec<String> =
        recorded_bodies().into_iter().filter(|b| b.contains(r#""success":false"#)).collect();
    let (audit, secrets) = {
        let k = kept().lock().unwrap();
        (k.audit.clone(), k.secrets.clone())
    };
    assert!(logs.contains("request completed"), "the suites' logs were captured");
    assert!(!error_bodies.is_empty() && !audit.is_empty(), "the suites' error bodies and audit records were kept");

    let mut forbidden: Vec<(String, String)> = vec![
        ("a secret value".into(), VALUE_MARKER.into()),
        ("the HS256 secret".into(), HS256_SECRET.into()),
        ("the master key".into(), MASTER_KEY.into()),
        ("the master key".into(), MASTER_KEY.to_uppercase()),
    ];
    let master = hex::decode(MASTER_KEY).unwrap();
    forbidden.extend(encodings(&master).into_iter().map(|e| ("the master key".into(), e)));
    let mut data_keys = 0;
    for item in &secrets {
        if s(item, "sk") != "salt" {
            continue;
        }
        let org = unescape(s(item, "pk").trim_start_matches("org#").trim_end_matches("#meta"));
        let salt = item["salt"].as_b().unwrap().as_ref().to_vec();
        let org_key = org_key(&master, &org, &salt);
        forbidden.extend(encodings(&org_key).into_iter().map(|e| (format!("the key of {org}"), e)));
        let prefix = format!("org#{}#", s(item, "pk").trim_start_matches("org#").trim_end_matches("#meta"));
        for secret in secrets.iter().filter(|i| s(i, "pk").starts_with(&prefix) && i.contains_key("wrappedKey")) {
            if let Some(key) = data_key(&master, &org, &salt, secret) {
                data_keys += 1;
                forbidden.extend(encodings(&key).into_iter().map(|e| ("a data key".into(), e)));
            }
        }
    }
    assert!(data_keys > 0, "the check unwrapped the suites' data keys ({data_keys})");
    let tokens = issued_tokens();
    assert!(!tokens.is_empty(), "the suites' tokens were recorded");
    for tok in tokens {
        // A token's signature alone is as sensitive as the token.
        let sig = tok.rsplit('.').next().unwrap_or("").to_owned();
        if sig.len() >= 16 {
            forbidden.push(("a bearer token's signature".into(), sig));
        }
        forbidden.push(("a bearer token".into(), tok));
    }

    let proxied = proxied_bodies();
    let mut found = Vec::new();
    for (what, needle) in &forbidden {
        if proxied.iter().any(|b| b.contains(needle.as_str())) {
            found.push(format!("{what} in a body or header the proxy relayed"));
        }
        if logs.contains(needle.as_str()) {
            found.push(format!("{what} in a log line"));
        }
        if error_bodies.iter().any(|b| b.contains(needle.as_str())) {
            found.push(format!("{what} in an error body"));
        }
        if audit.iter().any(|a| a.contains(needle.as_str())) {
            found.push(format!("{what} in an audit record"));
        }
    }
    found.sort();
    found.dedup();
    assert!(found.is_empty(), "leaks found: {found:?}");
}
