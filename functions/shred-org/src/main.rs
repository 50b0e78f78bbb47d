//! `shred-org`: the operator command that crypto-shreds one organization. Invoked directly, never
//! through the HTTP API. Event: `{"orgId": "org_123", "confirm": "org_123"}`; refuses unless `confirm`
//! repeats the organization id.

use lambda_http::{Error, LambdaEvent};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Request {
    org_id: String,
    confirm: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    token_vault::serve_job(token_vault::KeyUse::None, |vault, event: LambdaEvent<Request>| async move {
        let report = vault.shred_org(&event.payload.org_id, &event.payload.confirm).await?;
        Ok(serde_json::to_value(report)?)
    })
    .await
}
