//! `vault-proxy-bench`: the proxy's release binary under a local Lambda Runtime API (streaming responses,
//! as Lambda takes them), in front of an upstream on loopback, against the same upstream called directly.
//!
//! For each case it measures, interleaved call by call so that both see the same machine:
//! - the proxied call (the function fetching the event to its streamed reply ending), p50 and p99;
//! - a direct call to the same upstream from this process (connect, request, whole answer);
//! - the floor: the DynamoDB requests an authorised use cannot avoid (the secret's GetItem, the audit
//!   PutItem, and the counter's UpdateItem when the secret has limits), issued directly through the
//!   store from a thread of its own with a current-thread runtime, as a function runs.
//!
//! The goal is a proxied p50 within 1.15 × (floor + direct). Then, for a streamed answer whose upstream
//! writes its first event and waits before the next: how long after the upstream wrote the first event
//! its first byte reached the Runtime API (both clocks are this process's).
//!
//! Prints Markdown tables (BENCHMARKS.md, "The proxy").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod runtime_api;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use token_vault::table::{Store, ToItem};
use token_vault::{AuditEvent, EventKind, Limits, Owner, Principal, RequestMeta, TokenKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vault_tests::upstream::{Respond, TestUpstream, answer_json};
use vault_tests::{Call, HS256_SECRET, TestVault, put};

use runtime_api::{Invocation, RuntimeApi};

const ORG: &str = "org-proxy-bench";
const CLIENT: &str = "client-proxy-bench";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// One GET to the upstream over a fresh connection, read to its end (the upstream closes it).
async fn direct(port: u16) -> Duration {
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let req = format!(
        "GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer sk-bench\r\naccept-encoding: identity\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    started.elapsed()
}

/// The DynamoDB floor of one authorised use, on a thread of its own.
struct FloorThread {
    runs: tokio::sync::mpsc::Sender<(bool, tokio::sync::oneshot::Sender<Duration>)>,
}

impl FloorThread {
    fn start(endpoint: String) -> Self {
        let (runs, mut requests) = tokio::sync::mpsc::channel::<(bool, tokio::sync::oneshot::Sender<Duration>)>(1);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let store = Store::new(vault_dev::local_client(&endpoint).await, vault_tests::TABLES);
                let owner = Owner::App { client_id: CLIENT.into() };
                let principal = Principal {
                    org_id: ORG.into(),
                    client_id: CLIENT.into(),
                    kind: TokenKind::Machine,
                    scopes: Default::default(),
                    admin: false,
                };
                let meta = RequestMeta { request_id: "floor".into(), ..RequestMeta::default() };
                let limits = Limits { per_minute: None, per_day: Some(1_000_000_000) };
                while let Some((limited, reply)) = requests.recv().await {
                    let started = Instant::now();
                    let name = if limited { "floor-limited" } else { "floor-plain" };
                    store.get_secret(ORG, &owner, name).await.unwrap();
                    if limited {
                        store.count_use(ORG, &owner, name, limits, time::OffsetDateTime::now_utc()).await.unwrap();
                    }
                    let event = AuditEvent {
                        kind: EventKind::Used,
                        principal: &principal,
                        meta: &meta,
                        secret_name: name,
                        owner: Some(&owner),
                        outcome: "success",
                        detail: Some("method=GET host=127.0.0.1 path=/v1/models".into()),
                    };
                    store.put_audit(event.to_item(time::OffsetDateTime::now_utc(), 365)).await.unwrap();
                    let _ = reply.send(started.elapsed());
                }
            });
        });
        Self { runs }
    }

    async fn run(&self, limited: bool) -> Duration {
        let (reply, took) = tokio::sync::oneshot::channel();
        self.runs.send((limited, reply)).await.unwrap();
        took.await.unwrap()
    }
}

/// The proxy's release binary, started under a Runtime API of this process.
async fn start_proxy(bin_dir: &std::path::Path, endpoint: &str) -> (RuntimeApi, tokio::process::Child) {
    let mut api = RuntimeApi::start().await.unwrap();
    let binary = bin_dir.join("proxy");
    let child = runtime_api::function_command(&binary, "proxy", 256, api.addr, endpoint)
        .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
        .env("VAULT_PROXY_ALLOW_LOOPBACK", "true")
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    tokio::time::timeout(Duration::from_secs(10), api.next_calls.recv()).await.expect("the proxy calls next");
    (api, child)
}

