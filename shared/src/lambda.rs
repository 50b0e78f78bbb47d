//! Cold-start wiring shared by every function's `main`: logging, configuration and SDK clients.

use std::str::FromStr;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::{Request, service_fn};

use crate::auth::TokenVerifier;
use crate::config::{Config, KeyUse};
use crate::error::ApiError;
use crate::http::{Operation, handle};
use crate::proxy::{Proxy, ProxyOptions, handle_proxy};
use crate::service::Vault;
use crate::timings;

/// Installs the log subscriber, as Lambda's advanced logging controls configure it: JSON lines when
/// `AWS_LAMBDA_LOG_FORMAT=JSON` (the template's setting), plain text otherwise; no timestamps (CloudWatch
/// adds them). The level comes from [`log_filter`].
///
/// Written here rather than taken from `lambda_http::tracing`, whose `EnvFilter` brings a regex engine
/// into every function (about 0.2 MB of the zipped package; see BENCHMARKS.md).
pub fn init_logging() {
    let filter =
        log_filter(std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(), std::env::var("RUST_LOG").ok().as_deref());
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt::layer().with_target(false).without_time();
    let registry = tracing_subscriber::registry().with(filter);
    // A subscriber already installed (a test harness) wins; a function installs one exactly once.
    let _ = if json { registry.with(fmt.json()).try_init() } else { registry.with(fmt).try_init() };
}

/// The log filter: `AWS_LAMBDA_LOG_LEVEL` (the function's `ApplicationLogLevel`: TRACE, DEBUG, INFO,
/// WARN, ERROR or FATAL) wins; otherwise `RUST_LOG` as a level or `target=level` list
/// (`warn,token_vault=debug`), other targets at INFO unless it names a level; otherwise, or when neither
/// parses, INFO.
pub(crate) fn log_filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> Targets {
    // Whatever the level, the runtime's own TRACE lines stay off: they hold the raw event, its
    // Authorization header and body (a written value) included.
    let targets = filter_levels(lambda_level, rust_log);
    let runtime = [Level::DEBUG, Level::INFO, Level::WARN, Level::ERROR]
        .into_iter()
        .find(|l| targets.would_enable("lambda_runtime", l))
        .map_or(LevelFilter::OFF, LevelFilter::from_level);
    targets.with_target("lambda_runtime", runtime)
}

fn filter_levels(lambda_level: Option<&str>, rust_log: Option<&str>) -> Targets {
    if let Some(level) = lambda_level.map(str::trim).filter(|l| !l.is_empty()) {
        let level = if level.eq_ignore_ascii_case("fatal") { "error" } else { level };
        if let Ok(level) = LevelFilter::from_str(level) {
            return Targets::new().with_default(level);
        }
    }
    let targets = rust_log.and_then(|l| Targets::from_str(l.trim()).ok()).unwrap_or_default();
    match targets.default_level() {
        Some(_) => targets,
        // Targets not named in `RUST_LOG` log at INFO, as with `lambda_http`'s default subscriber.
        None => targets.with_default(LevelFilter::INFO),
    }
}

/// SDK timeouts: a DynamoDB call never waits long enough to hit the Lambda timeout.
///
/// - connect: 1 s (a stopped or unreachable endpoint fails fast);
/// - one attempt: 2 s (a hung connection is abandoned and retried);
/// - one call, retries and backoff included: 5 s.
///
/// Above these, every request has an overall deadline (`VAULT_REQUEST_TIMEOUT_MS`, default 8 s, applied
/// in `http::handle`), below the functions' 10 s Lambda timeout.
pub(crate) fn dynamodb_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// SDK retries, chosen deliberately: the standard mode, three attempts per call (one try and two
/// retries), exponential backoff from 50 ms with full jitter, capped at 1 s.
///
/// Retried: throttling (`ThrottlingException`, `ProvisionedThroughputExceededException`,
/// `RequestLimitExceeded`), server-side failures (HTTP 5xx, `InternalServerError`), timeouts and
/// connection errors. Not retried: conditional-check failures, cancelled transactions (the service
/// decides what a lost race means), validation errors and refused permissions. What still fails after
/// three attempts is a 503 `storage_unavailable` with `Retry-After` (a refused permission is a 500).
pub(crate) fn dynamodb_retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(50))
        .with_max_backoff(Duration::from_secs(1))
}

