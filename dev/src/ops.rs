//! `vault-ops`: the operator jobs as a local command, against whatever DynamoDB the environment names
//! (the local stack's, through `scripts/ops`, or AWS with your credentials).
//!
//! ```text
//! vault-ops rewrap [--max N]            move data keys to the active master key (resumable)
//! vault-ops usage                       count secrets per master key id
//! vault-ops shred ORG --confirm ORG     crypto-shred one organization (permanent)
//! ```

use token_vault::{RewrapOptions, vault_from_env};

const USAGE: &str = "usage: vault-ops rewrap [--max N] | vault-ops usage | vault-ops shred ORG --confirm ORG";

async fn run(args: &[String]) -> Result<String, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["rewrap", rest @ ..] => {
            let max = match rest {
                [] => None,
                ["--max", n] => Some(n.parse::<usize>().map_err(|_| "--max takes a whole number".to_owned())?),
                _ => return Err(USAGE.into()),
            };
            let vault = vault_from_env().await;
            let opts = RewrapOptions { max_rewraps: max, ..Default::default() };
            let report = vault.rewrap_all(&opts, |line| eprintln!("{line}")).await.map_err(|e| describe(&e))?;
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())
        }
        ["usage"] => {
            let vault = vault_from_env().await;
            let usage = vault.key_usage().await.map_err(|e| describe(&e))?;
            serde_json::to_string_pretty(&usage).map_err(|e| e.to_string())
        }
        ["shred", org, "--confirm", confirm] => {
            let vault = vault_from_env().await;
            let report = vault.shred_org(org, confirm).await.map_err(|e| describe(&e))?;
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())
        }
        _ => Err(USAGE.into()),
    }
}

fn describe(e: &token_vault::ApiError) -> String {
    format!("{}: {}", e.code(), token_vault::chain(e))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(out) => println!("{out}"),
        Err(e) => {
            eprintln!("vault-ops: {e}");
            std::process::exit(1);
        }
    }
}
