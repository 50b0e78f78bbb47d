//! Organizations: their salts (in the keys table, a table of their own, so that no backup of the secrets
//! table can bring back what a shred destroyed), the registry of organizations (the `#orgs` partition of
//! the `by-org` index, from one entry per organization in the secrets table), the walk over an
//! organization's items that the operator jobs make, and the rewrap job's checkpoint.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use std::collections::HashMap;

use super::codec::{Item, get_b, get_s, item_key, malformed, s};
use super::keys::{JOB_PK, escape, parse_org_sort_key, partition_key, salt_key, schema};
use super::{Store, applied, unavailable};
use crate::crypto::{Envelope, SALT_LEN};
use crate::error::ApiError;
use crate::model::Owner;

/// The sort keys of an organization's salt (in the keys table; in the secrets table before salts moved
/// there) and of its registry entry (in the secrets table).
const SALT_SK: &str = "salt";
const REGISTRY_SK: &str = "registry";

/// An organization's salt, and whether it still sits at its old place in the secrets table.
#[derive(Debug, Clone, Copy)]
pub struct Salt {
    pub bytes: [u8; SALT_LEN],
    pub in_secrets_table: bool,
}

fn salt_bytes(item: &Item) -> Result<[u8; SALT_LEN], ApiError> {
    get_b(item, schema::SALT)?.try_into().map_err(|_| malformed("salt"))
}

fn salt_item(org_id: &str, salt: &[u8; SALT_LEN], now: &str) -> Item {
    let mut item = item_key(salt_key(org_id), SALT_SK);
    item.insert(schema::SALT.into(), AttributeValue::B(Blob::new(salt.to_vec())));
    item.insert(schema::CREATED_AT.into(), s(now));
    item
}

/// A transaction whose condition failed came to `false`; any other failure is the call's error.
fn cancelled_means_false<T>(
    res: Result<
        T,
        aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
    >,
) -> Result<bool, ApiError> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match res {
        Ok(_) => Ok(true),
        Err(aws_sdk_dynamodb::error::SdkError::ServiceError(ctx))
            if matches!(ctx.err(), TransactWriteItemsError::TransactionCanceledException(tc)
                if tc.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))) =>
        {
            Ok(false)
        }
        Err(e) => Err(unavailable(e)),
    }
}

