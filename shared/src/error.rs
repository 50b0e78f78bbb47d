//! The errors an API caller can see, each with its HTTP status and stable `code`, mapped in one place.
//!
//! Internal causes are kept as `#[source]` so they can be logged; they are never sent to the caller.

use std::error::Error as StdError;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything a request can end in, other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request itself is wrong. `code` is a stable snake_case identifier.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },

    /// 401: no bearer token (`missing_token`), or one that failed verification (`invalid_token`).
    /// The message says why, never what the token held.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },

    /// 403: the caller is known but not allowed.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },

    /// 404: absent, expired, or owned by someone the caller cannot see (indistinguishable on purpose).
    #[error("secret not found")]
    NotFound,

    /// 404: the secret exists but not at the version asked for (only the last 5 are kept).
    #[error("version not retained")]
    VersionNotFound,

    /// 412: `If-Match` or `If-None-Match` did not hold for the secret's current version.
    #[error("precondition failed")]
    PreconditionFailed,

    /// 405: the route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,

    /// 413: a value or body over the limits.
    #[error("{message}")]
    PayloadTooLarge { code: &'static str, message: String },

    /// 415: a body that is not declared as JSON.
    #[error("request body must be application/json")]
    UnsupportedMediaType,

    /// 503: DynamoDB (secrets or audit) could not be reached or refused the write; safe to retry.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),

    /// 500: a stored ciphertext failed authentication. Logged and audited; never garbage returned.
    #[error("stored secret failed its integrity check")]
    Integrity(#[source] BoxError),

    /// 500: a bug. The cause is logged; the caller sees a generic message.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden { code, message: message.into() }
    }

    pub fn invalid_token(why: &str) -> Self {
        Self::Unauthorized { code: "invalid_token", message: format!("The bearer token was rejected: {why}.") }
    }

    pub fn unavailable(cause: impl Into<BoxError>) -> Self {
        Self::Unavailable(cause.into())
    }

    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest { .. } => 400,
            Self::Unauthorized { .. } => 401,
            Self::Forbidden { .. } => 403,
            Self::NotFound | Self::VersionNotFound => 404,
            Self::PreconditionFailed => 412,
            Self::MethodNotAllowed => 405,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnsupportedMediaType => 415,
            Self::Unavailable(_) => 503,
            Self::Integrity(_) | Self::Internal(_) => 500,
        }
    }

    /// The stable, machine-readable error code sent to the caller.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::PayloadTooLarge { code, .. } => code,
            Self::NotFound => "not_found",
            Self::VersionNotFound => "version_not_found",
            Self::PreconditionFailed => "version_conflict",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unavailable(_) => "storage_unavailable",
            Self::Integrity(_) => "integrity_error",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The human sentence sent to the caller. Never includes an internal cause.
    pub fn public_message(&self) -> String {
        match self {
            Self::BadRequest { message, .. }
            | Self::Forbidden { message, .. }
            | Self::Unauthorized { message, .. }
            | Self::PayloadTooLarge { message, .. } => message.clone(),
            Self::NotFound => "No secret with this name exists for this caller.".into(),
            Self::VersionNotFound => {
                "This version of the secret is not kept: the current version and the 4 before it can be read.".into()
            }
            Self::PreconditionFailed => {
                "The secret is not at the version the request's If-Match or If-None-Match header expects; read it again and retry.".into()
            }
            Self::MethodNotAllowed => "This method is not supported on this route.".into(),
            Self::UnsupportedMediaType => "The request body must be sent as Content-Type: application/json.".into(),
            Self::Unavailable(_) => "Secret storage is temporarily unavailable; retry later.".into(),
            Self::Integrity(_) => {
                "The stored secret failed its integrity check and was not returned; an operator has been alerted in the audit log."
                    .into()
            }
            Self::Internal(_) => "An internal error occurred.".into(),
        }
    }

    /// True for errors that are the server's fault and must be logged with their cause.
    pub fn is_server_error(&self) -> bool {
        self.status() >= 500
    }
}

/// Formats an error and its chain of sources on one line, for logs (never for responses).
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
