//! One proxied call as it crosses: the caller's request checked and turned into the upstream's (path
//! normalised, credentials and hop-by-hop headers dropped, the value injected), then the upstream's
//! answer turned into the caller's (hop-by-hop headers dropped, repeated headers joined, the value
//! scrubbed from headers and body).

use std::time::{Duration, Instant, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use lambda_http::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use lambda_http::{Body, Request, RequestExt, Response};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::body::{Outcome, ProxyBody, Relay, Scrubber};
use super::client::is_blocked;
use super::{PROXY_PATH, Proxy};
use crate::error::{ApiError, Code};
use crate::http::raw_path;
use crate::model::{Injection, RequestMeta};
use crate::rules::{
    self, MAX_PROXY_BODY_BYTES, PROXY_METHODS, check_query, check_query_leaves_out, fill_header, normalize_path,
    parse_base_url,
};
use crate::service::{Usable, UseRequest};

/// Request headers never forwarded: hop-by-hop ones (RFC 9110 §7.6.1), the destination's, the
/// caller's credentials for the vault, cookies, what says where the request came from, and
/// `accept-encoding` (the proxy asks for an uncompressed answer, which it can scrub).
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "authorization",
    "x-api-key",
    "cookie",
    "accept-encoding",
    "forwarded",
    "via",
    "x-real-ip",
    // Headers some servers take as the method or the path instead of the request's own: the upstream's
    // methods and paths are checked on the request line, so nothing may replace them.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    // Ranges: an echoing upstream asked for short windows of its answer would return the value in pieces
    // too short for the scrubber to recognise.
    "range",
    "if-range",
];

/// Prefixes of request headers never forwarded (API Gateway's, CloudFront's, and the forwarding chain).
const DROPPED_REQUEST_PREFIXES: &[&str] = &["x-forwarded-", "x-amzn-", "x-amz-cf-", "cloudfront-"];

/// Response headers never relayed: hop-by-hop ones, and the length (scrubbing may change it; the
/// relay is chunked).
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Kept from the Lambda deadline for the end of the response.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// Where a proxied request goes: the secret, and the path and query under its upstream.
#[derive(Debug)]
struct Target {
    name: String,
    /// Normalised; `None` for `/vault/proxy/{name}` itself (the base URL).
    path: Option<String>,
    query: Option<String>,
}

