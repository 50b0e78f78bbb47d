//! Cold-start wiring shared by every function's `main`: logging, configuration and SDK clients.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::config::{Config, KeyUse};
use crate::service::Vault;

/// SDK timeouts: a DynamoDB call never waits long enough to hit the Lambda timeout.
///
/// - connect: 1 s (a stopped or unreachable endpoint fails fast);
/// - one attempt: 2 s (a hung connection is abandoned and retried);
/// - one call, retries and backoff included: 5 s.
///
/// Above these, every request has an overall deadline (`VAULT_REQUEST_TIMEOUT_MS`, default 8 s, applied
/// in `http::handle`), below the functions' 10 s Lambda timeout.
pub fn dynamodb_timeouts() -> TimeoutConfig {
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
pub fn dynamodb_retries() -> RetryConfig {
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

/// Builds the vault from the environment, or logs one clear line and exits: no request is ever served
/// with a bad configuration.
pub async fn vault_from_env() -> Vault {
    vault_from_env_for(KeyUse::Required).await
}

/// As [`vault_from_env`], for a function that never touches a value and so never reads the master keys.
pub async fn vault_without_keys_from_env() -> Vault {
    vault_from_env_for(KeyUse::None).await
}

async fn vault_from_env_for(keys: KeyUse) -> Vault {
    let config = match Config::from_env(keys) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("refusing to start: {e}");
            std::process::exit(1);
        }
    };
    let sdk = sdk_config_loader().load().await;
    match Vault::new(config, aws_sdk_dynamodb::Client::new(&sdk)).await {
        Ok(vault) => vault,
        Err(e) => {
            tracing::error!("refusing to start: {}", crate::error::chain(&e));
            std::process::exit(1);
        }
    }
}
