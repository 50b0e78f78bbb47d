//! `vault-race`: many writers of one secret at once, as when agents rotate a shared key together.
//!
//! Starts a DynamoDB-compatible server (dynoxide over HTTP, in this process), then, for each run, sends
//! `--writers` unconditional writes of one new secret at the same moment through the real handler of
//! one vault whose SDK client counts every request it sends. Reports, as medians over `--runs` runs:
//! the slowest writer's time (from the moment all were started to its answer), the total DynamoDB
//! requests, and the answers that were not a success (503: the write did not settle within the request
//! deadline). BENCHMARKS.md ("Writers racing on one secret") has the results and the command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use token_vault::KeyUse;
use vault_tests::{TestVault, m2m, put, send_to};

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().unwrap())
    };
    let writers = arg("--writers", 200);
    let runs = arg("--runs", 5);
    let t = TestVault::start().await;
    let tok = m2m("org-race", "client-race");
    let (mut slowest, mut requests, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (vault, calls) = t.recorded(KeyUse::Required).await;
        let vault = Arc::new(vault);
        // The organization's key is derived once per container: do it before the clock starts.
        assert!(send_to(&vault, put(&tok, json!({"name": "warm", "value": "w"}))).await.status < 300);
        calls.take_requests();
        let name = format!("hot-{run}");
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|i| {
                let (vault, tok, name) = (vault.clone(), tok.clone(), name.clone());
                tokio::spawn(async move {
                    let r = send_to(&vault, put(&tok, json!({"name": name, "value": format!("value-{i}")}))).await;
                    (r.status, started.elapsed())
                })
            })
            .collect();
        let mut worst = Duration::ZERO;
        let mut not_ok = 0;
        for task in tasks {
            let (status, took) = task.await.unwrap();
            worst = worst.max(took);
            if status >= 300 {
                not_ok += 1;
            }
        }
        let sent = calls.take_requests().len();
        eprintln!(
            "run {run}: slowest writer {:.0} ms, {sent} requests, {not_ok} not answered 2xx",
            worst.as_secs_f64() * 1e3
        );
        slowest.push(worst);
        requests.push(sent);
        failed.push(not_ok);
    }
    println!(
        "| Writers | Runs | Slowest writer, median (ms) | DynamoDB requests, median | Per writer | Not 2xx, median |"
    );
    println!("|---|---|---|---|---|---|");
    let req = median(requests);
    println!(
        "| {writers} | {runs} | {:.0} | {req} | {:.1} | {} |",
        median(slowest).as_secs_f64() * 1e3,
        req as f64 / writers as f64,
        median(failed)
    );
}
