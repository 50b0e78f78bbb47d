//! End-to-end smoke test over HTTP through `cargo lambda watch`, against the stack `scripts/dev` runs.
//! Ignored by default: `scripts/test` starts the stack and runs it with `--ignored`, given
//! `VAULT_SMOKE_URL` (the watch server) and `VAULT_SMOKE_TOKENS` (the tokens file `vault-local` wrote).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use serde_json::{Value, json};

fn setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set; run this through scripts/test"))
}

fn tokens() -> HashMap<String, String> {
    let text = std::fs::read_to_string(setting("VAULT_SMOKE_TOKENS")).unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = http.request(method, format!("{}{path}", setting("VAULT_SMOKE_URL")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let json = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, json)
}

#[tokio::test]
#[ignore = "needs the local stack; run by scripts/test"]
async fn the_local_stack_serves_the_api_over_http() {
    use reqwest::Method;
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)).build().unwrap();
    let tokens = tokens();
    let (m2m, user) = (&tokens["M2M_TOKEN"], &tokens["USER_TOKEN"]);
    let name = format!("smoke_{}", time::OffsetDateTime::now_utc().unix_timestamp_nanos());

    let (status, _, body) =
        call(&http, Method::POST, "/vault/secrets", Some(m2m), Some(json!({"name": name, "value": "sk-smoke"}))).await;
    assert_eq!((status, &body), (201, &json!({"success": true, "action": "created", "version": 1})));
    let (status, headers, body) = call(&http, Method::GET, &format!("/vault/secrets/{name}"), Some(m2m), None).await;
    assert_eq!((status, &body["value"]), (200, &json!("sk-smoke")));
    assert_eq!(headers["content-type"], "application/json");
    // A user of the same client reads the app-level secret, and sees it listed without its value.
    let (_, _, body) = call(&http, Method::GET, &format!("/vault/secrets/{name}"), Some(user), None).await;
    assert_eq!(body["value"], "sk-smoke");
    let (status, _, body) = call(&http, Method::GET, "/vault/secrets?limit=1000", Some(user), None).await;
    assert_eq!(status, 200);
    let listed = body["secrets"].as_array().unwrap().iter().find(|s| s["name"] == json!(name)).cloned().unwrap();
    assert_eq!(listed["ownership"], "app");
    assert!(listed.get("value").is_none());
    // Versions, batch reads, rollback and the audit log, through the same router.
    let (status, headers, body) =
        call(&http, Method::POST, "/vault/secrets", Some(m2m), Some(json!({"name": name, "value": "sk-two"}))).await;
    assert_eq!((status, &body["version"], headers["etag"].to_str().unwrap()), (200, &json!(2), "\"2\""));
    let (status, _, body) =
        call(&http, Method::GET, &format!("/vault/secrets/{name}?version=1"), Some(m2m), None).await;
    assert_eq!((status, &body["value"]), (200, &json!("sk-smoke")));
    let batch = json!({"names": [name, "smoke_absent"]});
    let (status, _, body) = call(&http, Method::POST, "/vault/secrets/batch-get", Some(m2m), Some(batch)).await;
    assert_eq!(
        (status, &body["secrets"][0]["value"], &body["errors"][0]["code"]),
        (200, &json!("sk-two"), &json!("not_found"))
    );
    let rollback = format!("/vault/secrets/{name}/rollback");
    let (status, _, body) = call(&http, Method::POST, &rollback, Some(m2m), Some(json!({"version": 1}))).await;
    assert_eq!((status, &body["version"]), (200, &json!(3)));
    let (status, _, body) = call(&http, Method::GET, &format!("/vault/secrets/{name}/audit"), Some(m2m), None).await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<&str> = body["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events[0], "vault.secret.rolled_back", "{events:?}");
    assert!(events.contains(&"vault.secret.created"));
    let (status, _, body) = call(&http, Method::GET, "/vault/audit?limit=5", Some(user), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["events"].as_array().unwrap().iter().all(|e| e["tokenKind"] == "user"), "{body}");

    let (status, _, body) = call(&http, Method::DELETE, &format!("/vault/secrets/{name}"), Some(m2m), None).await;
    assert_eq!((status, &body["action"]), (200, &json!("deleted")));
    let (status, _, body) = call(&http, Method::GET, &format!("/vault/secrets/{name}"), Some(m2m), None).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, headers, body) = call(&http, Method::GET, "/vault/secrets", None, None).await;
    assert_eq!((status, &body["error"]["code"]), (401, &json!("missing_token")));
    assert!(headers.contains_key("www-authenticate"));
}

