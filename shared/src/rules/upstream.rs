//! The rules of an upstream (where a secret's value may go), of per-secret limits, and of the paths
//! and queries the proxy forwards. Paths are normalised once, here, for both the base URL a secret is
//! written with and every request the proxy forwards, so what is checked is what is sent.

use crate::error::{ApiError, Code};
use crate::model::{Injection, Limits, Upstream, UpstreamWire};

/// Longest base URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most path prefixes on one upstream.
pub const MAX_UPSTREAM_PATHS: usize = 20;
/// Longest path prefix, and longest header template.
pub(crate) const MAX_PREFIX_LEN: usize = 256;
/// Largest per-minute or per-day limit.
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// Largest request body the proxy forwards: a Lambda invocation carries at most 6 MB, and a body that
/// is not text arrives base64-encoded (4 MiB becomes 5.6 MB).
pub const MAX_PROXY_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The methods the proxy forwards (CONNECT and TRACE never).
pub const PROXY_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// The placeholder a header template holds once.
pub(crate) const VALUE_PLACEHOLDER: &str = "{value}";

/// Request headers a secret may not be injected into: those that frame the request or name its
/// destination, and cookies.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "cookie",
    "forwarded",
    "accept-encoding",
];

fn invalid_upstream(why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(Code::InvalidUpstream, format!("upstream: {why}"))
}

fn invalid_path(why: &str) -> ApiError {
    ApiError::bad_request(Code::InvalidPath, format!("The path is refused: {why}."))
}

/// The scheme of a base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Https,
    /// Only for a loopback host, and only where the local-development switch allows it.
    Http,
}

/// A base URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    pub(crate) scheme: Scheme,
    /// Lower case; an IPv6 literal without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Normalised, without a trailing slash; empty for the root.
    pub(crate) path: String,
    /// `localhost` (or a name under it), `127.0.0.0/8` or `[::1]`.
    pub(crate) loopback: bool,
}

