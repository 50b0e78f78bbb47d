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
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use std::time::Duration;

use crate::crypto::{Envelope, SALT_LEN};
use crate::error::ApiError;
use crate::policy::Owner;
use schema::SEQUENCE;

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
    /// The number a secret's version sequence has handed out last (on its item in the audit table).
    pub const SEQUENCE: &str = "seq";
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

/// Versions of a secret kept readable: the current one and the four before it (KV v2's `max_versions`).
pub const RETAINED_VERSIONS: u64 = 5;

/// How long a secret's version sequence outlives its last use. Past it, the next write starts the
/// sequence again from the version it reads (nothing is lost: the sequence only has to stay ahead of the
/// versions stored).
const SEQUENCE_IDLE_SECS: i64 = 86_400;

/// The sort key `<name>#v<n>`. Names never hold `#`, so this never collides with a secret's own sort key.
pub fn version_key(name: &str, n: u64) -> String {
    format!("{name}#v{n}")
}

/// The record slot of version `v`: versions take the slots 1 to [`RETAINED_VERSIONS`] in turn, so each
/// version's record replaces that of the version [`RETAINED_VERSIONS`] before it, and a secret never
/// holds more records than it retains.
pub fn record_slot(version: u64) -> u64 {
    version.saturating_sub(1) % RETAINED_VERSIONS + 1
}

/// The sort key of version `v`'s record.
pub fn record_key(name: &str, version: u64) -> String {
    version_key(name, record_slot(version))
}

/// The audit-table key of the version sequence of one lifetime of a secret: `seq#<secret partition>`
/// and `<name>#<lifetime>`. (Audit partitions are `<escaped org>#<day>`, with a single `#`.)
fn sequence_key(org_id: &str, owner: &Owner, name: &str, lifetime: &str) -> (String, String) {
    (format!("seq#{}", partition_key(org_id, owner)), format!("{name}#{lifetime}"))
}

/// A fresh lifetime id.
pub fn new_lifetime() -> String {
    let mut id = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    hex::encode(id)
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
    /// The lifetime this item belongs to: a random id given when the secret is created (again after a
    /// delete or an expiry). `None` on items written before lifetimes existed (see
    /// [`Store::upgrade_legacy`]).
    pub lifetime: Option<String>,
    /// On a current item: the highest version written under an exact precondition (`If-Match: "N"`).
    /// A write overtaken by a later version may only be recorded before it when it is above the fence.
    pub fence: Option<u64>,
    /// On a current item: whether its version also has its record already (written by writers that
    /// raced, which cannot know the version they replace). Otherwise the next write archives it.
    pub recorded: bool,
}

impl SecretItem {
    /// True once the expiry has passed (DynamoDB may not have deleted it yet).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// What a conditional write came to.
#[derive(Debug, Clone)]
pub enum Write {
    /// Written, together with its audit event.
    Applied,
    /// The secret's current item is not what the write required. Holds the item as it is now (`None`:
    /// there is none), read back from the failed condition: no extra read is needed to go on.
    Moved(Option<Box<SecretItem>>),
    /// The secret's sequence has already handed out this version number or a higher one (the highest).
    SequenceAhead(u64),
    /// The record slot of an overtaken version already holds a newer version of the same lifetime: the
    /// version is past the retention window already.
    SlotTaken,
    /// Another transaction touched one of the items at the same moment; send the same write again.
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

