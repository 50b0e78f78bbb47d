//! Audit events: one DynamoDB item per event in the audit table.
//!
//! `pk = <org>#<YYYY-MM-DD>` (UTC day), `sk` = a time-ordered unique id, `ttl` = retention expiry.
//! An event records who did what to which secret, from where, and how it ended; never a value or a token.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use rand::RngCore;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::Principal;
use crate::policy::Owner;

/// The kinds of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Retrieved,
    Updated,
    Deleted,
    AccessDenied,
    IntegrityError,
    /// The rewrap job moved an organization's data keys to the active master key.
    KeyRotated,
    /// An organization was crypto-shredded.
    OrgShredded,
    /// A secret was restored to an earlier version.
    RolledBack,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "vault.secret.created",
            Self::Retrieved => "vault.secret.retrieved",
            Self::Updated => "vault.secret.updated",
            Self::Deleted => "vault.secret.deleted",
            Self::AccessDenied => "vault.secret.access_denied",
            Self::IntegrityError => "vault.secret.integrity_error",
            Self::KeyRotated => "vault.key.rotated",
            Self::OrgShredded => "vault.org.shredded",
            Self::RolledBack => "vault.secret.rolled_back",
        }
    }

    /// Every kind, for validating filters.
    pub const ALL: [EventKind; 9] = [
        Self::Created,
        Self::Retrieved,
        Self::Updated,
        Self::Deleted,
        Self::RolledBack,
        Self::AccessDenied,
        Self::IntegrityError,
        Self::KeyRotated,
        Self::OrgShredded,
    ];
}

/// Where a request came from, as API Gateway reports it.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// One audit event, ready to be stored.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub kind: EventKind,
    pub principal: &'a Principal,
    pub meta: &'a RequestMeta,
    pub secret_name: &'a str,
    /// The owner of the secret acted on, when known.
    pub owner: Option<&'a Owner>,
    /// `success`, or the error code that ended the request.
    pub outcome: &'a str,
    /// Counts and key ids of an operator job (never key material).
    pub detail: Option<String>,
}

/// The partition-key suffix of a UTC day: `YYYY-MM-DD`.
pub fn day_key(day: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), u8::from(day.month()), day.day())
}

/// The audit table partition of an organization's events of one UTC day: `<escaped org>#YYYY-MM-DD`.
pub fn partition_key(org_id: &str, day: time::Date) -> String {
    format!("{}#{}", crate::store::escape(org_id), day_key(day))
}

/// An audit item as the API shows it, borrowed from the item (serialized without copying). Items hold
/// no value, key or token, and every field is taken by name, so nothing else stored can leak through.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView<'a> {
    id: Option<&'a str>,
    time: Option<&'a str>,
    event: Option<&'a str>,
    secret: Option<&'a str>,
    ownership: Option<&'a str>,
    owner_client_id: Option<&'a str>,
    actor_client_id: Option<&'a str>,
    actor_user_id: Option<&'a str>,
    token_kind: Option<&'a str>,
    outcome: Option<&'a str>,
    request_id: Option<&'a str>,
    source_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    detail: Option<&'a str>,
}

impl<'a> EventView<'a> {
    /// One pass over the item's attributes (no hashing: a page of 100 events would otherwise make 1,400
    /// lookups); attributes not named here, or not strings, are left out.
    pub fn of(item: &'a HashMap<String, AttributeValue>) -> Self {
        let mut view = Self::default();
        for (name, value) in item {
            let Ok(value) = value.as_s() else { continue };
            let field = match name.as_str() {
                "sk" => &mut view.id,
                "time" => &mut view.time,
                "event" => &mut view.event,
                "secretName" => &mut view.secret,
                "ownership" => &mut view.ownership,
                "ownerClientId" => &mut view.owner_client_id,
                "actorClientId" => &mut view.actor_client_id,
                "actorUserId" => &mut view.actor_user_id,
                "tokenKind" => &mut view.token_kind,
                "outcome" => &mut view.outcome,
                "requestId" => &mut view.request_id,
                "sourceIp" => &mut view.source_ip,
                "userAgent" => &mut view.user_agent,
                "detail" => &mut view.detail,
                _ => continue,
            };
            *field = Some(value.as_str());
        }
        view
    }
}

