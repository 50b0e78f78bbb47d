//! DynamoDB: item layout, key encoding and every read and write. Reads are GetItem or Query, never Scan.
//!
//! Secrets table (`pk`, `sk`):
//! - a secret: `pk = org#<org>#app#<client>` or `org#<org>#user#<user>`, `sk = <name>`;
//! - an organization's salt: `pk = org#<org>#meta`, `sk = salt`.
//!
//! Each id is escaped (`%` → `%25`, `#` → `%23`) so the encoding is injective whatever the ids hold.
//! Every secret also carries `orgPk = <org>` and `orgSk = <app|user>#<owner>#<name>`, the keys of the
//! `by-org` index, which serves the admin listing (the `app#` prefix) and the key-rotation and shredding
//! jobs, and projects metadata only, never ciphertext. Salt items carry `orgPk = #orgs`,
//! `orgSk = <org>`: that index partition is the registry of organizations. `ttl` (epoch seconds) is the table's TTL attribute.
//! DynamoDB deletes expired items late, so every read filters them itself.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Put, TransactWriteItem};
use std::time::Duration;

use crate::crypto::{Envelope, SALT_LEN};
use crate::error::ApiError;
use crate::policy::Owner;

/// Attribute and index names, shared with `template.yaml` (a test checks they agree).
pub mod schema {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const TTL: &str = "ttl";
    pub const ORG_INDEX: &str = "by-org";
    pub const ORG_PK: &str = "orgPk";
    pub const ORG_SK: &str = "orgSk";
    /// Non-key attributes the `by-org` index projects: metadata only, never ciphertext.
    pub const ORG_INDEX_PROJECTION: &[&str] =
        &["ownership", "clientId", "name", "scope", "ttl", "createdAt", "updatedAt", "version", "keyId", VERSION_OF];
    /// Set on a retained earlier version of a secret (to the secret's name); listings skip such items.
    pub const VERSION_OF: &str = "versionOf";
    /// The `by-org` partition listing every organization (escaped ids never start with `#`).
    pub const ORGS_PARTITION: &str = "#orgs";
}

pub type Item = HashMap<String, AttributeValue>;

/// The partition of the rewrap job's checkpoint (ids are escaped into `org#...` keys, so no collision).
const JOB_PK: &str = "job#rotate-keys";

/// On a retained version: the expiry its secret had then (not the table's TTL attribute: a retained
/// version lives and dies with its secret, whose current item governs whether it can be read).
const ARCHIVED_TTL: &str = "expiredAt";

/// Attempts at a batch read whose keys DynamoDB leaves unprocessed (throttling).
const BATCH_ATTEMPTS: u32 = 5;

/// The sort key of a retained earlier version of `name`. Names never hold `#`, so this never collides
/// with a secret's own sort key.
pub fn version_key(name: &str, version: u64) -> String {
    format!("{name}#v{version}")
}

/// The secret name a (possibly version) sort key belongs to.
pub fn base_name(sort_key: &str) -> &str {
    sort_key.split('#').next().unwrap_or(sort_key)
}

/// What an audit query keeps, besides its time range. Every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub secret: Option<String>,
    /// An event name such as `vault.secret.retrieved`.
    pub event: Option<String>,
    /// The acting client, or the client owning the secret acted on.
    pub client_id: Option<String>,
    /// The acting user.
    pub user_id: Option<String>,
    /// Set for callers that may only see their own events: a user (any client), or an M2M client
    /// acting as itself.
    pub actor: Option<Owner>,
}

/// What a write expects to find in a secret's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No item at all.
    Absent,
    /// An expired item at this version (replaced by a new secret).
    Expired(u64),
    /// A live item at this version (updated).
    Live(u64),
}

/// Escapes one id so it can never contain the `#` separator.
pub(crate) fn escape(id: &str) -> String {
    id.replace('%', "%25").replace('#', "%23")
}

/// The partition key of one owner's secrets. Injective in (org, owner).
pub fn partition_key(org_id: &str, owner: &Owner) -> String {
    format!("org#{}#{}#{}", escape(org_id), owner.kind(), escape(owner.id()))
}

/// The `by-org` sort key of a secret: `<kind>#<escaped owner id>#<name>`.
fn org_sort_key(owner: &Owner, name: &str) -> String {
    format!("{}#{}#{name}", owner.kind(), escape(owner.id()))
}

