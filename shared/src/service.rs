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
use crate::store::{Mutation, SecretItem, Store};

/// Attempts at a create-or-update before giving up under contention.
const MAX_WRITE_ATTEMPTS: u32 = 8;
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
    pub(crate) keyring: Keyring,
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

    /// The overall deadline of one request (`VAULT_REQUEST_TIMEOUT_MS`).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Verifies a bearer token (the raw `Authorization` header value).
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, ApiError> {
        self.verifier.authenticate(authorization).await
    }

    /// The key of `org_id` under master key `key_id` (the active key when `None`), creating the
    /// organization's salt on its first write when `create` is set.
    pub(crate) async fn org_key(
        &self,
        org_id: &str,
        key_id: Option<&str>,
        create: bool,
    ) -> Result<Arc<OrgKey>, ApiError> {
        let master = match key_id {
            None => self.keyring.active(),
            Some(id) => self
                .keyring
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

    /// Creates or replaces a secret.
    pub async fn put_secret(&self, meta: &RequestMeta, p: &Principal, input: PutSecret) -> Result<PutAction, ApiError> {
        let owner = self.allowed(policy::mutation_owner(p, input.client_id.as_deref()), p, meta, &input.name).await?;
        let binding = Binding { org_id: &p.org_id, owner: &owner, name: &input.name };
        let seal = |key: &OrgKey| key.seal(binding, input.value.expose_secret().as_bytes()).map_err(ApiError::internal);
        let mut key = self.org_key(&p.org_id, None, true).await?;
        let mut envelope = seal(&key)?;
        let mut backoff = Duration::from_millis(5);
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let now = OffsetDateTime::now_utc();
            let stamp = now_rfc3339(now);
            let secret = SecretItem {
                owner: owner.clone(),
                name: input.name.clone(),
                scope: input.scope.clone(),
                expires_at: input.expires_at,
                created_at: stamp.clone(),
                updated_at: stamp,
                version: 1,
                envelope: Some(envelope.clone()),
            };
            let audit = |kind| {
                Self::event(kind, p, meta, &input.name, Some(&owner), "success").to_item(now, self.audit_retention_days)
            };
            let ts = now.unix_timestamp();
            let mut outcome =
                self.store.create_secret(&p.org_id, &secret, audit(EventKind::Created), ts, key.salt()).await?;
            if outcome == Mutation::Applied {
                return Ok(PutAction::Created);
            }
            if outcome == Mutation::ConditionFailed {
                outcome =
                    self.store.update_secret(&p.org_id, &secret, audit(EventKind::Updated), ts, key.salt()).await?;
                if outcome == Mutation::Applied {
                    return Ok(PutAction::Updated);
                }
                // Otherwise deleted or expired in between, or contended: start over.
            }
            if outcome == Mutation::SaltChanged {
                // The organization was shredded since this container derived its key: never write
                // under the destroyed salt; derive again (a new salt) and reseal.
                self.forget_org(&p.org_id).await;
                key = self.org_key(&p.org_id, None, true).await?;
                envelope = seal(&key)?;
                continue;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
        Err(ApiError::unavailable("write contention did not settle"))
    }

    /// Reads a secret's value: the caller's own, else its client's app-level one.
    pub async fn get_secret(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        name: &str,
        client_id: Option<&str>,
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
        let item = candidates.into_iter().flatten().find(|s| !s.is_expired(now)).ok_or(ApiError::NotFound)?;
        if let Err(e) = policy::check_scope(p, &item.scope) {
            self.record_failure(EventKind::AccessDenied, p, meta, name, Some(&item.owner), &e).await;
            return Err(e);
        }
        let value = self.open(p, meta, &item).await?;
        let audit = Self::event(EventKind::Retrieved, p, meta, name, Some(&item.owner), "success")
            .to_item(OffsetDateTime::now_utc(), self.audit_retention_days);
        // Fail closed: no value leaves without its audit event stored.
        match tokio::time::timeout(self.audit_timeout, self.store.put_audit(audit)).await {
            Ok(Ok(())) => Ok(SecretWithValue { item, value }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApiError::unavailable("audit write timed out")),
        }
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

    /// Deletes a live secret.
    pub async fn delete_secret(
        &self,
        meta: &RequestMeta,
        p: &Principal,
        name: &str,
        client_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let owner = self.allowed(policy::mutation_owner(p, client_id), p, meta, name).await?;
        let mut backoff = Duration::from_millis(5);
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let now = OffsetDateTime::now_utc();
            let audit = Self::event(EventKind::Deleted, p, meta, name, Some(&owner), "success")
                .to_item(now, self.audit_retention_days);
            match self.store.delete_secret(&p.org_id, &owner, name, audit, now.unix_timestamp()).await? {
                Mutation::Applied => return Ok(()),
                Mutation::ConditionFailed => return Err(ApiError::NotFound),
                Mutation::Contended | Mutation::SaltChanged => {}
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
        Err(ApiError::unavailable("write contention did not settle"))
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
