//! Master key rotation (keyring, rewrap job) and crypto-shredding, against a real DynamoDB-compatible
//! server, with the API serving traffic throughout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use token_vault::{RewrapOptions, Vault};
use vault_tests::*;

const NEW_KEY: &str = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";

fn ring_new_and_old() -> String {
    format!("k2:{NEW_KEY},k1:{MASTER_KEY}")
}

fn ring_new_only() -> String {
    format!("k2:{NEW_KEY}")
}

async fn ring_vault(t: &TestVault, ring: &str) -> Vault {
    t.sibling(&[("VAULT_MASTER_KEY", ""), ("VAULT_MASTER_KEYS", ring)]).await
}

/// Writes `per_org` app-level and `per_org` user-level secrets in each org; returns (token, name, value).
async fn seed(t: &TestVault, orgs: &[&str], per_org: usize) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for org in orgs {
        for i in 0..per_org {
            for (kind, tok) in [("app", m2m(org, "client-a")), ("user", user(org, "client-a", "auth0|u1"))] {
                let name = format!("{kind}-{i}");
                let value = format!("{org}-{kind}-{i}-v0");
                let r = t.send(put(&tok, json!({"name": name, "value": value}))).await;
                assert_eq!(r.status, 201, "{}", r.body);
                out.push((tok, name, value));
            }
        }
    }
    out
}

#[tokio::test]
async fn rotation_under_load_loses_no_write_and_counts_exactly() {
    let t = Arc::new(TestVault::start().await);
    let mut expected: Vec<(String, String, String)> = seed(&t, &["org-a", "org-b", "org-c"], 6).await;
    let total = expected.len();
    let before = t.vault.key_usage().await.unwrap();
    assert_eq!(before.values().sum::<usize>(), total);
    assert_eq!(before.len(), 1, "everything starts under the lone key");

    // The new ring is deployed: every container now writes under k2 and still reads k1.
    let serving = Arc::new(ring_vault(&t, &ring_new_and_old()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, (tok, name, _)) in expected.iter().enumerate().filter(|(i, _)| i % 4 == 0) {
        let (serving, stop, tok, name) = (serving.clone(), stop.clone(), tok.clone(), name.clone());
        writers.push((
            w,
            tokio::spawn(async move {
                let mut last = None;
                let mut j = 0;
                while !stop.load(Ordering::SeqCst) && j < 200 {
                    let value = format!("{name}-w{j}");
                    let r = send_to(&serving, put(&tok, json!({"name": name, "value": value}))).await;
                    assert_eq!(r.status, 200, "{}", r.body);
                    last = Some(value);
                    j += 1;
                }
                last
            }),
        ));
    }
    let mut readers = Vec::new();
    for (tok, name, _) in expected.clone() {
        let (serving, stop) = (serving.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) && reads < 50 {
                let r = send_to(&serving, get(&tok, &name)).await;
                assert_eq!(r.status, 200, "a read failed during rotation: {}", r.body);
                reads += 1;
            }
        }));
    }
    let job_vault = ring_vault(&t, &ring_new_and_old()).await;
    let report = job_vault.rewrap_all(&RewrapOptions::default(), |_| {}).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for (w, task) in writers {
        if let Some(last) = task.await.unwrap() {
            expected[w].2 = last;
        }
    }
    for task in readers {
        task.await.unwrap();
    }

    // Stored values: every secret's current version plus the earlier versions the writers left.
    let stored = t.all_secret_items().await.iter().filter(|i| i.contains_key("keyId")).count();
    assert!(stored > total, "the writers left retained versions");
    assert!(report.complete);
    assert_eq!(report.organizations, 3);
    assert!(report.secrets_seen >= total, "{report:?}");
    assert_eq!(report.failed, 0);
    assert_eq!(report.rewrapped + report.already_current + report.changed_meanwhile, report.secrets_seen, "{report:?}");
    let untouched_by_writers = expected.len() - expected.len().div_ceil(4);
    assert!(report.rewrapped >= untouched_by_writers, "{report:?}");
    assert_eq!(job_vault.key_usage().await.unwrap(), BTreeMap::from([("k2".to_owned(), stored)]));

    // The old key leaves the ring: every secret still opens, with the last value written, and so does
    // every retained version (none was archived from a data key the job had already moved).
    let after = ring_vault(&t, &ring_new_only()).await;
    for (tok, name, value) in &expected {
        let r = send_to(&after, get(tok, name)).await;
        assert_eq!((r.status, r.json["value"].as_str()), (200, Some(value.as_str())), "{name}");
        let current = r.json["version"].as_u64().unwrap();
        for v in current.saturating_sub(4).max(1)..current {
            let r = send_to(&after, get(tok, name).query("version", &v.to_string())).await;
            assert_eq!((r.status, r.json["version"].as_u64()), (200, Some(v)), "{name} v{v}: {}", r.body);
        }
    }
    for org in ["org-a", "org-b", "org-c"] {
        let rotated = t.audit_events(org).await.iter().filter(|e| *e == "vault.key.rotated").count();
        assert_eq!(rotated, 1, "{org}");
    }
}

