//! Writes: create or update, rollback, delete. Writers racing on one secret never read again and wait
//! for each other (see [`Vault::write`]).

use std::time::Duration;

use secrecy::ExposeSecret;
use secrecy::SecretString;
use time::OffsetDateTime;

use super::{Vault, now_rfc3339};
use crate::crypto::{Binding, OrgKey};
use crate::error::ApiError;
use crate::model::{Access, EventKind, Limits, Owner, Principal, RequestMeta, Upstream};
use crate::policy;
use crate::rules::RETAINED_VERSIONS;
use crate::store::{Replace, SecretItem, ToItem, Write, WriteGuard, new_lifetime};

/// Longest pause before a write is sent again after DynamoDB refused it for touching an item another
/// transaction held at that moment (`TransactionConflict`, which DynamoDB itself does not queue). Writes
/// that merely race never wait: they take distinct version numbers and do not fail each other.
const MAX_CONFLICT_BACKOFF: Duration = Duration::from_millis(100);

/// A validated create-or-update request.
#[derive(Debug)]
pub struct PutSecret {
    pub name: String,
    pub value: SecretString,
    pub scope: Vec<String>,
    /// Expiry, epoch seconds, already checked to be in the future.
    pub expires_at: Option<i64>,
    pub client_id: Option<String>,
    /// Readable, or use-only (then `upstream` is set).
    pub access: Access,
    /// Where the proxy may send the value.
    pub upstream: Option<Upstream>,
    /// Limits on uses through the proxy (only with an upstream).
    pub limits: Limits,
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
    access: Access,
    upstream: Option<&'a Upstream>,
    limits: Limits,
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
            access: self.access,
            upstream: self.upstream.cloned(),
            limits: self.limits,
        }
    }
}

impl Vault {
    /// Creates or replaces a secret. Returns what it did and the version now current.
    pub async fn put_secret(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        input: PutSecret,
        pre: &Precondition,
    ) -> Result<(PutAction, u64), ApiError> {
        let owner = self.allowed(policy::mutation_owner(p, input.client_id.as_deref()), p, meta, &input.name).await?;
        if let Some(up) = &input.upstream {
            self.check_upstream_host(up)?;
        }
        let draft = Draft {
            owner: &owner,
            name: &input.name,
            value: input.value.expose_secret().as_bytes(),
            scope: input.scope.clone(),
            expires_at: input.expires_at,
            access: input.access,
            upstream: input.upstream.as_ref(),
            limits: input.limits,
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
        let binding = Binding::new(&p.org_id, draft.owner, draft.name).with_usage(draft.access, draft.upstream);
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
            let salt = Some(key.salt());
            let audit = |kind: EventKind, version: u64, extra: &str| WriteGuard {
                org_id: &p.org_id,
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
                    (PutAction::Created, 1, self.store.create_secret(&secret, replacing, guard).await?)
                }
                Some(c) if exact || !racing => {
                    let v = c.version.max(sequence_at) + 1;
                    let secret =
                        draft.item(v, c.lifetime.clone().unwrap_or_default(), c.created_at.clone(), now, &envelope);
                    let how = Replace { fence: exact, recorded: false, sequence: true };
                    let outcome = self.store.replace_secret(&secret, c, how, audit(draft.kind, v, "")).await?;
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
                        self.record_overtaken(&secret, c.version, &audit, &mut retry, draft.kind).await?
                    } else if c.recorded {
                        self.store.commit_secret(&secret, audit(draft.kind, v, "")).await?
                    } else {
                        // The current version has no record yet: replace exactly it, archiving it.
                        let how = Replace { fence: false, recorded: true, sequence: false };
                        self.store.replace_secret(&secret, c, how, audit(draft.kind, v, "")).await?
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
            match self.store.record_overtaken(secret, retained, audit(kind, secret.version, &extra)).await? {
                Write::SlotTaken if retained => retained = false,
                Write::Contended => retry.pause().await?,
                other => return Ok(other),
            }
        }
    }

    /// Restores retained version `version` of a live secret (value, scope, access mode, upstream and
    /// limits: the value goes back with the upstream it was written for; the expiry stays) as its new
    /// current version. Returns the new version.
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
        // Restoring a version hands its value to whoever can read the secret next: the caller needs read
        // rights on it, by the same rules as `GET ?version=N` (the current version's scopes, and its own).
        self.check_scope(p, meta, &current).await?;
        let source = self.retained_version(p, &current, version).await?;
        self.check_scope(p, meta, &source).await?;
        // A secret made use-only stays so: restoring a readable version would hand back through `GET` a
        // value that `GET ?version=N` refuses while the current version is use-only (403 use_only).
        if current.access == Access::UseOnly && source.access != Access::UseOnly {
            self.check_readable(p, meta, &current).await?;
        }
        let value = self.open(p, meta, &source).await?;
        let draft = Draft {
            owner: &owner,
            name,
            value: value.expose_secret().as_bytes(),
            scope: source.scope.clone(),
            expires_at: current.expires_at,
            access: source.access,
            upstream: source.upstream.as_ref(),
            limits: source.limits,
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
            let guard = WriteGuard { org_id: &p.org_id, audit, now: ts, salt: None };
            match self.store.delete_secret(current, guard).await? {
                Write::Applied => return Ok(()),
                // Changed since it was read: go on from what it is now (the failed condition returned it).
                Write::Moved(s) => state = s.map(|b| *b),
                Write::Contended => retry.pause().await?,
                other => return Err(ApiError::internal(format!("deleting a secret: {other:?}"))),
            }
        }
    }
}
