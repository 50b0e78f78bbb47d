//! Test support: a real vault (the shared crate's handlers) over a real DynamoDB-compatible server
//! (dynoxide, in-process, on a free loopback port), requests shaped as API Gateway HTTP API v2 events,
//! development tokens, direct table access for tampering, and captured log output.
//!
//! Test support fails loudly: a setup step that cannot complete panics with what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod proxy;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use token_vault::{Config, Operation, Vault};
use vault_dev::{LocalDynamo, create_tables, local_client};

pub const HS256_SECRET: &str = "integration-test-hs256-secret-0123456789";
pub const MASTER_KEY: &str = "4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
pub const ISSUER: &str = "https://vault.local/";
pub const AUDIENCE: &str = "token-vault";
pub const SECRETS_TABLE: &str = "vault-secrets";
pub const AUDIT_TABLE: &str = "vault-audit";
pub const KEYS_TABLE: &str = "vault-keys";
pub const TABLES: token_vault::table::Tables<'static> =
    token_vault::table::Tables { secrets: SECRETS_TABLE, audit: AUDIT_TABLE, keys: KEYS_TABLE };

pub type Item = HashMap<String, AttributeValue>;

/// The JWKS a test identity provider serves (`serve_jwks`), and the keys behind it (test-only keys).
pub const JWKS: &str = include_str!("../fixtures/jwks.json");
pub const RSA_KEY: &[u8] = include_bytes!("../fixtures/rsa-test-key.pem");
pub const RSA_PUB: &[u8] = include_bytes!("../fixtures/rsa-test-pub.pem");
pub const EC_KEY: &[u8] = include_bytes!("../fixtures/ec-test-key.pem");

/// Serves `JWKS` on a free loopback port; returns its URL and a count of the fetches.
pub async fn serve_jwks() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    serve_raw(Some(http_200_json(JWKS))).await
}

/// A raw HTTP/1.1 200 response carrying `body` as JSON.
pub fn http_200_json(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Answers every connection on a free loopback port with `response` (a raw HTTP response), or with
/// `None` accepts and never answers; returns the URL of a JWKS there and a count of the connections.
pub async fn serve_raw(response: Option<String>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await;
                match response {
                    Some(r) => {
                        let _ = conn.write_all(r.as_bytes()).await;
                    }
                    None => tokio::time::sleep(std::time::Duration::from_secs(60)).await,
                }
            });
        }
    });
    (url, hits)
}

