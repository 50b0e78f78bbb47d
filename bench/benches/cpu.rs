//! CPU microbenchmarks (criterion) of what every request pays besides DynamoDB: token verification
//! (HS256, RS256, ES256), organization key derivation (cold and cached), sealing and opening values
//! (1 KiB and 64 KiB), and request parsing with response building. Run by `scripts/bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use token_vault::{Binding, JwtConfig, JwtKeySource, MasterKey, Owner, TokenVerifier};
use vault_tests::{AUDIENCE, HS256_SECRET, ISSUER, MASTER_KEY, TestVault};

const RSA_KEY: &[u8] = include_bytes!("../../tests/fixtures/rsa-test-key.pem");
const EC_KEY: &[u8] = include_bytes!("../../tests/fixtures/ec-test-key.pem");

fn claims() -> serde_json::Value {
    vault_dev::m2m_claims(ISSUER, AUDIENCE, "org1", "client-a", "", 3600)
}

fn jwt_config(keys: JwtKeySource) -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        keys,
        jwks_min_refresh: token_vault::JWKS_REFRESH_INTERVAL,
        claims: token_vault::ClaimRules::defaults(token_vault::IdpProfile::Auth0, AUDIENCE),
    }
}

fn tokens(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("verify token");
    let hs = rt
        .block_on(TokenVerifier::new(&jwt_config(JwtKeySource::Hs256 {
            secret: secrecy::SecretBox::new(Box::new(HS256_SECRET.as_bytes().to_vec())),
        })))
        .unwrap();
    let token = format!("Bearer {}", vault_dev::sign_hs256(HS256_SECRET.as_bytes(), &claims()).unwrap());
    group.bench_function("HS256", |b| {
        b.to_async(&rt).iter(|| async { hs.authenticate(Some(black_box(token.as_bytes()))).await.unwrap() })
    });
    let (url, _) = rt.block_on(vault_tests::serve_jwks());
    let jwks = rt.block_on(TokenVerifier::new(&jwt_config(JwtKeySource::Jwks { url }))).unwrap();
    for (alg, kid, key) in [
        (Algorithm::RS256, "rsa-1", EncodingKey::from_rsa_pem(RSA_KEY).unwrap()),
        (Algorithm::ES256, "ec-1", EncodingKey::from_ec_pem(EC_KEY).unwrap()),
    ] {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let token = format!("Bearer {}", jsonwebtoken::encode(&header, &claims(), &key).unwrap());
        group.bench_function(format!("{alg:?}"), |b| {
            b.to_async(&rt).iter(|| async { jwks.authenticate(Some(black_box(token.as_bytes()))).await.unwrap() })
        });
    }
    group.finish();
}

fn keys_and_values(c: &mut Criterion) {
    let master = MasterKey::from_hex(MASTER_KEY).unwrap();
    let salt = [7u8; 32];
    c.bench_function("derive organization key (cold: HKDF-SHA256)", |b| {
        b.iter(|| master.derive_org_key(black_box("org1"), black_box(&salt)))
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestVault::start());
    rt.block_on(t.vault.org_key("org1", None, true)).unwrap();
    c.bench_function("organization key (cached, warm container)", |b| {
        b.to_async(&rt).iter(|| async { t.vault.org_key(black_box("org1"), None, false).await.unwrap() })
    });
    let key = master.derive_org_key("org1", &salt);
    let owner = Owner::App { client_id: "client-a".into() };
    let binding = Binding::new("org1", &owner, "openai_api_key");
    let mut group = c.benchmark_group("AES-256-GCM envelope");
    for size in [1024usize, 65_536] {
        let value = vec![b'v'; size];
        let envelope = key.seal(binding, &value).unwrap();
        group.bench_function(format!("seal {} KiB", size / 1024), |b| b.iter(|| key.seal(binding, black_box(&value))));
        group.bench_function(format!("open {} KiB", size / 1024), |b| {
            b.iter(|| key.open(binding, black_box(&envelope)).unwrap())
        });
    }
    group.finish();
}

fn requests(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestVault::start());
    let token = vault_tests::m2m("org1", "client-a");
    // Everything a request costs before DynamoDB: event parsing, token check, body validation and the
    // response (a 400 here, so no storage call is made).
    let event = vault_tests::put(&token, json!({"name": "bad/name", "value": "v".repeat(1024)})).event().to_string();
    c.bench_function("request: parse event, verify HS256, validate a 1 KiB body, build the response", |b| {
        b.to_async(&rt).iter(|| async {
            let req = lambda_http::request::from_str(black_box(&event)).unwrap();
            let resp = token_vault::handle(&t.vault, token_vault::Operation::Create, req).await;
            assert_eq!(resp.status(), 400);
        })
    });
}

criterion_group!(benches, tokens, keys_and_values, requests);
criterion_main!(benches);
