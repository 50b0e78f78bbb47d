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
use crate::audit::{EventKind, EventView};
use crate::error::ApiError;
use crate::service::{
    AuditCursor, AuditQuery, BatchRead, Cursor, ListPage, ListTarget, MAX_BATCH_NAMES, Precondition, PutAction,
    PutSecret, SecretWithValue, Vault,
};
use crate::store::{AuditFilter, SecretItem};

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
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Create | Self::BatchGet | Self::Rollback => Method::POST,
            Self::Get | Self::List | Self::Audit => Method::GET,
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
                next_token: page.next.as_ref().map(encode_audit_cursor),
            };
            Ok(json_response(StatusCode::OK, &body))
        }
    }
}

/// A request's inputs, validated: everything checked that does not need the token or the store.
#[derive(Debug)]
enum Parsed {
    Create { input: PutSecret, pre: Precondition },
    Get { name: String, client_id: Option<String>, version: Option<u64> },
    List { target: ListTarget, limit: usize, cursor: Option<Cursor> },
    Delete { name: String, client_id: Option<String>, pre: Precondition },
    BatchGet { names: Vec<String>, client_id: Option<String> },
    Rollback { name: String, version: u64, client_id: Option<String>, pre: Precondition },
    Audit(Box<AuditQuery>),
}

/// Reads and checks the path, query string, precondition headers and body of a request for `op`.
fn parse(op: Operation, req: &Request) -> Result<Parsed, ApiError> {
    Ok(match op {
        Operation::Create => {
            allow_query(req, &[])?;
            let pre = precondition(req, true)?;
            Parsed::Create { input: parse_put(req)?, pre }
        }
        Operation::Get => {
            let name = path_name(req, "")?;
            let query = allow_query(req, &["clientId", "version"])?;
            Parsed::Get { name, client_id: query.client_id()?, version: query.version()? }
        }
        Operation::List => {
            let query = allow_query(req, &["clientId", "limit", "nextToken", "all"])?;
            let target = match (query.client_id()?, query.get("all")) {
                (None, None) => ListTarget::Own,
                (Some(client), None) => ListTarget::Client(client),
                (None, Some("true")) => ListTarget::Organization,
                (None, Some(_)) => return Err(ApiError::bad_request("invalid_query", "all must be true when given.")),
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request("invalid_query", "Give either clientId or all=true, not both."));
                }
            };
            let cursor = query.get("nextToken").map(decode_cursor).transpose()?;
            Parsed::List { target, limit: query.limit()?, cursor }
        }
        Operation::Delete => {
            let name = path_name(req, "")?;
            let query = allow_query(req, &["clientId"])?;
            let pre = precondition(req, false)?;
            Parsed::Delete { name, client_id: query.client_id()?, pre }
        }
        Operation::BatchGet => {
            allow_query(req, &[])?;
            let body: BatchGetBody = json_body(req, "names, clientId")?;
            if let Some(c) = &body.client_id {
                validate_client_id(c)?;
            }
            Parsed::BatchGet { names: validate_batch_names(body.names)?, client_id: body.client_id }
        }
        Operation::Rollback => {
            let name = path_name(req, ROLLBACK_SUFFIX)?;
            allow_query(req, &[])?;
            let pre = precondition(req, false)?;
            let body: RollbackBody = json_body(req, "version, clientId")?;
            if let Some(c) = &body.client_id {
                validate_client_id(c)?;
            }
            if body.version == 0 {
                return Err(ApiError::bad_request("invalid_version", "version must be a whole number from 1."));
            }
            Parsed::Rollback { name, version: body.version, client_id: body.client_id, pre }
        }
        Operation::Audit => {
            let secret = if is_secret_audit_path(req) { Some(path_name(req, AUDIT_SUFFIX)?) } else { None };
            let mut allowed = vec!["from", "to", "event", "clientId", "userId", "limit", "nextToken"];
            if secret.is_none() {
                allowed.push("secret");
            }
            let query = allow_query(req, &allowed)?;
            Parsed::Audit(Box::new(audit_query(&query, secret, OffsetDateTime::now_utc())?))
        }
    })
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

/// The rule for an id a caller names (a client or user): 1 to 256 characters, no control characters.
fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= crate::auth::MAX_ID_LEN && !id.chars().any(char::is_control)
}

