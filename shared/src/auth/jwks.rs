//! The identity provider's key set (JWKS): fetched at cold start and again on an unknown key id (at
//! most once a minute), over the SDK's own HTTP and TLS stack, with a size cap, a timeout and no
//! redirects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use crate::error::ApiError;

/// A JWKS document larger than this is refused (real ones are a few KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// One JWKS fetch, connection included, gives up after this long.
pub(crate) const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct Jwks {
    pub(super) url: String,
    pub(super) http: HttpsClient,
    pub(super) keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    pub(super) last_fetch: Mutex<Option<Instant>>,
    /// Whether the last fetch got a key set.
    pub(super) fetched: AtomicBool,
    pub(super) min_refresh: Duration,
}

impl Jwks {
    /// The key `kid` names. Not knowing it is a verdict on the token (401) only when the key set could
    /// be fetched; if the last fetch failed, the identity provider is unavailable (503).
    pub(super) async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), ApiError> {
        if let Some(found) = self.keys.read().await.get(kid) {
            return Ok(found.clone());
        }
        self.refresh(false).await;
        if let Some(found) = self.keys.read().await.get(kid) {
            return Ok(found.clone());
        }
        if self.fetched.load(Ordering::Acquire) {
            Err(ApiError::invalid_token("its key id (kid) is not known"))
        } else {
            Err(ApiError::IdpUnavailable)
        }
    }

    /// Fetches the key set, at most once per `min_refresh` (one minute) unless `force` (cold start).
    pub(super) async fn refresh(&self, force: bool) {
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
                self.fetched.store(true, Ordering::Release);
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
        self.fetched.store(false, Ordering::Release);
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
/// against the system's root certificates ([`crate::tls`], read once per process). Plain `http://` is
/// reachable only because configuration allows it for localhost alone.
pub(super) type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

pub(super) fn https_client() -> Result<HttpsClient, ApiError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    let roots = crate::tls::system_roots();
    if roots.is_empty() {
        return Err(ApiError::internal("no root certificates to verify the JWKS server with"));
    }
    let tls = crate::tls::client_config(roots).map_err(ApiError::internal)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
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
