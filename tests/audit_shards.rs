//! The audit log past one partition: events spread over write shards and a per-secret index, and audit
//! queries that merge them newest first and resume exactly, through the real handlers against a real
//! DynamoDB-compatible server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use serde_json::json;
use token_vault::EventKind;
use token_vault::table::{AUDIT_SHARDS, Item, schema, unsharded_audit_partition_key};
use vault_tests::*;

fn ids(r: &Reply) -> Vec<String> {
    r.json["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

/// The same event as a build before the shards wrote it: in its day's single partition, not indexed.
fn unsharded(mut item: Item, at: time::OffsetDateTime, org: &str) -> Item {
    item.insert(schema::PK.into(), AttributeValue::S(unsharded_audit_partition_key(org, at.date())));
    item.remove(schema::SECRET_KEY);
    item
}

async fn write_all(t: &TestVault, items: Vec<Item>) {
    for chunk in items.chunks(25) {
        let writes = chunk
            .iter()
            .map(|i| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(i.clone())).build().unwrap())
                    .build()
            })
            .collect();
        let out = t.client.batch_write_item().request_items(AUDIT_TABLE, writes).send().await.unwrap();
        assert!(out.unprocessed_items.unwrap_or_default().is_empty());
    }
}

/// Pages through `call` with `limit`, checking each page's size, and returns every id in order.
async fn page_through(t: &TestVault, call: impl Fn() -> Call, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1_000 {
        let mut c = call().query("limit", &limit.to_string());
        if let Some(tok) = &token {
            c = c.query("nextToken", tok);
        }
        let r = t.send(c).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = ids(&r);
        token = r.json["nextToken"].as_str().map(str::to_owned);
        if token.is_some() {
            assert_eq!(page.len(), limit, "a page with more to come is full");
        }
        out.extend(page);
        if token.is_none() {
            return out;
        }
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn queries_merge_every_shard_and_the_unsharded_days_newest_first_and_resume_exactly() {
    let t = TestVault::start().await;
    let org = "org-shards";
    // Every time is relative to noon yesterday (UTC), so no event crosses a day boundary whenever this runs.
    let noon = (time::OffsetDateTime::now_utc().date() - time::Duration::days(1)).midnight().assume_utc()
        + time::Duration::hours(12);
    let mut items = Vec::new();
    // 600 events of that day, 120 of them in one millisecond (their ids differ in the random bits only),
    // 60 from two days before, and 90 that an earlier build wrote into the unsharded partitions of that
    // day, the day before and five days before. Some about the hot secret, some not.
    for i in 0..600i64 {
        let at = if i < 120 { noon - time::Duration::seconds(5) } else { noon - time::Duration::milliseconds(7 * i) };
        let name = if i % 3 == 0 { "hot" } else { "other" };
        items.push(audit_item(org, name, EventKind::Retrieved, at));
    }
    for i in 0..60i64 {
        let at = noon - time::Duration::days(2) - time::Duration::seconds(i);
        items.push(audit_item(org, if i % 2 == 0 { "hot" } else { "cold" }, EventKind::Created, at));
    }
    for (i, days) in (0..90i64).zip([0, 1, 5].into_iter().cycle()) {
        let at = noon - time::Duration::days(days) - time::Duration::minutes(i + 1);
        let name = if i % 2 == 0 { "hot" } else { "other" };
        items.push(unsharded(audit_item(org, name, EventKind::Retrieved, at), at, org));
    }
    // Another organization's events, in the same shards' key space: never returned.
    for i in 0..40i64 {
        items.push(audit_item("org-neighbour", "hot", EventKind::Retrieved, noon - time::Duration::seconds(i)));
    }
    write_all(&t, items.clone()).await;

    // The events sit in all 32 shards (and the unsharded partitions), keyed by shard.
    let mut per_pk: BTreeMap<String, usize> = BTreeMap::new();
    for item in t.all_audit_items().await {
        if s(&item, "orgId") == org {
            *per_pk.entry(s(&item, "pk")).or_default() += 1;
        }
    }
    let sharded: Vec<&String> = per_pk.keys().filter(|k| k.contains("#s")).collect();
    assert_eq!(sharded.len(), usize::from(AUDIT_SHARDS), "{per_pk:?}");
    assert_eq!(per_pk.len(), usize::from(AUDIT_SHARDS) + 3, "{per_pk:?}");

    let mut expected: Vec<(String, String)> =
        items.iter().filter(|i| s(i, "orgId") == org).map(|i| (s(i, "sk"), s(i, "secretName"))).collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0));
    let all: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
    let hot: Vec<String> = expected.iter().filter(|(_, n)| n == "hot").map(|(id, _)| id.clone()).collect();
    assert_eq!(all.len(), 750);

    let adm = admin(org, "ops");
    // One page holds all of them, newest first, nothing twice, nothing of the neighbour's.
    let r = t.send(Call::new("GET", "/vault/audit").token(&adm).query("limit", "1000")).await;
    assert_eq!((r.status, r.json["nextToken"].clone()), (200, json!(null)), "{}", r.status);
    assert_eq!(ids(&r), all);
    // Pages of every size join up to exactly the same list.
    for limit in [16, 250] {
        let paged = page_through(&t, || Call::new("GET", "/vault/audit").token(&adm), limit).await;
        assert_eq!(paged.len(), all.len(), "limit {limit}");
        assert_eq!(paged, all, "limit {limit}");
    }
    // One secret's trail: the index's shards and the unsharded days, merged the same way.
    for limit in [9, 500] {
        let paged = page_through(&t, || Call::new("GET", "/vault/secrets/hot/audit").token(&adm), limit).await;
        assert_eq!(paged, hot, "limit {limit}");
    }
    // Pages of one event each.
    let cold = page_through(&t, || Call::new("GET", "/vault/audit").token(&adm).query("secret", "cold"), 1).await;
    let expected_cold: Vec<String> = expected.iter().filter(|(_, n)| n == "cold").map(|(id, _)| id.clone()).collect();
    assert_eq!((cold.len(), &cold), (30, &expected_cold));
    // A filter that matches nothing, one event a page: an empty page and nothing to follow.
    let r = t
        .send(Call::new("GET", "/vault/audit").token(&adm).query("event", "vault.secret.deleted").query("limit", "1"))
        .await;
    assert_eq!((r.status, ids(&r).len(), &r.json["nextToken"]), (200, 0, &json!(null)), "{}", r.body);
    // A range before any id (1970): nothing, at once.
    let r = t
        .send(
            Call::new("GET", "/vault/audit")
                .token(&adm)
                .query("from", "0001-01-01T00:00:00Z")
                .query("to", "0001-03-01T00:00:00Z"),
        )
        .await;
    assert_eq!((r.status, ids(&r).len()), (200, 0), "{}", r.body);
    // A cursor as the build before the shards wrote it at a day's end (no id): everything of that day
    // and before, in order.
    use base64::Engine;
    let day = noon.date() - time::Duration::days(1);
    let old =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"d": format!("{day}"), "b": null}).to_string());
    let r = t.send(Call::new("GET", "/vault/audit").token(&adm).query("nextToken", &old).query("limit", "500")).await;
    let day_end = format!("{:012x}", (day + time::Duration::days(1)).midnight().assume_utc().unix_timestamp() * 1000);
    let older: Vec<String> = all.iter().filter(|id| id.as_str() < day_end.as_str()).cloned().collect();
    assert_eq!((r.status, ids(&r)), (200, older.clone()), "{}", r.body);
    assert_eq!(older.len(), 60 + 60, "two days before, and the unsharded days before");
    // A filter combined with paging: the created events only, 60 of them, two days ago.
    let created =
        page_through(&t, || Call::new("GET", "/vault/audit").token(&adm).query("event", "vault.secret.created"), 8)
            .await;
    assert_eq!(created.len(), 60);
    assert_eq!(created.iter().collect::<HashSet<_>>().len(), 60);
    assert!(created.windows(2).all(|w| w[0] > w[1]));
}

