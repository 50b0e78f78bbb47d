//! Concurrency and no lost writes: racing upserts, an update racing a delete, many containers making an
//! organization's first writes at once, and a mixed load whose final store and audit log must agree
//! exactly with what the clients were told.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use vault_tests::*;

use crate::leaks;

pub async fn upserts_of_one_name() {
    let t = Arc::new(TestVault::start().await);
    let tok = m2m("org-hot", "c");
    let values: Vec<String> = (0..50).map(|i| leaks::value(&format!("hot{i}"))).collect();
    let writers: Vec<_> = values
        .iter()
        .cloned()
        .map(|v| {
            let (t, tok) = (t.clone(), tok.clone());
            tokio::spawn(async move { t.send(put(&tok, json!({"name": "hot", "value": v}))).await })
        })
        .collect();
    // Readers watch createdAt while the writers race.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (t, tok) = (t.clone(), tok.clone());
            tokio::spawn(async move {
                let mut seen = BTreeSet::new();
                for _ in 0..10 {
                    let r = t.send(get(&tok, "hot")).await;
                    match r.status {
                        200 => {
                            seen.insert(r.json["createdAt"].as_str().unwrap().to_owned());
                        }
                        404 => {}
                        other => panic!("read during the race: {other} {}", r.body),
                    }
                }
                seen
            })
        })
        .collect();
    let (mut created, mut updated) = (0, 0);
    for w in writers {
        let r = w.await.unwrap();
        match (r.status, r.json["action"].as_str()) {
            (201, Some("created")) => created += 1,
            (200, Some("updated")) => updated += 1,
            other => panic!("unexpected {other:?}: {}", r.body),
        }
    }
    assert_eq!((created, updated), (1, 49));
    let r = t.send(get(&tok, "hot")).await;
    let final_value = r.json["value"].as_str().unwrap();
    assert!(values.iter().any(|v| v == final_value), "the final value is one of those written");
    assert_eq!(r.json["version"], 50, "one version per write: none lost, none doubled");
    let created_at = r.json["createdAt"].as_str().unwrap().to_owned();
    for reader in readers {
        let seen = reader.await.unwrap();
        assert!(seen.iter().all(|c| *c == created_at), "createdAt changed during the race: {seen:?}");
    }
    let events: Vec<Item> =
        t.audit("org-hot").await.into_iter().filter(|e| s(e, "event") != "vault.secret.retrieved").collect();
    assert_eq!(events.len(), 50, "exactly one audit event per write");
    assert_eq!(events.iter().filter(|e| s(e, "event") == "vault.secret.created").count(), 1);
    assert_eq!(events.iter().filter(|e| s(e, "event") == "vault.secret.updated").count(), 49);
    let salts = t.all_key_items().await.iter().filter(|i| s(i, "pk") == "org#org-hot#meta").count();
    assert_eq!(salts, 1, "one salt per organization");
    leaks::keep(&t).await;
}

pub async fn update_and_delete() {
    let t = Arc::new(TestVault::start().await);
    let tok = m2m("org-ud", "c");
    let (mut creates, mut updates, mut deletes) = (0, 0, 0);
    let mut written = BTreeSet::new();
    for round in 0..10 {
        let name = format!("ud{round}");
        let first = leaks::value("ud");
        assert_eq!(t.send(put(&tok, json!({"name": name, "value": first}))).await.status, 201);
        creates += 1;
        written.insert(first);
        let mut tasks = Vec::new();
        for i in 0..4 {
            let v = leaks::value(&format!("ud{i}"));
            written.insert(v.clone());
            let (t, tok, name) = (t.clone(), tok.clone(), name.clone());
            tasks
                .push(tokio::spawn(async move { ("put", t.send(put(&tok, json!({"name": name, "value": v}))).await) }));
        }
        let (t2, tok2, name2) = (t.clone(), tok.clone(), name.clone());
        tasks.push(tokio::spawn(async move { ("delete", t2.send(delete(&tok2, &name2)).await) }));
        for task in tasks {
            let (kind, r) = task.await.unwrap();
            match (kind, r.status) {
                ("put", 201) => creates += 1,
                ("put", 200) => updates += 1,
                ("delete", 200) => deletes += 1,
                other => panic!("unexpected {other:?}: {}", r.body),
            }
        }
        let r = t.send(get(&tok, &name)).await;
        match r.status {
            200 => assert!(written.contains(r.json["value"].as_str().unwrap()), "a value that was written"),
            404 => {}
            other => panic!("{other}: {}", r.body),
        }
    }
    // Every round's secret exists exactly when its creations outnumber its deletions.
    // (Retained earlier versions, marked `versionOf`, are not secrets of their own.)
    let live = t
        .all_secret_items()
        .await
        .iter()
        .filter(|i| s(i, "sk").starts_with("ud") && !i.contains_key("versionOf"))
        .count();
    assert_eq!(creates - deletes, live, "creations minus deletions is what is stored");
    let events = t.audit_events("org-ud").await;
    let count = |e: &str| events.iter().filter(|x| *x == e).count();
    assert_eq!(
        (count("vault.secret.created"), count("vault.secret.updated"), count("vault.secret.deleted")),
        (creates, updates, deletes),
        "the audit log agrees with what clients were told"
    );
    leaks::keep(&t).await;
}