/// Every response body the vault sent during this test binary (for the leak checks).
pub fn recorded_bodies() -> Vec<String> {
    body_buffer().lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Every part of a body the proxy relayed during this test binary (for the leak checks: the value it
/// injects must never come back).
pub fn proxied_bodies() -> Vec<String> {
    proxied_buffer().lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn proxied_buffer() -> &'static Mutex<Vec<String>> {
    static BUF: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    BUF.get_or_init(|| Mutex::new(Vec::new()))
}

fn body_buffer() -> &'static Mutex<Vec<String>> {
    static BUF: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    BUF.get_or_init(|| Mutex::new(Vec::new()))
}

/// Every log line the vault wrote during this test binary, as one string.
pub fn logs() -> String {
    let buf = log_buffer().lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&buf).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the vault's tracing output (JSON, debug level) to the capture buffer, once per binary.
pub fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// A config as the functions would read it from their environment, with `overrides` applied.
pub fn config(overrides: &[(&str, &str)]) -> Config {
    config_for(overrides, token_vault::KeyUse::Required)
}

/// The test configuration for a function with the given use of master keys.
pub fn config_for(overrides: &[(&str, &str)], keys: token_vault::KeyUse) -> Config {
    let mut env: HashMap<String, String> = [
        ("VAULT_MASTER_KEY", MASTER_KEY),
        ("VAULT_JWT_HS256_SECRET", HS256_SECRET),
        ("VAULT_SECRETS_TABLE", SECRETS_TABLE),
        ("VAULT_AUDIT_TABLE", AUDIT_TABLE),
        ("VAULT_KEYS_TABLE", KEYS_TABLE),
        ("VAULT_AUDIT_TIMEOUT_MS", "1500"),
        // The test tokens are Auth0-shaped, whether signed with HS256 or with the test JWKS's keys.
        ("VAULT_IDP_PROFILE", "auth0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup_for(|k| env.get(k).cloned(), keys).expect("test config is valid")
}

/// A reply from the vault.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub json: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Whether API Gateway filled `pathParameters` (a function-URL style call does not).
    pub path_params: bool,
    /// The decoded `name` path parameter, when it differs from the raw path (API Gateway decodes `%XX`).
    pub path_param: Option<String>,
    /// Whether `body` is base64 (API Gateway's encoding of a body that is not UTF-8).
    pub base64: bool,
}

impl Call {
    pub fn new(method: &'static str, path: &str) -> Self {
        Self {
            method,
            path: path.into(),
            query: vec![],
            headers: vec![],
            body: None,
            path_params: true,
            path_param: None,
            base64: false,
        }
    }
    pub fn token(mut self, token: &str) -> Self {
        self.headers.push(("authorization".into(), format!("Bearer {token}")));
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.into()));
        self
    }
    pub fn query(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.into(), v.into()));
        self
    }
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string());
        self.headers.push(("content-type".into(), "application/json".into()));
        self
    }
    pub fn raw_body(mut self, body: &str) -> Self {
        self.body = Some(body.into());
        self
    }
    /// A body of raw bytes, sent base64-encoded as API Gateway does for a body that is not UTF-8.
    pub fn binary_body(mut self, body: &[u8]) -> Self {
        self.body = Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body));
        self.base64 = true;
        self
    }
    /// The `name` path parameter as API Gateway decoded it from the path.
    pub fn path_param(mut self, name: &str) -> Self {
        self.path_param = Some(name.into());
        self
    }
    pub fn without_path_params(mut self) -> Self {
        self.path_params = false;
        self
    }

    /// The operation API Gateway's routes send this request to, the route key's path, and the
    /// `{name}` path parameter.
    pub fn route(&self) -> (Operation, &'static str, Option<String>) {
        let path = self.path.as_str();
        let item = path.strip_prefix("/vault/secrets/").filter(|rest| !rest.is_empty()).map(str::to_owned);
        let nested = |suffix: &str| item.as_deref().and_then(|r| r.strip_suffix(suffix)).map(str::to_owned);
        match (self.method, item.as_deref()) {
            (_, _) if path == "/vault/audit" => (Operation::Audit, "/vault/audit", None),
            ("POST", Some("batch-get")) => (Operation::BatchGet, "/vault/secrets/batch-get", None),
            ("POST", Some(_)) if nested("/rollback").is_some() => {
                (Operation::Rollback, "/vault/secrets/{name}/rollback", nested("/rollback"))
            }
            ("GET", Some(_)) if nested("/audit").is_some() => {
                (Operation::Audit, "/vault/secrets/{name}/audit", nested("/audit"))
            }
            ("GET", Some(_)) if nested("/versions").is_some() => {
                (Operation::Versions, "/vault/secrets/{name}/versions", nested("/versions"))
            }
            ("POST", _) => (Operation::Create, "/vault/secrets", None),
            ("DELETE", _) => (Operation::Delete, "/vault/secrets/{name}", item),
            (_, Some(_)) => (Operation::Get, "/vault/secrets/{name}", item),
            (_, None) => (Operation::List, "/vault/secrets", None),
        }
    }

    pub fn operation(&self) -> Operation {
        self.route().0
    }

    /// The API Gateway HTTP API (payload v2) event for this request.
    pub fn event(&self) -> Value {
        let (_, route, name) = self.route();
        self.event_for(&format!("{} {route}", self.method), name.filter(|_| self.path_params))
    }

    /// The event a Lambda function URL sends for this request (payload v2, route `$default`, no path
    /// parameters): the proxy's.
    pub fn function_url_event(&self) -> Value {
        self.event_for("$default", None)
    }

    fn event_for(&self, route_key: &str, name: Option<String>) -> Value {
        let mut headers = serde_json::Map::new();
        for (k, v) in &self.headers {
            // API Gateway joins repeated headers with commas.
            let joined = match headers.get(k).and_then(Value::as_str) {
                Some(prev) => format!("{prev},{v}"),
                None => v.clone(),
            };
            headers.insert(k.clone(), json!(joined));
        }
        headers.entry("user-agent").or_insert(json!("vault-tests/1.0"));
        let mut query = serde_json::Map::new();
        for (k, v) in &self.query {
            let joined = match query.get(k).and_then(Value::as_str) {
                Some(prev) => format!("{prev},{v}"),
                None => v.clone(),
            };
            query.insert(k.clone(), json!(joined));
        }
        // API Gateway's rawQueryString is percent-encoded; queryStringParameters are decoded.
        let raw_query: Vec<String> =
            self.query.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
        let mut event = json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": self.path,
            "rawQueryString": raw_query.join("&"),
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012", "apiId": "test", "domainName": "vault.test", "domainPrefix": "vault",
                "http": {"method": self.method, "path": self.path, "protocol": "HTTP/1.1",
                         "sourceIp": "203.0.113.7", "userAgent": headers.get("user-agent").cloned().unwrap_or(Value::Null)},
                "requestId": format!("req-{}", rand_id()), "routeKey": route_key,
                "stage": "$default", "time": "28/Nov/2026:12:00:00 +0000", "timeEpoch": 0
            },
            "isBase64Encoded": false
        });
        if !query.is_empty() {
            event["queryStringParameters"] = Value::Object(query);
        }
        if let Some(name) = name {
            event["pathParameters"] = json!({"name": self.path_param.as_deref().unwrap_or(&name)});
        }
        if let Some(body) = &self.body {
            event["body"] = json!(body);
            event["isBase64Encoded"] = json!(self.base64);
        }
        event
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A vault over its own fresh dynoxide server.
#[derive(Debug)]
pub struct TestVault {
    pub dynamo: Option<LocalDynamo>,
    pub endpoint: String,
    pub client: Client,
    pub vault: Vault,
}

