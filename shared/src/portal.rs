//! The admin portal at `/portal/vault`: one static page (HTML, CSS and a little JavaScript) compiled into
//! the `portal` function, which also serves the API's OpenAPI document at `/vault/openapi.json`. It talks
//! to this origin's API with the admin's bearer token, and to the identity provider the portal signs in
//! with (`VAULT_PORTAL_OIDC_*`, [`PortalSettings`]) for discovery and the token call; the page itself is
//! public and holds nothing secret.

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};

const INDEX_HTML: &str = include_str!("../portal/index.html");
const APP_JS: &str = include_str!("../portal/app.js");
const APP_CSS: &str = include_str!("../portal/app.css");
const FAVICON: &str = include_str!("../portal/favicon.svg");
/// `openapi.yaml`, as JSON (converted by the build script).
const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// No inline script or style, nothing from another origin (but the identity provider's, for its
/// discovery document and token call: `{connect}`), no framing.
const CSP_TEMPLATE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'{connect}; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The identity provider the portal signs administrators in with: the authorization code flow with
/// PKCE of a public client (no secret).
#[derive(Debug)]
pub(crate) struct PortalOidc {
    /// `VAULT_PORTAL_OIDC_ISSUER`: the issuer, exactly as its discovery document and tokens name it.
    pub(crate) issuer: String,
    /// `VAULT_PORTAL_OIDC_CLIENT_ID`: the portal's client (a single-page application, no secret).
    pub(crate) client_id: String,
    /// `VAULT_PORTAL_OIDC_SCOPE`: what it asks for (default `openid`).
    pub(crate) scope: String,
    /// `VAULT_PORTAL_OIDC_PARAMS`: more authorization-request parameters, as a query string (Auth0's
    /// `audience=...`, a resource indicator `resource=...`).
    pub(crate) params: Vec<(String, String)>,
    /// The origins the page may connect to: the issuer's, and `VAULT_PORTAL_OIDC_ORIGINS` (space-separated)
    /// when the token endpoint lives elsewhere (Cognito's hosted domain).
    pub(crate) origins: Vec<String>,
}

/// The portal's configuration, read once per cold start: the page's policy header and its config.json.
#[derive(Debug)]
pub(crate) struct PortalSettings {
    csp: HeaderValue,
    config_json: String,
}

