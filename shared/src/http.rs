//! Request parsing and response building: the HTTP face of the vault.
//!
//! Every handler goes the same way: check the method, authenticate, validate, call the service, respond.
//! Every response is JSON with `Cache-Control: no-store`; errors use one envelope,
//! `{"success":false,"error":{"code","message"}}`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::Instrument;

use crate::audit::RequestMeta;
use crate::error::ApiError;
use crate::service::{Cursor, ListPage, ListTarget, PutAction, PutSecret, SecretWithValue, Vault};
use crate::store::SecretItem;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest secret value, in bytes of UTF-8.
pub const MAX_VALUE_BYTES: usize = 65_536;
/// Longest secret name.
pub const MAX_NAME_LEN: usize = 128;
/// Most scope entries on one secret.
pub const MAX_SCOPES: usize = 20;
/// Longest scope entry.
pub const MAX_SCOPE_LEN: usize = 64;
/// Default and largest page sizes of a listing.
pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 1000;
/// Route prefix under which a secret's name follows.
const SECRETS_PATH: &str = "/vault/secrets/";

/// The four operations, one per Lambda function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /vault/secrets`
    Create,
    /// `GET /vault/secrets/{name}`
    Get,
    /// `GET /vault/secrets`
    List,
    /// `DELETE /vault/secrets/{name}`
    Delete,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create-secret",
            Self::Get => "get-secret",
            Self::List => "list-secrets",
            Self::Delete => "delete-secret",
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Create => Method::POST,
            Self::Get | Self::List => Method::GET,
            Self::Delete => Method::DELETE,
        }
    }
}

/// Handles one request end to end. Never fails: every error becomes its JSON response.
pub async fn handle(vault: &Vault, op: Operation, req: Request) -> Response<Body> {
    let meta = request_meta(&req);
    let span =
        tracing::info_span!("request", request_id = %meta.request_id, op = op.name(), org = tracing::field::Empty);
    async move {
        // One overall deadline, below the Lambda timeout: a slow DynamoDB ends in a 503 with Retry-After.
        // Writes are single transactions, so a request cut here has either written everything or nothing.
        let outcome = tokio::time::timeout(vault.request_timeout(), dispatch(vault, op, &meta, req))
            .await
            .unwrap_or_else(|_| Err(ApiError::unavailable("the request deadline passed")));
        match outcome {
            Ok(resp) => {
                tracing::info!(status = resp.status().as_u16(), "request completed");
                resp
            }
            Err(e) => {
                if e.is_server_error() {
                    tracing::error!(status = e.status(), code = e.code(), error = %crate::error::chain(&e), "request failed");
                } else {
                    tracing::info!(status = e.status(), code = e.code(), "request refused");
                }
                error_response(&e, op)
            }
        }
    }
    .instrument(span)
    .await
}

async fn dispatch(vault: &Vault, op: Operation, meta: &RequestMeta, req: Request) -> Result<Response<Body>, ApiError> {
    if req.method() != op.method() {
        return Err(ApiError::MethodNotAllowed);
    }
    let mut auth = req.headers().get_all(header::AUTHORIZATION).iter();
    let (first, second) = (auth.next(), auth.next());
    if second.is_some() {
        return Err(ApiError::invalid_token("more than one Authorization header was sent"));
    }
    let principal = vault.authenticate(first.map(HeaderValue::as_bytes)).await?;
    tracing::Span::current().record("org", principal.org_id.as_str());

    match op {
        Operation::Create => {
            allow_query(&req, &[])?;
            let input = parse_put(&req)?;
            let action = vault.put_secret(meta, &principal, input).await?;
            let (status, action) = match action {
                PutAction::Created => (StatusCode::CREATED, "created"),
                PutAction::Updated => (StatusCode::OK, "updated"),
            };
            Ok(json_response(status, &json!({"success": true, "action": action})))
        }
        Operation::Get => {
            let name = path_name(&req)?;
            let query = allow_query(&req, &["clientId"])?;
            let client_id = query.client_id()?;
            let secret = vault.get_secret(meta, &principal, &name, client_id.as_deref()).await?;
            Ok(secret_response(&secret))
        }
        Operation::List => {
            let query = allow_query(&req, &["clientId", "limit", "nextToken", "all"])?;
            let target = match (query.client_id()?, query.get("all")) {
                (None, None) => ListTarget::Own,
                (Some(client), None) => ListTarget::Client(client),
                (None, Some("true")) => ListTarget::Organization,
                (None, Some(_)) => return Err(ApiError::bad_request("invalid_query", "all must be true when given.")),
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request("invalid_query", "Give either clientId or all=true, not both."));
                }
            };
            let limit = query.limit()?;
            let cursor = query.get("nextToken").map(decode_cursor).transpose()?;
            let page = vault.list_secrets(meta, &principal, target, limit, cursor).await?;
            Ok(json_response(StatusCode::OK, &list_body(&page)))
        }
        Operation::Delete => {
            let name = path_name(&req)?;
            let query = allow_query(&req, &["clientId"])?;
            let client_id = query.client_id()?;
            vault.delete_secret(meta, &principal, &name, client_id.as_deref()).await?;
            Ok(json_response(StatusCode::OK, &json!({"success": true, "action": "deleted"})))
        }
    }
}