impl TestVault {
    /// Starts a server, creates the tables, and builds a vault with the test configuration.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(overrides: &[(&str, &str)]) -> Self {
        capture_logs();
        let dynamo = LocalDynamo::start_in_memory().await.expect("dynoxide starts");
        let endpoint = dynamo.endpoint();
        let client = local_client(&endpoint).await;
        create_tables(&client, TABLES).await.expect("tables are created");
        let vault = Vault::new(config(overrides), client.clone()).await.expect("vault builds");
        Self { dynamo: Some(dynamo), endpoint, client, vault }
    }

    /// Another vault over the same server (a second container, or one with other settings).
    pub async fn sibling(&self, overrides: &[(&str, &str)]) -> Vault {
        Vault::new(config(overrides), self.client.clone()).await.expect("vault builds")
    }

    pub async fn send(&self, call: Call) -> Reply {
        send_to(&self.vault, call).await
    }

    /// Reads every audit event of `org_id` (every write shard, and the unsharded partitions of today and
    /// yesterday), oldest first.
    pub async fn audit(&self, org_id: &str) -> Vec<Item> {
        let today = time::OffsetDateTime::now_utc();
        let mut out = Vec::new();
        let shards = (0..token_vault::table::AUDIT_SHARDS).map(|n| token_vault::table::audit_partition_key(org_id, n));
        let days = [today - time::Duration::days(1), today]
            .map(|d| token_vault::table::unsharded_audit_partition_key(org_id, d.date()));
        for pk in shards.chain(days) {
            let mut start = None;
            loop {
                let page = self
                    .client
                    .query()
                    .table_name(AUDIT_TABLE)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .expect("audit query");
                out.extend(page.items().iter().cloned());
                start = page.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        out.sort_by_key(|a| s(a, "sk"));
        out
    }

    /// The event names recorded for `org_id`, oldest first.
    pub async fn audit_events(&self, org_id: &str) -> Vec<String> {
        self.audit(org_id).await.iter().map(|i| s(i, "event")).collect()
    }

    /// Every item of the secrets table, read directly (test inspection only).
    pub async fn all_secret_items(&self) -> Vec<Item> {
        self.scan_all(SECRETS_TABLE).await
    }

    /// Puts `org`'s salt back where builds before the keys table kept it (an item `org#<org>#meta` /
    /// `salt` of the secrets table, which is also the organization's registry entry), as a stack
    /// deployed then holds it.
    pub async fn move_salt_to_the_secrets_table(&self, org: &str) {
        let pk = format!("org#{org}#meta");
        let key = |sk: &str| {
            HashMap::from([
                ("pk".to_owned(), AttributeValue::S(pk.clone())),
                ("sk".to_owned(), AttributeValue::S(sk.into())),
            ])
        };
        let salt = self.client.get_item().table_name(KEYS_TABLE).set_key(Some(key("salt"))).send().await.unwrap();
        let mut item = salt.item.expect("the organization has a salt");
        item.insert("orgPk".into(), AttributeValue::S("#orgs".into()));
        item.insert("orgSk".into(), AttributeValue::S(org.into()));
        self.client.put_item().table_name(SECRETS_TABLE).set_item(Some(item)).send().await.unwrap();
        self.client.delete_item().table_name(KEYS_TABLE).set_key(Some(key("salt"))).send().await.unwrap();
        self.client.delete_item().table_name(SECRETS_TABLE).set_key(Some(key("registry"))).send().await.unwrap();
    }

    /// Every item of the keys table (the organizations' salts), read directly (test inspection only).
    pub async fn all_key_items(&self) -> Vec<Item> {
        self.scan_all(KEYS_TABLE).await
    }

    /// Every item of the audit table, read directly (test inspection only).
    pub async fn all_audit_items(&self) -> Vec<Item> {
        self.scan_all(AUDIT_TABLE).await
    }

    async fn scan_all(&self, table: &str) -> Vec<Item> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self.client.scan().table_name(table).set_exclusive_start_key(start).send().await.expect("scan");
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return out;
            }
        }
    }

    pub async fn secret_item(&self, pk: &str, name: &str) -> Option<Item> {
        self.client
            .get_item()
            .table_name(SECRETS_TABLE)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(name.into()))
            .send()
            .await
            .expect("get_item")
            .item
    }

    pub async fn put_secret_item(&self, item: Item) {
        self.client.put_item().table_name(SECRETS_TABLE).set_item(Some(item)).send().await.expect("put_item");
    }
}

