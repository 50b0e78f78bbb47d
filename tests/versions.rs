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

/// A second container whose DynamoDB requests go through a proxy that can hold one of them: a test makes
/// it lose a race exactly, by holding its transaction while another writer commits, never by timing.
async fn held_container(t: &TestVault) -> (Arc<token_vault::Vault>, proxy::Proxy) {
    let proxy = proxy::Proxy::start(&t.endpoint).await;
    let vault = vault_over(isolated_client(&proxy.endpoint, "held").await, &[]).await;
    (Arc::new(vault), proxy)
}

/// Starts `call` on `vault` in the background.
fn spawn_call(vault: &Arc<token_vault::Vault>, call: Call) -> tokio::task::JoinHandle<Reply> {
    let vault = vault.clone();
    tokio::spawn(async move { send_to(&vault, call).await })
}

/// The value and version `GET ?version=N` returns, or the error code.
async fn read_version(t: &TestVault, tok: &str, v: u64) -> Result<(String, u64), String> {
    let r = t.send(get_version(tok, "k", &v.to_string())).await;
    match r.status {
        200 => Ok((r.json["value"].as_str().unwrap().to_owned(), r.json["version"].as_u64().unwrap())),
        _ => Err(r.code().to_owned()),
    }
}

/// The details of the write events of `k`, oldest first.
async fn write_details(t: &TestVault) -> Vec<String> {
    let mut events: Vec<(String, String)> = t
        .audit("org1")
        .await
        .iter()
        .filter(|e| s(e, "secretName") == "k" && s(e, "event") != "vault.secret.retrieved")
        .map(|e| (s(e, "sk"), format!("{} {}", s(e, "event"), s(e, "detail"))))
        .collect();
    events.sort();
    events.into_iter().map(|(_, d)| d).collect()
}

#[tokio::test]
async fn a_write_that_loses_a_race_takes_the_next_number_and_archives_what_it_replaced() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": "one"}))).await.status, 201);
    let (slow, proxy) = held_container(&t).await;
    let hold = proxy.hold_next("TransactWriteItems");
    let writer = spawn_call(&slow, put(&tok, json!({"name": "k", "value": "slow"})));
    hold.arrived().await;
    // While the slow writer's transaction waits, another writer updates the secret.
    let r = t.send(put(&tok, json!({"name": "k", "value": "fast"}))).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(2)));
    hold.release();
    let r = writer.await.unwrap();
    assert_eq!(
        (r.status, &r.json["action"], r.json["version"].as_u64()),
        (200, &json!("updated"), Some(3)),
        "{}",
        r.body
    );
    assert_eq!(read_version(&t, &tok, 3).await, Ok(("slow".into(), 3)), "the latest write is current");
    assert_eq!(read_version(&t, &tok, 2).await, Ok(("fast".into(), 2)), "what it replaced is kept");
    assert_eq!(read_version(&t, &tok, 1).await, Ok(("one".into(), 1)));
    assert_eq!(
        write_details(&t).await,
        ["vault.secret.created version=1", "vault.secret.updated version=2", "vault.secret.updated version=3"]
    );
}

#[tokio::test]
async fn an_overtaken_write_is_recorded_as_the_earlier_version_it_is() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": "one"}))).await.status, 201);
    let (slow, proxy) = held_container(&t).await;
    let first = proxy.hold_next("TransactWriteItems");
    let writer = spawn_call(&slow, put(&tok, json!({"name": "k", "value": "slow"})));
    first.arrived().await;
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": "two"}))).await.json["version"], 2);
    // The slow writer's first attempt fails; it takes number 3 from the sequence, and its commit of 3 is
    // held in turn while a third writer (which finds 3 taken) writes 4.
    let second = proxy.hold_next("TransactWriteItems");
    first.release();
    second.arrived().await;
    let r = t.send(put(&tok, json!({"name": "k", "value": "four"}))).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(4)), "{}", r.body);
    second.release();
    let r = writer.await.unwrap();
    assert_eq!(
        (r.status, &r.json["action"], r.json["version"].as_u64()),
        (200, &json!("updated"), Some(3)),
        "{}",
        r.body
    );
    // 3 was overtaken by 4: 4 stays current, and 3 is kept as the earlier version it is.
    assert_eq!(t.send(get(&tok, "k")).await.json["value"], "four");
    assert_eq!(read_version(&t, &tok, 3).await, Ok(("slow".into(), 3)));
    assert_eq!(read_version(&t, &tok, 2).await, Ok(("two".into(), 2)));
    assert_eq!(read_version(&t, &tok, 1).await, Ok(("one".into(), 1)));
    assert_eq!(
        write_details(&t).await,
        [
            "vault.secret.created version=1",
            "vault.secret.updated version=2",
            "vault.secret.updated version=4",
            "vault.secret.updated version=3 overtakenBy=4"
        ]
    );
}

