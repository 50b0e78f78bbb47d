//! Organizations: their salts (the registry of organizations is the `#orgs` partition of the `by-org`
//! index, from the salt items), the walk over an organization's items that the operator jobs make, and
//! the rewrap job's checkpoint.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

use super::codec::{Item, get_b, get_s, item_key, malformed, s};
use super::keys::{JOB_PK, escape, parse_org_sort_key, partition_key, salt_key, schema};
use super::{Store, applied, unavailable};
use crate::crypto::{Envelope, SALT_LEN};
use crate::error::ApiError;
use crate::model::Owner;

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

    /// Reads an organization's salt.
    pub async fn get_salt(&self, org_id: &str) -> Result<Option<[u8; SALT_LEN]>, ApiError> {
        let Some(item) = self.get_item(&salt_key(org_id), "salt").await? else { return Ok(None) };
        let salt = get_b(&item, schema::SALT)?;
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
        applied(res)
    }

    /// Deletes an organization's salt, which makes every secret sealed under it unreadable for good.
    pub async fn delete_salt(&self, org_id: &str) -> Result<bool, ApiError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.secrets_table)
            .set_key(Some(item_key(salt_key(org_id), "salt")))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.attributes.is_some())
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