    /// Reads the version record of `name` stored at sort key `sk` (strongly consistent), if any.
    pub async fn get_record(
        &self,
        org_id: &str,
        owner: &Owner,
        name: &str,
        sk: &str,
    ) -> Result<Option<SecretItem>, ApiError> {
        let Some(item) = self.get_item(&partition_key(org_id, owner), sk).await? else { return Ok(None) };
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

    /// Creates a secret (a new lifetime at version 1) with its audit event, in one transaction: the
    /// current item, on condition that there is none or that `replacing` (an expired secret) is still
    /// what is there; the deletion of every record slot (the expired lifetime's, or records left behind
    /// when DynamoDB's TTL deleted a secret); the audit event; the salt check.
    pub async fn create_secret(
        &self,
        org_id: &str,
        secret: &SecretItem,
        replacing: Option<&SecretItem>,
        guard: WriteGuard<'_>,
    ) -> Result<Write, ApiError> {
        let mut tx = Tx::new(&secret.owner);
        let current = Put::builder().table_name(&self.secrets_table).set_item(Some(secret_item(org_id, secret, None)?));
        let current = match replacing {
            None => current.condition_expression("attribute_not_exists(pk)"),
            Some(old) => {
                let mut c = Cond::default();
                c.same_lifetime(old);
                c.push("version = :v", ":v", n(old.version));
                c.expired(guard.now);
                c.apply_put(current)
            }
        };
        tx.push(Part::Current, TransactWriteItem::builder().put(all_old_put(current)?).build());
        let mut stale: Vec<String> = (1..=RETAINED_VERSIONS).map(|v| version_key(&secret.name, v)).collect();
        if let Some(old) = replacing.filter(|o| o.lifetime.is_none()) {
            stale.extend(legacy_retained(old.version).map(|v| version_key(&secret.name, v)));
        }
        for sk in &stale {
            tx.push(Part::Other, self.delete_by_key(org_id, &secret.owner, sk)?);
        }
        self.transact(tx, guard).await
    }

    /// Replaces the current version `expected` (still live, in its lifetime, holding the data key read)
    /// by `secret`, in one transaction: the current item, on condition that it still is `expected`; the
    /// record of `expected`, archived (while it is within the retention window of the new version); the
    /// new version's own record when `how.recorded`, else the deletion of the record its slot held (the
    /// version falling out of the window); the sequence moved to the new version when `how.sequence`
    /// (on condition that it had not handed out that number yet); the audit event; the salt check.
    pub async fn replace_secret(
        &self,
        org_id: &str,
        secret: &SecretItem,
        expected: &SecretItem,
        how: Replace,
        guard: WriteGuard<'_>,
    ) -> Result<Write, ApiError> {
        let lifetime =
            expected.lifetime.as_deref().ok_or_else(|| ApiError::internal("replacing a secret without a lifetime"))?;
        let wrapped = expected.envelope.as_ref().ok_or_else(|| ApiError::internal("replacing a secret unread"))?;
        let mut c = Cond::default();
        c.same_lifetime(expected);
        c.push("version = :v", ":v", n(expected.version));
        // The archived copy must be exactly what the item holds: not a data key the rewrap job has moved
        // to another master key since it was read.
        c.push("wrappedKey = :wrapped", ":wrapped", AttributeValue::B(Blob::new(wrapped.wrapped_key.clone())));
        c.live(guard.now);
        let new = SecretItem { recorded: how.recorded, ..secret.clone() };
        let mut tx = Tx::new(&secret.owner);
        tx.push(Part::Current, self.update_current(org_id, &new, how.fence, c)?);
        let archive = expected.version + RETAINED_VERSIONS > secret.version;
        if archive && !expected.recorded {
            tx.push(Part::Other, self.put_record(org_id, expected, None)?);
        }
        if how.recorded {
            tx.push(Part::Record, self.put_record(org_id, secret, None)?);
        } else {
            // (Never the slot just archived into: that version is within the window, so its slot differs.)
            tx.push(Part::Other, self.delete_by_key(org_id, &secret.owner, &record_key(&secret.name, secret.version))?);
        }
        if how.sequence {
            tx.push(Part::Sequence, self.advance_sequence(org_id, secret, lifetime, guard.now)?);
        }
        self.transact(tx, guard).await
    }

    /// Takes the next number of a lifetime's version sequence (one `UpdateItem ADD`, which concurrent
    /// writers never fail on). A sequence not seen for a day is gone; it starts again above `floor`,
    /// the version the writer read.
    pub async fn next_version(
        &self,
        org_id: &str,
        owner: &Owner,
        name: &str,
        lifetime: &str,
        floor: u64,
        now: i64,
    ) -> Result<u64, ApiError> {
        let (pk, sk) = sequence_key(org_id, owner, name, lifetime);
        let out = self
            .client
            .update_item()
            .table_name(&self.audit_table)
            .key(schema::PK, s(pk))
            .key(schema::SK, s(sk))
            .update_expression("SET #n = if_not_exists(#n, :floor) + :one, #ttl = :ttl")
            .expression_attribute_names("#n", SEQUENCE)
            .expression_attribute_names("#ttl", schema::TTL)
            .expression_attribute_values(":floor", n(floor))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(now + SEQUENCE_IDLE_SECS))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(unavailable)?;
        out.attributes.as_ref().and_then(|a| get_n(a, SEQUENCE).ok().flatten()).ok_or_else(|| malformed(SEQUENCE))
    }

