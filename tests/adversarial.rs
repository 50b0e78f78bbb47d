//! The vault under attack, faults and load (issue 3), through the real handlers against a real
//! DynamoDB-compatible server (dynoxide over HTTP):
//!
//! - `matrix`: the table-driven adversarial matrix (tokens, isolation, input, crypto);
//! - `faults`: DynamoDB unreachable, stopped, slow, throttled or failing;
//! - `concurrency`: racing writers and a mixed load whose results must agree with the store and audit log;
//! - `proxy`: the credential-injection proxy, with upstreams on loopback (injection, streaming, TLS, SSRF,
//!   path tricks, redirects, echoes, other callers, limits under concurrency, redirection of a value);
//! - `leaks`: after every suite, no captured log line, error body, body relayed by the proxy or audit
//!   record holds a secret value, key or token used anywhere in this binary.
//!
//! The leak check must see everything the other suites produced, so this binary has its own small runner
//! (`harness = false`): it runs the light suites concurrently, then the heavy ones (racing writers and
//! the mixed load, which load both cores) one at a time, so that no suite's timing depends on what else
//! the binary is doing; then the leak check; and reports like libtest.
//! `cargo test --test adversarial -- NAME` runs the suites whose name contains NAME (and the leak check).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "adversarial/concurrency.rs"]
mod concurrency;
#[path = "adversarial/faults.rs"]
mod faults;
#[path = "adversarial/leaks.rs"]
mod leaks;
#[path = "adversarial/matrix.rs"]
mod matrix;
#[path = "adversarial/proxy.rs"]
mod proxy;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Instant;

type SuiteFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Suites whose load would decide other suites' timing: each runs on its own, after the others.
fn is_heavy(name: &str) -> bool {
    name.starts_with("concurrency::")
}

