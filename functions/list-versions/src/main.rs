//! `list-versions`: GET /vault/secrets/{name}/versions: a secret's versions, metadata only.
//! Wiring only: everything it does is `token_vault::serve` for this one operation.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    token_vault::serve(token_vault::Operation::Versions).await
}
