//! Token verification against an identity provider's JWKS (RS256 and ES256), served over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use vault_tests::*;

fn claims() -> Value {
    vault_dev::m2m_claims(ISSUER, AUDIENCE, "org1", "client-a", "", 600)
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims(), key).unwrap()
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_and_confusions_do_not() {
    let t = TestVault::start().await;
    let (url, hits) = serve_jwks().await;
    let vault = t.sibling(&[("VAULT_JWT_HS256_SECRET", ""), ("VAULT_JWKS_URL", &url)]).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "JWKS fetched at cold start");

    let rsa = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
    let ec = EncodingKey::from_ec_pem(EC_KEY).unwrap();
    for tok in [sign(Algorithm::RS256, "rsa-1", &rsa), sign(Algorithm::ES256, "ec-1", &ec)] {
        let r = send_to(&vault, put(&tok, json!({"name": "k", "value": "v"}))).await;
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
        assert_eq!(send_to(&vault, get(&tok, "k")).await.json["value"], "v");
    }

    let b64 = |v: &Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
    let refused = [
        // Algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret.
        sign(Algorithm::HS256, "rsa-1", &EncodingKey::from_secret(RSA_PUB).unwrap()),
        // The JWKS's symmetric key is never usable.
        sign(Algorithm::HS256, "hmac-1", &EncodingKey::from_secret(b"secret-secret-secret-secret-secret").unwrap()),
        // A key used with the other family's algorithm.
        sign(Algorithm::RS256, "ec-1", &rsa),
        // A token signed by the RSA key but naming the EC key's id.
        sign(Algorithm::ES256, "rsa-1", &ec),
        // alg none, unsigned and with a signature.
        format!("{}.{}.", b64(&json!({"alg": "none", "kid": "rsa-1"})), b64(&claims())),
        format!("{}.{}.c2ln", b64(&json!({"alg": "none", "kid": "rsa-1"})), b64(&claims())),
        // No kid.
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(), &rsa).unwrap(),
        // Plain HS256 tokens are not accepted once JWKS is configured.
        vault_dev::sign_hs256(HS256_SECRET.as_bytes(), &claims()).unwrap(),
    ];
    for tok in &refused {
        let r = send_to(&vault, get(tok, "k")).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{}", r.body);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "known kids never trigger a fetch");

    // Unknown kids (even ones carrying path or SQL text) cannot make the vault refetch within a minute.
    for kid in ["rotated-key", "../../etc/passwd", "' OR 1=1 --"] {
        let r = send_to(&vault, get(&sign(Algorithm::RS256, kid, &rsa), "k")).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "at most one fetch per minute");
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_the_interval_has_passed() {
    let t = TestVault::start().await;
    let (url, hits) = serve_jwks().await;
    let mut cfg = config(&[("VAULT_JWT_HS256_SECRET", ""), ("VAULT_JWKS_URL", &url)]);
    cfg.jwt.jwks_min_refresh = std::time::Duration::ZERO;
    let vault = token_vault::Vault::new(cfg, t.client.clone()).await.unwrap();
    let rsa = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
    assert_eq!(send_to(&vault, list(&sign(Algorithm::RS256, "rsa-1", &rsa))).await.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(send_to(&vault, list(&sign(Algorithm::RS256, "new-key", &rsa))).await.status, 401);
    assert_eq!(hits.load(Ordering::SeqCst), 2, "an unknown kid refetched the key set");
}

#[tokio::test]
async fn an_unreachable_jwks_at_cold_start_does_not_stop_the_function() {
    let t = TestVault::start().await;
    let vault = t.sibling(&[("VAULT_JWT_HS256_SECRET", ""), ("VAULT_JWKS_URL", "http://127.0.0.1:9/jwks.json")]).await;
    let rsa = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
    // A key set that could not be fetched says nothing about the token: 503, retry, not 401.
    let r = send_to(&vault, get(&sign(Algorithm::RS256, "rsa-1", &rsa), "k")).await;
    assert_eq!((r.status, r.code()), (503, "identity_provider_unavailable"), "{}", r.body);
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn a_jwks_that_errs_redirects_is_oversized_or_hangs_teaches_no_keys() {
    let t = TestVault::start().await;
    let (good_url, _) = serve_jwks().await;
    // The real key set padded past the 256 KiB cap with an ignored member.
    let padded = JWKS.trim_end().strip_suffix('}').unwrap().to_owned()
        + &format!(r#","padding":"{}"}}"#, "x".repeat(token_vault::limits::MAX_JWKS_BYTES));
    let cases = [
        (
            "an HTTP 500",
            Some("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into()),
        ),
        (
            "a redirect to a good key set",
            Some(format!(
                "HTTP/1.1 302 Found\r\nlocation: {good_url}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )),
        ),
        ("a body over the size cap", Some(http_200_json(&padded))),
        ("not JSON", Some(http_200_json("<html>sign in</html>"))),
        ("no answer", None),
    ];
    let rsa = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
    for (what, response) in cases {
        let (url, _) = serve_raw(response).await;
        let vault = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            t.sibling(&[("VAULT_JWT_HS256_SECRET", ""), ("VAULT_JWKS_URL", &url)]),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: the cold-start fetch gave up in time"));
        let r = send_to(&vault, list(&sign(Algorithm::RS256, "rsa-1", &rsa))).await;
        assert_eq!((r.status, r.code()), (503, "identity_provider_unavailable"), "{what}");
    }
    // The same key set served whole is accepted: the cases above failed for their defect alone.
    let vault = t.sibling(&[("VAULT_JWT_HS256_SECRET", ""), ("VAULT_JWKS_URL", &good_url)]).await;
    assert_eq!(send_to(&vault, list(&sign(Algorithm::RS256, "rsa-1", &rsa))).await.status, 200);
}
