//! Per-secret use counters: one item per secret and UTC day in the audit table, counted with one
//! conditional `UpdateItem`, so N containers racing against a limit of L let exactly L uses through.

use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use time::OffsetDateTime;

use super::codec::{get_n, item_key, n};
use super::keys::{counter_key, schema};
use super::{Store, unavailable};
use crate::error::ApiError;
use crate::model::{Limits, Owner};

/// How long a day's counter outlives its day (DynamoDB's TTL deletes it after that).
const COUNTER_KEEP_SECS: i64 = 2 * 86_400;

/// What counting one use came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Counted: the use may go ahead.
    Counted,
    /// A limit is reached; the window that counts it ends in this many seconds.
    Limited { retry_after: u64 },
}

impl Store {
    /// Counts one use of a secret against `limits` at `now`: both the minute's and the day's count go
    /// up, on condition that neither has reached its limit.
    pub async fn count_use(
        &self,
        org_id: &str,
        owner: &Owner,
        name: &str,
        limits: Limits,
        now: OffsetDateTime,
    ) -> Result<Count, ApiError> {
        let (pk, sk) = counter_key(org_id, owner, name, now.date());
        let minute = format!("m{}", u32::from(now.hour()) * 60 + u32::from(now.minute()));
        let mut conditions = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.audit_table)
            .set_key(Some(item_key(pk, sk)))
            .update_expression("ADD d :one, #m :one SET #ttl = :ttl")
            .expression_attribute_names("#m", &minute)
            .expression_attribute_names("#ttl", schema::TTL)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(now.unix_timestamp() + COUNTER_KEEP_SECS))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(l) = limits.per_minute {
            conditions.push("(attribute_not_exists(#m) OR #m < :perMinute)");
            req = req.expression_attribute_values(":perMinute", n(l));
        }
        if let Some(l) = limits.per_day {
            conditions.push("(attribute_not_exists(d) OR d < :perDay)");
            req = req.expression_attribute_values(":perDay", n(l));
        }
        if !conditions.is_empty() {
            req = req.condition_expression(conditions.join(" AND "));
        }
        match req.send().await {
            Ok(_) => Ok(Count::Counted),
            Err(e) => {
                let Some(failed) = e.as_service_error().and_then(|s| match s {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                        Some(c)
                    }
                    _ => None,
                }) else {
                    return Err(unavailable(e));
                };
                let old = failed.item.clone().unwrap_or_default();
                let day_count: u64 = get_n(&old, "d")?.unwrap_or(0);
                let day_full = limits.per_day.is_some_and(|l| day_count >= u64::from(l));
                let elapsed_in_day =
                    i64::from(now.hour()) * 3600 + i64::from(now.minute()) * 60 + i64::from(now.second());
                let retry_after = if day_full { 86_400 - elapsed_in_day } else { 60 - i64::from(now.second()) };
                Ok(Count::Limited { retry_after: u64::try_from(retry_after.max(1)).unwrap_or(1) })
            }
        }
    }
}
