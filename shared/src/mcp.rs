//! The MCP server: `/vault/mcp`, the Model Context Protocol's Streamable HTTP transport, stateless, every
//! answer one JSON response (no session, no event stream: what a buffered Lambda behind API Gateway
//! serves). JSON-RPC 2.0 is written out here rather than taken from the Rust SDK (`rmcp`), whose server
//! side keeps sessions in the process and brings a second HTTP stack into the package.
//!
//! Tools use secrets and never show them: `list_secrets` (metadata), `call_api` (the proxy itself, with
//! its rules, limits and audit, the value injected and scrubbed from the answer) and `audit`. No tool
//! returns a value, whatever the secret's access mode, so a model's context never holds a key.
//!
//! Authorization (MCP's authorization spec): every request carries the same bearer tokens as the API;
//! a 401 names the OAuth protected-resource metadata (RFC 9728), served at
//! `/.well-known/oauth-protected-resource[/vault/mcp]`, which names the identity provider. Requests carry
//! no ambient credential (no cookie), so an `Origin` a browser sets cannot make one on a user's behalf;
//! a page can only call this with a token it already holds.

use http_body_util::BodyExt;
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tracing::Instrument;

use crate::error::ApiError;
use crate::http::{EventView, error_allowing, json_text, log_failure, raw_path, request_meta};
use crate::model::{EventKind, Principal, RequestMeta};
use crate::proxy::{PROXY_PATH, Proxy, handle_proxy, percent_encode};
use crate::rules::{MAX_AUDIT_RANGE_DAYS, MAX_PROXY_BODY_BYTES, validate_name};
use crate::service::{AuditQuery, ListTarget};
use crate::store::AuditFilter;

/// The route of the MCP endpoint.
pub const MCP_PATH: &str = "/vault/mcp";

/// The protected-resource metadata (RFC 9728), at the root and with the resource's path appended.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The protocol revisions this server speaks, newest first. (2025-03-26 and earlier require JSON-RPC
/// batches, which a stateless one-answer-per-request server does not take.)
const PROTOCOL_VERSIONS: [&str; 2] = ["2025-11-25", "2025-06-18"];

/// The largest MCP request body read (a `call_api` body plus its envelope).
const MAX_MCP_REQUEST_BYTES: usize = MAX_PROXY_BODY_BYTES + 64 * 1024;

/// How much of an upstream's answer `call_api` returns to the model; the rest is cut (and said so).
const MAX_TOOL_ANSWER_BYTES: usize = 256 * 1024;

/// How many secrets `list_secrets` returns at most.
const MAX_LISTED: usize = 500;

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// Handles one HTTP request to the MCP endpoint or its metadata. Never fails.
pub async fn handle_mcp(proxy: &Proxy, req: Request) -> Response<Body> {
    let meta = request_meta(&req);
    let span = tracing::info_span!("request", request_id = %meta.request_id, op = "mcp", org = tracing::field::Empty);
    async move {
        let resp = route(proxy, &meta, req).await;
        tracing::info!(status = resp.status().as_u16(), "request completed");
        resp
    }
    .instrument(span)
    .await
}

