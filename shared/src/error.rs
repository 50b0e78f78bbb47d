//! The errors an API caller can see: every code the API can send, each error's HTTP status and the
//! headers that go with it, mapped in one place.
//!
//! Internal causes are kept as `#[source]` so they can be logged; they are never sent to the caller.

use std::error::Error as StdError;

use lambda_http::http::{HeaderName, HeaderValue, header};

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// A stable, machine-readable error code, as `error.code` of a response carries it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            /// The code as sent: snake_case.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    InvalidJson = "invalid_json",
    InvalidName = "invalid_name",
    InvalidNames = "invalid_names",
    InvalidValue = "invalid_value",
    InvalidScope = "invalid_scope",
    InvalidExpiresAt = "invalid_expires_at",
    InvalidClientId = "invalid_client_id",
    InvalidLimit = "invalid_limit",
    InvalidNextToken = "invalid_next_token",
    InvalidQuery = "invalid_query",
    InvalidVersion = "invalid_version",
    InvalidPrecondition = "invalid_precondition",
    InvalidTimeRange = "invalid_time_range",
    InvalidAccess = "invalid_access",
    InvalidUpstream = "invalid_upstream",
    InvalidLimits = "invalid_limits",
    InvalidPath = "invalid_path",
    MissingToken = "missing_token",
    InvalidToken = "invalid_token",
    Forbidden = "forbidden",
    InsufficientScope = "insufficient_scope",
    /// A read of a use-only secret: its value is never returned.
    UseOnly = "use_only",
    /// The proxy was asked to use a secret that has no upstream.
    NoUpstream = "no_upstream",
    /// The proxy was asked for a method or path the secret's upstream does not allow.
    MethodNotPermitted = "method_not_permitted",
    PathNotPermitted = "path_not_permitted",
    NotFound = "not_found",
    VersionNotFound = "version_not_found",
    MethodNotAllowed = "method_not_allowed",
    VersionConflict = "version_conflict",
    ValueTooLarge = "value_too_large",
    BodyTooLarge = "body_too_large",
    UnsupportedMediaType = "unsupported_media_type",
    RateLimited = "rate_limited",
    IntegrityError = "integrity_error",
    InternalError = "internal_error",
    StorageUnavailable = "storage_unavailable",
    IdentityProviderUnavailable = "identity_provider_unavailable",
    /// The upstream's name resolved to an address the proxy never calls (loopback, private,
    /// link-local, metadata).
    UpstreamBlocked = "upstream_blocked",
    /// The upstream could not be reached, or its TLS certificate did not verify.
    UpstreamUnavailable = "upstream_unavailable",
    UpstreamTimeout = "upstream_timeout",
    /// Operator jobs only (never an HTTP response): a shred without its confirmation.
    ConfirmationRequired = "confirmation_required",
}

impl Code {
    /// The codes an HTTP response can carry (`openapi.yaml` lists exactly these).
    pub fn http() -> impl Iterator<Item = Code> {
        Self::ALL.iter().copied().filter(|c| *c != Code::ConfirmationRequired)
    }
}

