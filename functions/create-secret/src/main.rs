//! `create-secret`: POST /vault/secrets: create or update a secret.
//!
//! Wiring only: logging, configuration and the DynamoDB client are set up once per cold start; every
//! decision lives in the shared `token_vault` crate.

use std::convert::Infallible;

use lambda_http::{Error, Request, run, service_fn};
use token_vault::{Operation, http::handle, lambda::vault_from_env};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    token_vault::lambda::init_logging();
    let vault = vault_from_env().await;
    run(service_fn(|req: Request| {
        let vault = &vault;
        async move { Ok::<_, Infallible>(handle(vault, Operation::Create, req).await) }
    }))
    .await
}
