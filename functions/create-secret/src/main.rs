//! `create-secret`: POST /vault/secrets: create or update a secret.
//! Wiring only: everything it does is `token_vault::serve` for this one operation.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    token_vault::serve(token_vault::Operation::Create).await
}
