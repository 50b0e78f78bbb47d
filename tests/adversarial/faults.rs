//! Faults: DynamoDB unreachable, stopped mid-run, slow, throttled or failing, and an audit table that
//! refuses writes. Every endpoint must answer 503 `storage_unavailable` with `Retry-After` within a
//! bounded time (never hang to the Lambda timeout), transient failures must be retried by the SDK as
//! `token_vault::sdk_config_loader` configures it, and nothing may be half-written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use token_vault::Vault;
use vault_tests::proxy::{Fault, Proxy};
use vault_tests::*;

use crate::leaks;

/// Generous on a loaded 2-core machine; far below the 10 s Lambda timeout.
const BOUND: Duration = Duration::from_secs(5);

fn every_endpoint(tok: &str) -> Vec<(&'static str, Call)> {
    vec![
        ("create", put(tok, json!({"name": "k", "value": leaks::value("fault")}))),
        ("get", get(tok, "k")),
        ("list", list(tok)),
        ("delete", delete(tok, "k")),
    ]
}

/// Every endpoint answers 503 with Retry-After, within `bound`.
async fn all_unavailable(vault: &Vault, tok: &str, bound: Duration, why: &str) {
    for (op, call) in every_endpoint(tok) {
        let started = Instant::now();
        let r = send_to(vault, call).await;
        let took = started.elapsed();
        assert_eq!((r.status, r.code()), (503, "storage_unavailable"), "{why}: {op}: {}", r.body);
        assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"), "{why}: {op}");
        assert!(!r.body.contains(leaks::VALUE_MARKER));
        assert!(took < bound, "{why}: {op} answered in {took:?}, over {bound:?}");
    }
}

pub async fn unreachable() {
    let t = TestVault::start().await;
    let dead = vault_over(isolated_client("http://127.0.0.1:9", "unreachable").await, &[]).await;
    all_unavailable(&dead, &m2m("org1", "c"), BOUND, "closed port").await;
    leaks::keep(&t).await;
}

/// The store as the API shows it to one M2M client: name -> value.
async fn visible(vault: &Vault, tok: &str, names: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in names {
        let r = send_to(vault, get(tok, name)).await;
        match r.status {
            200 => {
                out.insert(name.clone(), r.json["value"].as_str().unwrap().to_owned());
            }
            404 => {}
            other => panic!("reading {name} back: {other} {}", r.body),
        }
    }
    out
}