/// Runs every check of a request that does not need its token or the store: the method, the name in the
/// path, the query string and the create body. The handlers run the same checks in `dispatch`; this entry
/// point exists for the fuzz targets (`fuzz/`), which feed it arbitrary requests.
pub fn validate_request(op: Operation, req: &Request) -> Result<(), ApiError> {
    if req.method() != op.method() {
        return Err(ApiError::MethodNotAllowed);
    }
    match op {
        Operation::Create => {
            allow_query(req, &[])?;
            parse_put(req).map(|_| ())
        }
        Operation::Get | Operation::Delete => {
            path_name(req)?;
            allow_query(req, &["clientId"])?.client_id().map(|_| ())
        }
        Operation::List => {
            let query = allow_query(req, &["clientId", "limit", "nextToken", "all"])?;
            query.client_id()?;
            query.limit()?;
            query.get("nextToken").map(decode_cursor).transpose().map(|_| ())
        }
    }
}

fn request_meta(req: &Request) -> RequestMeta {
    let header = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut meta = RequestMeta { user_agent: header(header::USER_AGENT), ..RequestMeta::default() };
    if let Some(RequestContext::ApiGatewayV2(ctx)) = req.request_context_ref() {
        meta.request_id = ctx.request_id.clone().unwrap_or_default();
        meta.source_ip = ctx.http.source_ip.clone();
        if ctx.http.user_agent.is_some() {
            meta.user_agent = ctx.http.user_agent.clone();
        }
    }
    if meta.request_id.is_empty() {
        meta.request_id = req.lambda_context_ref().map(|c| c.request_id.clone()).unwrap_or_default();
    }
    meta
}

/// Checks a secret name: 1–128 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_name",
            "Secret names are 1 to 128 characters of A-Z, a-z, 0-9, '_', '.' and '-', starting with a letter or digit.",
        ))
    }
}

/// Checks and de-duplicates a scope list: at most 20 entries of 1–64 of `[A-Za-z0-9_.:-]`.
pub fn validate_scope(scope: Vec<String>) -> Result<Vec<String>, ApiError> {
    if scope.len() > MAX_SCOPES {
        return Err(ApiError::bad_request("invalid_scope", "A secret may carry at most 20 scopes."));
    }
    let mut out: Vec<String> = Vec::with_capacity(scope.len());
    for entry in scope {
        let ok = !entry.is_empty()
            && entry.len() <= MAX_SCOPE_LEN
            && entry.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
        if !ok {
            return Err(ApiError::bad_request(
                "invalid_scope",
                "Each scope is 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'.",
            ));
        }
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Checks an OAuth client id named by an admin.
fn validate_client_id(client_id: &str) -> Result<(), ApiError> {
    if client_id.is_empty() || client_id.len() > crate::auth::MAX_ID_LEN || client_id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_client_id",
            "clientId must be 1 to 256 characters without control characters.",
        ));
    }
    Ok(())
}

