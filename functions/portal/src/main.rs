//! `portal`: GET /portal/vault and its assets, the organization admins' page, and the OpenAPI document.
//! Static: it needs no configuration and no AWS client; the page calls the vault's API with the admin's
//! own token.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    token_vault::serve_portal().await
}
