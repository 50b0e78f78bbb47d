//! Every limit of the API and every rule an input must meet, in one place. Error messages are built
//! from the constants, so a limit is written down once.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{ApiError, Code};

mod upstream;

pub(crate) use upstream::{
    BaseUrl, check_header_value, check_query, check_query_leaves_out, fill_header, normalize_path, parse_base_url,
    path_allowed, validate_limits, validate_upstream,
};
pub use upstream::{MAX_PROXY_BODY_BYTES, MAX_RATE_LIMIT, MAX_UPSTREAM_PATHS, MAX_URL_LEN, PROXY_METHODS};

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
/// Longest organization, client or user id (from a token, or named in a request).
pub const MAX_ID_LEN: usize = 256;
/// Default and largest page sizes of a listing or an audit query.
pub(crate) const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 1000;
/// Most names in one batch read (as AWS Secrets Manager's `BatchGetSecretValue`).
pub const MAX_BATCH_NAMES: usize = 20;
pub use crate::model::RETAINED_VERSIONS;
/// Longest time range of one audit query, in days.
pub(crate) const MAX_AUDIT_RANGE_DAYS: i64 = 92;
/// Range of an audit query that gives no `from`, in days.
pub(crate) const DEFAULT_AUDIT_RANGE_DAYS: i64 = 30;
/// Tokens larger than this are refused before any parsing.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// `65536` as `65,536`, as the messages write numbers.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn scope_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// A secret name: 1 to [`MAX_NAME_LEN`] of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub(crate) fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(name_char);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            Code::InvalidName,
            format!(
                "Secret names are 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '_', '.' and '-', starting with a letter or digit."
            ),
        ))
    }
}