#[tokio::test]
async fn a_write_overtaken_by_an_if_match_write_comes_after_it() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": "one"}))).await.status, 201);
    let (slow, proxy) = held_container(&t).await;
    let first = proxy.hold_next("TransactWriteItems");
    let writer = spawn_call(&slow, put(&tok, json!({"name": "k", "value": "slow"})));
    first.arrived().await;
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": "two"}))).await.json["version"], 2);
    let second = proxy.hold_next("TransactWriteItems");
    first.release();
    second.arrived().await;
    // The slow writer holds number 3; an exact update of version 2 (which it saw current) now succeeds
    // with the next number, 4. If-Match promised that nothing came between 2 and it, so the slow write
    // cannot be put before it: it comes after, as 5.
    let r = t.send(put_if(&tok, json!({"name": "k", "value": "exact"}), "if-match", "\"2\"")).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(4)), "{}", r.body);
    second.release();
    let r = writer.await.unwrap();
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(5)), "{}", r.body);
    assert_eq!(t.send(get(&tok, "k")).await.json["value"], "slow");
    assert_eq!(read_version(&t, &tok, 4).await, Ok(("exact".into(), 4)));
    assert_eq!(read_version(&t, &tok, 3).await, Err("version_not_found".into()), "3 was never a version");
    assert_eq!(read_version(&t, &tok, 2).await, Ok(("two".into(), 2)));
    assert_eq!(write_details(&t).await.len(), 4, "one event per write");
}

#[tokio::test]
async fn an_overtaken_write_past_the_retained_window_is_audited_only() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": "one"}))).await.status, 201);
    let (slow, proxy) = held_container(&t).await;
    let first = proxy.hold_next("TransactWriteItems");
    let writer = spawn_call(&slow, put(&tok, json!({"name": "k", "value": "slow"})));
    first.arrived().await;
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": "two"}))).await.json["version"], 2);
    let second = proxy.hold_next("TransactWriteItems");
    first.release();
    second.arrived().await;
    // While number 3 waits, five more versions are written: 3 falls out of the window before it lands.
    for (i, v) in (4..=8).enumerate() {
        let r = t.send(put(&tok, json!({"name": "k", "value": format!("later-{i}")}))).await;
        assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(v)), "{}", r.body);
    }
    second.release();
    let r = writer.await.unwrap();
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(3)), "{}", r.body);
    assert_eq!(read_version(&t, &tok, 3).await, Err("version_not_found".into()));
    for v in 4..=8 {
        assert!(read_version(&t, &tok, v).await.is_ok(), "v{v}");
    }
    let details = write_details(&t).await;
    assert_eq!(details.last().map(String::as_str), Some("vault.secret.updated version=3 overtakenBy=8 retained=false"));
    assert!(retained_items(&t, "k").await.len() <= 5, "a secret never holds more records than it retains");
}