/// The AWS SDK configuration loader with the vault's timeouts and retries; the functions and the local
/// and test clients (vault-dev) all start from it, so they behave alike.
pub fn sdk_config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(dynamodb_timeouts()).retry_config(dynamodb_retries())
}

/// The start of every function's init: its phase timings (when on), then logging.
fn begin_init() {
    timings::start();
    timings::time("config", init_logging);
}

/// Runs the HTTP function that serves `op`, which is all its `main` does: logging, configuration and
/// the DynamoDB client once per cold start, then every request through [`crate::http::handle`].
pub async fn serve(op: Operation) -> Result<(), lambda_http::Error> {
    begin_init();
    let vault = vault_from_env_for(op.key_use()).await;
    timings::finish();
    lambda_http::run(service_fn(|req: Request| {
        let vault = &vault;
        async move { Ok::<_, Infallible>(handle(vault, op, req).await) }
    }))
    .await
}

/// Runs the proxy function: like [`serve`], with the upstream client too, answering with streamed
/// responses (Lambda's response streaming, behind a function URL: an API Gateway HTTP API buffers
/// responses and ends them at 30 s, and a model's answer streams for minutes).
pub async fn serve_proxy() -> Result<(), lambda_http::Error> {
    begin_init();
    let proxy = proxy_from_env().await;
    timings::finish();
    lambda_http::run_with_streaming_response(service_fn(|req: Request| {
        let proxy = &proxy;
        async move { Ok::<_, Infallible>(handle_proxy(proxy, req).await) }
    }))
    .await
}

/// Runs the MCP function (`/vault/mcp`): the proxy's vault and upstream client, answering each JSON-RPC
/// message with one buffered JSON response (stateless Streamable HTTP, behind API Gateway).
pub async fn serve_mcp() -> Result<(), lambda_http::Error> {
    begin_init();
    let proxy = proxy_from_env().await;
    timings::finish();
    lambda_http::run(service_fn(|req: Request| {
        let proxy = &proxy;
        async move { Ok::<_, Infallible>(crate::mcp::handle_mcp(proxy, req).await) }
    }))
    .await
}

/// The proxy (its vault and upstream client) from the environment, or one clear line and an exit.
async fn proxy_from_env() -> Proxy {
    let vault = vault_from_env_for(KeyUse::Required).await;
    Proxy::new(vault, ProxyOptions::default()).unwrap_or_else(|e| {
        tracing::error!("refusing to start: {}", crate::error::chain(&e));
        std::process::exit(1);
    })
}

/// Runs the portal function: the static admin page, its sign-in configuration (`VAULT_PORTAL_OIDC_*`)
/// and the OpenAPI document. It needs no AWS client.
pub async fn serve_portal() -> Result<(), lambda_http::Error> {
    begin_init();
    let settings = crate::portal::PortalSettings::from_lookup(|k| std::env::var(k).ok()).unwrap_or_else(|why| {
        tracing::error!("refusing to start: {why}");
        std::process::exit(1);
    });
    timings::finish();
    let settings = &settings;
    lambda_http::run(service_fn(
        |req: Request| async move { Ok::<_, Infallible>(crate::portal::handle(settings, &req)) },
    ))
    .await
}

/// Runs an operator job's function (invoked directly, never through the HTTP API): logging,
/// configuration (with the master keys if `keys` says so) and the DynamoDB client once per cold start,
/// then each event, parsed as `T`, through `job`.
pub async fn serve_job<T, F, Fut>(keys: KeyUse, job: F) -> Result<(), lambda_http::Error>
where
    T: serde::de::DeserializeOwned + Send,
    F: Fn(Arc<Vault>, lambda_http::LambdaEvent<T>) -> Fut,
    Fut: Future<Output = Result<serde_json::Value, lambda_http::Error>> + Send,
{
    begin_init();
    let vault = Arc::new(vault_from_env_for(keys).await);
    timings::finish();
    lambda_http::lambda_runtime::run(service_fn(|event| job(vault.clone(), event))).await
}