/// The load test of the spread: reads through the API (single and batch, as agents make them), then the
/// events counted per partition key. Every one of the 32 shards takes about an equal share: none more than
/// 1.5 times the mean nor less than half of it (the count per shard is binomial, with a standard deviation
/// of 12 around a mean of 156: the bounds are over 6 deviations away).
#[tokio::test]
async fn reads_spread_their_audit_events_over_every_shard() {
    let t = TestVault::start().await;
    let org = "org-load";
    let app = m2m(org, "client-a");
    let names: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    for n in &names {
        assert_eq!(t.send(put(&app, json!({"name": n, "value": "v"}))).await.status, 201);
    }
    for _ in 0..200 {
        let r = t.send(Call::new("POST", "/vault/secrets/batch-get").token(&app).json(&json!({"names": names}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for i in 0..1_000 {
        assert_eq!(t.send(get(&app, &names[i % 20])).await.status, 200);
    }
    let mut per_pk: BTreeMap<String, usize> = BTreeMap::new();
    for item in t.all_audit_items().await {
        if s(&item, "orgId") == org && s(&item, "event") == "vault.secret.retrieved" {
            *per_pk.entry(s(&item, "pk")).or_default() += 1;
        }
    }
    let total: usize = per_pk.values().sum();
    assert_eq!(total, 200 * 20 + 1_000);
    assert_eq!(per_pk.len(), usize::from(AUDIT_SHARDS), "{per_pk:?}");
    let mean = total as f64 / f64::from(AUDIT_SHARDS);
    let (min, max) = (*per_pk.values().min().unwrap(), *per_pk.values().max().unwrap());
    assert!((max as f64) < 1.5 * mean && (min as f64) > 0.5 * mean, "{per_pk:?}");
    // The per-secret index spreads one secret's events as well.
    let hot: Vec<Item> = t
        .all_audit_items()
        .await
        .into_iter()
        .filter(|i| s(i, "orgId") == org && s(i, "secretName") == "key-0" && s(i, "event") == "vault.secret.retrieved")
        .collect();
    let keys: HashSet<String> = hot.iter().map(|i| s(i, "secretKey")).collect();
    assert_eq!(hot.len(), 250);
    assert!(keys.len() >= 28, "{} index keys for one secret's 250 events", keys.len());
}

/// A local database kept from a build before the per-secret index: starting the stack again adds the
/// index to its audit table (as a stack update adds it to a deployed one), and one secret's trail is
/// then read from it.
#[tokio::test]
async fn an_audit_table_made_before_the_index_gets_it() {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let t = TestVault::start().await;
    let tables = token_vault::table::Tables { secrets: "old-secrets", audit: "old-audit", keys: "old-keys" };
    let attr = |n: &str| {
        AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().unwrap()
    };
    let key = |n: &str, k: KeyType| KeySchemaElement::builder().attribute_name(n).key_type(k).build().unwrap();
    t.client
        .create_table()
        .table_name(tables.audit)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .unwrap();
    vault_dev::create_tables(&t.client, tables).await.unwrap();
    let desc = t.client.describe_table().table_name(tables.audit).send().await.unwrap().table.unwrap();
    let index = desc.global_secondary_indexes().iter().find(|i| i.index_name() == Some(schema::SECRET_INDEX));
    let keys: Vec<&str> = index.unwrap().key_schema().iter().map(|k| k.attribute_name()).collect();
    assert_eq!(keys, [schema::SECRET_KEY, schema::SK]);
    // Starting again changes nothing.
    vault_dev::create_tables(&t.client, tables).await.unwrap();
    let item = audit_item("org-old", "k", EventKind::Retrieved, time::OffsetDateTime::now_utc());
    t.client.put_item().table_name(tables.audit).set_item(Some(item.clone())).send().await.unwrap();
    let found = t
        .client
        .query()
        .table_name(tables.audit)
        .index_name(schema::SECRET_INDEX)
        .key_condition_expression("secretKey = :k")
        .expression_attribute_values(":k", item[schema::SECRET_KEY].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(found.items().len(), 1);
}
