//! The vault's HTTP contract, driven through the real handlers against a real DynamoDB-compatible
//! server (dynoxide over HTTP, one fresh server per test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use vault_tests::*;

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.code(), code, "{}", r.body);
    assert_eq!(r.json["success"], json!(false));
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.body);
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
}

fn future(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[tokio::test]
async fn create_read_update_list_delete() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "client-a");

    let r = t
        .send(put(&tok, json!({"name": "openai_api_key", "value": "sk-abc123", "scope": [], "expiresAt": null})))
        .await;
    assert_eq!((r.status, &r.json), (201, &json!({"success": true, "action": "created", "version": 1})));
    assert_eq!(r.headers.get("cache-control").map(String::as_str), Some("no-store"));

    let r = t.send(get(&tok, "openai_api_key")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["name"], "openai_api_key");
    assert_eq!(r.json["value"], "sk-abc123");
    assert_eq!(r.json["scope"], json!([]));
    assert_eq!(r.json["expiresAt"], Value::Null);
    assert_eq!(r.json["ownership"], "app");
    let created_at = r.json["createdAt"].as_str().unwrap().to_owned();
    assert!(time::OffsetDateTime::parse(&created_at, &time::format_description::well_known::Rfc3339).is_ok());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expires = future(3600);
    let r = t
        .send(put(
            &tok,
            json!({"name": "openai_api_key", "value": "sk-rotated", "scope": ["payments"], "expiresAt": expires}),
        ))
        .await;
    assert_eq!((r.status, &r.json), (200, &json!({"success": true, "action": "updated", "version": 2})));

    let r = t.send(get(&m2m_scoped("org1", "client-a", "payments"), "openai_api_key")).await;
    assert_eq!(r.json["value"], "sk-rotated");
    assert_eq!(r.json["scope"], json!(["payments"]));
    let exp = time::OffsetDateTime::parse(
        r.json["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let want = time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(exp.unix_timestamp(), want.unix_timestamp());
    assert_eq!(r.json["createdAt"], created_at.as_str(), "createdAt is kept on update");
    assert_ne!(r.json["updatedAt"], created_at.as_str());

    let r = t.send(list(&tok)).await;
    assert_eq!(r.status, 200);
    let secrets = r.json["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0]["name"], "openai_api_key");
    assert_eq!(secrets[0]["scope"], json!(["payments"]));
    assert_eq!(secrets[0]["createdAt"], created_at.as_str());
    assert_eq!(secrets[0]["ownership"], "app");
    assert!(secrets[0].get("value").is_none() && !r.body.contains("sk-rotated"));
    assert_eq!(r.json["nextToken"], Value::Null);

    let r = t.send(delete(&tok, "openai_api_key")).await;
    assert_eq!((r.status, &r.json), (200, &json!({"success": true, "action": "deleted"})));
    assert_error(&t.send(get(&tok, "openai_api_key")).await, 404, "not_found");
    assert_error(&t.send(delete(&tok, "openai_api_key")).await, 404, "not_found");
    assert_eq!(t.send(list(&tok)).await.json["secrets"], json!([]));

    assert_eq!(
        t.audit_events("org1").await,
        [
            "vault.secret.created",
            "vault.secret.retrieved",
            "vault.secret.updated",
            "vault.secret.retrieved",
            "vault.secret.deleted"
        ]
    );
}

#[tokio::test]
async fn stored_items_hold_only_ciphertext() {
    let t = TestVault::start().await;
    t.send(put(&m2m("org1", "c"), json!({"name": "k", "value": "plaintext-marker-31337"}))).await;
    let items = t.all_secret_items().await;
    assert_eq!(items.len(), 2, "the organization's entry in the registry, and the secret");
    assert!(items.iter().all(|i| !i.contains_key("salt")), "no salt in the secrets table");
    assert_eq!(t.all_key_items().await.len(), 1, "the organization's salt, in the keys table");
    let dump = format!("{items:?}");
    assert!(!dump.contains("plaintext-marker-31337"));
    let secret = items.iter().find(|i| s(i, "sk") == "k").unwrap();
    assert_eq!(secret["encVersion"].as_n().unwrap(), "2", "envelope format 2 (usage bound in the AAD)");
    assert!(s(secret, "keyId").starts_with("mk-"));
    assert_eq!(secret["wrappedKey"].as_b().unwrap().as_ref().len(), 12 + 32 + 16);
    assert_eq!(secret["ciphertext"].as_b().unwrap().as_ref().len(), 12 + "plaintext-marker-31337".len() + 16);
}

#[tokio::test]
async fn authentication_failures_are_401_with_rfc6750_headers() {
    let t = TestVault::start().await;
    let r = t.send(Call::new("GET", "/vault/secrets")).await;
    assert_error(&r, 401, "missing_token");
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"token-vault\", error=\"invalid_token\"");

    let expired = token_with(
        &json!({"iss": ISSUER, "aud": AUDIENCE, "exp": 1_000_000, "org_id": "o", "client_id": "c", "gty": "client-credentials"}),
    );
    let other_secret = vault_dev::sign_hs256(
        b"another-secret-another-secret-another",
        &vault_dev::m2m_claims(ISSUER, AUDIENCE, "o", "c", "", 600),
    )
    .unwrap();
    let wrong_aud = token_with(&vault_dev::m2m_claims(ISSUER, "other", "o", "c", "", 600));
    for call in [
        Call::new("GET", "/vault/secrets").header("authorization", "Basic dXNlcjpwYXNz"),
        Call::new("GET", "/vault/secrets").token("not-a-jwt"),
        Call::new("GET", "/vault/secrets").token(&expired),
        Call::new("GET", "/vault/secrets").token(&other_secret),
        Call::new("GET", "/vault/secrets").token(&wrong_aud),
        get(&expired, "x"),
        delete(&other_secret, "x"),
        put(&wrong_aud, json!({"name": "x", "value": "y"})),
    ] {
        let r = t.send(call).await;
        assert_error(&r, 401, "invalid_token");
        assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"token-vault\", error=\"invalid_token\"");
        assert!(!r.body.contains(&expired) && !r.body.contains(&other_secret));
    }
    assert!(t.all_audit_items().await.is_empty(), "unauthenticated calls have no organization to audit into");
    assert!(t.all_secret_items().await.is_empty());
}

