//! Key encoding: every partition and sort key of both tables, and every attribute name, so the layout
//! is written down once. Each id is escaped (`%` → `%25`, `#` → `%23`) before it is joined, so the
//! encoding is injective whatever the ids hold.

use rand::RngCore;
use time::OffsetDateTime;

use crate::model::Owner;
use crate::rules::RETAINED_VERSIONS;

/// Attribute and index names, shared with `template.yaml` (a test checks they agree).
pub mod schema {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const TTL: &str = "ttl";
    pub const ORG_INDEX: &str = "by-org";
    pub const ORG_PK: &str = "orgPk";
    pub const ORG_SK: &str = "orgSk";
    // Attributes of the items (expressions name them in their text, as DynamoDB reads it).
    pub const NAME: &str = "name";
    pub const OWNERSHIP: &str = "ownership";
    pub const CLIENT_ID: &str = "clientId";
    pub const SCOPE: &str = "scope";
    pub const CREATED_AT: &str = "createdAt";
    pub const UPDATED_AT: &str = "updatedAt";
    pub const VERSION: &str = "version";
    pub const ENC_VERSION: &str = "encVersion";
    pub const KEY_ID: &str = "keyId";
    pub const WRAPPED_KEY: &str = "wrappedKey";
    pub const CIPHERTEXT: &str = "ciphertext";
    pub const LIFETIME: &str = "lifetime";
    pub const FENCE: &str = "fence";
    pub const RECORDED: &str = "recorded";
    /// `use-only` on a secret that can only be used through the proxy (absent: readable).
    pub const ACCESS: &str = "access";
    /// The upstream a secret's value may be sent to, as JSON (`UpstreamWire`).
    pub const UPSTREAM: &str = "upstream";
    /// Per-secret limits of uses through the proxy.
    pub const PER_MINUTE: &str = "perMinute";
    pub const PER_DAY: &str = "perDay";
    pub const SALT: &str = "salt";
    pub const ACTIVE_KEY_ID: &str = "activeKeyId";
    pub const LAST_ORG: &str = "lastOrg";
    pub const EVENT: &str = "event";
    pub const ORG_ID: &str = "orgId";
    pub const SECRET_NAME: &str = "secretName";
    pub const OWNER_CLIENT_ID: &str = "ownerClientId";
    pub const ACTOR_CLIENT_ID: &str = "actorClientId";
    pub const ACTOR_USER_ID: &str = "actorUserId";
    pub const TOKEN_KIND: &str = "tokenKind";
    pub const REQUEST_ID: &str = "requestId";
    pub const SOURCE_IP: &str = "sourceIp";
    pub const USER_AGENT: &str = "userAgent";
    pub const OUTCOME: &str = "outcome";
    pub const DETAIL: &str = "detail";
    pub const TIME: &str = "time";
    /// On a retained version: the expiry its secret had then (not the table's TTL attribute: a retained
    /// version lives and dies with its secret, whose current item governs whether it can be read).
    pub const EXPIRED_AT: &str = "expiredAt";
    /// Non-key attributes the `by-org` index projects: metadata only, never ciphertext.
    pub const ORG_INDEX_PROJECTION: &[&str] = &[
        OWNERSHIP, CLIENT_ID, NAME, SCOPE, TTL, CREATED_AT, UPDATED_AT, VERSION, KEY_ID, VERSION_OF, ACCESS, UPSTREAM,
        PER_MINUTE, PER_DAY,
    ];
    /// Set on a retained earlier version of a secret (to the secret's name); listings skip such items.
    pub const VERSION_OF: &str = "versionOf";
    /// The number a secret's version sequence has handed out last (on its item in the audit table).
    pub const SEQUENCE: &str = "seq";
    /// The `by-org` partition listing every organization (escaped ids never start with `#`).
    pub const ORGS_PARTITION: &str = "#orgs";
    /// The audit table's per-secret index: one secret's events (`<org>#<secret>#sNN`), time-ordered by `sk`.
    pub const SECRET_INDEX: &str = "by-secret";
    pub const SECRET_KEY: &str = "secretKey";
}

/// The partition of the rewrap job's checkpoint (ids are escaped into `org#...` keys, so no collision).
pub(super) const JOB_PK: &str = "job#rotate-keys";

/// How long a secret's version sequence outlives its last use. Past it, the next write starts the
/// sequence again from the version it reads (nothing is lost: the sequence only has to stay ahead of the
/// versions stored).
pub(super) const SEQUENCE_IDLE_SECS: i64 = 86_400;

/// The sort key `<name>#v<n>`. Names never hold `#`, so this never collides with a secret's own sort key.
pub(crate) fn version_key(name: &str, n: u64) -> String {
    format!("{name}#v{n}")
}

/// The record slot of version `v`: versions take the slots 1 to [`RETAINED_VERSIONS`] in turn, so each
/// version's record replaces that of the version [`RETAINED_VERSIONS`] before it, and a secret never
/// holds more records than it retains.
pub(super) fn record_slot(version: u64) -> u64 {
    version.saturating_sub(1) % RETAINED_VERSIONS + 1
}