async fn route(proxy: &Proxy, meta: &RequestMeta, req: Request) -> Response<Body> {
    let path = raw_path(&req).to_owned();
    let base = public_base(&req);
    if path == RESOURCE_METADATA_PATH || path == format!("{RESOURCE_METADATA_PATH}{MCP_PATH}") {
        if req.method() != Method::GET {
            return http_error(&ApiError::MethodNotAllowed, &base, "GET");
        }
        let metadata = json!({
            "resource": format!("{base}{MCP_PATH}"),
            "authorization_servers": [proxy.vault().issuer()],
            "bearer_methods_supported": ["header"],
            "resource_name": "Token Vault",
        });
        return json_response(StatusCode::OK, &metadata);
    }
    if path != MCP_PATH {
        return http_error(&ApiError::NotFound, &base, "POST");
    }
    // Stateless: no event stream to open (GET) and no session to end (DELETE).
    if req.method() != Method::POST {
        return http_error(&ApiError::MethodNotAllowed, &base, "POST");
    }
    let mut auth = req.headers().get_all(header::AUTHORIZATION).iter();
    let (first, second) = (auth.next(), auth.next());
    let principal = match second {
        Some(_) => Err(ApiError::invalid_token("more than one Authorization header was sent")),
        None => proxy.vault().authenticate(first.map(HeaderValue::as_bytes)).await,
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => {
            log_failure(&e);
            return http_error(&e, &base, "POST");
        }
    };
    tracing::Span::current().record("org", principal.org_id.as_str());
    if let Some(v) = req.headers().get("mcp-protocol-version")
        && !PROTOCOL_VERSIONS.iter().any(|p| v.as_bytes() == p.as_bytes())
    {
        let message = format!("Unsupported MCP-Protocol-Version; this server speaks {}.", PROTOCOL_VERSIONS.join(", "));
        return rpc_response(StatusCode::BAD_REQUEST, &rpc_error(Value::Null, INVALID_REQUEST, &message));
    }
    let bytes = match req.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b.as_slice(),
        _ => &[],
    };
    if bytes.len() > MAX_MCP_REQUEST_BYTES {
        let message = format!("The request is larger than {MAX_MCP_REQUEST_BYTES} bytes.");
        return rpc_response(StatusCode::PAYLOAD_TOO_LARGE, &rpc_error(Value::Null, INVALID_REQUEST, &message));
    }
    let message: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(_) => {
            return rpc_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(Value::Null, PARSE_ERROR, "The body is not JSON."),
            );
        }
    };
    let Value::Object(mut msg) = message else {
        let why = "Send one JSON-RPC message (an object); batches are not supported.";
        return rpc_response(StatusCode::BAD_REQUEST, &rpc_error(Value::Null, INVALID_REQUEST, why));
    };
    if msg.get("jsonrpc") != Some(&json!("2.0")) {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        return rpc_response(StatusCode::BAD_REQUEST, &rpc_error(id, INVALID_REQUEST, "jsonrpc must be \"2.0\"."));
    }
    // Notifications and responses sent to the server are accepted and need no answer.
    let Some(id) = msg.remove("id").filter(|_| !msg.contains_key("result") && !msg.contains_key("error")) else {
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::ACCEPTED;
        return resp;
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        let why = "id must be a string or an integer.";
        return rpc_response(StatusCode::BAD_REQUEST, &rpc_error(Value::Null, INVALID_REQUEST, why));
    }
    let Some(Value::String(method)) = msg.remove("method") else {
        return rpc_response(StatusCode::BAD_REQUEST, &rpc_error(id, INVALID_REQUEST, "method must be a string."));
    };
    let method = method.as_str();
    let mut params = msg.remove("params").unwrap_or(Value::Object(Map::new()));
    let answer = match method {
        "initialize" => Ok(initialize(&params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools()})),
        "tools/call" => call_tool(proxy, meta, &principal, &req, &mut params).await,
        other => Err((METHOD_NOT_FOUND, format!("No method {other:?} here; this server offers tools only."))),
    };
    let body = match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => rpc_error(id.clone(), code, &message),
    };
    rpc_response(StatusCode::OK, &body)
}

fn initialize(params: &Value) -> Value {
    let asked = params["protocolVersion"].as_str().unwrap_or_default();
    let version = PROTOCOL_VERSIONS.iter().find(|v| **v == asked).copied().unwrap_or(PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "token-vault", "title": "Token Vault", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "Tools that use the caller's secrets without showing them: list_secrets names them, \
            call_api calls a secret's upstream API with the secret injected (and scrubbed from the answer), \
            audit shows a secret's recent uses. No tool ever returns a secret's value.",
    })
}

fn tools() -> Value {
    json!([
        {
            "name": "list_secrets",
            "title": "List secrets",
            "description": "The secrets this token may use: names, scopes, access mode, and the upstream API each \
                may be called at (host, methods, paths). Never a value.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "annotations": {"readOnlyHint": true, "openWorldHint": false},
        },
        {
            "name": "call_api",
            "title": "Call an API with a secret",
            "description": "Calls the upstream API a secret is bound to, with the secret injected where it says \
                (for example Authorization: Bearer ...), and returns the upstream's status and body with the \
                secret scrubbed from it. Only the secret's upstream, methods and paths can be called, within its \
                limits; every call is audited.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The secret's name (from list_secrets)."},
                    "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], "default": "GET"},
                    "path": {"type": "string", "description": "The path under the upstream's base URL, such as /chat/completions.", "default": "/"},
                    "query": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Query parameters."},
                    "body": {"description": "The request body: a JSON value (sent as application/json) or a string."},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra request headers (never credentials: the secret is the credential)."},
                },
                "required": ["name"],
                "additionalProperties": false,
            },
            "annotations": {"readOnlyHint": false, "destructiveHint": true, "openWorldHint": true},
        },
        {
            "name": "audit",
            "title": "A secret's audit trail",
            "description": "Recent audit events of a secret (or of all the caller may see): who read, used, changed \
                or was refused it, when, from which client and address. Newest first.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The secret's name; all secrets when left out."},
                    "sinceHours": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_RANGE_DAYS * 24, "default": 24},
                    "event": {"type": "string", "description": "Only this event, such as vault.secret.used."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                },
                "additionalProperties": false,
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false},
        },
    ])
}

