//! The admin portal at `/portal/vault`: one static page (HTML, CSS and a little JavaScript) compiled into
//! the `portal` function, which also serves the API's OpenAPI document at `/vault/openapi.json`. It talks only to this origin's API with the admin's bearer token; the page
//! itself is public and holds nothing secret.

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};

const INDEX_HTML: &str = include_str!("../portal/index.html");
const APP_JS: &str = include_str!("../portal/app.js");
const APP_CSS: &str = include_str!("../portal/app.css");
const FAVICON: &str = include_str!("../portal/favicon.svg");
/// `openapi.yaml`, as JSON (converted by the build script).
const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// No inline script or style, nothing from another origin, no framing.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn page(status: StatusCode, content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body.to_owned()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    resp
}

/// Serves the page and its two assets; anything else under the route is a 404.
pub(crate) fn handle(req: &Request) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = page(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "Method not allowed\n");
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.raw_http_path();
    let path = if path.is_empty() { req.uri().path() } else { path };
    let resp = match path.trim_end_matches('/') {
        "/portal/vault" => page(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        "/portal/vault/app.js" => page(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        "/portal/vault/app.css" => page(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
        "/portal/vault/favicon.svg" => page(StatusCode::OK, "image/svg+xml", FAVICON),
        "/vault/openapi.json" => page(StatusCode::OK, "application/json", OPENAPI_JSON),
        _ => page(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "Not found\n"),
    };
    tracing::info!(status = resp.status().as_u16(), path, "portal request");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Response<Body> {
        let req =
            lambda_http::http::Request::builder().uri(format!("https://vault.test{path}")).body(Body::Empty).unwrap();
        handle(&Request::from(req))
    }

    #[test]
    fn serves_the_page_and_assets_with_a_strict_policy() {
        for (path, ct) in [
            ("/portal/vault", "text/html; charset=utf-8"),
            ("/portal/vault/", "text/html; charset=utf-8"),
            ("/portal/vault/app.js", "text/javascript; charset=utf-8"),
            ("/portal/vault/app.css", "text/css; charset=utf-8"),
            ("/portal/vault/favicon.svg", "image/svg+xml"),
            ("/vault/openapi.json", "application/json"),
        ] {
            let r = get(path);
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], ct);
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        }
        for path in ["/portal/vault/../secrets", "/portal/vault/app.js.map", "/portal/vault/index.html"] {
            assert_eq!(get(path).status(), 404, "{path}");
        }
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_error_codes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let listed: std::collections::BTreeSet<&str> =
            doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
        let sent: std::collections::BTreeSet<&str> = crate::error::Code::http().map(|c| c.as_str()).collect();
        assert_eq!(listed, sent);
    }

    #[test]
    fn the_openapi_document_describes_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, method) in [
            ("/vault/secrets", "post"),
            ("/vault/secrets", "get"),
            ("/vault/secrets/{name}", "get"),
            ("/vault/secrets/{name}", "delete"),
            ("/vault/openapi.json", "get"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        // Its limits are the handlers' limits.
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Name"]["maxLength"], crate::rules::MAX_NAME_LEN);
        assert_eq!(schemas["Scope"]["maxItems"], crate::rules::MAX_SCOPES);
        assert_eq!(
            doc["paths"]["/vault/secrets"]["get"]["parameters"][0]["schema"]["maximum"],
            crate::rules::MAX_LIST_LIMIT
        );
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() {
        let html = INDEX_HTML.to_ascii_lowercase();
        assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"));
        assert!(!html.contains(" onclick") && !html.contains(" onload") && !html.contains(" onsubmit"));
        for asset in [INDEX_HTML, APP_JS, APP_CSS] {
            // Every absolute URL in the assets is text a person reads (the upstream field's placeholder and
            // its error message), never something the page loads, links to or sends a form to.
            let lower = asset.to_ascii_lowercase();
            for (at, _) in lower.match_indices("http") {
                if !(lower[at..].starts_with("http://") || lower[at..].starts_with("https://")) {
                    continue;
                }
                let before = lower[..at].trim_end_matches(['"', '\'', '(', ' ', '`']);
                for loader in ["src=", "href=", "action=", "url", "@import", "fetch", "srcset=", "xmlns="] {
                    assert!(!before.ends_with(loader), "an external resource at {at}: {}", &asset[at..at + 30]);
                }
                let line = lower[..at].rsplit('\n').next().unwrap_or_default();
                assert!(line.contains("placeholder=") || line.contains("must start with"), "{line}");
            }
        }
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("eval("));
    }
}