/// Parses `expiresAt` (RFC 3339 with a zone), which must lie in the future. Returns epoch seconds.
pub fn parse_expiry(text: &str, now: OffsetDateTime) -> Result<i64, ApiError> {
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        ApiError::bad_request(
            "invalid_expires_at",
            "expiresAt must be an RFC 3339 date-time with a zone, such as 2030-12-31T23:59:59Z.",
        )
    })?;
    if at <= now {
        return Err(ApiError::bad_request("invalid_expires_at", "expiresAt must be in the future."));
    }
    Ok(at.unix_timestamp())
}

fn format_epoch(secs: i64) -> Value {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

/// The name in `/vault/secrets/{name}`: from the route's path parameters, else from the raw path
/// (function-URL style invocations leave path parameters empty).
fn path_name(req: &Request) -> Result<String, ApiError> {
    let name = match req.path_parameters_ref().and_then(|p| p.first("name")) {
        Some(name) => name.to_owned(),
        None => {
            let path = req.raw_http_path();
            let path = if path.is_empty() { req.uri().path() } else { path };
            path.rfind(SECRETS_PATH).map(|i| path[i + SECRETS_PATH.len()..].to_owned()).unwrap_or_default()
        }
    };
    validate_name(&name)?;
    Ok(name)
}

struct Query(lambda_http::aws_lambda_events::query_map::QueryMap);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.first(key)
    }

    fn client_id(&self) -> Result<Option<String>, ApiError> {
        self.get("clientId").map(|c| validate_client_id(c).map(|()| c.to_owned())).transpose()
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIST_LIMIT),
            Some(v) => {
                v.parse::<usize>().ok().filter(|n| (1..=MAX_LIST_LIMIT).contains(n)).ok_or_else(|| {
                    ApiError::bad_request("invalid_limit", "limit must be a whole number from 1 to 1000.")
                })
            }
        }
    }
}

/// Refuses query parameters other than `allowed`, and repeated ones.
fn allow_query(req: &Request, allowed: &[&str]) -> Result<Query, ApiError> {
    let query = req.query_string_parameters();
    for (key, _) in query.iter() {
        if !allowed.contains(&key) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("Unknown query parameter; accepted here: {allowed:?}."),
            ));
        }
        if query.all(key).is_some_and(|v| v.len() > 1) {
            return Err(ApiError::bad_request("invalid_query", "A query parameter was repeated."));
        }
    }
    Ok(Query(query))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PutBody {
    name: String,
    value: SecretString,
    #[serde(default)]
    scope: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

fn is_json_content_type(req: &Request) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns a JSON error into a message that never echoes the body (a wrongly-typed value would be quoted
/// by serde otherwise).
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = e.to_string();
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            if text.starts_with("recursion limit") {
                "The request body is nested too deeply.".into()
            } else {
                format!("The request body is not valid JSON (line {}, column {}).", e.line(), e.column())
            }
        }
        Category::Data => {
            for prefix in ["missing field", "duplicate field", "unknown field"] {
                if let Some(rest) = text.strip_prefix(prefix) {
                    let field: String = rest.split('`').nth(1).unwrap_or("").chars().take(64).collect();
                    return format!(
                        "The request body has a {prefix} `{field}`; accepted fields: name, value, scope, expiresAt, clientId."
                    );
                }
            }
            format!(
                "A field of the request body has the wrong type or value (line {}, column {}): name, value and expiresAt are strings, scope an array of strings.",
                e.line(),
                e.column()
            )
        }
    }
}

fn parse_put(req: &Request) -> Result<PutSecret, ApiError> {
    let bytes = body_bytes(req);
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            code: "body_too_large",
            message: "The request body is larger than 1 MiB.".into(),
        });
    }
    if !is_json_content_type(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    if bytes.is_empty() {
        return Err(ApiError::bad_request("invalid_json", "A JSON request body is required."));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::bad_request("invalid_json", "The request body is not valid UTF-8."));
    }
    let body: PutBody =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request("invalid_json", describe_json_error(&e)))?;
    validate_name(&body.name)?;
    let value_len = body.value.expose_secret().len();
    if value_len == 0 {
        return Err(ApiError::bad_request("invalid_value", "value must not be empty."));
    }
    if value_len > MAX_VALUE_BYTES {
        return Err(ApiError::PayloadTooLarge {
            code: "value_too_large",
            message: "value is larger than 65,536 bytes.".into(),
        });
    }
    let scope = validate_scope(body.scope.unwrap_or_default())?;
    let expires_at = body.expires_at.as_deref().map(|t| parse_expiry(t, OffsetDateTime::now_utc())).transpose()?;
    if let Some(c) = &body.client_id {
        validate_client_id(c)?;
    }
    Ok(PutSecret { name: body.name, value: body.value, scope, expires_at, client_id: body.client_id })
}

