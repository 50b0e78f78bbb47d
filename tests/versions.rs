//! Versions, ETags, conditional writes (`If-Match`, `If-None-Match`) and rollback, through the real
//! handlers against a real DynamoDB-compatible server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use vault_tests::*;

fn etag(r: &Reply) -> Option<&str> {
    r.headers.get("etag").map(String::as_str)
}

fn put_if(token: &str, body: Value, header: &str, value: &str) -> Call {
    put(token, body).header(header, value)
}

fn rollback(token: &str, name: &str, version: u64) -> Call {
    Call::new("POST", &format!("/vault/secrets/{name}/rollback")).token(token).json(&json!({"version": version}))
}

fn get_version(token: &str, name: &str, version: &str) -> Call {
    get(token, name).query("version", version)
}

/// The retained-version items stored for `name` (read directly from the table).
async fn retained_items(t: &TestVault, name: &str) -> Vec<Item> {
    t.all_secret_items().await.into_iter().filter(|i| s(i, "versionOf") == name).collect()
}

#[tokio::test]
async fn every_write_is_a_new_version_and_the_last_five_stay_readable() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");

    let r = t.send(put(&tok, json!({"name": "k", "value": "value-1", "scope": ["a"]}))).await;
    assert_eq!((r.status, r.json["version"].as_u64(), etag(&r)), (201, Some(1), Some("\"1\"")));
    let scoped = m2m_scoped("org1", "client-a", "a b");
    for v in 2..=3 {
        let r = t.send(put(&tok, json!({"name": "k", "value": format!("value-{v}"), "scope": ["b"]}))).await;
        assert_eq!((r.status, &r.json["action"], r.json["version"].as_u64()), (200, &json!("updated"), Some(v)));
        assert_eq!(etag(&r), Some(format!("\"{v}\"").as_str()));
    }

    let r = t.send(get(&scoped, "k")).await;
    assert_eq!(
        (r.status, &r.json["value"], r.json["version"].as_u64(), etag(&r)),
        (200, &json!("value-3"), Some(3), Some("\"3\""))
    );
    let created_at = r.json["createdAt"].clone();

    // An earlier version comes back with its own value and metadata.
    let r = t.send(get_version(&scoped, "k", "1")).await;
    assert_eq!((r.status, &r.json["value"], r.json["version"].as_u64()), (200, &json!("value-1"), Some(1)));
    assert_eq!((&r.json["scope"], &r.json["createdAt"]), (&json!(["a"]), &created_at));
    assert_eq!(etag(&r), Some("\"1\""));
    // Its scope still gates it: a token holding only the current scope cannot read a version scoped `a`.
    let r = t.send(get_version(&m2m_scoped("org1", "client-a", "b"), "k", "1")).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (403, &json!("insufficient_scope")));
    assert!(!r.body.contains("value-1"));

    for v in 4..=7 {
        let r = t.send(put(&tok, json!({"name": "k", "value": format!("value-{v}")}))).await;
        assert_eq!(r.json["version"].as_u64(), Some(v));
    }
    for v in 3..=7 {
        let r = t.send(get_version(&scoped, "k", &v.to_string())).await;
        assert_eq!((r.status, r.json["value"].as_str()), (200, Some(format!("value-{v}").as_str())), "v{v}");
    }
    for v in ["1", "2", "8", "99999999999"] {
        let r = t.send(get_version(&tok, "k", v)).await;
        assert_eq!((r.status, &r.json["error"]["code"]), (404, &json!("version_not_found")), "v{v}");
        assert!(!r.body.contains("value-"), "{}", r.body);
    }
    for v in ["0", "-1", "abc", "1.5", "+3", ""] {
        let r = t.send(get_version(&tok, "k", v)).await;
        assert_eq!((r.status, &r.json["error"]["code"]), (400, &json!("invalid_version")), "v{v:?}");
    }
    // Exactly four earlier versions are stored; listings show each secret once, at its current version.
    assert_eq!(retained_items(&t, "k").await.len(), 4);
    let r = t.send(list(&tok)).await;
    assert_eq!(r.json["secrets"].as_array().unwrap().len(), 1, "{}", r.body);
    assert_eq!(r.json["secrets"][0]["version"], 7);
    let r = t.send(list(&admin("org1", "admin")).query("all", "true")).await;
    assert_eq!(r.json["secrets"].as_array().unwrap().len(), 1, "{}", r.body);

    // Reading a version is audited as a retrieval of that version.
    let events = t.audit("org1").await;
    let versioned =
        events.iter().filter(|e| s(e, "event") == "vault.secret.retrieved" && s(e, "detail") == "version=1");
    assert_eq!(versioned.count(), 1);
}