/// A DynamoDB client for `endpoint` with the vault's own SDK settings (`token_vault::sdk_config_loader`), whose
/// retry quota is its own (`partition`): the SDK's retry token bucket is otherwise shared by every
/// client of the process, and one fault test draining it would change what another one sees.
pub async fn isolated_client(endpoint: &str, partition: &str) -> Client {
    let base = local_client(endpoint).await;
    let conf = base
        .config()
        .to_builder()
        .retry_partition(aws_sdk_dynamodb::config::retry::RetryPartition::new(partition.to_owned()))
        .build();
    Client::from_conf(conf)
}

/// A vault over `client`, with the test configuration and `overrides`.
pub async fn vault_over(client: Client, overrides: &[(&str, &str)]) -> Vault {
    Vault::new(config(overrides), client).await.expect("vault builds")
}

/// Sends `call` through the real handler of its operation.
pub async fn send_to(vault: &Vault, call: Call) -> Reply {
    let op = call.operation();
    let req = lambda_http::request::from_str(&call.event().to_string()).expect("event parses");
    reply_of(token_vault::handle(vault, op, req).await)
}

/// A buffered response as the tests read it (its body kept for the leak checks).
fn reply_of(resp: lambda_http::Response<lambda_http::Body>) -> Reply {
    let status = resp.status().as_u16();
    let headers =
        resp.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    let body = match resp.body() {
        lambda_http::Body::Text(t) => t.clone(),
        lambda_http::Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    body_buffer().lock().unwrap_or_else(|e| e.into_inner()).push(body.clone());
    Reply { status, headers, body, json }
}

/// A proxy over this vault's server with the test configuration, `overrides` and `options` (loopback
/// upstreams allowed unless the overrides say otherwise).
pub async fn proxy_over(
    client: &Client,
    overrides: &[(&str, &str)],
    options: token_vault::ProxyOptions,
) -> token_vault::Proxy {
    let mut all = vec![("VAULT_PROXY_ALLOW_LOOPBACK", "true")];
    all.extend_from_slice(overrides);
    let vault = Vault::new(config(&all), client.clone()).await.expect("vault builds");
    token_vault::Proxy::new(vault, options).expect("proxy builds")
}

/// The audit item of a `kind` event about `name` by an M2M client of `org` at `at`, as the vault writes
/// it (the API only ever writes "now": tests seed other times with this).
pub fn audit_item(org: &str, name: &str, kind: token_vault::EventKind, at: time::OffsetDateTime) -> Item {
    use token_vault::table::ToItem;
    let p = token_vault::Principal {
        org_id: org.into(),
        client_id: "client-a".into(),
        kind: token_vault::TokenKind::Machine,
        scopes: Default::default(),
        admin: false,
    };
    let meta = token_vault::RequestMeta { request_id: format!("seeded-{name}"), ..Default::default() };
    let event = token_vault::AuditEvent {
        kind,
        principal: &p,
        meta: &meta,
        secret_name: name,
        owner: None,
        outcome: "success",
        detail: None,
    };
    event.to_item(at, 365)
}

/// A vault on a fresh server that lets upstreams on loopback be written, and a proxy over that server.
pub async fn proxy_stack() -> (TestVault, token_vault::Proxy) {
    let tv = TestVault::start_with(&[("VAULT_PROXY_ALLOW_LOOPBACK", "true")]).await;
    let proxy = proxy_over(&tv.client, &[], token_vault::ProxyOptions::default()).await;
    (tv, proxy)
}

/// An answer of the proxy, its body not read yet.
#[derive(Debug)]
pub struct ProxyReply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: token_vault::ProxyBody,
}