/// Checks an OAuth client id named by an admin.
fn validate_client_id(client_id: &str) -> Result<(), ApiError> {
    if !is_valid_id(client_id) {
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

/// Route suffixes after `/vault/secrets/{name}`.
const ROLLBACK_SUFFIX: &str = "/rollback";
const AUDIT_SUFFIX: &str = "/audit";

/// The raw request path (API Gateway's `rawPath`, else the URI's).
fn raw_path(req: &Request) -> &str {
    let path = req.raw_http_path();
    if path.is_empty() { req.uri().path() } else { path }
}

/// The name in `/vault/secrets/{name}<suffix>`: from the route's path parameters, else from the raw
/// path (function-URL style invocations leave path parameters empty).
fn path_name(req: &Request, suffix: &str) -> Result<String, ApiError> {
    let name = match req.path_parameters_ref().and_then(|p| p.first("name")) {
        Some(name) => name.to_owned(),
        None => {
            let path = raw_path(req);
            let rest = path.rfind(SECRETS_PATH).map_or("", |i| &path[i + SECRETS_PATH.len()..]);
            rest.strip_suffix(suffix).unwrap_or(rest).to_owned()
        }
    };
    validate_name(&name)?;
    Ok(name)
}

/// True for `GET /vault/secrets/{name}/audit` (the query-audit function serves `/vault/audit` too).
fn is_secret_audit_path(req: &Request) -> bool {
    req.path_parameters_ref().and_then(|p| p.first("name")).is_some() || raw_path(req).contains(SECRETS_PATH)
}

/// Parses an entity tag as this API issues them, `"<version>"`, or the bare version (clients often
/// drop the quotes).
fn parse_etag(tag: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_precondition",
            "If-Match takes * or one entity tag as this API returns it in ETag, such as \"3\".",
        )
    };
    let tag = tag.trim();
    let inner = match tag.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or_else(bad)?,
        None => tag,
    };
    if inner.is_empty() || inner.len() > 19 || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    inner.parse().map_err(|_| bad())
}

/// The write precondition of `If-Match` (any write) or `If-None-Match: *` (creates only, when
/// `allow_absent`).
fn precondition(req: &Request, allow_absent: bool) -> Result<Precondition, ApiError> {
    let values = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
        let all: Vec<&str> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::bad_request("invalid_precondition", "A precondition header is not ASCII."))
            })
            .collect::<Result<_, _>>()?;
        Ok((!all.is_empty()).then(|| all.join(",")))
    };
    match (values(header::IF_MATCH)?, values(header::IF_NONE_MATCH)?) {
        (None, None) => Ok(Precondition::None),
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("invalid_precondition", "Send If-Match or If-None-Match, not both."))
        }
        (Some(m), None) if m.trim() == "*" => Ok(Precondition::Any),
        (Some(m), None) => parse_etag(&m).map(Precondition::Version),
        (None, Some(m)) if allow_absent && m.trim() == "*" => Ok(Precondition::Absent),
        (None, Some(_)) => Err(ApiError::bad_request(
            "invalid_precondition",
            if allow_absent {
                "If-None-Match takes only * here (create only if the secret does not exist)."
            } else {
                "If-None-Match is not supported here; use If-Match."
            },
        )),
    }
}

/// Adds the `ETag` of a secret version.
fn with_etag(mut resp: Response<Body>, version: u64) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

struct Query(lambda_http::aws_lambda_events::query_map::QueryMap);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.first(key)
    }

    fn client_id(&self) -> Result<Option<String>, ApiError> {
        self.get("clientId").map(|c| validate_client_id(c).map(|()| c.to_owned())).transpose()
    }

    fn version(&self) -> Result<Option<u64>, ApiError> {
        self.get("version")
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1 && v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| ApiError::bad_request("invalid_version", "version must be a whole number from 1."))
            })
            .transpose()
    }

    /// An optional id filter (`clientId`, `userId`): 1 to 256 characters, no control characters.
    fn id(&self, key: &'static str) -> Result<Option<String>, ApiError> {
        self.get(key)
            .map(|v| {
                if !is_valid_id(v) {
                    Err(ApiError::bad_request(
                        "invalid_query",
                        format!("{key} must be 1 to 256 characters without control characters."),
                    ))
                } else {
                    Ok(v.to_owned())
                }
            })
            .transpose()
    }

    fn time(&self, key: &'static str) -> Result<Option<OffsetDateTime>, ApiError> {
        self.get(key)
            .map(|v| {
                OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_time_range",
                        format!("{key} must be an RFC 3339 date-time with a zone, such as 2030-12-31T23:59:59Z."),
                    )
                })
            })
            .transpose()
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

