//! Responses: the views of secrets and events (borrowed from the items, so a page is serialized
//! without a copy of each), the JSON envelope, and the error response with its headers.

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Response};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Operation;
use super::cursor::encode_cursor;
use crate::error::ApiError;
use crate::model::{Limits, Owner, UpstreamWire};
use crate::service::{BatchRead, ListPage, SecretWithValue};
use crate::store::{Item, SecretItem};

pub(super) fn format_epoch(secs: i64) -> Value {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

/// Adds the `ETag` of a secret version.
pub(super) fn with_etag(mut resp: Response<Body>, version: u64) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// A secret's metadata as the API shows it, borrowed from the item (a page of 100 is serialized without
/// building a JSON map per secret).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Metadata<'a> {
    name: &'a str,
    scope: &'a [String],
    expires_at: Value,
    created_at: &'a str,
    updated_at: &'a str,
    version: u64,
    ownership: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    access: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<UpstreamWire>,
    #[serde(skip_serializing_if = "Limits::is_none")]
    limits: Limits,
}

pub(super) fn metadata(item: &SecretItem) -> Metadata<'_> {
    Metadata {
        name: &item.name,
        scope: &item.scope,
        expires_at: item.expires_at.map_or(Value::Null, format_epoch),
        created_at: &item.created_at,
        updated_at: &item.updated_at,
        version: item.version,
        ownership: item.owner.kind(),
        client_id: match &item.owner {
            Owner::App { client_id } => Some(client_id),
            Owner::User { .. } => None,
        },
        access: item.access.as_str(),
        upstream: item.upstream.as_ref().map(crate::model::Upstream::to_wire),
        limits: item.limits,
    }
}

/// A secret's metadata plus its value, serialized straight from the secret (no intermediate copy of
/// the plaintext).
#[derive(serde::Serialize)]
pub(super) struct WithValue<'a> {
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
pub(super) fn secret_response(secret: &SecretWithValue) -> Response<Body> {
    json_response(StatusCode::OK, &WithValue::of(secret))
}

/// The body of a batch read: the secrets read, with values, and an error per name not returned.
pub(super) fn batch_response(read: &BatchRead) -> Response<Body> {
    let secrets: Vec<WithValue<'_>> = read.secrets.iter().map(WithValue::of).collect();
    let errors: Vec<Value> = read
        .errors
        .iter()
        .map(|(name, e)| json!({"name": name, "code": e.code().as_str(), "message": e.public_message()}))
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
pub(super) struct ListBody<'a> {
    secrets: Vec<Metadata<'a>>,
    next_token: Option<String>,
}

pub(super) fn list_body(page: &ListPage) -> ListBody<'_> {
    ListBody { secrets: page.secrets.iter().map(metadata).collect(), next_token: page.next.as_ref().map(encode_cursor) }
}

/// The body of a secret's history: its versions, newest first, metadata only.
#[derive(serde::Serialize)]
pub(super) struct VersionsBody<'a> {
    name: &'a str,
    versions: Vec<VersionView<'a>>,
}

#[derive(serde::Serialize)]
pub(super) struct VersionView<'a> {
    #[serde(flatten)]
    metadata: Metadata<'a>,
    current: bool,
}

pub(super) fn versions_body<'a>(name: &'a str, versions: &'a [SecretItem]) -> VersionsBody<'a> {
    VersionsBody {
        name,
        versions: versions
            .iter()
            .enumerate()
            .map(|(i, v)| VersionView { metadata: metadata(v), current: i == 0 })
            .collect(),
    }
}

/// A JSON response of `body`'s text, with the headers every API answer carries.
pub(crate) fn response(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// A JSON body serialized straight from `body`; should that ever fail, a 500 envelope instead.
pub(super) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_string(body) {
        Ok(text) => response(status, text),
        Err(e) => {
            let e = ApiError::internal(e);
            tracing::error!(error = %crate::error::chain(&e), "a response body could not be serialized");
            error_envelope(&e)
        }
    }
}

/// The response for an error: its status, the envelope, and the headers the error carries (see
/// [`ApiError::headers`]).
pub(crate) fn error_response(e: &ApiError, op: Operation) -> Response<Body> {
    let allow = match op.method() {
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "GET",
    };
    error_allowing(e, allow)
}

