//! Each operation's parse step: its path, query string, precondition headers and body, checked against
//! the rules before the service is called.

use lambda_http::http::header;
use lambda_http::{Request, RequestExt};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Operation;
use super::body::{BatchGetBody, PUT_FIELDS, PutBody, RollbackBody, json_body};
use super::cursor::{decode_audit_cursor, decode_cursor};
use crate::error::{ApiError, Code};
use crate::model::{Access, EventKind, Injection};
use crate::rules::{self, DEFAULT_AUDIT_RANGE_DAYS, id_rule, is_valid_id, validate_client_id, validate_name};
use crate::service::{AuditQuery, Cursor, ListTarget, Precondition, PutSecret};
use crate::store::AuditFilter;
use secrecy::ExposeSecret;

/// Route prefix under which a secret's name follows.
pub(super) const SECRETS_PATH: &str = "/vault/secrets/";

/// A request's inputs, validated: everything checked that does not need the token or the store.
#[derive(Debug)]
pub(super) enum Parsed {
    Create { input: PutSecret, pre: Precondition },
    Get { name: String, client_id: Option<String>, version: Option<u64> },
    List { target: ListTarget, limit: usize, cursor: Option<Cursor> },
    Delete { name: String, client_id: Option<String>, pre: Precondition },
    BatchGet { names: Vec<String>, client_id: Option<String> },
    Rollback { name: String, version: u64, client_id: Option<String>, pre: Precondition },
    Audit(Box<AuditQuery>),
    Versions { name: String, client_id: Option<String> },
}

/// Reads and checks the path, query string, precondition headers and body of a request for `op`.
pub(super) fn parse(op: Operation, req: &Request) -> Result<Parsed, ApiError> {
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
                (None, Some(_)) => {
                    return Err(ApiError::bad_request(Code::InvalidQuery, "all must be true when given."));
                }
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(
                        Code::InvalidQuery,
                        "Give either clientId or all=true, not both.",
                    ));
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
            Parsed::BatchGet { names: rules::validate_batch_names(body.names)?, client_id: body.client_id }
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
                return Err(rules::invalid_version());
            }
            Parsed::Rollback { name, version: body.version, client_id: body.client_id, pre }
        }
        Operation::Versions => {
            let name = path_name(req, VERSIONS_SUFFIX)?;
            let query = allow_query(req, &["clientId"])?;
            Parsed::Versions { name, client_id: query.client_id()? }
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

/// Route suffixes after `/vault/secrets/{name}`.
pub(super) const ROLLBACK_SUFFIX: &str = "/rollback";

pub(super) const AUDIT_SUFFIX: &str = "/audit";

pub(super) const VERSIONS_SUFFIX: &str = "/versions";

/// The raw request path (API Gateway's `rawPath`, else the URI's).
pub(crate) fn raw_path(req: &Request) -> &str {
    let path = req.raw_http_path();
    if path.is_empty() { req.uri().path() } else { path }
}

/// The name in `/vault/secrets/{name}<suffix>`: from the route's path parameters, else from the raw
/// path (function-URL style invocations leave path parameters empty).
pub(super) fn path_name(req: &Request, suffix: &str) -> Result<String, ApiError> {
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
pub(super) fn is_secret_audit_path(req: &Request) -> bool {
    req.path_parameters_ref().and_then(|p| p.first("name")).is_some() || raw_path(req).contains(SECRETS_PATH)
}

/// Parses an entity tag as this API issues them, `"<version>"`, or the bare version (clients often
/// drop the quotes).
pub(super) fn parse_etag(tag: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_request(
            Code::InvalidPrecondition,
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
pub(super) fn precondition(req: &Request, allow_absent: bool) -> Result<Precondition, ApiError> {
    let values = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
        let all: Vec<&str> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| {
                v.to_str().map_err(|_| {
                    ApiError::bad_request(Code::InvalidPrecondition, "A precondition header is not ASCII.")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((!all.is_empty()).then(|| all.join(",")))
    };
    match (values(header::IF_MATCH)?, values(header::IF_NONE_MATCH)?) {
        (None, None) => Ok(Precondition::None),
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request(Code::InvalidPrecondition, "Send If-Match or If-None-Match, not both."))
        }
        (Some(m), None) if m.trim() == "*" => Ok(Precondition::Any),
        (Some(m), None) => parse_etag(&m).map(Precondition::Version),
        (None, Some(m)) if allow_absent && m.trim() == "*" => Ok(Precondition::Absent),
        (None, Some(_)) => Err(ApiError::bad_request(
            Code::InvalidPrecondition,
            if allow_absent {
                "If-None-Match takes only * here (create only if the secret does not exist)."
            } else {
                "If-None-Match is not supported here; use If-Match."
            },
        )),
    }
}

pub(super) struct Query(lambda_http::aws_lambda_events::query_map::QueryMap);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.first(key)
    }

    fn client_id(&self) -> Result<Option<String>, ApiError> {
        self.get("clientId").map(|c| validate_client_id(c).map(|()| c.to_owned())).transpose()
    }

    fn version(&self) -> Result<Option<u64>, ApiError> {
        self.get("version").map(rules::parse_version).transpose()
    }

    /// An optional id filter (`clientId`, `userId`): 1 to 256 characters, no control characters.
    fn id(&self, key: &'static str) -> Result<Option<String>, ApiError> {
        self.get(key)
            .map(|v| {
                if !is_valid_id(v) {
                    Err(ApiError::bad_request(Code::InvalidQuery, id_rule(key)))
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
                        Code::InvalidTimeRange,
                        format!("{key} must be an RFC 3339 date-time with a zone, such as 2030-12-31T23:59:59Z."),
                    )
                })
            })
            .transpose()
    }

    fn limit(&self) -> Result<usize, ApiError> {
        rules::parse_limit(self.get("limit"))
    }
}