    /// Makes `secret` (a version number taken from the sequence) the current version, whatever version
    /// is current now, provided it is an older one of the same live lifetime whose record exists (so
    /// nothing needs archiving): the current item, the new version's record, the audit event, the salt
    /// check. Concurrent writers of one secret never fail each other here but by being overtaken (a
    /// higher number is current already).
    pub async fn commit_secret(
        &self,
        org_id: &str,
        secret: &SecretItem,
        guard: WriteGuard<'_>,
    ) -> Result<Write, ApiError> {
        let mut c = Cond::default();
        c.same_lifetime(secret);
        c.push("version < :v AND recorded = :yes", ":v", n(secret.version));
        c.value(":yes", AttributeValue::Bool(true));
        c.live(guard.now);
        let new = SecretItem { recorded: true, ..secret.clone() };
        let mut tx = Tx::new(&secret.owner);
        tx.push(Part::Current, self.update_current(org_id, &new, false, c)?);
        tx.push(Part::Record, self.put_record(org_id, secret, None)?);
        self.transact(tx, guard).await
    }

    /// Records `secret`, whose version was overtaken by a higher one already current, as the earlier
    /// version it is: its record (unless `retained` is false: the version is past the window) and its
    /// audit event, on condition that the lifetime still holds and that no version written under an
    /// exact precondition lies above it.
    pub async fn record_overtaken(
        &self,
        org_id: &str,
        secret: &SecretItem,
        retained: bool,
        guard: WriteGuard<'_>,
    ) -> Result<Write, ApiError> {
        let lifetime =
            secret.lifetime.as_deref().ok_or_else(|| ApiError::internal("recording a write without a lifetime"))?;
        let mut c = Cond::default();
        c.same_lifetime(secret);
        c.push("version > :v AND (attribute_not_exists(fence) OR fence < :v)", ":v", n(secret.version));
        let check = c.apply_check(
            ConditionCheck::builder()
                .table_name(&self.secrets_table)
                .key(schema::PK, s(partition_key(org_id, &secret.owner)))
                .key(schema::SK, s(&secret.name))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld),
        );
        let mut tx = Tx::new(&secret.owner);
        tx.push(
            Part::Current,
            TransactWriteItem::builder().condition_check(check.build().map_err(ApiError::internal)?).build(),
        );
        if retained {
            // The slot may hold this version's predecessor there, or one of another lifetime; never a
            // newer version of this one.
            let mut slot = Cond::default();
            slot.raw("attribute_not_exists(pk) OR attribute_not_exists(lifetime) OR lifetime <> :g OR version < :v");
            slot.value(":g", s(lifetime));
            slot.value(":v", n(secret.version));
            tx.push(Part::Record, self.put_record(org_id, secret, Some(slot))?);
        }
        self.transact(tx, guard).await
    }

