//! `proxy`: any method on /vault/proxy/{name}/{path...}: call a secret's upstream with its value
//! injected, streaming the answer back (behind a Lambda function URL in response-streaming mode).
//! Wiring only: everything it does is `token_vault::serve_proxy`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    token_vault::serve_proxy().await
}
