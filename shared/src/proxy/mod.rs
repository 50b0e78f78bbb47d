//! The credential-injection proxy: `/vault/proxy/{name}/{path...}`, any method. The caller is
//! authenticated and authorised as for a read of `name` (and by the secret's upstream: its methods,
//! paths and limits), the use is audited, then the request goes to the secret's upstream with the value
//! injected where the secret says, and the upstream's answer streams back as it arrives, the value
//! scrubbed from it. The vault token (`Authorization: Bearer`, or `x-api-key` where that is absent, so
//! an unchanged OpenAI or Anthropic SDK works) never reaches the upstream. Rooms: [`forward`] (the
//! request and response as they cross), [`client`] (the upstream client and its address guard) and
//! [`body`] (the relayed body and the scrubber).

mod body;
mod client;
mod forward;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Request, Response};
use tracing::Instrument;

use crate::error::ApiError;
use crate::http::{error_json, log_failure, request_meta};
use crate::service::Vault;
use client::{AddrPolicy, UpstreamClient, upstream_client};

pub use body::ProxyBody;
pub use client::ProxyOptions;
pub(crate) use forward::percent_encode;

/// The route prefix the proxy serves.
pub const PROXY_PATH: &str = "/vault/proxy/";

/// The methods the proxy answers, for `Allow`.
const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// The vault and its upstream client, built once per cold start.
#[derive(Debug)]
pub struct Proxy {
    vault: Vault,
    client: UpstreamClient,
}

impl Proxy {
    /// The proxy of `vault`; `options` are for tests (names resolved without DNS, extra roots).
    pub fn new(vault: Vault, options: ProxyOptions) -> Result<Self, ApiError> {
        let policy = AddrPolicy { allow_loopback: vault.proxy_settings().allow_loopback };
        Ok(Self { client: upstream_client(policy, &options)?, vault })
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }
}

/// Handles one proxied request end to end. Never fails: every error before the upstream answers is a
/// JSON error envelope, as from every other route.
pub async fn handle_proxy(proxy: &Proxy, req: Request) -> Response<ProxyBody> {
    let meta = request_meta(&req);
    let span = tracing::info_span!("request", request_id = %meta.request_id, op = "proxy", org = tracing::field::Empty);
    async move {
        match proxy.forward(&meta, req).await {
            Ok(resp) => {
                tracing::info!(status = resp.status().as_u16(), "request forwarded");
                resp
            }
            Err(e) => {
                log_failure(&e);
                error_response(&e)
            }
        }
    }
    .instrument(span)
    .await
}

fn error_response(e: &ApiError) -> Response<ProxyBody> {
    let (status, body) = error_json(e);
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    for (name, value) in e.headers(ALLOW) {
        h.insert(name, value);
    }
    debug_assert!(status != StatusCode::OK);
    resp
}