/// Codes compare with their text, as a response carries it.
impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a request can end in, other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request itself is wrong.
    #[error("{message}")]
    BadRequest { code: Code, message: String },

    /// 401: no bearer token (`missing_token`), or one that failed verification (`invalid_token`).
    /// The message says why, never what the token held.
    #[error("{message}")]
    Unauthorized { code: Code, message: String },

    /// 403: the caller is known but not allowed (`forbidden`, `insufficient_scope`).
    #[error("{message}")]
    Forbidden { code: Code, message: String },

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

    /// 413: a value or body over the limits (`value_too_large`, `body_too_large`).
    #[error("{message}")]
    PayloadTooLarge { code: Code, message: String },

    /// 429: a per-secret limit was reached; `Retry-After` says when the window that counts it ends.
    #[error("rate limited")]
    RateLimited { retry_after: u64 },

    /// 502: the proxy did not reach the upstream (`upstream_blocked`, `upstream_unavailable`).
    #[error("{message}")]
    BadGateway { code: Code, message: String },

    /// 504: the upstream did not answer in time.
    #[error("upstream timed out")]
    GatewayTimeout,

    /// 415: a body that is not declared as JSON.
    #[error("request body must be application/json")]
    UnsupportedMediaType,

    /// 503: DynamoDB (secrets or audit) could not be reached or refused the write; safe to retry.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),

    /// 503: the identity provider's key set (JWKS) could not be fetched, so no token can be judged yet.
    #[error("identity provider unavailable")]
    IdpUnavailable,

    /// 500: a stored ciphertext failed authentication. Logged and audited; never garbage returned.
    #[error("stored secret failed its integrity check")]
    Integrity(#[source] BoxError),

    /// 500: a bug. The cause is logged; the caller sees a generic message.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    pub fn bad_request(code: Code, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub fn forbidden(code: Code, message: impl Into<String>) -> Self {
        Self::Forbidden { code, message: message.into() }
    }

    pub fn too_large(code: Code, message: impl Into<String>) -> Self {
        Self::PayloadTooLarge { code, message: message.into() }
    }

    pub fn invalid_token(why: &str) -> Self {
        Self::Unauthorized { code: Code::InvalidToken, message: format!("The bearer token was rejected: {why}.") }
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
            Self::RateLimited { .. } => 429,
            Self::BadGateway { .. } => 502,
            Self::GatewayTimeout => 504,
            Self::Unavailable(_) | Self::IdpUnavailable => 503,
            Self::Integrity(_) | Self::Internal(_) => 500,
        }
    }

    /// The stable, machine-readable error code sent to the caller.
    pub fn code(&self) -> Code {
        match self {
            Self::BadRequest { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::PayloadTooLarge { code, .. }
            | Self::BadGateway { code, .. } => *code,
            Self::RateLimited { .. } => Code::RateLimited,
            Self::GatewayTimeout => Code::UpstreamTimeout,
            Self::NotFound => Code::NotFound,
            Self::VersionNotFound => Code::VersionNotFound,
            Self::PreconditionFailed => Code::VersionConflict,
            Self::MethodNotAllowed => Code::MethodNotAllowed,
            Self::UnsupportedMediaType => Code::UnsupportedMediaType,
            Self::Unavailable(_) => Code::StorageUnavailable,
            Self::IdpUnavailable => Code::IdentityProviderUnavailable,
            Self::Integrity(_) => Code::IntegrityError,
            Self::Internal(_) => Code::InternalError,
        }
    }

    /// The human sentence sent to the caller. Never includes an internal cause.
    pub fn public_message(&self) -> String {
        match self {
            Self::BadRequest { message, .. }
            | Self::Forbidden { message, .. }
            | Self::Unauthorized { message, .. }
            | Self::PayloadTooLarge { message, .. }
            | Self::BadGateway { message, .. } => message.clone(),
            Self::RateLimited { retry_after } => {
                format!("This secret's rate limit is reached; retry in {retry_after} s (Retry-After).")
            }
            Self::GatewayTimeout => "The upstream did not answer in time.".into(),
            Self::NotFound => "No secret with this name exists for this caller.".into(),
            Self::VersionNotFound => format!(
                "This version of the secret is not kept: the current version and the {} before it can be read.",
                crate::model::RETAINED_VERSIONS - 1
            ),
            Self::PreconditionFailed => {
                "The secret is not at the version the request's If-Match or If-None-Match header expects; read it again and retry.".into()
            }
            Self::MethodNotAllowed => "This method is not supported on this route.".into(),
            Self::UnsupportedMediaType => "The request body must be sent as Content-Type: application/json.".into(),
            Self::Unavailable(_) => "Secret storage is temporarily unavailable; retry later.".into(),
            Self::IdpUnavailable => {
                "The identity provider's signing keys could not be fetched, so the token cannot be checked yet; retry later."
                    .into()
            }
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

    /// The headers this error's response carries: `WWW-Authenticate` (RFC 6750) on a 401 and on an
    /// insufficient scope, `Retry-After` on a 503, and on a 405 `Allow` with the route's methods.
    pub fn headers(&self, allow: &'static str) -> Vec<(HeaderName, HeaderValue)> {
        let bearer = |error: &'static str| (header::WWW_AUTHENTICATE, HeaderValue::from_static(error));
        match self {
            // The contract asks for error="invalid_token" on every 401, a missing token included (RFC 6750
            // lets a server omit it there; clients handle both).
            Self::Unauthorized { .. } => vec![bearer("Bearer realm=\"token-vault\", error=\"invalid_token\"")],
            Self::Forbidden { code: Code::InsufficientScope, .. } => {
                vec![bearer("Bearer realm=\"token-vault\", error=\"insufficient_scope\"")]
            }
            Self::Unavailable(_) | Self::IdpUnavailable => vec![(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            Self::MethodNotAllowed => vec![(header::ALLOW, HeaderValue::from_static(allow))],
            Self::RateLimited { retry_after } => {
                vec![(header::RETRY_AFTER, HeaderValue::from(*retry_after))]
            }
            _ => Vec::new(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(code.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{code}");
        }
    }

    #[test]
    fn headers_follow_the_error() {
        let names = |e: ApiError| e.headers("GET").into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(ApiError::invalid_token("x")), [header::WWW_AUTHENTICATE]);
        assert_eq!(names(ApiError::forbidden(Code::InsufficientScope, "x")), [header::WWW_AUTHENTICATE]);
        assert!(names(ApiError::forbidden(Code::Forbidden, "x")).is_empty());
        assert_eq!(names(ApiError::unavailable("x")), [header::RETRY_AFTER]);
        assert_eq!(names(ApiError::MethodNotAllowed), [header::ALLOW]);
        let limited = ApiError::RateLimited { retry_after: 42 }.headers("GET");
        assert_eq!((limited[0].0.clone(), limited[0].1.to_str().unwrap()), (header::RETRY_AFTER, "42"));
    }
}
