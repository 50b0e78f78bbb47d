//! The vault's HTTP API as the command line calls it, and every way a call can fail, each with its exit
//! code.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use zeroize::Zeroizing;

/// Exit codes (also in `tvault --help` and the README).
pub mod exit {
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const DENIED: u8 = 4;
    pub const INVALID: u8 = 5;
    pub const UNAVAILABLE: u8 = 6;
    pub const CONFLICT: u8 = 7;
}

/// Why a command failed. The message is shown on stderr; it never holds a value or a token.
#[derive(Debug)]
pub enum Failure {
    /// The API answered with an error envelope (or a bare error status).
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The vault (or the identity provider) could not be reached, or timed out.
    Unavailable(String),
    /// Something on this side is wrong with what was asked (a bad flag value, a value that is not text).
    Invalid(String),
    /// A missing or expired token, or a configuration that cannot be used.
    Denied(String),
    Usage(String),
    Other(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Api { status, .. } => match *status {
                404 => exit::NOT_FOUND,
                401 | 403 => exit::DENIED,
                400 | 413 | 415 | 422 => exit::INVALID,
                409 | 412 => exit::CONFLICT,
                429 | 502 | 503 | 504 => exit::UNAVAILABLE,
                _ => exit::OTHER,
            },
            Self::Unavailable(_) => exit::UNAVAILABLE,
            Self::Invalid(_) => exit::INVALID,
            Self::Denied(_) => exit::DENIED,
            Self::Usage(_) => exit::USAGE,
            Self::Other(_) => exit::OTHER,
        }
    }

    /// The error as `--json` prints it.
    pub fn to_json(&self) -> Value {
        let (code, message) = match self {
            Self::Api { code, message, .. } => (code.as_str(), message.clone()),
            Self::Unavailable(m) => ("unavailable", m.clone()),
            Self::Invalid(m) => ("invalid_input", m.clone()),
            Self::Denied(m) => ("denied", m.clone()),
            Self::Usage(m) => ("usage", m.clone()),
            Self::Other(m) => ("error", m.clone()),
        };
        let mut error = serde_json::json!({"code": code, "message": message, "exitCode": self.exit_code()});
        if let Self::Api { status, .. } = self {
            error["status"] = (*status).into();
        }
        serde_json::json!({"success": false, "error": error})
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api { status, code, message } => write!(f, "{message} ({code}, HTTP {status})"),
            Self::Unavailable(m) | Self::Invalid(m) | Self::Denied(m) | Self::Usage(m) | Self::Other(m) => {
                f.write_str(m)
            }
        }
    }
}

/// A connected client: the API's base URL and the bearer token.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Zeroizing<String>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish_non_exhaustive()
    }
}

pub fn http_client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .user_agent(concat!("tvault/", env!("CARGO_PKG_VERSION")))
        // A redirect would re-send the token (and a body holding a value or a client secret) to wherever
        // it points: never followed.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Failure::Other(format!("could not set up the HTTP client: {e}")))
}

/// Describes a transport error (the URLs tvault calls hold no secret).
pub fn unreachable(what: &str, url: &str, e: &reqwest::Error) -> Failure {
    let why = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    };
    Failure::Unavailable(format!("{what} at {url}: {why}"))
}

/// Percent-encodes one path segment (names are plain, but nothing the user types is trusted). `.` and
/// `..` are refused: a URL parser would resolve them (even percent-encoded) into another route.
pub fn segment(s: &str) -> Result<String, Failure> {
    if s.is_empty() || s == "." || s == ".." {
        return Err(Failure::Invalid(format!("{s:?} is not a secret name.")));
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

impl Api {
    pub fn new(base: &str, token: Zeroizing<String>) -> Result<Self, Failure> {
        Ok(Self { http: http_client()?, base: base.trim_end_matches('/').to_owned(), token })
    }

    /// The bearer token (for `proxy-env`, which hands it to an SDK as its API key).
    pub fn token(&self) -> Zeroizing<String> {
        self.token.clone()
    }

    /// Sends one request and returns its JSON body, or the API's error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        precondition: Option<(reqwest::header::HeaderName, String)>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(self.token.as_str()).query(query);
        if let Some(body) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        if let Some((name, value)) = precondition {
            req = req.header(name, value);
        }
        let resp = req.send().await.map_err(|e| unreachable("could not reach the vault", &self.base, &e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| unreachable("the vault's answer broke off", &self.base, &e))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return json.ok_or_else(|| Failure::Other(format!("the vault answered HTTP {status} without JSON")));
        }
        Err(api_error(status, json.as_ref()))
    }
}

/// The API's error envelope, `{"success":false,"error":{"code","message"}}`, as a failure.
pub fn api_error(status: StatusCode, body: Option<&Value>) -> Failure {
    let error = body.map(|b| &b["error"]);
    let code = error.and_then(|e| e["code"].as_str()).map(str::to_owned);
    let message = error.and_then(|e| e["message"].as_str()).map(str::to_owned);
    Failure::Api {
        status: status.as_u16(),
        code: code.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_")),
        message: message.unwrap_or_else(|| format!("The vault answered HTTP {status}.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        let api = |status| Failure::Api { status, code: String::new(), message: String::new() }.exit_code();
        assert_eq!([api(404), api(401), api(403), api(400), api(413)], [3, 4, 4, 5, 5]);
        assert_eq!([api(412), api(503), api(429), api(500)], [7, 6, 6, 1]);
        assert_eq!(Failure::Unavailable(String::new()).exit_code(), exit::UNAVAILABLE);
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("openai_api-key.v2").unwrap(), "openai_api-key.v2");
        assert_eq!(segment("a/b c?").unwrap(), "a%2Fb%20c%3F");
        assert!(segment("..").is_err() && segment(".").is_err() && segment("").is_err());
    }

    #[test]
    fn an_error_envelope_becomes_its_message_and_code() {
        let body = serde_json::json!({"success": false, "error": {"code": "not_found", "message": "No secret."}});
        let f = api_error(StatusCode::NOT_FOUND, Some(&body));
        assert_eq!(f.to_string(), "No secret. (not_found, HTTP 404)");
        let bare = api_error(StatusCode::BAD_GATEWAY, None);
        assert_eq!(bare.to_string(), "The vault answered HTTP 502 Bad Gateway. (bad_gateway, HTTP 502)");
    }
}
