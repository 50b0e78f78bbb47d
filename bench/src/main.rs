//! `vault-bench`: plays the Lambda service for each release function binary and measures what a request
//! costs, against the floor of the DynamoDB calls the operation cannot avoid.
//!
//! For each function it starts a DynamoDB-compatible server (dynoxide, in this process), a Runtime API
//! server on loopback, and the function's binary with `AWS_LAMBDA_RUNTIME_API` pointing at it, then feeds
//! it API Gateway HTTP API v2 events and measures: init (process start to its first `next` call), the
//! first invocation, warm invocations (p50, p99, max), and peak RSS (with RSS sampled along the way to
//! show it flat). The floor is the same DynamoDB calls issued directly through the store's SDK calls
//! against the same server, with no HTTP parsing, token check, policy or crypto, from a thread of its own
//! with a current-thread runtime (as a function runs); one floor run follows each warm invocation, so
//! both see the same server state and the same machine. The portal, which
//! makes no DynamoDB call, measures what every invocation costs before any work: the Runtime API hop,
//! the event's parsing and the reply.
//!
//! Prints Markdown tables. `scripts/bench` builds the binaries and writes the tables into BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code, reason = "shared with vault-proxy-bench, which reads the streamed replies' first byte")]
mod runtime_api;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use token_vault::{
    AuditEvent, Binding, EventKind, MasterKey, Owner, Principal, RequestMeta, TokenKind,
    table::{
        AUDIT_SHARDS, AuditFilter, AuditPart, AuditSource, SecretItem, Store, ToItem, WriteGuard, new_lifetime,
        record_key,
    },
};
use vault_tests::{Call, HS256_SECRET, MASTER_KEY, TestVault, send_to};

use runtime_api::{Invocation, RuntimeApi};

const ORG: &str = "org-bench";
const CLIENT: &str = "client-bench";
const USER: &str = "user-bench";

/// One measured operation: the function that serves it and how its events are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    CreateNew,
    Update,
    GetM2m,
    GetUser,
    List,
    Delete,
    BatchGet,
    Rollback,
    Audit,
    Portal,
}

impl Scenario {
    const ALL: [Scenario; 10] = [
        Self::CreateNew,
        Self::Update,
        Self::GetM2m,
        Self::GetUser,
        Self::List,
        Self::Delete,
        Self::BatchGet,
        Self::Rollback,
        Self::Audit,
        Self::Portal,
    ];

    fn function(self) -> &'static str {
        match self {
            Self::CreateNew | Self::Update => "create-secret",
            Self::GetM2m | Self::GetUser => "get-secret",
            Self::List => "list-secrets",
            Self::Delete => "delete-secret",
            Self::BatchGet => "batch-get-secrets",
            Self::Rollback => "rollback-secret",
            Self::Audit => "query-audit",
            Self::Portal => "portal",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::CreateNew => "POST /vault/secrets (new secret)",
            Self::Update => "POST /vault/secrets (update: new version)",
            Self::GetM2m => "GET /vault/secrets/{name} (M2M token)",
            Self::GetUser => "GET /vault/secrets/{name} (user token: 2 candidates)",
            Self::List => "GET /vault/secrets (a page of 100)",
            Self::Delete => "DELETE /vault/secrets/{name}",
            Self::BatchGet => "POST /vault/secrets/batch-get (5 names)",
            Self::Rollback => "POST /vault/secrets/{name}/rollback",
            Self::Audit => "GET /vault/audit (the client's own events, 100 newest of today)",
            Self::Portal => "GET /portal/vault (static page: no DynamoDB call)",
        }
    }

    /// The request of invocation `i`.
    fn call(self, i: usize, tokens: &Tokens) -> Call {
        let m2m = tokens.m2m.as_str();
        match self {
            Self::CreateNew => vault_tests::put(m2m, json!({"name": format!("new-{i}"), "value": value(i)})),
            Self::Update => vault_tests::put(m2m, json!({"name": "hot", "value": value(i)})),
            Self::GetM2m => vault_tests::get(m2m, "read-me"),
            Self::GetUser => vault_tests::get(&tokens.user, "read-me"),
            Self::List => vault_tests::list(m2m).query("limit", "100"),
            Self::Delete => vault_tests::delete(m2m, &format!("del-{i}")),
            Self::BatchGet => Call::new("POST", "/vault/secrets/batch-get")
                .token(m2m)
                .json(&json!({"names": ["b0", "b1", "b2", "b3", "b4"]})),
            Self::Rollback => {
                // "rb" starts at version 5 and every rollback adds one: roll back to the one before.
                Call::new("POST", "/vault/secrets/rb/rollback").token(m2m).json(&json!({"version": 4 + i}))
            }
            Self::Audit => {
                Call::new("GET", "/vault/audit").token(m2m).query("from", &tokens.audit_from).query("limit", "100")
            }
            Self::Portal => Call::new("GET", "/portal/vault"),
        }
    }
}