    /// Deletes the live secret `current` (still at its version, in its lifetime), every record of its
    /// versions, and writes its audit event, in one transaction.
    pub async fn delete_secret(
        &self,
        org_id: &str,
        current: &SecretItem,
        audit: Item,
        now: i64,
    ) -> Result<Write, ApiError> {
        let mut c = Cond::default();
        c.same_lifetime(current);
        c.push("version = :v", ":v", n(current.version));
        c.live(now);
        let delete = c.apply_delete(
            Delete::builder()
                .table_name(&self.secrets_table)
                .key(schema::PK, s(partition_key(org_id, &current.owner)))
                .key(schema::SK, s(&current.name))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld),
        );
        let mut tx = Tx::new(&current.owner);
        tx.push(
            Part::Current,
            TransactWriteItem::builder().delete(delete.build().map_err(ApiError::internal)?).build(),
        );
        let mut records: Vec<String> = (1..=RETAINED_VERSIONS).map(|v| version_key(&current.name, v)).collect();
        if current.lifetime.is_none() {
            records.extend(legacy_retained(current.version).map(|v| version_key(&current.name, v)));
        }
        records.sort();
        records.dedup();
        for sk in &records {
            tx.push(Part::Other, self.delete_by_key(org_id, &current.owner, sk)?);
        }
        self.transact(tx, WriteGuard { audit, now, salt: None }).await
    }

    /// Gives a live secret written before lifetimes existed (current item without `lifetime`, retained
    /// versions at `<name>#v<n>`) the layout every write expects: a lifetime, and its retained versions
    /// in their record slots.
    /// Changes no value and no version, so it is not audited; it happens once per such secret, on its
    /// first write. Returns the secret as it is now.
    pub async fn upgrade_legacy(&self, org_id: &str, current: &SecretItem) -> Result<Option<SecretItem>, ApiError> {
        let lifetime = new_lifetime();
        let envelope = current.envelope.as_ref().ok_or_else(|| ApiError::internal("a write without an envelope"))?;
        let pk = partition_key(org_id, &current.owner);
        let mut tx = Tx::new(&current.owner);
        let update = Update::builder()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(&pk))
            .key(schema::SK, s(&current.name))
            .update_expression("SET lifetime = :g")
            .condition_expression("attribute_not_exists(lifetime) AND version = :v AND wrappedKey = :w")
            .expression_attribute_values(":g", s(&lifetime))
            .expression_attribute_values(":v", n(current.version))
            .expression_attribute_values(":w", AttributeValue::B(Blob::new(envelope.wrapped_key.clone())))
            .build()
            .map_err(ApiError::internal)?;
        tx.push(Part::Current, TransactWriteItem::builder().update(update).build());
        for v in current.version.saturating_sub(RETAINED_VERSIONS - 1).max(1)..current.version {
            let old_key = version_key(&current.name, v);
            let Some(old) = self.get_item(&pk, &old_key).await? else { continue };
            let mut record = secret_from_item(&current.owner, &old, true)?;
            if record.version != v || record.created_at != current.created_at {
                continue;
            }
            record.name.clone_from(&current.name);
            record.expires_at = get_n(&old, ARCHIVED_TTL)?;
            record.lifetime = Some(lifetime.clone());
            let wrapped = record.envelope.as_ref().map(|e| e.wrapped_key.clone()).unwrap_or_default();
            // Moved only while it holds the data key read (the rewrap job may be at work meanwhile).
            let mut unchanged = Cond::default();
            unchanged.push("wrappedKey = :w", ":w", AttributeValue::B(Blob::new(wrapped)));
            if old_key == record_key(&current.name, v) {
                tx.push(Part::Other, self.put_record(org_id, &record, Some(unchanged))?);
            } else {
                tx.push(Part::Other, self.put_record(org_id, &record, None)?);
                let delete = unchanged.apply_delete(
                    Delete::builder()
                        .table_name(&self.secrets_table)
                        .key(schema::PK, s(&pk))
                        .key(schema::SK, s(&old_key)),
                );
                tx.push(
                    Part::Other,
                    TransactWriteItem::builder().delete(delete.build().map_err(ApiError::internal)?).build(),
                );
            }
        }
        match self.send(tx).await? {
            Sent::Done | Sent::Failed(_) | Sent::Conflict => {}
        }
        self.get_secret(org_id, &current.owner, &current.name).await
    }

    async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, ApiError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(pk))
            .key(schema::SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// The current item's write: an `Update` that sets every attribute of `secret` (and removes the
    /// expiry when it has none), so the fence, which only exact writes set, is kept.
    fn update_current(
        &self,
        org_id: &str,
        secret: &SecretItem,
        fence: bool,
        mut cond: Cond,
    ) -> Result<TransactWriteItem, ApiError> {
        let mut item = secret_item(org_id, secret, None)?;
        item.remove(schema::PK);
        item.remove(schema::SK);
        if fence {
            item.insert("fence".into(), n(secret.version));
        }
        item.insert("recorded".into(), AttributeValue::Bool(secret.recorded));
        let mut sets = Vec::new();
        for (i, (attr, value)) in item.into_iter().enumerate() {
            sets.push(format!("#u{i} = :u{i}"));
            cond.names.insert(format!("#u{i}"), attr);
            cond.values.insert(format!(":u{i}"), value);
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if secret.expires_at.is_none() {
            expression.push_str(" REMOVE #ttl");
            cond.names.insert("#ttl".into(), schema::TTL.into());
        }
        let update = Update::builder()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(partition_key(org_id, &secret.owner)))
            .key(schema::SK, s(&secret.name))
            .update_expression(expression)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        Ok(TransactWriteItem::builder().update(cond.apply_update(update).build().map_err(ApiError::internal)?).build())
    }

    /// The put of `secret`'s version record, unconditional unless `cond` is given.
    fn put_record(&self, org_id: &str, secret: &SecretItem, cond: Option<Cond>) -> Result<TransactWriteItem, ApiError> {
        let put = Put::builder().table_name(&self.secrets_table).set_item(Some(secret_item(
            org_id,
            secret,
            Some(secret.version),
        )?));
        let put = match cond {
            Some(c) => c.apply_put(put),
            None => put,
        };
        Ok(TransactWriteItem::builder().put(put.build().map_err(ApiError::internal)?).build())
    }

    /// Moves a lifetime's sequence to `secret.version`, on condition that it is below it.
    fn advance_sequence(
        &self,
        org_id: &str,
        secret: &SecretItem,
        lifetime: &str,
        now: i64,
    ) -> Result<TransactWriteItem, ApiError> {
        let (pk, sk) = sequence_key(org_id, &secret.owner, &secret.name, lifetime);
        let update = Update::builder()
            .table_name(&self.audit_table)
            .key(schema::PK, s(pk))
            .key(schema::SK, s(sk))
            .update_expression("SET #n = :v, #ttl = :ttl")
            .condition_expression("attribute_not_exists(#n) OR #n < :v")
            .expression_attribute_names("#n", SEQUENCE)
            .expression_attribute_names("#ttl", schema::TTL)
            .expression_attribute_values(":v", n(secret.version))
            .expression_attribute_values(":ttl", n(now + SEQUENCE_IDLE_SECS))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(ApiError::internal)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn delete_by_key(&self, org_id: &str, owner: &Owner, sk: &str) -> Result<TransactWriteItem, ApiError> {
        Delete::builder()
            .table_name(&self.secrets_table)
            .key(schema::PK, s(partition_key(org_id, owner)))
            .key(schema::SK, s(sk))
            .build()
            .map(|d| TransactWriteItem::builder().delete(d).build())
            .map_err(ApiError::internal)
    }

    /// Sends `tx` with the audit event and (when given) the salt check, and says what came of it.
    async fn transact(&self, mut tx: Tx, guard: WriteGuard<'_>) -> Result<Write, ApiError> {
        let audit_put = Put::builder()
            .table_name(&self.audit_table)
            .set_item(Some(guard.audit))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(ApiError::internal)?;
        tx.push(Part::Audit, TransactWriteItem::builder().put(audit_put).build());
        if let Some((org_id, salt)) = guard.salt {
            let check = ConditionCheck::builder()
                .table_name(&self.secrets_table)
                .key(schema::PK, s(salt_key(org_id)))
                .key(schema::SK, s("salt"))
                .condition_expression("salt = :salt")
                .expression_attribute_values(":salt", AttributeValue::B(Blob::new(salt.to_vec())))
                .build()
                .map_err(ApiError::internal)?;
            tx.push(Part::Salt, TransactWriteItem::builder().condition_check(check).build());
        }
        let owner = tx.owner.clone();
        match self.send(tx).await? {
            Sent::Done => Ok(Write::Applied),
            Sent::Conflict => Ok(Write::Contended),
            Sent::Failed(failed) => {
                let find = |part: Part| failed.iter().find(|(p, _)| *p == part).map(|(_, item)| item);
                if find(Part::Salt).is_some() {
                    Ok(Write::SaltChanged)
                } else if let Some(item) = find(Part::Current) {
                    let now = item.as_ref().map(|i| secret_from_item(&owner, i, true)).transpose()?;
                    Ok(Write::Moved(now.map(Box::new)))
                } else if let Some(item) = find(Part::Sequence) {
                    let at = item.as_ref().and_then(|i| get_n::<u64>(i, SEQUENCE).ok().flatten()).unwrap_or(0);
                    Ok(Write::SequenceAhead(at))
                } else if find(Part::Record).is_some() {
                    Ok(Write::SlotTaken)
                } else {
                    // An audit id taken twice, or a record that moved during an upgrade: send it again.
                    Ok(Write::Contended)
                }
            }
        }
    }

    /// Sends a transaction. `Failed` lists the parts whose condition failed, with the item each found
    /// (when DynamoDB returned it).
    async fn send(&self, tx: Tx) -> Result<Sent, ApiError> {
        let parts: Vec<Part> = tx.items.iter().map(|(p, _)| *p).collect();
        let request =
            self.client.transact_write_items().set_transact_items(Some(tx.items.into_iter().map(|(_, i)| i).collect()));
        match request.send().await {
            Ok(_) => Ok(Sent::Done),
            Err(SdkError::ServiceError(ctx)) => match ctx.err() {
                TransactWriteItemsError::TransactionCanceledException(tc) => {
                    let reasons = tc.cancellation_reasons();
                    let failed: Vec<(Part, Option<Item>)> = reasons
                        .iter()
                        .zip(&parts)
                        .filter(|(r, _)| r.code() == Some("ConditionalCheckFailed"))
                        .map(|(r, p)| (*p, r.item().cloned()))
                        .collect();
                    if !failed.is_empty() {
                        Ok(Sent::Failed(failed))
                    } else if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                        Ok(Sent::Conflict)
                    } else {
                        Err(ApiError::unavailable(SdkError::ServiceError(ctx)))
                    }
                }
                TransactWriteItemsError::TransactionInProgressException(_) => Ok(Sent::Conflict),
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

/// What every secret write carries besides its items: its audit event (written in the same
/// transaction, so neither exists without the other), the time its conditions are judged at, and the
/// organization salt the value was sealed under (checked in the same transaction, so no value is ever
/// stored under a shredded salt).
#[derive(Debug)]
pub struct WriteGuard<'a> {
    pub audit: Item,
    pub now: i64,
    pub salt: Option<(&'a str, &'a [u8; SALT_LEN])>,
}

/// How [`Store::replace_secret`] writes the new version.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replace {
    /// Written under an exact precondition: the version becomes the fence.
    pub fence: bool,
    /// Write the new version's own record too (a writer that raced, which cannot know what will
    /// replace it).
    pub recorded: bool,
    /// Move the sequence to the new version (which did not come from it).
    pub sequence: bool,
}

/// The role of one item of a write transaction, to read its cancellation reasons by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Current,
    Record,
    Sequence,
    Audit,
    Salt,
    Other,
}

/// A write transaction being built: its items in order, each with its role.
struct Tx {
    owner: Owner,
    items: Vec<(Part, TransactWriteItem)>,
}

impl Tx {
    fn new(owner: &Owner) -> Self {
        Self { owner: owner.clone(), items: Vec::new() }
    }

    fn push(&mut self, part: Part, item: TransactWriteItem) {
        self.items.push((part, item));
    }
}

/// What sending a transaction came to.
enum Sent {
    Done,
    /// Another transaction held one of the items.
    Conflict,
    /// These parts' conditions failed, each with the item it found.
    Failed(Vec<(Part, Option<Item>)>),
}

/// A condition expression being built, with its names and values.
#[derive(Debug, Default)]
struct Cond {
    parts: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Cond {
    fn push(&mut self, expression: &str, key: &str, value: AttributeValue) {
        self.raw(expression);
        self.value(key, value);
    }

    fn raw(&mut self, expression: &str) {
        self.parts.push(format!("({expression})"));
    }

    fn value(&mut self, key: &str, value: AttributeValue) {
        self.values.insert(key.to_owned(), value);
    }

    /// The item belongs to `item`'s lifetime (for an item written before lifetimes: the same creation).
    fn same_lifetime(&mut self, item: &SecretItem) {
        match &item.lifetime {
            Some(lifetime) => self.push("lifetime = :lifetime", ":lifetime", s(lifetime)),
            None => {
                self.push("attribute_not_exists(lifetime) AND createdAt = :created", ":created", s(&item.created_at))
            }
        }
    }

    fn live(&mut self, now: i64) {
        self.names.insert("#ttl".into(), schema::TTL.into());
        self.push("attribute_not_exists(#ttl) OR #ttl > :now", ":now", n(now));
    }

    fn expired(&mut self, now: i64) {
        self.names.insert("#ttl".into(), schema::TTL.into());
        self.push("#ttl <= :now", ":now", n(now));
    }

    fn expression(&self) -> String {
        self.parts.join(" AND ")
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }

    fn apply_put(
        self,
        b: aws_sdk_dynamodb::types::builders::PutBuilder,
    ) -> aws_sdk_dynamodb::types::builders::PutBuilder {
        b.condition_expression(self.expression())
            .set_expression_attribute_names(self.names())
            .set_expression_attribute_values(self.values())
    }

    fn apply_update(
        self,
        b: aws_sdk_dynamodb::types::builders::UpdateBuilder,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        let b = b.set_expression_attribute_names(self.names()).set_expression_attribute_values(self.values());
        if self.parts.is_empty() { b } else { b.condition_expression(self.expression()) }
    }

    fn apply_delete(
        self,
        b: aws_sdk_dynamodb::types::builders::DeleteBuilder,
    ) -> aws_sdk_dynamodb::types::builders::DeleteBuilder {
        b.condition_expression(self.expression())
            .set_expression_attribute_names(self.names())
            .set_expression_attribute_values(self.values())
    }

    fn apply_check(
        self,
        b: aws_sdk_dynamodb::types::builders::ConditionCheckBuilder,
    ) -> aws_sdk_dynamodb::types::builders::ConditionCheckBuilder {
        b.condition_expression(self.expression())
            .set_expression_attribute_names(self.names())
            .set_expression_attribute_values(self.values())
    }
}

/// A put of the current item that returns the item found when its condition fails.
fn all_old_put(put: aws_sdk_dynamodb::types::builders::PutBuilder) -> Result<Put, ApiError> {
    put.return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(ApiError::internal)
}

/// Versions of a secret written before record slots, retained at a key other than their slot's
/// (`<name>#v<n>` with n above [`RETAINED_VERSIONS`]), when `version` was current.
fn legacy_retained(version: u64) -> impl Iterator<Item = u64> {
    (version.saturating_sub(RETAINED_VERSIONS - 1).max(1)..version).filter(|v| *v > RETAINED_VERSIONS)
}

/// The full item of `secret`: its current item (`record = None`), or the record of its version
/// (`Some(version)`), kept in that version's record slot.
fn secret_item(org_id: &str, secret: &SecretItem, record: Option<u64>) -> Result<Item, ApiError> {
    let archived = record;
    let env = secret.envelope.as_ref().ok_or_else(|| ApiError::internal("a write without an envelope"))?;
    let sk = match record {
        None => secret.name.clone(),
        Some(v) => record_key(&secret.name, v),
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
    if let Some(lifetime) = &secret.lifetime {
        item.insert("lifetime".into(), s(lifetime));
    }
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
        lifetime: item.get("lifetime").and_then(|v| v.as_s().ok()).cloned(),
        fence: get_n(item, "fence")?,
        recorded: item.get("recorded").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
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