/// `scheme://host[:port]` of an absolute URL that [`crate::config::check_jwks_url`] accepts (https, or
/// http to loopback), or why not.
fn origin_of(name: &str, url: &str) -> Result<String, String> {
    crate::config::check_jwks_url(url).map_err(|why| format!("{name} {why}"))?;
    let uri: lambda_http::http::Uri = url.parse().map_err(|_| format!("{name} must be an absolute URL"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => Ok(format!("{scheme}://{}", authority.as_str().to_ascii_lowercase())),
        _ => Err(format!("{name} must be an absolute URL")),
    }
}

impl PortalSettings {
    /// From the environment: without `VAULT_PORTAL_OIDC_ISSUER` the page offers only the pasted token.
    pub(crate) fn from_lookup(get: impl Fn(&'static str) -> Option<String>) -> Result<Self, String> {
        let get = |name| get(name).filter(|v: &String| !v.trim().is_empty());
        let oidc = match get("VAULT_PORTAL_OIDC_ISSUER") {
            None => None,
            Some(issuer) => {
                let client_id = get("VAULT_PORTAL_OIDC_CLIENT_ID").ok_or(
                    "VAULT_PORTAL_OIDC_ISSUER is set: set VAULT_PORTAL_OIDC_CLIENT_ID (the portal's client) too",
                )?;
                let mut origins = vec![origin_of("VAULT_PORTAL_OIDC_ISSUER", &issuer)?];
                for extra in get("VAULT_PORTAL_OIDC_ORIGINS").unwrap_or_default().split_whitespace() {
                    let origin = origin_of("VAULT_PORTAL_OIDC_ORIGINS", extra)?;
                    if extra.trim_end_matches('/') != origin {
                        return Err(format!(
                            "VAULT_PORTAL_OIDC_ORIGINS holds origins (scheme://host[:port]), not {extra}"
                        ));
                    }
                    if !origins.contains(&origin) {
                        origins.push(origin);
                    }
                }
                let params = get("VAULT_PORTAL_OIDC_PARAMS")
                    .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                    .unwrap_or_default();
                Some(PortalOidc {
                    issuer,
                    client_id,
                    scope: get("VAULT_PORTAL_OIDC_SCOPE").unwrap_or_else(|| "openid".into()),
                    params,
                    origins,
                })
            }
        };
        Self::new(oidc)
    }

    pub(crate) fn new(oidc: Option<PortalOidc>) -> Result<Self, String> {
        let connect: String = oidc.iter().flat_map(|o| &o.origins).map(|o| format!(" {o}")).collect();
        let csp = HeaderValue::from_str(&CSP_TEMPLATE.replace("{connect}", &connect))
            .map_err(|_| "VAULT_PORTAL_OIDC_ORIGINS makes an invalid Content-Security-Policy header".to_owned())?;
        let config = serde_json::json!({
            "oidc": oidc.as_ref().map(|o| serde_json::json!({
                "issuer": o.issuer,
                "clientId": o.client_id,
                "scope": o.scope,
                "params": o.params.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                    .collect::<serde_json::Map<_, _>>(),
            })),
        });
        Ok(Self { csp, config_json: config.to_string() })
    }

    /// The page's Content-Security-Policy.
    #[cfg(test)]
    pub(crate) fn content_security_policy(&self) -> &str {
        self.csp.to_str().unwrap_or_default()
    }
}

fn page(settings: &PortalSettings, status: StatusCode, content_type: &'static str, body: &str) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body.to_owned()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, settings.csp.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    resp
}

/// Serves the page, its assets and its configuration; anything else under the route is a 404.
pub(crate) fn handle(settings: &PortalSettings, req: &Request) -> Response<Body> {
    let page = |status, content_type, body: &str| page(settings, status, content_type, body);
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
        "/portal/vault/config.json" => page(StatusCode::OK, "application/json", &settings.config_json),
        "/vault/openapi.json" => page(StatusCode::OK, "application/json", OPENAPI_JSON),
        _ => page(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "Not found\n"),
    };
    tracing::info!(status = resp.status().as_u16(), path, "portal request");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_with(settings: &PortalSettings, path: &str) -> Response<Body> {
        let req =
            lambda_http::http::Request::builder().uri(format!("https://vault.test{path}")).body(Body::Empty).unwrap();
        handle(settings, &Request::from(req))
    }

    fn get(path: &str) -> Response<Body> {
        get_with(&PortalSettings::new(None).unwrap(), path)
    }

    fn body(r: &Response<Body>) -> String {
        match r.body() {
            Body::Text(t) => t.clone(),
            _ => panic!("a text body"),
        }
    }

    fn settings(env: &[(&'static str, &str)]) -> Result<PortalSettings, String> {
        PortalSettings::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn the_policy_allows_exactly_the_providers_origin_and_the_page_learns_its_settings() {
        let s = settings(&[
            ("VAULT_PORTAL_OIDC_ISSUER", "https://Tenant.Auth0.com/"),
            ("VAULT_PORTAL_OIDC_CLIENT_ID", "spa-123"),
            ("VAULT_PORTAL_OIDC_PARAMS", "audience=https%3A%2F%2Fvault.example&prompt=login"),
        ])
        .unwrap();
        let r = get_with(&s, "/portal/vault");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("connect-src 'self' https://tenant.auth0.com;"), "{csp}");
        assert_eq!(csp.matches("https://").count(), 1, "{csp}");
        let config: serde_json::Value =
            serde_json::from_str(&body(&get_with(&s, "/portal/vault/config.json"))).unwrap();
        assert_eq!(
            config,
            serde_json::json!({"oidc": {"issuer": "https://Tenant.Auth0.com/", "clientId": "spa-123", "scope": "openid",
                "params": {"audience": "https://vault.example", "prompt": "login"}}})
        );
        // Cognito: discovery at the issuer, the token call at the hosted domain.
        let s = settings(&[
            ("VAULT_PORTAL_OIDC_ISSUER", "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc"),
            ("VAULT_PORTAL_OIDC_CLIENT_ID", "app"),
            ("VAULT_PORTAL_OIDC_ORIGINS", "https://vault.auth.eu-west-1.amazoncognito.com"),
        ])
        .unwrap();
        assert!(s.content_security_policy().contains(
            "connect-src 'self' https://cognito-idp.eu-west-1.amazonaws.com https://vault.auth.eu-west-1.amazoncognito.com;"
        ));
        // Without a provider: this origin only, and the page offers the pasted token.
        let none = settings(&[]).unwrap();
        assert!(none.content_security_policy().contains("connect-src 'self';"));
        assert_eq!(body(&get_with(&none, "/portal/vault/config.json")), r#"{"oidc":null}"#);
    }

    #[test]
    fn a_bad_provider_setting_is_refused_with_its_name() {
        let issuer = |v| settings(&[("VAULT_PORTAL_OIDC_ISSUER", v), ("VAULT_PORTAL_OIDC_CLIENT_ID", "c")]);
        for bad in ["http://idp.example", "idp.example", "https://user@idp.example", "http://localhost.evil.example"] {
            assert!(issuer(bad).unwrap_err().starts_with("VAULT_PORTAL_OIDC_ISSUER"), "{bad}");
        }
        assert!(issuer("http://127.0.0.1:9100").is_ok(), "a local provider on loopback");
        let e = settings(&[("VAULT_PORTAL_OIDC_ISSUER", "https://idp.example")]).unwrap_err();
        assert!(e.contains("VAULT_PORTAL_OIDC_CLIENT_ID"), "{e}");
        let e = settings(&[
            ("VAULT_PORTAL_OIDC_ISSUER", "https://idp.example"),
            ("VAULT_PORTAL_OIDC_CLIENT_ID", "c"),
            ("VAULT_PORTAL_OIDC_ORIGINS", "https://idp.example/token"),
        ])
        .unwrap_err();
        assert!(e.contains("not https://idp.example/token"), "{e}");
    }

    #[test]
    fn serves_the_page_and_assets_with_a_strict_policy() {
        for (path, ct) in [
            ("/portal/vault", "text/html; charset=utf-8"),
            ("/portal/vault/", "text/html; charset=utf-8"),
            ("/portal/vault/app.js", "text/javascript; charset=utf-8"),
            ("/portal/vault/app.css", "text/css; charset=utf-8"),
            ("/portal/vault/favicon.svg", "image/svg+xml"),
            ("/portal/vault/config.json", "application/json"),
            ("/vault/openapi.json", "application/json"),
        ] {
            let r = get(path);
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], ct);
            assert_eq!(
                r.headers()[header::CONTENT_SECURITY_POLICY],
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            );
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