type RpcResult = Result<Value, (i64, String)>;

fn invalid(message: impl Into<String>) -> (i64, String) {
    (INVALID_PARAMS, message.into())
}

/// A tool's result: its structured content, and the same as text for clients that read only text.
fn tool_result(content: Value, is_error: bool) -> Value {
    json!({
        "content": [{"type": "text", "text": content.to_string()}],
        "structuredContent": content,
        "isError": is_error,
    })
}

/// A refusal by the vault, as a tool result the model can read (not a protocol error).
fn tool_refusal(e: &ApiError) -> Value {
    tool_result(json!({"error": {"code": e.code().as_str(), "message": e.public_message()}}), true)
}

async fn call_tool(proxy: &Proxy, meta: &RequestMeta, p: &Principal, req: &Request, params: &mut Value) -> RpcResult {
    let args = match params.get_mut("arguments").map(Value::take) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid("params.arguments must be an object.")),
    };
    let name = params["name"].as_str().ok_or_else(|| invalid("params.name (the tool) is required."))?;
    // Below the function's timeout, as on every route: a slow DynamoDB ends in a refusal, not a lost
    // answer. (call_api's upstream call is bounded by the proxy's own deadline.)
    let deadline = proxy.vault().request_timeout();
    let timed_out = || ApiError::unavailable("the request deadline passed");
    let outcome = match name {
        "list_secrets" => {
            no_unknown(&args, &[])?;
            tokio::time::timeout(deadline, list_secrets(proxy, meta, p)).await.unwrap_or_else(|_| Err(timed_out()))
        }
        "call_api" => {
            no_unknown(&args, &["name", "method", "path", "query", "body", "headers"])?;
            return call_api(proxy, req, &args).await;
        }
        "audit" => {
            no_unknown(&args, &["name", "sinceHours", "event", "limit"])?;
            tokio::time::timeout(deadline, audit(proxy, p, &args)).await.unwrap_or_else(|_| Ok(Err(timed_out())))?
        }
        other => return Err(invalid(format!("No tool {other:?}; see tools/list."))),
    };
    Ok(match outcome {
        Ok(content) => tool_result(content, false),
        Err(e) => {
            log_failure(&e);
            tool_refusal(&e)
        }
    })
}

fn no_unknown(args: &Map<String, Value>, known: &[&str]) -> Result<(), (i64, String)> {
    match args.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("Unknown argument {k:?}; the tool takes {}.", known.join(", ")))),
        None => Ok(()),
    }
}

async fn list_secrets(proxy: &Proxy, meta: &RequestMeta, p: &Principal) -> Result<Value, ApiError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = proxy.vault().list_secrets(meta, p, ListTarget::Own, 100, cursor).await?;
        for s in &page.secrets {
            let mut entry = json!({
                "name": s.name,
                "access": s.access.as_str(),
                "scope": s.scope,
                "version": s.version,
                "updatedAt": s.updated_at,
            });
            if let Some(u) = &s.upstream {
                let wire = u.to_wire();
                entry["upstream"] = json!({
                    "host": u.host(),
                    "baseUrl": wire.base_url,
                    "methods": wire.methods,
                    "paths": wire.paths,
                });
            }
            out.push(entry);
        }
        cursor = page.next;
        if cursor.is_none() || out.len() >= MAX_LISTED {
            break;
        }
    }
    let truncated = cursor.is_some();
    Ok(json!({"secrets": out, "truncated": truncated}))
}