#[tokio::test]
async fn bad_input_is_refused_and_writes_nothing() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "c");
    let long_value = "v".repeat(65_537);
    let cases: Vec<(Call, u16, &str)> = vec![
        (
            Call::new("POST", "/vault/secrets")
                .token(&tok)
                .header("content-type", "application/json")
                .raw_body("{not json"),
            400,
            "invalid_json",
        ),
        (
            Call::new("POST", "/vault/secrets").token(&tok).header("content-type", "application/json"),
            400,
            "invalid_json",
        ),
        (
            Call::new("POST", "/vault/secrets").token(&tok).raw_body(r#"{"name":"a","value":"b"}"#),
            415,
            "unsupported_media_type",
        ),
        (
            Call::new("POST", "/vault/secrets")
                .token(&tok)
                .header("content-type", "text/plain")
                .raw_body(r#"{"name":"a","value":"b"}"#),
            415,
            "unsupported_media_type",
        ),
        (put(&tok, json!({"name": "a", "value": "b", "extra": true})), 400, "invalid_json"),
        (put(&tok, json!({"name": "a"})), 400, "invalid_json"),
        (put(&tok, json!({"value": "b"})), 400, "invalid_json"),
        (put(&tok, json!({"name": 5, "value": "b"})), 400, "invalid_json"),
        (put(&tok, json!({"name": "a", "value": 5})), 400, "invalid_json"),
        (put(&tok, json!({"name": "a", "value": "b", "scope": "payments"})), 400, "invalid_json"),
        (put(&tok, json!({"name": "a", "value": "b", "expiresAt": 1_900_000_000})), 400, "invalid_json"),
        (put(&tok, json!({"name": "", "value": "b"})), 400, "invalid_name"),
        (put(&tok, json!({"name": "a/b", "value": "b"})), 400, "invalid_name"),
        (put(&tok, json!({"name": "-a", "value": "b"})), 400, "invalid_name"),
        (put(&tok, json!({"name": "a".repeat(129), "value": "b"})), 400, "invalid_name"),
        (put(&tok, json!({"name": "a", "value": ""})), 400, "invalid_value"),
        (put(&tok, json!({"name": "a", "value": long_value})), 413, "value_too_large"),
        (put(&tok, json!({"name": "a", "value": "b", "scope": ["bad scope"]})), 400, "invalid_scope"),
        (
            put(
                &tok,
                json!({"name": "a", "value": "b", "scope": (0..21).map(|i| format!("s{i}")).collect::<Vec<_>>()}),
            ),
            400,
            "invalid_scope",
        ),
        (put(&tok, json!({"name": "a", "value": "b", "expiresAt": "2020-01-01T00:00:00Z"})), 400, "invalid_expires_at"),
        (put(&tok, json!({"name": "a", "value": "b", "expiresAt": "2099-01-01T00:00:00"})), 400, "invalid_expires_at"),
        (put(&tok, json!({"name": "a", "value": "b", "expiresAt": "next week"})), 400, "invalid_expires_at"),
        (
            Call::new("POST", "/vault/secrets")
                .token(&tok)
                .header("content-type", "application/json")
                .raw_body(&format!(r#"{{"name":"a","value":"{}"}}"#, "x".repeat(1024 * 1024))),
            413,
            "body_too_large",
        ),
        (put(&tok, json!({"name": "a", "value": "b"})).query("force", "1"), 400, "invalid_query"),
        (get(&tok, "bad%2Fname"), 400, "invalid_name"),
        (get(&tok, "..."), 400, "invalid_name"),
        (delete(&tok, ".hidden"), 400, "invalid_name"),
        (list(&tok).query("limit", "0"), 400, "invalid_limit"),
        (list(&tok).query("limit", "1001"), 400, "invalid_limit"),
        (list(&tok).query("limit", "ten"), 400, "invalid_limit"),
        (list(&tok).query("nextToken", "garbage!"), 400, "invalid_next_token"),
        (list(&tok).query("sort", "name"), 400, "invalid_query"),
    ];
    for (call, status, code) in cases {
        let r = t.send(call.clone()).await;
        assert_error(&r, status, code);
        assert!(r.body.len() < 1024, "error bodies stay small: {}", r.body.len());
    }
    // A value of exactly 65,536 bytes is accepted.
    let r = t.send(put(&tok, json!({"name": "max", "value": "v".repeat(65_536)}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let names: Vec<String> =
        t.all_secret_items().await.iter().filter(|i| !s(i, "pk").ends_with("#meta")).map(|i| s(i, "sk")).collect();
    assert_eq!(names, ["max"], "no refused request wrote a secret");
    assert_eq!(t.audit_events("org1").await, ["vault.secret.created"], "no audit event for refused input");
}

#[tokio::test]
async fn name_is_taken_from_the_raw_path_without_path_parameters() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "c");
    t.send(put(&tok, json!({"name": "stripe.key-1", "value": "v1"}))).await;
    let r = t.send(get(&tok, "stripe.key-1").without_path_params()).await;
    assert_eq!((r.status, &r.json["value"]), (200, &json!("v1")));
    let r = t.send(get(&tok, "stripe.key-1/").without_path_params()).await;
    assert_error(&r, 400, "invalid_name");
    let r = t.send(delete(&tok, "stripe.key-1").without_path_params()).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn app_and_user_ownership() {
    let t = TestVault::start().await;
    let app = m2m("org1", "client-a");
    let u1 = user("org1", "client-a", "auth0|u1");
    let u2 = user("org1", "client-a", "google-oauth2|u2");

    assert_eq!(t.send(put(&app, json!({"name": "shared", "value": "app-value"}))).await.status, 201);
    // Every user of the client reads the app-level secret.
    for u in [&u1, &u2] {
        let r = t.send(get(u, "shared")).await;
        assert_eq!((r.status, &r.json["value"], &r.json["ownership"]), (200, &json!("app-value"), &json!("app")));
    }
    // A user write creates that user's own secret; it shadows the app-level one for that user only.
    let r = t.send(put(&u1, json!({"name": "shared", "value": "u1-value"}))).await;
    assert_eq!((r.status, &r.json["action"]), (201, &json!("created")));
    assert_eq!(t.send(get(&u1, "shared")).await.json["value"], "u1-value");
    assert_eq!(t.send(get(&u1, "shared")).await.json["ownership"], "user");
    assert_eq!(t.send(get(&u2, "shared")).await.json["value"], "app-value");
    assert_eq!(t.send(get(&app, "shared")).await.json["value"], "app-value");

    // Listing shows both, each with its ownership.
    let r = t.send(list(&u1)).await;
    let got: Vec<(String, String)> = r.json["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["ownership"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(got, [("shared".to_owned(), "user".to_owned()), ("shared".to_owned(), "app".to_owned())]);
    assert_eq!(t.send(list(&app)).await.json["secrets"].as_array().unwrap().len(), 1);

    // A user cannot delete or change the app-level secret: its delete targets its own secret.
    assert_error(&t.send(delete(&u2, "shared")).await, 404, "not_found");
    assert_eq!(t.send(put(&u2, json!({"name": "shared", "value": "u2"}))).await.status, 201);
    assert_eq!(t.send(get(&app, "shared")).await.json["value"], "app-value");
    assert_eq!(t.send(delete(&u1, "shared")).await.status, 200);
    assert_eq!(t.send(get(&u1, "shared")).await.json["value"], "app-value");
    assert_eq!(t.send(get(&u2, "shared")).await.json["value"], "u2");
    // An M2M token never reaches a user-level secret.
    t.send(put(&u1, json!({"name": "personal", "value": "mine"}))).await;
    assert_error(&t.send(get(&app, "personal")).await, 404, "not_found");
    assert_error(&t.send(delete(&app, "personal")).await, 404, "not_found");
    assert_eq!(t.send(get(&u1, "personal")).await.json["value"], "mine");
}

#[tokio::test]
async fn organizations_clients_and_users_are_isolated() {
    let t = TestVault::start().await;
    let owner = m2m("org1", "client-a");
    let owner_user = user("org1", "client-a", "u1");
    t.send(put(&owner, json!({"name": "k", "value": "org1-a"}))).await;
    t.send(put(&owner_user, json!({"name": "mine", "value": "org1-u1"}))).await;
    let outsiders = [
        m2m("org2", "client-a"),
        m2m("org1", "client-b"),
        user("org2", "client-a", "u1"),
        user("org1", "client-b", "u3"),
        user("org1", "client-a", "u2"),
        admin("org2", "client-a"),
    ];
    for tok in &outsiders {
        for name in ["k", "mine"] {
            if tok == &outsiders[4] && name == "k" {
                continue; // a user of client-a reads client-a's app-level secret, by design
            }
            let r = t.send(get(tok, name)).await;
            assert_error(&r, 404, "not_found");
            assert_error(&t.send(delete(tok, name)).await, 404, "not_found");
        }
        let r = t.send(list(tok)).await;
        let names: Vec<&str> =
            r.json["secrets"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
        assert!(!names.contains(&"mine"));
    }
    // Writing the same name elsewhere creates a separate secret.
    for tok in &outsiders {
        let r = t.send(put(tok, json!({"name": "mine", "value": "other"}))).await;
        assert_eq!(r.status, if tok == &outsiders[5] { 200 } else { 201 }, "{}", r.body);
    }
    assert_eq!(t.send(get(&owner, "k")).await.json["value"], "org1-a");
    assert_eq!(t.send(get(&owner_user, "mine")).await.json["value"], "org1-u1");
    // User-level secrets follow the user (org + user id), whichever client of the organization it uses.
    assert_eq!(t.send(get(&user("org1", "client-b", "u1"), "mine")).await.json["value"], "org1-u1");
    // Names differ by case: they are different secrets.
    assert_error(&t.send(get(&owner, "K")).await, 404, "not_found");
}

#[tokio::test]
async fn key_encoding_keeps_tricky_ids_apart() {
    let t = TestVault::start().await;
    // With a naive `org#<org>#user#<user>` key these two principals would share one partition.
    let a = user("a", "c", "b#user#c");
    let b = user("a#user#b", "c", "c");
    let pipe = user("o", "c", "auth0|123");
    let slash = user("o", "c", "auth0/123");
    let pct = user("o", "c", "x%23y");
    let hash = user("o", "c", "x#y");
    let tokens = [&a, &b, &pipe, &slash, &pct, &hash];
    for (i, tok) in tokens.iter().enumerate() {
        let r = t.send(put(tok, json!({"name": "k", "value": format!("v{i}")}))).await;
        assert_eq!((r.status, &r.json["action"]), (201, &json!("created")), "token {i}");
    }
    for (i, tok) in tokens.iter().enumerate() {
        assert_eq!(t.send(get(tok, "k")).await.json["value"], format!("v{i}"), "token {i}");
        assert_eq!(t.send(list(tok)).await.json["secrets"].as_array().unwrap().len(), 1, "token {i}");
    }
}

#[tokio::test]
async fn admins_manage_other_clients_app_secrets_only() {
    let t = TestVault::start().await;
    let adm = admin("org1", "admin-client");
    let r = t.send(put(&adm, json!({"name": "k", "value": "for-b", "clientId": "client-b"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // It is client-b's app-level secret.
    assert_eq!(t.send(get(&m2m("org1", "client-b"), "k")).await.json["value"], "for-b");
    assert_eq!(t.send(get(&user("org1", "client-b", "u9"), "k")).await.json["value"], "for-b");
    assert_error(&t.send(get(&adm, "k")).await, 404, "not_found");
    let r = t.send(get(&adm, "k").query("clientId", "client-b")).await;
    assert_eq!((r.status, &r.json["value"], &r.json["clientId"]), (200, &json!("for-b"), &json!("client-b")));
    let r = t.send(list(&adm).query("clientId", "client-b")).await;
    assert_eq!(r.json["secrets"][0]["name"], "k");
    // An admin of another organization naming the client reaches nothing.
    assert_error(&t.send(get(&admin("org2", "x"), "k").query("clientId", "client-b")).await, 404, "not_found");
    // Admin status does not reach user-level secrets.
    t.send(put(&user("org1", "client-b", "u1"), json!({"name": "personal", "value": "p"}))).await;
    assert_error(&t.send(get(&adm, "personal").query("clientId", "client-b")).await, 404, "not_found");
    assert_error(&t.send(delete(&adm, "personal").query("clientId", "client-b")).await, 404, "not_found");
    // Admins as users too: a user holds the admin permission through `permissions` (Auth0 RBAC) ...
    let admin_user = admin_user("org1", "admin-client", "boss");
    let r = t.send(put(&admin_user, json!({"name": "k2", "value": "v", "clientId": "client-b"}))).await;
    assert_eq!(r.status, 201);
    // ... never through `scope`, which any user may ask for.
    let asked = user_scoped("org1", "admin-client", "mallory", "vault:admin");
    let r = t.send(put(&asked, json!({"name": "k3", "value": "v", "clientId": "client-b"}))).await;
    assert_error(&r, 403, "forbidden");

    // Anyone else sending clientId is refused, audited, and nothing is written.
    let before = t.all_secret_items().await.len();
    for tok in [m2m("org1", "client-a"), user("org1", "client-a", "u1"), m2m("org1", "client-b")] {
        let r = t.send(put(&tok, json!({"name": "evil", "value": "x", "clientId": "client-b"}))).await;
        assert_error(&r, 403, "forbidden");
        assert_error(&t.send(get(&tok, "k").query("clientId", "client-b")).await, 403, "forbidden");
        assert_error(&t.send(list(&tok).query("clientId", "client-b")).await, 403, "forbidden");
        assert_error(&t.send(delete(&tok, "k").query("clientId", "client-b")).await, 403, "forbidden");
    }
    assert_eq!(t.all_secret_items().await.len(), before);
    let denied = t.audit_events("org1").await.iter().filter(|e| *e == "vault.secret.access_denied").count();
    assert_eq!(denied, 12 + 1, "these twelve, and the user who had asked for the admin scope");
    assert_eq!(t.send(delete(&adm, "k").query("clientId", "client-b")).await.status, 200);
    assert_error(&t.send(get(&m2m("org1", "client-b"), "k")).await, 404, "not_found");
}

#[tokio::test]
async fn scoped_secrets_need_a_matching_scope() {
    let t = TestVault::start().await;
    let writer = m2m("org1", "c");
    t.send(put(&writer, json!({"name": "stripe", "value": "sk_live_1", "scope": ["payments", "billing"]}))).await;
    let r = t.send(get(&writer, "stripe")).await;
    assert_error(&r, 403, "insufficient_scope");
    assert!(!r.body.contains("sk_live_1"));
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"token-vault\", error=\"insufficient_scope\"");
    assert_error(&t.send(get(&admin("org1", "c"), "stripe")).await, 403, "insufficient_scope");
    assert_eq!(t.send(get(&m2m_scoped("org1", "c", "openid billing"), "stripe")).await.json["value"], "sk_live_1");
    assert_eq!(t.send(get(&user_scoped("org1", "c", "u", "payments"), "stripe")).await.json["value"], "sk_live_1");
    let scp = token_with(
        &json!({"iss": ISSUER, "aud": AUDIENCE, "exp": time::OffsetDateTime::now_utc().unix_timestamp() + 60,
        "org_id": "org1", "client_id": "c", "gty": "client-credentials", "scp": ["payments"]}),
    );
    // Auth0's tokens carry their scopes in `scope`: an `scp` is not read (Okta's and Entra's are, by their
    // profiles: auth/claims_tests.rs).
    assert_error(&t.send(get(&scp, "stripe")).await, 403, "insufficient_scope");
    let events = t.audit("org1").await;
    let denied: Vec<_> = events.iter().filter(|e| s(e, "event") == "vault.secret.access_denied").collect();
    assert_eq!(denied.len(), 3);
    assert_eq!(s(denied[0], "outcome"), "insufficient_scope");
    assert_eq!(s(denied[0], "secretName"), "stripe");
}

#[tokio::test]
async fn expired_secrets_vanish_and_can_be_recreated() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "c");
    let r = t.send(put(&tok, json!({"name": "short", "value": "v1", "expiresAt": future(2)}))).await;
    assert_eq!(r.status, 201);
    t.send(put(&tok, json!({"name": "long", "value": "v2", "expiresAt": future(3600)}))).await;
    // The expiry is DynamoDB's TTL attribute, and the table's TTL names it.
    let item = t.all_secret_items().await.into_iter().find(|i| s(i, "sk") == "short").unwrap();
    let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
    assert!((ttl - time::OffsetDateTime::now_utc().unix_timestamp() - 2).abs() <= 2);
    let spec = t.client.describe_time_to_live().table_name(SECRETS_TABLE).send().await.unwrap();
    assert_eq!(spec.time_to_live_description.unwrap().attribute_name.as_deref(), Some("ttl"));

    assert_eq!(t.send(get(&tok, "short")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // The item is still stored (nothing deletes it promptly), but it is gone for callers.
    assert!(t.all_secret_items().await.iter().any(|i| s(i, "sk") == "short"));
    assert_error(&t.send(get(&tok, "short")).await, 404, "not_found");
    assert_error(&t.send(delete(&tok, "short")).await, 404, "not_found");
    let names: Vec<String> = t.send(list(&tok)).await.json["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["long"]);
    // Writing the name again creates a new secret, with a new createdAt.
    let r = t.send(put(&tok, json!({"name": "short", "value": "v3"}))).await;
    assert_eq!((r.status, &r.json["action"]), (201, &json!("created")));
    let r = t.send(get(&tok, "short")).await;
    assert_eq!((&r.json["value"], &r.json["expiresAt"]), (&json!("v3"), &Value::Null));
    // Clearing an expiry on update removes the TTL.
    t.send(put(&tok, json!({"name": "long", "value": "v4", "expiresAt": null}))).await;
    assert_eq!(t.send(get(&tok, "long")).await.json["expiresAt"], Value::Null);
    let item = t.all_secret_items().await.into_iter().find(|i| s(i, "sk") == "long").unwrap();
    assert!(!item.contains_key("ttl"));
}

async fn page_names(t: &TestVault, call: Call) -> (Vec<String>, Option<String>) {
    let r = t.send(call).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let names = r.json["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}:{}", s["ownership"].as_str().unwrap(), s["name"].as_str().unwrap()))
        .collect();
    (names, r.json["nextToken"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn listing_paginates_across_owners_and_skips_expired() {
    let t = TestVault::start().await;
    let app = m2m("org1", "c");
    let u = user("org1", "c", "u");
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        t.send(put(&app, json!({"name": name, "value": "v"}))).await;
    }
    t.send(put(&app, json!({"name": "a3x", "value": "v", "expiresAt": future(1)}))).await;
    for name in ["u1", "u2"] {
        t.send(put(&u, json!({"name": name, "value": "v"}))).await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let mut all = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut call = list(&u).query("limit", "3");
        if let Some(tk) = &token {
            call = call.query("nextToken", tk);
        }
        let (names, next) = page_names(&t, call).await;
        assert!(names.len() <= 3);
        all.extend(names);
        pages += 1;
        assert!(pages < 10);
        match next {
            Some(n) => token = Some(n),
            None => break,
        }
    }
    assert_eq!(all, ["user:u1", "user:u2", "app:a1", "app:a2", "app:a3", "app:a4", "app:a5"]);
    assert_eq!(pages, 3);

    let (names, next) = page_names(&t, list(&app).query("limit", "2")).await;
    assert_eq!((names, next.is_some()), (vec!["app:a1".to_owned(), "app:a2".to_owned()], true));
    let (names, next) = page_names(&t, list(&app)).await;
    assert_eq!((names.len(), next), (5, None));
    // A page that ends exactly at the last secret may still offer a nextToken (DynamoDB cannot tell);
    // following it gives an empty last page that ends the listing.
    let (names, next) = page_names(&t, list(&app).query("limit", "5")).await;
    assert_eq!(names.len(), 5);
    let next = next.expect("a full page offers a nextToken");
    assert_eq!(page_names(&t, list(&app).query("nextToken", &next)).await, (vec![], None));
}

#[tokio::test]
async fn audit_events_record_who_what_and_where_but_no_value() {
    let t = TestVault::start().await;
    let u = user_scoped("org1", "client-a", "auth0|u1", "payments");
    t.send(put(&u, json!({"name": "k", "value": "audit-marker-value"})).header("user-agent", "agent/2.0")).await;
    t.send(get(&u, "k")).await;
    let events = t.audit("org1").await;
    assert_eq!(events.len(), 2);
    let e = &events[1];
    assert_eq!(s(e, "event"), "vault.secret.retrieved");
    assert_eq!(s(e, "orgId"), "org1");
    assert_eq!(s(e, "secretName"), "k");
    assert_eq!(s(e, "ownership"), "user");
    assert_eq!(s(e, "actorClientId"), "client-a");
    assert_eq!(s(e, "actorUserId"), "auth0|u1");
    assert_eq!(s(e, "tokenKind"), "user");
    assert!(s(e, "requestId").starts_with("req-"));
    assert_eq!(s(e, "sourceIp"), "203.0.113.7");
    assert_eq!(s(e, "userAgent"), "vault-tests/1.0");
    assert_eq!(s(&events[0], "userAgent"), "agent/2.0");
    assert_eq!(s(e, "outcome"), "success");
    assert!(s(e, "time").ends_with('Z'));
    let ttl: i64 = e["ttl"].as_n().unwrap().parse().unwrap();
    let expect = time::OffsetDateTime::now_utc().unix_timestamp() + 365 * 86_400;
    assert!((ttl - expect).abs() < 60);
    assert!(s(&events[0], "sk") < s(e, "sk"), "event ids are time-ordered");
    let dump = format!("{events:?}");
    assert!(!dump.contains("audit-marker-value") && !dump.contains(&u));

    // Retention follows VAULT_AUDIT_RETENTION_DAYS.
    let short = t.sibling(&[("VAULT_AUDIT_RETENTION_DAYS", "30")]).await;
    send_to(&short, get(&u, "k")).await;
    let newest = t.audit("org1").await.pop().unwrap();
    let ttl: i64 = newest["ttl"].as_n().unwrap().parse().unwrap();
    assert!((ttl - (time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400)).abs() < 60);
}

#[tokio::test]
async fn tampered_or_moved_ciphertext_is_an_audited_integrity_error() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "c");
    t.send(put(&tok, json!({"name": "a", "value": "value-of-a"}))).await;
    t.send(put(&tok, json!({"name": "b", "value": "value-of-b"}))).await;
    let pk = "org#org1#app#c";
    let a = t.secret_item(pk, "a").await.unwrap();
    let b = t.secret_item(pk, "b").await.unwrap();

    // One flipped byte.
    let mut flipped = a.clone();
    let mut ct = a["ciphertext"].as_b().unwrap().as_ref().to_vec();
    ct[20] ^= 1;
    flipped.insert("ciphertext".into(), AttributeValue::B(Blob::new(ct)));
    t.put_secret_item(flipped).await;
    let r = t.send(get(&tok, "a")).await;
    assert_error(&r, 500, "integrity_error");
    assert!(!r.body.contains("value-of"));

    // b's wrapped data key swapped into b... from a.
    let mut swapped = b.clone();
    swapped.insert("wrappedKey".into(), a["wrappedKey"].clone());
    t.put_secret_item(swapped).await;
    assert_error(&t.send(get(&tok, "b")).await, 500, "integrity_error");

    // a's whole item copied under another name, and to another client.
    let mut moved = a.clone();
    moved.insert("sk".into(), AttributeValue::S("c".into()));
    t.put_secret_item(moved).await;
    assert_error(&t.send(get(&tok, "c")).await, 500, "integrity_error");
    let mut moved = a.clone();
    moved.insert("pk".into(), AttributeValue::S("org#org1#app#d".into()));
    t.put_secret_item(moved).await;
    t.send(put(&m2m("org1", "d"), json!({"name": "other", "value": "x"}))).await;
    assert_error(&t.send(get(&m2m("org1", "d"), "a")).await, 500, "integrity_error");

    let integrity = t.audit_events("org1").await.iter().filter(|e| *e == "vault.secret.integrity_error").count();
    assert_eq!(integrity, 4);
    assert!(!t.audit_events("org1").await.contains(&"vault.secret.retrieved".to_owned()));
}

#[tokio::test]
async fn another_master_key_cannot_open_secrets() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "c");
    t.send(put(&tok, json!({"name": "k", "value": "v"}))).await;
    let other = t.sibling(&[("VAULT_MASTER_KEY", &"11".repeat(32))]).await;
    assert_error(&send_to(&other, get(&tok, "k")).await, 500, "integrity_error");
    assert_eq!(t.send(get(&tok, "k")).await.json["value"], "v");
}

#[tokio::test]
async fn no_value_or_token_reaches_a_log_line() {
    let t = TestVault::start().await;
    let tok = m2m_scoped("org-logs", "c", "s1");
    let values = ["log-marker-alpha-4242", "log-marker-beta-4242", "log-marker-gamma-4242"];
    t.send(put(&tok, json!({"name": "a", "value": values[0]}))).await;
    t.send(put(&tok, json!({"name": "a", "value": values[1], "scope": ["s2"]}))).await;
    t.send(get(&tok, "a")).await;
    t.send(put(&tok, json!({"name": "b", "value": values[2]}))).await;
    t.send(get(&tok, "b")).await;
    t.send(put(&tok, json!({"name": "bad name", "value": values[0]}))).await;
    t.send(put(&tok, json!({"name": "c", "value": [values[0]]}))).await;
    t.send(put(&tok, json!({"name": "c", "value": values[0], "extra": values[1]}))).await;
    let pk = "org#org-logs#app#c";
    let mut item = t.secret_item(pk, "b").await.unwrap();
    item.insert("ciphertext".into(), AttributeValue::B(Blob::new(vec![0; 40])));
    t.put_secret_item(item).await;
    t.send(get(&tok, "b")).await;
    t.client.delete_table().table_name(AUDIT_TABLE).send().await.unwrap();
    t.send(get(&tok, "a")).await;
    t.send(put(&tok, json!({"name": "a", "value": values[2]}))).await;

    let logs = logs();
    assert!(logs.contains("request completed") && logs.contains("integrity"), "logs were captured");
    for v in values {
        assert!(!logs.contains(v), "a value reached the logs");
    }
    assert!(!logs.contains(&tok), "a token reached the logs");
    assert!(!logs.contains(MASTER_KEY) && !logs.contains(HS256_SECRET), "key material reached the logs");
}

#[tokio::test]
async fn admins_list_every_app_secret_of_their_organization_from_the_index() {
    let t = TestVault::start().await;
    let adm = admin("org1", "admin-client");
    for (client, name) in [("client-b", "k2"), ("client-a", "k1"), ("client-b", "k1"), ("client#c", "z")] {
        let r = t.send(put(&adm, json!({"name": name, "value": "v", "clientId": client, "scope": ["s"]}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    t.send(put(&adm, json!({"name": "old", "value": "v", "clientId": "client-a", "expiresAt": future(1)}))).await;
    t.send(put(&user("org1", "client-a", "u1"), json!({"name": "personal", "value": "v"}))).await;
    t.send(put(&m2m("org2", "client-a"), json!({"name": "elsewhere", "value": "v"}))).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..5 {
        let mut call = list(&adm).query("all", "true").query("limit", "2");
        if let Some(n) = &next {
            call = call.query("nextToken", n);
        }
        let r = t.send(call).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for s in r.json["secrets"].as_array().unwrap() {
            assert!(s.get("value").is_none());
            assert_eq!(s["ownership"], "app");
            assert_eq!(s["scope"], json!(["s"]));
            seen.push(format!("{}/{}", s["clientId"].as_str().unwrap(), s["name"].as_str().unwrap()));
        }
        next = r.json["nextToken"].as_str().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["client#c/z", "client-a/k1", "client-b/k1", "client-b/k2"]);

    assert_error(&t.send(list(&m2m("org1", "client-a")).query("all", "true")).await, 403, "forbidden");
    assert_error(&t.send(list(&adm).query("all", "yes")).await, 400, "invalid_query");
    assert_error(&t.send(list(&adm).query("all", "true").query("clientId", "client-a")).await, 400, "invalid_query");
    // A cursor from one kind of listing is refused by the other.
    let r = t.send(list(&adm).query("all", "true").query("limit", "1")).await;
    let token = r.json["nextToken"].as_str().unwrap();
    assert_error(&t.send(list(&adm).query("nextToken", token)).await, 400, "invalid_next_token");
}
