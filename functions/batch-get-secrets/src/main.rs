//! `batch-get-secrets`: POST /vault/secrets/batch-get: read up to 20 secrets at once.
//! Wiring only: everything it does is `token_vault::serve` for this one operation.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    token_vault::serve(token_vault::Operation::BatchGet).await
}