/// A 1 KiB value, different for each invocation.
fn value(i: usize) -> String {
    format!("{i:08}{}", "x".repeat(1016))
}

struct Tokens {
    m2m: String,
    user: String,
    audit_from: String,
}

fn long_token(claims: Value) -> String {
    vault_dev::sign_hs256(HS256_SECRET.as_bytes(), &claims).unwrap()
}

#[derive(Debug, Default)]
struct Measured {
    init: Duration,
    first: Duration,
    warm: Vec<Duration>,
    rss_samples_kib: Vec<u64>,
    peak_rss_kib: u64,
    floor: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Seeds what the scenarios read, update and delete, through the real handlers.
async fn seed(t: &TestVault, tokens: &Tokens, invocations: usize) {
    let m2m = tokens.m2m.as_str();
    let mut calls = vec![
        vault_tests::put(m2m, json!({"name": "read-me", "value": value(0)})),
        vault_tests::put(m2m, json!({"name": "hot", "value": value(0)})),
    ];
    calls.extend((0..5).map(|v| vault_tests::put(m2m, json!({"name": "rb", "value": value(v)}))));
    calls.extend((0..5).map(|b| vault_tests::put(m2m, json!({"name": format!("b{b}"), "value": value(b)}))));
    calls.extend((0..3).map(|l| vault_tests::put(m2m, json!({"name": format!("l{l}"), "value": value(l)}))));
    for prefix in ["del", "floor-del"] {
        calls.extend(
            (0..=invocations + 1)
                .map(|d| vault_tests::put(m2m, json!({"name": format!("{prefix}-{d}"), "value": value(d)}))),
        );
    }
    for call in calls {
        let r = send_to(&t.vault, call).await;
        assert!(r.status < 300, "seeding: {} {}", r.status, r.body);
    }
}

/// Runs one scenario against the function binary in `bin_dir`.
async fn measure(
    scenario: Scenario,
    bin_dir: &Path,
    endpoint: &str,
    tokens: &Tokens,
    invocations: usize,
    floor: &FloorThread,
) -> Result<Measured, String> {
    let mut api = RuntimeApi::start().await.map_err(|e| e.to_string())?;
    let binary = bin_dir.join(scenario.function());
    let started = Instant::now();
    let mut child = runtime_api::function_command(&binary, scenario.function(), 128, api.addr, endpoint)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let pid = child.id().ok_or("no pid")?;
    let first_next = tokio::time::timeout(Duration::from_secs(10), api.next_calls.recv())
        .await
        .map_err(|_| format!("{} never called next", scenario.function()))?
        .ok_or("runtime API closed")?;
    let mut m = Measured { init: first_next - started, ..Measured::default() };
    for i in 0..=invocations {
        let event = scenario.call(i, tokens).event().to_string();
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        api.invocations.send(Invocation { event, reply: reply_tx }).await.map_err(|e| e.to_string())?;
        let reply = tokio::time::timeout(Duration::from_secs(10), reply_rx)
            .await
            .map_err(|_| format!("{}: invocation {i} timed out", scenario.label()))?
            .map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        let status = body["statusCode"].as_u64().unwrap_or(0);
        if reply.error || !(200..300).contains(&status) {
            return Err(format!("{}: invocation {i} answered {status}: {}", scenario.label(), reply.body));
        }
        let took = reply.answered - reply.handed_out;
        if i == 0 {
            m.first = took;
        } else {
            m.warm.push(took);
            if let Some(floor_took) = floor.run(scenario, i).await {
                m.floor.push(floor_took);
            }
        }
        if i % 1000 == 0 || i == invocations {
            m.rss_samples_kib.push(status_kib(pid, "VmRSS:"));
        }
    }
    m.peak_rss_kib = status_kib(pid, "VmHWM:");
    child.kill().await.ok();
    m.warm.sort();
    Ok(m)
}

/// The floor of a scenario: the DynamoDB calls its operation makes, issued directly.
struct Floor {
    store: Store,
    principal: Principal,
    key: token_vault::OrgKey,
    salt: [u8; 32],
}

/// The floor's own thread: a current-thread runtime with its own DynamoDB client, as a function has,
/// so the floor does not share the runtime threads of the DynamoDB server inside this process.
struct FloorThread {
    runs: tokio::sync::mpsc::Sender<FloorRun>,
}

type FloorRun = (Scenario, usize, tokio::sync::oneshot::Sender<Option<Duration>>);

impl FloorThread {
    fn start(endpoint: String) -> Self {
        let (runs, mut requests) = tokio::sync::mpsc::channel::<FloorRun>(1);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let floor = Floor::new(vault_dev::local_client(&endpoint).await).await;
                while let Some((scenario, i, reply)) = requests.recv().await {
                    let _ = reply.send(floor.run(scenario, i).await);
                }
            });
        });
        Self { runs }
    }

    async fn run(&self, scenario: Scenario, i: usize) -> Option<Duration> {
        let (reply, took) = tokio::sync::oneshot::channel();
        self.runs.send((scenario, i, reply)).await.unwrap();
        took.await.unwrap()
    }
}

