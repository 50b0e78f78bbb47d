//! `rotate-keys`: the operator job that moves every secret's data key to the active master key.
//! Invoked manually or on the template's schedule, never through the HTTP API.
//!
//! Event: `{}` or `{"action": "rewrap"}` runs the job until done or shortly before the invocation's
//! deadline (invoke again to resume); `{"action": "usage"}` counts stored values per master key id.

use std::time::{Duration, Instant, SystemTime};

use lambda_http::{Error, LambdaEvent};
use serde::Deserialize;
use serde_json::json;
use token_vault::RewrapOptions;

/// Time kept in reserve before the invocation's deadline.
const MARGIN: Duration = Duration::from_secs(20);

/// What the job is asked to do.
#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Action {
    #[default]
    Rewrap,
    Usage,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    action: Action,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    token_vault::serve_job(token_vault::KeyUse::Required, |vault, event: LambdaEvent<Request>| async move {
        match event.payload.action {
            Action::Rewrap => {
                let left = event.context.deadline().duration_since(SystemTime::now()).unwrap_or_default();
                let opts = RewrapOptions {
                    deadline: Some(Instant::now() + left.saturating_sub(MARGIN)),
                    ..Default::default()
                };
                let report = vault.rewrap_all(&opts, |line| tracing::info!("{line}")).await?;
                Ok(serde_json::to_value(report)?)
            }
            Action::Usage => Ok(json!({"keyUsage": vault.key_usage().await?})),
        }
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_typed() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Request>(v).map(|r| r.action);
        assert_eq!(parse(json!({})).unwrap(), Action::Rewrap);
        assert_eq!(parse(json!({"action": "rewrap"})).unwrap(), Action::Rewrap);
        assert_eq!(parse(json!({"action": "usage"})).unwrap(), Action::Usage);
        assert!(parse(json!({"action": "shred"})).is_err());
        assert!(parse(json!({"action": "usage", "extra": 1})).is_err());
    }
}
