//! Bearer token verification and the principal a verified token describes. Rooms: [`jwks`] (the
//! identity provider's key set) and [`claims`] (each provider's claim rules).
//!
//! The accepted algorithm comes from server configuration, never from the token: HS256 with
//! `VAULT_JWT_HS256_SECRET`, or RS256/ES256 from the identity provider's JWKS (`VAULT_JWKS_URL`), where
//! each key's type fixes its one algorithm. `exp` is required, `nbf` honoured and an `iat` in the future
//! refused, each with 60 s of leeway.

mod claims;
mod jwks;

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use secrecy::ExposeSecret;
use tokio::sync::{Mutex, RwLock};

use crate::config::{ClaimRules, IdpProfile, JwtConfig, JwtKeySource};
use crate::error::{ApiError, Code};
use crate::model::Principal;
use crate::rules::MAX_TOKEN_BYTES;
use claims::Claims;
use jwks::{Jwks, https_client};

pub use jwks::MAX_JWKS_BYTES;

/// Clock skew tolerated on `exp` and `nbf`.
pub(crate) const LEEWAY_SECS: u64 = 60;

/// Verifies bearer tokens against the configured keys.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    keys: Keys,
    claims: ClaimRules,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

enum Keys {
    Hs256(DecodingKey),
    Jwks(Box<Jwks>),
}

impl TokenVerifier {
    /// Builds a verifier. With JWKS, the key set is fetched now (cold start); a failure is logged and
    /// retried on the first token that needs it.
    pub async fn new(config: &JwtConfig) -> Result<Self, ApiError> {
        let verifier = Self::unfetched(config)?;
        verifier.fetch_keys().await;
        Ok(verifier)
    }

    /// Builds a verifier whose JWKS key set, if it has one, is not fetched yet: the cold start fetches
    /// it with [`TokenVerifier::fetch_keys`] while its KMS call is in flight.
    pub(crate) fn unfetched(config: &JwtConfig) -> Result<Self, ApiError> {
        let keys = match &config.keys {
            JwtKeySource::Hs256 { secret } => Keys::Hs256(
                DecodingKey::from_secret(secret.expose_secret()).map_err(|e| ApiError::internal(e.to_string()))?,
            ),
            JwtKeySource::Jwks { url } => Keys::Jwks(Box::new(Jwks {
                url: url.clone(),
                http: https_client()?,
                keys: RwLock::new(HashMap::new()),
                last_fetch: Mutex::new(None),
                fetched: std::sync::atomic::AtomicBool::new(false),
                min_refresh: config.jwks_min_refresh,
            })),
        };
        Ok(Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            keys,
            claims: config.claims.clone(),
        })
    }

    /// With JWKS, fetches the key set (cold start); a failure is logged and retried on the first token
    /// that needs it. Nothing to do with HS256.
    pub(crate) async fn fetch_keys(&self) {
        if let Keys::Jwks(jwks) = &self.keys {
            crate::timings::time_async("jwks", jwks.refresh(true)).await;
        }
    }

    /// Verifies the `Authorization` header value and returns the principal. Every failure is a 401.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, ApiError> {
        let Some(header) = authorization else {
            return Err(ApiError::Unauthorized {
                code: Code::MissingToken,
                message: "An Authorization: Bearer <token> header is required.".into(),
            });
        };
        let token = bearer_token(header)?;
        let jwt_header = decode_header(token).map_err(|_| ApiError::invalid_token("it is not a well-formed JWT"))?;
        let (key, alg) = match &self.keys {
            Keys::Hs256(key) => (key.clone(), Algorithm::HS256),
            Keys::Jwks(jwks) => {
                let kid = jwt_header.kid.as_deref().ok_or_else(|| ApiError::invalid_token("it has no key id (kid)"))?;
                jwks.key(kid).await?
            }
        };
        if jwt_header.alg != alg {
            return Err(ApiError::invalid_token("its algorithm is not accepted"));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        if self.claims.profile == IdpProfile::Cognito {
            // Cognito's access tokens carry no `aud`: the profile checks `token_use` and the app client.
            validation.set_required_spec_claims(&["exp", "iss"]);
            validation.validate_aud = false;
        } else {
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.set_audience(&[&self.audience]);
        }
        let data = decode::<Claims>(token, &key, &validation).map_err(|e| ApiError::invalid_token(describe(&e)))?;
        check_issued_at(data.claims.issued_at()?, time::OffsetDateTime::now_utc().unix_timestamp())?;
        self.claims.principal(&data.claims, jwt_header.typ.as_deref())
    }
}