pub async fn stopped() {
    capture_logs();
    // A server of our own over a database we keep, so it can be stopped and started again on its port.
    let db = vault_dev::Database::memory().unwrap();
    let server = vault_dev::LocalDynamo::start(db.clone(), ([127, 0, 0, 1], 0).into()).await.unwrap();
    let addr = server.addr;
    let endpoint = server.endpoint();
    let client = isolated_client(&endpoint, "stopped").await;
    vault_dev::create_tables(&client, TABLES).await.unwrap();
    let vault = Arc::new(vault_over(client.clone(), &[]).await);
    let mut t =
        TestVault { dynamo: Some(server), endpoint, client: client.clone(), vault: vault_over(client, &[]).await };
    let tok = m2m("org-stop", "c");
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let mut seeded = BTreeMap::new();
    for name in &names {
        let v = leaks::value("before");
        let r = send_to(&vault, put(&tok, json!({"name": name, "value": v}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        seeded.insert(name.clone(), v);
    }
    // Writers cycle update, delete, create on their own names while the server goes away and comes
    // back; each keeps what it was told, so the final store and audit log can be predicted exactly.
    let writers: Vec<_> = names
        .iter()
        .cloned()
        .map(|name| {
            let (vault, tok) = (vault.clone(), tok.clone());
            let mut value = seeded.get(&name).cloned();
            tokio::spawn(async move {
                let mut told: Vec<&'static str> = Vec::new();
                let mut refused = 0;
                for step in 0..24 {
                    let started = Instant::now();
                    let (call, new_value) = if step % 3 == 1 {
                        (delete(&tok, &name), None)
                    } else {
                        let v = leaks::value("during");
                        (put(&tok, json!({"name": name, "value": v})), Some(v))
                    };
                    let deleting = new_value.is_none();
                    let r = send_to(&vault, call).await;
                    assert!(started.elapsed() < BOUND, "{name}: answered in {:?}", started.elapsed());
                    match (r.status, deleting) {
                        (200, true) => told.push("vault.secret.deleted"),
                        (404, true) => {}
                        (201, false) => told.push("vault.secret.created"),
                        (200, false) => told.push("vault.secret.updated"),
                        (503, _) => {
                            assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        other => panic!("{name}: unexpected {other:?}: {}", r.body),
                    }
                    value = new_value;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                (name, value, told, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let stopping = Instant::now();
    t.dynamo.take().unwrap().stop().await;
    assert!(stopping.elapsed() < BOUND, "the server stops");
    all_unavailable(&vault, &tok, BOUND, "server stopped").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.dynamo = Some(vault_dev::LocalDynamo::start(db, addr).await.unwrap());

    let mut want = BTreeMap::new();
    let mut told_events: Vec<String> = vec!["vault.secret.created".into(); names.len()];
    let mut refused = 0;
    for w in writers {
        let (name, value, told, r) = w.await.unwrap();
        refused += r;
        if let Some(v) = value {
            want.insert(name, v);
        }
        told_events.extend(told.into_iter().map(str::to_owned));
    }
    assert!(refused > 0, "the server stopped while the writers were writing");
    // Nothing half-written: the store holds exactly what clients were told, and the audit log has
    // exactly one event per acknowledged write.
    assert_eq!(visible(&vault, &tok, &names).await, want);
    let mut audited: Vec<String> = t.audit_events("org-stop").await;
    audited.retain(|e| e != "vault.secret.retrieved");
    audited.sort();
    told_events.sort();
    assert_eq!(audited, told_events, "the audit log agrees with what clients were told");
    leaks::keep(&t).await;
}

pub async fn slow() {
    let t = TestVault::start().await;
    let tok = m2m("org-slow", "c");
    let r = t.send(put(&tok, json!({"name": "k", "value": leaks::value("slow")}))).await;
    assert_eq!(r.status, 201);
    let proxy = Proxy::start(&t.endpoint).await;
    proxy.set_delay(Duration::from_millis(1500));
    // Each DynamoDB answer takes 1.5 s: within the SDK's 2 s attempt timeout, so only the overall
    // deadline can stop a request that needs several of them (a read needs three).
    let client = isolated_client(&proxy.endpoint, "slow").await;
    let deadline = vault_over(client.clone(), &[("VAULT_REQUEST_TIMEOUT_MS", "1000")]).await;
    all_unavailable(&deadline, &tok, Duration::from_secs(4), "1 s deadline over a slow DynamoDB").await;
    // The same slow DynamoDB under the default deadline (8 s) still answers: it is slow, not broken.
    let patient = vault_over(client, &[]).await;
    let r = send_to(&patient, list(&tok)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Requests cut by the deadline wrote all or nothing: every secret has its audit event.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    proxy.set_delay(Duration::ZERO);
    let items: Vec<Item> =
        t.all_secret_items().await.into_iter().filter(|i| s(i, "pk").starts_with("org#org-slow#app#")).collect();
    let audit = t.audit("org-slow").await;
    for item in &items {
        let name = s(item, "sk");
        assert!(
            audit.iter().any(|e| s(e, "secretName") == name && s(e, "event") == "vault.secret.created"),
            "{name} is stored without its audit event"
        );
    }
    leaks::keep(&t).await;
}

pub async fn transient() {
    let t = TestVault::start().await;
    let proxy = Proxy::start(&t.endpoint).await;
    let vault = vault_over(isolated_client(&proxy.endpoint, "transient").await, &[]).await;
    let tok = m2m("org-transient", "c");
    let value = leaks::value("transient");
    assert_eq!(send_to(&vault, put(&tok, json!({"name": "k", "value": value}))).await.status, 201);
    // A listing is one DynamoDB call: two throttled attempts, then the third succeeds.
    for fault in [Fault::Throttling, Fault::ServerError] {
        let before = proxy.requests();
        proxy.fail_next(2, fault);
        let r = send_to(&vault, list(&tok)).await;
        assert_eq!(r.status, 200, "{fault:?}: {}", r.body);
        assert_eq!(r.json["secrets"][0]["name"], "k");
        assert_eq!(proxy.requests() - before, 3, "{fault:?}: two failed attempts and the retry that succeeded");
    }
    // A read whose audit write is throttled once still returns its value, audited once.
    proxy.fail_next(1, Fault::Throttling);
    let r = send_to(&vault, get(&tok, "k")).await;
    assert_eq!((r.status, r.json["value"].as_str()), (200, Some(value.as_str())));
    assert_eq!(t.audit_events("org-transient").await, ["vault.secret.created", "vault.secret.retrieved"]);
    leaks::keep(&t).await;
}

pub async fn persistent() {
    let t = TestVault::start().await;
    let tok = m2m("org-persistent", "c");
    let r = t.send(put(&tok, json!({"name": "k", "value": leaks::value("persistent")}))).await;
    assert_eq!(r.status, 201);
    let proxy = Proxy::start(&t.endpoint).await;
    let vault = vault_over(isolated_client(&proxy.endpoint, "persistent").await, &[]).await;
    for fault in [Fault::ServerError, Fault::Throttling] {
        proxy.fail_all(Some(fault));
        let before = proxy.requests();
        let started = Instant::now();
        let r = send_to(&vault, list(&tok)).await;
        assert_eq!((r.status, r.code()), (503, "storage_unavailable"), "{fault:?}: {}", r.body);
        assert!(started.elapsed() < BOUND);
        assert_eq!(proxy.requests() - before, 3, "{fault:?}: exactly the configured three attempts");
        all_unavailable(&vault, &tok, BOUND, &format!("persistent {fault:?}")).await;
    }
    proxy.fail_all(None);
    assert_eq!(send_to(&vault, list(&tok)).await.status, 200);
    let mut events = t.audit_events("org-persistent").await;
    events.sort();
    assert_eq!(events, ["vault.secret.created"], "nothing was written while DynamoDB failed");
    leaks::keep(&t).await;
}

pub async fn audit_refusing() {
    let t = TestVault::start().await;
    let tok = m2m("org-audit", "c");
    let original = leaks::value("original");
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": original}))).await.status, 201);
    assert_eq!(t.send(put(&tok, json!({"name": "gone", "value": leaks::value("gone")}))).await.status, 201);
    let secrets_before = t.all_secret_items().await.len();
    // The audit table refuses writes: a read-only table is what an IAM deny or a throttled table
    // looks like to the vault; here the table is taken away.
    t.client.delete_table().table_name(AUDIT_TABLE).send().await.unwrap();
    for (op, call) in every_endpoint(&tok).into_iter().filter(|(op, _)| *op != "list") {
        let r = t.send(call).await;
        assert_eq!((r.status, r.code()), (503, "storage_unavailable"), "{op}: {}", r.body);
        assert!(!r.body.contains(leaks::VALUE_MARKER), "{op}: no value without its audit event");
    }
    let r = t.send(put(&tok, json!({"name": "fresh", "value": leaks::value("fresh")}))).await;
    assert_eq!(r.status, 503);
    let r = t.send(delete(&tok, "gone")).await;
    assert_eq!(r.status, 503);
    vault_dev::create_tables(&t.client, TABLES).await.unwrap();
    assert_eq!(t.all_secret_items().await.len(), secrets_before, "no mutation was applied");
    let r = t.send(get(&tok, "k")).await;
    assert_eq!(r.json["value"].as_str(), Some(original.as_str()), "the update was not applied");
    assert_eq!(t.send(get(&tok, "gone")).await.status, 200, "the delete was not applied");
    assert_eq!(t.send(get(&tok, "fresh")).await.status, 404, "the create was not applied");
    leaks::keep(&t).await;
}

pub async fn audit_denied() {
    let t = TestVault::start().await;
    let tok = m2m("org-denied", "c");
    let original = leaks::value("original");
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": original}))).await.status, 201);
    let proxy = Proxy::start(&t.endpoint).await;
    let vault = vault_over(isolated_client(&proxy.endpoint, "audit-denied").await, &[]).await;
    // Every write that touches the audit table is refused as an IAM deny would be: not retryable.
    proxy.refuse_matching(Some((AUDIT_TABLE, Fault::AccessDenied)));
    let secrets_before = crate::matrix::secrets_snapshot(&t).await;
    for (op, call) in every_endpoint(&tok) {
        let r = send_to(&vault, call).await;
        if op == "list" {
            assert_eq!(r.status, 200, "listing writes no audit event: {}", r.body);
            continue;
        }
        assert_eq!((r.status, r.code()), (500, "internal_error"), "{op}: {}", r.body);
        assert!(!r.body.contains(leaks::VALUE_MARKER), "{op}: no value without its audit event");
    }
    let r = send_to(&vault, put(&tok, json!({"name": "fresh", "value": leaks::value("fresh")}))).await;
    assert_eq!(r.status, 500);
    proxy.refuse_matching(None);
    assert_eq!(crate::matrix::secrets_snapshot(&t).await, secrets_before, "no mutation was applied");
    let r = send_to(&vault, get(&tok, "k")).await;
    assert_eq!(r.json["value"].as_str(), Some(original.as_str()), "the update and the delete were not applied");
    assert_eq!(t.audit_events("org-denied").await, ["vault.secret.created", "vault.secret.retrieved"]);
    leaks::keep(&t).await;
}
