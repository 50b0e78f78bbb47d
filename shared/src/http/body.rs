//! JSON request bodies: at most the body limit, declared as JSON, valid UTF-8, every field known, and
//! errors that never echo what was sent.

use lambda_http::http::header;
use lambda_http::{Body, Request};
use secrecy::SecretString;
use serde::Deserialize;

use crate::error::{ApiError, Code};
use crate::rules;

pub(super) const PUT_FIELDS: &str = "name, value, scope, expiresAt, access, upstream, limits, clientId";

/// For an optional field that may be left out but not sent as `null`.
pub(super) fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The request bodies: JSON objects with no unknown or repeated field, each ending in the optional
/// `clientId` an admin names another client's secret with. Fields in `[...]` may be left out but not
/// sent as `null`; `expiresAt` may be `null` (no expiry).
macro_rules! bodies {
    ($($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* ; [$($opt:ident: $oty:ty),*] $(, $nullable:ident)? })*) => {$(
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub(super) struct $name {
            $(pub(super) $field: $ty,)*
            $(#[serde(default, deserialize_with = "not_null")] pub(super) $opt: Option<$oty>,)*
            $(#[serde(default)] pub(super) $nullable: Option<String>,)?
            #[serde(default, deserialize_with = "not_null")]
            pub(super) client_id: Option<String>,
        }
    )*};
}

bodies! {
    /// `POST /vault/secrets/batch-get`.
    BatchGetBody { names: Vec<String>; [] }
    /// `POST /vault/secrets/{name}/rollback`.
    RollbackBody { version: u64; [] }
    /// `POST /vault/secrets`.
    PutBody {
        name: String, value: SecretString;
        [scope: Vec<String>, access: String, upstream: crate::model::UpstreamWire, limits: crate::model::Limits],
        expires_at
    }
}

pub(super) fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

pub(super) fn is_json_content_type(req: &Request) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns a JSON error into a message that never echoes the body (a wrongly-typed value would be quoted
/// by serde otherwise).
pub(super) fn describe_json_error(e: &serde_json::Error, fields: &str) -> String {
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
pub(super) fn json_body<T: serde::de::DeserializeOwned>(req: &Request, fields: &str) -> Result<T, ApiError> {
    let bytes = body_bytes(req);
    rules::validate_body_len(bytes.len())?;
    if !is_json_content_type(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    if bytes.is_empty() {
        return Err(ApiError::bad_request(Code::InvalidJson, "A JSON request body is required."));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::bad_request(Code::InvalidJson, "The request body is not valid UTF-8."));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(Code::InvalidJson, describe_json_error(&e, fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