impl BaseUrl {
    /// The URL again, normalised (no default port, no trailing slash).
    pub(crate) fn normalised(&self) -> String {
        let (scheme, default_port) = match self.scheme {
            Scheme::Https => ("https", 443),
            Scheme::Http => ("http", 80),
        };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let port = if self.port == default_port { String::new() } else { format!(":{}", self.port) };
        format!("{scheme}://{host}{port}{}", self.path)
    }
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Parses an upstream's base URL: `https://` (or `http://` to a loopback host), a DNS name (never an
/// address, but for the loopback ones), an optional port and path; no user, query or fragment.
pub(crate) fn parse_base_url(text: &str) -> Result<BaseUrl, ApiError> {
    if text.len() > MAX_URL_LEN {
        return Err(invalid_upstream(format_args!("baseUrl is longer than {MAX_URL_LEN} characters")));
    }
    let lower_scheme = text.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let (scheme, rest) = if lower_scheme == "https://" {
        (Scheme::Https, &text[8..])
    } else if lower_scheme.starts_with("http://") {
        (Scheme::Http, &text[7..])
    } else {
        return Err(invalid_upstream("baseUrl must start with https://"));
    };
    if rest.bytes().any(|b| matches!(b, b'@' | b'?' | b'#' | b'\\') || b.is_ascii_control() || b == b' ') {
        return Err(invalid_upstream("baseUrl may not hold a user, a query, a fragment, a backslash or spaces"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) =
            v6.split_once(']').ok_or_else(|| invalid_upstream("baseUrl has an unclosed [ in its host"))?;
        if !after.is_empty() && !after.starts_with(':') {
            return Err(invalid_upstream("baseUrl has characters after its ] that are not a port"));
        }
        (addr.to_ascii_lowercase(), after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    let default_port = if scheme == Scheme::Https { 443 } else { 80 };
    let port = match port {
        None => default_port,
        Some(p) => Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid_upstream("baseUrl has a port that is not 1 to 65535"))?,
    };
    let loopback = if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        if !ip.is_loopback() {
            return Err(invalid_upstream(
                "baseUrl must name its host, not an IP address (the proxy refuses private and link-local addresses whatever the name)",
            ));
        }
        true
    } else {
        let name = host.strip_suffix('.').unwrap_or(&host);
        let labels: Vec<&str> = name.split('.').collect();
        if name.len() > 253 || !labels.iter().all(|l| is_dns_label(l)) {
            return Err(invalid_upstream("baseUrl's host is not a DNS name (letters, digits and '-' between dots)"));
        }
        // A numeric last label is never a top-level domain; resolvers read such names (`127.1`,
        // `2130706433`) as addresses.
        if labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
            return Err(invalid_upstream("baseUrl must name its host, not an IP address"));
        }
        name == "localhost" || name.ends_with(".localhost")
    };
    if scheme == Scheme::Http && !loopback {
        return Err(invalid_upstream(
            "baseUrl must start with https:// (plain http is for loopback hosts in local development)",
        ));
    }
    let path = if path.is_empty() || path == "/" {
        String::new()
    } else {
        normalize_path(path).map_err(|e| invalid_upstream(format_args!("baseUrl's path: {}", e.public_message())))?
    };
    let path = path.strip_suffix('/').unwrap_or(&path).to_owned();
    let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
    Ok(BaseUrl { scheme, host, port, path, loopback })
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path segment may hold as they are (RFC 3986 `pchar` without `@`, which the proxy
/// refuses, and `%`, which only starts an escape).
fn segment_char(b: u8) -> bool {
    unreserved(b) || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':')
}

/// Normalises a path (`/a/b`, percent-encoded as sent) and refuses what could escape its prefix or
/// reach another host: `.` and `..` segments (also encoded), empty segments (`//`), encoded slashes and
/// backslashes, `%25` (an escape that decodes into another escape), control characters, `@`, and a
/// segment that is a scheme (`https:`). Escapes of unreserved characters are decoded (RFC 3986 §6.2.2.2)
/// and the others written in upper case, so one path has one spelling.
pub(crate) fn normalize_path(raw: &str) -> Result<String, ApiError> {
    if !raw.starts_with('/') {
        return Err(invalid_path("it must start with /"));
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut segment = String::new();
    let mut i = 0;
    let finish = |segment: &mut String, out: &mut String, last: bool| -> Result<(), ApiError> {
        // `..;x` is `..` to servers that drop a segment's parameters (Tomcat, Spring), and `...` or
        // `.. ` to Windows servers that trim trailing dots and spaces: refuse a segment that is only dots
        // once those are removed.
        let head = segment.split(';').next().unwrap_or_default();
        let mut bare = head;
        loop {
            let trimmed = bare.trim_end_matches('.');
            let trimmed = trimmed.strip_suffix("%20").unwrap_or(trimmed);
            if trimmed.len() == bare.len() {
                break;
            }
            bare = trimmed;
        }
        if head.starts_with('.') && bare.is_empty() {
            return Err(invalid_path("it holds a . or .. segment"));
        }
        if segment.is_empty() && !last {
            return Err(invalid_path("it holds an empty segment (//)"));
        }
        let scheme_like = segment.ends_with(':')
            && segment.len() > 1
            && segment.as_bytes()[0].is_ascii_alphabetic()
            && segment[..segment.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'));
        if scheme_like {
            return Err(invalid_path("it holds a scheme"));
        }
        out.push('/');
        out.push_str(segment);
        segment.clear();
        Ok(())
    };
    // Skip the leading slash; each further slash ends a segment.
    i += 1;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => finish(&mut segment, &mut out, false)?,
            b'%' => {
                let hex = raw.get(i + 1..i + 3).filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
                let Some(hex) = hex else { return Err(invalid_path("it holds a % that starts no escape")) };
                let decoded = u8::from_str_radix(hex, 16).unwrap_or(0);
                match decoded {
                    b'/' | b'\\' => return Err(invalid_path("it holds an encoded slash or backslash")),
                    b'%' => return Err(invalid_path("it holds an encoded % (%25)")),
                    b'@' => return Err(invalid_path("it holds @")),
                    c if c.is_ascii_control() => return Err(invalid_path("it holds a control character")),
                    c if unreserved(c) => segment.push(c as char),
                    c => segment.push_str(&format!("%{c:02X}")),
                }
                i += 2;
            }
            b'\\' => return Err(invalid_path("it holds a backslash")),
            b'@' => return Err(invalid_path("it holds @")),
            c if segment_char(c) => segment.push(c as char),
            _ => return Err(invalid_path("it holds a character that must be percent-encoded, or a control character")),
        }
        i += 1;
    }
    finish(&mut segment, &mut out, true)?;
    Ok(out)
}

/// Checks a query string as the proxy forwards it (raw, percent-encoded): URI characters only, well-formed
/// escapes, no control characters.
pub(crate) fn check_query(raw: &str) -> Result<(), ApiError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let ok = raw.get(i + 1..i + 3).is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
                if !ok {
                    return Err(ApiError::bad_request(
                        Code::InvalidQuery,
                        "The query string holds a % that starts no escape.",
                    ));
                }
                i += 2;
            }
            b if segment_char(b) || matches!(b, b'/' | b'?' | b'@') => {}
            _ => {
                return Err(ApiError::bad_request(
                    Code::InvalidQuery,
                    "The query string holds a character that must be percent-encoded, or a control character.",
                ));
            }
        }
        i += 1;
    }
    Ok(())
}