/// The sort key of version `v`'s record.
pub fn record_key(name: &str, version: u64) -> String {
    version_key(name, record_slot(version))
}

/// The audit-table key of the version sequence of one lifetime of a secret: `seq#<secret partition>`
/// and `<name>#<lifetime>`. (Audit partitions are `<escaped org>#sNN` or,
/// before the shards, `<escaped org>#<day>`: a single `#`.)
pub(super) fn sequence_key(org_id: &str, owner: &Owner, name: &str, lifetime: &str) -> (String, String) {
    (format!("seq#{}", partition_key(org_id, owner)), format!("{name}#{lifetime}"))
}

/// The audit-table key of one secret's use counter for one UTC day: `rate#<secret partition>#<name>` and
/// the day. The item counts the day's uses (`d`) and each minute's (`m<minute of the day>`).
pub(super) fn counter_key(org_id: &str, owner: &Owner, name: &str, day: time::Date) -> (String, String) {
    (format!("rate#{}#{name}", partition_key(org_id, owner)), day_key(day))
}

/// A fresh lifetime id.
pub fn new_lifetime() -> String {
    let mut id = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut id);
    hex::encode(id)
}

/// The secret name a (possibly version) sort key belongs to.
pub(crate) fn base_name(sort_key: &str) -> &str {
    sort_key.split('#').next().unwrap_or(sort_key)
}

/// Escapes one id so it can never contain the `#` separator.
pub(super) fn escape(id: &str) -> String {
    id.replace('%', "%25").replace('#', "%23")
}

/// The partition key of one owner's secrets. Injective in (org, owner).
pub fn partition_key(org_id: &str, owner: &Owner) -> String {
    format!("org#{}#{}#{}", escape(org_id), owner.kind(), escape(owner.id()))
}

/// The `by-org` sort key of a secret: `<kind>#<escaped owner id>#<name>`.
pub(super) fn org_sort_key(owner: &Owner, name: &str) -> String {
    format!("{}#{}#{name}", owner.kind(), escape(owner.id()))
}

/// Reverses [`escape`].
pub(super) fn unescape(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("%23") => out.push('#'),
            Some("%25") => out.push('%'),
            Some(other) => out.push_str(other),
            None => out.push_str(&rest[i..]),
        }
        rest = rest.get(i + 3..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Reads the owner and name back from a `by-org` sort key.
pub(super) fn parse_org_sort_key(key: &str) -> Option<(Owner, String)> {
    let (kind, rest) = key.split_once('#')?;
    let (id, name) = rest.split_once('#')?;
    let id = unescape(id);
    let owner = match kind {
        "app" => Owner::App { client_id: id },
        "user" => Owner::User { user_id: id },
        _ => return None,
    };
    Some((owner, name.to_owned()))
}

pub(super) fn salt_key(org_id: &str) -> String {
    format!("org#{}#meta", escape(org_id))
}

/// Versions of a secret written before record slots, retained at a key other than their slot's
/// (`<name>#v<n>` with n above [`RETAINED_VERSIONS`]), when `version` was current.
pub(super) fn legacy_retained(version: u64) -> impl Iterator<Item = u64> {
    (version.saturating_sub(RETAINED_VERSIONS - 1).max(1)..version).filter(|v| *v > RETAINED_VERSIONS)
}

/// The partition-key suffix of a UTC day: `YYYY-MM-DD`.
pub(crate) fn day_key(day: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), u8::from(day.month()), day.day())
}

/// How many write shards an organization's audit events (and one secret's events in the `by-secret`
/// index) are spread over. DynamoDB holds one partition key to about 1,000 write units a second: at
/// 10,000 audited reads a second an organization writes about 313 events a second to each shard
/// (BENCHMARKS.md, "Audit write shards").
pub const AUDIT_SHARDS: u8 = 32;

/// The shard of an event: its id's last byte (random), modulo [`AUDIT_SHARDS`]. Both of an event's
/// keys (its partition and its per-secret index key) use it, so either follows from the event id.
pub fn audit_shard(event_id: &str) -> u8 {
    let last = event_id.get(event_id.len().saturating_sub(2)..).and_then(|h| u8::from_str_radix(h, 16).ok());
    last.unwrap_or(0) % AUDIT_SHARDS
}

/// The audit table partition of an organization's events in one write shard: `<escaped org>#sNN`, the
/// events time-ordered by their ids (sort keys) across days.
pub fn audit_partition_key(org_id: &str, shard: u8) -> String {
    format!("{}#s{shard:02}", escape(org_id))
}

/// The single partition of an organization's events of one UTC day that events were written to before
/// the shards (`<escaped org>#YYYY-MM-DD`): still read, until its events expire.
pub fn unsharded_audit_partition_key(org_id: &str, day: time::Date) -> String {
    format!("{}#{}", escape(org_id), day_key(day))
}

/// The `by-secret` index key of an organization's events about one secret name in one write shard:
/// `<escaped org>#<name>#sNN` (names never hold `#`).
pub fn audit_secret_key(org_id: &str, name: &str, shard: u8) -> String {
    format!("{}#{name}#s{shard:02}", escape(org_id))
}