/// Reverses [`escape`].
fn unescape(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("%23") => out.push('#'),
            Some("%25") => out.push('%'),
            Some(other) => out.push_str(other),
            None => out.push_str(&rest[i..]),
        }
        rest = rest.get(i + 3..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Reads the owner and name back from a `by-org` sort key.
fn parse_org_sort_key(key: &str) -> Option<(Owner, String)> {
    let (kind, rest) = key.split_once('#')?;
    let (id, name) = rest.split_once('#')?;
    let id = unescape(id);
    let owner = match kind {
        "app" => Owner::App { client_id: id },
        "user" => Owner::User { user_id: id },
        _ => return None,
    };
    Some((owner, name.to_owned()))
}

fn salt_key(org_id: &str) -> String {
    format!("org#{}#meta", escape(org_id))
}

/// A secret as stored. `envelope` is `None` when read through a projection that leaves it out.
#[derive(Debug, Clone)]
pub struct SecretItem {
    pub owner: Owner,
    pub name: String,
    pub scope: Vec<String>,
    /// Expiry, epoch seconds.
    pub expires_at: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    pub version: u64,
    pub envelope: Option<Envelope>,
}

impl SecretItem {
    /// True once the expiry has passed (DynamoDB may not have deleted it yet).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// What a conditional mutation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Written, together with its audit event.
    Applied,
    /// The secret's condition did not hold (absent, present or expired, as the operation required).
    ConditionFailed,
    /// Another transaction touched the item at the same moment; try again.
    Contended,
    /// The organization salt the value was sealed under no longer exists (the organization was
    /// shredded): derive the key again and reseal.
    SaltChanged,
}

/// The DynamoDB store of secrets and audit events.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    secrets_table: String,
    audit_table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Service error codes that mean "try again later": throttling, capacity, transient server trouble, a
/// table being created or restored.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ResourceNotFoundException",
    "ResourceInUseException",
];

/// A failed DynamoDB call: 503 (with `Retry-After`) when storage is unreachable, overloaded or briefly
/// missing; 500 for what retrying cannot fix (a malformed request, missing IAM permissions).
fn unavailable<E>(e: SdkError<E>) -> ApiError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let transient = match &e {
        SdkError::ServiceError(ctx) => {
            ctx.raw().status().is_server_error() || ctx.err().code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        _ => true,
    };
    if transient { ApiError::unavailable(e) } else { ApiError::internal(e) }
}

fn malformed(what: &'static str) -> ApiError {
    ApiError::internal(format!("stored item is malformed: {what}"))
}

fn get_s<'a>(item: &'a Item, key: &'static str) -> Result<&'a str, ApiError> {
    item.get(key).and_then(|v| v.as_s().ok()).map(String::as_str).ok_or_else(|| malformed(key))
}

fn get_n<T: std::str::FromStr>(item: &Item, key: &'static str) -> Result<Option<T>, ApiError> {
    match item.get(key) {
        None => Ok(None),
        Some(v) => v.as_n().ok().and_then(|n| n.parse().ok()).map(Some).ok_or_else(|| malformed(key)),
    }
}

fn get_b(item: &Item, key: &'static str) -> Result<Vec<u8>, ApiError> {
    item.get(key).and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec()).ok_or_else(|| malformed(key))
}

impl Store {
    pub fn new(client: Client, secrets_table: impl Into<String>, audit_table: impl Into<String>) -> Self {
        Self { client, secrets_table: secrets_table.into(), audit_table: audit_table.into() }
    }

