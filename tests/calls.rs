//! What each operation costs in DynamoDB requests on a warm container, counted by an SDK interceptor on
//! every request sent: the table in the README's performance section is this test's expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use token_vault::KeyUse;
use vault_tests::*;

#[tokio::test]
async fn each_operation_costs_the_requests_the_readme_lists() {
    let t = TestVault::start().await;
    let app = m2m("org1", "client-a");
    let u1 = user("org1", "client-a", "auth0|u1");
    for v in 0..3 {
        t.send(put(&app, json!({"name": "k", "value": format!("v{v}")}))).await;
    }
    t.send(put(&app, json!({"name": "gone", "value": "v"}))).await;
    let (vault, calls) = t.recorded(KeyUse::Required).await;
    // Warm the container: its organization key is derived (one salt read) on its first use.
    send_to(&vault, get(&app, "k")).await;
    assert_eq!(calls.take_requests(), ["GetItem", "GetItem", "PutItem"], "cold: the salt, the secret, the event");

    let batch = Call::new("POST", "/vault/secrets/batch-get").token(&u1).json(&json!({"names": ["k", "x", "y"]}));
    let expected: Vec<(&str, Call, &[&str])> = vec![
        ("read (M2M)", get(&app, "k"), &["GetItem", "PutItem"]),
        // A user token's two candidates (its own, then its client's) are read in parallel.
        ("read (user)", get(&u1, "k"), &["GetItem", "GetItem", "PutItem"]),
        ("read a retained version", get(&app, "k").query("version", "2"), &["GetItem", "GetItem", "PutItem"]),
        ("create", put(&app, json!({"name": "new", "value": "v"})), &["GetItem", "TransactWriteItems"]),
        ("update", put(&app, json!({"name": "k", "value": "v4"})), &["GetItem", "TransactWriteItems"]),
        ("list", list(&app), &["Query"]),
        ("batch read (3 names, user)", batch, &["BatchGetItem", "TransactWriteItems"]),
        (
            "rollback",
            Call::new("POST", "/vault/secrets/k/rollback").token(&app).json(&json!({"version": 3})),
            &["GetItem", "GetItem", "TransactWriteItems"],
        ),
        ("delete", delete(&app, "gone"), &["GetItem", "TransactWriteItems"]),
    ];
    for (what, call, requests) in expected {
        let r = send_to(&vault, call).await;
        assert!(r.status < 300, "{what}: {} {}", r.status, r.body);
        let mut sent = calls.take_requests();
        if what == "read (user)" {
            sent.sort();
        }
        assert_eq!(sent, requests, "{what}");
    }

    // The audit reader, for one secret: a Query on each of the per-secret index's 32 shards, and one on
    // each UTC day's partition from before the shards (the hour may span two days), concurrently.
    let (reader, calls) = t.recorded(KeyUse::None).await;
    let from = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = send_to(&reader, Call::new("GET", "/vault/secrets/k/audit").token(&app).query("from", &from)).await;
    assert_eq!(r.status, 200);
    let queries = calls.take_requests();
    assert!(queries.iter().all(|q| q == "Query") && (33..=34).contains(&queries.len()), "{queries:?}");
}
