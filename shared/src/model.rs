//! The vault's domain words, shared by every layer and depending on none: who owns a secret, who is
//! calling, what an audit event records, and how a secret may be used (read, or only sent to its
//! upstream by the proxy).

use std::collections::BTreeSet;

/// Versions of a secret kept readable: the current one and the four before it (KV v2's `max_versions`).
pub const RETAINED_VERSIONS: u64 = 5;

/// The permission that makes a token an organization admin.
pub(crate) const ADMIN_PERMISSION: &str = "vault:admin";

/// Who owns a secret, inside an organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// App-level: shared by every user of one OAuth client.
    App { client_id: String },
    /// User-level: reachable only by that user.
    User { user_id: String },
}

impl Owner {
    /// `"app"` or `"user"`, as shown in responses and audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::App { .. } => "app",
            Self::User { .. } => "user",
        }
    }

    /// The client id or user id.
    pub fn id(&self) -> &str {
        match self {
            Self::App { client_id } => client_id,
            Self::User { user_id } => user_id,
        }
    }
}

/// Whether a secret's value may be read, or only used: sent by the proxy to the upstream it is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Access {
    /// Returned by reads (as every secret was before access modes existed).
    #[default]
    Readable,
    /// Never returned by any route: only the proxy uses it, injected into a call to its upstream.
    UseOnly,
}

impl Access {
    /// `"readable"` or `"use-only"`, as the API and the items write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Readable => "readable",
            Self::UseOnly => "use-only",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "readable" => Some(Self::Readable),
            "use-only" => Some(Self::UseOnly),
            _ => None,
        }
    }
}

/// The one upstream a secret's value may be sent to, and how: validated when written (see
/// `rules::validate_upstream`), stored with the value and authenticated by its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// `https://host[:port][/base/path]`, normalised: lower-case scheme and host, no default port, no
    /// trailing slash, no user, query or fragment.
    pub base_url: String,
    /// Where the value goes.
    pub inject: Injection,
    /// Methods the proxy forwards (upper case); empty: any of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS.
    pub methods: Vec<String>,
    /// Path prefixes under the base URL the proxy forwards, whole segments (`/chat` allows `/chat` and
    /// `/chat/completions`, not `/chatter`); empty: any path.
    pub paths: Vec<String>,
}

/// Where the proxy puts a value in the upstream request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Injection {
    /// A request header, from a template holding `{value}` once: `Authorization: Bearer {value}`.
    Header { name: String, template: String },
    /// A query parameter, percent-encoded.
    Query { name: String },
}

/// An upstream as the API shows it and the items store it (JSON):
/// `{"baseUrl", "header", "template", "methods", "paths"}` or `{"baseUrl", "query", ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamWire {
    pub base_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
}

impl Upstream {
    /// The host (and port, when not the scheme's default) of the base URL.
    pub fn host(&self) -> &str {
        let rest = self.base_url.split_once("://").map_or(self.base_url.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }

    pub fn to_wire(&self) -> UpstreamWire {
        let (header, template, query) = match &self.inject {
            Injection::Header { name, template } => (Some(name.clone()), Some(template.clone()), None),
            Injection::Query { name } => (None, None, Some(name.clone())),
        };
        UpstreamWire {
            base_url: self.base_url.clone(),
            header,
            template,
            query,
            methods: (!self.methods.is_empty()).then(|| self.methods.clone()),
            paths: (!self.paths.is_empty()).then(|| self.paths.clone()),
        }
    }

    /// An upstream as stored (validated when it was written; its envelope authenticates it).
    pub fn from_stored(wire: UpstreamWire) -> Option<Self> {
        let inject = match (wire.header, wire.template, wire.query) {
            (Some(name), Some(template), None) => Injection::Header { name, template },
            (None, None, Some(name)) => Injection::Query { name },
            _ => return None,
        };
        Some(Self {
            base_url: wire.base_url,
            inject,
            methods: wire.methods.unwrap_or_default(),
            paths: wire.paths.unwrap_or_default(),
        })
    }
}

/// Per-secret limits on uses through the proxy, counted across every container (fixed windows: the
/// UTC minute and the UTC day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u32>,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        self.per_minute.is_none() && self.per_day.is_none()
    }
}

/// What kind of token the caller holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// Machine-to-machine (client credentials): acts for its OAuth client.
    Machine,
    /// A user's token: acts for that user, within its OAuth client.
    User { user_id: String },
}

impl TokenKind {
    /// `"m2m"` or `"user"`, for audit records.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Machine => "m2m",
            Self::User { .. } => "user",
        }
    }
}

/// The verified caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub org_id: String,
    pub client_id: String,
    pub kind: TokenKind,
    pub scopes: BTreeSet<String>,
    pub admin: bool,
}

impl Principal {
    /// The user id, for user tokens.
    pub fn user_id(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::User { user_id } => Some(user_id),
            TokenKind::Machine => None,
        }
    }
}

/// The kinds of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Retrieved,
    Updated,
    Deleted,
    AccessDenied,
    IntegrityError,
    /// The rewrap job moved an organization's data keys to the active master key.
    KeyRotated,
    /// An organization was crypto-shredded.
    OrgShredded,
    /// A secret was restored to an earlier version.
    RolledBack,
    /// A secret's value was sent to its upstream by the proxy.
    Used,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "vault.secret.created",
            Self::Retrieved => "vault.secret.retrieved",
            Self::Updated => "vault.secret.updated",
            Self::Deleted => "vault.secret.deleted",
            Self::AccessDenied => "vault.secret.access_denied",
            Self::IntegrityError => "vault.secret.integrity_error",
            Self::KeyRotated => "vault.key.rotated",
            Self::OrgShredded => "vault.org.shredded",
            Self::RolledBack => "vault.secret.rolled_back",
            Self::Used => "vault.secret.used",
        }
    }

    /// Every kind, for validating filters.
    pub const ALL: [EventKind; 10] = [
        Self::Created,
        Self::Retrieved,
        Self::Used,
        Self::Updated,
        Self::Deleted,
        Self::RolledBack,
        Self::AccessDenied,
        Self::IntegrityError,
        Self::KeyRotated,
        Self::OrgShredded,
    ];
}

/// Where a request came from, as API Gateway reports it.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// One audit event, ready to be stored.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub kind: EventKind,
    pub principal: &'a Principal,
    pub meta: &'a RequestMeta,
    pub secret_name: &'a str,
    /// The owner of the secret acted on, when known.
    pub owner: Option<&'a Owner>,
    /// `success`, or the error code that ended the request.
    pub outcome: &'a str,
    /// Counts and key ids of an operator job (never key material).
    pub detail: Option<String>,
}

impl AuditEvent<'_> {
    /// Adds counts, versions or key ids (never key material or values).
    pub fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }
}
