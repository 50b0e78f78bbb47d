//! The vault's operations: what happens after a request has been authenticated and validated.
//! Rooms: [`write`] (creates, updates, rollbacks, deletes), [`read`] (reads, batch reads, listings),
//! [`audit`] (audit queries) and [`jobs`] (the operator jobs: rewrap, key usage, shredding). Here: the
//! vault itself, its organization keys, and the audit of refusals.

mod audit;
mod jobs;
mod read;
mod usage;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::RwLock;

use crate::auth::TokenVerifier;
use crate::config::{Config, ProxySettings};
use crate::crypto::{Binding, IntegrityError, Keyring, OrgKey, random_salt};
use crate::error::ApiError;
use crate::model::{AuditEvent, EventKind, Owner, Principal, RequestMeta};
use crate::policy;
use crate::rules::RETAINED_VERSIONS;
use crate::store::{SecretItem, Store, Tables, ToItem, record_key, version_key};

pub(crate) use audit::{AuditCursor, AuditQuery};
pub use jobs::{RewrapOptions, RewrapReport, ShredReport};
pub(crate) use read::{BatchRead, Cursor, ListPage, ListTarget, SecretWithValue};
pub(crate) use usage::{Usable, UseRequest};
pub(crate) use write::{Precondition, PutAction, PutSecret};

/// Organization keys kept per warm container.
const ORG_KEY_CACHE_CAP: usize = 1024;

/// How long a warm container keeps a derived organization key. Bounds how long a shredded
/// organization's key outlives its salt in a container that had it cached.
pub(crate) const ORG_KEY_CACHE_TTL: Duration = Duration::from_secs(300);

/// A derived organization key and when it was derived.
type CachedKey = (Arc<OrgKey>, std::time::Instant);

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
    proxy: ProxySettings,
    issuer: String,
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
        Self::check_unsealed(&config)?;
        let verifier = TokenVerifier::new(&config.jwt).await?;
        Self::with_verifier(config, dynamodb, verifier)
    }

    fn check_unsealed(config: &Config) -> Result<(), ApiError> {
        if config.sealed_keyring.is_some() {
            return Err(ApiError::internal("the KMS-sealed key ring was not opened (Config::unseal_keyring)"));
        }
        Ok(())
    }

    /// As [`Vault::new`], with the token verifier already built (the cold start builds it beside its
    /// KMS call).
    pub(crate) fn with_verifier(
        config: Config,
        dynamodb: aws_sdk_dynamodb::Client,
        verifier: TokenVerifier,
    ) -> Result<Self, ApiError> {
        Self::check_unsealed(&config)?;
        Ok(Self {
            store: Store::new(
                dynamodb,
                Tables { secrets: &config.secrets_table, audit: &config.audit_table, keys: &config.keys_table },
            ),
            verifier,
            keyring: config.keyring,
            org_keys: RwLock::new(HashMap::new()),
            audit_retention_days: config.audit_retention_days,
            audit_timeout: config.audit_timeout,
            request_timeout: config.request_timeout,
            proxy: config.proxy,
            issuer: config.jwt.issuer.clone(),
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

    /// The issuer tokens must come from (the identity provider the MCP metadata names).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// How the proxy calls upstreams.
    pub fn proxy_settings(&self) -> ProxySettings {
        self.proxy
    }

    /// Refuses an upstream on loopback unless the local-development switch allows it.
    fn check_upstream_host(&self, upstream: &crate::model::Upstream) -> Result<(), ApiError> {
        let base = crate::rules::parse_base_url(&upstream.base_url)?;
        if base.loopback && !self.proxy.allow_loopback {
            return Err(ApiError::bad_request(
                crate::error::Code::InvalidUpstream,
                "upstream: baseUrl names a loopback host, which only a local stack (VAULT_PROXY_ALLOW_LOOPBACK=true) calls",
            ));
        }
        Ok(())
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
        let now = now_rfc3339(OffsetDateTime::now_utc());
        let salt = match self.store.get_salt(org_id).await? {
            Some(salt) if salt.in_secrets_table && create => {
                // Written by an earlier build into the secrets table: a writer moves it to the keys table
                // before it writes (its write checks the salt there), then uses whichever salt is there.
                self.store.move_salt(org_id, &salt.bytes, &now).await?;
                self.store
                    .get_salt(org_id)
                    .await?
                    .ok_or_else(|| ApiError::internal("organization salt vanished"))?
                    .bytes
            }
            Some(salt) => salt.bytes,
            None if create => {
                let fresh = random_salt();
                if self.store.put_salt_if_absent(org_id, &fresh, &now).await? {
                    fresh
                } else {
                    // Another writer created it first: use theirs, never ours.
                    self.store
                        .get_salt(org_id)
                        .await?
                        .ok_or_else(|| ApiError::internal("organization salt vanished"))?
                        .bytes
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

    /// Forgets the cached key of `org_id` under master key `key_id`; true if there was one.
    async fn forget_if_cached(&self, org_id: &str, key_id: &str) -> bool {
        let Ok(keyring) = self.keyring() else { return false };
        let Some(master) = keyring.find(key_id) else { return false };
        self.org_keys.write().await.remove(&(master.id().to_owned(), org_id.to_owned())).is_some()
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
        let item = Self::event(kind, p, meta, name, owner, err.code().as_str())
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

    /// Refuses (and audits) a read of a secret whose scopes the token holds none of.
    async fn check_scope(&self, p: &Principal, meta: &RequestMeta, item: &SecretItem) -> Result<(), ApiError> {
        if let Err(e) = policy::check_scope(p, &item.scope) {
            self.record_failure(EventKind::AccessDenied, p, meta, &item.name, Some(&item.owner), &e).await;
            return Err(e);
        }
        Ok(())
    }

    /// Refuses (and audits) a read of a use-only secret.
    async fn check_readable(&self, p: &Principal, meta: &RequestMeta, item: &SecretItem) -> Result<(), ApiError> {
        if let Err(e) = policy::check_readable(item.access) {
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

    async fn open(&self, p: &Principal, meta: &RequestMeta, item: &SecretItem) -> Result<SecretString, ApiError> {
        let envelope = item.envelope.as_ref().ok_or_else(|| ApiError::internal("secret read without its envelope"))?;
        let binding = Binding::new(&p.org_id, &item.owner, &item.name).with_usage(item.access, item.upstream.as_ref());
        let attempt = |key: Arc<OrgKey>| key.open(binding, envelope).map_err(|e| ApiError::Integrity(Box::new(e)));
        let mut opened = self.org_key(&p.org_id, Some(&envelope.key_id), false).await.and_then(attempt);
        if opened.is_err() && self.forget_if_cached(&p.org_id, &envelope.key_id).await {
            // The cached key may derive from a salt that is gone (the organization was shredded and has
            // written again under a new one): derive it again from the salt stored now, once.
            opened = self.org_key(&p.org_id, Some(&envelope.key_id), false).await.and_then(attempt);
        }
        let opened = opened.and_then(|plain| {
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
        // same name that was deleted or expired), and is gone once its own expiry has passed.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        old.filter(|o| o.version == v && o.lifetime == current.lifetime && o.created_at == current.created_at)
            .filter(|o| !o.is_expired(now))
            .ok_or(ApiError::VersionNotFound)
    }
}
