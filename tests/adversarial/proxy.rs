//! The credential-injection proxy through its real handler, against a real DynamoDB-compatible server
//! and upstreams on loopback written here (plain HTTP under the local switch, HTTPS under a test CA),
//! which record what they received: the injection, streaming, TLS, and the adversarial rows (SSRF, path
//! tricks, methods, bodies, redirects, echoes, other callers, limits under concurrency, and every way to
//! send an existing value elsewhere). Its logs, error bodies, relayed bodies and audit records go to the
//! leak check with the other suites'.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use token_vault::ProxyOptions;
use vault_tests::upstream::{Respond, TestUpstream, UPSTREAM_HOST, answer_json, test_ca};
use vault_tests::*;

const ORG: &str = "org-proxy";
use super::leaks;

/// Carries the leak check's marker: found anywhere it must not be, it fails the binary.
const VALUE: &str = "SECRETVALUE-proxy-9f8e7d6c5b4a";

/// A use-only secret for `base_url`, with `extra` upstream fields.
fn use_only(name: &str, value: &str, base_url: &str, extra: Value) -> Value {
    let mut upstream = json!({"baseUrl": base_url});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        upstream[k] = v;
    }
    json!({"name": name, "value": value, "access": "use-only", "upstream": upstream})
}

fn call(method: &'static str, path: &str, token: &str) -> Call {
    Call::new(method, path).token(token)
}

async fn create(tv: &TestVault, token: &str, body: Value) {
    let r = tv.send(put(token, body)).await;
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
}

fn echo_everything() -> Respond {
    Arc::new(|req, mut conn| {
        Box::pin(async move {
            let body = json!({"method": req.method, "target": req.target, "headers": req.headers, "body": String::from_utf8_lossy(&req.body)});
            conn.send(200, &[("content-type", "application/json"), ("x-upstream", "yes")], body.to_string().as_bytes())
                .await
        })
    })
}

