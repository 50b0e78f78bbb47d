//! The vault's operations: what happens after a request has been authenticated and validated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::RwLock;

use crate::audit::{AuditEvent, EventKind, RequestMeta};
use crate::auth::{Principal, TokenVerifier};
use crate::config::Config;
use crate::crypto::{Binding, IntegrityError, Keyring, OrgKey, random_salt};
use crate::error::ApiError;
use crate::policy::{self, Owner};
use crate::store::{AuditFilter, Replace, SecretItem, Store, Write, WriteGuard, new_lifetime, record_key, version_key};

/// Longest pause before a write is sent again after DynamoDB refused it for touching an item another
/// transaction held at that moment (`TransactionConflict`, which DynamoDB itself does not queue). Writes
/// that merely race never wait: they take distinct version numbers and do not fail each other.
const MAX_CONFLICT_BACKOFF: Duration = Duration::from_millis(100);
pub use crate::store::RETAINED_VERSIONS;
/// Most names in one batch read (as AWS Secrets Manager's `BatchGetSecretValue`).
pub const MAX_BATCH_NAMES: usize = 20;
/// Organization keys kept per warm container.
const ORG_KEY_CACHE_CAP: usize = 1024;
/// How long a warm container keeps a derived organization key. Bounds how long a shredded
/// organization's key outlives its salt in a container that had it cached.
pub const ORG_KEY_CACHE_TTL: Duration = Duration::from_secs(300);

/// A derived organization key and when it was derived.
type CachedKey = (Arc<OrgKey>, std::time::Instant);

/// A validated create-or-update request.
#[derive(Debug)]
pub struct PutSecret {
    pub name: String,
    pub value: SecretString,
    pub scope: Vec<String>,
    /// Expiry, epoch seconds, already checked to be in the future.
    pub expires_at: Option<i64>,
    pub client_id: Option<String>,
}

/// What a create-or-update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutAction {
    Created,
    Updated,
}

/// A condition a write puts on the secret's current version (`If-Match`, `If-None-Match`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Precondition {
    #[default]
    None,
    /// `If-Match: *` (`Any`): the secret must exist.
    Any,
    /// `If-Match: "3"`: the secret must exist at this version.
    Version(u64),
    /// `If-None-Match: *`: the secret must not exist.
    Absent,
}

impl Precondition {
    /// Checks the precondition against the live secret (if any) just read; the write that follows is
    /// conditional on that same version, so a change in between is caught by DynamoDB.
    fn check(&self, live: Option<&SecretItem>) -> Result<(), ApiError> {
        let holds = match (self, live) {
            (Self::None, _) => true,
            (Self::Any, live) => live.is_some(),
            (Self::Version(v), Some(c)) => c.version == *v,
            (Self::Version(_), None) => false,
            (Self::Absent, live) => live.is_none(),
        };
        if holds { Ok(()) } else { Err(ApiError::PreconditionFailed) }
    }
}

/// Backoff for a write DynamoDB refused with a transaction conflict: full jitter, for as long as the
/// request's own deadline allows (`VAULT_REQUEST_TIMEOUT_MS`; the handler answers 503 past it).
struct Contention {
    deadline: std::time::Instant,
    backoff: Duration,
}

impl Contention {
    fn new(budget: Duration) -> Self {
        Self { deadline: std::time::Instant::now() + budget, backoff: Duration::from_millis(4) }
    }

    async fn pause(&mut self) -> Result<(), ApiError> {
        self.check()?;
        let max = u64::try_from(self.backoff.as_micros()).unwrap_or(u64::MAX);
        tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % max.max(1))).await;
        self.backoff = (self.backoff * 2).min(MAX_CONFLICT_BACKOFF);
        Ok(())
    }

    /// Fails once the deadline has passed (every turn of a write's loop checks it).
    fn check(&self) -> Result<(), ApiError> {
        if std::time::Instant::now() >= self.deadline {
            return Err(ApiError::unavailable("the write did not settle within the request deadline"));
        }
        Ok(())
    }
}

