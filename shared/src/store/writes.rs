//! Writes of secrets: create, replace, the racing writers' commit and record, delete, and the upgrade
//! of items written by earlier builds. Each is one transaction with its audit event.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::codec::{SecretItem, get_n, item_key, malformed, n, s, secret_from_item, secret_item};
use super::keys::{
    SEQUENCE_IDLE_SECS, legacy_retained, new_lifetime, partition_key, record_key, schema, sequence_key, version_key,
};
use super::tx::{Cond, Part, Sent, Tx, all_old_put};
use super::{Replace, Store, Write, WriteGuard, unavailable};
use crate::error::ApiError;
use crate::model::Owner;
use crate::rules::RETAINED_VERSIONS;
use schema::SEQUENCE;

impl Store {
    /// Creates a secret (a new lifetime at version 1) with its audit event, in one transaction: the
    /// current item, on condition that there is none or that `replacing` (an expired secret) is still
    /// what is there; the deletion of every record slot (the expired lifetime's, or records left behind
    /// when DynamoDB's TTL deleted a secret); the audit event; the salt check.
    pub async fn create_secret(
        &self,
        secret: &SecretItem,
        replacing: Option<&SecretItem>,
        guard: WriteGuard<'_>,
    ) -> Result<Write, ApiError> {
        let org_id = guard.org_id;
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
        secret: &SecretItem,
        expected: &SecretItem,
        how: Replace,
        guard: WriteGuard<'_>,
    ) -> Result<Write, ApiError> {
        let org_id = guard.org_id;
        let lifetime = expected.lifetime_id()?;
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
            .set_key(Some(item_key(pk, sk)))
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
    pub async fn commit_secret(&self, secret: &SecretItem, guard: WriteGuard<'_>) -> Result<Write, ApiError> {
        let org_id = guard.org_id;
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
        secret: &SecretItem,
        retained: bool,
        guard: WriteGuard<'_>,
    ) -> Result<Write, ApiError> {
        let mut c = Cond::default();
        c.same_lifetime(secret);
        c.push("version > :v AND (attribute_not_exists(fence) OR fence < :v)", ":v", n(secret.version));
        let mut tx = Tx::new(&secret.owner);
        tx.push(Part::Current, c.check_current(&self.secrets_table, guard.org_id, secret)?);
        if retained {
            // The slot may hold this version's predecessor there, or one of another lifetime; never a
            // newer version of this one.
            let mut slot = Cond::default();
            slot.raw("attribute_not_exists(pk) OR attribute_not_exists(lifetime) OR lifetime <> :g OR version < :v");
            slot.value(":g", s(secret.lifetime_id()?));
            slot.value(":v", n(secret.version));
            tx.push(Part::Record, self.put_record(guard.org_id, secret, Some(slot))?);
        }
        self.transact(tx, guard).await
    }

    /// Deletes the live secret `current` (still at its version, in its lifetime), every record of its
    /// versions, and writes its audit event, in one transaction.
    pub async fn delete_secret(&self, current: &SecretItem, guard: WriteGuard<'_>) -> Result<Write, ApiError> {
        let (org_id, now) = (guard.org_id, guard.now);
        let mut c = Cond::default();
        c.same_lifetime(current);
        c.push("version = :v", ":v", n(current.version));
        c.live(now);
        let mut tx = Tx::new(&current.owner);
        tx.push(Part::Current, c.delete_current(&self.secrets_table, org_id, current)?);
        let mut records: Vec<String> = (1..=RETAINED_VERSIONS).map(|v| version_key(&current.name, v)).collect();
        if current.lifetime.is_none() {
            records.extend(legacy_retained(current.version).map(|v| version_key(&current.name, v)));
        }
        records.sort();
        records.dedup();
        for sk in &records {
            tx.push(Part::Other, self.delete_by_key(org_id, &current.owner, sk)?);
        }
        self.transact(tx, guard).await
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
            .set_key(Some(item_key(&pk, &current.name)))
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
            record.expires_at = get_n(&old, schema::EXPIRED_AT)?;
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
                    Delete::builder().table_name(&self.secrets_table).set_key(Some(item_key(&pk, &old_key))),
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
}

impl Store {
    /// The current item's write: an `Update` that sets every attribute of `secret` (and removes the
    /// expiry when it has none), so the fence, which only exact writes set, is kept.
    pub(super) fn update_current(
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
            item.insert(schema::FENCE.into(), n(secret.version));
        }
        item.insert(schema::RECORDED.into(), AttributeValue::Bool(secret.recorded));
        let mut sets = Vec::new();
        for (i, (attr, value)) in item.into_iter().enumerate() {
            sets.push(format!("#u{i} = :u{i}"));
            cond.names.insert(format!("#u{i}"), attr);
            cond.values.insert(format!(":u{i}"), value);
        }
        // What the new version does not carry goes: its expiry, access mode, upstream and limits (a stale
        // upstream left beside a new value would make its envelope fail to open).
        let mut removes = Vec::new();
        for (attr, absent) in [
            (schema::TTL, secret.expires_at.is_none()),
            (schema::ACCESS, secret.access == crate::model::Access::Readable),
            (schema::UPSTREAM, secret.upstream.is_none()),
            (schema::PER_MINUTE, secret.limits.per_minute.is_none()),
            (schema::PER_DAY, secret.limits.per_day.is_none()),
        ] {
            if absent {
                let alias = format!("#r{}", removes.len());
                cond.names.insert(alias.clone(), attr.into());
                removes.push(alias);
            }
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let update = Update::builder()
            .table_name(&self.secrets_table)
            .set_key(Some(item_key(partition_key(org_id, &secret.owner), &secret.name)))
            .update_expression(expression)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        Ok(TransactWriteItem::builder().update(cond.apply_update(update).build().map_err(ApiError::internal)?).build())
    }

    /// The put of `secret`'s version record, unconditional unless `cond` is given.
    pub(super) fn put_record(
        &self,
        org_id: &str,
        secret: &SecretItem,
        cond: Option<Cond>,
    ) -> Result<TransactWriteItem, ApiError> {
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
    pub(super) fn advance_sequence(
        &self,
        org_id: &str,
        secret: &SecretItem,
        lifetime: &str,
        now: i64,
    ) -> Result<TransactWriteItem, ApiError> {
        let (pk, sk) = sequence_key(org_id, &secret.owner, &secret.name, lifetime);
        let update = Update::builder()
            .table_name(&self.audit_table)
            .set_key(Some(item_key(pk, sk)))
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

    pub(super) fn delete_by_key(&self, org_id: &str, owner: &Owner, sk: &str) -> Result<TransactWriteItem, ApiError> {
        Delete::builder()
            .table_name(&self.secrets_table)
            .set_key(Some(item_key(partition_key(org_id, owner), sk)))
            .build()
            .map(|d| TransactWriteItem::builder().delete(d).build())
            .map_err(ApiError::internal)
    }
}
