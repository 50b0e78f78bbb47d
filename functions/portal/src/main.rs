//! `portal`: GET /portal/vault and its assets, the organization admins' page. Static: it needs no
//! configuration and no AWS client; the page calls the vault's API with the admin's own token.

use std::convert::Infallible;

use lambda_http::{Error, Request, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    token_vault::lambda::init_logging();
    run(service_fn(|req: Request| async move { Ok::<_, Infallible>(token_vault::portal::handle(&req)) })).await
}