/// One proxied call: the function's time from fetching the event to the end of its streamed reply, when
/// the first body byte arrived, and the reply's body after the prelude.
async fn proxied(api: &RuntimeApi, call: Call) -> (Duration, runtime_api::Reply, Vec<u8>) {
    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
    let event = call.function_url_event().to_string();
    api.invocations.send(Invocation { event, reply: reply_tx }).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(30), reply_rx).await.expect("the proxy answers").unwrap();
    assert!(!reply.error, "the proxy reported an invocation error: {}", reply.body);
    let raw = reply.body.as_bytes().to_vec();
    let at = raw.windows(8).position(|w| w == [0u8; 8]).expect("a streamed reply: prelude, NULs, body");
    let prelude: Value = serde_json::from_slice(&raw[..at]).unwrap();
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    (reply.answered - reply.handed_out, reply, raw[at + 8..].to_vec())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let calls: usize = arg("--calls").map_or(2000, |v| v.parse().unwrap());
    let bin_dir = PathBuf::from(arg("--bin-dir").unwrap_or_else(|| "target/release".into()));

    let t = TestVault::start_with(&[("VAULT_PROXY_ALLOW_LOOPBACK", "true")]).await;
    let token = vault_dev::sign_hs256(
        HS256_SECRET.as_bytes(),
        &vault_dev::m2m_claims(vault_tests::ISSUER, vault_tests::AUDIENCE, ORG, CLIENT, "", 24 * 3600),
    )
    .unwrap();
    let models = json!({"object": "list", "data": [{"id": "gpt-bench", "object": "model"}]});
    let upstream = TestUpstream::http(answer_json(200, models)).await;
    for (name, limits) in [
        ("plain", None),
        ("limited", Some(json!({"perDay": 1_000_000}))),
        ("floor-plain", None),
        ("floor-limited", None),
    ] {
        let mut body = json!({"name": name, "value": "sk-bench-value", "access": "use-only",
            "upstream": {"baseUrl": upstream.http_url("/v1")}});
        if let Some(l) = limits {
            body["limits"] = l;
        }
        assert!(t.send(put(&token, body)).await.status < 300);
    }
    let floor = FloorThread::start(t.endpoint.clone());
    let (api, mut child) = start_proxy(&bin_dir, &t.endpoint).await;

    println!(
        "| Secret | Proxied p50 (ms) | p99 (ms) | Direct p50 (ms) | Floor p50 (ms) | Floor + direct (ms) | Proxied / (floor + direct) | Overhead p50 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, limited) in [("plain", false), ("limited", true)] {
        let (mut via, mut straight, mut floors) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..=calls {
            let (took, _, body) =
                proxied(&api, Call::new("GET", &format!("/vault/proxy/{name}/models")).token(&token)).await;
            assert!(
                String::from_utf8_lossy(&body).contains("\"object\":\"list\""),
                "{}",
                String::from_utf8_lossy(&body)
            );
            let d = direct(upstream.port).await;
            let f = floor.run(limited).await;
            if i > 0 {
                via.push(took);
                straight.push(d);
                floors.push(f);
            }
        }
        for v in [&mut via, &mut straight, &mut floors] {
            v.sort();
        }
        let (p50, direct50, floor50) = (percentile(&via, 0.5), percentile(&straight, 0.5), percentile(&floors, 0.5));
        let base = floor50 + direct50;
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} |",
            if limited { "use-only, with limits (counter)" } else { "use-only, no limits" },
            ms(p50),
            ms(percentile(&via, 0.99)),
            ms(direct50),
            ms(floor50),
            ms(base),
            p50.as_secs_f64() / base.as_secs_f64().max(1e-9),
            ms(p50.saturating_sub(base)),
        );
    }

    // A streamed answer: the upstream writes its first event, notes when, waits 20 ms, writes the rest.
    let first_written: Arc<Mutex<Option<Instant>>> = Arc::default();
    let noted = first_written.clone();
    let streaming: Respond = Arc::new(move |_, mut conn| {
        let noted = noted.clone();
        Box::pin(async move {
            conn.start_stream(200, &[("content-type", "text/event-stream")]).await?;
            conn.chunk(b"data: {\"delta\":\"first\"}\n\n").await?;
            *noted.lock().unwrap() = Some(Instant::now());
            tokio::time::sleep(Duration::from_millis(20)).await;
            conn.chunk(b"data: {\"delta\":\"second\"}\n\ndata: [DONE]\n\n").await?;
            conn.end().await
        })
    });
    let sse = TestUpstream::http(streaming).await;
    let body = json!({"name": "stream", "value": "sk-bench-stream", "access": "use-only",
        "upstream": {"baseUrl": sse.http_url("/v1")}});
    assert!(t.send(put(&token, body)).await.status < 300);
    let streams = (calls / 10).max(20);
    let mut forward = Vec::new();
    for i in 0..=streams {
        *first_written.lock().unwrap() = None;
        let (_, reply, body) =
            proxied(&api, Call::new("POST", "/vault/proxy/stream/chat/completions").token(&token).raw_body("{}")).await;
        assert!(body.ends_with(b"data: [DONE]\n\n"), "{}", String::from_utf8_lossy(&body));
        let written = first_written.lock().unwrap().expect("the upstream wrote its first event");
        let arrived = reply.first_body_byte.expect("a first body byte");
        if i > 0 {
            forward.push(arrived.saturating_duration_since(written));
        }
    }
    forward.sort();
    println!();
    println!("| Streamed answer | Calls | First event forwarded p50 (ms) | p90 (ms) | p99 (ms) |");
    println!("|---|---|---|---|---|");
    println!(
        "| upstream writes an event, waits 20 ms, writes the rest | {} | {} | {} | {} |",
        forward.len(),
        ms(percentile(&forward, 0.5)),
        ms(percentile(&forward, 0.9)),
        ms(percentile(&forward, 0.99)),
    );
    child.kill().await.ok();
}