pub async fn the_value_is_injected_and_the_vault_token_stays_behind() {
    let (tv, proxy) = proxy_stack().await;
    let upstream = TestUpstream::http(answer_json(200, json!({"id": "chatcmpl-1", "ok": true}))).await;
    let token = m2m(ORG, "agent");
    create(&tv, &token, use_only("openai", VALUE, &upstream.http_url("/v1"), json!({}))).await;

    let reply = send_proxy(
        &proxy,
        call("POST", "/vault/proxy/openai/chat/completions", &token)
            .query("stream", "false")
            .header("cookie", "session=abc")
            .header("x-forwarded-for", "10.9.9.9")
            .header("openai-beta", "assistants=v2")
            .header("accept-encoding", "gzip")
            .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!((reply.status, reply.headers["content-type"].as_str()), (200, "application/json"));
    assert_eq!(reply.json().await, json!({"id": "chatcmpl-1", "ok": true}));

    let got = upstream.requests();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/v1/chat/completions?stream=false"));
    assert_eq!(req.header("authorization"), Some(format!("Bearer {VALUE}").as_str()));
    assert_eq!(req.header("openai-beta"), Some("assistants=v2"));
    assert_eq!(req.header("accept-encoding"), Some("identity"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("host"), Some(format!("127.0.0.1:{}", upstream.port).as_str()));
    for gone in ["cookie", "x-forwarded-for", "x-api-key"] {
        assert_eq!(req.header(gone), None, "{gone} was forwarded");
    }
    assert!(!req.raw.contains(&token), "the vault token reached the upstream");
    assert_eq!(serde_json::from_slice::<Value>(&req.body).unwrap()["model"], "gpt-test");

    // The use is on record before the call: who, which host, which path (no query values).
    let used: Vec<Item> = tv.audit(ORG).await.into_iter().filter(|i| s(i, "event") == "vault.secret.used").collect();
    assert_eq!(used.len(), 1);
    assert_eq!(s(&used[0], "actorClientId"), "agent");
    assert_eq!(
        s(&used[0], "detail"),
        format!("method=POST host=127.0.0.1:{} path=/v1/chat/completions", upstream.port)
    );
    // And the audit query shows it (the last use, and by whom).
    let r = tv
        .send(Call::new("GET", "/vault/secrets/openai/audit").token(&token).query("event", "vault.secret.used"))
        .await;
    assert_eq!((r.status, r.json["events"][0]["actorClientId"].as_str()), (200, Some("agent")), "{}", r.body);
    leaks::keep(&tv).await;
}

pub async fn a_use_only_value_is_refused_on_every_read_route_and_listed_without_it() {
    let (tv, proxy) = proxy_stack().await;
    let upstream = TestUpstream::http(answer_json(200, json!({}))).await;
    let token = m2m(ORG, "reader");
    let admin = admin(ORG, "ops");
    create(&tv, &token, use_only("stripe", VALUE, &upstream.http_url(""), json!({"paths": ["/v1/charges"]}))).await;
    create(&tv, &token, use_only("stripe", "SECRETVALUE-second-value", &upstream.http_url(""), json!({}))).await;

    for r in [
        tv.send(get(&token, "stripe")).await,
        tv.send(get(&token, "stripe").query("version", "1")).await,
        tv.send(get(&admin, "stripe").query("clientId", "reader")).await,
    ] {
        assert_eq!((r.status, r.code()), (403, "use_only"), "{}", r.body);
        assert!(!r.body.contains(VALUE) && !r.body.contains("second-value"));
    }
    let batch = json!({"names": ["stripe"]});
    let r = tv.send(Call::new("POST", "/vault/secrets/batch-get").token(&token).json(&batch)).await;
    assert_eq!((r.status, &r.json["errors"][0]["code"], &r.json["secrets"]), (200, &json!("use_only"), &json!([])));
    let denied = tv.audit(ORG).await.into_iter().filter(|i| s(i, "outcome") == "use_only").count();
    assert_eq!(denied, 4, "every refused read is audited");

    // Listed with its access mode and upstream, never its value.
    let r = tv.send(list(&token)).await;
    let listed = &r.json["secrets"][0];
    assert_eq!(
        (listed["access"].as_str(), listed["upstream"]["baseUrl"].as_str()),
        (Some("use-only"), Some(upstream.http_url("").as_str()))
    );
    assert!(listed.get("value").is_none() && !r.body.contains(VALUE));
    let r = tv.send(list(&admin).query("all", "true")).await;
    assert_eq!(r.json["secrets"][0]["access"], "use-only", "{}", r.body);
    assert_eq!(r.json["secrets"][0]["upstream"]["baseUrl"], json!(upstream.http_url("")));

    // And it can still be used.
    let reply = send_proxy(&proxy, call("GET", "/vault/proxy/stripe/v1/balance", &token)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.requests()[0].header("authorization"), Some("Bearer SECRETVALUE-second-value"));

    // A key locked down (readable, then rewritten use-only with the same value) does not come back
    // readable through a rollback: refused as a read of that version is, audited, nothing written.
    let locked = "SECRETVALUE-locked-later";
    create(&tv, &token, json!({"name": "locked", "value": locked})).await;
    create(&tv, &token, use_only("locked", locked, &upstream.http_url(""), json!({}))).await;
    let rollback = Call::new("POST", "/vault/secrets/locked/rollback").token(&token).json(&json!({"version": 1}));
    let r = tv.send(rollback).await;
    assert_eq!((r.status, r.code()), (403, "use_only"), "{}", r.body);
    let r = tv.send(get(&token, "locked")).await;
    assert_eq!((r.status, r.code()), (403, "use_only"), "{}", r.body);
    let current =
        tv.send(list(&token)).await.json["secrets"].as_array().unwrap().iter().find(|s| s["name"] == "locked").cloned();
    assert_eq!(current.map(|c| (c["version"].clone(), c["access"].clone())), Some((json!(2), json!("use-only"))));
    let refusals = tv
        .audit(ORG)
        .await
        .into_iter()
        .filter(|i| s(i, "secretName") == "locked" && s(i, "outcome") == "use_only")
        .count();
    assert_eq!(refusals, 2, "the refused rollback and the refused read");
    leaks::keep(&tv).await;
}

pub async fn an_sdk_sending_its_key_as_x_api_key_is_served_and_the_key_goes_where_the_secret_says() {
    let (tv, proxy) = proxy_stack().await;
    let upstream = TestUpstream::http(answer_json(200, json!({"type": "message"}))).await;
    let token = m2m(ORG, "claude-agent");
    create(
        &tv,
        &token,
        use_only("anthropic", VALUE, &upstream.http_url("/v1"), json!({"header": "x-api-key", "methods": ["POST"]})),
    )
    .await;
    let reply = send_proxy(
        &proxy,
        Call::new("POST", "/vault/proxy/anthropic/messages")
            .header("x-api-key", &token)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude-test", "max_tokens": 5})),
    )
    .await;
    assert_eq!(reply.status, 200);
    let req = &upstream.requests()[0];
    assert_eq!((req.header("x-api-key"), req.header("authorization")), (Some(VALUE), None));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert!(!req.raw.contains(&token));
    // A query-parameter secret: the value is appended, percent-encoded; the caller may not name it.
    let q = TestUpstream::http(answer_json(200, json!({}))).await;
    create(&tv, &token, use_only("maps", "SECRETVALUE/1+2", &q.http_url("/api"), json!({"query": "key"}))).await;
    let reply = send_proxy(&proxy, call("GET", "/vault/proxy/maps/geo", &token).query("q", "x y")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(q.requests()[0].target, "/api/geo?q=x%20y&key=SECRETVALUE%2F1%2B2");
    let reply = send_proxy(&proxy, call("GET", "/vault/proxy/maps/geo", &token).query("key", "mine")).await;
    assert_eq!((reply.status, reply.json().await["error"]["code"].as_str()), (400, Some("invalid_query")));
    assert_eq!(q.count(), 1);
    // Refused before it is counted or recorded as a use: one use on record, and the refusal.
    let events = tv.audit(ORG).await;
    let of = |kind: &str| events.iter().filter(|i| s(i, "secretName") == "maps" && s(i, "event") == kind).count();
    assert_eq!((of("vault.secret.used"), of("vault.secret.access_denied")), (1, 1));
    leaks::keep(&tv).await;
}

/// The upstream sends one event, then waits until the test has received it before sending the next:
/// a proxy that buffered would hand over nothing until the upstream gave up waiting, with the second
/// event already sent.
pub async fn a_streamed_answer_is_relayed_as_it_arrives() {
    let (tv, proxy) = proxy_stack().await;
    let received_first = Arc::new(tokio::sync::Notify::new());
    let second_sent = Arc::new(AtomicBool::new(false));
    let (notify, sent) = (received_first.clone(), second_sent.clone());
    let upstream = TestUpstream::http(Arc::new(move |_, mut conn| {
        let (notify, sent) = (notify.clone(), sent.clone());
        Box::pin(async move {
            conn.start_stream(200, &[("content-type", "text/event-stream")]).await?;
            conn.chunk(b"data: {\"delta\":\"Hel\"}\n\n").await?;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(20), notify.notified()).await;
            sent.store(true, Ordering::SeqCst);
            conn.chunk(b"data: {\"delta\":\"lo\"}\n\ndata: [DONE]\n\n").await?;
            conn.end().await
        })
    }))
    .await;
    let token = m2m(ORG, "streamer");
    create(&tv, &token, use_only("llm", VALUE, &upstream.http_url("/v1"), json!({}))).await;
    let mut reply =
        send_proxy(&proxy, call("POST", "/vault/proxy/llm/chat/completions", &token).json(&json!({"stream": true})))
            .await;
    assert_eq!((reply.status, reply.headers["content-type"].as_str()), (200, "text/event-stream"));
    let first = reply.next_chunk().await.expect("a first event");
    assert!(!second_sent.load(Ordering::SeqCst), "the first event arrived only after the second was sent");
    assert_eq!(first, b"data: {\"delta\":\"Hel\"}\n\n");
    received_first.notify_one();
    assert_eq!(reply.text().await, "data: {\"delta\":\"lo\"}\n\ndata: [DONE]\n\n");
    leaks::keep(&tv).await;
}

pub async fn https_upstreams_are_verified_against_the_roots_the_proxy_trusts() {
    let (tv, _) = proxy_stack().await;
    let upstream = TestUpstream::https(answer_json(200, json!({"tls": true}))).await;
    let hosts = HashMap::from([(UPSTREAM_HOST.to_owned(), vec!["127.0.0.1".parse::<IpAddr>().unwrap()])]);
    let trusting =
        proxy_over(&tv.client, &[], ProxyOptions { hosts: hosts.clone(), extra_roots: vec![test_ca()] }).await;
    let untrusting = proxy_over(&tv.client, &[], ProxyOptions { hosts, extra_roots: vec![] }).await;
    let token = m2m(ORG, "tls-agent");
    create(&tv, &token, use_only("tls", VALUE, &upstream.https_url("/v1"), json!({}))).await;
    let reply = send_proxy(&trusting, call("GET", "/vault/proxy/tls/models", &token)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json().await, json!({"tls": true}));
    assert_eq!(upstream.requests()[0].header("authorization"), Some(format!("Bearer {VALUE}").as_str()));
    // A certificate from a CA the proxy does not trust: no request is sent.
    let reply = send_proxy(&untrusting, call("GET", "/vault/proxy/tls/models", &token)).await;
    assert_eq!((reply.status, reply.json().await["error"]["code"].as_str()), (502, Some("upstream_unavailable")));
    assert_eq!(upstream.count(), 1);
    leaks::keep(&tv).await;
}

pub async fn redirects_are_returned_never_followed_and_echoed_values_are_scrubbed() {
    let (tv, proxy) = proxy_stack().await;
    let token = m2m(ORG, "echo-agent");
    let redirect = TestUpstream::http(Arc::new(|_, mut conn| {
        Box::pin(async move { conn.send(302, &[("location", "http://169.254.169.254/latest/meta-data/")], b"").await })
    }))
    .await;
    create(&tv, &token, use_only("redir", VALUE, &redirect.http_url(""), json!({}))).await;
    let reply = send_proxy(&proxy, call("GET", "/vault/proxy/redir/x", &token)).await;
    assert_eq!((reply.status, reply.headers["location"].as_str()), (302, "http://169.254.169.254/latest/meta-data/"));
    assert_eq!(redirect.count(), 1);

    // An upstream that echoes the request: the value is replaced in headers and body, also when a
    // stream splits it across chunks.
    let echo = TestUpstream::http(Arc::new(|req, mut conn| {
        Box::pin(async move {
            let auth = req.header("authorization").unwrap_or("").to_owned();
            let (a, b) = auth.split_at(auth.len() - 5);
            conn.start_stream(200, &[("content-type", "text/plain"), ("x-echo", &auth)]).await?;
            conn.chunk(format!("you sent {a}").as_bytes()).await?;
            conn.chunk(format!("{b} and again {auth}.").as_bytes()).await?;
            conn.chunk(format!(" encoded: {}", auth.replace(' ', "%20")).as_bytes()).await?;
            conn.end().await
        })
    }))
    .await;
    create(&tv, &token, use_only("echo", VALUE, &echo.http_url(""), json!({}))).await;
    let reply = send_proxy(&proxy, call("GET", "/vault/proxy/echo/", &token)).await;
    assert_eq!(reply.headers["x-echo"], "Bearer [REDACTED]");
    let text = reply.text().await;
    assert_eq!(text, "you sent Bearer [REDACTED] and again Bearer [REDACTED]. encoded: Bearer%20[REDACTED]");
    // The value reached the upstream, and no one else.
    assert_eq!(echo.requests()[0].header("authorization"), Some(format!("Bearer {VALUE}").as_str()));
    leaks::keep(&tv).await;
}

pub async fn methods_paths_and_bodies_outside_the_rules_are_refused_before_the_upstream() {
    let (tv, proxy) = proxy_stack().await;
    let upstream = TestUpstream::http(echo_everything()).await;
    let token = m2m(ORG, "rules-agent");
    create(
        &tv,
        &token,
        use_only(
            "narrow",
            VALUE,
            &upstream.http_url("/v1"),
            json!({"methods": ["POST"], "paths": ["/chat/completions"]}),
        ),
    )
    .await;
    for (method, path, status, want) in [
        ("GET", "/vault/proxy/narrow/chat/completions", 403, "method_not_permitted"),
        ("POST", "/vault/proxy/narrow/files", 403, "path_not_permitted"),
        ("POST", "/vault/proxy/narrow/chat/completionsX", 403, "path_not_permitted"),
        ("POST", "/vault/proxy/narrow", 403, "path_not_permitted"),
        ("POST", "/vault/proxy/narrow/chat/completions/../../admin", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow/chat/completions/%2e%2e/%2E%2E/admin", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow/chat%2Fcompletions", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow/chat/completions%5c..%5cadmin", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow/chat/completions\\..\\admin", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow//evil.example/chat/completions", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow/http:/evil.example", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow/chat/completions@evil.example", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow/chat/completions%00", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow/chat/completions%0d%0aX-Evil:%201", 400, "invalid_path"),
        ("POST", "/vault/proxy/narrow/chat/%252e%252e/admin", 400, "invalid_path"),
        ("POST", "/vault/proxy/..%2Fnarrow/chat/completions", 400, "invalid_name"),
        ("TRACE", "/vault/proxy/narrow/chat/completions", 405, "method_not_allowed"),
        ("CONNECT", "/vault/proxy/narrow/chat/completions", 405, "method_not_allowed"),
    ] {
        let reply = send_proxy(&proxy, call(method, path, &token).json(&json!({}))).await;
        let got = reply.status;
        let body = reply.json().await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(want)), "{method} {path}");
    }
    assert_eq!(upstream.count(), 0, "nothing outside the rules reached the upstream");
    let reply = send_proxy(
        &proxy,
        call("POST", "/vault/proxy/narrow/chat/completions", &token)
            .raw_body(&"x".repeat(token_vault::limits::MAX_PROXY_BODY_BYTES + 1)),
    )
    .await;
    assert_eq!((reply.status, reply.json().await["error"]["code"].as_str()), (413, Some("body_too_large")));
    let reply =
        send_proxy(&proxy, call("POST", "/vault/proxy/narrow/chat/completions", &token).json(&json!({"ok": 1}))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.count(), 1);
    leaks::keep(&tv).await;
}

/// Names that resolve inwards, with the local switch off: every one refused before a connection.
pub async fn names_resolving_to_loopback_private_or_metadata_addresses_are_refused() {
    let tv = TestVault::start().await;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let hosts = HashMap::from([
        ("loop.test".to_owned(), vec![ip("127.0.0.1")]),
        ("private.test".to_owned(), vec![ip("10.0.0.1")]),
        ("metadata.test".to_owned(), vec![ip("169.254.169.254")]),
        ("v6loop.test".to_owned(), vec![ip("::1")]),
        ("mapped.test".to_owned(), vec![ip("::ffff:169.254.169.254")]),
        ("mixed.test".to_owned(), vec![ip("1.1.1.1"), ip("10.0.0.1")]),
    ]);
    let strict =
        proxy_over(&tv.client, &[("VAULT_PROXY_ALLOW_LOOPBACK", "false")], ProxyOptions { hosts, extra_roots: vec![] })
            .await;
    let token = m2m(ORG, "ssrf-agent");
    for host in ["loop.test", "private.test", "metadata.test", "v6loop.test", "mapped.test", "mixed.test"] {
        let name = host.replace('.', "-");
        create(&tv, &token, use_only(&name, VALUE, &format!("https://{host}/v1"), json!({}))).await;
        let reply = send_proxy(&strict, call("GET", &format!("/vault/proxy/{name}/models"), &token)).await;
        assert_eq!(
            (reply.status, reply.json().await["error"]["code"].as_str()),
            (502, Some("upstream_blocked")),
            "{host}"
        );
    }
    // Without the switch, loopback upstreams and plain http cannot even be written; addresses never.
    for base in [
        "http://127.0.0.1:9/v1",
        "https://localhost/v1",
        "https://[::1]/",
        "https://10.0.0.1/",
        "https://169.254.169.254/",
        "http://api.example.com",
    ] {
        let r = tv.send(put(&token, use_only("nope", VALUE, base, json!({})))).await;
        assert_eq!((r.status, r.code()), (400, "invalid_upstream"), "{base}");
    }
    assert!(!logs().contains(VALUE));
    leaks::keep(&tv).await;
}

pub async fn only_the_owner_rules_of_a_read_let_a_caller_use_a_secret() {
    let (tv, proxy) = proxy_stack().await;
    let upstream = TestUpstream::http(answer_json(200, json!({}))).await;
    let owner = m2m(ORG, "owner-app");
    create(&tv, &owner, use_only("shared", VALUE, &upstream.http_url(""), json!({}))).await;
    let mut scoped = use_only("scoped", VALUE, &upstream.http_url(""), json!({}));
    scoped["scope"] = json!(["payments"]);
    create(&tv, &owner, scoped).await;
    let alice = user(ORG, "owner-app", "alice");
    create(&tv, &alice, use_only("mine", VALUE, &upstream.http_url(""), json!({}))).await;
    let path = |n: &str| format!("/vault/proxy/{n}/x");
    for (token, name, status, want) in [
        (m2m("other-org", "owner-app"), "shared", 404, "not_found"),
        (m2m(ORG, "other-app"), "shared", 404, "not_found"),
        (user(ORG, "owner-app", "bob"), "mine", 404, "not_found"),
        (owner.clone(), "mine", 404, "not_found"),
        (owner.clone(), "scoped", 403, "insufficient_scope"),
        ("not-a-token".to_owned(), "shared", 401, "invalid_token"),
    ] {
        let reply = send_proxy(&proxy, call("GET", &path(name), &token)).await;
        assert_eq!((reply.status, reply.json().await["error"]["code"].as_str()), (status, Some(want)), "{name}");
    }
    let reply = send_proxy(&proxy, Call::new("GET", &path("shared"))).await;
    assert_eq!((reply.status, reply.headers.contains_key("www-authenticate")), (401, true));
    assert_eq!(upstream.count(), 0);
    // The same client's user uses the app-level secret; its owner the scoped one with the scope.
    for (token, name) in [
        (user(ORG, "owner-app", "bob"), "shared"),
        (alice, "mine"),
        (m2m_scoped(ORG, "owner-app", "payments"), "scoped"),
    ] {
        assert_eq!(send_proxy(&proxy, call("GET", &path(name), &token)).await.status, 200, "{name}");
    }
    assert_eq!(upstream.count(), 3);
    // A readable secret without an upstream is not usable; one with an upstream is, and stays readable.
    create(&tv, &owner, json!({"name": "plain", "value": "v"})).await;
    let reply = send_proxy(&proxy, call("GET", &path("plain"), &owner)).await;
    assert_eq!((reply.status, reply.json().await["error"]["code"].as_str()), (403, Some("no_upstream")));
    create(&tv, &owner, json!({"name": "both", "value": "v-both", "upstream": {"baseUrl": upstream.http_url("")}}))
        .await;
    assert_eq!(send_proxy(&proxy, call("GET", &path("both"), &owner)).await.status, 200);
    assert_eq!(tv.send(get(&owner, "both")).await.json["value"], "v-both");
    leaks::keep(&tv).await;
}

/// N concurrent uses against a limit of L: exactly L go through, across two containers. (Counted per
/// UTC day; the test starts clear of midnight so that all of its uses fall in one day.)
pub async fn per_secret_limits_hold_exactly_under_concurrency() {
    let (tv, proxy) = proxy_stack().await;
    let proxies = [Arc::new(proxy), Arc::new(proxy_over(&tv.client, &[], ProxyOptions::default()).await)];
    let upstream = TestUpstream::http(answer_json(200, json!({}))).await;
    let token = m2m(ORG, "limited-agent");
    let mut body = use_only("limited", VALUE, &upstream.http_url(""), json!({}));
    body["limits"] = json!({"perDay": 5});
    create(&tv, &token, body).await;
    let now = time::OffsetDateTime::now_utc();
    let to_midnight = 86_400 - i64::from(now.hour()) * 3600 - i64::from(now.minute()) * 60 - i64::from(now.second());
    if to_midnight < 60 {
        tokio::time::sleep(std::time::Duration::from_secs(to_midnight as u64 + 1)).await;
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (p, token) = (proxies[i % 2].clone(), token.clone());
        calls.spawn(async move { send_proxy(&p, call("GET", "/vault/proxy/limited/x", &token)).await });
    }
    let replies = calls.join_all().await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&ProxyReply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!((ok, limited.len()), (5, 15));
    for r in &limited {
        let retry: u64 = r.headers["retry-after"].parse().unwrap();
        assert!((1..=86_400).contains(&retry), "{retry}");
    }
    assert_eq!(upstream.count(), 5);
    let audit = tv.audit(ORG).await;
    assert_eq!(audit.iter().filter(|i| s(i, "event") == "vault.secret.used").count(), 5);
    assert_eq!(audit.iter().filter(|i| s(i, "outcome") == "rate_limited").count(), 15);
    leaks::keep(&tv).await;
}

/// The windows, at times the test chooses: the minute's and the day's counts, and when each ends.
pub async fn limit_windows_are_the_utc_minute_and_day() {
    let tv = TestVault::start().await;
    let store = token_vault::table::Store::new(tv.client.clone(), TABLES);
    let owner = token_vault::Owner::App { client_id: "c".into() };
    let limits = token_vault::Limits { per_minute: Some(2), per_day: Some(3) };
    let at = |t: time::OffsetDateTime| store.count_use("o", &owner, "n", limits, t);
    use token_vault::table::Count;
    let t0 = time::macros::datetime!(2030-06-01 10:00:15 UTC);
    assert_eq!(at(t0).await.unwrap(), Count::Counted);
    assert_eq!(at(t0).await.unwrap(), Count::Counted);
    assert_eq!(at(t0).await.unwrap(), Count::Limited { retry_after: 45 }, "the minute's limit, until its end");
    let t1 = time::macros::datetime!(2030-06-01 10:01:00 UTC);
    assert_eq!(at(t1).await.unwrap(), Count::Counted, "a new minute");
    assert_eq!(at(t1).await.unwrap(), Count::Limited { retry_after: 50_340 }, "the day's limit, until midnight");
    let t2 = time::macros::datetime!(2030-06-02 00:00:01 UTC);
    assert_eq!(at(t2).await.unwrap(), Count::Counted, "a new day");
    leaks::keep(&tv).await;
}

/// Point 2 of the proxy issue: an existing value goes only where it was written to go, whatever a
/// caller that can write (but not read) the secret, or an admin, or someone with the table, tries.
pub async fn an_existing_value_cannot_be_sent_to_another_host() {
    let (tv, proxy) = proxy_stack().await;
    let good = TestUpstream::http(echo_everything()).await;
    let evil = TestUpstream::http(echo_everything()).await;
    let owner = m2m(ORG, "victim-app");
    let admin = admin(ORG, "ops");
    create(&tv, &owner, use_only("key", VALUE, &good.http_url("/v1"), json!({}))).await;

    // An update must carry a value: pointing the secret elsewhere sends only the new value there.
    let r = tv
        .send(put(&owner, json!({"name": "key", "access": "use-only", "upstream": {"baseUrl": evil.http_url("")}})))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_json"), "{}", r.body);
    create(&tv, &owner, use_only("key", "SECRETVALUE-attacker-chosen", &evil.http_url(""), json!({}))).await;
    assert_eq!(send_proxy(&proxy, call("GET", "/vault/proxy/key/x", &owner)).await.status, 200);
    // The old version: not readable, and a rollback brings it back with its own upstream.
    let r = tv.send(get(&owner, "key").query("version", "1")).await;
    assert_eq!(r.code(), "use_only");
    let r = tv.send(Call::new("POST", "/vault/secrets/key/rollback").token(&owner).json(&json!({"version": 1}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(send_proxy(&proxy, call("GET", "/vault/proxy/key/y", &owner)).await.status, 200);
    assert_eq!(good.requests().last().unwrap().header("authorization"), Some(format!("Bearer {VALUE}").as_str()));
    // An admin naming the client writes a value of its own, and reads none.
    let r = tv.send(get(&admin, "key").query("clientId", "victim-app")).await;
    assert_eq!(r.code(), "use_only");
    let batch = json!({"names": ["key"], "clientId": "victim-app"});
    let r = tv.send(Call::new("POST", "/vault/secrets/batch-get").token(&admin).json(&batch)).await;
    assert_eq!(r.json["errors"][0]["code"], "use_only");

    // Someone with write access to the table: every edit of where the value may go breaks its envelope.
    let pk = token_vault::table::partition_key(ORG, &token_vault::Owner::App { client_id: "victim-app".into() });
    let original = tv.secret_item(&pk, "key").await.unwrap();
    let evil_upstream =
        json!({"baseUrl": evil.http_url(""), "header": "authorization", "template": "Bearer {value}"}).to_string();
    use aws_sdk_dynamodb::types::AttributeValue;
    let edit = |change: &dyn Fn(&mut Item)| {
        let mut i = original.clone();
        change(&mut i);
        i
    };
    // (the item as tampered, the proxy's answer, a read's answer)
    type Answer = (u16, &'static str);
    let cases: Vec<(Item, Answer, Answer)> = vec![
        // Pointed at another host.
        (
            edit(&|i| drop(i.insert("upstream".into(), AttributeValue::S(evil_upstream.clone())))),
            (500, "integrity_error"),
            (403, "use_only"),
        ),
        // Another template for the same host.
        (
            edit(&|i| {
                let other =
                    json!({"baseUrl": good.http_url("/v1"), "header": "x-leak", "template": "{value}"}).to_string();
                i.insert("upstream".into(), AttributeValue::S(other));
            }),
            (500, "integrity_error"),
            (403, "use_only"),
        ),
        // Made readable.
        (edit(&|i| drop(i.remove("access"))), (500, "integrity_error"), (500, "integrity_error")),
        // Made readable, without an upstream, as format 1 (which binds no usage).
        (
            edit(&|i| {
                i.remove("access");
                i.remove("upstream");
                i.insert("encVersion".into(), AttributeValue::N("1".into()));
            }),
            (403, "no_upstream"),
            (500, "integrity_error"),
        ),
    ];
    for (item, proxied, read) in cases {
        tv.put_secret_item(item).await;
        let reply = send_proxy(&proxy, call("GET", "/vault/proxy/key/z", &owner)).await;
        let status = reply.status;
        let body = reply.json().await;
        assert_eq!((status, body["error"]["code"].as_str().unwrap_or("")), proxied, "{body}");
        let r = tv.send(get(&owner, "key")).await;
        assert_eq!((r.status, r.code()), read, "{}", r.body);
        assert!(!r.body.contains(VALUE));
    }
    tv.put_secret_item(original).await;
    assert!(evil.requests().iter().all(|r| !r.raw.contains(VALUE)), "the original value reached the other host");
    assert_eq!(evil.count(), 1, "only the attacker's own value went there");
    assert!(tv.audit(ORG).await.iter().any(|i| s(i, "event") == "vault.secret.integrity_error"));
    leaks::keep(&tv).await;
}

pub async fn writes_check_upstreams_and_values_that_go_in_headers() {
    let (tv, _) = proxy_stack().await;
    let token = m2m(ORG, "writer");
    for (body, code) in [
        (json!({"name": "a", "value": "v", "access": "use-only"}), "invalid_access"),
        (json!({"name": "a", "value": "v", "access": "secret"}), "invalid_access"),
        (json!({"name": "a", "value": "v", "limits": {"perDay": 5}}), "invalid_limits"),
        (
            json!({"name": "a", "value": "sk\r\nX-Evil: 1", "upstream": {"baseUrl": "https://api.example.com"}}),
            "invalid_value",
        ),
        (
            json!({"name": "a", "value": "v", "upstream": {"baseUrl": "https://api.example.com", "header": "host"}}),
            "invalid_upstream",
        ),
        (
            json!({"name": "a", "value": "v", "upstream": {"baseUrl": "https://api.example.com", "template": "x\r\ny {value}"}}),
            "invalid_upstream",
        ),
        (json!({"name": "a", "value": "v", "upstream": {"baseUrl": "https://u@api.example.com"}}), "invalid_upstream"),
        (
            json!({"name": "a", "value": "v", "upstream": {"baseUrl": "https://api.example.com", "extra": 1}}),
            "invalid_json",
        ),
        (
            json!({"name": "a", "value": "v", "upstream": {"baseUrl": "https://api.example.com"}, "limits": {"perMinute": 0}}),
            "invalid_limits",
        ),
    ] {
        let r = tv.send(put(&token, body.clone())).await;
        assert_eq!((r.status, r.code()), (400, code), "{body}");
    }
    // A value with a line break may go in a query parameter (percent-encoded), never in a header.
    let r = tv
        .send(put(
            &token,
            json!({"name": "q", "value": "SECRETVALUE\nb", "upstream": {"baseUrl": "https://api.example.com", "query": "k"}}),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // A new version without an upstream, access mode or limits carries none of the old one's, and its
    // value opens; the version before keeps its own.
    let mut first = use_only("turns", "SECRETVALUE-turns-1", "https://api.example.com/v1", json!({}));
    first["limits"] = json!({"perMinute": 3, "perDay": 9});
    create(&tv, &token, first).await;
    create(&tv, &token, json!({"name": "turns", "value": "plain-now"})).await;
    let r = tv.send(get(&token, "turns")).await;
    assert_eq!(
        (r.status, &r.json["value"], &r.json["access"]),
        (200, &json!("plain-now"), &json!("readable")),
        "{}",
        r.body
    );
    assert!(r.json.get("upstream").is_none() && r.json.get("limits").is_none(), "{}", r.body);
    let r = tv.send(get(&token, "turns").query("version", "1")).await;
    assert_eq!(r.code(), "use_only");
    leaks::keep(&tv).await;
}
