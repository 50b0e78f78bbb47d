//! The audit table: events written on their own or together, and one day's page of a query.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::codec::{Item, get_s, s};
use super::keys::{audit_partition_key, schema};
use super::{Store, unavailable};
use crate::error::ApiError;
use crate::model::Owner;

/// One page of one day of an audit query: an organization's events of `day`, with ids (sort keys)
/// between `lowest` and `highest` and before `before` when given, matching `filter`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct AuditDay<'a> {
    pub org_id: &'a str,
    pub day: time::Date,
    pub lowest: &'a str,
    pub highest: &'a str,
    pub before: Option<&'a str>,
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

    /// One page of an organization's audit events of one UTC day, newest first, with
    /// ids (sort keys) between `lowest` and `highest` and before `before` when given, matching
    /// `filter`. A Query on that day's partition only: never another organization's, never a Scan.
    /// Returns the events and the id to continue before when more may follow.
    #[allow(clippy::too_many_arguments)]
    pub async fn query_audit_day(&self, q: AuditDay<'_>) -> Result<(Vec<Item>, Option<String>), ApiError> {
        let AuditDay { org_id, day, lowest, highest, before, filter, limit } = q;
        let pk = audit_partition_key(org_id, day);
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
            Some(key) => Some(get_s(&key, schema::SK)?.to_owned()),
            None => None,
        };
        Ok((out.items.unwrap_or_default(), next))
    }
}
