//! `query-audit`: GET /vault/audit and GET /vault/secrets/{name}/audit: read audit events.
//! Wiring only: everything it does is `token_vault::serve` for this one operation.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    token_vault::serve(token_vault::Operation::Audit).await
}