#[tokio::test]
async fn secrets_stored_by_earlier_builds_keep_their_versions() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    for v in 1..=7 {
        t.send(put(&tok, json!({"name": "k", "value": format!("value-{v}")}))).await;
    }
    // Turn the stored items into the layout earlier builds wrote: no lifetime anywhere, and each
    // retained version at `k#v<version>` rather than in its record slot.
    let pk = "org#org1#app#client-a";
    for mut item in t.all_secret_items().await.into_iter().filter(|i| s(i, "pk") == pk) {
        item.remove("lifetime");
        item.remove("recorded");
        let old_sk = s(&item, "sk");
        if item.contains_key("versionOf") {
            let sk = format!("k#v{}", item["version"].as_n().unwrap());
            item.insert("sk".into(), AttributeValue::S(sk.clone()));
            item.insert("orgSk".into(), AttributeValue::S(format!("app#client-a#{sk}")));
            if sk != old_sk {
                t.client
                    .delete_item()
                    .table_name(SECRETS_TABLE)
                    .key("pk", AttributeValue::S(pk.into()))
                    .key("sk", AttributeValue::S(old_sk))
                    .send()
                    .await
                    .unwrap();
            }
        }
        t.client.put_item().table_name(SECRETS_TABLE).set_item(Some(item)).send().await.unwrap();
    }
    let keys = || async {
        let mut k: Vec<String> = retained_items(&t, "k").await.iter().map(|i| s(i, "sk")).collect();
        k.sort();
        k
    };
    assert_eq!(keys().await, ["k#v3", "k#v4", "k#v5", "k#v6"], "the earlier layout");
    for v in 3..=7 {
        assert_eq!(read_version(&t, &tok, v).await, Ok((format!("value-{v}"), v)), "before its next write: v{v}");
    }
    // The next write brings it to today's layout, and every retained version stays readable.
    let r = t.send(put(&tok, json!({"name": "k", "value": "value-8"}))).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(8)), "{}", r.body);
    for v in 4..=8 {
        assert_eq!(read_version(&t, &tok, v).await, Ok((format!("value-{v}"), v)), "after: v{v}");
    }
    assert_eq!(keys().await, ["k#v1", "k#v2", "k#v4", "k#v5"], "versions 6, 7, 4, 5 in their slots");
    assert!(t.all_secret_items().await.iter().filter(|i| s(i, "pk") == pk).all(|i| i.contains_key("lifetime")));
    assert_eq!(t.send(delete(&tok, "k")).await.status, 200);
    assert!(t.all_secret_items().await.iter().all(|i| s(i, "pk") != pk), "deleting it deletes every version");
}

#[tokio::test]
async fn rolling_back_needs_read_rights_on_the_version_restored() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    t.send(put(&tok, json!({"name": "k", "value": "scoped-old", "scope": ["a"]}))).await;
    t.send(put(&tok, json!({"name": "k", "value": "open-new"}))).await;
    // The owning client, with none of version 1's scopes: it may not read version 1 ...
    let unscoped = m2m_scoped("org1", "client-a", "b");
    let r = t.send(get_version(&unscoped, "k", "1")).await;
    assert_eq!((r.status, r.code()), (403, "insufficient_scope"));
    // ... so it may not restore it either (and then read it as the current version).
    let before = t.all_secret_items().await.len();
    let r = t.send(rollback(&unscoped, "k", 1)).await;
    assert_eq!((r.status, r.code()), (403, "insufficient_scope"), "{}", r.body);
    assert!(!r.body.contains("scoped-old"));
    assert_eq!(t.all_secret_items().await.len(), before, "nothing written");
    let r = t.send(get(&unscoped, "k")).await;
    assert_eq!((r.json["version"].as_u64(), &r.json["value"]), (Some(2), &json!("open-new")));
    let denied = t.audit("org1").await.iter().filter(|e| s(e, "event") == "vault.secret.access_denied").count();
    assert_eq!(denied, 2, "both refusals are audited");
    // A token holding the scope may.
    let r = t.send(rollback(&m2m_scoped("org1", "client-a", "a"), "k", 1)).await;
    assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(3)), "{}", r.body);
}

#[tokio::test]
async fn a_retained_version_is_gone_once_its_own_expiry_passes() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    t.send(put(&tok, json!({"name": "k", "value": "brief", "expiresAt": soon}))).await;
    // The secret lives on without an expiry; its first version had one.
    t.send(put(&tok, json!({"name": "k", "value": "lasting"}))).await;
    assert_eq!(t.send(get_version(&tok, "k", "1")).await.status, 200, "readable until its expiry");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = t.send(get_version(&tok, "k", "1")).await;
    assert_eq!((r.status, r.code()), (404, "version_not_found"), "{}", r.body);
    let r = t.send(rollback(&tok, "k", 1)).await;
    assert_eq!((r.status, r.code()), (404, "version_not_found"), "{}", r.body);
    assert_eq!(t.send(get(&tok, "k")).await.json["version"], 2);
}

fn history(token: &str, name: &str) -> Call {
    Call::new("GET", &format!("/vault/secrets/{name}/versions")).token(token)
}