#[test]
#[ignore = "builds a function binary; run by scripts/test"]
fn a_function_with_a_bad_master_key_refuses_to_start_with_one_clear_line() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["run", "--quiet", "-p", "get-secret"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("VAULT_MASTER_KEY", "not-a-key-0123")
        .env("VAULT_JWT_HS256_SECRET", "smoke-test-secret-0123456789-0123456789")
        .env("VAULT_SECRETS_TABLE", "s")
        .env("VAULT_AUDIT_TABLE", "a")
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let logs = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(lines[0].contains("refusing to start: VAULT_MASTER_KEY is invalid"), "{logs}");
    assert!(!lines[0].contains("not-a-key-0123"), "the bad key is not echoed");
}

/// The proxy as `cargo lambda watch` serves it (Lambda's streaming response protocol, as on AWS): the
/// value injected, the vault token kept back, and a streamed answer relayed event by event (the
/// upstream waits for the test to hold the first event before it sends the second).
#[tokio::test]
#[ignore = "needs the local stack; run by scripts/test"]
async fn the_proxy_streams_through_the_local_stack() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use vault_tests::upstream::TestUpstream;
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)).build().unwrap();
    let tokens = tokens();
    let m2m = &tokens["M2M_TOKEN"];
    let held_first = Arc::new(tokio::sync::Notify::new());
    let second_sent = Arc::new(AtomicBool::new(false));
    let (notify, sent) = (held_first.clone(), second_sent.clone());
    let upstream = TestUpstream::http(Arc::new(move |req, mut conn| {
        let (notify, sent) = (notify.clone(), sent.clone());
        Box::pin(async move {
            let auth = req.header("authorization").unwrap_or("").to_owned();
            conn.start_stream(200, &[("content-type", "text/event-stream"), ("x-seen-auth", &auth)]).await?;
            conn.chunk(b"data: one\n\n").await?;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), notify.notified()).await;
            sent.store(true, Ordering::SeqCst);
            conn.chunk(b"data: two\n\n").await?;
            conn.end().await
        })
    }))
    .await;
    let name = format!("smoke_proxy_{}", time::OffsetDateTime::now_utc().unix_timestamp_nanos());
    let body = json!({"name": name, "value": "sk-smoke-proxied", "access": "use-only",
        "upstream": {"baseUrl": upstream.http_url("/v1")}});
    let (status, _, reply) = call(&http, reqwest::Method::POST, "/vault/secrets", Some(m2m), Some(body)).await;
    assert_eq!(status, 201, "{reply}");
    let mut resp = http
        .post(format!("{}/vault/proxy/{name}/chat/completions?stream=true", setting("VAULT_SMOKE_URL")))
        .bearer_auth(m2m)
        .json(&json!({"stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The header echoing the injected value comes back scrubbed.
    assert_eq!(resp.headers()["x-seen-auth"], "Bearer [REDACTED]");
    let first = resp.chunk().await.unwrap().expect("a first event");
    assert!(!second_sent.load(Ordering::SeqCst), "the first event came only after the second was sent");
    assert_eq!(&first[..], b"data: one\n\n");
    held_first.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: two\n\n");
    let got = upstream.requests();
    assert_eq!(
        (got[0].target.as_str(), got[0].header("authorization")),
        ("/v1/chat/completions?stream=true", Some("Bearer sk-smoke-proxied"))
    );
    assert!(!got[0].raw.contains(m2m.as_str()));
    // Its value is never read back.
    let (status, _, reply) =
        call(&http, reqwest::Method::GET, &format!("/vault/secrets/{name}"), Some(m2m), None).await;
    assert_eq!((status, &reply["error"]["code"]), (403, &json!("use_only")));
}
