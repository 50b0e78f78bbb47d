//! Batch reads (`POST /vault/secrets/batch-get`) and audit queries (`GET /vault/audit`,
//! `GET /vault/secrets/{name}/audit`), through the real handlers against a real DynamoDB-compatible
//! server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use token_vault::EventKind;
use vault_tests::*;

fn batch(token: &str, body: Value) -> Call {
    Call::new("POST", "/vault/secrets/batch-get").token(token).json(&body)
}

fn audit_query(token: &str) -> Call {
    Call::new("GET", "/vault/audit").token(token)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn names_of(r: &Reply, list: &str, field: &str) -> Vec<String> {
    r.json[list].as_array().unwrap().iter().map(|e| e[field].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test]
async fn batch_get_returns_what_the_caller_may_read_and_says_why_not_for_the_rest() {
    let t = TestVault::start().await;
    let app = m2m("org1", "client-a");
    let u1 = user("org1", "client-a", "auth0|u1");
    for (tok, name, value, scope) in [
        (&app, "shared", "shared-value", json!([])),
        (&app, "scoped", "scoped-value", json!(["payments"])),
        (&u1, "mine", "mine-value", json!([])),
        (&u1, "shared", "user-shadow-value", json!([])),
    ] {
        let r = t.send(put(tok, json!({"name": name, "value": value, "scope": scope}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    t.send(put(&m2m("org2", "client-a"), json!({"name": "foreign", "value": "foreign-value"}))).await;

    let r = t.send(batch(&u1, json!({"names": ["mine", "shared", "scoped", "missing", "foreign", "shared"]}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(names_of(&r, "secrets", "name"), ["mine", "shared"], "repeats are read once, in order");
    assert_eq!(r.json["secrets"][0]["value"], "mine-value");
    assert_eq!(r.json["secrets"][1]["value"], "user-shadow-value", "the user's own secret comes first, as in GET");
    assert_eq!(r.json["secrets"][1]["ownership"], "user");
    assert_eq!(r.json["secrets"][1]["version"], 1);
    assert_eq!(names_of(&r, "errors", "name"), ["scoped", "missing", "foreign"]);
    assert_eq!(names_of(&r, "errors", "code"), ["insufficient_scope", "not_found", "not_found"]);
    assert!(!r.body.contains("scoped-value") && !r.body.contains("foreign-value"));

    // One retrieval event per value returned, one refusal for the scoped one.
    let events = t.audit("org1").await;
    let of = |kind: &str| -> Vec<String> {
        let mut names: Vec<String> =
            events.iter().filter(|e| s(e, "event") == kind).map(|e| s(e, "secretName")).collect();
        names.sort();
        names
    };
    assert_eq!(of("vault.secret.retrieved"), ["mine", "shared"]);
    assert_eq!(of("vault.secret.access_denied"), ["scoped"]);
    assert!(
        events.iter().filter(|e| s(e, "event") == "vault.secret.retrieved").all(|e| s(e, "detail") == "batch=true")
    );

    // As few DynamoDB calls as the limits allow: 20 names of a user token (40 candidate items) are one
    // BatchGetItem, and their audit events one transaction (the organization key is cached by then).
    let (counted, calls) = t.recorded(token_vault::KeyUse::Required).await;
    let twenty: Vec<String> =
        ["mine", "shared"].into_iter().map(str::to_owned).chain((0..18).map(|i| format!("n{i}"))).collect();
    send_to(&counted, batch(&u1, json!({ "names": twenty }))).await;
    calls.take_requests();
    let r = send_to(&counted, batch(&u1, json!({ "names": twenty }))).await;
    assert_eq!(r.json["secrets"].as_array().unwrap().len(), 2);
    assert_eq!(calls.take_requests(), ["BatchGetItem", "TransactWriteItems"]);

    // An admin reads one client's app-level secrets by naming it; others may not name a client.
    let r = t.send(batch(&admin("org1", "ops"), json!({"names": ["shared", "mine"], "clientId": "client-a"}))).await;
    assert_eq!(names_of(&r, "secrets", "value"), ["shared-value"]);
    assert_eq!(names_of(&r, "errors", "code"), ["not_found"], "an admin never reaches a user's secret");
    let r = t.send(batch(&app, json!({"names": ["shared"], "clientId": "client-b"}))).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (403, &json!("forbidden")));
}

#[tokio::test]
async fn batch_get_validates_its_body_and_fails_closed() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");
    t.send(put(&tok, json!({"name": "k", "value": "the-value"}))).await;
    let many: Vec<String> = (0..21).map(|i| format!("n{i}")).collect();
    for (body, status, code) in [
        (json!({"names": []}), 400, "invalid_names"),
        (json!({"names": many}), 400, "invalid_names"),
        (json!({"names": ["ok", "a/b"]}), 400, "invalid_name"),
        (json!({"names": "k"}), 400, "invalid_json"),
        (json!({"names": ["k"], "extra": 1}), 400, "invalid_json"),
        (json!({}), 400, "invalid_json"),
        (json!({"names": ["k"], "clientId": null}), 400, "invalid_json"),
    ] {
        let r = t.send(batch(&tok, body.clone())).await;
        assert_eq!((r.status, r.json["error"]["code"].as_str()), (status, Some(code)), "{body}");
    }
    let twenty: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    let r = t.send(batch(&tok, json!({ "names": twenty }))).await;
    assert_eq!((r.status, r.json["errors"].as_array().unwrap().len()), (200, 20));
    let r = t.send(Call::new("POST", "/vault/secrets/batch-get").token(&tok).raw_body("{\"names\":[\"k\"]}")).await;
    assert_eq!(r.status, 415);
    let r = t.send(Call::new("POST", "/vault/secrets/batch-get").json(&json!({"names": ["k"]}))).await;
    assert_eq!(r.status, 401);

    // A tampered value is reported for that name alone, audited, never returned.
    let pk = token_vault::table::partition_key("org1", &token_vault::Owner::App { client_id: "client-a".into() });
    t.send(put(&tok, json!({"name": "tampered", "value": "tampered-value"}))).await;
    let mut item = t.secret_item(&pk, "tampered").await.unwrap();
    let mut ct = item["ciphertext"].as_b().unwrap().as_ref().to_vec();
    ct[20] ^= 1;
    item.insert("ciphertext".into(), aws_sdk_dynamodb::types::AttributeValue::B(ct.into()));
    t.put_secret_item(item).await;
    let r = t.send(batch(&tok, json!({"names": ["k", "tampered"]}))).await;
    assert_eq!(names_of(&r, "secrets", "value"), ["the-value"]);
    assert_eq!(names_of(&r, "errors", "code"), ["integrity_error"]);
    assert!(t.audit_events("org1").await.contains(&"vault.secret.integrity_error".to_owned()));

    // Without the audit table, no value leaves.
    t.client.delete_table().table_name(AUDIT_TABLE).send().await.unwrap();
    let r = t.send(batch(&tok, json!({"names": ["k"]}))).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (503, &json!("storage_unavailable")));
    assert!(!r.body.contains("the-value"));
}

/// Stores an audit event as if it happened at `at` (the API only ever writes "now").
async fn backdate(t: &TestVault, org: &str, at: time::OffsetDateTime, name: &str) {
    let item = audit_item(org, name, EventKind::Retrieved, at);
    t.client.put_item().table_name(AUDIT_TABLE).set_item(Some(item)).send().await.unwrap();
}

#[tokio::test]
async fn admins_query_their_organizations_audit_log_newest_first() {
    let t = TestVault::start().await;
    let app = m2m("org1", "client-a");
    let other_client = m2m("org1", "client-b");
    let u1 = user("org1", "client-a", "auth0|u1");
    let adm = admin("org1", "ops");
    t.send(put(&app, json!({"name": "alpha", "value": "v"}))).await;
    t.send(get(&app, "alpha")).await;
    t.send(put(&other_client, json!({"name": "beta", "value": "v"}))).await;
    t.send(put(&u1, json!({"name": "alpha", "value": "v"}))).await;
    t.send(get(&u1, "alpha")).await;
    t.send(put(&m2m("org2", "client-a"), json!({"name": "alpha", "value": "v"}))).await;
    let now = time::OffsetDateTime::now_utc();
    backdate(&t, "org1", now - time::Duration::days(3), "old-3").await;
    backdate(&t, "org1", now - time::Duration::days(40), "old-40").await;
    backdate(&t, "org2", now - time::Duration::days(3), "foreign-old").await;

    let r = t.send(audit_query(&adm)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let secrets = names_of(&r, "events", "secret");
    assert_eq!(secrets, ["alpha", "alpha", "beta", "alpha", "alpha", "old-3"], "newest first, 30 days by default");
    let events = names_of(&r, "events", "event");
    assert_eq!(events[..2], ["vault.secret.retrieved", "vault.secret.created"]);
    let times = names_of(&r, "events", "time");
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let first = &r.json["events"][0];
    assert_eq!(
        (&first["actorUserId"], &first["tokenKind"], &first["outcome"]),
        (&json!("auth0|u1"), &json!("user"), &json!("success"))
    );
    assert_eq!(r.json["nextToken"], Value::Null);

    // Filters, each alone and combined.
    let q = |k: &str, v: &str| audit_query(&adm).query(k, v);
    assert_eq!(names_of(&t.send(q("secret", "beta")).await, "events", "secret"), ["beta"]);
    assert_eq!(t.send(q("event", "vault.secret.created")).await.json["events"].as_array().unwrap().len(), 3);
    assert_eq!(
        names_of(&t.send(q("userId", "auth0|u1")).await, "events", "event"),
        ["vault.secret.retrieved", "vault.secret.created"]
    );
    assert_eq!(names_of(&t.send(q("clientId", "client-b")).await, "events", "secret"), ["beta"]);
    let r = t.send(audit_query(&adm).query("secret", "alpha").query("event", "vault.secret.retrieved")).await;
    assert_eq!(r.json["events"].as_array().unwrap().len(), 2);
    let from = rfc3339(now - time::Duration::days(60));
    let to = rfc3339(now - time::Duration::days(2));
    let r = t.send(audit_query(&adm).query("from", &from).query("to", &to)).await;
    assert_eq!(names_of(&r, "events", "secret"), ["old-3", "old-40"], "{}", r.body);

    // Paging through with limit=2 returns exactly the unpaged list.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let mut call = audit_query(&adm).query("limit", "2");
        if let Some(tok) = &token {
            call = call.query("nextToken", tok);
        }
        let r = t.send(call).await;
        assert_eq!(r.status, 200, "{}", r.body);
        paged.extend(names_of(&r, "events", "id"));
        token = r.json["nextToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(paged, names_of(&t.send(audit_query(&adm)).await, "events", "id"));

    // A nextToken taken to another time range resumes inside that range, never errs or strays out.
    let all = t.send(audit_query(&adm)).await;
    let first_today = all.json["events"][4]["time"].as_str().unwrap().to_owned();
    let token = t.send(audit_query(&adm).query("limit", "1")).await.json["nextToken"].as_str().unwrap().to_owned();
    let r = t.send(audit_query(&adm).query("nextToken", &token).query("to", &first_today)).await;
    assert_eq!((r.status, names_of(&r, "events", "secret")), (200, vec!["alpha".to_owned(), "old-3".to_owned()]));
    let r = t.send(audit_query(&adm).query("nextToken", &token).query("from", &rfc3339(now))).await;
    assert_eq!((r.status, r.json["events"].as_array().map(Vec::len)), (200, Some(0)), "{}", r.body);
    let r =
        t.send(audit_query(&adm).query("nextToken", &token).query("to", &rfc3339(now - time::Duration::days(2)))).await;
    assert_eq!((r.status, &r.json["error"]["code"]), (400, &json!("invalid_next_token")), "a day outside the range");

    // The shortcut for one secret.
    let r = t.send(Call::new("GET", "/vault/secrets/beta/audit").token(&adm)).await;
    assert_eq!((r.status, names_of(&r, "events", "secret")), (200, vec!["beta".to_owned()]));
    let r = t.send(Call::new("GET", "/vault/secrets/beta/audit").token(&adm).without_path_params()).await;
    assert_eq!(names_of(&r, "events", "secret"), ["beta"], "also without API Gateway's path parameters");
}

#[tokio::test]
async fn everyone_else_sees_only_their_own_events_and_bad_queries_are_refused() {
    let t = TestVault::start().await;
    let app = m2m("org1", "client-a");
    let u1 = user("org1", "client-a", "auth0|u1");
    let u2 = user("org1", "client-a", "auth0|u2");
    t.send(put(&app, json!({"name": "shared", "value": "v"}))).await;
    t.send(get(&u1, "shared")).await;
    t.send(get(&u2, "shared")).await;
    t.send(put(&u2, json!({"name": "own", "value": "v"}))).await;

    let r = t.send(audit_query(&u1)).await;
    assert_eq!(names_of(&r, "events", "actorUserId"), ["auth0|u1"]);
    let r = t.send(audit_query(&u1).query("userId", "auth0|u2")).await;
    assert!(r.json["events"].as_array().unwrap().is_empty(), "a filter never widens what a user sees");
    let r = t.send(Call::new("GET", "/vault/secrets/own/audit").token(&u1)).await;
    assert!(r.json["events"].as_array().unwrap().is_empty());
    let r = t.send(audit_query(&u2)).await;
    assert_eq!(names_of(&r, "events", "event"), ["vault.secret.created", "vault.secret.retrieved"]);
    let r = t.send(audit_query(&app)).await;
    assert_eq!(names_of(&r, "events", "event"), ["vault.secret.created"], "an M2M client sees its own, not its users'");
    assert!(t.send(audit_query(&m2m("org2", "client-a"))).await.json["events"].as_array().unwrap().is_empty());

    let adm = admin("org1", "ops");
    let now = time::OffsetDateTime::now_utc();
    let long_ago = rfc3339(now - time::Duration::days(93));
    let stale = token_vault_cursor("2001-01-01");
    for (call, status, code) in [
        (audit_query(&adm).query("from", &rfc3339(now)).query("to", &long_ago), 400, "invalid_time_range"),
        (audit_query(&adm).query("from", &long_ago), 400, "invalid_time_range"),
        (audit_query(&adm).query("from", "yesterday"), 400, "invalid_time_range"),
        (audit_query(&adm).query("event", "vault.secret.stolen"), 400, "invalid_query"),
        (audit_query(&adm).query("secret", "a/b"), 400, "invalid_name"),
        (audit_query(&adm).query("limit", "0"), 400, "invalid_limit"),
        (audit_query(&adm).query("nextToken", "garbage"), 400, "invalid_next_token"),
        (audit_query(&adm).query("nextToken", &stale), 400, "invalid_next_token"),
        (audit_query(&adm).query("orgId", "org2"), 400, "invalid_query"),
        (Call::new("GET", "/vault/secrets/own/audit").token(&adm).query("secret", "other"), 400, "invalid_query"),
        (Call::new("POST", "/vault/audit").token(&adm), 405, "method_not_allowed"),
        (Call::new("GET", "/vault/audit"), 401, "missing_token"),
    ] {
        let r = t.send(call).await;
        assert_eq!((r.status, r.json["error"]["code"].as_str()), (status, Some(code)), "{}", r.body);
    }
}

/// A syntactically valid audit `nextToken` for `day`.
fn token_vault_cursor(day: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"d": day, "b": null}).to_string())
}
