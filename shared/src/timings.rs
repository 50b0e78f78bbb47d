//! Cold-start phase timings, for measuring init as deployed (BENCHMARKS.md, "Cold start"). Off unless
//! `VAULT_INIT_TIMINGS=1`; then init writes one line to stderr when it ends:
//!
//! ```text
//! vault-init main_unix_us=1796293512345678 config_ms=0.41 roots_ms=0.62 kms_ms=3.10 jwks_ms=2.20 network_ms=3.35 clients_ms=0.80 total_ms=5.18
//! ```
//!
//! `main_unix_us` is the wall clock when `main` handed over to the vault (the harness subtracts the
//! moment it spawned the process, to get the process start); each `*_ms` is a wall-clock duration from
//! there. `network_ms` is the wall time of the step holding the KMS and JWKS calls (run concurrently),
//! `clients_ms` what is left of `total_ms` once the other phases are taken out (the SDK's configuration
//! and clients, the HTTP clients, the vault itself). Durations only: the line never holds a value, a key,
//! a token or a URL. Off, the cost is one read of the variable per cold start.

use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The phases timed so far, in the order they were first recorded.
static PHASES: Mutex<Vec<(&'static str, Duration)>> = Mutex::new(Vec::new());

/// When timing started (`None`: timings are off).
static STARTED: OnceLock<Option<(Instant, SystemTime)>> = OnceLock::new();

/// Starts timing this cold start, if `VAULT_INIT_TIMINGS=1`. Called first thing in a function's init.
pub(crate) fn start() {
    STARTED.get_or_init(|| {
        std::env::var_os("VAULT_INIT_TIMINGS").is_some_and(|v| v == "1").then(|| (Instant::now(), SystemTime::now()))
    });
}

fn on() -> bool {
    STARTED.get().is_some_and(Option::is_some)
}

/// Adds `took` to `phase`.
pub(crate) fn record(phase: &'static str, took: Duration) {
    if !on() {
        return;
    }
    if let Ok(mut phases) = PHASES.lock() {
        match phases.iter_mut().find(|(name, _)| *name == phase) {
            Some((_, total)) => *total += took,
            None => phases.push((phase, took)),
        }
    }
}

/// Runs `f`, adding its time to `phase`.
pub(crate) fn time<T>(phase: &'static str, f: impl FnOnce() -> T) -> T {
    if !on() {
        return f();
    }
    let at = Instant::now();
    let out = f();
    record(phase, at.elapsed());
    out
}

/// Awaits `fut`, adding its time to `phase`.
pub(crate) async fn time_async<T>(phase: &'static str, fut: impl Future<Output = T>) -> T {
    if !on() {
        return fut.await;
    }
    let at = Instant::now();
    let out = fut.await;
    record(phase, at.elapsed());
    out
}

/// Ends the cold start's timing: writes the one line (if timings are on).
pub(crate) fn finish() {
    let Some(Some((started, wall))) = STARTED.get() else { return };
    let total = started.elapsed();
    let phases = PHASES.lock().map(|p| p.clone()).unwrap_or_default();
    let main_unix_us = wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    eprintln!("{}", line(main_unix_us, &phases, total));
}

/// The line: the phases in the order they were first timed, then `clients_ms` (what no phase holds)
/// and `total_ms`.
fn line(main_unix_us: u128, phases: &[(&'static str, Duration)], total: Duration) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // The KMS and JWKS calls run inside the `network` step when it was timed: counted once, through it.
    let concurrent = phases.iter().any(|(name, _)| *name == "network");
    let named: Duration = phases
        .iter()
        .filter(|(name, _)| !(concurrent && (*name == "kms" || *name == "jwks")))
        .map(|(_, took)| *took)
        .sum();
    let mut line = format!("vault-init main_unix_us={main_unix_us}");
    for (name, took) in phases {
        line.push_str(&format!(" {name}_ms={:.2}", ms(*took)));
    }
    line.push_str(&format!(" clients_ms={:.2} total_ms={:.2}", ms(total.saturating_sub(named)), ms(total)));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_the_concurrent_calls_once_and_the_rest_as_clients() {
        let ms = Duration::from_millis;
        let phases = [("config", ms(1)), ("roots", ms(2)), ("kms", ms(8)), ("jwks", ms(4)), ("network", ms(9))];
        assert_eq!(
            line(7, &phases, ms(15)),
            "vault-init main_unix_us=7 config_ms=1.00 roots_ms=2.00 kms_ms=8.00 jwks_ms=4.00 network_ms=9.00 \
             clients_ms=3.00 total_ms=15.00"
        );
        // Calls made one after the other are both taken out.
        assert!(line(7, &[("kms", ms(8)), ("jwks", ms(4))], ms(15)).ends_with(" clients_ms=3.00 total_ms=15.00"));
    }

    #[test]
    fn off_by_default_nothing_is_timed() {
        // The test binary never sets VAULT_INIT_TIMINGS.
        start();
        assert_eq!(time("config", || 5), 5);
        assert!(PHASES.lock().is_ok_and(|p| p.is_empty()));
    }
}