/// Every suite of this binary, by name. The leak check runs after them.
fn suites() -> Vec<(&'static str, SuiteFuture)> {
    vec![
        ("matrix::tokens", Box::pin(matrix::tokens())),
        ("matrix::isolation", Box::pin(matrix::isolation())),
        ("matrix::input", Box::pin(matrix::input())),
        ("matrix::crypto", Box::pin(matrix::crypto())),
        ("faults::stopped_dynamodb_is_a_prompt_503_and_nothing_is_half_written", Box::pin(faults::stopped())),
        ("faults::unreachable_dynamodb_is_a_prompt_503_on_every_endpoint", Box::pin(faults::unreachable())),
        ("faults::slow_dynamodb_is_cut_by_the_request_deadline", Box::pin(faults::slow())),
        ("faults::a_transient_failure_is_retried", Box::pin(faults::transient())),
        ("faults::a_persistent_failure_surfaces_as_503", Box::pin(faults::persistent())),
        ("faults::a_missing_audit_table_blocks_mutations_and_values", Box::pin(faults::audit_refusing())),
        ("faults::an_audit_table_refusing_writes_blocks_mutations_and_values", Box::pin(faults::audit_denied())),
        (
            "proxy::the_value_is_injected_and_the_vault_token_stays_behind",
            Box::pin(proxy::the_value_is_injected_and_the_vault_token_stays_behind()),
        ),
        (
            "proxy::a_use_only_value_is_refused_on_every_read_route_and_listed_without_it",
            Box::pin(proxy::a_use_only_value_is_refused_on_every_read_route_and_listed_without_it()),
        ),
        (
            "proxy::an_sdk_sending_its_key_as_x_api_key_is_served_and_the_key_goes_where_the_secret_says",
            Box::pin(proxy::an_sdk_sending_its_key_as_x_api_key_is_served_and_the_key_goes_where_the_secret_says()),
        ),
        (
            "proxy::a_streamed_answer_is_relayed_as_it_arrives",
            Box::pin(proxy::a_streamed_answer_is_relayed_as_it_arrives()),
        ),
        (
            "proxy::https_upstreams_are_verified_against_the_roots_the_proxy_trusts",
            Box::pin(proxy::https_upstreams_are_verified_against_the_roots_the_proxy_trusts()),
        ),
        (
            "proxy::redirects_are_returned_never_followed_and_echoed_values_are_scrubbed",
            Box::pin(proxy::redirects_are_returned_never_followed_and_echoed_values_are_scrubbed()),
        ),
        (
            "proxy::methods_paths_and_bodies_outside_the_rules_are_refused_before_the_upstream",
            Box::pin(proxy::methods_paths_and_bodies_outside_the_rules_are_refused_before_the_upstream()),
        ),
        (
            "proxy::names_resolving_to_loopback_private_or_metadata_addresses_are_refused",
            Box::pin(proxy::names_resolving_to_loopback_private_or_metadata_addresses_are_refused()),
        ),
        (
            "proxy::only_the_owner_rules_of_a_read_let_a_caller_use_a_secret",
            Box::pin(proxy::only_the_owner_rules_of_a_read_let_a_caller_use_a_secret()),
        ),
        (
            "proxy::per_secret_limits_hold_exactly_under_concurrency",
            Box::pin(proxy::per_secret_limits_hold_exactly_under_concurrency()),
        ),
        (
            "proxy::limit_windows_are_the_utc_minute_and_day",
            Box::pin(proxy::limit_windows_are_the_utc_minute_and_day()),
        ),
        (
            "proxy::an_existing_value_cannot_be_sent_to_another_host",
            Box::pin(proxy::an_existing_value_cannot_be_sent_to_another_host()),
        ),
        (
            "proxy::writes_check_upstreams_and_values_that_go_in_headers",
            Box::pin(proxy::writes_check_upstreams_and_values_that_go_in_headers()),
        ),
        ("concurrency::upserts_of_one_name", Box::pin(concurrency::upserts_of_one_name())),
        ("concurrency::update_and_delete_of_one_name", Box::pin(concurrency::update_and_delete())),
        ("concurrency::first_writes_of_a_new_organization", Box::pin(concurrency::first_writes_of_new_org())),
        ("concurrency::mixed_load_agrees_with_store_and_audit", Box::pin(concurrency::mixed_load())),
    ]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = suites();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &all {
            println!("{name}: test");
        }
        println!("leaks::nothing_secret_in_logs_bodies_or_audit: test");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--ignored") {
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        return ExitCode::SUCCESS;
    }
    // libtest's arguments: names to filter on; `--skip NAME`; options with a value are passed over.
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--skip" => skips.extend(rest.next()),
            "--test-threads" | "--format" | "--color" | "--logfile" | "--shuffle-seed" | "-Z" => {
                rest.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a.to_owned()),
        }
    }
    let wanted = |name: &str| {
        (filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
            && !skips.iter().any(|s| name.contains(s.as_str()))
    };
    let (selected, skipped): (Vec<_>, Vec<_>) = all.into_iter().partition(|(name, _)| wanted(name));
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // The leak check looks at what the suites produced: it runs whenever any suite ran.
    let check_leaks = !selected.is_empty();
    println!("\nrunning {} tests", selected.len() + usize::from(check_leaks));
    let (mut passed, mut failed) = (0, Vec::new());
    runtime.block_on(async {
        let (light, heavy): (Vec<_>, Vec<_>) = selected.into_iter().partition(|(name, _)| !is_heavy(name));
        let mut outcome = |name: &'static str, result: Result<(), tokio::task::JoinError>| match result {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(name);
            }
        };
        let running: Vec<_> = light.into_iter().map(|(name, suite)| (name, tokio::spawn(suite))).collect();
        for (name, handle) in running {
            outcome(name, handle.await);
        }
        for (name, suite) in heavy {
            outcome(name, tokio::spawn(suite).await);
        }
        if !check_leaks {
            return;
        }
        match tokio::spawn(leaks::nothing_secret_in_logs_bodies_or_audit()).await {
            Ok(()) => {
                println!("test leaks::nothing_secret_in_logs_bodies_or_audit ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test leaks::nothing_secret_in_logs_bodies_or_audit ... FAILED");
                failed.push("leaks::nothing_secret_in_logs_bodies_or_audit");
            }
        }
    });
    runtime.shutdown_background();
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        skipped.len() + usize::from(!check_leaks),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