impl ProxyReply {
    /// The next part of the body as it arrives (`None` at its end).
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        use http_body_util::BodyExt;
        loop {
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                let data = data.to_vec();
                body_buffer()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(String::from_utf8_lossy(&data).into_owned());
                return Some(data);
            }
        }
    }

    /// The whole body, as text.
    pub async fn text(mut self) -> String {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            all.extend(chunk);
        }
        String::from_utf8_lossy(&all).into_owned()
    }

    /// The whole body, as JSON (`Null` if it is not).
    pub async fn json(self) -> Value {
        serde_json::from_str(&self.text().await).unwrap_or(Value::Null)
    }
}

/// Sends `call` (a path under `/vault/proxy/`) through the proxy's real handler, as a function URL
/// would.
pub async fn send_proxy(proxy: &token_vault::Proxy, call: Call) -> ProxyReply {
    let req = lambda_http::request::from_str(&call.function_url_event().to_string()).expect("event parses");
    let resp = token_vault::handle_proxy(proxy, req).await;
    let status = resp.status().as_u16();
    let headers: HashMap<String, String> =
        resp.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    proxied_buffer().lock().unwrap_or_else(|e| e.into_inner()).push(format!("{headers:?}"));
    ProxyReply { status, headers, body: resp.into_body() }
}

/// Sends `call` to the MCP handler over `proxy`, as a function URL (or API Gateway) would.
pub async fn send_mcp(proxy: &token_vault::Proxy, call: Call) -> Reply {
    let req = lambda_http::request::from_str(&call.function_url_event().to_string()).expect("event parses");
    reply_of(token_vault::handle_mcp(proxy, req).await)
}

