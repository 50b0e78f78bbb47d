//! The audit table: events written on their own or together, and one Query of an audit query.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::codec::{Item, get_s, s};
use super::keys::{audit_partition_key, audit_secret_key, schema, unsharded_audit_partition_key};
use super::{Store, unavailable};
use crate::error::ApiError;
use crate::model::Owner;

/// Where one stream of an audit query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSource<'a> {
    /// One write shard of an organization's events.
    Shard(u8),
    /// One write shard of an organization's events about one secret name, in the `by-secret` index.
    Secret { name: &'a str, shard: u8 },
    /// An organization's single partition of one UTC day, from before the shards.
    Unsharded(time::Date),
}

/// One Query of an audit query: an organization's events from `source` with ids (sort keys) between
/// `lowest` and `highest` (both inclusive), matching `filter`, newest first, evaluating at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct AuditPart<'a> {
    pub org_id: &'a str,
    pub source: AuditSource<'a>,
    pub lowest: &'a str,
    pub highest: &'a str,
    pub filter: &'a AuditFilter,
    pub limit: usize,
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

impl Store {
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

    /// One Query of an audit query (see [`AuditPart`]): on one partition of the caller's organization
    /// (a shard, a secret's shard of the `by-secret` index, or an unsharded day), never another organization's, never
    /// a Scan. Returns the matching events, newest first, and the id of the last event evaluated when
    /// more may follow (the next Query of this stream reads the ids below it).
    pub async fn query_audit_part(&self, q: AuditPart<'_>) -> Result<(Vec<Item>, Option<String>), ApiError> {
        let AuditPart { org_id, source, lowest, highest, filter, limit } = q;
        let (index, key_name, key) = match source {
            AuditSource::Shard(shard) => (None, schema::PK, audit_partition_key(org_id, shard)),
            AuditSource::Secret { name, shard } => {
                (Some(schema::SECRET_INDEX), schema::SECRET_KEY, audit_secret_key(org_id, name, shard))
            }
            AuditSource::Unsharded(day) => (None, schema::PK, unsharded_audit_partition_key(org_id, day)),
        };
        let mut conditions = Vec::new();
        let mut values =
            HashMap::from([(":pk".to_owned(), s(&key)), (":lo".to_owned(), s(lowest)), (":hi".to_owned(), s(highest))]);
        let mut names = HashMap::new();
        let mut add = |cond: &str, key: &str, value: &str| {
            conditions.push(cond.to_owned());
            values.insert(key.to_owned(), s(value));
        };
        // In the per-secret index the name is the key already.
        if let (Some(v), AuditSource::Shard(_) | AuditSource::Unsharded(_)) = (&filter.secret, source) {
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
        let out = self
            .client
            .query()
            .table_name(&self.audit_table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(format!("{key_name} = :pk AND sk BETWEEN :lo AND :hi"))
            .set_filter_expression((!conditions.is_empty()).then(|| conditions.join(" AND ")))
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(unavailable)?;
        let next = match out.last_evaluated_key {
            Some(key) => Some(get_s(&key, schema::SK)?.to_owned()),
            None => None,
        };
        Ok((out.items.unwrap_or_default(), next))
    }
}