impl Floor {
    async fn new(client: aws_sdk_dynamodb::Client) -> Self {
        let store = Store::new(client, vault_tests::TABLES);
        let salt = store.get_salt(ORG).await.unwrap().expect("the organization has a salt").bytes;
        let key = MasterKey::from_hex(MASTER_KEY).unwrap().derive_org_key(ORG, &salt);
        let principal = Principal {
            org_id: ORG.into(),
            client_id: CLIENT.into(),
            kind: TokenKind::Machine,
            scopes: Default::default(),
            admin: false,
        };
        Self { store, principal, key, salt }
    }

    fn audit(&self, name: &str) -> token_vault::table::Item {
        let meta = RequestMeta { request_id: "floor".into(), ..Default::default() };
        let owner = Owner::App { client_id: CLIENT.into() };
        AuditEvent {
            kind: EventKind::Retrieved,
            principal: &self.principal,
            meta: &meta,
            secret_name: name,
            owner: Some(&owner),
            outcome: "success",
            detail: None,
        }
        .to_item(time::OffsetDateTime::now_utc(), 365)
    }

    fn secret(&self, name: &str, version: u64, i: usize) -> SecretItem {
        let owner = Owner::App { client_id: CLIENT.into() };
        let envelope = self.key.seal(Binding::new(ORG, &owner, name), value(i).as_bytes()).unwrap();
        SecretItem {
            owner,
            name: name.into(),
            scope: Vec::new(),
            expires_at: None,
            created_at: "2026-11-28T00:00:00Z".into(),
            updated_at: "2026-11-28T00:00:00Z".into(),
            version,
            envelope: Some(envelope),
            lifetime: Some(new_lifetime()),
            fence: None,
            recorded: false,
            access: Default::default(),
            upstream: None,
            limits: Default::default(),
        }
    }