/// Whether `path` (normalised) lies under one of `prefixes` (whole segments); any path when there are
/// none.
pub(crate) fn path_allowed(prefixes: &[String], path: &str) -> bool {
    prefixes.is_empty()
        || prefixes
            .iter()
            .any(|p| p == "/" || path == p || path.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('/')))
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b)
}

/// Validates an upstream as written: base URL, where the value goes (a header and its template,
/// `Authorization: Bearer {value}` when neither is given, or a query parameter), methods and path
/// prefixes.
pub(crate) fn validate_upstream(wire: UpstreamWire) -> Result<(Upstream, BaseUrl), ApiError> {
    let base = parse_base_url(wire.base_url.trim())?;
    let inject = match (wire.header, wire.template, wire.query) {
        (None, None, Some(query)) => {
            if query.is_empty() || query.len() > 64 || !query.bytes().all(unreserved) {
                return Err(invalid_upstream("query is 1 to 64 of A-Z a-z 0-9 - . _ ~"));
            }
            Injection::Query { name: query }
        }
        (_, _, Some(_)) => return Err(invalid_upstream("give either header (and template) or query, not both")),
        (header, template, None) => {
            let name = header.unwrap_or_else(|| "authorization".into()).to_ascii_lowercase();
            if name.is_empty() || name.len() > 64 || !name.bytes().all(is_token_char) {
                return Err(invalid_upstream("header is 1 to 64 characters of a header name"));
            }
            if RESERVED_HEADERS.contains(&name.as_str())
                || name.starts_with("x-amzn-")
                || name.starts_with("x-forwarded-")
            {
                return Err(invalid_upstream("header names one the proxy sets itself or never forwards"));
            }
            let template = template.unwrap_or_else(|| {
                if name == "authorization" { "Bearer {value}".into() } else { VALUE_PLACEHOLDER.into() }
            });
            let visible = template.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
            if template.len() > MAX_PREFIX_LEN || !visible || template.matches(VALUE_PLACEHOLDER).count() != 1 {
                return Err(invalid_upstream(format_args!(
                    "template holds {VALUE_PLACEHOLDER} exactly once, in at most {MAX_PREFIX_LEN} printable ASCII characters"
                )));
            }
            Injection::Header { name, template }
        }
    };
    let mut methods: Vec<String> = Vec::new();
    for m in wire.methods.unwrap_or_default() {
        let m = m.to_ascii_uppercase();
        if !PROXY_METHODS.contains(&m.as_str()) {
            return Err(invalid_upstream(format_args!("methods are among {PROXY_METHODS:?}")));
        }
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let prefixes = wire.paths.unwrap_or_default();
    if prefixes.len() > MAX_UPSTREAM_PATHS {
        return Err(invalid_upstream(format_args!("at most {MAX_UPSTREAM_PATHS} paths")));
    }
    let mut paths: Vec<String> = Vec::new();
    for p in prefixes {
        if p.len() > MAX_PREFIX_LEN {
            return Err(invalid_upstream(format_args!("each path is at most {MAX_PREFIX_LEN} characters")));
        }
        let p = normalize_path(&p).map_err(|e| invalid_upstream(format_args!("paths: {}", e.public_message())))?;
        let p = if p.len() > 1 { p.strip_suffix('/').unwrap_or(&p).to_owned() } else { p };
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    Ok((Upstream { base_url: base.normalised(), inject, methods, paths }, base))
}

/// Per-secret limits: each, when given, 1 to [`MAX_RATE_LIMIT`].
pub(crate) fn validate_limits(limits: Limits) -> Result<Limits, ApiError> {
    for n in [limits.per_minute, limits.per_day].into_iter().flatten() {
        if n == 0 || n > MAX_RATE_LIMIT {
            return Err(ApiError::bad_request(
                Code::InvalidLimits,
                format!("limits.perMinute and limits.perDay are whole numbers from 1 to {MAX_RATE_LIMIT}."),
            ));
        }
    }
    Ok(limits)
}

/// A value the proxy sends in a header: no control characters (a header cannot carry them, and CR or LF
/// would end it).
pub(crate) fn check_header_value(value: &[u8]) -> Result<(), ApiError> {
    if value.iter().any(|b| (b.is_ascii_control() && *b != b'\t') || *b == 0x7f) {
        return Err(ApiError::bad_request(
            Code::InvalidValue,
            "value holds control characters (such as a line break), so it cannot be sent in the upstream's header.",
        ));
    }
    Ok(())
}

/// Refuses a caller's query string that names `name`, the parameter the vault sets itself.
pub(crate) fn check_query_leaves_out(query: &str, name: &str) -> Result<(), ApiError> {
    if query.split('&').any(|kv| kv.split('=').next() == Some(name)) {
        return Err(ApiError::bad_request(
            Code::InvalidQuery,
            format!("The query string names {name}, the parameter the vault sets itself."),
        ));
    }
    Ok(())
}

/// The header value a template makes of a secret's value (marked sensitive), or the error for a value
/// a header cannot carry. The filled text is zeroized once the header holds it.
pub(crate) fn fill_header(template: &str, value: &str) -> Result<lambda_http::http::HeaderValue, ApiError> {
    let filled = zeroize::Zeroizing::new(template.replacen(VALUE_PLACEHOLDER, value, 1));
    let mut header = lambda_http::http::HeaderValue::from_str(&filled).map_err(|_| ApiError::BadGateway {
        code: Code::UpstreamUnavailable,
        message: "The secret's value cannot be sent in a header (it holds characters a header cannot carry).".into(),
    })?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_parameters_and_headers() {
        assert!(check_query_leaves_out("a=1&b=2", "key").is_ok());
        assert!(check_query_leaves_out("", "key").is_ok());
        assert!(check_query_leaves_out("keyx=1", "key").is_ok());
        for q in ["key=1", "a=1&key", "a&key=2&b"] {
            assert_eq!(check_query_leaves_out(q, "key").unwrap_err().code(), "invalid_query", "{q}");
        }
        let h = fill_header("Bearer {value}", "sk-1").unwrap();
        assert_eq!((h.to_str().unwrap(), h.is_sensitive()), ("Bearer sk-1", true));
        let e = fill_header("{value}", "a\nb").unwrap_err();
        assert_eq!(e.code(), "upstream_unavailable");
        assert!(!format!("{e:?}").contains("a\nb"), "the value is never in the error");
    }

    fn wire(base_url: &str) -> UpstreamWire {
        UpstreamWire { base_url: base_url.into(), ..Default::default() }
    }

    #[test]
    fn base_urls_are_normalised() {
        for (given, stored) in [
            ("https://api.openai.com/v1", "https://api.openai.com/v1"),
            ("HTTPS://API.OpenAI.com:443/v1/", "https://api.openai.com/v1"),
            ("https://api.stripe.com", "https://api.stripe.com"),
            ("https://api.stripe.com/", "https://api.stripe.com"),
            ("https://example.com:8443/a/%7Euser/%3a", "https://example.com:8443/a/~user/%3A"),
            ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
            ("http://localhost:9/x", "http://localhost:9/x"),
            ("https://[::1]:9443", "https://[::1]:9443"),
        ] {
            assert_eq!(parse_base_url(given).unwrap().normalised(), stored, "{given}");
        }
        assert!(parse_base_url("http://localhost:1").unwrap().loopback);
        assert!(!parse_base_url("https://api.openai.com").unwrap().loopback);
    }

    #[test]
    fn base_urls_that_could_go_elsewhere_are_refused() {
        for bad in [
            "ftp://x.com",
            "api.openai.com",
            "http://api.openai.com",
            "https://user@api.openai.com",
            "https://api.openai.com@evil.com",
            "https://api.openai.com?x=1",
            "https://api.openai.com#x",
            "https://10.0.0.1",
            "https://169.254.169.254/latest",
            "https://[fd00:ec2::254]",
            "https://[::ffff:127.0.0.1]x",
            "https://2130706433",
            "https://127.1",
            "https://0x7f.0.0.1",
            "https://a_b.com",
            "https://-a.com",
            "https://x.com:0",
            "https://x.com:99999",
            "https://x.com:",
            "https://x.com/../admin",
            "https://x.com/a%2Fb",
            "https://x.com\\@evil.com",
            "https:// x.com",
        ] {
            assert_eq!(parse_base_url(bad).unwrap_err().code(), Code::InvalidUpstream, "{bad}");
        }
    }

    #[test]
    fn paths_are_normalised_or_refused() {
        for (given, normal) in [
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/v1/models/gemini-pro:generateContent", "/v1/models/gemini-pro:generateContent"),
            ("/a/%7e%41/b%20c", "/a/~A/b%20c"),
            ("/a/", "/a/"),
            ("/", "/"),
            ("/v1/.well-known/x", "/v1/.well-known/x"),
            ("/v1/a;v=1/b", "/v1/a;v=1/b"),
            ("/v1/.env.d", "/v1/.env.d"),
        ] {
            assert_eq!(normalize_path(given).unwrap(), normal, "{given}");
        }
        for bad in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2E/b",
            "/%2e",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/a//b",
            "//evil.com",
            "/a%00",
            "/a%0d%0aX:1",
            "/a\r\n",
            "/a b",
            "/user@evil",
            "/a%40b",
            "/a%252e%252e",
            "/https:/evil.com",
            "/http:",
            "a/b",
            "/a%",
            "/a%zz",
            "/ä",
            // Dot segments as servers that drop `;params` or trim trailing dots and spaces see them.
            "/v1/chat/..;/admin",
            "/v1/chat/%2e%2e;x=1/admin",
            "/v1/.;/admin",
            "/v1/.../admin",
            "/v1/..%20/admin",
            "/v1/.%20./admin",
        ] {
            assert_eq!(normalize_path(bad).unwrap_err().code(), Code::InvalidPath, "{bad:?}");
        }
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let p = vec!["/chat".to_owned(), "/models".to_owned()];
        assert!(path_allowed(&p, "/chat") && path_allowed(&p, "/chat/completions") && path_allowed(&p, "/models/x"));
        assert!(!path_allowed(&p, "/chatter") && !path_allowed(&p, "/") && !path_allowed(&p, "/files"));
        assert!(path_allowed(&[], "/anything") && path_allowed(&["/".to_owned()], "/x"));
    }

    #[test]
    fn upstreams_validate_and_default_to_a_bearer_header() {
        let (up, _) = validate_upstream(wire("https://api.openai.com/v1")).unwrap();
        assert_eq!(up.inject, Injection::Header { name: "authorization".into(), template: "Bearer {value}".into() });
        let (up, _) = validate_upstream(UpstreamWire {
            header: Some("X-Api-Key".into()),
            methods: Some(vec!["post".into(), "POST".into(), "get".into()]),
            paths: Some(vec!["/messages/".into(), "/messages".into()]),
            ..wire("https://api.anthropic.com/v1")
        })
        .unwrap();
        assert_eq!(up.inject, Injection::Header { name: "x-api-key".into(), template: "{value}".into() });
        assert_eq!((up.methods, up.paths), (vec!["POST".to_owned(), "GET".to_owned()], vec!["/messages".to_owned()]));
        let (up, _) =
            validate_upstream(UpstreamWire { query: Some("key".into()), ..wire("https://maps.example.com") }).unwrap();
        assert_eq!(up.inject, Injection::Query { name: "key".into() });
        for bad in [
            UpstreamWire { header: Some("Host".into()), ..wire("https://x.com") },
            UpstreamWire { header: Some("Cookie".into()), ..wire("https://x.com") },
            UpstreamWire { header: Some("X-Forwarded-For".into()), ..wire("https://x.com") },
            UpstreamWire { header: Some("bad header".into()), ..wire("https://x.com") },
            UpstreamWire { header: Some("x\r\ny".into()), ..wire("https://x.com") },
            UpstreamWire { template: Some("Bearer".into()), ..wire("https://x.com") },
            UpstreamWire { template: Some("{value}{value}".into()), ..wire("https://x.com") },
            UpstreamWire { template: Some("Bearer {value}\r\nX-Evil: 1".into()), ..wire("https://x.com") },
            UpstreamWire { query: Some("a&b".into()), ..wire("https://x.com") },
            UpstreamWire { query: Some("k".into()), header: Some("x-k".into()), ..wire("https://x.com") },
            UpstreamWire { methods: Some(vec!["CONNECT".into()]), ..wire("https://x.com") },
            UpstreamWire { methods: Some(vec!["TRACE".into()]), ..wire("https://x.com") },
            UpstreamWire { paths: Some(vec!["/a/../b".into()]), ..wire("https://x.com") },
            UpstreamWire { paths: Some(vec!["relative".into()]), ..wire("https://x.com") },
            UpstreamWire { paths: Some((0..21).map(|i| format!("/p{i}")).collect()), ..wire("https://x.com") },
        ] {
            assert_eq!(validate_upstream(bad.clone()).unwrap_err().code(), Code::InvalidUpstream, "{bad:?}");
        }
    }

    #[test]
    fn limits_and_header_values() {
        assert!(validate_limits(Limits { per_minute: Some(1), per_day: Some(MAX_RATE_LIMIT) }).is_ok());
        assert!(validate_limits(Limits { per_minute: Some(0), per_day: None }).is_err());
        assert!(validate_limits(Limits { per_minute: None, per_day: Some(MAX_RATE_LIMIT + 1) }).is_err());
        assert!(check_header_value(b"sk-abc\tdef").is_ok());
        for bad in [&b"sk\r\nX-Evil: 1"[..], b"sk\n", b"sk\0", b"sk\x7f"] {
            assert_eq!(check_header_value(bad).unwrap_err().code(), Code::InvalidValue);
        }
        assert!(check_query("a=1&b=%20x&c=/d?e@f:g").is_ok());
        for bad in ["a=1 2", "a=%", "a=%zz", "a=\r\n", "a=<x>", "a#b"] {
            assert_eq!(check_query(bad).unwrap_err().code(), Code::InvalidQuery, "{bad:?}");
        }
    }
}