const PUT_FIELDS: &str = "name, value, scope, expiresAt, clientId";

/// For an optional field that may be left out but not sent as `null`.
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BatchGetBody {
    names: Vec<String>,
    #[serde(default, deserialize_with = "not_null")]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RollbackBody {
    version: u64,
    #[serde(default, deserialize_with = "not_null")]
    client_id: Option<String>,
}

/// Checks the names of a batch read: 1 to 20 valid names; repeats are read once.
fn validate_batch_names(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    if names.is_empty() || names.len() > MAX_BATCH_NAMES {
        return Err(ApiError::bad_request("invalid_names", "names must list 1 to 20 secret names."));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        validate_name(&name)?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Longest time range of one audit query.
pub const MAX_AUDIT_RANGE_DAYS: i64 = 92;
/// Range of an audit query that gives no `from`.
const DEFAULT_AUDIT_RANGE_DAYS: i64 = 30;

/// Reads the time range, filters and paging of an audit query.
fn audit_query(query: &Query, secret: Option<String>, now: OffsetDateTime) -> Result<AuditQuery, ApiError> {
    let to = query.time("to")?.unwrap_or(now);
    let from = query.time("from")?.unwrap_or(to - time::Duration::days(DEFAULT_AUDIT_RANGE_DAYS));
    if from > to {
        return Err(ApiError::bad_request("invalid_time_range", "from must not be after to."));
    }
    if to - from > time::Duration::days(MAX_AUDIT_RANGE_DAYS) {
        return Err(ApiError::bad_request("invalid_time_range", "One query covers at most 92 days."));
    }
    let (from, to) = (from.to_offset(time::UtcOffset::UTC), to.to_offset(time::UtcOffset::UTC));
    let secret = match secret.or_else(|| query.get("secret").map(str::to_owned)) {
        Some(name) => {
            validate_name(&name)?;
            Some(name)
        }
        None => None,
    };
    let event = query.get("event").map(str::to_owned);
    if let Some(e) = &event
        && !EventKind::ALL.iter().any(|k| k.as_str() == e)
    {
        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::bad_request("invalid_query", format!("event must be one of {known:?}.")));
    }
    let filter =
        AuditFilter { secret, event, client_id: query.id("clientId")?, user_id: query.id("userId")?, actor: None };
    let cursor = query.get("nextToken").map(decode_audit_cursor).transpose()?;
    if let Some(c) = &cursor
        && (c.day > to.date() || c.day < from.date())
    {
        return Err(ApiError::bad_request("invalid_next_token", "nextToken does not belong to this time range."));
    }
    Ok(AuditQuery { from, to, filter, limit: query.limit()?, cursor })
}

fn encode_audit_cursor(cursor: &AuditCursor) -> String {
    let body = json!({"d": crate::audit::day_key(cursor.day), "b": cursor.before});
    URL_SAFE_NO_PAD.encode(body.to_string())
}

fn decode_audit_cursor(token: &str) -> Result<AuditCursor, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        d: String,
        b: Option<String>,
    }
    let bad = || ApiError::bad_request("invalid_next_token", "nextToken is not one this API returned.");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let raw: Raw = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let day =
        time::Date::parse(&raw.d, time::macros::format_description!("[year]-[month]-[day]")).map_err(|_| bad())?;
    if let Some(b) = &raw.b
        && (b.len() != 32 || !b.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
    {
        return Err(bad());
    }
    Ok(AuditCursor { day, before: raw.b })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PutBody {
    name: String,
    value: SecretString,
    #[serde(default, deserialize_with = "not_null")]
    scope: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
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
fn describe_json_error(e: &serde_json::Error, fields: &str) -> String {
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
                    return format!("The request body has a {prefix} `{field}`; accepted fields: {fields}.");
                }
            }
            format!(
                "A field of the request body has the wrong type or value (line {}, column {}); see the API reference for {fields}.",
                e.line(),
                e.column()
            )
        }
    }
}