    fn guard(&self, now: i64) -> WriteGuard<'_> {
        WriteGuard { org_id: ORG, audit: self.audit("x"), now, salt: Some(&self.salt) }
    }

    /// One run of the scenario's calls; returns its duration (none for the portal, which makes none).
    async fn run(&self, scenario: Scenario, i: usize) -> Option<Duration> {
        let app = Owner::App { client_id: CLIENT.into() };
        let user = Owner::User { user_id: USER.into() };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // Sealing is not part of the floor: prepare the item first.
        let prepared = match scenario {
            Scenario::CreateNew => Some(self.secret(&format!("floor-new-{i}"), 1, i)),
            Scenario::Update | Scenario::Rollback => Some(self.secret(&format!("floor-{scenario:?}"), 0, i)),
            _ => None,
        };
        let started = Instant::now();
        match scenario {
            Scenario::CreateNew => {
                let secret = prepared.unwrap();
                self.store.get_secret(ORG, &app, &secret.name).await.unwrap();
                self.store.create_secret(&secret, None, self.guard(now)).await.unwrap();
            }
            Scenario::Update | Scenario::Rollback => {
                let mut secret = prepared.unwrap();
                let current = self.store.get_secret(ORG, &app, &secret.name).await.unwrap();
                if scenario == Scenario::Rollback {
                    self.store.get_record(ORG, &app, "rb", &record_key("rb", 4)).await.unwrap();
                }
                match current {
                    None => {
                        secret.version = 1;
                        self.store.create_secret(&secret, None, self.guard(now)).await.unwrap();
                    }
                    Some(current) => {
                        secret.version = current.version + 1;
                        secret.lifetime.clone_from(&current.lifetime);
                        self.store
                            .replace_secret(&secret, &current, Default::default(), self.guard(now))
                            .await
                            .unwrap();
                    }
                }
            }
            Scenario::GetM2m => {
                self.store.get_secret(ORG, &app, "read-me").await.unwrap();
                self.store.put_audit(self.audit("read-me")).await.unwrap();
            }
            Scenario::GetUser => {
                let (a, b) = tokio::join!(
                    self.store.get_secret(ORG, &user, "read-me"),
                    self.store.get_secret(ORG, &app, "read-me")
                );
                a.unwrap();
                b.unwrap();
                self.store.put_audit(self.audit("read-me")).await.unwrap();
            }
            Scenario::List => {
                self.store.list_secrets(ORG, &app, None, 100, now).await.unwrap();
            }
            Scenario::Delete => {
                let name = format!("floor-del-{i}");
                let current = self.store.get_secret(ORG, &app, &name).await.unwrap().expect("seeded");
                self.store
                    .delete_secret(&current, WriteGuard { org_id: ORG, audit: self.audit(&name), now, salt: None })
                    .await
                    .unwrap();
            }
            Scenario::BatchGet => {
                let keys: Vec<(Owner, String)> = (0..5).map(|b| (app.clone(), format!("b{b}"))).collect();
                self.store.batch_get_secrets(ORG, &keys).await.unwrap();
                self.store.put_audits((0..5).map(|b| self.audit(&format!("b{b}"))).collect()).await.unwrap();
            }
            Scenario::Audit => {
                let day = time::OffsetDateTime::now_utc().date();
                // What the service asks for an M2M token: only the events its client took part in. A page
                // of 100 of today's events reads every write shard and today's unsharded partition once,
                // concurrently.
                let filter = AuditFilter { actor: Some(app.clone()), ..AuditFilter::default() };
                let (lowest, highest) = ("0".repeat(32), "f".repeat(32));
                let per_shard = 100usize.div_ceil(usize::from(AUDIT_SHARDS)) * 4 + 4;
                let shards = (0..AUDIT_SHARDS).map(|n| (AuditSource::Shard(n), per_shard));
                let reads = shards.chain([(AuditSource::Unsharded(day), 100)]).map(|(source, limit)| {
                    let q =
                        AuditPart { org_id: ORG, source, lowest: &lowest, highest: &highest, filter: &filter, limit };
                    self.store.query_audit_part(q)
                });
                for read in futures_util::future::join_all(reads).await {
                    read.unwrap();
                }
            }
            Scenario::Portal => return None,
        }
        Some(started.elapsed())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let invocations: usize = arg("--invocations").map_or(Ok(2000), |v| v.parse()).map_err(|e| format!("{e}"))?;
    let bin_dir = PathBuf::from(arg("--bin-dir").unwrap_or_else(|| "target/release".into()));
    let only = arg("--only");

    let t = TestVault::start().await;
    // Valid for a day: a full run outlives the tests' ten-minute tokens.
    let day = 24 * 3600;
    let (issuer, audience) = (vault_tests::ISSUER, vault_tests::AUDIENCE);
    let tokens = Tokens {
        m2m: long_token(vault_dev::m2m_claims(issuer, audience, ORG, CLIENT, "", day)),
        user: long_token(vault_dev::user_claims(issuer, audience, ORG, CLIENT, USER, "", day)),
        audit_from: (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    };
    seed(&t, &tokens, invocations).await;
    let floor = FloorThread::start(t.endpoint.clone());

    println!(
        "| Operation | Function | Init (ms) | First (ms) | Warm p50 (ms) | p99 (ms) | max (ms) | Floor p50 (ms) | p50 / floor | p50 − floor (ms) | Peak RSS (MiB) | RSS every 1,000 (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for scenario in Scenario::ALL {
        if only.as_deref().is_some_and(|o| !scenario.function().contains(o)) {
            continue;
        }
        let mut m = measure(scenario, &bin_dir, &t.endpoint, &tokens, invocations, &floor).await?;
        m.floor.sort();
        let p50 = percentile(&m.warm, 0.5);
        let floor_p50 = percentile(&m.floor, 0.5);
        let (floor_cell, ratio_cell, over_cell) = if m.floor.is_empty() {
            ("none".to_owned(), "n/a".to_owned(), ms(p50))
        } else {
            (
                ms(floor_p50),
                format!("{:.2}", p50.as_secs_f64() / floor_p50.as_secs_f64().max(1e-9)),
                format!("{:.2}", (p50.as_secs_f64() - floor_p50.as_secs_f64()) * 1000.0),
            )
        };
        let samples: Vec<String> = m.rss_samples_kib.iter().map(|k| format!("{:.1}", *k as f64 / 1024.0)).collect();
        println!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            scenario.label(),
            scenario.function(),
            ms(m.init),
            ms(m.first),
            ms(p50),
            ms(percentile(&m.warm, 0.99)),
            ms(m.warm.last().copied().unwrap_or_default()),
            floor_cell,
            ratio_cell,
            over_cell,
            m.peak_rss_kib as f64 / 1024.0,
            samples.join(" → "),
        );
    }
    Ok(())
}