impl Store {
    /// A Query of one partition of the `by-org` index.
    fn org_index(
        &self,
        partition: impl Into<String>,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.secrets_table)
            .index_name(schema::ORG_INDEX)
            .key_condition_expression("orgPk = :pk")
            .expression_attribute_values(":pk", s(partition))
    }

    /// Reads an organization's salt: from the keys table, or (an organization that has not written since
    /// salts moved there) from its old place in the secrets table, which [`Store::move_salt`] empties.
    pub async fn get_salt(&self, org_id: &str) -> Result<Option<Salt>, ApiError> {
        let key = item_key(salt_key(org_id), SALT_SK);
        let out = self
            .client
            .get_item()
            .table_name(&self.keys_table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        if let Some(item) = out.item {
            return Ok(Some(Salt { bytes: salt_bytes(&item)?, in_secrets_table: false }));
        }
        let old = self.get_item(&salt_key(org_id), SALT_SK).await?;
        old.filter(|i| i.contains_key(schema::SALT))
            .map(|i| Ok(Salt { bytes: salt_bytes(&i)?, in_secrets_table: true }))
            .transpose()
    }

    /// Stores an organization's salt unless one exists, with its entry in the registry of organizations.
    /// Returns whether this call wrote it.
    pub async fn put_salt_if_absent(&self, org_id: &str, salt: &[u8; SALT_LEN], now: &str) -> Result<bool, ApiError> {
        let put = Put::builder()
            .table_name(&self.keys_table)
            .set_item(Some(salt_item(org_id, salt, now)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(ApiError::internal)?;
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(self.registry_entry(org_id, now)?)
            .send()
            .await;
        cancelled_means_false(res)
    }

    /// Moves a salt from its old place in the secrets table to the keys table (and the organization into
    /// the registry), in one transaction: afterwards no item of the secrets table, and so none of its
    /// backups, holds it. A writer does this before its first write; readers read the old place.
    pub async fn move_salt(&self, org_id: &str, salt: &[u8; SALT_LEN], now: &str) -> Result<(), ApiError> {
        let put = Put::builder()
            .table_name(&self.keys_table)
            .set_item(Some(salt_item(org_id, salt, now)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(ApiError::internal)?;
        let remove = Delete::builder()
            .table_name(&self.secrets_table)
            .set_key(Some(item_key(salt_key(org_id), SALT_SK)))
            .condition_expression("salt = :salt")
            .expression_attribute_values(":salt", AttributeValue::B(Blob::new(salt.to_vec())))
            .build()
            .map_err(ApiError::internal)?;
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().delete(remove).build())
            .transact_items(self.registry_entry(org_id, now)?)
            .send()
            .await;
        // Another writer moved it first (or the organization was shredded meanwhile): either way the
        // next read sees where it is now.
        cancelled_means_false(res).map(|_| ())
    }

    /// The registry entry of an organization in the secrets table (the `#orgs` partition of `by-org`).
    fn registry_entry(&self, org_id: &str, now: &str) -> Result<TransactWriteItem, ApiError> {
        let mut item = item_key(salt_key(org_id), REGISTRY_SK);
        item.insert(schema::CREATED_AT.into(), s(now));
        item.insert(schema::ORG_PK.into(), s(schema::ORGS_PARTITION));
        item.insert(schema::ORG_SK.into(), s(org_id));
        let put =
            Put::builder().table_name(&self.secrets_table).set_item(Some(item)).build().map_err(ApiError::internal)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Destroys an organization's salt (in the keys table, and at its old place), which makes every secret
    /// sealed under it unreadable for good, and takes the organization out of the registry. Returns
    /// whether there was a salt.
    pub async fn delete_salt(&self, org_id: &str) -> Result<bool, ApiError> {
        let mut destroyed = false;
        for (table, sk) in
            [(&self.keys_table, SALT_SK), (&self.secrets_table, SALT_SK), (&self.secrets_table, REGISTRY_SK)]
        {
            let out = self
                .client
                .delete_item()
                .table_name(table.as_str())
                .set_key(Some(item_key(salt_key(org_id), sk)))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
                .send()
                .await
                .map_err(unavailable)?;
            destroyed |= out.attributes.is_some_and(|a| a.contains_key(schema::SALT));
        }
        Ok(destroyed)
    }

    /// One page of the organization registry, in id order after `after`. Returns the ids and the last
    /// one read when more may follow.
    pub async fn list_orgs(&self, after: Option<&str>, limit: i32) -> Result<(Vec<String>, Option<String>), ApiError> {
        let start = after.map(|org| {
            HashMap::from([
                (schema::ORG_PK.into(), s(schema::ORGS_PARTITION)),
                (schema::ORG_SK.into(), s(org)),
                (schema::PK.into(), s(salt_key(org))),
                (schema::SK.into(), s(REGISTRY_SK)),
            ])
        });
        let out = self
            .org_index(schema::ORGS_PARTITION)
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
            .org_index(escape(org_id))
            .projection_expression("pk, sk, orgPk, orgSk, keyId")
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let mut page = Vec::with_capacity(out.items().len());
        for item in out.items() {
            let (owner, name) = parse_org_sort_key(get_s(item, schema::ORG_SK)?).ok_or_else(|| malformed("orgSk"))?;
            page.push((owner, name, get_s(item, schema::KEY_ID)?.to_owned()));
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
            .set_key(Some(item_key(partition_key(org_id, owner), name)))
            .update_expression("SET keyId = :newId, wrappedKey = :newKey")
            .condition_expression("keyId = :oldId AND wrappedKey = :oldKey")
            .expression_attribute_values(":newId", s(&new.key_id))
            .expression_attribute_values(":newKey", AttributeValue::B(Blob::new(new.wrapped_key.clone())))
            .expression_attribute_values(":oldId", s(&old.key_id))
            .expression_attribute_values(":oldKey", AttributeValue::B(Blob::new(old.wrapped_key.clone())))
            .send()
            .await;
        applied(res)
    }

    /// Deletes one secret item outright (shredding), whatever it holds.
    pub async fn delete_secret_item(&self, org_id: &str, owner: &Owner, name: &str) -> Result<(), ApiError> {
        self.client
            .delete_item()
            .table_name(&self.secrets_table)
            .set_key(Some(item_key(partition_key(org_id, owner), name)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The rewrap job's checkpoint: the active key id it was rotating to and the last organization done.
    pub async fn get_checkpoint(&self) -> Result<Option<(String, String)>, ApiError> {
        let item = self.get_item(JOB_PK, "checkpoint").await?;
        item.map(|i| Ok((get_s(&i, schema::ACTIVE_KEY_ID)?.to_owned(), get_s(&i, schema::LAST_ORG)?.to_owned())))
            .transpose()
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
            .set_key(Some(item_key(JOB_PK, "checkpoint")))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