/// What a write stores as its new version: the value (sealed once per organization key), scope and
/// expiry, and how its audit event describes it.
struct Draft<'a> {
    owner: &'a Owner,
    name: &'a str,
    value: &'a [u8],
    scope: Vec<String>,
    expires_at: Option<i64>,
    /// The event of an update (`updated`, or `rolled_back`) and its detail before `version=`.
    kind: EventKind,
    detail: String,
}

impl Draft<'_> {
    /// The secret item of this draft as version `version` of lifetime `lifetime`.
    fn item(
        &self,
        version: u64,
        lifetime: String,
        created_at: String,
        now: OffsetDateTime,
        envelope: &crate::crypto::Envelope,
    ) -> SecretItem {
        SecretItem {
            owner: self.owner.clone(),
            name: self.name.to_owned(),
            scope: self.scope.clone(),
            expires_at: self.expires_at,
            created_at,
            updated_at: now_rfc3339(now),
            version,
            envelope: Some(envelope.clone()),
            lifetime: Some(lifetime),
            fence: None,
            recorded: false,
        }
    }
}

/// What a batch read returned: values, and the names it could not return with why.
#[derive(Debug, Default)]
pub struct BatchRead {
    pub secrets: Vec<SecretWithValue>,
    pub errors: Vec<(String, ApiError)>,
}

/// Most DynamoDB queries one page of an audit query makes (one per day of the range at least), so a
/// sparse range cannot hold a request for long: past it, the page ends early with a `nextToken`.
const MAX_AUDIT_QUERIES: usize = 100;

/// An audit query: a time range (inclusive), filters and paging.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub filter: AuditFilter,
    pub limit: usize,
    pub cursor: Option<AuditCursor>,
}

/// Where an audit query resumes: a UTC day and, inside it, the id of the last event returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    pub day: time::Date,
    pub before: Option<String>,
}

/// One page of audit events (stored items), newest first.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<crate::store::Item>,
    pub next: Option<AuditCursor>,
}

/// A secret returned with its value.
#[derive(Debug)]
pub struct SecretWithValue {
    pub item: SecretItem,
    pub value: SecretString,
}

/// Where a listing resumes: the index of the owner partition, the last name returned and, in an
/// organization-wide listing, the client that name belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    #[serde(rename = "o")]
    pub owner: usize,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Whose secrets a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListTarget {
    /// The caller's own: a user's user-level secrets then its client's app-level ones; an M2M token's
    /// client's app-level secrets.
    Own,
    /// One client's app-level secrets (admins only).
    Client(String),
    /// Every app-level secret of the organization, across clients (admins only).
    Organization,
}

/// One page of a listing.
#[derive(Debug)]
pub struct ListPage {
    pub secrets: Vec<SecretItem>,
    pub next: Option<Cursor>,
}

/// The vault: configuration, clients and caches, built once per cold start.
pub struct Vault {
    pub(crate) store: Store,
    verifier: TokenVerifier,
    /// `None` in a function that handles no value (the audit reader).
    keyring: Option<Keyring>,
    /// Derived organization keys by (master key id, organization), with when they were derived.
    org_keys: RwLock<HashMap<(String, String), CachedKey>>,
    pub(crate) audit_retention_days: u32,
    audit_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("store", &self.store).field("keyring", &self.keyring).finish_non_exhaustive()
    }
}

fn now_rfc3339(now: OffsetDateTime) -> String {
    now.replace_nanosecond(0).unwrap_or(now).format(&Rfc3339).unwrap_or_default()
}

impl Vault {
    /// Builds the vault from its configuration and a DynamoDB client.
    pub async fn new(config: Config, dynamodb: aws_sdk_dynamodb::Client) -> Result<Self, ApiError> {
        Ok(Self {
            store: Store::new(dynamodb, config.secrets_table, config.audit_table),
            verifier: TokenVerifier::new(&config.jwt).await?,
            keyring: config.keyring,
            org_keys: RwLock::new(HashMap::new()),
            audit_retention_days: config.audit_retention_days,
            audit_timeout: config.audit_timeout,
            request_timeout: config.request_timeout,
        })
    }

    /// The master keys, in a function that has them.
    pub(crate) fn keyring(&self) -> Result<&Keyring, ApiError> {
        self.keyring.as_ref().ok_or_else(|| ApiError::internal("this function holds no master key"))
    }