/// Refuses query parameters other than `allowed`, and repeated ones.
pub(super) fn allow_query(req: &Request, allowed: &[&str]) -> Result<Query, ApiError> {
    let query = req.query_string_parameters();
    for (key, _) in query.iter() {
        if !allowed.contains(&key) {
            return Err(ApiError::bad_request(
                Code::InvalidQuery,
                format!("Unknown query parameter; accepted here: {allowed:?}."),
            ));
        }
        if query.all(key).is_some_and(|v| v.len() > 1) {
            return Err(ApiError::bad_request(Code::InvalidQuery, "A query parameter was repeated."));
        }
    }
    Ok(Query(query))
}

pub(super) fn parse_put(req: &Request) -> Result<PutSecret, ApiError> {
    let body: PutBody = json_body(req, PUT_FIELDS)?;
    validate_name(&body.name)?;
    rules::validate_value_len(body.value.expose_secret().len())?;
    let scope = rules::validate_scope(body.scope.unwrap_or_default())?;
    let expires_at =
        body.expires_at.as_deref().map(|t| rules::parse_expiry(t, OffsetDateTime::now_utc())).transpose()?;
    if let Some(c) = &body.client_id {
        validate_client_id(c)?;
    }
    let access = match body.access.as_deref() {
        None => Access::Readable,
        Some(text) => Access::parse(text).ok_or_else(|| {
            ApiError::bad_request(Code::InvalidAccess, "access is readable (the default) or use-only.")
        })?,
    };
    let upstream = body.upstream.map(rules::validate_upstream).transpose()?.map(|(up, _)| up);
    let limits = rules::validate_limits(body.limits.unwrap_or_default())?;
    match &upstream {
        None if access == Access::UseOnly => {
            return Err(ApiError::bad_request(
                Code::InvalidAccess,
                "A use-only secret needs an upstream: the one place the proxy may send its value.",
            ));
        }
        None if !limits.is_none() => {
            return Err(ApiError::bad_request(
                Code::InvalidLimits,
                "limits count uses through the proxy, so they need an upstream.",
            ));
        }
        Some(up) if matches!(up.inject, Injection::Header { .. }) => {
            rules::check_header_value(body.value.expose_secret().as_bytes())?;
        }
        _ => {}
    }
    Ok(PutSecret {
        name: body.name,
        value: body.value,
        scope,
        expires_at,
        client_id: body.client_id,
        access,
        upstream,
        limits,
    })
}

/// Reads the time range, filters and paging of an audit query.
pub(super) fn audit_query(query: &Query, secret: Option<String>, now: OffsetDateTime) -> Result<AuditQuery, ApiError> {
    let to = query.time("to")?.unwrap_or(now);
    let from = query.time("from")?.unwrap_or(to - time::Duration::days(DEFAULT_AUDIT_RANGE_DAYS));
    rules::validate_time_range(from, to)?;
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
        return Err(ApiError::bad_request(Code::InvalidQuery, format!("event must be one of {known:?}.")));
    }
    let filter =
        AuditFilter { secret, event, client_id: query.id("clientId")?, user_id: query.id("userId")?, actor: None };
    let cursor = query.get("nextToken").map(decode_audit_cursor).transpose()?;
    if let Some(c) = &cursor
        && (c.day > to.date() || c.day < from.date())
    {
        return Err(ApiError::bad_request(Code::InvalidNextToken, "nextToken does not belong to this time range."));
    }
    Ok(AuditQuery { from, to, filter, limit: query.limit()?, cursor })
}