/// Extracts the token from `Bearer <token>` (scheme case-insensitive, per RFC 7235).
fn bearer_token(header: &[u8]) -> Result<&str, ApiError> {
    if header.len() > MAX_TOKEN_BYTES + 7 {
        return Err(ApiError::invalid_token("it is larger than 16 KiB"));
    }
    let header = std::str::from_utf8(header).map_err(|_| ApiError::invalid_token("the header is not ASCII"))?;
    let (scheme, token) = header.split_once(' ').ok_or_else(|| ApiError::invalid_token("the scheme must be Bearer"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::invalid_token("the scheme must be Bearer"));
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(ApiError::invalid_token("it is empty"));
    }
    // RFC 6750 b64token characters only: this also refuses spaces inside the token.
    let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if !token.chars().all(b64token) {
        return Err(ApiError::invalid_token("it contains characters a JWT cannot hold"));
    }
    Ok(token)
}

fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "it has expired",
        K::ImmatureSignature => "it is not valid yet (nbf)",
        K::InvalidIssuer => "its issuer (iss) is not accepted",
        K::InvalidAudience => "its audience (aud) does not include this vault",
        K::InvalidSignature => "its signature is invalid",
        K::InvalidAlgorithm | K::MissingAlgorithm | K::UnsupportedAlgorithm => "its algorithm is not accepted",
        K::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "it has no expiry (exp)",
            "iss" => "it has no issuer (iss)",
            "aud" => "it has no audience (aud)",
            _ => "it lacks a required claim",
        },
        K::Json(_) | K::InvalidClaimFormat(_) => "its claims are malformed, repeated or of the wrong type",
        _ => "it is not a well-formed JWT",
    }
}