fn encode_cursor(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

fn decode_cursor(token: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::bad_request("invalid_next_token", "nextToken is not one this API returned.");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if let Some(after) = &cursor.after {
        validate_name(after).map_err(|_| bad())?;
    }
    if let Some(client) = &cursor.client {
        validate_client_id(client).map_err(|_| bad())?;
    }
    Ok(cursor)
}

fn metadata(item: &SecretItem) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("name".into(), json!(item.name));
    m.insert("scope".into(), json!(item.scope));
    m.insert("expiresAt".into(), item.expires_at.map_or(Value::Null, format_epoch));
    m.insert("createdAt".into(), json!(item.created_at));
    m.insert("updatedAt".into(), json!(item.updated_at));
    m.insert("ownership".into(), json!(item.owner.kind()));
    if let crate::policy::Owner::App { client_id } = &item.owner {
        m.insert("clientId".into(), json!(client_id));
    }
    m
}

/// The body of a read: the metadata plus the value, serialized straight from the secret so that the
/// response body is the only copy of the plaintext made here.
fn secret_response(secret: &SecretWithValue) -> Response<Body> {
    #[derive(serde::Serialize)]
    struct WithValue<'a> {
        #[serde(flatten)]
        metadata: serde_json::Map<String, Value>,
        value: &'a str,
    }
    let body = WithValue { metadata: metadata(&secret.item), value: secret.value.expose_secret() };
    match serde_json::to_string(&body) {
        Ok(text) => response(StatusCode::OK, text),
        Err(e) => error_response(&ApiError::internal(e), Operation::Get),
    }
}

fn list_body(page: &ListPage) -> Value {
    let secrets: Vec<Value> = page.secrets.iter().map(|s| Value::Object(metadata(s))).collect();
    json!({"secrets": secrets, "nextToken": page.next.as_ref().map(encode_cursor)})
}

fn response(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    response(status, body.to_string())
}