/// A time-ordered unique id: 48-bit milliseconds then 80 random bits, as 32 hex digits (a ULID in hex).
pub(crate) fn event_id(now: OffsetDateTime) -> String {
    let millis = (now.unix_timestamp_nanos() / 1_000_000) as u64 & 0xFFFF_FFFF_FFFF;
    let mut random = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut random);
    format!("{millis:012x}{}", hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn partition_keys_are_injective() {
        let ids =
            ["a", "b", "a#b", "a%23b", "a%b", "#", "%", "%25", "auth0|123", "a/b", "org#x#app#y", "", "user", "app"];
        let mut seen = HashMap::new();
        for org in ids {
            for id in ids {
                for owner in [Owner::App { client_id: id.into() }, Owner::User { user_id: id.into() }] {
                    let pk = partition_key(org, &owner);
                    if let Some(prev) = seen.insert(pk.clone(), (org, owner.clone())) {
                        panic!("{pk} encodes both {prev:?} and {:?}", (org, owner));
                    }
                }
            }
        }
        let salts: HashSet<String> = ids.iter().map(|o| salt_key(o)).collect();
        assert_eq!(salts.len(), ids.len());
        assert!(salts.iter().all(|k| !seen.contains_key(k)), "a salt key collides with a secret partition");
    }

    #[test]
    fn org_sort_keys_read_back() {
        for id in ["a", "a#b", "%", "%23", "%25#", "auth0|1", "x/y"] {
            assert_eq!(unescape(&escape(id)), id);
            for owner in [Owner::App { client_id: id.into() }, Owner::User { user_id: id.into() }] {
                let key = org_sort_key(&owner, "name.1");
                assert_eq!(parse_org_sort_key(&key), Some((owner, "name.1".to_owned())));
            }
        }
    }

    #[test]
    fn audit_keys_follow_from_the_event_id() {
        let now = OffsetDateTime::now_utc();
        let mut shards = HashSet::new();
        for _ in 0..2_000 {
            let id = event_id(now);
            let shard = audit_shard(&id);
            assert!(shard < AUDIT_SHARDS);
            assert_eq!(u8::from_str_radix(&id[30..], 16).unwrap() % AUDIT_SHARDS, shard);
            shards.insert(shard);
        }
        // 2,000 random ids miss one of 32 shards with probability below 1e-25.
        assert_eq!(shards.len(), usize::from(AUDIT_SHARDS));
        let day = time::macros::date!(2026 - 12 - 03);
        assert_eq!(audit_partition_key("o#1", 7), "o%231#s07");
        assert_eq!(unsharded_audit_partition_key("o#1", day), "o%231#2026-12-03");
        assert_eq!(audit_secret_key("o#1", "openai", 31), "o%231#openai#s31");
        // A shard's partition is never a day's, nor a version sequence's or a use counter's.
        let org = Owner::App { client_id: "c".into() };
        assert_ne!(audit_partition_key("seq", 1), sequence_key("o", &org, "n", "1").0);
        assert!(!unsharded_audit_partition_key("o", day).ends_with("#s01"));
    }

    #[test]
    fn escaped_ids_never_hold_the_separator() {
        for id in ["a#b", "##", "%#%"] {
            assert!(!escape(id).contains('#'));
        }
    }

    /// Property tests (proptest): the key encoding is injective for arbitrary ids.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Ids from a small alphabet rich in separators and escapes, or any printable text.
        fn id() -> impl Strategy<Value = String> {
            prop_oneof!["[#%235aprsu|/]{0,8}", "\\PC{0,16}"]
        }

        fn owner() -> impl Strategy<Value = Owner> {
            prop_oneof![
                id().prop_map(|client_id| Owner::App { client_id }),
                id().prop_map(|user_id| Owner::User { user_id })
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn partition_keys_are_injective(a in (id(), owner()), b in (id(), owner())) {
                prop_assume!(a != b);
                prop_assert_ne!(partition_key(&a.0, &a.1), partition_key(&b.0, &b.1));
            }

            #[test]
            fn salt_keys_are_injective_and_never_a_partition(a in id(), b in id(), owner in owner()) {
                prop_assume!(a != b);
                prop_assert_ne!(salt_key(&a), salt_key(&b));
                prop_assert_ne!(salt_key(&a), partition_key(&b, &owner));
                prop_assert_ne!(salt_key(&a), partition_key(&a, &owner));
            }

            #[test]
            fn org_sort_keys_are_injective(
                a in (owner(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,12}"),
                b in (owner(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,12}"),
            ) {
                // Reading a key back gives what was encoded, so two different secrets never share one.
                prop_assert_eq!(parse_org_sort_key(&org_sort_key(&a.0, &a.1)), Some(a.clone()));
                if a != b {
                    prop_assert_ne!(org_sort_key(&a.0, &a.1), org_sort_key(&b.0, &b.1));
                }
            }

            #[test]
            fn escaping_round_trips(id in id()) {
                prop_assert!(!escape(&id).contains('#'));
                prop_assert_eq!(unescape(&escape(&id)), id);
            }
        }
    }
}