/// The response for an error on a route that answers `allow`: its status, the envelope, and the headers
/// the error carries.
pub(crate) fn error_allowing(e: &ApiError, allow: &'static str) -> Response<Body> {
    let mut resp = error_envelope(e);
    for (name, value) in e.headers(allow) {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// An error's status and envelope.
pub(super) fn error_envelope(e: &ApiError) -> Response<Body> {
    let (status, body) = error_json(e);
    response(status, body)
}

/// An error's status and its envelope's text, `{"success":false,"error":{"code","message"}}`.
pub(crate) fn error_json(e: &ApiError) -> (StatusCode, String) {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"success": false, "error": {"code": e.code().as_str(), "message": e.public_message()}});
    (status, body.to_string())
}

/// An audit item as the API shows it, borrowed from the item (serialized without copying). Items hold
/// no value, key or token, and every field is taken by name, so nothing else stored can leak through.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventView<'a> {
    id: Option<&'a str>,
    time: Option<&'a str>,
    event: Option<&'a str>,
    secret: Option<&'a str>,
    ownership: Option<&'a str>,
    owner_client_id: Option<&'a str>,
    actor_client_id: Option<&'a str>,
    actor_user_id: Option<&'a str>,
    token_kind: Option<&'a str>,
    outcome: Option<&'a str>,
    request_id: Option<&'a str>,
    source_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    detail: Option<&'a str>,
}

impl<'a> EventView<'a> {
    /// One pass over the item's attributes (no hashing: a page of 100 events would otherwise make 1,400
    /// lookups); attributes not named here, or not strings, are left out.
    pub(crate) fn of(item: &'a Item) -> Self {
        let mut view = Self::default();
        for (name, value) in item {
            let Ok(value) = value.as_s() else { continue };
            let field = match name.as_str() {
                "sk" => &mut view.id,
                "time" => &mut view.time,
                "event" => &mut view.event,
                "secretName" => &mut view.secret,
                "ownership" => &mut view.ownership,
                "ownerClientId" => &mut view.owner_client_id,
                "actorClientId" => &mut view.actor_client_id,
                "actorUserId" => &mut view.actor_user_id,
                "tokenKind" => &mut view.token_kind,
                "outcome" => &mut view.outcome,
                "requestId" => &mut view.request_id,
                "sourceIp" => &mut view.source_ip,
                "userAgent" => &mut view.user_agent,
                "detail" => &mut view.detail,
                _ => continue,
            };
            *field = Some(value.as_str());
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    #[test]
    fn the_event_view_shows_the_named_fields_only() {
        let item: Item = [
            ("pk", "org%231#2026-03-04"),
            ("sk", "0195a1b2c3d4e5f60718293a4b5c6d7e"),
            ("event", "vault.secret.retrieved"),
            ("secretName", "n"),
            ("actorUserId", "auth0|u"),
            ("sourceIp", "10.0.0.1"),
            ("ttl", "1804000000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())))
        .collect();
        let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        // The API's view: the named fields only (no partition key, TTL or anything else stored).
        let mut stored = item.clone();
        stored.insert("value".into(), AttributeValue::S("never shown".into()));
        let view = serde_json::to_value(EventView::of(&stored)).unwrap();
        let keys: std::collections::BTreeSet<&str> = view.as_object().unwrap().keys().map(String::as_str).collect();
        let expected = [
            "id",
            "time",
            "event",
            "secret",
            "ownership",
            "ownerClientId",
            "actorClientId",
            "actorUserId",
            "tokenKind",
            "outcome",
            "requestId",
            "sourceIp",
            "userAgent",
            "detail",
        ];
        assert_eq!(keys, expected.into_iter().collect());
        assert_eq!(view["id"], get("sk").as_str());
        assert_eq!((view["secret"].as_str(), view["actorUserId"].as_str()), (Some("n"), Some("auth0|u")));
        assert_eq!((view["sourceIp"].as_str(), view["detail"].as_str()), (Some("10.0.0.1"), None));
        assert!(!view.to_string().contains("never shown") && !view.to_string().contains("org%231"));
    }
}