async fn audit(
    proxy: &Proxy,
    p: &Principal,
    args: &Map<String, Value>,
) -> Result<Result<Value, ApiError>, (i64, String)> {
    let secret = match args.get("name") {
        None => None,
        Some(Value::String(s)) => {
            validate_name(s).map_err(|e| invalid(e.public_message()))?;
            Some(s.clone())
        }
        Some(_) => return Err(invalid("name must be a string.")),
    };
    let int = |key: &str, default: i64, max: i64| -> Result<i64, (i64, String)> {
        match args.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| invalid(format!("{key} must be an integer from 1 to {max}."))),
        }
    };
    let hours = int("sinceHours", 24, MAX_AUDIT_RANGE_DAYS * 24)?;
    let limit = int("limit", 20, 100)?;
    let event = match args.get("event") {
        None => None,
        Some(Value::String(e)) if EventKind::ALL.iter().any(|k| k.as_str() == e) => Some(e.clone()),
        Some(_) => {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(invalid(format!("event must be one of {}.", known.join(", "))));
        }
    };
    let to = OffsetDateTime::now_utc();
    let query = AuditQuery {
        from: to - time::Duration::hours(hours),
        to,
        filter: AuditFilter { secret, event, client_id: None, user_id: None, actor: None },
        limit: usize::try_from(limit).unwrap_or(20),
        cursor: None,
    };
    Ok(proxy.vault().query_audit(p, query).await.map(|page| {
        let events: Vec<EventView<'_>> = page.events.iter().map(EventView::of).collect();
        json!({"events": events, "more": page.next.is_some()})
    }))
}

/// `call_api`: the proxy's own request, built from the arguments, sent through the proxy's handler (so
/// every rule, limit and audit event of the proxy applies), its answer read up to a limit.
async fn call_api(proxy: &Proxy, outer: &Request, args: &Map<String, Value>) -> RpcResult {
    let name = args.get("name").and_then(Value::as_str).ok_or_else(|| invalid("name (the secret) is required."))?;
    validate_name(name).map_err(|e| invalid(e.public_message()))?;
    let method = match args.get("method") {
        None => "GET".to_owned(),
        Some(Value::String(m)) => m.to_ascii_uppercase(),
        Some(_) => return Err(invalid("method must be a string.")),
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| invalid("method is not an HTTP method."))?;
    let path = match args.get("path") {
        None => "",
        Some(Value::String(p)) if p.is_empty() || p == "/" => "",
        Some(Value::String(p)) if p.starts_with('/') && !p.contains(['?', '#']) => p.as_str(),
        Some(_) => return Err(invalid("path must start with / and hold no query (use query) or fragment.")),
    };
    let mut query = String::new();
    match args.get("query") {
        None => {}
        Some(Value::Object(q)) => {
            for (k, v) in q {
                let v = v.as_str().ok_or_else(|| invalid("query values must be strings."))?;
                query.push(if query.is_empty() { '?' } else { '&' });
                query.push_str(&percent_encode(k.as_bytes()));
                query.push('=');
                query.push_str(&percent_encode(v.as_bytes()));
            }
        }
        Some(_) => return Err(invalid("query must be an object of strings.")),
    }
    let uri = format!("https://mcp.internal{PROXY_PATH}{name}{path}{query}");
    let mut builder = lambda_http::http::Request::builder().method(method).uri(&uri);
    // The caller's own token: the proxy authenticates and authorises the call again, as its own.
    if let Some(auth) = outer.headers().get(header::AUTHORIZATION) {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    if let Some(ua) = outer.headers().get(header::USER_AGENT) {
        builder = builder.header(header::USER_AGENT, ua);
    }
    if let Some(headers) = args.get("headers") {
        let headers = headers.as_object().ok_or_else(|| invalid("headers must be an object of strings."))?;
        for (k, v) in headers {
            let v = v.as_str().ok_or_else(|| invalid("header values must be strings."))?;
            let name = header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| invalid(format!("{k:?} is not a header name.")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| invalid(format!("The value of {k} is not a valid header value.")))?;
            builder = builder.header(name, value);
        }
    }
    let body = match args.get("body") {
        None | Some(Value::Null) => Body::Empty,
        Some(Value::String(s)) => Body::Text(s.clone()),
        Some(v) => {
            if !args
                .get("headers")
                .and_then(Value::as_object)
                .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-type")))
            {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
            }
            Body::Text(v.to_string())
        }
    };
    let inner = builder.body(body).map_err(|_| invalid("The request could not be built from these arguments."))?;
    let inner = match outer.request_context_ref() {
        Some(ctx @ RequestContext::ApiGatewayV2(_)) => inner.with_request_context(ctx.clone()),
        _ => inner,
    };
    let inner = match outer.lambda_context_ref() {
        Some(ctx) => inner.with_lambda_context(ctx.clone()),
        None => inner,
    };
    let resp = handle_proxy(proxy, inner).await;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let retry_after = resp.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame;
        let Ok(data) = frame.into_data() else { continue };
        let room = MAX_TOOL_ANSWER_BYTES - bytes.len();
        if data.len() > room {
            bytes.extend_from_slice(&data[..room]);
            truncated = true;
            break;
        }
        bytes.extend_from_slice(&data);
    }
    // Dropping the body ends the upstream's answer here, when it was cut.
    drop(body);
    let mut answer = json!({"status": status});
    if let Some(ct) = content_type {
        answer["contentType"] = ct.into();
    }
    if let Some(ra) = retry_after {
        answer["retryAfter"] = ra.into();
    }
    // The body as the proxy relayed it (the value scrubbed in every form it knows), as text: never
    // parsed here, since decoding an escape the scrubber does not know would turn it back into the value.
    // A cut may split a character: the text then ends before it.
    let valid = match std::str::from_utf8(&bytes) {
        Ok(_) => bytes.len(),
        Err(e) if truncated && e.error_len().is_none() => e.valid_up_to(),
        Err(_) => usize::MAX,
    };
    if valid <= bytes.len() {
        answer["body"] = String::from_utf8_lossy(&bytes[..valid]).into_owned().into();
    } else {
        use base64::Engine;
        answer["bodyBase64"] = base64::engine::general_purpose::STANDARD.encode(&bytes).into();
    }
    if truncated {
        answer["truncated"] = true.into();
    }
    Ok(tool_result(answer, status >= 400))
}