/// A token issued in the future (beyond the clock-skew leeway) is refused: it was minted by a clock or
/// a key holder that cannot be trusted, and would otherwise outlive its intended lifetime.
fn check_issued_at(iat: Option<f64>, now: i64) -> Result<(), ApiError> {
    match iat {
        Some(iat) if !iat.is_finite() || iat > (now + LEEWAY_SECS as i64) as f64 => {
            Err(ApiError::invalid_token("it was issued in the future (iat)"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ADMIN_PERMISSION, TokenKind};
    use jsonwebtoken::{EncodingKey, Header, encode};
    use secrecy::SecretBox;
    use serde_json::{Value, json};

    const SECRET: &str = "unit-test-secret-of-at-least-32-bytes";

    async fn verifier() -> TokenVerifier {
        TokenVerifier::new(&JwtConfig {
            issuer: "https://issuer.test/".into(),
            audience: "token-vault".into(),
            keys: JwtKeySource::Hs256 { secret: SecretBox::new(Box::new(SECRET.as_bytes().to_vec())) },
            jwks_min_refresh: crate::config::JWKS_REFRESH_INTERVAL,
            claims: ClaimRules::defaults(IdpProfile::Auth0, "token-vault"),
        })
        .await
        .unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims() -> Value {
        json!({
            "iss": "https://issuer.test/", "aud": "token-vault", "exp": now() + 600,
            "org_id": "org1", "client_id": "client-a", "sub": "client-a@clients", "gty": "client-credentials",
        })
    }

    fn sign(claims: &Value) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap()).unwrap()
    }

    async fn check(header: &str) -> Result<Principal, ApiError> {
        verifier().await.authenticate(Some(header.as_bytes())).await
    }

    async fn with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Result<Principal, ApiError> {
        let mut c = claims();
        f(c.as_object_mut().unwrap());
        check(&format!("Bearer {}", sign(&c))).await
    }

    #[tokio::test]
    async fn m2m_token_is_accepted() {
        let p = with(|_| {}).await.unwrap();
        assert_eq!(
            (p.org_id.as_str(), p.client_id.as_str(), &p.kind, p.admin),
            ("org1", "client-a", &TokenKind::Machine, false)
        );
        // Scheme is case-insensitive.
        assert!(check(&format!("bearer {}", sign(&claims()))).await.is_ok());
    }

    #[tokio::test]
    async fn user_token_and_claim_variants() {
        let p = with(|c| {
            c.remove("gty");
            c.remove("client_id");
            c.insert("azp".into(), json!("client-b"));
            c.insert("sub".into(), json!("auth0|user-1"));
            c.insert("scope".into(), json!("openid payments"));
            c.insert("scp".into(), json!(["billing"]));
            c.insert("permissions".into(), json!([ADMIN_PERMISSION]));
        })
        .await
        .unwrap();
        assert_eq!(p.client_id, "client-b");
        assert_eq!(p.kind, TokenKind::User { user_id: "auth0|user-1".into() });
        // Auth0's tokens carry their scopes in `scope`; a stray `scp` is not read. `permissions` (RBAC)
        // makes the admin.
        assert!(p.scopes.contains("payments") && !p.scopes.contains("billing") && p.admin);
        // A sub equal to the client id does not make a machine: only the provider's `gty` does.
        let p = with(|c| {
            c.remove("gty");
            c.insert("sub".into(), json!("client-a"));
        })
        .await
        .unwrap();
        assert_eq!(p.kind, TokenKind::User { user_id: "client-a".into() });
        // A machine's scope is its client grant: vault:admin there makes an admin ...
        let p = with(|c| {
            c.insert("scope".into(), json!("vault:admin"));
        })
        .await
        .unwrap();
        assert!(p.admin);
        // ... a user's scope, which any user may ask for, does not.
        let p = with(|c| {
            c.remove("gty");
            c.insert("sub".into(), json!("auth0|user-2"));
            c.insert("scope".into(), json!("vault:admin"));
        })
        .await
        .unwrap();
        assert!(!p.admin);
    }

    #[tokio::test]
    async fn every_rejection_is_a_401_without_the_token() {
        let valid = sign(&claims());
        let mut flipped = valid.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let none_token = {
            let b64 =
                |v: &Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
            format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims()))
        };
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let headers = [
            format!("Basic {valid}"),
            "Bearer".to_string(),
            "Bearer ".to_string(),
            "Bearer garbage".to_string(),
            "Bearer ...".to_string(),
            format!("Bearer {flipped}"),
            format!("Bearer {none_token}"),
            huge,
        ];
        let v = verifier().await;
        for h in &headers {
            let err = v.authenticate(Some(h.as_bytes())).await.unwrap_err();
            assert_eq!((err.status(), err.code().as_str()), (401, "invalid_token"), "{h:.40}");
            assert!(!err.public_message().contains(&valid[..20]));
        }
        let err = v.authenticate(None).await.unwrap_err();
        assert_eq!((err.status(), err.code().as_str()), (401, "missing_token"));
    }

    #[tokio::test]
    async fn claim_rejections() {
        type Edit = fn(&mut serde_json::Map<String, Value>);
        let cases: Vec<(&str, Edit)> = vec![
            ("expired", |c| {
                c.insert("exp".into(), json!(now() - 120));
            }),
            ("nbf", |c| {
                c.insert("nbf".into(), json!(now() + 600));
            }),
            ("no exp", |c| {
                c.remove("exp");
            }),
            ("issuer", |c| {
                c.insert("iss".into(), json!("https://evil.test/"));
            }),
            ("audience", |c| {
                c.insert("aud".into(), json!("other-api"));
            }),
            ("no audience", |c| {
                c.remove("aud");
            }),
            ("no org", |c| {
                c.remove("org_id");
            }),
            ("empty org", |c| {
                c.insert("org_id".into(), json!(""));
            }),
            ("numeric org", |c| {
                c.insert("org_id".into(), json!(42));
            }),
            ("no client", |c| {
                c.remove("client_id");
            }),
            ("user without sub", |c| {
                c.remove("gty");
                c.remove("sub");
            }),
            ("iat in the future", |c| {
                c.insert("iat".into(), json!(now() + 3600));
            }),
            ("iat not a number", |c| {
                c.insert("iat".into(), json!("now"));
            }),
        ];
        for (name, edit) in cases {
            let err = with(edit).await.unwrap_err();
            assert_eq!(err.status(), 401, "{name}");
        }
        // Within the 60 s leeway an expired token still passes.
        assert!(
            with(|c| {
                c.insert("exp".into(), json!(now() - 30));
            })
            .await
            .is_ok()
        );
        // An iat within the leeway, in the past, or with a fraction passes.
        for iat in [json!(now() + 30), json!(now() - 86_400), json!(now() as f64 - 0.5)] {
            assert!(
                with(|c| {
                    c.insert("iat".into(), iat);
                })
                .await
                .is_ok()
            );
        }
        // Audience may be an array containing ours.
        assert!(
            with(|c| {
                c.insert("aud".into(), json!(["other", "token-vault"]));
            })
            .await
            .is_ok()
        );
    }

    #[tokio::test]
    async fn duplicate_claims_are_refused() {
        let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
        let header = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
        let body = format!(
            r#"{{"iss":"https://issuer.test/","aud":"token-vault","exp":{},"org_id":"org1","org_id":"org2","client_id":"c","gty":"client-credentials"}}"#,
            now() + 600
        );
        let signing_input = format!("{header}.{}", b64(&body));
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        hmac::Mac::update(&mut mac, signing_input.as_bytes());
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            hmac::Mac::finalize(mac).into_bytes(),
        );
        let err = check(&format!("Bearer {signing_input}.{sig}")).await.unwrap_err();
        assert_eq!(err.status(), 401);
    }
}
