//! Audit queries: newest first, on the caller's organization only, merging the partitions that hold
//! the range's events.
//!
//! An organization's events are spread over [`AUDIT_SHARDS`] write shards (and, for days before the
//! shards, one unsharded partition a day); one secret's events over as many shards of the `by-secret`
//! index. A query reads each of those streams newest first, a Query at a time and concurrently, and
//! returns an event only once no stream can still hold a newer one: every stream's unread events are at
//! or below its *top* (the id below its last evaluated one), so everything read above the highest top
//! is final. Event ids are unique and time-ordered, so a page's cursor is the id of its last event: the
//! next page reads every stream below it, and resumes exactly.

use std::collections::VecDeque;

use futures_util::StreamExt;
use time::{Date, OffsetDateTime};

use super::Vault;
use crate::error::ApiError;
use crate::model::Principal;
use crate::policy;
use crate::store::{AUDIT_SHARDS, AuditFilter, AuditPart, AuditSource, Item, schema};

/// Most rounds of Queries one page of an audit query makes (a round reads the streams that hold the
/// page back, concurrently), so a sparse range cannot hold a request for long: past it, the page ends
/// early with a `nextToken`.
const MAX_AUDIT_ROUNDS: usize = 100;

/// The most events one Query of a stream evaluates once its filter has matched nothing for a while.
const MAX_QUERY_LIMIT: usize = 1_000;

/// Most Queries of one round in flight at once.
const MAX_CONCURRENT_QUERIES: usize = 64;

/// Bits of an event id below its milliseconds (the random part).
const RANDOM_BITS: u32 = 80;

/// An audit query: a time range (inclusive), filters and paging.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub filter: AuditFilter,
    pub limit: usize,
    pub cursor: Option<AuditCursor>,
}

/// Where an audit query resumes: below the id `before` when given, else at the end of the UTC `day`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    pub day: Date,
    pub before: Option<String>,
}

/// One page of audit events (stored items), newest first.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<Item>,
    pub next: Option<AuditCursor>,
}

/// Which partition a stream reads.
#[derive(Debug, Clone, Copy)]
enum Partition<'a> {
    /// One write shard of the organization's events.
    Shard(u8),
    /// One shard of a secret's events in the `by-secret` index.
    Secret(&'a str, u8),
    /// The unsharded partition of one UTC day, from before the shards.
    Unsharded(Date),
}

/// One stream of a query: what it has read and not returned yet, and where it reads on.
#[derive(Debug)]
struct Stream<'a> {
    partition: Partition<'a>,
    /// The highest id its unread events can have; `None` once it has been read to the range's start.
    top: Option<u128>,
    /// Read and matching, not returned yet, newest first (all above `top`).
    read: VecDeque<(u128, Item)>,
    /// Reads in a row that evaluated events and matched none: each doubles the next one's limit, so a
    /// filter that matches little still makes headway.
    misses: u32,
}

/// An event id (32 hex digits) as the number it spells.
fn id_number(id: &str) -> Option<u128> {
    (id.len() == 32).then(|| u128::from_str_radix(id, 16).ok()).flatten()
}

fn id_text(id: u128) -> String {
    format!("{id:032x}")
}

/// The lowest id of a time: its milliseconds, then zeros.
fn first_id(t: OffsetDateTime) -> u128 {
    let millis = (t.unix_timestamp_nanos() / 1_000_000).clamp(0, 0xFFFF_FFFF_FFFE);
    (millis as u128) << RANDOM_BITS
}

/// The UTC day of an id's milliseconds.
fn day_of(id: u128) -> Date {
    let millis = (id >> RANDOM_BITS) as i128;
    OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000).map_or(Date::MIN, OffsetDateTime::date)
}

/// The lowest id of a UTC day.
fn day_start(day: Date) -> u128 {
    first_id(day.midnight().assume_utc())
}

/// The highest id of a UTC day.
fn day_end(day: Date) -> u128 {
    day.next_day().map_or(u128::MAX, |next| day_start(next).saturating_sub(1))
}

