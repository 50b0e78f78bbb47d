//! `rotate-keys`: the operator job that moves every secret's data key to the active master key.
//! Invoked manually or on the template's schedule, never through the HTTP API.
//!
//! Event: `{}` or `{"action": "rewrap"}` runs the job until done or shortly before the invocation's
//! deadline (invoke again to resume); `{"action": "usage"}` counts secrets per master key id.

use std::time::{Duration, Instant, SystemTime};

use lambda_http::{Error, LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::{Value, json};
use token_vault::lambda::vault_from_env;
use token_vault::operations::RewrapOptions;

/// Time kept in reserve before the invocation's deadline.
const MARGIN: Duration = Duration::from_secs(20);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    action: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    token_vault::lambda::init_logging();
    let vault = vault_from_env().await;
    lambda_http::lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let vault = &vault;
        async move {
            let request: Request = serde_json::from_value(event.payload)?;
            match request.action.as_deref().unwrap_or("rewrap") {
                "rewrap" => {
                    let left = event.context.deadline().duration_since(SystemTime::now()).unwrap_or_default();
                    let opts = RewrapOptions {
                        deadline: Some(Instant::now() + left.saturating_sub(MARGIN)),
                        ..Default::default()
                    };
                    let report = vault.rewrap_all(&opts, |line| tracing::info!("{line}")).await?;
                    Ok::<_, Error>(serde_json::to_value(report)?)
                }
                "usage" => Ok(json!({"keyUsage": vault.key_usage().await?})),
                other => Err(format!("unknown action {other:?}: use rewrap or usage").into()),
            }
        }
    }))
    .await
}
