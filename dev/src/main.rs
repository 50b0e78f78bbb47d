//! `vault-local`: the local stack's DynamoDB side. Serves an embedded DynamoDB-compatible server
//! (dynoxide, data kept in a SQLite file), creates the vault's tables, and prints ready tokens.
//!
//! Reads the same variables as the functions (`VAULT_SECRETS_TABLE`, `VAULT_AUDIT_TABLE`, `VAULT_KEYS_TABLE`,
//! `VAULT_JWT_HS256_SECRET`, `VAULT_JWT_ISSUER`, `VAULT_JWT_AUDIENCE`) plus `VAULT_LOCAL_DB`
//! (SQLite path) and `VAULT_LOCAL_DYNAMODB_ADDR` (default 127.0.0.1:8000).

use std::net::SocketAddr;

use token_vault::table::Tables;
use token_vault::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use vault_dev::{Database, LocalDynamo, create_tables, local_client, m2m_claims, sign_hs256, user_claims};

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

async fn run() -> Result<(), String> {
    let db_path = std::env::var("VAULT_LOCAL_DB").unwrap_or_else(|_| ".local/dynamodb.sqlite".into());
    let addr: SocketAddr = std::env::var("VAULT_LOCAL_DYNAMODB_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8000".into())
        .parse()
        .map_err(|e| format!("VAULT_LOCAL_DYNAMODB_ADDR: {e}"))?;
    let secrets_table = env("VAULT_SECRETS_TABLE")?;
    let audit_table = env("VAULT_AUDIT_TABLE")?;
    let keys_table = env("VAULT_KEYS_TABLE")?;
    let hs256 = env("VAULT_JWT_HS256_SECRET")?;
    let issuer = std::env::var("VAULT_JWT_ISSUER").unwrap_or_else(|_| DEFAULT_ISSUER.into());
    let audience = std::env::var("VAULT_JWT_AUDIENCE").unwrap_or_else(|_| DEFAULT_AUDIENCE.into());
    let api = format!("http://127.0.0.1:{}", std::env::var("VAULT_LOCAL_API_PORT").unwrap_or_else(|_| "9000".into()));

    if let Some(dir) = std::path::Path::new(&db_path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let db = Database::new(&db_path).map_err(|e| format!("opening {db_path}: {e}"))?;
    let mut server = LocalDynamo::start(db, addr).await.map_err(|e| format!("listening on {addr}: {e}"))?;
    let client = local_client(&server.endpoint()).await;
    create_tables(&client, Tables { secrets: &secrets_table, audit: &audit_table, keys: &keys_table }).await?;

    let day = 12 * 3600;
    let m2m =
        sign_hs256(hs256.as_bytes(), &m2m_claims(&issuer, &audience, "org_local", "client_local", "payments", day))?;
    let user = sign_hs256(
        hs256.as_bytes(),
        &user_claims(&issuer, &audience, "org_local", "client_local", "auth0|local-user", "payments", day),
    )?;
    let admin =
        sign_hs256(hs256.as_bytes(), &m2m_claims(&issuer, &audience, "org_local", "client_admin", "vault:admin", day))?;
    println!("DynamoDB-compatible server (dynoxide) on {} with data in {db_path}", server.endpoint());
    println!("Tables {secrets_table} and {audit_table} are ready.");
    println!();
    println!("Development tokens (valid 12 hours, organization org_local):");
    println!("export M2M_TOKEN={m2m}");
    println!("export USER_TOKEN={user}");
    println!("export ADMIN_TOKEN={admin}");
    println!();
    println!("Try:");
    println!(
        "  curl -s -X POST {api}/vault/secrets -H \"Authorization: Bearer $M2M_TOKEN\" \\\n    -H 'Content-Type: application/json' -d '{{\"name\":\"openai_api_key\",\"value\":\"sk-example\"}}'"
    );
    println!("  curl -s {api}/vault/secrets/openai_api_key -H \"Authorization: Bearer $M2M_TOKEN\"");
    println!("  curl -s {api}/vault/secrets -H \"Authorization: Bearer $USER_TOKEN\"");
    println!("Use a key without reading it: the proxy calls the secret's upstream with the value injected:");
    println!(
        "  curl -s -X POST {api}/vault/secrets -H \"Authorization: Bearer $M2M_TOKEN\" -H 'Content-Type: application/json' \\\n    -d '{{\"name\":\"openai\",\"value\":\"sk-...\",\"access\":\"use-only\",\"upstream\":{{\"baseUrl\":\"https://api.openai.com/v1\"}}}}'"
    );
    println!("  OPENAI_BASE_URL={api}/vault/proxy/openai OPENAI_API_KEY=$M2M_TOKEN python your_agent.py");
    println!("The command line (cargo install --locked --path cli):");
    println!("  export TOKEN_VAULT_URL={api} TOKEN_VAULT_TOKEN=$M2M_TOKEN");
    println!("  printf %s sk-example | tvault put openai_api_key && tvault get openai_api_key");
    println!("  tvault run --env OPENAI_API_KEY=openai_api_key -- python your_agent.py");
    println!("The MCP server for agents: {api}/vault/mcp (the same bearer tokens)");
    if let Ok(path) = std::env::var("VAULT_LOCAL_TOKENS_FILE") {
        let body = format!("M2M_TOKEN={m2m}\nUSER_TOKEN={user}\nADMIN_TOKEN={admin}\n");
        std::fs::write(&path, body).map_err(|e| format!("writing {path}: {e}"))?;
        println!("(The tokens are also in {path}: `source {path}`.)");
    }
    server.wait().await
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("vault-local: {e}");
        std::process::exit(1);
    }
}
