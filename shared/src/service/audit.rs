//! Audit queries: newest first, one Query per UTC day of the range, on the caller's organization only.

use time::OffsetDateTime;

use super::Vault;
use crate::error::ApiError;
use crate::model::Principal;
use crate::policy;
use crate::store::{AuditDay, AuditFilter, Item};

/// Most DynamoDB queries one page of an audit query makes (one per day of the range at least), so a
/// sparse range cannot hold a request for long: past it, the page ends early with a `nextToken`.
const MAX_AUDIT_QUERIES: usize = 100;

/// An audit query: a time range (inclusive), filters and paging.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub filter: AuditFilter,
    pub limit: usize,
    pub cursor: Option<AuditCursor>,
}

/// Where an audit query resumes: a UTC day and, inside it, the id of the last event returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    pub day: time::Date,
    pub before: Option<String>,
}

/// One page of audit events (stored items), newest first.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<Item>,
    pub next: Option<AuditCursor>,
}

impl Vault {
    /// Reads an organization's audit events, newest first: a Query per UTC day of the range, on that
    /// organization's partitions only. Admins see every event; anyone else only their own.
    pub async fn query_audit(&self, p: &Principal, mut q: AuditQuery) -> Result<AuditPage, ApiError> {
        q.filter.actor = policy::audit_visibility(p);
        let millis = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000).clamp(0, 0xFFFF_FFFF_FFFF);
        let lowest = format!("{:012x}{}", millis(q.from), "0".repeat(20));
        let highest = format!("{:012x}{}", millis(q.to), "f".repeat(20));
        let first_day = q.from.date();
        let (mut day, mut before) = match q.cursor {
            Some(c) => (c.day, c.before),
            None => (q.to.date(), None),
        };
        let mut events = Vec::new();
        for _ in 0..MAX_AUDIT_QUERIES {
            if day < first_day {
                return Ok(AuditPage { events, next: None });
            }
            // A cursor may come from a page of another range: resume inside this one (DynamoDB refuses a
            // start key outside the key condition).
            match before.as_deref() {
                Some(b) if b > highest.as_str() => before = None,
                Some(b) if b <= lowest.as_str() => {
                    match day.previous_day() {
                        Some(previous) => (day, before) = (previous, None),
                        None => return Ok(AuditPage { events, next: None }),
                    }
                    continue;
                }
                _ => {}
            }
            let (page, more) = self
                .store
                .query_audit_day(AuditDay {
                    org_id: &p.org_id,
                    day,
                    lowest: &lowest,
                    highest: &highest,
                    before: before.as_deref(),
                    filter: &q.filter,
                    limit: q.limit - events.len(),
                })
                .await?;
            events.extend(page);
            match more {
                Some(last) => before = Some(last),
                None => match day.previous_day() {
                    Some(previous) => (day, before) = (previous, None),
                    None => return Ok(AuditPage { events, next: None }),
                },
            }
            if events.len() >= q.limit {
                break;
            }
        }
        let next = (day >= first_day).then_some(AuditCursor { day, before });
        Ok(AuditPage { events, next })
    }
}
