//! Cold-start wiring shared by every function's `main`: logging, configuration and SDK clients.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::config::{Config, KeyUse};
use crate::service::Vault;

/// SDK timeouts: a DynamoDB call never waits long enough to hit the Lambda timeout.
pub fn dynamodb_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// SDK retries: three attempts with exponential backoff and jitter, for throttling and transient errors.
pub fn dynamodb_retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(50))
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
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(dynamodb_timeouts())
        .retry_config(dynamodb_retries())
        .load()
        .await;
    match Vault::new(config, aws_sdk_dynamodb::Client::new(&sdk)).await {
        Ok(vault) => vault,
        Err(e) => {
            tracing::error!("refusing to start: {}", crate::error::chain(&e));
            std::process::exit(1);
        }
    }
}
