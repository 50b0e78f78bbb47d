//! `vault-audit-bench`: one secret's audit trail behind many other events, with and without the per-secret
//! index.
//!
//! Starts a DynamoDB-compatible server (dynoxide over HTTP, in this process), writes `--others` audit
//! events of other secrets of one organization (today, spread over the write shards as the vault writes
//! them) and 100 of one secret among them, then times, over `--runs` runs each (interleaved):
//! - `GET /vault/secrets/{name}/audit?limit=100` through the real handler (the `by-secret` index);
//! - the same events found as a query without the index would: every shard of the organization read with
//!   a filter on the name, page after page (DynamoDB evaluates every event of the range);
//! - `GET /vault/audit?limit=100` (the organization's newest 100), for comparison.
//!
//! Reports medians and the DynamoDB requests of each. BENCHMARKS.md ("Audit write shards") has the
//! results and the command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use token_vault::table::{AUDIT_SHARDS, AuditFilter, AuditPart, AuditSource, Store, ToItem};
use token_vault::{AuditEvent, EventKind, KeyUse, Principal, RequestMeta, TokenKind};
use vault_tests::{AUDIT_TABLE, Call, TestVault, admin, send_to};

const ORG: &str = "org-audit-bench";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().unwrap())
    };
    let others = arg("--others", 100_000);
    let runs = arg("--runs", 20);
    let t = TestVault::start().await;
    let p = Principal {
        org_id: ORG.into(),
        client_id: "client-a".into(),
        kind: TokenKind::Machine,
        scopes: Default::default(),
        admin: false,
    };
    let meta = RequestMeta { request_id: "seeded".into(), ..Default::default() };
    let now = time::OffsetDateTime::now_utc();
    let needle_every = others / 100;
    let mut batch = Vec::new();
    let seeding = Instant::now();
    for i in 0..others + 100 {
        let name =
            if i % (needle_every + 1) == needle_every { "needle".to_owned() } else { format!("other-{}", i % 500) };
        let at = now - time::Duration::milliseconds(i64::try_from(others + 100 - i).unwrap());
        let e = AuditEvent {
            kind: EventKind::Retrieved,
            principal: &p,
            meta: &meta,
            secret_name: &name,
            owner: None,
            outcome: "success",
            detail: None,
        };
        batch.push(
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(e.to_item(at, 1))).build().unwrap())
                .build(),
        );
        if batch.len() == 25 {
            t.client.batch_write_item().request_items(AUDIT_TABLE, std::mem::take(&mut batch)).send().await.unwrap();
        }
    }
    if !batch.is_empty() {
        t.client.batch_write_item().request_items(AUDIT_TABLE, batch).send().await.unwrap();
    }
    eprintln!("seeded {} events in {:.1} s", others + 100, seeding.elapsed().as_secs_f64());

    let (vault, calls) = t.recorded(KeyUse::None).await;
    let store = Store::new(t.client.clone(), vault_tests::TABLES);
    let adm = admin(ORG, "ops");
    let (mut indexed, mut filtered, mut newest) = (Vec::new(), Vec::new(), Vec::new());
    let (mut indexed_requests, mut filtered_requests, mut newest_requests) = (0, 0, 0);
    for _ in 0..runs {
        calls.take_requests();
        let started = Instant::now();
        let r =
            send_to(&vault, Call::new("GET", "/vault/secrets/needle/audit").token(&adm).query("limit", "100")).await;
        indexed.push(started.elapsed());
        assert_eq!((r.status, r.json["events"].as_array().map(Vec::len)), (200, Some(100)), "{}", r.body);
        indexed_requests = calls.take_requests().len();

        // Without the index: every shard, filtered by name, read to the end of the range.
        let filter = AuditFilter { secret: Some("needle".into()), ..AuditFilter::default() };
        let started = Instant::now();
        let (mut found, mut requests) = (0, 0);
        for shard in 0..AUDIT_SHARDS {
            let lowest = "0".repeat(32);
            let mut highest = "f".repeat(32);
            loop {
                let q = AuditPart {
                    org_id: ORG,
                    source: AuditSource::Shard(shard),
                    lowest: &lowest,
                    highest: &highest,
                    filter: &filter,
                    limit: 10_000,
                };
                let (items, more) = store.query_audit_part(q).await.unwrap();
                requests += 1;
                found += items.len();
                match more {
                    Some(id) => {
                        let below = u128::from_str_radix(&id, 16).unwrap() - 1;
                        highest = format!("{below:032x}");
                    }
                    None => break,
                }
            }
        }
        filtered.push(started.elapsed());
        filtered_requests = requests;
        assert_eq!(found, 100);

        calls.take_requests();
        let started = Instant::now();
        let r = send_to(&vault, Call::new("GET", "/vault/audit").token(&adm).query("limit", "100")).await;
        newest.push(started.elapsed());
        assert_eq!(r.status, 200);
        newest_requests = calls.take_requests().len();
    }
    println!("One secret's 100 events among {others} other events of its organization, {runs} runs each (median):\n");
    println!("| Query | DynamoDB requests | p50 (ms) |");
    println!("|---|---|---|");
    println!(
        "| `GET /vault/secrets/needle/audit?limit=100` (the `by-secret` index) | {indexed_requests} | {} |",
        ms(median(indexed))
    );
    println!(
        "| the same without the index: each shard filtered by name, read to its end (all {} events evaluated) | {filtered_requests} | {} |",
        others + 100,
        ms(median(filtered))
    );
    println!(
        "| `GET /vault/audit?limit=100` (the organization's newest) | {newest_requests} | {} |",
        ms(median(newest))
    );
}
