//! Bearer token verification and the principal a verified token describes.
//!
//! The accepted algorithm comes from server configuration, never from the token: HS256 with
//! `VAULT_JWT_HS256_SECRET`, or RS256/ES256 from the identity provider's JWKS (`VAULT_JWKS_URL`), where
//! each key's type fixes its one algorithm. `exp` is required, `nbf` honoured and an `iat` in the future
//! refused, each with 60 s of leeway.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::config::{JwtConfig, JwtKeySource};
use crate::error::{ApiError, Code};
use crate::model::{ADMIN_PERMISSION, Principal, TokenKind};
use crate::rules::{MAX_TOKEN_BYTES, is_valid_id};

/// Clock skew tolerated on `exp` and `nbf`.
pub(crate) const LEEWAY_SECS: u64 = 60;
/// A JWKS document larger than this is refused (real ones are a few KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// One JWKS fetch, connection included, gives up after this long.
pub(crate) const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// The claims we read (RFC 9068 / Auth0 style). Other claims are ignored; a repeated claim is refused.
#[derive(Deserialize)]
struct Claims {
    /// Issued-at (RFC 7519 NumericDate, which may have a fraction). Optional, but never in the future.
    iat: Option<f64>,
    org_id: Option<String>,
    client_id: Option<String>,
    azp: Option<String>,
    sub: Option<String>,
    gty: Option<String>,
    scope: Option<String>,
    scp: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
}

/// Verifies bearer tokens against the configured keys.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    keys: Keys,
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

struct Jwks {
    url: String,
    http: HttpsClient,
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    last_fetch: Mutex<Option<Instant>>,
    /// Whether the last fetch got a key set.
    fetched: std::sync::atomic::AtomicBool,
    min_refresh: Duration,
}

impl TokenVerifier {
    /// Builds a verifier. With JWKS, the key set is fetched now (cold start); a failure is logged and
    /// retried on the first token that needs it.
    pub async fn new(config: &JwtConfig) -> Result<Self, ApiError> {
        let keys = match &config.keys {
            JwtKeySource::Hs256 { secret } => Keys::Hs256(
                DecodingKey::from_secret(secret.expose_secret()).map_err(|e| ApiError::internal(e.to_string()))?,
            ),
            JwtKeySource::Jwks { url } => {
                let http = https_client()?;
                let jwks = Jwks {
                    url: url.clone(),
                    http,
                    keys: RwLock::new(HashMap::new()),
                    last_fetch: Mutex::new(None),
                    fetched: std::sync::atomic::AtomicBool::new(false),
                    min_refresh: config.jwks_min_refresh,
                };
                jwks.refresh(true).await;
                Keys::Jwks(Box::new(jwks))
            }
        };
        Ok(Self { issuer: config.issuer.clone(), audience: config.audience.clone(), keys })
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
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = decode::<Claims>(token, &key, &validation).map_err(|e| ApiError::invalid_token(describe(&e)))?;
        check_issued_at(data.claims.iat, time::OffsetDateTime::now_utc().unix_timestamp())?;
        principal_from(data.claims)
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

fn valid_id(value: Option<String>) -> Option<String> {
    value.filter(|v| is_valid_id(v))
}

fn principal_from(c: Claims) -> Result<Principal, ApiError> {
    let org_id = valid_id(c.org_id).ok_or_else(|| ApiError::invalid_token("it has no valid organization (org_id)"))?;
    let client_id = valid_id(c.client_id.or(c.azp))
        .ok_or_else(|| ApiError::invalid_token("it has no valid OAuth client (client_id or azp)"))?;
    let sub = c.sub.filter(|s| !s.is_empty());
    let machine = c.gty.as_deref() == Some("client-credentials") || sub.as_deref() == Some(client_id.as_str());
    let kind = if machine {
        TokenKind::Machine
    } else {
        let user_id = valid_id(sub).ok_or_else(|| ApiError::invalid_token("it has no valid subject (sub)"))?;
        TokenKind::User { user_id }
    };
    let mut scopes: BTreeSet<String> =
        c.scope.as_deref().unwrap_or("").split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    scopes.extend(c.scp.unwrap_or_default());
    let admin =
        scopes.contains(ADMIN_PERMISSION) || c.permissions.unwrap_or_default().iter().any(|p| p == ADMIN_PERMISSION);
    Ok(Principal { org_id, client_id, kind, scopes, admin })
}

impl Jwks {
    /// The key `kid` names. Not knowing it is a verdict on the token (401) only when the key set could
    /// be fetched; if the last fetch failed, the identity provider is unavailable (503).
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), ApiError> {
        if let Some(found) = self.keys.read().await.get(kid) {
            return Ok(found.clone());
        }
        self.refresh(false).await;
        if let Some(found) = self.keys.read().await.get(kid) {
            return Ok(found.clone());
        }
        if self.fetched.load(std::sync::atomic::Ordering::Acquire) {
            Err(ApiError::invalid_token("its key id (kid) is not known"))
        } else {
            Err(ApiError::IdpUnavailable)
        }
    }

    /// Fetches the key set, at most once per `min_refresh` (one minute) unless `force` (cold start).
    async fn refresh(&self, force: bool) {
        let mut last = self.last_fetch.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        match tokio::time::timeout(JWKS_FETCH_TIMEOUT, self.fetch()).await {
            Ok(Ok(set)) => {
                let keys = usable_keys(&set);
                tracing::info!(keys = keys.len(), "fetched JWKS");
                *self.keys.write().await = keys;
                self.fetched.store(true, std::sync::atomic::Ordering::Release);
                return;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %crate::error::chain(&*e), "could not fetch JWKS; keeping the keys already known")
            }
            Err(_) => tracing::error!(
                timeout_ms = JWKS_FETCH_TIMEOUT.as_millis() as u64,
                "could not fetch JWKS in time; keeping the keys already known"
            ),
        }
        self.fetched.store(false, std::sync::atomic::Ordering::Release);
    }

