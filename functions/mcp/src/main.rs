//! `mcp`: /vault/mcp, the Model Context Protocol server (tools that use secrets, never show them), and
//! its OAuth protected-resource metadata. Wiring only: everything it does is `token_vault::serve_mcp`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    token_vault::serve_mcp().await
}