/// A scope list, de-duplicated: at most [`MAX_SCOPES`] entries of 1 to [`MAX_SCOPE_LEN`] of
/// `[A-Za-z0-9_.:-]`.
pub(crate) fn validate_scope(scope: Vec<String>) -> Result<Vec<String>, ApiError> {
    if scope.len() > MAX_SCOPES {
        return Err(ApiError::bad_request(
            Code::InvalidScope,
            format!("A secret may carry at most {MAX_SCOPES} scopes."),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(scope.len());
    for entry in scope {
        if entry.is_empty() || entry.len() > MAX_SCOPE_LEN || !entry.chars().all(scope_char) {
            return Err(ApiError::bad_request(
                Code::InvalidScope,
                format!("Each scope is 1 to {MAX_SCOPE_LEN} characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'."),
            ));
        }
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// A secret value: 1 to [`MAX_VALUE_BYTES`] bytes.
pub(crate) fn validate_value_len(len: usize) -> Result<(), ApiError> {
    if len == 0 {
        return Err(ApiError::bad_request(Code::InvalidValue, "value must not be empty."));
    }
    if len > MAX_VALUE_BYTES {
        return Err(ApiError::too_large(
            Code::ValueTooLarge,
            format!("value is larger than {} bytes.", thousands(MAX_VALUE_BYTES)),
        ));
    }
    Ok(())
}

/// A request body: at most [`MAX_BODY_BYTES`].
pub(crate) fn validate_body_len(len: usize) -> Result<(), ApiError> {
    if len > MAX_BODY_BYTES {
        return Err(ApiError::too_large(
            Code::BodyTooLarge,
            format!("The request body is larger than {} MiB.", MAX_BODY_BYTES / (1024 * 1024)),
        ));
    }
    Ok(())
}

/// The one rule for an id (an organization, client or user, from a token or named in a request): 1 to
/// [`MAX_ID_LEN`] characters, no control characters.
pub(crate) fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

/// What an id must be, for error messages.
pub(crate) fn id_rule(what: &str) -> String {
    format!("{what} must be 1 to {MAX_ID_LEN} characters without control characters.")
}

/// An OAuth client id named by an admin.
pub(crate) fn validate_client_id(client_id: &str) -> Result<(), ApiError> {
    if is_valid_id(client_id) { Ok(()) } else { Err(ApiError::bad_request(Code::InvalidClientId, id_rule("clientId"))) }
}

/// `expiresAt`: RFC 3339 with a zone, in the future. Returns epoch seconds.
pub(crate) fn parse_expiry(text: &str, now: OffsetDateTime) -> Result<i64, ApiError> {
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        ApiError::bad_request(
            Code::InvalidExpiresAt,
            "expiresAt must be an RFC 3339 date-time with a zone, such as 2030-12-31T23:59:59Z.",
        )
    })?;
    if at <= now {
        return Err(ApiError::bad_request(Code::InvalidExpiresAt, "expiresAt must be in the future."));
    }
    Ok(at.unix_timestamp())
}

/// The names of a batch read: 1 to [`MAX_BATCH_NAMES`] valid names; repeats are read once.
pub(crate) fn validate_batch_names(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    if names.is_empty() || names.len() > MAX_BATCH_NAMES {
        return Err(ApiError::bad_request(
            Code::InvalidNames,
            format!("names must list 1 to {MAX_BATCH_NAMES} secret names."),
        ));
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

/// A version number: a whole number from 1.
pub(crate) fn parse_version(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().ok().filter(|n| *n >= 1 && text.bytes().all(|b| b.is_ascii_digit())).ok_or_else(invalid_version)
}

pub(crate) fn invalid_version() -> ApiError {
    ApiError::bad_request(Code::InvalidVersion, "version must be a whole number from 1.")
}

/// A page size: 1 to [`MAX_LIST_LIMIT`]; [`DEFAULT_LIST_LIMIT`] when not given.
pub(crate) fn parse_limit(text: Option<&str>) -> Result<usize, ApiError> {
    match text {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=MAX_LIST_LIMIT).contains(n)).ok_or_else(|| {
            ApiError::bad_request(
                Code::InvalidLimit,
                format!("limit must be a whole number from 1 to {MAX_LIST_LIMIT}."),
            )
        }),
    }
}

/// An audit query's time range: `from` not after `to`, at most [`MAX_AUDIT_RANGE_DAYS`] apart.
pub(crate) fn validate_time_range(from: OffsetDateTime, to: OffsetDateTime) -> Result<(), ApiError> {
    if from > to {
        return Err(ApiError::bad_request(Code::InvalidTimeRange, "from must not be after to."));
    }
    if to - from > time::Duration::days(MAX_AUDIT_RANGE_DAYS) {
        return Err(ApiError::bad_request(
            Code::InvalidTimeRange,
            format!("One query covers at most {MAX_AUDIT_RANGE_DAYS} days."),
        ));
    }
    Ok(())
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
            assert_eq!(validate_name(bad).unwrap_err().code(), Code::InvalidName, "{bad:?}");
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
        assert_eq!(parse_expiry("2030-01-01T01:00:00+01:00", now).unwrap_err().code(), Code::InvalidExpiresAt);
        for bad in ["2029-12-31T23:59:59Z", "2030-06-01T00:00:00", "10000-01-01T00:00:00Z", "tomorrow", "2030-06-01"] {
            assert_eq!(parse_expiry(bad, now).unwrap_err().code(), Code::InvalidExpiresAt, "{bad}");
        }
    }

    #[test]
    fn messages_name_the_limits() {
        assert!(validate_name("").unwrap_err().public_message().contains(&MAX_NAME_LEN.to_string()));
        assert!(validate_value_len(MAX_VALUE_BYTES + 1).unwrap_err().public_message().contains("65,536"));
        assert!(parse_limit(Some("0")).unwrap_err().public_message().contains("1000"));
        assert_eq!(parse_version("+3").unwrap_err().code(), Code::InvalidVersion);
        assert_eq!(parse_version("3").unwrap(), 3);
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("auth0|123") && is_valid_id(&"x".repeat(MAX_ID_LEN)));
        assert!(!is_valid_id("") && !is_valid_id(&"x".repeat(MAX_ID_LEN + 1)) && !is_valid_id("a\nb"));
    }
}