#[tokio::test]
async fn if_match_and_if_none_match_guard_writes() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    let body = |v: &str| json!({"name": "k", "value": v});

    // If-None-Match: * creates only.
    let r = t.send(put_if(&tok, body("one"), "if-none-match", "*")).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (201, Some(1)));
    let r = t.send(put_if(&tok, body("clobber"), "if-none-match", "*")).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (412, &json!("version_conflict")));
    assert!(!r.body.contains("clobber"));
    assert_eq!(t.send(get(&tok, "k")).await.json["value"], "one", "a refused write changes nothing");

    // If-Match: the current version updates; a stale one is refused.
    let r = t.send(put_if(&tok, body("two"), "if-match", "\"1\"")).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(2)));
    let r = t.send(put_if(&tok, body("stale"), "if-match", "\"1\"")).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (412, &json!("version_conflict")));
    let r = t.send(put_if(&tok, body("three"), "if-match", "\"2\"")).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(3)));
    let r = t.send(put_if(&tok, body("four"), "if-match", "*")).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(4)));
    let r = t.send(put_if(&tok, json!({"name": "absent", "value": "x"}), "if-match", "*")).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (412, &json!("version_conflict")), "If-Match on nothing");
    assert_eq!(t.send(get(&tok, "absent")).await.status, 404);

    let r = t.send(put_if(&tok, body("five"), "if-match", "4")).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(5)), "a bare version works as a tag");
    for (header, value) in [
        ("if-match", "\"1"),
        ("if-match", "\"x\""),
        ("if-match", "\"\""),
        ("if-match", "W/\"4\""),
        ("if-match", "\"4\", \"5\""),
        ("if-match", "\"99999999999999999999\""),
        ("if-none-match", "\"1\""),
    ] {
        let r = t.send(put_if(&tok, body("bad"), header, value)).await;
        assert_eq!((r.status, &r.json["error"]["code"]), (400, &json!("invalid_precondition")), "{header}: {value}");
    }
    let r = t.send(put(&tok, body("both")).header("if-match", "*").header("if-none-match", "*")).await;
    assert_eq!(r.status, 400);
    // Only the five accepted writes left events: no refused precondition was recorded as a write.
    let writes = t.audit_events("org1").await.into_iter().filter(|e| e.ends_with("created") || e.ends_with("updated"));
    assert_eq!(writes.count(), 5);

    // DELETE honours If-Match too.
    let r = t.send(delete(&tok, "k").header("if-match", "\"4\"")).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (412, &json!("version_conflict")));
    let r = t.send(delete(&tok, "k").header("if-none-match", "*")).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (400, &json!("invalid_precondition")));
    let r = t.send(delete(&tok, "k").header("if-match", "\"5\"")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn concurrent_conditional_updates_let_exactly_one_win() {
    let t = Arc::new(TestVault::start().await);
    let tok = m2m("org1", "client-a");
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": "base"}))).await.status, 201);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (t, tok) = (t.clone(), tok.clone());
        tasks.push(tokio::spawn(async move {
            let r =
                t.send(put_if(&tok, json!({"name": "k", "value": format!("writer-{i}")}), "if-match", "\"1\"")).await;
            (i, r.status)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, status) = task.await.unwrap();
        match status {
            200 => winners.push(i),
            412 => {}
            other => panic!("writer {i}: unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one If-Match writer wins: {winners:?}");
    let r = t.send(get(&tok, "k")).await;
    assert_eq!((&r.json["value"], r.json["version"].as_u64()), (&json!(format!("writer-{}", winners[0])), Some(2)));
}

#[tokio::test]
async fn rollback_restores_an_earlier_version_as_a_new_one() {
    let t = TestVault::start().await;
    let tok = m2m_scoped("org1", "client-a", "a b");
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(3))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    t.send(put(&tok, json!({"name": "k", "value": "first", "scope": ["a"]}))).await;
    t.send(put(&tok, json!({"name": "k", "value": "second", "scope": ["b"], "expiresAt": expires}))).await;

    let r = t.send(rollback(&tok, "k", 1)).await;
    assert_eq!(
        (r.status, &r.json, etag(&r)),
        (200, &json!({"success": true, "action": "rolled_back", "version": 3}), Some("\"3\""))
    );
    let r = t.send(get(&tok, "k")).await;
    assert_eq!(
        (&r.json["value"], &r.json["scope"], r.json["version"].as_u64()),
        (&json!("first"), &json!(["a"]), Some(3))
    );
    assert!(r.json["expiresAt"].is_string(), "the expiry is the secret's, kept: {}", r.body);
    let r = t.send(get_version(&tok, "k", "2")).await;
    assert_eq!(r.json["value"], "second", "the replaced version stays readable");

    // Rolling back to the current version is allowed (a new version with the same value).
    let r = t.send(rollback(&tok, "k", 3)).await;
    assert_eq!(r.json["version"], 4);

    for (call, status, code) in [
        (rollback(&tok, "k", 9), 404, "version_not_found"),
        (rollback(&tok, "absent", 1), 404, "not_found"),
        (rollback(&tok, "k", 0), 400, "invalid_version"),
        (rollback(&tok, "k", 2).header("if-match", "\"3\""), 412, "version_conflict"),
        (rollback(&m2m("org1", "client-b"), "k", 1), 404, "not_found"),
        (rollback(&m2m("org2", "client-a"), "k", 1), 404, "not_found"),
        (
            Call::new("POST", "/vault/secrets/k/rollback").token(&tok).json(&json!({"version": "1"})),
            400,
            "invalid_json",
        ),
        (
            Call::new("POST", "/vault/secrets/k/rollback").token(&tok).raw_body("{\"version\":1}"),
            415,
            "unsupported_media_type",
        ),
    ] {
        let r = t.send(call).await;
        assert_eq!((r.status, r.json["error"]["code"].as_str()), (status, Some(code)), "{}", r.body);
        assert!(!r.body.contains("first") && !r.body.contains("second"));
    }
    assert_eq!(t.send(get(&tok, "k")).await.json["version"], 4, "no refused rollback changed anything");
    let r = t.send(rollback(&tok, "k", 2).header("if-match", "\"4\"")).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(5)));
    assert_eq!(t.send(get(&tok, "k")).await.json["value"], "second");

    let rolled: Vec<String> = t
        .audit("org1")
        .await
        .iter()
        .filter(|e| s(e, "event") == "vault.secret.rolled_back")
        .map(|e| s(e, "detail"))
        .collect();
    assert_eq!(rolled, ["fromVersion=1 version=3", "fromVersion=3 version=4", "fromVersion=2 version=5"]);
}

#[tokio::test]
async fn deleted_or_expired_secrets_keep_no_readable_versions() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    for v in 1..=3 {
        t.send(put(&tok, json!({"name": "gone", "value": format!("old-{v}")}))).await;
    }
    assert_eq!(retained_items(&t, "gone").await.len(), 2);
    assert_eq!(t.send(delete(&tok, "gone")).await.status, 200);
    assert!(retained_items(&t, "gone").await.is_empty(), "deleting a secret deletes its versions");
    assert_eq!(t.send(get_version(&tok, "gone", "2")).await.status, 404);
    let r = t.send(put(&tok, json!({"name": "gone", "value": "new-1"}))).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (201, Some(1)));
    assert_eq!(t.send(get_version(&tok, "gone", "2")).await.json["error"]["code"], "version_not_found");

    // An expired secret: its versions are unreadable at once, and replacing it removes them.
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for v in 1..=3 {
        t.send(put(&tok, json!({"name": "brief", "value": format!("old-{v}"), "expiresAt": soon}))).await;
    }
    assert_eq!(retained_items(&t, "brief").await.len(), 2);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    for v in ["1", "2", "3"] {
        let r = t.send(get_version(&tok, "brief", v)).await;
        assert_eq!((r.status, &r.json["error"]["code"]), (404, &json!("not_found")), "v{v}");
    }
    let r = t.send(put(&tok, json!({"name": "brief", "value": "fresh-1"}))).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (201, Some(1)));
    assert!(retained_items(&t, "brief").await.is_empty(), "replacing an expired secret removes its versions");
    t.send(put(&tok, json!({"name": "brief", "value": "fresh-2"}))).await;
    let r = t.send(get_version(&tok, "brief", "1")).await;
    assert_eq!(r.json["value"], "fresh-1", "version 1 is the new secret's, never the expired one's");
}