fn parse_target(req: &Request) -> Result<Target, ApiError> {
    let raw = raw_path(req);
    let after = raw.strip_prefix(PROXY_PATH).ok_or(ApiError::NotFound)?;
    let (name, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    rules::validate_name(name)?;
    let path = if rest.is_empty() { None } else { Some(normalize_path(rest)?) };
    let query = req.uri().query().filter(|q| !q.is_empty()).map(str::to_owned);
    if let Some(q) = &query {
        check_query(q)?;
    }
    Ok(Target { name: name.to_owned(), path, query })
}

/// The vault token: `Authorization` (the whole header, as every route takes it), or where that is
/// absent `x-api-key` (what the Anthropic SDK sends its API key as).
fn vault_token(req: &Request) -> Result<Option<Zeroizing<Vec<u8>>>, ApiError> {
    let one = |name: &str| -> Result<Option<&HeaderValue>, ApiError> {
        let mut all = req.headers().get_all(name).iter();
        match (all.next(), all.next()) {
            (_, Some(_)) => Err(ApiError::invalid_token(&format!("more than one {name} header was sent"))),
            (first, None) => Ok(first),
        }
    };
    if let Some(auth) = one("authorization")? {
        return Ok(Some(Zeroizing::new(auth.as_bytes().to_vec())));
    }
    Ok(one("x-api-key")?.map(|key| {
        let mut bearer = Zeroizing::new(b"Bearer ".to_vec());
        bearer.extend_from_slice(key.as_bytes());
        bearer
    }))
}

fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// `value` percent-encoded as a query parameter carries it (unreserved characters as they are).
pub(crate) fn percent_encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The forms of a value an answer may echo: as sent; percent-encoded (upper- and lower-case hex); and
/// escaped in a JSON string as common serializers write it (serde's minimal escaping; PHP's `\/`; Go's
/// HTML-safe `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`; ASCII-only output, every other character
/// as `\uXXXX` in either case, as Python's and PHP's defaults write it).
pub(crate) fn scrub_patterns(value: &str) -> Vec<Vec<u8>> {
    let upper = percent_encode(value.as_bytes());
    let lower: String = {
        // Only the hex digits after `%` change case; the rest is the value's own text.
        let mut out = String::with_capacity(upper.len());
        let mut hex = 0;
        for c in upper.chars() {
            if c == '%' {
                hex = 2;
                out.push(c);
            } else if hex > 0 {
                hex -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    };
    let mut patterns = vec![value.as_bytes().to_vec(), upper.into_bytes(), lower.into_bytes()];
    if let Ok(json) = serde_json::to_string(value) {
        let base = &json[1..json.len() - 1];
        let escape = |s: &str, f: &dyn Fn(char) -> Option<String>| -> String {
            s.chars().map(|c| f(c).unwrap_or_else(|| c.to_string())).collect()
        };
        let unicode = |c: char, upper: bool| -> String {
            let mut units = [0u16; 2];
            c.encode_utf16(&mut units)
                .iter()
                .map(|u| if upper { format!("\\u{u:04X}") } else { format!("\\u{u:04x}") })
                .collect()
        };
        let slash = |c: char| (c == '/').then(|| "\\/".to_owned());
        let html = |c: char| matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}').then(|| unicode(c, false));
        let ascii = |upper: bool| move |c: char| (!c.is_ascii()).then(|| unicode(c, upper));
        patterns.push(base.as_bytes().to_vec());
        patterns.push(escape(base, &slash).into_bytes());
        patterns.push(escape(base, &html).into_bytes());
        for upper in [false, true] {
            let ascii_only = escape(base, &ascii(upper));
            patterns.push(escape(&ascii_only, &slash).into_bytes());
            patterns.push(ascii_only.into_bytes());
        }
    }
    patterns.sort();
    patterns.dedup();
    patterns
}

fn forwarded_header(name: &HeaderName, connection_named: &[String], injected: Option<&str>) -> bool {
    let n = name.as_str();
    !(DROPPED_REQUEST_HEADERS.contains(&n)
        || DROPPED_REQUEST_PREFIXES.iter().any(|p| n.starts_with(p))
        || connection_named.iter().any(|c| c == n)
        || injected == Some(n))
}

/// Headers a `Connection` header names, which are hop-by-hop too.
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The request to the upstream.
fn upstream_request(req: &Request, target: &Target, usable: &Usable) -> Result<hyper::Request<Full<Bytes>>, ApiError> {
    let up = &usable.upstream;
    let base = parse_base_url(&up.base_url)?;
    let origin = crate::rules::BaseUrl { path: String::new(), ..base.clone() }.normalised();
    let path = match &target.path {
        Some(p) => format!("{}{p}", base.path),
        None if base.path.is_empty() => "/".to_owned(),
        None => base.path.clone(),
    };
    let value = usable.value.expose_secret();
    let mut query = Zeroizing::new(target.query.clone().unwrap_or_default());
    let mut injected_header = None;
    match &up.inject {
        Injection::Query { name } => {
            // Checked before the use was counted (service::usage); kept here as the last line.
            check_query_leaves_out(&query, name)?;
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(name);
            query.push('=');
            query.push_str(&percent_encode(value.as_bytes()));
        }
        Injection::Header { name, template } => {
            let v = fill_header(template, value)?;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(ApiError::internal)?;
            injected_header = Some((name, v));
        }
    }
    let uri =
        Zeroizing::new(if query.is_empty() { format!("{origin}{path}") } else { format!("{origin}{path}?{}", *query) });
    let mut builder = hyper::Request::builder().method(req.method().clone()).uri(uri.as_str());
    let named = connection_named(req.headers());
    let injected_name = injected_header.as_ref().map(|(n, _)| n.as_str().to_owned());
    for (name, value) in req.headers() {
        if forwarded_header(name, &named, injected_name.as_deref()) {
            builder = builder.header(name, value);
        }
    }
    builder = builder.header(header::ACCEPT_ENCODING, "identity");
    if let Some((name, value)) = injected_header {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(body_bytes(req))))
        .map_err(|_| ApiError::bad_request(Code::InvalidPath, "The request cannot be forwarded as it is."))
}

/// The caller's response headers: the upstream's, less hop-by-hop ones, repeated ones joined with `, `
/// (function URLs carry one value per header; `set-cookie` stays repeated, and Lambda moves it into the
/// response's cookies), the value scrubbed from every one.
fn relayed_headers(upstream: &HeaderMap, scrub: &Scrubber) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in upstream.keys() {
        if DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let values: Vec<&[u8]> = upstream.get_all(name).iter().map(HeaderValue::as_bytes).collect();
        let joined: Vec<Vec<u8>> = if name == header::SET_COOKIE {
            values.iter().map(|v| v.to_vec()).collect()
        } else {
            vec![values.join(&b", "[..])]
        };
        for v in joined {
            if let Ok(v) = HeaderValue::from_bytes(&scrub.scrub_all(&v)) {
                out.append(name.clone(), v);
            }
        }
    }
    out
}

