//! DynamoDB: item layout, key encoding and every read and write. Reads are GetItem or Query, never Scan.
//! Rooms: [`keys`] (every key and attribute name), [`codec`] (items to and from values), [`reads`],
//! [`writes`] (with [`tx`], the transactions they are built from), [`audit`], [`limits`] (per-secret use
//! counters) and [`orgs`] (salts, the organization registry, the operator jobs' walks and checkpoint).
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

mod audit;
mod codec;
mod keys;
mod limits;
mod orgs;
mod reads;
mod tx;
mod writes;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::crypto::SALT_LEN;
use crate::error::ApiError;
use codec::item_key;

pub use audit::{AuditFilter, AuditPart, AuditSource};
pub use limits::Count;

pub use codec::{Item, SecretItem, ToItem};
pub use keys::{
    AUDIT_SHARDS, audit_partition_key, audit_secret_key, audit_shard, new_lifetime, partition_key, record_key, schema,
    unsharded_audit_partition_key,
};
pub(crate) use keys::{base_name, day_key, event_id, version_key};

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

/// The three tables' names.
#[derive(Debug, Clone, Copy)]
pub struct Tables<'a> {
    pub secrets: &'a str,
    pub audit: &'a str,
    pub keys: &'a str,
}

/// The DynamoDB store of secrets and audit events.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    secrets_table: String,
    audit_table: String,
    /// The organizations' salts, apart from the secrets (and from the secrets table's backups).
    keys_table: String,
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

/// A conditional single-item write: `true` when it was applied, `false` when its condition did not
/// hold.
fn applied<T, E>(res: Result<T, SdkError<E>>) -> Result<bool, ApiError>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    match res {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().and_then(ProvideErrorMetadata::code) == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(unavailable(e)),
    }
}

impl Store {
    pub fn new(client: Client, tables: Tables<'_>) -> Self {
        Self {
            client,
            secrets_table: tables.secrets.into(),
            audit_table: tables.audit.into(),
            keys_table: tables.keys.into(),
        }
    }

    /// Reads one item of the secrets table (strongly consistent), if it is there.
    async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, ApiError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.secrets_table)
            .set_key(Some(item_key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }
}

/// What every secret write carries besides its items: its organization, its audit event (written in the same
/// transaction, so neither exists without the other), the time its conditions are judged at, and the
/// organization salt the value was sealed under (checked in the same transaction, so no value is ever
/// stored under a shredded salt).
#[derive(Debug)]
pub struct WriteGuard<'a> {
    pub org_id: &'a str,
    pub audit: Item,
    pub now: i64,
    pub salt: Option<&'a [u8; SALT_LEN]>,
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

/// Attempts at a batch read whose keys DynamoDB leaves unprocessed (throttling).
const BATCH_ATTEMPTS: u32 = 5;
