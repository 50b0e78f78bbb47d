//! The vault's domain words, shared by every layer and depending on none: who owns a secret, who is
//! calling, and what an audit event records.

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
        }
    }

    /// Every kind, for validating filters.
    pub const ALL: [EventKind; 9] = [
        Self::Created,
        Self::Retrieved,
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