impl Proxy {
    pub(super) async fn forward(&self, meta: &RequestMeta, req: Request) -> Result<Response<ProxyBody>, ApiError> {
        let settings = self.vault.proxy_settings();
        let started = Instant::now();
        if !PROXY_METHODS.contains(&req.method().as_str()) {
            return Err(ApiError::MethodNotAllowed);
        }
        // The vault's part (token, secret, limits, audit) within the request deadline, as every route.
        let authorised = async {
            let token = vault_token(&req)?;
            let principal = self.vault.authenticate(token.as_deref().map(|t| &t[..])).await?;
            tracing::Span::current().record("org", principal.org_id.as_str());
            let target = parse_target(&req)?;
            if body_bytes(&req).len() > MAX_PROXY_BODY_BYTES {
                return Err(ApiError::too_large(
                    Code::BodyTooLarge,
                    format!(
                        "The proxy forwards request bodies of at most {} MiB.",
                        MAX_PROXY_BODY_BYTES / (1024 * 1024)
                    ),
                ));
            }
            let rel = target.path.as_deref().unwrap_or("/");
            let method = req.method().as_str();
            let usable = self
                .vault
                .use_secret(
                    meta,
                    &principal,
                    UseRequest { name: &target.name, method, path: rel, query: target.query.as_deref() },
                )
                .await?;
            Ok((target, usable))
        };
        let (target, usable) = tokio::time::timeout(self.vault.request_timeout(), authorised)
            .await
            .unwrap_or_else(|_| Err(ApiError::unavailable("the request deadline passed")))?;
        let scrub = Scrubber::new(scrub_patterns(usable.value.expose_secret()));
        let upstream_req = upstream_request(&req, &target, &usable)?;
        let host = usable.upstream.host().to_owned();
        drop(usable);

        // The whole call, streaming included, ends before the function's own deadline.
        let lambda_left = req
            .lambda_context_ref()
            .and_then(|c| c.deadline().duration_since(SystemTime::now()).ok())
            .and_then(|left| left.checked_sub(DEADLINE_MARGIN))
            .filter(|left| *left > Duration::from_secs(1));
        let total = lambda_left.map_or(settings.max_duration, |left| left.min(settings.max_duration));
        let first_byte = settings.first_byte_timeout.min(total);
        let answered = match tokio::time::timeout(first_byte, self.client.request(upstream_req)).await {
            Err(_) => return Err(ApiError::GatewayTimeout),
            Ok(Err(e)) => {
                let chain = String::from_utf8_lossy(&scrub.scrub_all(crate::error::chain(&e).as_bytes())).into_owned();
                if is_blocked(&e) {
                    tracing::warn!(upstream = %host, error = %chain, "upstream refused by the address guard");
                    return Err(ApiError::BadGateway {
                        code: Code::UpstreamBlocked,
                        message: "The secret's upstream resolves to an address the proxy does not call (loopback, private, link-local or reserved).".into(),
                    });
                }
                tracing::warn!(upstream = %host, error = %chain, "upstream unreachable");
                return Err(ApiError::BadGateway {
                    code: Code::UpstreamUnavailable,
                    message: "The secret's upstream could not be reached, or its TLS certificate did not verify."
                        .into(),
                });
            }
            Ok(Ok(resp)) => resp,
        };
        let (parts, incoming) = answered.into_parts();
        let headers = relayed_headers(&parts.headers, &scrub);
        let mut resp = Response::new(ProxyBody::relay(Relay {
            inner: incoming,
            idle_for: settings.idle_timeout,
            idle: Box::pin(tokio::time::sleep(settings.idle_timeout)),
            deadline: Box::pin(tokio::time::sleep(total.saturating_sub(started.elapsed()))),
            outcome: Outcome {
                request_id: meta.request_id.clone(),
                host,
                status: parts.status.as_u16(),
                started,
                bytes: 0,
                logged: false,
            },
            done: req.method() == Method::HEAD,
            scrub,
        }));
        *resp.headers_mut() = headers;
        *resp.status_mut() = parts.status;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_joined_and_hop_by_hop_ones_dropped() {
        let mut h = HeaderMap::new();
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.append("connection", HeaderValue::from_static("close"));
        h.append("transfer-encoding", HeaderValue::from_static("chunked"));
        h.append("content-length", HeaderValue::from_static("12"));
        h.append("x-echo", HeaderValue::from_static("Bearer sk-live-1"));
        let out = relayed_headers(&h, &Scrubber::new(vec![b"sk-live-1".to_vec()]));
        assert_eq!(out.get_all("x-multi").iter().collect::<Vec<_>>(), ["a, b"]);
        assert_eq!(out.get_all("set-cookie").iter().count(), 2);
        assert_eq!(out["x-echo"], "Bearer [REDACTED]");
        for gone in ["connection", "transfer-encoding", "content-length"] {
            assert!(!out.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn credentials_and_forwarding_headers_stay_behind() {
        let named = vec!["x-hop".to_owned()];
        for dropped in [
            "authorization",
            "x-api-key",
            "cookie",
            "host",
            "x-forwarded-for",
            "x-amzn-trace-id",
            "x-hop",
            "x-key",
            "x-http-method-override",
            "x-original-url",
            "range",
            "if-range",
        ] {
            assert!(!forwarded_header(&HeaderName::from_static(dropped), &named, Some("x-key")), "{dropped}");
        }
        for kept in ["content-type", "openai-beta", "anthropic-version", "accept", "user-agent"] {
            assert!(forwarded_header(&HeaderName::from_static(kept), &named, Some("x-key")), "{kept}");
        }
    }

    #[test]
    fn the_forms_an_answer_may_echo_are_all_scrubbed() {
        let patterns = scrub_patterns("k/1+\"x\"");
        assert!(patterns.contains(&b"k/1+\"x\"".to_vec()));
        assert!(patterns.contains(&b"k%2F1%2B%22x%22".to_vec()));
        assert!(patterns.contains(&b"k/1+\\\"x\\\"".to_vec()));
        assert!(patterns.contains(&b"k%2f1%2b%22x%22".to_vec()), "lower-case percent escapes");
        assert!(patterns.contains(&b"k\\/1+\\\"x\\\"".to_vec()), "PHP's escaped slash");
        let go = scrub_patterns("a<b>&c");
        assert!(go.contains(&b"a\\u003cb\\u003e\\u0026c".to_vec()), "Go's HTML-safe escapes");
        let text = scrub_patterns("k\u{e9}y\u{1f511}/");
        for form in ["k\\u00e9y\\ud83d\\udd11/", "k\\u00E9y\\uD83D\\uDD11/", "k\\u00e9y\\ud83d\\udd11\\/"] {
            assert!(text.contains(&form.as_bytes().to_vec()), "{form}");
        }
        // Every pattern decodes, as JSON or percent-encoding, back to the value itself.
        for p in &text {
            let s = String::from_utf8(p.clone()).unwrap();
            let decoded: Option<String> = serde_json::from_str(&format!("\"{s}\"")).ok();
            assert!(decoded.as_deref() == Some("k\u{e9}y\u{1f511}/") || s.contains('%'), "{s}");
        }
    }
}
