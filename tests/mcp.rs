//! The MCP server (`/vault/mcp`) through its real handler, against a real DynamoDB-compatible server and
//! a test upstream on loopback: the protocol (initialize, tools/list, tools/call, ping, notifications,
//! errors), its authorization (401 naming the protected-resource metadata, RFC 9728), and tools that use
//! secrets without ever returning a value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use serde_json::{Value, json};
use vault_tests::upstream::{Respond, TestUpstream};
use vault_tests::*;

const ORG: &str = "org-mcp";
const VALUE: &str = "SECRETVALUE-mcp-5a4b3c2d1e";

/// An upstream that answers with everything it received, the injected credential included.
fn echo_everything() -> Respond {
    Arc::new(|req, mut conn| {
        Box::pin(async move {
            let body = json!({"method": req.method, "target": req.target, "headers": req.headers, "body": String::from_utf8_lossy(&req.body)});
            conn.send(200, &[("content-type", "application/json")], body.to_string().as_bytes()).await
        })
    })
}

fn result(r: &Reply) -> &Value {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    assert_eq!(r.json["jsonrpc"], "2.0");
    &r.json["result"]
}

#[tokio::test]
async fn the_protocol_is_served_statelessly_over_json() {
    let (_tv, proxy) = proxy_stack().await;
    let token = m2m(ORG, "agent");
    let r = send_mcp(
        &proxy,
        mcp_call(
            &token,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
        ),
    )
    .await;
    let init = result(&r);
    assert_eq!(init["protocolVersion"], "2025-06-18");
    assert_eq!(init["capabilities"]["tools"]["listChanged"], false);
    assert_eq!(init["serverInfo"]["name"], "token-vault");
    assert!(!r.headers.contains_key("mcp-session-id"), "stateless: no session");

    let r = send_mcp(&proxy, mcp_call(&token, "tools/list", json!({}))).await;
    let names: Vec<&str> =
        result(&r)["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["list_secrets", "call_api", "audit"]);
    assert_eq!(result(&send_mcp(&proxy, mcp_call(&token, "ping", json!({}))).await), &json!({}));

    // A notification is accepted without an answer.
    let note = Call::new("POST", "/vault/mcp")
        .token(&token)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let r = send_mcp(&proxy, note).await;
    assert_eq!((r.status, r.body.as_str()), (202, ""));

    // Errors: unknown method, bad params, bad JSON, a batch, an unsupported protocol version.
    let r = send_mcp(&proxy, mcp_call(&token, "resources/list", json!({}))).await;
    assert_eq!((r.status, &r.json["error"]["code"], &r.json["id"]), (200, &json!(-32601), &json!(1)));
    let r = send_mcp(&proxy, mcp_call(&token, "tools/call", json!({"name": "read_secret", "arguments": {}}))).await;
    assert_eq!(r.json["error"]["code"], -32602);
    let r = send_mcp(&proxy, mcp_tool(&token, "list_secrets", json!({"all": true}))).await;
    assert_eq!(r.json["error"]["code"], -32602);
    let r = send_mcp(
        &proxy,
        Call::new("POST", "/vault/mcp").token(&token).header("content-type", "application/json").raw_body("{"),
    )
    .await;
    assert_eq!((r.status, &r.json["error"]["code"]), (400, &json!(-32700)));
    let r = send_mcp(
        &proxy,
        Call::new("POST", "/vault/mcp").token(&token).json(&json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])),
    )
    .await;
    assert_eq!((r.status, &r.json["error"]["code"]), (400, &json!(-32600)));
    let r = send_mcp(&proxy, mcp_call(&token, "ping", json!({})).header("mcp-protocol-version", "1999-01-01")).await;
    assert_eq!(r.status, 400);
    // No event stream and no session to end: GET and DELETE are 405.
    for method in ["GET", "DELETE"] {
        let r = send_mcp(&proxy, Call::new(method, "/vault/mcp").token(&token)).await;
        assert_eq!((r.status, r.headers.get("allow").map(String::as_str)), (405, Some("POST")), "{method}");
    }
}

