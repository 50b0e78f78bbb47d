//! The two `nextToken` codecs: a listing's cursor and an audit query's. Both are opaque base64url JSON,
//! checked on the way back in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, Code};
use crate::rules::{validate_client_id, validate_name};
use crate::service::{AuditCursor, Cursor};
use crate::store::day_key;

pub(super) fn encode_cursor(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

pub(super) fn decode_cursor(token: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::bad_request(Code::InvalidNextToken, "nextToken is not one this API returned.");
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

pub(super) fn encode_audit_cursor(cursor: &AuditCursor) -> String {
    let body = json!({"d": day_key(cursor.day), "b": cursor.before});
    URL_SAFE_NO_PAD.encode(body.to_string())
}

pub(super) fn decode_audit_cursor(token: &str) -> Result<AuditCursor, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        d: String,
        b: Option<String>,
    }
    let bad = || ApiError::bad_request(Code::InvalidNextToken, "nextToken is not one this API returned.");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let c = Cursor { owner: 1, after: Some("abc".into()), client: Some("client#1".into()) };
        assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        for bad in ["", "!!!", &URL_SAFE_NO_PAD.encode(b"{\"o\":0,\"a\":\"../x\"}"), &URL_SAFE_NO_PAD.encode(b"[]")] {
            assert_eq!(decode_cursor(bad).unwrap_err().code(), "invalid_next_token");
        }
    }
}