    /// Reads an organization's salt.
    pub async fn get_salt(&self, org_id: &str) -> Result<Option<[u8; SALT_LEN]>, ApiError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(salt_key(org_id)))
            .key(schema::SK, s("salt"))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = out.item else { return Ok(None) };
        let salt = get_b(&item, "salt")?;
        salt.try_into().map(Some).map_err(|_| malformed("salt"))
    }

    /// Stores an organization's salt unless one exists. Returns whether this call wrote it.
    pub async fn put_salt_if_absent(&self, org_id: &str, salt: &[u8; SALT_LEN], now: &str) -> Result<bool, ApiError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.secrets_table)
            .item(schema::PK, s(salt_key(org_id)))
            .item(schema::SK, s("salt"))
            .item("salt", AttributeValue::B(Blob::new(salt.to_vec())))
            .item("createdAt", s(now))
            .item(schema::ORG_PK, s(schema::ORGS_PARTITION))
            .item(schema::ORG_SK, s(org_id))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Reads one secret (strongly consistent), expired or not.
    pub async fn get_secret(&self, org_id: &str, owner: &Owner, name: &str) -> Result<Option<SecretItem>, ApiError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(partition_key(org_id, owner)))
            .key(schema::SK, s(name))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item.map(|item| secret_from_item(owner, &item, true)).transpose()
    }

    /// Reads one retained earlier version of a secret (strongly consistent), if it is stored.
    pub async fn get_version(
        &self,
        org_id: &str,
        owner: &Owner,
        name: &str,
        version: u64,
    ) -> Result<Option<SecretItem>, ApiError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(partition_key(org_id, owner)))
            .key(schema::SK, s(version_key(name, version)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = out.item else { return Ok(None) };
        let mut secret = secret_from_item(owner, &item, true)?;
        secret.name = name.to_owned();
        secret.expires_at = get_n(&item, ARCHIVED_TTL)?;
        Ok(Some(secret))
    }

    /// Reads many secrets at once (strongly consistent) with `BatchGetItem`, retrying what DynamoDB
    /// leaves unprocessed. At most 100 keys. Returns what exists, expired or not.
    pub async fn batch_get_secrets(
        &self,
        org_id: &str,
        keys: &[(Owner, String)],
    ) -> Result<HashMap<(Owner, String), SecretItem>, ApiError> {
        let mut by_key: HashMap<(String, String), &Owner> = HashMap::new();
        let mut request = Vec::with_capacity(keys.len());
        for (owner, name) in keys {
            let pk = partition_key(org_id, owner);
            if by_key.insert((pk.clone(), name.clone()), owner).is_none() {
                request.push(HashMap::from([(schema::PK.to_owned(), s(pk)), (schema::SK.to_owned(), s(name))]));
            }
        }
        let mut found = HashMap::new();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(request))
                .consistent_read(true)
                .build()
                .map_err(ApiError::internal)?,
        );
        let mut backoff = Duration::from_millis(10);
        for attempt in 0..BATCH_ATTEMPTS {
            let Some(keys) = pending.take() else { break };
            if keys.keys().is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.secrets_table, keys)
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.responses.and_then(|mut r| r.remove(&self.secrets_table)).unwrap_or_default() {
                let key = (get_s(&item, schema::PK)?.to_owned(), get_s(&item, schema::SK)?.to_owned());
                let owner = *by_key.get(&key).ok_or_else(|| malformed("a key that was not asked for"))?;
                let secret = secret_from_item(owner, &item, true)?;
                found.insert((owner.clone(), key.1), secret);
            }
            pending = out.unprocessed_keys.and_then(|mut u| u.remove(&self.secrets_table));
        }
        if pending.is_some_and(|k| !k.keys().is_empty()) {
            return Err(ApiError::unavailable("DynamoDB left keys of a batch read unprocessed"));
        }
        Ok(found)
    }

    /// Writes a secret's new current version, with its audit event, in one transaction:
    /// - the new item, on condition `expect` (absent, or still at the version read);
    /// - `archive`, the version it replaces, kept readable as `<name>#v<version>`;
    /// - the deletion of the versions in `prune` (archives past the retention, or of an expired secret
    ///   being replaced).
    #[allow(clippy::too_many_arguments)]
    pub async fn write_secret(
        &self,
        org_id: &str,
        secret: &SecretItem,
        expect: Expect,
        archive: Option<&SecretItem>,
        prune: &[u64],
        audit: Item,
        now: i64,
        salt: &[u8; SALT_LEN],
    ) -> Result<Mutation, ApiError> {
        let item = secret_item(org_id, secret, None)?;
        let (condition, version) = match expect {
            Expect::Absent => ("attribute_not_exists(pk)", None),
            Expect::Expired(v) => ("version = :v AND #ttl <= :now", Some(v)),
            Expect::Live(v) => ("version = :v AND (attribute_not_exists(#ttl) OR #ttl > :now)", Some(v)),
        };
        let mut condition = condition.to_owned();
        let mut put = Put::builder().table_name(&self.secrets_table).set_item(Some(item));
        if let Some(v) = version {
            put = put
                .expression_attribute_names("#ttl", schema::TTL)
                .expression_attribute_values(":v", n(v))
                .expression_attribute_values(":now", n(now));
        }
        if let Some(env) = archive.and_then(|a| a.envelope.as_ref()) {
            // The archived copy must be exactly what the item holds: not a data key the rewrap job has
            // moved to another master key since it was read.
            condition.push_str(" AND wrappedKey = :wrapped");
            put = put.expression_attribute_values(":wrapped", AttributeValue::B(Blob::new(env.wrapped_key.clone())));
        }
        let put = put.condition_expression(condition);
        let put = put.build().map_err(ApiError::internal)?;
        let mut extra = Vec::new();
        if let Some(old) = archive {
            let put = Put::builder()
                .table_name(&self.secrets_table)
                .set_item(Some(secret_item(org_id, old, Some(old.version))?))
                .build()
                .map_err(ApiError::internal)?;
            extra.push(TransactWriteItem::builder().put(put).build());
        }
        extra.extend(self.prune_ops(org_id, &secret.owner, &secret.name, prune)?);
        self.transact(TransactWriteItem::builder().put(put).build(), audit, Some((org_id, salt)), extra).await
    }

    /// Deletes a live secret still at `version`, the retained versions in `prune`, and writes its audit
    /// event, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn delete_secret(
        &self,
        org_id: &str,
        owner: &Owner,
        name: &str,
        version: u64,
        prune: &[u64],
        audit: Item,
        now: i64,
    ) -> Result<Mutation, ApiError> {
        let delete = Delete::builder()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(partition_key(org_id, owner)))
            .key(schema::SK, s(name))
            .condition_expression("version = :v AND (attribute_not_exists(#ttl) OR #ttl > :now)")
            .expression_attribute_names("#ttl", schema::TTL)
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(ApiError::internal)?;
        let extra = self.prune_ops(org_id, owner, name, prune)?;
        self.transact(TransactWriteItem::builder().delete(delete).build(), audit, None, extra).await
    }

    fn prune_ops(
        &self,
        org_id: &str,
        owner: &Owner,
        name: &str,
        prune: &[u64],
    ) -> Result<Vec<TransactWriteItem>, ApiError> {
        prune
            .iter()
            .map(|&v| {
                Delete::builder()
                    .table_name(&self.secrets_table)
                    .key(schema::PK, s(partition_key(org_id, owner)))
                    .key(schema::SK, s(version_key(name, v)))
                    .build()
                    .map(|d| TransactWriteItem::builder().delete(d).build())
                    .map_err(ApiError::internal)
            })
            .collect()
    }

    /// Writes `secret_op` and the audit item in one transaction, so neither exists without the other,
    /// together with `extra` unconditional writes (archived versions). With `salt_guard`, the
    /// transaction also requires the organization's salt to still be the one the value was sealed
    /// under, so no write is ever accepted under a shredded salt.
    async fn transact(
        &self,
        secret_op: TransactWriteItem,
        audit: Item,
        salt_guard: Option<(&str, &[u8; SALT_LEN])>,
        extra: Vec<TransactWriteItem>,
    ) -> Result<Mutation, ApiError> {
        let audit_put = Put::builder()
            .table_name(&self.audit_table)
            .set_item(Some(audit))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(ApiError::internal)?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(secret_op)
            .transact_items(TransactWriteItem::builder().put(audit_put).build());
        if let Some((org_id, salt)) = salt_guard {
            let check = ConditionCheck::builder()
                .table_name(&self.secrets_table)
                .key(schema::PK, s(salt_key(org_id)))
                .key(schema::SK, s("salt"))
                .condition_expression("salt = :salt")
                .expression_attribute_values(":salt", AttributeValue::B(Blob::new(salt.to_vec())))
                .build()
                .map_err(ApiError::internal)?;
            request = request.transact_items(TransactWriteItem::builder().condition_check(check).build());
        }
        for op in extra {
            request = request.transact_items(op);
        }
        let res = request.send().await;
        match res {
            Ok(_) => Ok(Mutation::Applied),
            Err(SdkError::ServiceError(ctx)) => match ctx.err() {
                TransactWriteItemsError::TransactionCanceledException(tc) => {
                    let codes: Vec<&str> =
                        tc.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None")).collect();
                    let code = |i: usize| codes.get(i).copied().unwrap_or("None");
                    if salt_guard.is_some() && code(2) == "ConditionalCheckFailed" {
                        Ok(Mutation::SaltChanged)
                    } else if code(0) == "ConditionalCheckFailed" {
                        Ok(Mutation::ConditionFailed)
                    } else if codes.contains(&"TransactionConflict") {
                        Ok(Mutation::Contended)
                    } else {
                        Err(ApiError::unavailable(SdkError::ServiceError(ctx)))
                    }
                }
                TransactWriteItemsError::TransactionInProgressException(_) => Ok(Mutation::Contended),
                _ => Err(unavailable(SdkError::ServiceError(ctx))),
            },
            Err(e) => Err(unavailable(e)),
        }
    }

    /// One page of an organization's audit events of one UTC day, newest first, with
    /// ids (sort keys) between `lowest` and `highest` and before `before` when given, matching
    /// `filter`. A Query on that day's partition only: never another organization's, never a Scan.
    /// Returns the events and the id to continue before when more may follow.
    #[allow(clippy::too_many_arguments)]
    pub async fn query_audit_day(
        &self,
        org_id: &str,
        day: time::Date,
        lowest: &str,
        highest: &str,
        before: Option<&str>,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<(Vec<Item>, Option<String>), ApiError> {
        let pk = crate::audit::partition_key(org_id, day);
        let mut conditions = Vec::new();
        let mut values =
            HashMap::from([(":pk".to_owned(), s(&pk)), (":lo".to_owned(), s(lowest)), (":hi".to_owned(), s(highest))]);
        let mut names = HashMap::new();
        let mut add = |cond: &str, key: &str, value: &str| {
            conditions.push(cond.to_owned());
            values.insert(key.to_owned(), s(value));
        };
        if let Some(v) = &filter.secret {
            add("secretName = :secret", ":secret", v);
        }
        if let Some(v) = &filter.event {
            names.insert("#event".to_owned(), "event".to_owned());
            add("#event = :event", ":event", v);
        }
        if let Some(v) = &filter.client_id {
            add("(actorClientId = :client OR ownerClientId = :client)", ":client", v);
        }
        if let Some(v) = &filter.user_id {
            add("actorUserId = :user", ":user", v);
        }
        match &filter.actor {
            None => {}
            Some(Owner::User { user_id }) => add("actorUserId = :actorUser", ":actorUser", user_id),
            Some(Owner::App { client_id }) => {
                add("actorClientId = :actorClient AND attribute_not_exists(actorUserId)", ":actorClient", client_id)
            }
        }
        let start = before.map(|sk| HashMap::from([("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(sk))]));
        let out = self
            .client
            .query()
            .table_name(&self.audit_table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .set_filter_expression((!conditions.is_empty()).then(|| conditions.join(" AND ")))
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(false)
            .set_exclusive_start_key(start)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(unavailable)?;
        let next = match out.last_evaluated_key {
            Some(key) => Some(get_s(&key, "sk")?.to_owned()),
            None => None,
        };
        Ok((out.items.unwrap_or_default(), next))
    }

    /// Writes several audit events at once, all or none (a batch read's retrievals and refusals).
    pub async fn put_audits(&self, audits: Vec<Item>) -> Result<(), ApiError> {
        if audits.is_empty() {
            return Ok(());
        }
        let mut request = self.client.transact_write_items();
        for audit in audits {
            let put = Put::builder()
                .table_name(&self.audit_table)
                .set_item(Some(audit))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(ApiError::internal)?;
            request = request.transact_items(TransactWriteItem::builder().put(put).build());
        }
        request.send().await.map_err(unavailable)?;
        Ok(())
    }

    /// One page of an owner's live secrets, metadata only, in name order after `after`.
    /// Returns the secrets and whether more may follow.
    pub async fn list_secrets(
        &self,
        org_id: &str,
        owner: &Owner,
        after: Option<&str>,
        limit: usize,
        now: i64,
    ) -> Result<(Vec<SecretItem>, bool), ApiError> {
        let pk = partition_key(org_id, owner);
        let start = after.map(|name| HashMap::from([(schema::PK.into(), s(&pk)), (schema::SK.into(), s(name))]));
        let (items, more) = self.query_live(None, schema::PK, pk.clone(), None, start, limit, now).await?;
        let secrets = items.iter().map(|item| secret_from_item(owner, item, false)).collect::<Result<_, _>>()?;
        Ok((secrets, more))
    }

    /// One page of every live app-level secret of an organization, across its clients, from the `by-org`
    /// index (metadata only: the index holds no ciphertext), in (client, name) order after `after`.
    pub async fn list_org_app_secrets(
        &self,
        org_id: &str,
        after: Option<(&str, &str)>,
        limit: usize,
        now: i64,
    ) -> Result<(Vec<SecretItem>, bool), ApiError> {
        let org_pk = escape(org_id);
        let start = after.map(|(client_id, name)| {
            let owner = Owner::App { client_id: client_id.to_owned() };
            HashMap::from([
                (schema::ORG_PK.into(), s(&org_pk)),
                (schema::ORG_SK.into(), s(org_sort_key(&owner, name))),
                (schema::PK.into(), s(partition_key(org_id, &owner))),
                (schema::SK.into(), s(name)),
            ])
        });
        let (items, more) = self
            .query_live(Some(schema::ORG_INDEX), schema::ORG_PK, org_pk.clone(), Some("app#"), start, limit, now)
            .await?;
        let secrets = items
            .iter()
            .map(|item| {
                let owner = Owner::App { client_id: get_s(item, "clientId")?.to_owned() };
                secret_from_item(&owner, item, false)
            })
            .collect::<Result<_, _>>()?;
        Ok((secrets, more))
    }

    /// Queries one partition of the table or of `index` (with `orgSk` starting with `sk_prefix`) for up
    /// to `limit` live (unexpired) items, metadata only, following DynamoDB's pages until the limit is
    /// met. Returns whether more may follow.
    #[allow(clippy::too_many_arguments)]
    async fn query_live(
        &self,
        index: Option<&str>,
        pk_attr: &str,
        pk: String,
        sk_prefix: Option<&str>,
        mut start: Option<Item>,
        limit: usize,
        now: i64,
    ) -> Result<(Vec<Item>, bool), ApiError> {
        let mut found = Vec::new();
        loop {
            let want = limit - found.len();
            let out = self
                .client
                .query()
                .table_name(&self.secrets_table)
                .set_index_name(index.map(str::to_owned))
                .key_condition_expression(if sk_prefix.is_some() {
                    "#pk = :pk AND begins_with(orgSk, :prefix)"
                } else {
                    "#pk = :pk"
                })
                .set_expression_attribute_values(sk_prefix.map(|p| HashMap::from([(":prefix".to_owned(), s(p))])))
                .filter_expression("attribute_not_exists(versionOf) AND (attribute_not_exists(#ttl) OR #ttl > :now)")
                .projection_expression("sk, clientId, #scope, #ttl, createdAt, updatedAt, version")
                .expression_attribute_names("#pk", pk_attr)
                .expression_attribute_names("#ttl", schema::TTL)
                .expression_attribute_names("#scope", "scope")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":now", n(now))
                .set_exclusive_start_key(start.take())
                .limit(i32::try_from(want).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(unavailable)?;
            found.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if found.len() < limit => start = Some(key),
                Some(_) => return Ok((found, true)),
                None => return Ok((found, false)),
            }
        }
    }

    /// One page of the organization registry, in id order after `after`. Returns the ids and the last
    /// one read when more may follow.
    pub async fn list_orgs(&self, after: Option<&str>, limit: i32) -> Result<(Vec<String>, Option<String>), ApiError> {
        let start = after.map(|org| {
            HashMap::from([
                (schema::ORG_PK.into(), s(schema::ORGS_PARTITION)),
                (schema::ORG_SK.into(), s(org)),
                (schema::PK.into(), s(salt_key(org))),
                (schema::SK.into(), s("salt")),
            ])
        });
        let out = self
            .client
            .query()
            .table_name(&self.secrets_table)
            .index_name(schema::ORG_INDEX)
            .key_condition_expression("orgPk = :pk")
            .expression_attribute_values(":pk", s(schema::ORGS_PARTITION))
            .set_exclusive_start_key(start)
            .limit(limit)
            .send()
            .await
            .map_err(unavailable)?;
        let orgs: Vec<String> =
            out.items().iter().map(|i| get_s(i, schema::ORG_SK).map(str::to_owned)).collect::<Result<_, _>>()?;
        let more = out.last_evaluated_key.is_some().then(|| orgs.last().cloned()).flatten();
        Ok((orgs, more))
    }

    /// One page of every secret of an organization (any owner, expired or not) from the `by-org` index:
    /// owner, name and the master key id its data key is wrapped under. Returns the page and where the
    /// next one starts.
    pub async fn org_secret_keys(
        &self,
        org_id: &str,
        start: Option<Item>,
    ) -> Result<(Vec<(Owner, String, String)>, Option<Item>), ApiError> {
        let out = self
            .client
            .query()
            .table_name(&self.secrets_table)
            .index_name(schema::ORG_INDEX)
            .key_condition_expression("orgPk = :pk")
            .expression_attribute_values(":pk", s(escape(org_id)))
            .projection_expression("pk, sk, orgPk, orgSk, keyId")
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let mut page = Vec::with_capacity(out.items().len());
        for item in out.items() {
            let (owner, name) = parse_org_sort_key(get_s(item, schema::ORG_SK)?).ok_or_else(|| malformed("orgSk"))?;
            page.push((owner, name, get_s(item, "keyId")?.to_owned()));
        }
        Ok((page, out.last_evaluated_key))
    }

    /// Replaces a secret's wrapped data key, only if it still holds exactly the one read as `old`
    /// (a secret updated meanwhile is left alone: its new data key is already under the active key).
    pub async fn replace_wrapped_key(
        &self,
        org_id: &str,
        owner: &Owner,
        name: &str,
        old: &Envelope,
        new: &Envelope,
    ) -> Result<bool, ApiError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(partition_key(org_id, owner)))
            .key(schema::SK, s(name))
            .update_expression("SET keyId = :newId, wrappedKey = :newKey")
            .condition_expression("keyId = :oldId AND wrappedKey = :oldKey")
            .expression_attribute_values(":newId", s(&new.key_id))
            .expression_attribute_values(":newKey", AttributeValue::B(Blob::new(new.wrapped_key.clone())))
            .expression_attribute_values(":oldId", s(&old.key_id))
            .expression_attribute_values(":oldKey", AttributeValue::B(Blob::new(old.wrapped_key.clone())))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Deletes an organization's salt, which makes every secret sealed under it unreadable for good.
    pub async fn delete_salt(&self, org_id: &str) -> Result<bool, ApiError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(salt_key(org_id)))
            .key(schema::SK, s("salt"))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.attributes.is_some())
    }

    /// Deletes one secret item outright (shredding), whatever it holds.
    pub async fn delete_secret_item(&self, org_id: &str, owner: &Owner, name: &str) -> Result<(), ApiError> {
        self.client
            .delete_item()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(partition_key(org_id, owner)))
            .key(schema::SK, s(name))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The rewrap job's checkpoint: the active key id it was rotating to and the last organization done.
    pub async fn get_checkpoint(&self) -> Result<Option<(String, String)>, ApiError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(JOB_PK))
            .key(schema::SK, s("checkpoint"))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item.map(|i| Ok((get_s(&i, "activeKeyId")?.to_owned(), get_s(&i, "lastOrg")?.to_owned()))).transpose()
    }

    pub async fn put_checkpoint(&self, active_key_id: &str, last_org: &str) -> Result<(), ApiError> {
        self.client
            .put_item()
            .table_name(&self.secrets_table)
            .item(schema::PK, s(JOB_PK))
            .item(schema::SK, s("checkpoint"))
            .item("activeKeyId", s(active_key_id))
            .item("lastOrg", s(last_org))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn delete_checkpoint(&self) -> Result<(), ApiError> {
        self.client
            .delete_item()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(JOB_PK))
            .key(schema::SK, s("checkpoint"))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Writes one audit event on its own (retrievals and denials).
    pub async fn put_audit(&self, audit: Item) -> Result<(), ApiError> {
        self.client
            .put_item()
            .table_name(&self.audit_table)
            .set_item(Some(audit))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// The full item of `secret`: its current version (`archived = None`) or a retained earlier version.
fn secret_item(org_id: &str, secret: &SecretItem, archived: Option<u64>) -> Result<Item, ApiError> {
    let env = secret.envelope.as_ref().ok_or_else(|| ApiError::internal("a write without an envelope"))?;
    let sk = match archived {
        None => secret.name.clone(),
        Some(v) => version_key(&secret.name, v),
    };
    let mut item = Item::new();
    item.insert(schema::PK.into(), s(partition_key(org_id, &secret.owner)));
    item.insert(schema::ORG_PK.into(), s(escape(org_id)));
    item.insert(schema::ORG_SK.into(), s(org_sort_key(&secret.owner, &sk)));
    item.insert(schema::SK.into(), s(sk));
    item.insert("name".into(), s(&secret.name));
    item.insert("ownership".into(), s(secret.owner.kind()));
    if let Owner::App { client_id } = &secret.owner {
        item.insert("clientId".into(), s(client_id));
    }
    item.insert("scope".into(), AttributeValue::L(secret.scope.iter().map(s).collect()));
    if let Some(t) = secret.expires_at {
        item.insert(if archived.is_some() { ARCHIVED_TTL } else { schema::TTL }.into(), n(t));
    }
    if archived.is_some() {
        item.insert(schema::VERSION_OF.into(), s(&secret.name));
    }
    item.insert("createdAt".into(), s(&secret.created_at));
    item.insert("updatedAt".into(), s(&secret.updated_at));
    item.insert("version".into(), n(secret.version));
    insert_envelope(&mut item, env);
    Ok(item)
}

fn insert_envelope(item: &mut Item, env: &Envelope) {
    item.insert("encVersion".into(), n(env.version));
    item.insert("keyId".into(), s(&env.key_id));
    item.insert("wrappedKey".into(), AttributeValue::B(Blob::new(env.wrapped_key.clone())));
    item.insert("ciphertext".into(), AttributeValue::B(Blob::new(env.ciphertext.clone())));
}

fn secret_from_item(owner: &Owner, item: &Item, with_envelope: bool) -> Result<SecretItem, ApiError> {
    let scope = match item.get("scope") {
        None => Vec::new(),
        Some(v) => v
            .as_l()
            .map_err(|_| malformed("scope"))?
            .iter()
            .map(|e| e.as_s().cloned().map_err(|_| malformed("scope")))
            .collect::<Result<_, _>>()?,
    };
    let envelope = if with_envelope {
        Some(Envelope {
            version: get_n::<u8>(item, "encVersion")?.ok_or_else(|| malformed("encVersion"))?,
            key_id: get_s(item, "keyId")?.to_owned(),
            wrapped_key: get_b(item, "wrappedKey")?,
            ciphertext: get_b(item, "ciphertext")?,
        })
    } else {
        None
    };
    Ok(SecretItem {
        owner: owner.clone(),
        name: get_s(item, schema::SK)?.to_owned(),
        scope,
        expires_at: get_n(item, schema::TTL)?,
        created_at: get_s(item, "createdAt")?.to_owned(),
        updated_at: get_s(item, "updatedAt")?.to_owned(),
        version: get_n(item, "version")?.unwrap_or(1),
        envelope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn partition_keys_are_injective() {
        let ids =
            ["a", "b", "a#b", "a%23b", "a%b", "#", "%", "%25", "auth0|123", "a/b", "org#x#app#y", "", "user", "app"];
        let mut seen = HashMap::new();
        for org in ids {
            for id in ids {
                for owner in [Owner::App { client_id: id.into() }, Owner::User { user_id: id.into() }] {
                    let pk = partition_key(org, &owner);
                    if let Some(prev) = seen.insert(pk.clone(), (org, owner.clone())) {
                        panic!("{pk} encodes both {prev:?} and {:?}", (org, owner));
                    }
                }
            }
        }
        let salts: HashSet<String> = ids.iter().map(|o| salt_key(o)).collect();
        assert_eq!(salts.len(), ids.len());
        assert!(salts.iter().all(|k| !seen.contains_key(k)), "a salt key collides with a secret partition");
    }

    #[test]
    fn org_sort_keys_read_back() {
        for id in ["a", "a#b", "%", "%23", "%25#", "auth0|1", "x/y"] {
            assert_eq!(unescape(&escape(id)), id);
            for owner in [Owner::App { client_id: id.into() }, Owner::User { user_id: id.into() }] {
                let key = org_sort_key(&owner, "name.1");
                assert_eq!(parse_org_sort_key(&key), Some((owner, "name.1".to_owned())));
            }
        }
    }

    #[test]
    fn escaped_ids_never_hold_the_separator() {
        for id in ["a#b", "##", "%#%"] {
            assert!(!escape(id).contains('#'));
        }
    }

    /// Property tests (proptest): the key encoding is injective for arbitrary ids.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Ids from a small alphabet rich in separators and escapes, or any printable text.
        fn id() -> impl Strategy<Value = String> {
            prop_oneof!["[#%235aprsu|/]{0,8}", "\\PC{0,16}"]
        }

        fn owner() -> impl Strategy<Value = Owner> {
            prop_oneof![
                id().prop_map(|client_id| Owner::App { client_id }),
                id().prop_map(|user_id| Owner::User { user_id })
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn partition_keys_are_injective(a in (id(), owner()), b in (id(), owner())) {
                prop_assume!(a != b);
                prop_assert_ne!(partition_key(&a.0, &a.1), partition_key(&b.0, &b.1));
            }

            #[test]
            fn salt_keys_are_injective_and_never_a_partition(a in id(), b in id(), owner in owner()) {
                prop_assume!(a != b);
                prop_assert_ne!(salt_key(&a), salt_key(&b));
                prop_assert_ne!(salt_key(&a), partition_key(&b, &owner));
                prop_assert_ne!(salt_key(&a), partition_key(&a, &owner));
            }

            #[test]
            fn org_sort_keys_are_injective(
                a in (owner(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,12}"),
                b in (owner(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,12}"),
            ) {
                // Reading a key back gives what was encoded, so two different secrets never share one.
                prop_assert_eq!(parse_org_sort_key(&org_sort_key(&a.0, &a.1)), Some(a.clone()));
                if a != b {
                    prop_assert_ne!(org_sort_key(&a.0, &a.1), org_sort_key(&b.0, &b.1));
                }
            }

            #[test]
            fn escaping_round_trips(id in id()) {
                prop_assert!(!escape(&id).contains('#'));
                prop_assert_eq!(unescape(&escape(&id)), id);
            }
        }
    }
}