impl Vault {
    /// Reads an organization's audit events, newest first (see the module's text). Admins see every
    /// event; anyone else only their own.
    pub async fn query_audit(&self, p: &Principal, mut q: AuditQuery) -> Result<AuditPage, ApiError> {
        q.filter.actor = policy::audit_visibility(p);
        let lowest = first_id(q.from);
        let highest = first_id(q.to) | ((1 << RANDOM_BITS) - 1);
        // Below the cursor's id, or from the end of its day; never above the range.
        let top = match &q.cursor {
            None => Some(highest),
            Some(AuditCursor { before: Some(b), .. }) => {
                let b = id_number(b).ok_or_else(|| ApiError::internal("an audit cursor's id is not 32 hex digits"))?;
                b.checked_sub(1)
            }
            Some(AuditCursor { day, before: None }) => Some(day_end(*day)),
        };
        let top = top.map(|t| t.min(highest)).filter(|t| *t >= lowest);
        let secret = q.filter.secret.clone();
        let shards = (0..AUDIT_SHARDS).map(|n| match secret.as_deref() {
            Some(name) => Partition::Secret(name, n),
            None => Partition::Shard(n),
        });
        // Days written before the shards: one partition each (filtered by name for one secret's events).
        // Ids start in 1970: a range reaching further back has no days there.
        let mut days = Vec::new();
        if let Some(top) = top {
            let mut day = day_of(top);
            while day >= q.from.date().max(day_of(lowest)) {
                days.push(Partition::Unsharded(day));
                day = match day.previous_day() {
                    Some(d) => d,
                    None => break,
                };
            }
        }
        let mut streams: Vec<Stream<'_>> = shards
            .chain(days)
            .map(|partition| {
                let top = match partition {
                    Partition::Unsharded(day) => top.map(|t| t.min(day_end(day))),
                    _ => top,
                };
                Stream { partition, top, read: VecDeque::new(), misses: 0 }
            })
            .collect();

        let mut events = Vec::new();
        let mut last = None;
        let mut rounds = 0;
        loop {
            let frontier = streams.iter().filter_map(|s| s.top).max();
            // Everything read above every stream's top is final: return it, newest first.
            while events.len() < q.limit {
                let newest = streams
                    .iter_mut()
                    .filter(|s| s.read.front().is_some_and(|(id, _)| frontier.is_none_or(|f| *id > f)))
                    .max_by_key(|s| s.read.front().map(|(id, _)| *id));
                let Some((id, item)) = newest.and_then(|s| s.read.pop_front()) else { break };
                last = Some(id);
                events.push(item);
            }
            if events.len() >= q.limit {
                let more = streams.iter().any(|s| s.top.is_some() || !s.read.is_empty());
                let next = last.filter(|_| more).map(|id| AuditCursor { day: day_of(id), before: Some(id_text(id)) });
                return Ok(AuditPage { events, next });
            }
            let Some(frontier) = frontier else {
                return Ok(AuditPage { events, next: None });
            };
            if rounds == MAX_AUDIT_ROUNDS {
                // Everything above the frontier has been returned: the next page reads from it down.
                let next = AuditCursor { day: day_of(frontier), before: Some(id_text(frontier + 1)) };
                return Ok(AuditPage { events, next: Some(next) });
            }
            rounds += 1;
            // Read on where the page is held back: the stream at the frontier, and every stream with
            // nothing in hand. Shards hold about an equal share of the events.
            let need = q.limit - events.len();
            let per_shard = (need.div_ceil(usize::from(AUDIT_SHARDS)) * 4 + 4).min(need.max(1));
            let reads = streams
                .iter_mut()
                .filter(|s| s.top.is_some_and(|t| t == frontier || s.read.is_empty()))
                .map(|s| {
                    let base = if matches!(s.partition, Partition::Unsharded(_)) { need } else { per_shard };
                    let limit = base.saturating_mul(1 << s.misses.min(10)).min(MAX_QUERY_LIMIT.max(base));
                    self.read_on(p, s, &q.filter, lowest, limit)
                })
                .collect::<Vec<_>>();
            let outcomes: Vec<Result<(), ApiError>> =
                futures_util::stream::iter(reads).buffer_unordered(MAX_CONCURRENT_QUERIES).collect().await;
            outcomes.into_iter().collect::<Result<(), ApiError>>()?;
        }
    }

    /// One Query of a stream: reads on below its top, and moves the top below what it evaluated (or
    /// past the range's start when nothing more follows).
    async fn read_on(
        &self,
        p: &Principal,
        s: &mut Stream<'_>,
        filter: &AuditFilter,
        lowest: u128,
        limit: usize,
    ) -> Result<(), ApiError> {
        let Some(top) = s.top else { return Ok(()) };
        let (source, floor) = match s.partition {
            Partition::Shard(shard) => (AuditSource::Shard(shard), lowest),
            Partition::Secret(name, shard) => (AuditSource::Secret { name, shard }, lowest),
            Partition::Unsharded(day) => (AuditSource::Unsharded(day), lowest.max(day_start(day))),
        };
        let (lo, hi) = (id_text(floor), id_text(top));
        let part = AuditPart { org_id: &p.org_id, source, lowest: &lo, highest: &hi, filter, limit };
        let (items, evaluated) = self.store.query_audit_part(part).await?;
        s.misses = if items.is_empty() && evaluated.is_some() { s.misses + 1 } else { 0 };
        for item in items {
            let id = item.get(schema::SK).and_then(|v| v.as_s().ok()).and_then(|id| id_number(id));
            s.read.push_back((id.ok_or_else(bad_id)?, item));
        }
        let below = match evaluated {
            Some(id) => id_number(&id).ok_or_else(bad_id)?.checked_sub(1),
            None => None,
        };
        s.top = below.filter(|t| *t >= floor);
        Ok(())
    }
}

fn bad_id() -> ApiError {
    ApiError::internal("an audit event's id is not 32 hex digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_days_and_bounds() {
        let t = time::macros::datetime!(2026-12-03 00:00:00.005 UTC);
        let day = time::macros::date!(2026 - 12 - 03);
        assert_eq!(day_start(day) >> RANDOM_BITS, 1_796_256_000_000);
        assert_eq!(day_of(first_id(t)), day);
        assert_eq!(day_of(day_start(day) - 1), time::macros::date!(2026 - 12 - 02));
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(id_text(id_number(id).unwrap()), id);
        assert_eq!(id_number("xyz"), None);
        assert_eq!(id_number(&"f".repeat(33)), None);
        // Before 1970 there are no ids: those days end at the first.
        assert_eq!(day_end(time::macros::date!(1969 - 12 - 31)), 0);
        assert_eq!(day_of(0), time::macros::date!(1970 - 01 - 01));
    }
}