    /// One GET of the key set: a 2xx JSON body of at most [`MAX_JWKS_BYTES`]; redirects are not followed.
    async fn fetch(&self) -> Result<JwkSet, Box<dyn std::error::Error + Send + Sync>> {
        let request = hyper::Request::get(self.url.as_str())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())?;
        let response = self.http.request(request).await?;
        if !response.status().is_success() {
            return Err(format!("the JWKS URL answered HTTP {}", response.status().as_u16()).into());
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES).collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }
}

/// The JWKS client: hyper with rustls, the same HTTP and TLS stack (and the same aws-lc crypto) that the
/// AWS SDK already brings, so fetching keys adds no second stack to the package. Servers are verified
/// against the system's root certificates. Plain `http://` is reachable only because configuration
/// allows it for localhost alone.
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn https_client() -> Result<HttpsClient, ApiError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|e| ApiError::internal(format!("no root certificates to verify the JWKS server with: {e}")))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// RS256 for RSA keys and ES256 for P-256 keys; anything else (HMAC keys, other curves, a key whose
/// declared `alg` disagrees) is ignored, so a JWKS can never enable HS256 or `none`.
fn usable_keys(set: &JwkSet) -> HashMap<String, (DecodingKey, Algorithm)> {
    let mut out = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => continue,
        };
        let declared_ok = match jwk.common.key_algorithm {
            None => true,
            Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
            Some(_) => false,
        };
        if !declared_ok {
            continue;
        }
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            out.insert(kid, (key, alg));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(p.scopes.contains("payments") && p.scopes.contains("billing") && p.admin);
        // sub equal to the client id is also machine-to-machine.
        let p = with(|c| {
            c.remove("gty");
            c.insert("sub".into(), json!("client-a"));
        })
        .await
        .unwrap();
        assert_eq!(p.kind, TokenKind::Machine);
        let p = with(|c| {
            c.insert("scope".into(), json!("vault:admin"));
        })
        .await
        .unwrap();
        assert!(p.admin);
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
