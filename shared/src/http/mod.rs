//! The HTTP face of the vault. Every request goes the same way: check the method, authenticate,
//! validate, call the service, respond. Rooms: [`request`] (each operation's parse step), [`body`] (JSON
//! bodies), [`cursor`] (the two `nextToken` codecs) and [`response`] (views, envelopes, headers).
//! Every response is JSON with `Cache-Control: no-store`; errors use one envelope,
//! `{"success":false,"error":{"code","message"}}`.

mod body;
mod cursor;
mod request;
mod response;

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;
use tracing::Instrument;

use crate::config::KeyUse;
use crate::error::ApiError;
use crate::model::RequestMeta;
use crate::service::{PutAction, Vault};
use request::{Parsed, parse};
use response::{batch_response, json_response, list_body, secret_response, versions_body, with_etag};

pub(crate) use request::raw_path;
pub(crate) use response::{EventView, error_allowing, error_json, error_response, response as json_text};

/// The operations, one per Lambda function.
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
    /// `POST /vault/secrets/batch-get`
    BatchGet,
    /// `POST /vault/secrets/{name}/rollback`
    Rollback,
    /// `GET /vault/audit` and `GET /vault/secrets/{name}/audit`
    Audit,
    /// `GET /vault/secrets/{name}/versions`
    Versions,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create-secret",
            Self::Get => "get-secret",
            Self::List => "list-secrets",
            Self::Delete => "delete-secret",
            Self::BatchGet => "batch-get-secrets",
            Self::Rollback => "rollback-secret",
            Self::Audit => "query-audit",
            Self::Versions => "list-versions",
        }
    }

    /// Whether the function serving this operation seals or opens values. Listing, deleting and the audit
    /// reader never do, so they are never given key material, nor the right to decrypt it.
    pub fn key_use(self) -> KeyUse {
        match self {
            Self::Create | Self::Get | Self::BatchGet | Self::Rollback => KeyUse::Required,
            Self::List | Self::Delete | Self::Audit | Self::Versions => KeyUse::None,
        }
    }

    pub(crate) fn method(self) -> Method {
        match self {
            Self::Create | Self::BatchGet | Self::Rollback => Method::POST,
            Self::Get | Self::List | Self::Audit | Self::Versions => Method::GET,
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
                log_failure(&e);
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

    match parse(op, &req)? {
        Parsed::Create { input, pre } => {
            let (action, version) = vault.put_secret(meta, &principal, input, &pre).await?;
            let (status, action) = match action {
                PutAction::Created => (StatusCode::CREATED, "created"),
                PutAction::Updated => (StatusCode::OK, "updated"),
            };
            Ok(with_etag(
                json_response(status, &json!({"success": true, "action": action, "version": version})),
                version,
            ))
        }
        Parsed::Get { name, client_id, version } => {
            let secret = vault.get_secret(meta, &principal, &name, client_id.as_deref(), version).await?;
            Ok(with_etag(secret_response(&secret), secret.item.version))
        }
        Parsed::List { target, limit, cursor } => {
            let page = vault.list_secrets(meta, &principal, target, limit, cursor).await?;
            Ok(json_response(StatusCode::OK, &list_body(&page)))
        }
        Parsed::Delete { name, client_id, pre } => {
            vault.delete_secret(meta, &principal, &name, client_id.as_deref(), &pre).await?;
            Ok(json_response(StatusCode::OK, &json!({"success": true, "action": "deleted"})))
        }
        Parsed::BatchGet { names, client_id } => {
            let read = vault.batch_get(meta, &principal, &names, client_id.as_deref()).await?;
            Ok(batch_response(&read))
        }
        Parsed::Rollback { name, version, client_id, pre } => {
            let version = vault.rollback_secret(meta, &principal, &name, version, client_id.as_deref(), &pre).await?;
            let body = json!({"success": true, "action": "rolled_back", "version": version});
            Ok(with_etag(json_response(StatusCode::OK, &body), version))
        }
        Parsed::Versions { name, client_id } => {
            let versions = vault.list_versions(meta, &principal, &name, client_id.as_deref()).await?;
            Ok(json_response(StatusCode::OK, &versions_body(&name, &versions)))
        }
        Parsed::Audit(q) => {
            let page = vault.query_audit(&principal, *q).await?;
            #[derive(serde::Serialize)]
            #[serde(rename_all = "camelCase")]
            struct AuditBody<'a> {
                events: Vec<EventView<'a>>,
                next_token: Option<String>,
            }
            let body = AuditBody {
                events: page.events.iter().map(EventView::of).collect(),
                next_token: page.next.as_ref().map(cursor::encode_audit_cursor),
            };
            Ok(json_response(StatusCode::OK, &body))
        }
    }
}

/// Runs every check of a request that does not need its token or the store: the method, then exactly
/// what the handler checks before it calls the service (`parse`). For the fuzz targets (`fuzz/`), which
/// feed it arbitrary requests.
pub fn validate_request(op: Operation, req: &Request) -> Result<(), ApiError> {
    if req.method() != op.method() {
        return Err(ApiError::MethodNotAllowed);
    }
    parse(op, req).map(|_| ())
}

/// Logs how a request ended in an error: a server error with its chain of causes, a refusal by its
/// status and code alone.
pub(crate) fn log_failure(e: &ApiError) {
    if e.is_server_error() {
        tracing::error!(status = e.status(), code = e.code().as_str(), error = %crate::error::chain(e), "request failed");
    } else {
        tracing::info!(status = e.status(), code = e.code().as_str(), "request refused");
    }
}

/// Who sent a request, as API Gateway (or a function URL) reports it.
pub(crate) fn request_meta(req: &Request) -> RequestMeta {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let code = |op, req: Request| validate_request(op, &req).err().map(|e| e.code().as_str());
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