/// Longest user agent kept, in characters.
const MAX_USER_AGENT: usize = 256;

/// A time-ordered unique id: 48-bit milliseconds then 80 random bits, as 32 hex digits (a ULID in hex).
pub fn event_id(now: OffsetDateTime) -> String {
    let millis = (now.unix_timestamp_nanos() / 1_000_000) as u64 & 0xFFFF_FFFF_FFFF;
    let mut random = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut random);
    format!("{millis:012x}{}", hex::encode(random))
}

impl AuditEvent<'_> {
    /// Adds counts, versions or key ids (never key material or values).
    pub fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The DynamoDB item for this event, expiring after `retention_days`.
    pub fn to_item(&self, now: OffsetDateTime, retention_days: u32) -> HashMap<String, AttributeValue> {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let p = self.principal;
        let mut item = HashMap::new();
        item.insert("pk".into(), s(&partition_key(&p.org_id, now.date())));
        item.insert("sk".into(), s(&event_id(now)));
        item.insert("event".into(), s(self.kind.as_str()));
        item.insert("orgId".into(), s(&p.org_id));
        item.insert("secretName".into(), s(self.secret_name));
        if let Some(owner) = self.owner {
            item.insert("ownership".into(), s(owner.kind()));
            if let Owner::App { client_id } = owner {
                item.insert("ownerClientId".into(), s(client_id));
            }
        }
        item.insert("actorClientId".into(), s(&p.client_id));
        if let Some(user) = p.user_id() {
            item.insert("actorUserId".into(), s(user));
        }
        item.insert("tokenKind".into(), s(p.kind.label()));
        item.insert("requestId".into(), s(&self.meta.request_id));
        if let Some(ip) = &self.meta.source_ip {
            item.insert("sourceIp".into(), s(ip));
        }
        if let Some(ua) = &self.meta.user_agent {
            let ua: String = ua.chars().take(MAX_USER_AGENT).collect();
            item.insert("userAgent".into(), s(&ua));
        }
        item.insert("outcome".into(), s(self.outcome));
        if let Some(detail) = &self.detail {
            item.insert("detail".into(), s(detail));
        }
        item.insert("time".into(), s(&now.format(&Rfc3339).unwrap_or_default()));
        let expires = now.unix_timestamp() + i64::from(retention_days) * 86_400;
        item.insert("ttl".into(), AttributeValue::N(expires.to_string()));
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenKind;

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
        let item = ev.to_item(now, 365);
        let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        assert_eq!(get("pk"), "org%231#2026-03-04");
        assert_eq!(get("event"), "vault.secret.retrieved");
        assert_eq!(get("actorUserId"), "auth0|u");
        assert_eq!(get("tokenKind"), "user");
        assert_eq!(get("ownership"), "app");
        assert_eq!(get("userAgent").len(), MAX_USER_AGENT);
        assert_eq!(get("time"), "2026-03-04T05:06:07Z");
        let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
        assert_eq!(ttl, now.unix_timestamp() + 365 * 86_400);

        // The API's view: the named fields only (no partition key, TTL or anything else stored).
        let mut stored = item.clone();
        stored.insert("value".into(), AttributeValue::S("never shown".into()));
        let view = serde_json::to_value(EventView::of(&stored)).unwrap();
        let keys: std::collections::BTreeSet<&str> = view.as_object().unwrap().keys().map(String::as_str).collect();
        let expected = [
            "id",
            "time",
            "event",
            "secret",
            "ownership",
            "ownerClientId",
            "actorClientId",
            "actorUserId",
            "tokenKind",
            "outcome",
            "requestId",
            "sourceIp",
            "userAgent",
            "detail",
        ];
        assert_eq!(keys, expected.into_iter().collect());
        assert_eq!(view["id"], get("sk").as_str());
        assert_eq!((view["secret"].as_str(), view["actorUserId"].as_str()), (Some("n"), Some("auth0|u")));
        assert_eq!((view["sourceIp"].as_str(), view["detail"].as_str()), (Some("10.0.0.1"), None));
        assert!(!view.to_string().contains("never shown") && !view.to_string().contains("org%231"));
    }
}