#[tokio::test]
async fn an_interrupted_rewrap_resumes_and_never_rewraps_twice() {
    let t = TestVault::start().await;
    let secrets = seed(&t, &["org-1", "org-2"], 8).await;
    let total = secrets.len();
    let job = ring_vault(&t, &ring_new_and_old()).await;

    let first = job.rewrap_all(&RewrapOptions { max_rewraps: Some(7), ..Default::default() }, |_| {}).await.unwrap();
    assert!(!first.complete);
    assert_eq!((first.rewrapped, first.already_current, first.changed_meanwhile, first.failed), (7, 0, 0, 0));
    let usage = job.key_usage().await.unwrap();
    assert_eq!(usage.get("k2"), Some(&7));
    assert_eq!(usage.values().sum::<usize>(), total);

    // Between the runs the API updates three secrets still under the old key: they move to k2 by
    // themselves, and the resumed run must count them as already current, not rewrap them.
    let mut updated = 0;
    for item in t.all_secret_items().await {
        if !item.contains_key("keyId") || s(&item, "keyId") == "k2" || updated == 3 {
            continue;
        }
        let (tok, name, _) = secrets
            .iter()
            .find(|(tok, name, _)| {
                *name == s(&item, "sk") && s(&item, "pk").split('#').nth(1) == vault_tests_org_of(tok).as_deref()
            })
            .unwrap();
        let r = send_to(&job, put(tok, json!({"name": name, "value": format!("{name}-updated")}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        updated += 1;
    }
    assert_eq!(updated, 3);

    // Each update also kept the version it replaced, still under the old key: the run rewraps those too.
    let second = job.rewrap_all(&RewrapOptions::default(), |_| {}).await.unwrap();
    assert!(second.complete);
    assert_eq!(
        (second.secrets_seen, second.rewrapped, second.already_current, second.changed_meanwhile, second.failed),
        (total + 3, total - 10 + 3, 10, 0, 0),
        "the run restarted in the unfinished organization and counted every stored value exactly once"
    );
    let third = job.rewrap_all(&RewrapOptions::default(), |_| {}).await.unwrap();
    assert_eq!((third.rewrapped, third.already_current, third.complete), (0, total + 3, true));

    let after = ring_vault(&t, &ring_new_only()).await;
    for (tok, name, _) in &secrets {
        let r = send_to(&after, get(tok, name)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Every run that moved keys in an organization audits it there, the interrupted one included: the
    // first run in org-1 (marked partial), the second in both; the third moved nothing and records
    // nothing.
    let rotated = |events: Vec<Item>| -> Vec<String> {
        events.iter().filter(|e| s(e, "event") == "vault.key.rotated").map(|e| s(e, "detail")).collect()
    };
    let (first_org, second_org) = (rotated(t.audit("org-1").await), rotated(t.audit("org-2").await));
    assert_eq!(first_org.len() + second_org.len(), 3, "{first_org:?} {second_org:?}");
    let partial: Vec<&String> = first_org.iter().chain(&second_org).filter(|d| d.contains("partial=true")).collect();
    assert_eq!(partial.len(), 1, "the interrupted organization's event says so");
    assert!(partial[0].contains("rewrapped=7"), "{partial:?}");
}

/// Writes `value` to (`tok`, `name`) through the test's own container, whose only key is the old one
/// (it has not seen the new ring), from a progress callback of the rewrap job: on a thread of its own
/// with its own runtime, while the job waits.
fn write_under_the_old_key(t: &Arc<TestVault>, tok: &str, name: &str, value: &str) {
    let (t, tok, name, value) = (t.clone(), tok.to_owned(), name.to_owned(), value.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = t.send(put(&tok, json!({"name": name, "value": value}))).await;
            assert_eq!(r.status, 200, "{}", r.body);
        })
    })
    .join()
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rewrap_job_is_complete_only_when_no_value_names_a_retired_key() {
    let t = Arc::new(TestVault::start().await);
    let secrets = seed(&t, &["org-1", "org-2"], 2).await;
    let job = ring_vault(&t, &ring_new_and_old()).await;
    let (tok, name, _) =
        secrets.iter().find(|(tok, _, _)| vault_tests_org_of(tok).as_deref() == Some("org-1")).unwrap();
    let done_org_1 = |line: &str| line.starts_with("organization \"org-1\"");

    // Once the job has done org-1, a container that has not yet seen the new ring writes there under
    // the old key. The job notices and moves it (and the version it replaced) before saying complete.
    let wrote = AtomicBool::new(false);
    let report = job
        .rewrap_all(&RewrapOptions::default(), |line| {
            if done_org_1(line) && !wrote.swap(true, Ordering::SeqCst) {
                write_under_the_old_key(&t, tok, name, "late-under-k1");
            }
        })
        .await
        .unwrap();
    assert!(wrote.load(Ordering::SeqCst));
    assert!(report.complete, "{report:?}");
    assert_eq!(report.remaining, 0);
    assert_eq!(job.key_usage().await.unwrap().keys().collect::<Vec<_>>(), ["k2"]);
    let after = ring_vault(&t, &ring_new_only()).await;
    let r = send_to(&after, get(tok, name)).await;
    assert_eq!((r.status, r.json["value"].as_str()), (200, Some("late-under-k1")), "{}", r.body);

    // A container that keeps writing under the old key after every pass: the job does not say complete,
    // and says how many values still name the old key.
    let report = job
        .rewrap_all(&RewrapOptions::default(), |line| {
            if done_org_1(line) {
                write_under_the_old_key(&t, tok, name, "still-under-k1");
            }
        })
        .await
        .unwrap();
    assert!(!report.complete, "{report:?}");
    assert!(report.remaining >= 1, "{report:?}");
    assert_eq!(
        report.remaining,
        job.key_usage().await.unwrap().iter().filter(|(k, _)| *k != "k2").map(|(_, n)| n).sum::<usize>()
    );
}

/// The organization a test token was minted for.
fn vault_tests_org_of(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["org_id"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn new_writes_use_the_active_key_and_a_missing_key_is_an_integrity_error() {
    let t = TestVault::start().await;
    let tok = m2m("org1", "c");
    t.send(put(&tok, json!({"name": "old", "value": "under-k1"}))).await;
    let ring = ring_vault(&t, &ring_new_and_old()).await;
    assert_eq!(send_to(&ring, put(&tok, json!({"name": "new", "value": "under-k2"}))).await.status, 201);
    let usage = ring.key_usage().await.unwrap();
    assert_eq!(usage.get("k2"), Some(&1));
    assert_eq!(usage.len(), 2);
    // Both open under the ring; the lone key's envelope is found through its fingerprint.
    assert_eq!(send_to(&ring, get(&tok, "old")).await.json["value"], "under-k1");
    assert_eq!(send_to(&ring, get(&tok, "new")).await.json["value"], "under-k2");
    // Without k1, the old envelope is an integrity error; the response does not name the key, the log does.
    let only_new = ring_vault(&t, &ring_new_only()).await;
    let r = send_to(&only_new, get(&tok, "old")).await;
    assert_eq!((r.status, r.code()), (500, "integrity_error"));
    let missing = usage.keys().find(|k| *k != "k2").unwrap().clone();
    assert!(missing.starts_with("mk-"));
    assert!(!r.body.contains(&missing));
    assert!(logs().contains(&missing), "the log names the missing key id");
    assert_eq!(send_to(&only_new, get(&tok, "new")).await.json["value"], "under-k2");
}

#[tokio::test]
async fn shredding_destroys_an_organization_for_good() {
    let t = TestVault::start().await;
    let doomed = seed(&t, &["doomed"], 3).await;
    let kept = seed(&t, &["kept"], 2).await;
    // A full copy of the secrets table as it is before the shred (what a point-in-time restore brings
    // back): every item, whatever it holds.
    let backup: Vec<Item> = t.all_secret_items().await;
    let doomed_items = backup.iter().filter(|i| s(i, "pk").starts_with("org#doomed#")).count();
    assert_eq!(doomed_items, doomed.len() + 1, "the secrets and the organization's registry entry");
    assert!(backup.iter().all(|i| !i.contains_key("salt")), "no salt is in the secrets table, so none in its backups");

    // Other warm containers have the organization's key cached.
    let other_container = t.sibling(&[]).await;
    assert_eq!(send_to(&other_container, get(&doomed[0].0, &doomed[0].1)).await.status, 200);
    let warm_reader = t.sibling(&[]).await;
    assert_eq!(send_to(&warm_reader, get(&doomed[0].0, &doomed[0].1)).await.status, 200);

    let err = t.vault.shred_org("doomed", "kept").await.unwrap_err();
    assert_eq!((err.status(), err.code().as_str()), (400, "confirmation_required"));
    assert_eq!(t.send(get(&doomed[0].0, &doomed[0].1)).await.status, 200, "a refused shred changes nothing");

    let report = t.vault.shred_org("doomed", "doomed").await.unwrap();
    assert!(report.salt_destroyed);
    assert_eq!(report.secrets_deleted, doomed.len());
    for (tok, name, _) in &doomed {
        assert_eq!(t.send(get(tok, name)).await.status, 404);
    }
    for (tok, name, value) in &kept {
        assert_eq!(t.send(get(tok, name)).await.json["value"], value.as_str());
    }
    assert!(t.all_secret_items().await.iter().all(|i| !s(i, "pk").starts_with("org#doomed#")));
    let events = t.audit("doomed").await;
    let shredded = events.iter().find(|e| s(e, "event") == "vault.org.shredded").unwrap();
    assert!(s(shredded, "detail").contains(&format!("secretsDeleted={}", doomed.len())));

    // The whole copy restored over the table (a point-in-time restore), with the same master keys: it
    // opens nothing, by this container or a fresh one ...
    for item in &backup {
        t.put_secret_item(item.clone()).await;
    }
    let fresh = t.sibling(&[]).await;
    for vault in [&t.vault, &fresh] {
        let r = send_to(vault, get(&doomed[0].0, &doomed[0].1)).await;
        assert_eq!((r.status, r.code()), (500, "integrity_error"), "{}", r.body);
        assert!(!r.body.contains("-v0"));
    }
    // A write through the container that still caches the destroyed key is never sealed under it: the
    // transaction checks the salt, so the write lands under a new salt and reads back everywhere.
    let r = send_to(&other_container, put(&m2m("doomed", "client-a"), json!({"name": "late", "value": "late-write"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let reader = t.sibling(&[]).await;
    assert_eq!(send_to(&reader, get(&m2m("doomed", "client-a"), "late")).await.json["value"], "late-write");

    // The organization can start over under a new salt; the restored items stay unreadable.
    let r = t.send(put(&m2m("doomed", "client-a"), json!({"name": "fresh", "value": "new-life"}))).await;
    assert_eq!(r.status, 201);
    assert_eq!(t.send(get(&m2m("doomed", "client-a"), "fresh")).await.json["value"], "new-life");
    let r = send_to(&fresh, get(&doomed[0].0, &doomed[0].1)).await;
    assert_eq!((r.status, r.code()), (500, "integrity_error"));
    // ... nor restored into a stack of its own (its secrets table from the copy, nothing else).
    let elsewhere = TestVault::start().await;
    for item in &backup {
        elsewhere.put_secret_item(item.clone()).await;
    }
    for (tok, name, _) in doomed.iter().chain(&kept) {
        let r = elsewhere.send(get(tok, name)).await;
        assert_eq!(r.status, 500, "{name}: {}", r.body);
        assert!(!r.body.contains("-v0"));
    }
    // A warm container that still caches the destroyed salt's key reads what was written under the new
    // salt at once (it derives the key again), not an integrity error until its cache expires.
    let r = send_to(&warm_reader, get(&m2m("doomed", "client-a"), "fresh")).await;
    assert_eq!((r.status, r.json["value"].as_str()), (200, Some("new-life")), "{}", r.body);
    let r = send_to(&warm_reader, get(&doomed[0].0, &doomed[0].1)).await;
    assert_eq!((r.status, r.code()), (500, "integrity_error"), "the restored items stay unreadable there too");
}

#[tokio::test]
async fn salts_kept_in_the_secrets_table_by_earlier_builds_move_out_on_the_next_write() {
    let t = TestVault::start().await;
    let tok = m2m("org-old", "client-a");
    assert_eq!(t.send(put(&tok, json!({"name": "k", "value": "before"}))).await.status, 201);
    t.move_salt_to_the_secrets_table("org-old").await;
    let in_secrets = |items: &[Item]| items.iter().any(|i| s(i, "pk") == "org#org-old#meta" && i.contains_key("salt"));
    assert!(in_secrets(&t.all_secret_items().await), "the earlier layout");
    // Reads open it where it is.
    let reader = t.sibling(&[]).await;
    assert_eq!(send_to(&reader, get(&tok, "k")).await.json["value"], "before");
    // The next write moves it to the keys table, and the organization stays in the registry.
    let writer = t.sibling(&[]).await;
    assert_eq!(send_to(&writer, put(&tok, json!({"name": "k", "value": "after"}))).await.status, 200);
    assert!(!in_secrets(&t.all_secret_items().await), "no salt left in the secrets table, or in its backups");
    assert_eq!(t.all_key_items().await.iter().filter(|i| s(i, "pk") == "org#org-old#meta").count(), 1);
    assert_eq!(t.vault.key_usage().await.unwrap().values().sum::<usize>(), 2, "the job still finds its values");
    let fresh = t.sibling(&[]).await;
    assert_eq!(send_to(&fresh, get(&tok, "k")).await.json["value"], "after");
    assert_eq!(send_to(&fresh, get(&tok, "k").query("version", "1")).await.json["value"], "before");
    // Shredding an organization whose salt never moved destroys it there too.
    let tok2 = m2m("org-old-2", "client-a");
    assert_eq!(t.send(put(&tok2, json!({"name": "k", "value": "v"}))).await.status, 201);
    t.move_salt_to_the_secrets_table("org-old-2").await;
    let report = t.vault.shred_org("org-old-2", "org-old-2").await.unwrap();
    assert!(report.salt_destroyed);
    assert!(t.all_secret_items().await.iter().all(|i| !s(i, "pk").starts_with("org#org-old-2#")));
}
