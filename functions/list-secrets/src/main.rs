//! `list-secrets`: GET /vault/secrets: list secrets without values.
//! Wiring only: everything it does is `token_vault::serve` for this one operation.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    token_vault::serve(token_vault::Operation::List).await
}