    /// The overall deadline of one request (`VAULT_REQUEST_TIMEOUT_MS`).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Verifies a bearer token (the raw `Authorization` header value).
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, ApiError> {
        self.verifier.authenticate(authorization).await
    }

    /// The key of `org_id` under master key `key_id` (the active key when `None`), creating the
    /// organization's salt on its first write when `create` is set. Cached per warm container for
    /// [`ORG_KEY_CACHE_TTL`].
    pub async fn org_key(&self, org_id: &str, key_id: Option<&str>, create: bool) -> Result<Arc<OrgKey>, ApiError> {
        let keyring = self.keyring()?;
        let master = match key_id {
            None => keyring.active(),
            Some(id) => keyring
                .find(id)
                .ok_or_else(|| ApiError::Integrity(Box::new(IntegrityError::UnknownKeyId(id.to_owned()))))?,
        };
        let cache_key = (master.id().to_owned(), org_id.to_owned());
        if let Some((key, at)) = self.org_keys.read().await.get(&cache_key)
            && at.elapsed() < ORG_KEY_CACHE_TTL
        {
            return Ok(key.clone());
        }
        let salt = match self.store.get_salt(org_id).await? {
            Some(salt) => salt,
            None if create => {
                let fresh = random_salt();
                if self.store.put_salt_if_absent(org_id, &fresh, &now_rfc3339(OffsetDateTime::now_utc())).await? {
                    fresh
                } else {
                    // Another writer created it first: use theirs, never ours.
                    self.store
                        .get_salt(org_id)
                        .await?
                        .ok_or_else(|| ApiError::internal("organization salt vanished"))?
                }
            }
            None => return Err(ApiError::Integrity("organization has no key salt".into())),
        };
        let key = Arc::new(master.derive_org_key(org_id, &salt));
        let mut cache = self.org_keys.write().await;
        if cache.len() >= ORG_KEY_CACHE_CAP {
            cache.clear();
        }
        cache.insert(cache_key, (key.clone(), std::time::Instant::now()));
        Ok(key)
    }

    /// Forgets every cached key of `org_id` (after shredding it).
    pub(crate) async fn forget_org(&self, org_id: &str) {
        self.org_keys.write().await.retain(|(_, org), _| org != org_id);
    }

