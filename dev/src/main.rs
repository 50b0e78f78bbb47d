//! `vault-local`: the local stack's DynamoDB side. Serves an embedded DynamoDB-compatible server
//! (dynoxide, data kept in a SQLite file), creates the vault's tables, and prints ready tokens.
//!
//! Reads the same variables as the functions (`VAULT_SECRETS_TABLE`, `VAULT_AUDIT_TABLE`, `VAULT_KEYS_TABLE`,
//! `VAULT_JWT_HS256_SECRET`, `VAULT_JWT_ISSUER`, `VAULT_JWT_AUDIENCE`) plus `VAULT_LOCAL_DB`
//! (SQLite path) and `VAULT_LOCAL_DYNAMODB_ADDR` (default 127.0.0.1:8000). The tokens it prints come from
//! the local OpenID provider (`VAULT_LOCAL_READY_TOKENS`, the file the provider wrote), or are minted
//! here with `VAULT_JWT_HS256_SECRET`; with another provider (`VAULT_JWKS_URL`) there are none to print.

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

    let tokens = ready_tokens(&issuer, &audience)?;
    println!("DynamoDB-compatible server (dynoxide) on {} with data in {db_path}", server.endpoint());
    println!("Tables {secrets_table} and {audit_table} are ready.");
    println!();
    let Some(ReadyTokens { m2m, user, admin, provider }) = tokens else {
        println!("Tokens come from your identity provider ({issuer}); the vault checks them through VAULT_JWKS_URL.");
        if let Ok(path) = std::env::var("VAULT_LOCAL_TOKENS_FILE") {
            write_private(&path, "# No tokens: they come from your identity provider.\n")?;
        }
        return server.wait().await;
    };
    let from =
        if provider.is_some() { format!("from the local OpenID provider at {issuer}, ") } else { "HS256, ".into() };
    println!("Development tokens ({from}valid 12 hours, organization org_local):");
    println!("export M2M_TOKEN={m2m}");
    println!("export USER_TOKEN={user}");
    println!("export ADMIN_TOKEN={admin}");
    if let Some(LocalProvider { port, password }) = &provider {
        println!("A fresh one, as an agent gets it (client credentials):");
        println!(
            "  curl -s -X POST http://127.0.0.1:{port}/token -u client_local:\"$VAULT_LOCAL_OIDC_SECRET\" -d grant_type=client_credentials -d scope=payments"
        );
        println!(
            "  (the secret is in .local/dev.env; client_admin's, VAULT_LOCAL_OIDC_ADMIN_SECRET, gives admin tokens)"
        );
        println!();
        println!("The admin portal: {api}/portal/vault: \"Sign in\", then user admin, password {password}");
        println!("  (user alice, same password, is not an admin)");
    }
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
        let mut body = format!("M2M_TOKEN={m2m}\nUSER_TOKEN={user}\nADMIN_TOKEN={admin}\n");
        // For the browser tests: who signs in to the portal on the local provider's login page.
        if let Some(LocalProvider { password, .. }) = &provider {
            body.push_str(&format!(
                "OIDC_ISSUER={issuer}\nPORTAL_USER=admin\nPORTAL_NON_ADMIN=alice\nPORTAL_PASSWORD={password}\n"
            ));
        }
        write_private(&path, &body)?;
        println!("(The tokens are also in {path}: `source {path}`.)");
    }
    server.wait().await
}

/// Writes `body` to `path`, readable by this user only (it holds tokens and the portal's password).
fn write_private(path: &str, body: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("writing {path}: {e}"))?;
    file.write_all(body.as_bytes()).map_err(|e| format!("writing {path}: {e}"))
}

/// The tokens to print, and the local provider they came from (none when minted here).
struct ReadyTokens {
    m2m: String,
    user: String,
    admin: String,
    provider: Option<LocalProvider>,
}

/// The local OpenID provider scripts/dev started: its port and the portal users' password.
struct LocalProvider {
    port: String,
    password: String,
}

/// The M2M, user and admin tokens to print: the local provider's, or minted with the HS256 secret.
fn ready_tokens(issuer: &str, audience: &str) -> Result<Option<ReadyTokens>, String> {
    if let Ok(path) = std::env::var("VAULT_LOCAL_READY_TOKENS") {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                .map(str::to_owned)
                .ok_or_else(|| format!("{path} has no {name}"))
        };
        let provider =
            LocalProvider { port: env("VAULT_LOCAL_OIDC_PORT")?, password: env("VAULT_LOCAL_OIDC_PASSWORD")? };
        return Ok(Some(ReadyTokens {
            m2m: get("M2M_TOKEN")?,
            user: get("USER_TOKEN")?,
            admin: get("ADMIN_TOKEN")?,
            provider: Some(provider),
        }));
    }
    let Ok(hs256) = std::env::var("VAULT_JWT_HS256_SECRET") else { return Ok(None) };
    let sign = |claims: &serde_json::Value| sign_hs256(hs256.as_bytes(), claims);
    let day = 12 * 3600;
    Ok(Some(ReadyTokens {
        m2m: sign(&m2m_claims(issuer, audience, "org_local", "client_local", "payments", day))?,
        user: sign(&user_claims(issuer, audience, "org_local", "client_local", "auth0|local-user", "payments", day))?,
        admin: sign(&m2m_claims(issuer, audience, "org_local", "client_admin", "vault:admin", day))?,
        provider: None,
    }))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("vault-local: {e}");
        std::process::exit(1);
    }
}