/// Reads a JSON request body: at most 1 MiB, declared as JSON, valid UTF-8, every field known.
/// `fields` names the accepted fields for the error message.
fn json_body<T: serde::de::DeserializeOwned>(req: &Request, fields: &str) -> Result<T, ApiError> {
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
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request("invalid_json", describe_json_error(&e, fields)))
}

fn parse_put(req: &Request) -> Result<PutSecret, ApiError> {
    let body: PutBody = json_body(req, PUT_FIELDS)?;
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

/// A secret's metadata as the API shows it, borrowed from the item (a page of 100 is serialized without
/// building a JSON map per secret).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    name: &'a str,
    scope: &'a [String],
    expires_at: Value,
    created_at: &'a str,
    updated_at: &'a str,
    version: u64,
    ownership: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
}

fn metadata(item: &SecretItem) -> Metadata<'_> {
    Metadata {
        name: &item.name,
        scope: &item.scope,
        expires_at: item.expires_at.map_or(Value::Null, format_epoch),
        created_at: &item.created_at,
        updated_at: &item.updated_at,
        version: item.version,
        ownership: item.owner.kind(),
        client_id: match &item.owner {
            crate::policy::Owner::App { client_id } => Some(client_id),
            crate::policy::Owner::User { .. } => None,
        },
    }
}

/// A secret's metadata plus its value, serialized straight from the secret (no intermediate copy of
/// the plaintext).
#[derive(serde::Serialize)]
struct WithValue<'a> {
    #[serde(flatten)]
    metadata: Metadata<'a>,
    value: &'a str,
}

impl<'a> WithValue<'a> {
    fn of(secret: &'a SecretWithValue) -> Self {
        Self { metadata: metadata(&secret.item), value: secret.value.expose_secret() }
    }
}

/// The body of a read: the metadata plus the value, serialized straight from the secret so that the
/// response body is the only copy of the plaintext made here.
fn secret_response(secret: &SecretWithValue) -> Response<Body> {
    json_response(StatusCode::OK, &WithValue::of(secret))
}

/// The body of a batch read: the secrets read, with values, and an error per name not returned.
fn batch_response(read: &BatchRead) -> Response<Body> {
    let secrets: Vec<WithValue<'_>> = read.secrets.iter().map(WithValue::of).collect();
    let errors: Vec<Value> = read
        .errors
        .iter()
        .map(|(name, e)| json!({"name": name, "code": e.code(), "message": e.public_message()}))
        .collect();
    // Serialized straight from the secrets, so the response body is the only copy of the plaintexts.
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        secrets: Vec<WithValue<'a>>,
        errors: Vec<Value>,
    }
    json_response(StatusCode::OK, &Batch { secrets, errors })
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a> {
    secrets: Vec<Metadata<'a>>,
    next_token: Option<String>,
}

fn list_body(page: &ListPage) -> ListBody<'_> {
    ListBody { secrets: page.secrets.iter().map(metadata).collect(), next_token: page.next.as_ref().map(encode_cursor) }
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

/// A JSON body serialized straight from `body`; should that ever fail, a 500 envelope instead.
fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_string(body) {
        Ok(text) => response(status, text),
        Err(e) => {
            let e = ApiError::internal(e);
            tracing::error!(error = %crate::error::chain(&e), "a response body could not be serialized");
            error_envelope(&e)
        }
    }
}

/// The response for an error: the envelope, plus the headers RFC 6750 and RFC 9110 ask for.
pub fn error_response(e: &ApiError, op: Operation) -> Response<Body> {
    let mut resp = error_envelope(e);
    if let ApiError::MethodNotAllowed = e {
        let allow = match op.method() {
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            _ => "GET",
        };
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

/// An error's status and envelope, with the headers that depend on the error alone.
fn error_envelope(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"success": false, "error": {"code": e.code(), "message": e.public_message()}});
    let mut resp = response(status, body.to_string());
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
        let msg = describe_json_error(&err, PUT_FIELDS);
        assert!(!msg.contains("sk-live"), "{msg}");
        let err = serde_json::from_str::<PutBody>(r#"{"name": "n", "value": "v", "name": "m"}"#).err().unwrap();
        assert!(describe_json_error(&err, PUT_FIELDS).contains("duplicate field `name`"));
        let err = serde_json::from_str::<PutBody>(r#"{"name": "n", "value": "v", "extra": 1}"#).err().unwrap();
        assert!(describe_json_error(&err, PUT_FIELDS).contains("unknown field `extra`"));
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