/// The response for an error: the envelope, plus the headers RFC 6750 and RFC 9110 ask for.
pub fn error_response(e: &ApiError, op: Operation) -> Response<Body> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"success": false, "error": {"code": e.code(), "message": e.public_message()}});
    let mut resp = json_response(status, &body);
    let h = resp.headers_mut();
    match e {
        // The issue's contract asks for error="invalid_token" on every 401, a missing token included
        // (RFC 6750 lets a server omit it there; clients handle both).
        ApiError::Unauthorized { .. } => {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"token-vault\", error=\"invalid_token\""),
            );
        }
        ApiError::Forbidden { code: "insufficient_scope", .. } => {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"token-vault\", error=\"insufficient_scope\""),
            );
        }
        ApiError::Unavailable(_) => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        ApiError::MethodNotAllowed => {
            let allow = match op.method() {
                Method::POST => "POST",
                Method::DELETE => "DELETE",
                _ => "GET",
            };
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        _ => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        for ok in ["a", "A", "0", "openai_api_key", "a.b-c_d", &"a".repeat(128)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", &"a".repeat(129), ".", "..", "-x", "_x", "a/b", "a#b", "%2F", "a\0b", "é", "a b", "ａ"] {
            assert_eq!(validate_name(bad).unwrap_err().code(), "invalid_name", "{bad:?}");
        }
    }

    #[test]
    fn scope_rules() {
        assert_eq!(validate_scope(vec!["a".into(), "b:c".into(), "a".into()]).unwrap(), vec!["a", "b:c"]);
        assert!(validate_scope((0..20).map(|i| format!("s{i}")).collect()).is_ok());
        assert!(validate_scope((0..21).map(|i| format!("s{i}")).collect()).is_err());
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_scope(vec![bad.into()]).is_err(), "{bad}");
        }
        assert!(validate_scope(vec!["x".repeat(64)]).is_ok());
    }

    #[test]
    fn expiry_rules() {
        let now = time::macros::datetime!(2030-01-01 00:00:00 UTC);
        assert_eq!(parse_expiry("2030-01-01T00:00:01Z", now).unwrap(), now.unix_timestamp() + 1);
        assert_eq!(parse_expiry("2030-01-01T01:00:00+01:00", now).unwrap_err().code(), "invalid_expires_at");
        for bad in ["2029-12-31T23:59:59Z", "2030-06-01T00:00:00", "10000-01-01T00:00:00Z", "tomorrow", "2030-06-01"] {
            assert_eq!(parse_expiry(bad, now).unwrap_err().code(), "invalid_expires_at", "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let c = Cursor { owner: 1, after: Some("abc".into()), client: Some("client#1".into()) };
        assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        for bad in ["", "!!!", &URL_SAFE_NO_PAD.encode(b"{\"o\":0,\"a\":\"../x\"}"), &URL_SAFE_NO_PAD.encode(b"[]")] {
            assert_eq!(decode_cursor(bad).unwrap_err().code(), "invalid_next_token");
        }
    }

    #[test]
    fn json_errors_never_echo_values() {
        let err = serde_json::from_str::<PutBody>(r#"{"name": "n", "value": ["sk-live-123"]}"#).err().unwrap();
        let msg = describe_json_error(&err);
        assert!(!msg.contains("sk-live"), "{msg}");
        let err = serde_json::from_str::<PutBody>(r#"{"name": "n", "value": "v", "name": "m"}"#).err().unwrap();
        assert!(describe_json_error(&err).contains("duplicate field `name`"));
        let err = serde_json::from_str::<PutBody>(r#"{"name": "n", "value": "v", "extra": 1}"#).err().unwrap();
        assert!(describe_json_error(&err).contains("unknown field `extra`"));
    }

    #[test]
    fn validate_request_runs_the_handlers_checks() {
        use std::collections::HashMap;
        let request = |method: &str, path: &str, name: Option<&str>, query: &[(&str, &str)], ct: &str, body: &str| {
            let req: Request = lambda_http::http::Request::builder()
                .method(method)
                .uri(format!("https://vault.test{path}"))
                .header("content-type", ct)
                .body(Body::Text(body.to_owned()))
                .unwrap();
            let query: HashMap<String, String> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let req = req.with_query_string_parameters(query);
            match name {
                Some(n) => req.with_path_parameters(HashMap::from([("name".to_owned(), n.to_owned())])),
                None => req,
            }
        };
        let json = "application/json";
        let code = |op, req: Request| validate_request(op, &req).err().map(|e| e.code());
        let ok = r#"{"name":"k","value":"v"}"#;
        assert_eq!(code(Operation::Create, request("POST", "/vault/secrets", None, &[], json, ok)), None);
        assert_eq!(
            code(Operation::Create, request("POST", "/vault/secrets", None, &[], "text/plain", ok)),
            Some("unsupported_media_type")
        );
        assert_eq!(
            code(Operation::Create, request("POST", "/vault/secrets", None, &[], json, "{")),
            Some("invalid_json")
        );
        assert_eq!(
            code(Operation::Create, request("GET", "/vault/secrets", None, &[], json, ok)),
            Some("method_not_allowed")
        );
        assert_eq!(code(Operation::Get, request("GET", "/vault/secrets/k", Some("k"), &[], json, "")), None);
        assert_eq!(
            code(Operation::Get, request("GET", "/vault/secrets/x", Some("a/b"), &[], json, "")),
            Some("invalid_name")
        );
        assert_eq!(
            code(Operation::Delete, request("DELETE", "/vault/secrets/..", None, &[], json, "")),
            Some("invalid_name")
        );
        assert_eq!(code(Operation::Delete, request("DELETE", "/vault/secrets/k", None, &[], json, "")), None);
        assert_eq!(
            code(Operation::List, request("GET", "/vault/secrets", None, &[("limit", "0")], json, "")),
            Some("invalid_limit")
        );
        assert_eq!(
            code(Operation::List, request("GET", "/vault/secrets", None, &[("nextToken", "!")], json, "")),
            Some("invalid_next_token")
        );
        assert_eq!(code(Operation::List, request("GET", "/vault/secrets", None, &[("limit", "5")], json, "")), None);
    }
}