/// Builds the vault from the environment (for an operator job, which seals and opens values), or logs
/// one clear line and exits: no request is ever served with a bad configuration.
pub async fn vault_from_env() -> Vault {
    vault_from_env_for(KeyUse::Required).await
}

async fn vault_from_env_for(keys: KeyUse) -> Vault {
    let refuse = |e: &dyn std::fmt::Display| -> ! {
        tracing::error!("refusing to start: {e}");
        std::process::exit(1);
    };
    let refuse_api = |e: ApiError| -> ! { refuse(&crate::error::chain(&e)) };
    let mut config = timings::time("config", || Config::from_env(keys)).unwrap_or_else(|e| refuse(&e));
    let sdk = sdk_config_loader().load().await;
    let verifier = TokenVerifier::unfetched(&config.jwt).unwrap_or_else(|e| refuse_api(e));
    // The cold start's two round trips, the KMS `Decrypt` of the key ring and the JWKS fetch, are made
    // at once: neither needs the other.
    let sealed = config.sealed_keyring.take();
    let kms = sealed.as_ref().map(|_| aws_sdk_kms::Client::new(&sdk));
    let unseal = async {
        match (sealed, &kms) {
            (Some(sealed), Some(kms)) => timings::time_async("kms", sealed.open(kms)).await.map(Some),
            _ => Ok(None),
        }
    };
    let (keyring, ()) = timings::time_async("network", async { tokio::join!(unseal, verifier.fetch_keys()) }).await;
    if let Some(ring) = keyring.unwrap_or_else(|e| refuse(&e)) {
        config.keyring = Some(ring);
    }
    Vault::with_verifier(config, aws_sdk_dynamodb::Client::new(&sdk), verifier).unwrap_or_else(|e| refuse_api(e))
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_filter;

    #[test]
    fn the_lambda_log_level_wins_over_rust_log() {
        let filter = log_filter(Some("DEBUG"), Some("error"));
        assert!(filter.would_enable("token_vault::service", &Level::DEBUG));
        assert!(!filter.would_enable("token_vault::service", &Level::TRACE));
        let fatal = log_filter(Some("FATAL"), None);
        assert!(fatal.would_enable("token_vault", &Level::ERROR));
        assert!(!fatal.would_enable("token_vault", &Level::WARN));
    }

    #[test]
    fn the_runtimes_trace_lines_which_hold_the_raw_event_stay_off() {
        for filter in [
            log_filter(Some("TRACE"), None),
            log_filter(None, Some("trace")),
            log_filter(None, Some("lambda_runtime=trace")),
        ] {
            assert!(!filter.would_enable("lambda_runtime::layers::api_response", &Level::TRACE));
            assert!(filter.would_enable("lambda_runtime::layers::api_response", &Level::DEBUG));
        }
        // Never louder than asked.
        let warn = log_filter(Some("WARN"), None);
        assert!(
            !warn.would_enable("lambda_runtime", &Level::INFO) && warn.would_enable("lambda_runtime", &Level::WARN)
        );
    }

    #[test]
    fn rust_log_takes_a_level_or_per_target_levels() {
        let filter = log_filter(None, Some("warn,token_vault=debug"));
        assert!(filter.would_enable("token_vault::store", &Level::DEBUG));
        assert!(!filter.would_enable("aws_smithy_runtime", &Level::INFO));
        assert!(filter.would_enable("aws_smithy_runtime", &Level::WARN));
        assert!(log_filter(Some(""), Some("trace")).would_enable("anything", &Level::TRACE));
        let named = log_filter(None, Some("token_vault=trace"));
        assert!(named.would_enable("token_vault", &Level::TRACE));
        assert!(named.would_enable("hyper", &Level::INFO) && !named.would_enable("hyper", &Level::DEBUG));
    }

    #[test]
    fn no_or_unreadable_settings_mean_info() {
        for (lambda, rust) in
            [(None, None), (Some("LOUD"), None), (None, Some("token_vault=loud")), (Some("nope"), Some("[x"))]
        {
            let filter = log_filter(lambda, rust);
            assert!(filter.would_enable("token_vault", &Level::INFO), "{lambda:?} {rust:?}");
            assert!(!filter.would_enable("token_vault", &Level::DEBUG), "{lambda:?} {rust:?}");
        }
    }
}