pub async fn first_writes_of_new_org() {
    let t = Arc::new(TestVault::start().await);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let t = t.clone();
        // Each task is a separate warm container with its own key cache; some share a client and name.
        tasks.push(tokio::spawn(async move {
            let vault = t.sibling(&[]).await;
            let tok = m2m("org-race", &format!("client-{}", i % 6));
            let v = leaks::value(&format!("race{i}"));
            let r = send_to(&vault, put(&tok, json!({"name": format!("k{}", i % 3), "value": v}))).await;
            assert!(r.status == 201 || r.status == 200, "{}", r.body);
            (tok, format!("k{}", i % 3))
        }));
    }
    let mut written = BTreeSet::new();
    for task in tasks {
        written.insert(task.await.unwrap());
    }
    let items = t.all_secret_items().await;
    let keys = t.all_key_items().await;
    let salts: Vec<&Item> = keys.iter().filter(|i| s(i, "pk") == "org#org-race#meta").collect();
    assert_eq!(salts.len(), 1, "the organization's salt was created once");
    let secrets =
        items.iter().filter(|i| s(i, "pk").starts_with("org#org-race#app#") && !i.contains_key("versionOf")).count();
    assert_eq!(secrets, written.len());
    // Every secret opens, in a fresh container: none was sealed under a salt that lost the race.
    let fresh = t.sibling(&[]).await;
    for (tok, name) in &written {
        let r = send_to(&fresh, get(tok, name)).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert!(r.json["value"].as_str().unwrap().starts_with(leaks::VALUE_MARKER));
    }
    leaks::keep(&t).await;
}

/// What one worker expects of its own names.
#[derive(Default)]
struct Model {
    values: BTreeMap<String, String>,
    events: Vec<(String, String)>,
}

/// A few thousand mixed operations at concurrency 16 (creates, updates, reads, lists, deletes, by M2M and
/// user tokens of two organizations, on names each worker owns), then the store and the audit log must
/// agree exactly with what the clients saw.
pub async fn mixed_load() {
    const WORKERS: usize = 16;
    const OPS_PER_WORKER: usize = 200;
    let t = Arc::new(TestVault::start().await);
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let t = t.clone();
            tokio::spawn(async move {
                let org = if w % 2 == 0 { "org-load-1" } else { "org-load-2" };
                let tok =
                    if w % 4 < 2 { m2m(org, "shared-client") } else { user(org, "shared-client", &format!("u{w}")) };
                let mut model = Model::default();
                let mut seed = w as u64 * 7919 + 1;
                for op in 0..OPS_PER_WORKER {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let name = format!("w{w}-n{}", (seed >> 33) % 6);
                    match (seed >> 40) % 10 {
                        0..=3 => {
                            let v = leaks::value(&format!("load{w}-{op}"));
                            let r = t.send(put(&tok, json!({"name": name, "value": v}))).await;
                            let event = match (r.status, model.values.contains_key(&name)) {
                                (201, false) => "vault.secret.created",
                                (200, true) => "vault.secret.updated",
                                other => panic!("{name}: put {other:?}: {}", r.body),
                            };
                            model.values.insert(name.clone(), v);
                            model.events.push((event.into(), name));
                        }
                        4..=6 => {
                            let r = t.send(get(&tok, &name)).await;
                            match (r.status, model.values.get(&name)) {
                                (200, Some(v)) => {
                                    assert_eq!(r.json["value"].as_str(), Some(v.as_str()), "{name}");
                                    model.events.push(("vault.secret.retrieved".into(), name));
                                }
                                (404, None) => {}
                                other => panic!("{name}: get {:?}: {}", (other.0, other.1.is_some()), r.body),
                            }
                        }
                        7 => {
                            let r = t.send(delete(&tok, &name)).await;
                            match (r.status, model.values.remove(&name)) {
                                (200, Some(_)) => model.events.push(("vault.secret.deleted".into(), name)),
                                (404, None) => {}
                                other => panic!("{name}: delete {:?}: {}", (other.0, other.1.is_some()), r.body),
                            }
                        }
                        _ => {
                            let r = t.send(list(&tok).query("limit", "1000")).await;
                            assert_eq!(r.status, 200, "{}", r.body);
                            let mine: BTreeSet<&str> = r.json["secrets"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .filter_map(|s| s["name"].as_str())
                                .filter(|n| n.starts_with(&format!("w{w}-")))
                                .collect();
                            let want: BTreeSet<&str> = model.values.keys().map(String::as_str).collect();
                            assert_eq!(mine, want, "worker {w}'s listing");
                        }
                    }
                }
                (org, w, model)
            })
        })
        .collect();
    let mut want_events: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    let mut want_store: BTreeSet<(String, String)> = BTreeSet::new();
    for worker in workers {
        let (org, w, model) = worker.await.unwrap();
        for name in model.values.keys() {
            let owner = if w % 4 < 2 { "app#shared-client".to_owned() } else { format!("user#u{w}") };
            want_store.insert((format!("org#{org}#{owner}"), name.clone()));
        }
        want_events.entry(org).or_default().extend(model.events);
    }
    let took = started.elapsed();
    println!("mixed load: {} operations at concurrency {WORKERS} in {took:.1?}", WORKERS * OPS_PER_WORKER);

    let stored: BTreeSet<(String, String)> = t
        .all_secret_items()
        .await
        .iter()
        .filter(|i| !s(i, "pk").ends_with("#meta") && !i.contains_key("versionOf"))
        .map(|i| (s(i, "pk"), s(i, "sk")))
        .collect();
    assert_eq!(stored, want_store, "the store holds exactly what clients were told");
    for (org, mut want) in want_events {
        let mut audited: Vec<(String, String)> =
            t.audit(org).await.iter().map(|e| (s(e, "event"), s(e, "secretName"))).collect();
        audited.sort();
        want.sort();
        assert_eq!(audited.len(), want.len(), "{org}: one audit event per acknowledged operation");
        assert_eq!(audited, want, "{org}: the audit log agrees with what clients were told");
    }
    leaks::keep(&t).await;
}