fn listed_versions(r: &Reply) -> Vec<u64> {
    r.json["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_secrets_history_lists_its_retained_versions_newest_first_and_never_a_value() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    t.send(put(&tok, json!({"name": "k", "value": "value-1", "scope": ["a"]}))).await;
    t.send(put(&tok, json!({"name": "k", "value": "value-2", "scope": ["b"]}))).await;
    let r = t.send(history(&tok, "k")).await;
    assert_eq!((r.status, &r.json["name"]), (200, &json!("k")), "{}", r.body);
    assert_eq!(listed_versions(&r), [2, 1]);
    let versions = r.json["versions"].as_array().unwrap();
    assert_eq!((&versions[0]["current"], &versions[1]["current"]), (&json!(true), &json!(false)));
    // Each version with the scope it was written with; the creation date is the secret's.
    assert_eq!((&versions[0]["scope"], &versions[1]["scope"]), (&json!(["b"]), &json!(["a"])));
    assert_eq!(versions[0]["createdAt"], versions[1]["createdAt"]);
    assert!(!r.body.contains("value-") && versions.iter().all(|v| v.get("value").is_none()), "{}", r.body);
    // A token holding none of the scopes still sees the metadata, as a listing shows it.
    assert_eq!(t.send(history(&m2m_scoped("org1", "client-a", "c"), "k")).await.status, 200);

    // Past the retained five, the oldest drop out; a rollback is a new version.
    for v in 3..=7 {
        t.send(put(&tok, json!({"name": "k", "value": format!("value-{v}")}))).await;
    }
    assert_eq!(listed_versions(&t.send(history(&tok, "k")).await), [7, 6, 5, 4, 3]);
    assert_eq!(t.send(rollback(&tok, "k", 4)).await.status, 200);
    assert_eq!(listed_versions(&t.send(history(&tok, "k")).await), [8, 7, 6, 5, 4]);

    // A use-only secret's history is metadata too: access mode and upstream, no value.
    let body = json!({"name": "use", "value": "sk-use-only-secret", "access": "use-only",
        "upstream": {"baseUrl": "https://api.openai.com/v1"}});
    assert_eq!(t.send(put(&tok, body)).await.status, 201);
    let r = t.send(history(&tok, "use")).await;
    assert_eq!((r.status, &r.json["versions"][0]["access"]), (200, &json!("use-only")), "{}", r.body);
    assert_eq!(r.json["versions"][0]["upstream"]["baseUrl"], "https://api.openai.com/v1");
    assert!(!r.body.contains("sk-use-only-secret"));

    // Whose history: the caller's own; another client's only for an admin naming it.
    let other = m2m("org1", "client-b");
    assert_eq!(t.send(history(&other, "k")).await.json["error"]["code"], "not_found");
    let r = t.send(history(&other, "k").query("clientId", "client-a")).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (403, &json!("forbidden")));
    let r = t.send(history(&admin("org1", "ops"), "k").query("clientId", "client-a")).await;
    assert_eq!(listed_versions(&r), [8, 7, 6, 5, 4]);
    assert_eq!(t.send(history(&m2m("org2", "client-a"), "k")).await.status, 404, "another organization's");
    // A user sees its own secret's history first, then its client's.
    let u = user("org1", "client-a", "auth0|u1");
    assert_eq!(listed_versions(&t.send(history(&u, "k")).await), [8, 7, 6, 5, 4]);
    t.send(put(&u, json!({"name": "k", "value": "mine"}))).await;
    assert_eq!(listed_versions(&t.send(history(&u, "k")).await), [1]);

    // A deleted and recreated secret shows none of the earlier lifetime's versions.
    assert_eq!(t.send(delete(&tok, "k")).await.status, 200);
    assert_eq!(t.send(history(&tok, "k")).await.status, 404);
    t.send(put(&tok, json!({"name": "k", "value": "again"}))).await;
    assert_eq!(listed_versions(&t.send(history(&tok, "k")).await), [1]);

    // Bad input is refused before the store is asked.
    assert_eq!(t.send(history(&tok, "k").query("version", "1")).await.json["error"]["code"], "invalid_query");
    assert_eq!(t.send(history(&tok, "k").query("clientId", "")).await.status, 400);
    assert_eq!(t.send(history("", "k")).await.status, 401);
}