/// A JSON-RPC request to `/vault/mcp`.
pub fn mcp_call(token: &str, method: &str, params: Value) -> Call {
    Call::new("POST", "/vault/mcp")
        .token(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
}

/// A `tools/call` of `tool` with `arguments`.
pub fn mcp_tool(token: &str, tool: &str, arguments: Value) -> Call {
    mcp_call(token, "tools/call", json!({"name": tool, "arguments": arguments}))
}

pub fn s(item: &Item, key: &str) -> String {
    item.get(key).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

fn sign(claims: &Value) -> String {
    record_token(vault_dev::sign_hs256(HS256_SECRET.as_bytes(), claims).expect("token signs"))
}

/// Remembers a bearer token this binary used (for the leak checks) and returns it.
pub fn record_token(token: String) -> String {
    token_buffer().lock().unwrap_or_else(|e| e.into_inner()).push(token.clone());
    token
}

/// Every token made through this crate (or passed to [`record_token`]) in this test binary.
pub fn issued_tokens() -> Vec<String> {
    token_buffer().lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn token_buffer() -> &'static Mutex<Vec<String>> {
    static BUF: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    BUF.get_or_init(|| Mutex::new(Vec::new()))
}

/// A machine-to-machine token.
pub fn m2m(org: &str, client: &str) -> String {
    m2m_scoped(org, client, "")
}

pub fn m2m_scoped(org: &str, client: &str, scope: &str) -> String {
    sign(&vault_dev::m2m_claims(ISSUER, AUDIENCE, org, client, scope, 600))
}

/// An M2M token that expired ten minutes ago.
pub fn expired_m2m(org: &str, client: &str) -> String {
    sign(&vault_dev::m2m_claims(ISSUER, AUDIENCE, org, client, "", -600))
}

/// A user token.
pub fn user(org: &str, client: &str, user_id: &str) -> String {
    user_scoped(org, client, user_id, "")
}

pub fn user_scoped(org: &str, client: &str, user_id: &str, scope: &str) -> String {
    sign(&vault_dev::user_claims(ISSUER, AUDIENCE, org, client, user_id, scope, 600))
}

/// An organization admin's user token: the admin permission in `permissions` (Auth0 RBAC).
pub fn admin_user(org: &str, client: &str, user_id: &str) -> String {
    let mut claims = vault_dev::user_claims(ISSUER, AUDIENCE, org, client, user_id, "", 600);
    claims["permissions"] = json!(["vault:admin"]);
    sign(&claims)
}

/// An organization admin's M2M token.
pub fn admin(org: &str, client: &str) -> String {
    m2m_scoped(org, client, "vault:admin")
}

/// Signs a raw header and payload (JSON text, sent as is: duplicate members survive) with the test secret.
pub fn sign_raw(header_json: &str, payload_json: &str) -> String {
    let b64 = |t: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, t);
    let input = format!("{}.{}", b64(header_json), b64(payload_json));
    let key = jsonwebtoken::EncodingKey::from_secret(HS256_SECRET.as_bytes()).expect("key");
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).expect("signs");
    record_token(format!("{input}.{sig}"))
}

/// Signs arbitrary claims with the test secret.
pub fn token_with(claims: &Value) -> String {
    sign(claims)
}

pub fn put(token: &str, body: Value) -> Call {
    Call::new("POST", "/vault/secrets").token(token).json(&body)
}

pub fn get(token: &str, name: &str) -> Call {
    Call::new("GET", &format!("/vault/secrets/{name}")).token(token)
}

pub fn list(token: &str) -> Call {
    Call::new("GET", "/vault/secrets").token(token)
}

pub fn delete(token: &str, name: &str) -> Call {
    Call::new("DELETE", &format!("/vault/secrets/{name}")).token(token)
}

/// The DynamoDB actions a vault performs, as IAM names them, with the table (or `table/index/name`) each
/// acts on: recorded from every request the SDK sends, transactions broken into their parts.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<(String, String)>>>, Arc<Mutex<Vec<String>>>);

