//! Reads of secrets: one, a version record, a batch, and the pages of a listing. GetItem, BatchGetItem
//! or Query, never a Scan.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::KeysAndAttributes;

use super::codec::{Item, SecretItem, get_n, get_s, malformed, n, s, secret_from_item};
use super::keys::{escape, org_sort_key, partition_key, schema};
use super::{BATCH_ATTEMPTS, Store, unavailable};
use crate::error::ApiError;
use crate::model::Owner;

impl Store {
    /// Reads one secret (strongly consistent), expired or not.
    pub async fn get_secret(&self, org_id: &str, owner: &Owner, name: &str) -> Result<Option<SecretItem>, ApiError> {
        let item = self.get_item(&partition_key(org_id, owner), name).await?;
        item.map(|item| secret_from_item(owner, &item, true)).transpose()
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
        secret.expires_at = get_n(&item, schema::EXPIRED_AT)?;
        Ok(Some(secret))
    }

    /// Every version record stored for `name` (at most [`crate::rules::RETAINED_VERSIONS`] slots, plus
    /// any legacy `<name>#v<n>` records), metadata only, in one strongly consistent Query. Which of them
    /// belong to the live secret is the caller's to decide.
    pub async fn version_records(&self, org_id: &str, owner: &Owner, name: &str) -> Result<Vec<SecretItem>, ApiError> {
        let mut records = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.secrets_table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", schema::PK)
                .expression_attribute_names("#sk", schema::SK)
                .expression_attribute_values(":pk", s(partition_key(org_id, owner)))
                // Names never hold `#`, so this prefix matches this secret's records alone.
                .expression_attribute_values(":prefix", s(format!("{name}#v")))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.items.unwrap_or_default() {
                let mut secret = secret_from_item(owner, &item, false)?;
                secret.name = name.to_owned();
                secret.expires_at = get_n(&item, schema::EXPIRED_AT)?;
                records.push(secret);
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(records),
            }
        }
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
                let owner = Owner::App { client_id: get_s(item, schema::CLIENT_ID)?.to_owned() };
                secret_from_item(&owner, item, false)
            })
            .collect::<Result<_, _>>()?;
        Ok((secrets, more))
    }

    /// Queries one partition of the table or of `index` (with `orgSk` starting with `sk_prefix`) for up
    /// to `limit` live (unexpired) items, metadata only, following DynamoDB's pages until the limit is
    /// met. Returns whether more may follow.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn query_live(
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
                .projection_expression(
                    "sk, clientId, #scope, #ttl, createdAt, updatedAt, version, #access, #upstream, perMinute, perDay",
                )
                .expression_attribute_names("#access", schema::ACCESS)
                .expression_attribute_names("#upstream", schema::UPSTREAM)
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
}
