//! Token parsing: arbitrary `Authorization` header values through the verifier (HS256 configuration).
//! It must never panic, and without the secret no input may ever verify.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secrecy::SecretBox;
use token_vault::{JWKS_REFRESH_INTERVAL, JwtConfig, JwtKeySource, TokenVerifier};

const SECRET: &[u8] = b"fuzzing-secret-never-guessed-0123456789";

fn setup() -> &'static (tokio::runtime::Runtime, TokenVerifier) {
    static SETUP: OnceLock<(tokio::runtime::Runtime, TokenVerifier)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = JwtConfig {
            issuer: "https://vault.local/".into(),
            audience: "token-vault".into(),
            keys: JwtKeySource::Hs256 { secret: SecretBox::new(Box::new(SECRET.to_vec())) },
            jwks_min_refresh: JWKS_REFRESH_INTERVAL,
            claims: token_vault::ClaimRules::defaults(token_vault::IdpProfile::Auth0, "token-vault"),
        };
        let verifier = rt.block_on(TokenVerifier::new(&config)).unwrap();
        (rt, verifier)
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, verifier) = setup();
    let mut bearer = b"Bearer ".to_vec();
    bearer.extend_from_slice(data);
    for header in [data, bearer.as_slice()] {
        match rt.block_on(verifier.authenticate(Some(header))) {
            Ok(_) => panic!("an input verified without the secret"),
            Err(e) => assert_eq!(e.status(), 401),
        }
    }
});
