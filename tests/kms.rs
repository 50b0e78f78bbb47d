//! The master key ring sealed under AWS KMS, as deployed stacks hold it, against a local
//! KMS-compatible server (moto) through the real `aws-sdk-kms` over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use token_vault::{Config, KEYRING_PURPOSE, KeyUse, Vault};
use vault_tests::*;

/// Encrypts `ring` under `key_id` with the key ring's encryption context for `stack`, as the runbook's
/// `aws kms encrypt` does; returns the ciphertext as base64.
async fn seal(kms: &aws_sdk_kms::Client, key_id: &str, stack: &str, ring: &str) -> String {
    let out = kms
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(ring.as_bytes()))
        .encryption_context("purpose", KEYRING_PURPOSE)
        .encryption_context("stack", stack)
        .send()
        .await
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(out.ciphertext_blob.unwrap().into_inner())
}

/// A deployed function's configuration: the sealed ring and a JWKS (HS256 is refused with it).
fn deployed(jwks_url: &str, ciphertext: &str, stack: &str, key_arn: &str) -> Result<Config, token_vault::ConfigError> {
    let env = [
        ("VAULT_KEYRING_CIPHERTEXT", ciphertext),
        ("VAULT_KEYRING_STACK", stack),
        ("VAULT_KMS_KEY_ARN", key_arn),
        ("VAULT_JWKS_URL", jwks_url),
        ("VAULT_IDP_PROFILE", "auth0"),
        ("VAULT_SECRETS_TABLE", SECRETS_TABLE),
        ("VAULT_AUDIT_TABLE", AUDIT_TABLE),
        ("VAULT_KEYS_TABLE", KEYS_TABLE),
    ];
    Config::from_lookup_for(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()), KeyUse::Required)
}

fn rs256(claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(RSA_KEY).unwrap()).unwrap()
}

#[tokio::test]
async fn a_function_opens_its_kms_sealed_key_ring_at_cold_start() {
    let t = TestVault::start().await;
    let kms_server = LocalKms::start().await;
    let kms = kms_server.client().await;
    let key = kms.create_key().description("token-vault test").send().await.unwrap().key_metadata.unwrap();
    let (key_id, key_arn) = (key.key_id().to_owned(), key.arn().unwrap().to_owned());
    let ring = format!("k1:{MASTER_KEY}");
    let sealed = seal(&kms, &key_id, "vault-prod", &ring).await;
    assert!(!sealed.contains(MASTER_KEY), "the configuration holds no key material in the clear");
    let (jwks_url, _) = serve_jwks().await;

    let mut config = deployed(&jwks_url, &sealed, "vault-prod", &key_arn).unwrap();
    assert!(config.keyring.is_none(), "nothing is decrypted before cold start asks KMS");
    assert!(!format!("{config:?}").contains(&sealed[..16]), "Debug shows no ciphertext");
    config.unseal_keyring(&kms).await.unwrap();
    let ring = config.keyring.as_ref().unwrap();
    assert_eq!(ring.active().id(), "k1");
    let vault = Vault::new(config, t.client.clone()).await.unwrap();
    let tok = rs256(&vault_dev::m2m_claims(ISSUER, AUDIENCE, "org1", "client-a", "", 600));
    assert_eq!(send_to(&vault, put(&tok, json!({"name": "k", "value": "sealed-ring"}))).await.status, 201);
    assert_eq!(send_to(&vault, get(&tok, "k")).await.json["value"], "sealed-ring");
    // The same key, given in plain text (a local stack), opens what the sealed ring wrote.
    let local = t.sibling(&[("VAULT_MASTER_KEY", ""), ("VAULT_MASTER_KEYS", &format!("k1:{MASTER_KEY}"))]).await;
    assert_eq!(send_to(&local, get(&m2m("org1", "client-a"), "k")).await.json["value"], "sealed-ring");
}

#[tokio::test]
async fn a_ring_sealed_for_another_stack_or_altered_never_opens() {
    let kms_server = LocalKms::start().await;
    let kms = kms_server.client().await;
    let key = kms.create_key().send().await.unwrap().key_metadata.unwrap();
    let (key_id, key_arn) = (key.key_id().to_owned(), key.arn().unwrap().to_owned());
    let (jwks_url, _) = serve_jwks().await;
    let other_stack = seal(&kms, &key_id, "vault-staging", &format!("k1:{MASTER_KEY}")).await;
    let mut config = deployed(&jwks_url, &other_stack, "vault-prod", &key_arn).unwrap();
    let err = config.unseal_keyring(&kms).await.unwrap_err().to_string();
    assert!(err.starts_with("VAULT_KEYRING_CIPHERTEXT is invalid: AWS KMS did not decrypt it"), "{err}");
    assert!(!err.contains(MASTER_KEY) && !err.contains(&other_stack[..16]), "{err}");
    assert!(config.keyring.is_none());

    let sealed = seal(&kms, &key_id, "vault-prod", &format!("k1:{MASTER_KEY}")).await;
    let mut bytes = base64::engine::general_purpose::STANDARD.decode(&sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let altered = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut config = deployed(&jwks_url, &altered, "vault-prod", &key_arn).unwrap();
    assert!(config.unseal_keyring(&kms).await.is_err());

    let not_a_ring = seal(&kms, &key_id, "vault-prod", "hello").await;
    let mut config = deployed(&jwks_url, &not_a_ring, "vault-prod", &key_arn).unwrap();
    let err = config.unseal_keyring(&kms).await.unwrap_err().to_string();
    assert!(err.contains("the key it holds is invalid"), "{err}");

    // A vault cannot be built from a configuration whose ring was never opened.
    let config = deployed(&jwks_url, &sealed, "vault-prod", &key_arn).unwrap();
    let t = TestVault::start().await;
    assert!(Vault::new(config, t.client.clone()).await.is_err());
}

#[test]
fn a_sealed_ring_refuses_hs256_and_plain_keys() {
    let env = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![
            ("VAULT_KEYRING_CIPHERTEXT", "AQID"),
            ("VAULT_KEYRING_STACK", "vault-prod"),
            ("VAULT_SECRETS_TABLE", SECRETS_TABLE),
            ("VAULT_AUDIT_TABLE", AUDIT_TABLE),
            ("VAULT_KEYS_TABLE", KEYS_TABLE),
        ];
        env.extend_from_slice(extra);
        // Later entries win.
        Config::from_lookup_for(
            |k| env.iter().rev().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()),
            KeyUse::Required,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let err = env(&[("VAULT_JWT_HS256_SECRET", HS256_SECRET)]).unwrap_err();
    assert!(err.contains("HS256 is for local stacks only"), "{err}");
    let err = env(&[
        ("VAULT_JWKS_URL", "https://idp.example/jwks"),
        ("VAULT_IDP_PROFILE", "auth0"),
        ("VAULT_MASTER_KEY", MASTER_KEY),
    ])
    .unwrap_err();
    assert!(err.contains("not both") && !err.contains(MASTER_KEY), "{err}");
    let err = env(&[
        ("VAULT_JWKS_URL", "https://idp.example/jwks"),
        ("VAULT_IDP_PROFILE", "auth0"),
        ("VAULT_KEYRING_STACK", ""),
    ])
    .unwrap_err();
    assert!(err.contains("VAULT_KEYRING_STACK"), "{err}");
    assert!(env(&[("VAULT_JWKS_URL", "https://idp.example/jwks"), ("VAULT_IDP_PROFILE", "auth0")]).is_ok());
}
