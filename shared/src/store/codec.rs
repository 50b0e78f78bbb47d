//! The item codec: secrets and audit events to and from DynamoDB items, apart from the queries.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::keys::{
    audit_partition_key, audit_secret_key, audit_shard, escape, event_id, org_sort_key, partition_key, record_key,
    schema,
};
use crate::crypto::Envelope;
use crate::error::ApiError;
use crate::model::{Access, AuditEvent, Limits, Owner, Upstream};

pub type Item = HashMap<String, AttributeValue>;

/// A secret as stored. `envelope` is `None` when read through a projection that leaves it out.
#[derive(Debug, Clone)]
pub struct SecretItem {
    pub owner: Owner,
    pub name: String,
    pub scope: Vec<String>,
    /// Expiry, epoch seconds.
    pub expires_at: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    pub version: u64,
    pub envelope: Option<Envelope>,
    /// The lifetime this item belongs to: a random id given when the secret is created (again after a
    /// delete or an expiry). `None` on items written before lifetimes existed (see
    /// [`Store::upgrade_legacy`]).
    pub lifetime: Option<String>,
    /// On a current item: the highest version written under an exact precondition (`If-Match: "N"`).
    /// A write overtaken by a later version may only be recorded before it when it is above the fence.
    pub fence: Option<u64>,
    /// On a current item: whether its version also has its record already (written by writers that
    /// raced, which cannot know the version they replace). Otherwise the next write archives it.
    pub recorded: bool,
    /// Readable, or use-only (through the proxy alone).
    pub access: Access,
    /// Where the proxy may send the value.
    pub upstream: Option<Upstream>,
    /// Limits on uses through the proxy.
    pub limits: Limits,
}

impl SecretItem {
    /// The lifetime this item belongs to, which every write needs.
    pub(super) fn lifetime_id(&self) -> Result<&str, ApiError> {
        self.lifetime.as_deref().ok_or_else(|| ApiError::internal("a write of a secret without a lifetime"))
    }

    /// True once the expiry has passed (DynamoDB may not have deleted it yet).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The key of an item: its partition and sort keys.
pub(super) fn item_key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([(schema::PK.to_owned(), s(pk)), (schema::SK.to_owned(), s(sk))])
}

pub(super) fn malformed(what: &'static str) -> ApiError {
    ApiError::internal(format!("stored item is malformed: {what}"))
}

pub(super) fn get_s<'a>(item: &'a Item, key: &'static str) -> Result<&'a str, ApiError> {
    item.get(key).and_then(|v| v.as_s().ok()).map(String::as_str).ok_or_else(|| malformed(key))
}

pub(super) fn get_n<T: std::str::FromStr>(item: &Item, key: &'static str) -> Result<Option<T>, ApiError> {
    match item.get(key) {
        None => Ok(None),
        Some(v) => v.as_n().ok().and_then(|n| n.parse().ok()).map(Some).ok_or_else(|| malformed(key)),
    }
}

pub(super) fn get_b(item: &Item, key: &'static str) -> Result<Vec<u8>, ApiError> {
    item.get(key).and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec()).ok_or_else(|| malformed(key))
}

/// The full item of `secret`: its current item (`record = None`), or the record of its version
/// (`Some(version)`), kept in that version's record slot.
pub(super) fn secret_item(org_id: &str, secret: &SecretItem, record: Option<u64>) -> Result<Item, ApiError> {
    let archived = record;
    let env = secret.envelope.as_ref().ok_or_else(|| ApiError::internal("a write without an envelope"))?;
    let sk = match record {
        None => secret.name.clone(),
        Some(v) => record_key(&secret.name, v),
    };
    let mut item = Item::new();
    item.insert(schema::PK.into(), s(partition_key(org_id, &secret.owner)));
    item.insert(schema::ORG_PK.into(), s(escape(org_id)));
    item.insert(schema::ORG_SK.into(), s(org_sort_key(&secret.owner, &sk)));
    item.insert(schema::SK.into(), s(sk));
    item.insert(schema::NAME.into(), s(&secret.name));
    item.insert(schema::OWNERSHIP.into(), s(secret.owner.kind()));
    if let Owner::App { client_id } = &secret.owner {
        item.insert(schema::CLIENT_ID.into(), s(client_id));
    }
    item.insert(schema::SCOPE.into(), AttributeValue::L(secret.scope.iter().map(s).collect()));
    if let Some(t) = secret.expires_at {
        item.insert(if archived.is_some() { schema::EXPIRED_AT } else { schema::TTL }.into(), n(t));
    }
    if archived.is_some() {
        item.insert(schema::VERSION_OF.into(), s(&secret.name));
    }
    item.insert(schema::CREATED_AT.into(), s(&secret.created_at));
    item.insert(schema::UPDATED_AT.into(), s(&secret.updated_at));
    item.insert(schema::VERSION.into(), n(secret.version));
    if let Some(lifetime) = &secret.lifetime {
        item.insert(schema::LIFETIME.into(), s(lifetime));
    }
    if secret.access != Access::Readable {
        item.insert(schema::ACCESS.into(), s(secret.access.as_str()));
    }
    if let Some(up) = &secret.upstream {
        let json = serde_json::to_string(&up.to_wire()).map_err(ApiError::internal)?;
        item.insert(schema::UPSTREAM.into(), s(json));
    }
    if let Some(n) = secret.limits.per_minute {
        item.insert(schema::PER_MINUTE.into(), self::n(n));
    }
    if let Some(n) = secret.limits.per_day {
        item.insert(schema::PER_DAY.into(), self::n(n));
    }
    insert_envelope(&mut item, env);
    Ok(item)
}