    pub(crate) fn event<'a>(
        kind: EventKind,
        p: &'a Principal,
        meta: &'a RequestMeta,
        name: &'a str,
        owner: Option<&'a Owner>,
        outcome: &'a str,
    ) -> AuditEvent<'a> {
        AuditEvent { kind, principal: p, meta, secret_name: name, owner, outcome, detail: None }
    }

    /// Records a refused or failed attempt. Best effort: the caller is refused either way.
    async fn record_failure(
        &self,
        kind: EventKind,
        p: &Principal,
        meta: &RequestMeta,
        name: &str,
        owner: Option<&Owner>,
        err: &ApiError,
    ) {
        let item = Self::event(kind, p, meta, name, owner, err.code())
            .to_item(OffsetDateTime::now_utc(), self.audit_retention_days);
        match tokio::time::timeout(self.audit_timeout, self.store.put_audit(item)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %crate::error::chain(&e), event = kind.as_str(), "could not record audit event")
            }
            Err(_) => tracing::error!(event = kind.as_str(), "timed out recording audit event"),
        }
    }

    /// Applies a policy decision, auditing a refusal.
    async fn allowed<T>(
        &self,
        decision: Result<T, ApiError>,
        p: &Principal,
        meta: &RequestMeta,
        name: &str,
    ) -> Result<T, ApiError> {
        match decision {
            Ok(v) => Ok(v),
            Err(e) => {
                self.record_failure(EventKind::AccessDenied, p, meta, name, None, &e).await;
                Err(e)
            }
        }
    }

    /// Creates or replaces a secret. Returns what it did and the version now current.
    pub async fn put_secret(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        input: PutSecret,
        pre: &Precondition,
    ) -> Result<(PutAction, u64), ApiError> {
        let owner = self.allowed(policy::mutation_owner(p, input.client_id.as_deref()), p, meta, &input.name).await?;
        let draft = Draft {
            owner: &owner,
            name: &input.name,
            value: input.value.expose_secret().as_bytes(),
            scope: input.scope.clone(),
            expires_at: input.expires_at,
            kind: EventKind::Updated,
            detail: String::new(),
        };
        self.write(meta, p, draft, pre, None).await
    }

    /// Writes `draft` as the secret's next version under `pre`. `current` is the live secret the caller
    /// has just read, when it must exist (a rollback: a secret that is gone by then is `not_found`);
    /// otherwise the write reads it. Returns what it did and the version written.
    ///
    /// - No live secret: a create, version 1 of a new lifetime, on condition that there is still none.
    /// - A live secret, on the first attempt or under an exact precondition (`If-Match: "N"`): a
    ///   replacement of the version read, one up the secret's sequence (a read and a transaction, as
    ///   when nobody else writes).
    /// - Writers racing on one secret (their first attempt found it changed): each takes a version number
    ///   from the secret's sequence (an atomic counter) and commits it in one transaction that makes it
    ///   current unless a higher number already is; a write overtaken that way is recorded as the
    ///   earlier version it is, with its audit event. No writer reads again and waits for the others, so
    ///   N racing writers cost O(N) requests in all.
    async fn write(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        draft: Draft<'_>,
        pre: &Precondition,
        current: Option<SecretItem>,
    ) -> Result<(PutAction, u64), ApiError> {
        let must_exist = current.is_some();
        let exact = matches!(pre, Precondition::Version(_));
        let binding = Binding { org_id: &p.org_id, owner: draft.owner, name: draft.name };
        let seal = |key: &OrgKey| key.seal(binding, draft.value).map_err(ApiError::internal);
        let mut key = self.org_key(&p.org_id, None, true).await?;
        let mut envelope = seal(&key)?;
        let mut retry = Contention::new(self.request_timeout);
        let mut state = match current {
            Some(c) => Some(c),
            None => self.store.get_secret(&p.org_id, draft.owner, draft.name).await?,
        };
        // Set once a first attempt found the secret changed: from then on, version numbers come from the
        // sequence.
        let mut racing = false;
        // The highest number the sequence is known to have handed out.
        let mut sequence_at = 0;
        // A number taken from the sequence, with the lifetime it belongs to.
        let mut ticket: Option<(String, u64)> = None;
        loop {
            retry.check()?;
            let now = OffsetDateTime::now_utc();
            let ts = now.unix_timestamp();
            if let Some(c) = state.as_ref().filter(|c| !c.is_expired(ts) && c.lifetime.is_none()) {
                state = self.store.upgrade_legacy(&p.org_id, c).await?;
                continue;
            }
            let live = state.as_ref().filter(|c| !c.is_expired(ts));
            if must_exist && live.is_none() {
                return Err(ApiError::NotFound);
            }
            pre.check(live)?;
            let salt = Some((p.org_id.as_str(), key.salt()));
            let audit = |kind: EventKind, version: u64, extra: &str| WriteGuard {
                audit: Self::event(kind, p, meta, draft.name, Some(draft.owner), "success")
                    .with_detail(format!("{}version={version}{extra}", draft.detail))
                    .to_item(now, self.audit_retention_days),
                now: ts,
                salt,
            };
            let (action, version, outcome) = match live {
                None => {
                    let secret = draft.item(1, new_lifetime(), now_rfc3339(now), now, &envelope);
                    let replacing = state.as_ref();
                    let guard = audit(EventKind::Created, 1, "");
                    (PutAction::Created, 1, self.store.create_secret(&p.org_id, &secret, replacing, guard).await?)
                }
                Some(c) if exact || !racing => {
                    let v = c.version.max(sequence_at) + 1;
                    let secret =
                        draft.item(v, c.lifetime.clone().unwrap_or_default(), c.created_at.clone(), now, &envelope);
                    let how = Replace { fence: exact, recorded: false, sequence: true };
                    let outcome =
                        self.store.replace_secret(&p.org_id, &secret, c, how, audit(draft.kind, v, "")).await?;
                    (PutAction::Updated, v, outcome)
                }
                Some(c) => {
                    let lifetime = c.lifetime.clone().unwrap_or_default();
                    let v = match &ticket {
                        Some((l, v)) if *l == lifetime => *v,
                        _ => {
                            let floor = c.version.max(sequence_at);
                            self.store.next_version(&p.org_id, draft.owner, draft.name, &lifetime, floor, ts).await?
                        }
                    };
                    ticket = Some((lifetime.clone(), v));
                    let secret = draft.item(v, lifetime, c.created_at.clone(), now, &envelope);
                    let outcome = if c.version == v {
                        // Only this write can have made its number current.
                        Write::Applied
                    } else if c.version > v {
                        if c.fence.is_some_and(|f| f >= v) {
                            // A write under an exact precondition came after this number was taken:
                            // this write comes after it too, with a new number.
                            ticket = None;
                            sequence_at = sequence_at.max(c.version);
                            continue;
                        }
                        self.record_overtaken(&p.org_id, &secret, c.version, &audit, &mut retry, draft.kind).await?
                    } else if c.recorded {
                        self.store.commit_secret(&p.org_id, &secret, audit(draft.kind, v, "")).await?
                    } else {
                        // The current version has no record yet: replace exactly it, archiving it.
                        let how = Replace { fence: false, recorded: true, sequence: false };
                        self.store.replace_secret(&p.org_id, &secret, c, how, audit(draft.kind, v, "")).await?
                    };
                    (PutAction::Updated, v, outcome)
                }
            };
            match outcome {
                Write::Applied => return Ok((action, version)),
                Write::Moved(s) => {
                    state = s.map(|b| *b);
                    racing = true;
                }
                Write::SequenceAhead(at) => {
                    sequence_at = sequence_at.max(at);
                    racing = true;
                }
                Write::SaltChanged => {
                    // The organization was shredded since this container derived its key: never write
                    // under the destroyed salt; derive again (a new salt) and reseal.
                    self.forget_org(&p.org_id).await;
                    key = self.org_key(&p.org_id, None, true).await?;
                    envelope = seal(&key)?;
                }
                Write::Contended => retry.pause().await?,
                Write::SlotTaken => return Err(ApiError::internal("a record slot was taken by a newer version")),
            }
        }
    }

    /// Records `secret`, overtaken by version `by`, as an earlier version (its record while it is
    /// within the retention window, else its audit event alone, which says so).
    async fn record_overtaken<'g>(
        &self,
        org_id: &str,
        secret: &SecretItem,
        by: u64,
        audit: &impl Fn(EventKind, u64, &str) -> WriteGuard<'g>,
        retry: &mut Contention,
        kind: EventKind,
    ) -> Result<Write, ApiError> {
        let mut retained = secret.version + RETAINED_VERSIONS > by;
        loop {
            let extra =
                if retained { format!(" overtakenBy={by}") } else { format!(" overtakenBy={by} retained=false") };
            match self.store.record_overtaken(org_id, secret, retained, audit(kind, secret.version, &extra)).await? {
                Write::SlotTaken if retained => retained = false,
                Write::Contended => retry.pause().await?,
                other => return Ok(other),
            }
        }
    }

    /// Reads a secret's value (the current version, or a retained earlier one): the caller's own,
    /// else its client's app-level one.
    pub async fn get_secret(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        name: &str,
        client_id: Option<&str>,
        version: Option<u64>,
    ) -> Result<SecretWithValue, ApiError> {
        let owners = self.allowed(policy::read_owners(p, client_id), p, meta, name).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let candidates = match owners.as_slice() {
            [only] => vec![self.store.get_secret(&p.org_id, only, name).await?],
            [first, second] => {
                let (a, b) = tokio::try_join!(
                    self.store.get_secret(&p.org_id, first, name),
                    self.store.get_secret(&p.org_id, second, name)
                )?;
                vec![a, b]
            }
            _ => return Err(ApiError::internal("unexpected number of read owners")),
        };
        let current = candidates.into_iter().flatten().find(|s| !s.is_expired(now)).ok_or(ApiError::NotFound)?;
        self.check_scope(p, meta, &current).await?;
        let item = match version {
            None => current,
            Some(v) if v == current.version => current,
            Some(v) => {
                let old = self.retained_version(p, &current, v).await?;
                self.check_scope(p, meta, &old).await?;
                old
            }
        };
        let value = self.open(p, meta, &item).await?;
        let mut event = Self::event(EventKind::Retrieved, p, meta, name, Some(&item.owner), "success");
        if version.is_some() {
            event = event.with_detail(format!("version={}", item.version));
        }
        // Fail closed: no value leaves without its audit event stored.
        self.audit_first(self.store.put_audit(event.to_item(OffsetDateTime::now_utc(), self.audit_retention_days)))
            .await?;
        Ok(SecretWithValue { item, value })
    }

    /// Refuses (and audits) a read of a secret whose scopes the token holds none of.
    async fn check_scope(&self, p: &Principal, meta: &RequestMeta, item: &SecretItem) -> Result<(), ApiError> {
        if let Err(e) = policy::check_scope(p, &item.scope) {
            self.record_failure(EventKind::AccessDenied, p, meta, &item.name, Some(&item.owner), &e).await;
            return Err(e);
        }
        Ok(())
    }

    /// Waits, within the audit timeout, for the audit write that must succeed before the request may
    /// (fail closed: no value leaves without its event stored).
    async fn audit_first(&self, write: impl Future<Output = Result<(), ApiError>>) -> Result<(), ApiError> {
        match tokio::time::timeout(self.audit_timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::unavailable("audit write timed out")),
        }
    }

    /// Version `v` of the live secret `current`, if it is still retained.
    async fn retained_version(&self, p: &Principal, current: &SecretItem, v: u64) -> Result<SecretItem, ApiError> {
        if v == current.version {
            return Ok(current.clone());
        }
        if v == 0 || v > current.version || v + RETAINED_VERSIONS <= current.version {
            return Err(ApiError::VersionNotFound);
        }
        // Records sit in their version's slot; a secret written before slots existed keeps them at
        // `<name>#v<n>` until its next write.
        let sk = match current.lifetime {
            Some(_) => record_key(&current.name, v),
            None => version_key(&current.name, v),
        };
        let old = self.store.get_record(&p.org_id, &current.owner, &current.name, &sk).await?;
        // A retained version belongs to this secret's lifetime only (never to an earlier secret of the
        // same name that was deleted or expired).
        old.filter(|o| o.version == v && o.lifetime == current.lifetime && o.created_at == current.created_at)
            .ok_or(ApiError::VersionNotFound)
    }

    async fn open(&self, p: &Principal, meta: &RequestMeta, item: &SecretItem) -> Result<SecretString, ApiError> {
        let envelope = item.envelope.as_ref().ok_or_else(|| ApiError::internal("secret read without its envelope"))?;
        let binding = Binding { org_id: &p.org_id, owner: &item.owner, name: &item.name };
        let opened = match self.org_key(&p.org_id, Some(&envelope.key_id), false).await {
            Ok(key) => key.open(binding, envelope).map_err(|e| ApiError::Integrity(Box::new(e))),
            Err(e) => Err(e),
        }
        .and_then(|plain| {
            std::str::from_utf8(&plain)
                .map(|s| SecretString::from(s.to_owned()))
                .map_err(|_| ApiError::Integrity("opened value is not UTF-8".into()))
        });
        if let Err(e @ ApiError::Integrity(_)) = &opened {
            tracing::error!(error = %crate::error::chain(e), secret = %item.name, "stored secret failed its integrity check");
            self.record_failure(EventKind::IntegrityError, p, meta, &item.name, Some(&item.owner), e).await;
        }
        opened
    }

    /// Reads up to [`MAX_BATCH_NAMES`] secrets in one `BatchGetItem`. Each name is returned with its
    /// value, or listed with why not (`not_found`, `insufficient_scope`, `integrity_error`). Every
    /// value returned and every refusal is audited, all in one transaction that must succeed first.
    pub async fn batch_get(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        names: &[String],
        client_id: Option<&str>,
    ) -> Result<BatchRead, ApiError> {
        let owners = self.allowed(policy::read_owners(p, client_id), p, meta, "*").await?;
        let keys: Vec<(Owner, String)> =
            names.iter().flat_map(|name| owners.iter().map(move |o| (o.clone(), name.clone()))).collect();
        let mut found = self.store.batch_get_secrets(&p.org_id, &keys).await?;
        let now = OffsetDateTime::now_utc();
        let ts = now.unix_timestamp();
        let mut read = BatchRead::default();
        let mut audits = Vec::new();
        for name in names {
            let live =
                owners.iter().filter_map(|o| found.remove(&(o.clone(), name.clone()))).find(|s| !s.is_expired(ts));
            let Some(item) = live else {
                read.errors.push((name.clone(), ApiError::NotFound));
                continue;
            };
            if let Err(e) = policy::check_scope(p, &item.scope) {
                audits.push(
                    Self::event(EventKind::AccessDenied, p, meta, name, Some(&item.owner), e.code())
                        .to_item(now, self.audit_retention_days),
                );
                read.errors.push((name.clone(), e));
                continue;
            }
            match self.open(p, meta, &item).await {
                Ok(value) => {
                    audits.push(
                        Self::event(EventKind::Retrieved, p, meta, name, Some(&item.owner), "success")
                            .with_detail("batch=true".into())
                            .to_item(now, self.audit_retention_days),
                    );
                    read.secrets.push(SecretWithValue { item, value });
                }
                Err(e @ ApiError::Integrity(_)) => read.errors.push((name.clone(), e)),
                Err(e) => return Err(e),
            }
        }
        // Fail closed: no value leaves without its audit event stored.
        self.audit_first(self.store.put_audits(audits)).await?;
        Ok(read)
    }

    /// Restores retained version `version` of a live secret (value and scope; the expiry stays) as its
    /// new current version. Returns the new version.
    pub async fn rollback_secret(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        name: &str,
        version: u64,
        client_id: Option<&str>,
        pre: &Precondition,
    ) -> Result<u64, ApiError> {
        let owner = self.allowed(policy::mutation_owner(p, client_id), p, meta, name).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let current = self.store.get_secret(&p.org_id, &owner, name).await?;
        let current = current.filter(|c| !c.is_expired(now)).ok_or(ApiError::NotFound)?;
        pre.check(Some(&current))?;
        let source = self.retained_version(p, &current, version).await?;
        let value = self.open(p, meta, &source).await?;
        let draft = Draft {
            owner: &owner,
            name,
            value: value.expose_secret().as_bytes(),
            scope: source.scope.clone(),
            expires_at: current.expires_at,
            kind: EventKind::RolledBack,
            detail: format!("fromVersion={version} "),
        };
        let (_, written) = self.write(meta, p, draft, pre, Some(current)).await?;
        Ok(written)
    }

    /// Deletes a live secret and every version of it.
    pub async fn delete_secret(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        name: &str,
        client_id: Option<&str>,
        pre: &Precondition,
    ) -> Result<(), ApiError> {
        let owner = self.allowed(policy::mutation_owner(p, client_id), p, meta, name).await?;
        let mut retry = Contention::new(self.request_timeout);
        let mut state = self.store.get_secret(&p.org_id, &owner, name).await?;
        loop {
            retry.check()?;
            let now = OffsetDateTime::now_utc();
            let ts = now.unix_timestamp();
            let live = state.as_ref().filter(|c| !c.is_expired(ts));
            pre.check(live)?;
            let current = live.ok_or(ApiError::NotFound)?;
            let audit = Self::event(EventKind::Deleted, p, meta, name, Some(&owner), "success")
                .with_detail(format!("version={}", current.version))
                .to_item(now, self.audit_retention_days);
            match self.store.delete_secret(&p.org_id, current, audit, ts).await? {
                Write::Applied => return Ok(()),
                // Changed since it was read: go on from what it is now (the failed condition returned it).
                Write::Moved(s) => state = s.map(|b| *b),
                Write::Contended => retry.pause().await?,
                other => return Err(ApiError::internal(format!("deleting a secret: {other:?}"))),
            }
        }
    }

    /// Reads an organization's audit events, newest first: a Query per UTC day of the range, on that
    /// organization's partitions only. Admins see every event; anyone else only their own.
    pub async fn query_audit(&self, p: &Principal, mut q: AuditQuery) -> Result<AuditPage, ApiError> {
        q.filter.actor = policy::audit_visibility(p);
        let millis = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000).clamp(0, 0xFFFF_FFFF_FFFF);
        let lowest = format!("{:012x}{}", millis(q.from), "0".repeat(20));
        let highest = format!("{:012x}{}", millis(q.to), "f".repeat(20));
        let first_day = q.from.date();
        let (mut day, mut before) = match q.cursor {
            Some(c) => (c.day, c.before),
            None => (q.to.date(), None),
        };
        let mut events = Vec::new();
        for _ in 0..MAX_AUDIT_QUERIES {
            if day < first_day {
                return Ok(AuditPage { events, next: None });
            }
            // A cursor may come from a page of another range: resume inside this one (DynamoDB refuses a
            // start key outside the key condition).
            match before.as_deref() {
                Some(b) if b > highest.as_str() => before = None,
                Some(b) if b <= lowest.as_str() => {
                    match day.previous_day() {
                        Some(previous) => (day, before) = (previous, None),
                        None => return Ok(AuditPage { events, next: None }),
                    }
                    continue;
                }
                _ => {}
            }
            let (page, more) = self
                .store
                .query_audit_day(
                    &p.org_id,
                    day,
                    &lowest,
                    &highest,
                    before.as_deref(),
                    &q.filter,
                    q.limit - events.len(),
                )
                .await?;
            events.extend(page);
            match more {
                Some(last) => before = Some(last),
                None => match day.previous_day() {
                    Some(previous) => (day, before) = (previous, None),
                    None => return Ok(AuditPage { events, next: None }),
                },
            }
            if events.len() >= q.limit {
                break;
            }
        }
        let next = (day >= first_day).then_some(AuditCursor { day, before });
        Ok(AuditPage { events, next })
    }

    /// Lists live secrets without values.
    pub async fn list_secrets(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        target: ListTarget,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<ListPage, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let client_id = match &target {
            ListTarget::Own => None,
            ListTarget::Client(c) => Some(c.as_str()),
            ListTarget::Organization => {
                self.allowed(policy::org_listing(p), p, meta, "*").await?;
                return self.list_organization(p, limit, cursor, now).await;
            }
        };
        let owners = self.allowed(policy::read_owners(p, client_id), p, meta, "*").await?;
        let Cursor { owner: start, mut after, client } =
            cursor.unwrap_or(Cursor { owner: 0, after: None, client: None });
        if start >= owners.len() || client.is_some() {
            return Err(ApiError::bad_request("invalid_next_token", "nextToken does not belong to this listing."));
        }
        let mut secrets = Vec::new();
        for (i, owner) in owners.iter().enumerate().skip(start) {
            let want = limit - secrets.len();
            let (page, more) = self.store.list_secrets(&p.org_id, owner, after.take().as_deref(), want, now).await?;
            let filled = page.len() == want;
            secrets.extend(page);
            if filled {
                let next = if more {
                    Some(Cursor { owner: i, after: secrets.last().map(|s| s.name.clone()), client: None })
                } else if i + 1 < owners.len() {
                    Some(Cursor { owner: i + 1, after: None, client: None })
                } else {
                    None
                };
                return Ok(ListPage { secrets, next });
            }
        }
        Ok(ListPage { secrets, next: None })
    }

    async fn list_organization(
        &self,
        p: &Principal,
        limit: usize,
        cursor: Option<Cursor>,
        now: i64,
    ) -> Result<ListPage, ApiError> {
        let after = match &cursor {
            None => None,
            Some(Cursor { owner: 0, after: Some(name), client: Some(client) }) => {
                Some((client.as_str(), name.as_str()))
            }
            Some(_) => {
                return Err(ApiError::bad_request("invalid_next_token", "nextToken does not belong to this listing."));
            }
        };
        let (secrets, more) = self.store.list_org_app_secrets(&p.org_id, after, limit, now).await?;
        let next = match secrets.last() {
            Some(last) if more => {
                Some(Cursor { owner: 0, after: Some(last.name.clone()), client: Some(last.owner.id().to_owned()) })
            }
            _ => None,
        };
        Ok(ListPage { secrets, next })
    }
}