#[tokio::test]
async fn without_a_valid_token_the_client_is_told_where_to_get_one() {
    let (_tv, proxy) = proxy_stack().await;
    for call in [
        mcp_call("", "tools/list", json!({})),
        mcp_call("not-a-token", "tools/list", json!({})),
        mcp_call(&expired_m2m(ORG, "agent"), "tools/list", json!({})),
    ] {
        let r = send_mcp(&proxy, call).await;
        assert_eq!(r.status, 401, "{}", r.body);
        let challenge = &r.headers["www-authenticate"];
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(challenge.contains("resource_metadata=\"https://"), "{challenge}");
        assert!(challenge.contains("/.well-known/oauth-protected-resource/vault/mcp\""), "{challenge}");
        assert!(r.json["result"].is_null(), "nothing is answered");
    }
    // The metadata itself needs no token, and names the identity provider (the tokens' issuer).
    for path in ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/vault/mcp"] {
        let r = send_mcp(&proxy, Call::new("GET", path)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.json["resource"].as_str().unwrap().ends_with("/vault/mcp"), "{}", r.body);
        assert_eq!(r.json["authorization_servers"], json!([ISSUER]));
        assert_eq!(r.json["bearer_methods_supported"], json!(["header"]));
    }
}

#[tokio::test]
async fn tools_use_secrets_and_never_return_a_value() {
    let (tv, proxy) = proxy_stack().await;
    let token = m2m(ORG, "agent");
    let upstream = TestUpstream::http(echo_everything()).await;
    let body = json!({"name": "openai", "value": VALUE, "access": "use-only",
        "upstream": {"baseUrl": upstream.http_url("/v1"), "methods": ["POST"], "paths": ["/chat/completions"]}});
    assert_eq!(tv.send(put(&token, body)).await.status, 201);
    // A readable secret: still no tool returns its value.
    assert_eq!(tv.send(put(&token, json!({"name": "readable", "value": VALUE}))).await.status, 201);

    let r = send_mcp(&proxy, mcp_tool(&token, "list_secrets", json!({}))).await;
    let listed = &result(&r)["structuredContent"]["secrets"];
    let openai = listed.as_array().unwrap().iter().find(|s| s["name"] == "openai").unwrap();
    assert_eq!(
        (&openai["access"], &openai["upstream"]["host"]),
        (&json!("use-only"), &json!(format!("127.0.0.1:{}", upstream.port)))
    );
    assert_eq!(openai["upstream"]["methods"], json!(["POST"]));
    assert!(!r.body.contains(VALUE));

    // call_api: the proxy's call, the value injected upstream and scrubbed from what comes back.
    let r = send_mcp(
        &proxy,
        mcp_tool(
            &token,
            "call_api",
            json!({"name": "openai", "method": "POST", "path": "/chat/completions",
            "query": {"stream": "false"}, "body": {"model": "gpt-test"}}),
        ),
    )
    .await;
    let res = result(&r);
    assert_eq!(
        (res["isError"].as_bool(), &res["structuredContent"]["status"]),
        (Some(false), &json!(200)),
        "{}",
        r.body
    );
    // The body comes back as the upstream's text, never decoded here.
    let echoed: Value = serde_json::from_str(res["structuredContent"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["target"], "/v1/chat/completions?stream=false");
    assert_eq!(serde_json::from_str::<Value>(echoed["body"].as_str().unwrap()).unwrap(), json!({"model": "gpt-test"}));
    let auth = echoed["headers"].as_array().unwrap().iter().find(|h| h[0] == "authorization").unwrap();
    assert_eq!(auth[1], "Bearer [REDACTED]", "the upstream got the value; the model sees it scrubbed");
    assert!(!r.body.contains(VALUE) && !r.body.contains(&token), "{}", r.body);
    let got = upstream.requests();
    assert_eq!(got[0].header("authorization"), Some(format!("Bearer {VALUE}").as_str()));
    assert!(!got[0].raw.contains(&token), "the vault token stays behind");

    // The proxy's rules: a method or path the secret does not allow, a readable secret (no upstream),
    // another client's secret. Refusals are tool errors the model can read, not values.
    for (args, code) in [
        (json!({"name": "openai", "method": "GET", "path": "/chat/completions"}), "method_not_permitted"),
        (json!({"name": "openai", "method": "POST", "path": "/files"}), "path_not_permitted"),
        (json!({"name": "readable", "path": "/x"}), "no_upstream"),
    ] {
        let r = send_mcp(&proxy, mcp_tool(&token, "call_api", args.clone())).await;
        let res = result(&r);
        assert_eq!(res["isError"], true, "{args}");
        let body: Value = serde_json::from_str(res["structuredContent"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["error"]["code"], code, "{}", r.body);
        assert!(!r.body.contains(VALUE));
    }
    let other = m2m(ORG, "someone-else");
    let r = send_mcp(
        &proxy,
        mcp_tool(&other, "call_api", json!({"name": "openai", "method": "POST", "path": "/chat/completions"})),
    )
    .await;
    assert_eq!(result(&r)["structuredContent"]["status"], 404);
    assert_eq!(upstream.count(), 1, "no refused call reached the upstream");
    let r = send_mcp(&proxy, mcp_tool(&token, "call_api", json!({"name": "openai", "path": "chat"}))).await;
    assert_eq!(r.json["error"]["code"], -32602, "a path must start with /");

    // audit: the use, who made it, and the refusals; newest first.
    let r = send_mcp(&proxy, mcp_tool(&token, "audit", json!({"name": "openai", "limit": 10}))).await;
    let events = result(&r)["structuredContent"]["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"vault.secret.used") && kinds.contains(&"vault.secret.access_denied"), "{kinds:?}");
    assert!(events.iter().all(|e| e["secret"] == "openai"));
    assert!(!r.body.contains(VALUE));
    let r = send_mcp(&proxy, mcp_tool(&token, "audit", json!({"sinceHours": 0}))).await;
    assert_eq!(r.json["error"]["code"], -32602);
    let r = send_mcp(&proxy, mcp_tool(&token, "audit", json!({"event": "vault.secret.nonsense"}))).await;
    assert_eq!(r.json["error"]["code"], -32602);
}

/// A value with a slash and non-ASCII text, echoed by an upstream in the forms common serializers write
/// (PHP's `\/`, Python's ASCII-only `\u00e9`, Go's HTML-safe escapes, lower-case percent-encoding): none of
/// them, and not the value itself, reaches the model.
#[tokio::test]
async fn a_value_echoed_in_any_common_escaping_is_scrubbed_before_the_model_sees_it() {
    let (tv, proxy) = proxy_stack().await;
    let token = m2m(ORG, "agent");
    let value = "sk/live+d\u{e9}j\u{e0}<vu>&9f8e";
    let json_forms = [
        "sk/live+d\\u00e9j\\u00e0<vu>&9f8e".to_owned(),
        "sk\\/live+d\\u00e9j\\u00e0<vu>&9f8e".to_owned(),
        "sk/live+d\u{e9}j\u{e0}\\u003cvu\\u003e\\u00269f8e".to_owned(),
        "sk%2flive%2bd%c3%a9j%c3%a0%3cvu%3e%269f8e".to_owned(),
    ];
    let echo: Respond = {
        let forms = json_forms.clone();
        Arc::new(move |_, mut conn| {
            let body = format!("{{\"forms\": [\"{}\"]}}", forms.join("\", \""));
            Box::pin(async move { conn.send(200, &[("content-type", "application/json")], body.as_bytes()).await })
        })
    };
    let upstream = TestUpstream::http(echo).await;
    let body = json!({"name": "escaped", "value": value, "access": "use-only", "upstream": {"baseUrl": upstream.http_url("")}});
    assert_eq!(tv.send(put(&token, body)).await.status, 201);
    let r = send_mcp(&proxy, mcp_tool(&token, "call_api", json!({"name": "escaped", "path": "/x"}))).await;
    let res = result(&r);
    assert_eq!(res["structuredContent"]["status"], 200, "{}", r.body);
    let text = res["structuredContent"]["body"].as_str().unwrap();
    assert_eq!(text.matches("[REDACTED]").count(), json_forms.len(), "{text}");
    for form in &json_forms {
        assert!(!r.body.contains(form.as_str()) && !text.contains(form.as_str()), "{form} reached the model");
    }
    assert!(!r.body.contains(value) && !r.body.contains("sk/live") && !r.body.contains("sk\\/live"), "{}", r.body);
}