pub(super) fn insert_envelope(item: &mut Item, env: &Envelope) {
    item.insert(schema::ENC_VERSION.into(), n(env.version));
    item.insert(schema::KEY_ID.into(), s(&env.key_id));
    item.insert(schema::WRAPPED_KEY.into(), AttributeValue::B(Blob::new(env.wrapped_key.clone())));
    item.insert(schema::CIPHERTEXT.into(), AttributeValue::B(Blob::new(env.ciphertext.clone())));
}

pub(super) fn secret_from_item(owner: &Owner, item: &Item, with_envelope: bool) -> Result<SecretItem, ApiError> {
    let scope = match item.get(schema::SCOPE) {
        None => Vec::new(),
        Some(v) => v
            .as_l()
            .map_err(|_| malformed("scope"))?
            .iter()
            .map(|e| e.as_s().cloned().map_err(|_| malformed("scope")))
            .collect::<Result<_, _>>()?,
    };
    let envelope = if with_envelope {
        Some(Envelope {
            version: get_n::<u8>(item, "encVersion")?.ok_or_else(|| malformed("encVersion"))?,
            key_id: get_s(item, schema::KEY_ID)?.to_owned(),
            wrapped_key: get_b(item, schema::WRAPPED_KEY)?,
            ciphertext: get_b(item, schema::CIPHERTEXT)?,
        })
    } else {
        None
    };
    Ok(SecretItem {
        owner: owner.clone(),
        name: get_s(item, schema::SK)?.to_owned(),
        scope,
        expires_at: get_n(item, schema::TTL)?,
        created_at: get_s(item, schema::CREATED_AT)?.to_owned(),
        updated_at: get_s(item, schema::UPDATED_AT)?.to_owned(),
        version: get_n(item, schema::VERSION)?.unwrap_or(1),
        envelope,
        lifetime: item.get(schema::LIFETIME).and_then(|v| v.as_s().ok()).cloned(),
        fence: get_n(item, schema::FENCE)?,
        recorded: item.get(schema::RECORDED).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
        access: match item.get(schema::ACCESS) {
            None => Access::Readable,
            Some(v) => v.as_s().ok().and_then(|a| Access::parse(a)).ok_or_else(|| malformed("access"))?,
        },
        upstream: match item.get(schema::UPSTREAM) {
            None => None,
            Some(v) => Some(
                v.as_s()
                    .ok()
                    .and_then(|json| serde_json::from_str(json).ok())
                    .and_then(Upstream::from_stored)
                    .ok_or_else(|| malformed("upstream"))?,
            ),
        },
        limits: Limits { per_minute: get_n(item, schema::PER_MINUTE)?, per_day: get_n(item, schema::PER_DAY)? },
    })
}

/// Longest user agent kept, in characters.
const MAX_USER_AGENT: usize = 256;

/// A user agent as an audit record keeps it: without control characters and terminal escape
/// sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL`, and any other `ESC x`), which would otherwise
/// reach whoever reads the audit log in a terminal, and at most [`MAX_USER_AGENT`] characters.
fn clean_user_agent(ua: &str) -> String {
    let mut out = String::new();
    let mut chars = ua.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \\).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        if !c.is_control() {
            out.push(c);
            if out.chars().count() == MAX_USER_AGENT {
                break;
            }
        }
    }
    out
}