impl CallLog {
    /// Every (action, resource) recorded so far, in order, then forgets them.
    pub fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The requests sent so far (`GetItem`, `TransactWriteItems`, ...), in order, then forgets them.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.1.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn record(&self, target: &str, body: &Value) {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).push(target.to_owned());
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let table = |v: &Value| {
            let name = v["TableName"].as_str().unwrap_or("?").to_owned();
            match v["IndexName"].as_str() {
                Some(index) => format!("{name}/index/{index}"),
                None => name,
            }
        };
        match target {
            "TransactWriteItems" => {
                for item in body["TransactItems"].as_array().into_iter().flatten() {
                    for (kind, action) in [
                        ("Put", "PutItem"),
                        ("Delete", "DeleteItem"),
                        ("Update", "UpdateItem"),
                        ("ConditionCheck", "ConditionCheckItem"),
                    ] {
                        if item.get(kind).is_some() {
                            log.push((action.to_owned(), table(&item[kind])));
                        }
                    }
                }
            }
            "BatchGetItem" | "BatchWriteItem" => {
                for name in body["RequestItems"].as_object().into_iter().flatten().map(|(k, _)| k) {
                    log.push((target.to_owned(), name.clone()));
                }
            }
            _ => log.push((target.to_owned(), table(body))),
        }
    }
}

impl aws_sdk_dynamodb::config::Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let request = context.request();
        let target = request.headers().get("x-amz-target").and_then(|t| t.rsplit('.').next()).unwrap_or("?");
        let body = request.body().bytes().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
        self.record(target, &body);
        Ok(())
    }
}

impl TestVault {
    /// A vault over the same server whose every DynamoDB request is recorded; built as a function that
    /// needs keys (`KeyUse::Required`) or one that never reads them (the audit reader).
    pub async fn recorded(&self, keys: token_vault::KeyUse) -> (Vault, CallLog) {
        Self::recorded_over(&self.client, keys).await
    }

    /// A vault over `client` (this server's, or one through a [`Proxy`]) that records every DynamoDB
    /// request it sends.
    pub async fn recorded_over(client: &Client, keys: token_vault::KeyUse) -> (Vault, CallLog) {
        let log = CallLog::default();
        let client = Client::from_conf(client.config().to_builder().interceptor(log.clone()).build());
        (Vault::new(config_for(&[], keys), client).await.expect("vault builds"), log)
    }
}

/// A KMS-compatible server for the tests (moto, from PyPI: `scripts/test` installs it), on a free
/// loopback port, stopped when dropped.
#[derive(Debug)]
pub struct LocalKms {
    pub endpoint: String,
    child: std::process::Child,
}

impl LocalKms {
    pub async fn start() -> Self {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("moto_server could not start ({e}): scripts/test installs it (pip install \"moto[server]\")")
            });
        let kms = Self { endpoint: format!("http://127.0.0.1:{port}"), child };
        // Ready means answering KMS calls, not just listening: moto loads a service's backend on its
        // first request, which takes seconds on a busy machine (a listening check alone left the first
        // CreateKey to run into the SDK's 5 s operation timeout under CI's load).
        let client = kms.client().await;
        for _ in 0..600 {
            if client.list_keys().send().await.is_ok() {
                return kms;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let endpoint = kms.endpoint.clone();
        drop(kms);
        panic!("moto_server did not answer KMS calls on {endpoint}");
    }

    /// A KMS client of the real SDK, pointed at this server. Its operation timeout is the tests' own
    /// (60 s, not the functions' 5 s): moto is a Python server sharing a loaded machine's cores with
    /// the parallel tests, and these tests assert what KMS answers, not how fast.
    pub async fn client(&self) -> aws_sdk_kms::Client {
        let conf = token_vault::sdk_config_loader()
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kms::config::Credentials::new("test", "test", None, None, "tests"))
            .timeout_config(
                aws_sdk_kms::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .operation_attempt_timeout(std::time::Duration::from_secs(60))
                    .operation_timeout(std::time::Duration::from_secs(60))
                    .build(),
            )
            .load()
            .await;
        aws_sdk_kms::Client::new(&conf)
    }
}

impl Drop for LocalKms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