/// The URL clients reach this stack at: API Gateway's domain over HTTPS (a mapped custom domain is what
/// API Gateway reports); on the local stack, which reports `localhost`, the `Host` it was called at,
/// over plain HTTP on loopback.
fn public_base(req: &Request) -> String {
    let valid = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let loopback = |host: &str| {
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
    };
    if let Some(RequestContext::ApiGatewayV2(ctx)) = req.request_context_ref()
        && let Some(domain) = ctx.domain_name.as_deref().filter(|d| valid(d) && !loopback(d))
    {
        return format!("https://{domain}");
    }
    let host =
        req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| valid(h)).unwrap_or("localhost");
    format!("{}://{host}", if loopback(host) { "http" } else { "https" })
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn rpc_response(status: StatusCode, body: &Value) -> Response<Body> {
    json_response(status, body)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    json_text(status, body.to_string())
}

/// An HTTP-level refusal on a route answering `allow`: the API's error envelope; a 401 names the
/// protected-resource metadata.
fn http_error(e: &ApiError, base: &str, allow: &'static str) -> Response<Body> {
    let mut resp = error_allowing(e, allow);
    if resp.status() == StatusCode::UNAUTHORIZED {
        let challenge = format!(
            "Bearer realm=\"token-vault\", error=\"invalid_token\", resource_metadata=\"{base}{RESOURCE_METADATA_PATH}{MCP_PATH}\""
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_base_is_https_except_on_loopback() {
        let req = |host: &str| -> Request {
            lambda_http::http::Request::builder().uri("/vault/mcp").header("host", host).body(Body::Empty).unwrap()
        };
        assert_eq!(public_base(&req("127.0.0.1:9000")), "http://127.0.0.1:9000");
        assert_eq!(public_base(&req("vault.example.com")), "https://vault.example.com");
        assert_eq!(public_base(&req("evil\"host")), "http://localhost");
    }

    #[test]
    fn initialize_agrees_on_a_version_both_speak() {
        assert_eq!(initialize(&json!({"protocolVersion": "2025-06-18"}))["protocolVersion"], "2025-06-18");
        assert_eq!(initialize(&json!({"protocolVersion": "2025-03-26"}))["protocolVersion"], PROTOCOL_VERSIONS[0]);
        assert_eq!(initialize(&json!({"protocolVersion": "1999-01-01"}))["protocolVersion"], PROTOCOL_VERSIONS[0]);
    }

    #[test]
    fn no_tool_takes_or_returns_a_value() {
        let text = tools().to_string();
        assert!(!text.contains("\"value\""), "{text}");
    }
}