/// The audit item of `event`, expiring after `retention_days`.
pub(super) fn event_item(event: &AuditEvent<'_>, now: OffsetDateTime, retention_days: u32) -> Item {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let p = event.principal;
    let mut item = HashMap::new();
    let id = event_id(now);
    let shard = audit_shard(&id);
    item.insert(schema::PK.into(), s(&audit_partition_key(&p.org_id, shard)));
    if !event.secret_name.is_empty() {
        item.insert(schema::SECRET_KEY.into(), s(&audit_secret_key(&p.org_id, event.secret_name, shard)));
    }
    item.insert(schema::SK.into(), s(&id));
    item.insert(schema::EVENT.into(), s(event.kind.as_str()));
    item.insert(schema::ORG_ID.into(), s(&p.org_id));
    item.insert(schema::SECRET_NAME.into(), s(event.secret_name));
    if let Some(owner) = event.owner {
        item.insert(schema::OWNERSHIP.into(), s(owner.kind()));
        if let Owner::App { client_id } = owner {
            item.insert(schema::OWNER_CLIENT_ID.into(), s(client_id));
        }
    }
    item.insert(schema::ACTOR_CLIENT_ID.into(), s(&p.client_id));
    if let Some(user) = p.user_id() {
        item.insert(schema::ACTOR_USER_ID.into(), s(user));
    }
    item.insert(schema::TOKEN_KIND.into(), s(p.kind.label()));
    item.insert(schema::REQUEST_ID.into(), s(&event.meta.request_id));
    if let Some(ip) = &event.meta.source_ip {
        item.insert(schema::SOURCE_IP.into(), s(ip));
    }
    if let Some(ua) = &event.meta.user_agent {
        item.insert(schema::USER_AGENT.into(), s(&clean_user_agent(ua)));
    }
    item.insert(schema::OUTCOME.into(), s(event.outcome));
    if let Some(detail) = &event.detail {
        item.insert(schema::DETAIL.into(), s(detail));
    }
    item.insert(schema::TIME.into(), s(&now.format(&Rfc3339).unwrap_or_default()));
    let expires = now.unix_timestamp() + i64::from(retention_days) * 86_400;
    item.insert(schema::TTL.into(), AttributeValue::N(expires.to_string()));
    item
}

/// Turns an audit event into its item.
pub trait ToItem {
    /// The item of this event, expiring after `retention_days`.
    fn to_item(&self, now: OffsetDateTime, retention_days: u32) -> Item;
}

impl ToItem for AuditEvent<'_> {
    fn to_item(&self, now: OffsetDateTime, retention_days: u32) -> Item {
        event_item(self, now, retention_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, Principal, RequestMeta, TokenKind};
    use crate::store::keys::event_id;

    #[test]
    fn event_ids_are_time_ordered_and_unique() {
        let t = OffsetDateTime::now_utc();
        let a = event_id(t);
        let b = event_id(t + time::Duration::milliseconds(1));
        assert_eq!(a.len(), 32);
        assert!(a < b);
        assert_ne!(event_id(t), event_id(t));
    }

    #[test]
    fn item_records_who_what_where_and_expires() {
        let p = Principal {
            org_id: "org#1".into(),
            client_id: "c1".into(),
            kind: TokenKind::User { user_id: "auth0|u".into() },
            scopes: Default::default(),
            admin: false,
        };
        let meta = RequestMeta {
            request_id: "r1".into(),
            source_ip: Some("10.0.0.1".into()),
            user_agent: Some("x".repeat(1000)),
        };
        let owner = Owner::App { client_id: "c1".into() };
        let now = time::macros::datetime!(2026-03-04 05:06:07 UTC);
        let ev = AuditEvent {
            kind: EventKind::Retrieved,
            principal: &p,
            meta: &meta,
            secret_name: "n",
            owner: Some(&owner),
            outcome: "success",
            detail: None,
        };
        let item = event_item(&ev, now, 365);
        let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let shard = crate::store::keys::audit_shard(&get("sk"));
        assert_eq!(get("pk"), format!("org%231#s{shard:02}"));
        assert_eq!(get("secretKey"), format!("org%231#n#s{shard:02}"));
        assert_eq!(get("event"), "vault.secret.retrieved");
        assert_eq!(get("actorUserId"), "auth0|u");
        assert_eq!(get("tokenKind"), "user");
        assert_eq!(get("ownership"), "app");
        assert_eq!(get("userAgent").len(), MAX_USER_AGENT);
        assert_eq!(get("time"), "2026-03-04T05:06:07Z");
        let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
        assert_eq!(ttl, now.unix_timestamp() + 365 * 86_400);
    }

    #[test]
    fn user_agents_are_stored_without_control_or_terminal_sequences() {
        for (sent, stored) in [
            ("curl/8.5.0", "curl/8.5.0"),
            ("evil\u{1b}[31mred\u{1b}[0m agent", "evilred agent"),
            ("bell\u{7}\r\nX-Injected: 1", "bellX-Injected: 1"),
            ("osc\u{1b}]0;title\u{7}done", "oscdone"),
            ("\u{1b}", ""),
            ("tab\tand\u{7f}del", "tabanddel"),
            ("ünïcode ✓", "ünïcode ✓"),
        ] {
            assert_eq!(clean_user_agent(sent), stored, "{sent:?}");
        }
        assert_eq!(clean_user_agent(&"x".repeat(1000)).len(), MAX_USER_AGENT);
    }
}
