//! Write transactions: their parts, their conditions, and what a cancelled one came to.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::builders::{ConditionCheckBuilder, DeleteBuilder, PutBuilder, UpdateBuilder};
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};

use super::codec::{Item, SecretItem, get_n, item_key, n, s, secret_from_item};
use super::keys::{partition_key, salt_key, schema};
use super::{Store, Write, WriteGuard, unavailable};
use crate::error::ApiError;
use crate::model::Owner;
use schema::SEQUENCE;

/// The role of one item of a write transaction, to read its cancellation reasons by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Current,
    Record,
    Sequence,
    Audit,
    Salt,
    Other,
}

/// A write transaction being built: its items in order, each with its role.
pub(super) struct Tx {
    owner: Owner,
    items: Vec<(Part, TransactWriteItem)>,
}

impl Tx {
    pub(super) fn new(owner: &Owner) -> Self {
        Self { owner: owner.clone(), items: Vec::new() }
    }

    pub(super) fn push(&mut self, part: Part, item: TransactWriteItem) {
        self.items.push((part, item));
    }
}

/// What sending a transaction came to.
pub(super) enum Sent {
    Done,
    /// Another transaction held one of the items.
    Conflict,
    /// These parts' conditions failed, each with the item it found.
    Failed(Vec<(Part, Option<Item>)>),
}

/// `apply_*` methods that set a builder's condition expression, names and values from a [`Cond`].
macro_rules! conditional {
    ($($method:ident: $builder:ty),*) => {$(
        pub(super) fn $method(self, b: $builder) -> $builder {
            b.condition_expression(self.expression())
                .set_expression_attribute_names(self.names())
                .set_expression_attribute_values(self.values())
        }
    )*};
}

/// Transaction items acting on a secret's current item under a [`Cond`], returning the item found
/// when the condition fails.
macro_rules! on_current {
    ($($method:ident: $kind:ident, $apply:ident, $set:ident);*) => {$(
        pub(super) fn $method(self, table: &str, org_id: &str, secret: &SecretItem) -> Result<TransactWriteItem, ApiError> {
            let b = $kind::builder()
                .table_name(table)
                .set_key(Some(item_key(partition_key(org_id, &secret.owner), &secret.name)))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            Ok(TransactWriteItem::builder().$set(self.$apply(b).build().map_err(ApiError::internal)?).build())
        }
    )*};
}

/// A condition expression being built, with its names and values.
#[derive(Debug, Default)]
pub(super) struct Cond {
    parts: Vec<String>,
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl Cond {
    pub(super) fn push(&mut self, expression: &str, key: &str, value: AttributeValue) {
        self.raw(expression);
        self.value(key, value);
    }

    pub(super) fn raw(&mut self, expression: &str) {
        self.parts.push(format!("({expression})"));
    }

    pub(super) fn value(&mut self, key: &str, value: AttributeValue) {
        self.values.insert(key.to_owned(), value);
    }

    /// The item belongs to `item`'s lifetime (for an item written before lifetimes: the same creation).
    pub(super) fn same_lifetime(&mut self, item: &SecretItem) {
        match &item.lifetime {
            Some(lifetime) => self.push("lifetime = :lifetime", ":lifetime", s(lifetime)),
            None => {
                self.push("attribute_not_exists(lifetime) AND createdAt = :created", ":created", s(&item.created_at))
            }
        }
    }

    pub(super) fn live(&mut self, now: i64) {
        self.names.insert("#ttl".into(), schema::TTL.into());
        self.push("attribute_not_exists(#ttl) OR #ttl > :now", ":now", n(now));
    }

    pub(super) fn expired(&mut self, now: i64) {
        self.names.insert("#ttl".into(), schema::TTL.into());
        self.push("#ttl <= :now", ":now", n(now));
    }

    pub(super) fn expression(&self) -> String {
        self.parts.join(" AND ")
    }

    pub(super) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    pub(super) fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }

    pub(super) fn apply_update(self, b: UpdateBuilder) -> UpdateBuilder {
        let b = b.set_expression_attribute_names(self.names()).set_expression_attribute_values(self.values());
        if self.parts.is_empty() { b } else { b.condition_expression(self.expression()) }
    }

    conditional!(apply_put: PutBuilder, apply_delete: DeleteBuilder, apply_check: ConditionCheckBuilder);
    on_current!(
        check_current: ConditionCheck, apply_check, condition_check;
        delete_current: Delete, apply_delete, delete
    );
}

/// A put of the current item that returns the item found when its condition fails.
pub(super) fn all_old_put(put: PutBuilder) -> Result<Put, ApiError> {
    put.return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(ApiError::internal)
}

impl Store {
    /// Sends `tx` with the audit event and (when given) the salt check, and says what came of it.
    pub(super) async fn transact(&self, mut tx: Tx, guard: WriteGuard<'_>) -> Result<Write, ApiError> {
        let audit_put = Put::builder()
            .table_name(&self.audit_table)
            .set_item(Some(guard.audit))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(ApiError::internal)?;
        tx.push(Part::Audit, TransactWriteItem::builder().put(audit_put).build());
        if let Some(salt) = guard.salt {
            let org_id = guard.org_id;
            let check = ConditionCheck::builder()
                .table_name(&self.keys_table)
                .set_key(Some(item_key(salt_key(org_id), "salt")))
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
    pub(super) async fn send(&self, tx: Tx) -> Result<Sent, ApiError> {
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
}
