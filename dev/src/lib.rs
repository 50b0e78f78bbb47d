//! Local development and test support: an embedded DynamoDB-compatible server (dynoxide), the vault's
//! tables created from the same schema the SAM template declares, and development tokens.

use std::net::SocketAddr;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use token_vault::table::{Tables, schema};

pub use dynoxide::Database;

/// A dynoxide server running in this process.
#[derive(Debug)]
pub struct LocalDynamo {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl LocalDynamo {
    /// Starts a server for `db` on `addr` (port 0 picks a free port).
    pub async fn start(db: Database, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(dynoxide::server::serve_with_shutdown(listener, db, async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop: Some(stop), task })
    }

    /// Starts an in-memory server on a free loopback port.
    pub async fn start_in_memory() -> Result<Self, String> {
        let db = Database::memory().map_err(|e| e.to_string())?;
        Self::start(db, SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(|e| e.to_string())
    }

    /// The endpoint URL to point the AWS SDK at.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the server stops by itself (it never does unless stopped).
    pub async fn wait(&mut self) -> Result<(), String> {
        (&mut self.task).await.map_err(|e| e.to_string())?
    }
}

/// A DynamoDB client for a local endpoint: static dummy credentials, the vault's own timeouts and retries.
pub async fn local_client(endpoint: &str) -> Client {
    let sdk = token_vault::sdk_config_loader()
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "vault-dev"))
        .endpoint_url(endpoint)
        .load()
        .await;
    Client::new(&sdk)
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, String> {
    KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(|e| e.to_string())
}

fn string_attr(name: &str) -> Result<AttributeDefinition, String> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| e.to_string())
}

/// Creates the secrets and audit tables (if absent) exactly as `template.yaml` declares them, with TTL on.
pub async fn create_tables(client: &Client, tables: Tables<'_>) -> Result<(), String> {
    let Tables { secrets: secrets_table, audit: audit_table, keys: keys_table } = tables;
    let existing = client.list_tables().send().await.map_err(|e| e.to_string())?.table_names.unwrap_or_default();
    if !existing.iter().any(|t| t == secrets_table) {
        let by_org = GlobalSecondaryIndex::builder()
            .index_name(schema::ORG_INDEX)
            .key_schema(key(schema::ORG_PK, KeyType::Hash)?)
            .key_schema(key(schema::ORG_SK, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .set_non_key_attributes(Some(schema::ORG_INDEX_PROJECTION.iter().map(|s| s.to_string()).collect()))
                    .build(),
            )
            .build()
            .map_err(|e| e.to_string())?;
        client
            .create_table()
            .table_name(secrets_table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attr(schema::PK)?)
            .attribute_definitions(string_attr(schema::SK)?)
            .attribute_definitions(string_attr(schema::ORG_PK)?)
            .attribute_definitions(string_attr(schema::ORG_SK)?)
            .key_schema(key(schema::PK, KeyType::Hash)?)
            .key_schema(key(schema::SK, KeyType::Range)?)
            .global_secondary_indexes(by_org)
            .send()
            .await
            .map_err(|e| format!("creating {secrets_table}: {}", token_vault::chain(&e)))?;
    }
    if !existing.iter().any(|t| t == audit_table) {
        client
            .create_table()
            .table_name(audit_table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attr(schema::PK)?)
            .attribute_definitions(string_attr(schema::SK)?)
            .key_schema(key(schema::PK, KeyType::Hash)?)
            .key_schema(key(schema::SK, KeyType::Range)?)
            .send()
            .await
            .map_err(|e| format!("creating {audit_table}: {}", token_vault::chain(&e)))?;
    }
    // The per-secret index is added to the audit table, new or made by an earlier version (a local
    // database kept from before the index), as a stack update adds it to a deployed table.
    let table = client
        .describe_table()
        .table_name(audit_table)
        .send()
        .await
        .map_err(|e| format!("describing {audit_table}: {}", token_vault::chain(&e)))?;
    let indexes = table.table.and_then(|t| t.global_secondary_indexes).unwrap_or_default();
    if !indexes.iter().any(|i| i.index_name() == Some(schema::SECRET_INDEX)) {
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(schema::SECRET_INDEX)
            .key_schema(key(schema::SECRET_KEY, KeyType::Hash)?)
            .key_schema(key(schema::SK, KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(|e| e.to_string())?;
        client
            .update_table()
            .table_name(audit_table)
            .attribute_definitions(string_attr(schema::SECRET_KEY)?)
            .attribute_definitions(string_attr(schema::SK)?)
            .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(create).build())
            .send()
            .await
            .map_err(|e| format!("adding {} to {audit_table}: {}", schema::SECRET_INDEX, token_vault::chain(&e)))?;
    }
    if !existing.iter().any(|t| t == keys_table) {
        // No TTL and (in template.yaml) no point-in-time recovery: salts are never backed up with the
        // secrets.
        client
            .create_table()
            .table_name(keys_table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attr(schema::PK)?)
            .attribute_definitions(string_attr(schema::SK)?)
            .key_schema(key(schema::PK, KeyType::Hash)?)
            .key_schema(key(schema::SK, KeyType::Range)?)
            .send()
            .await
            .map_err(|e| format!("creating {keys_table}: {}", token_vault::chain(&e)))?;
    }
    for table in [secrets_table, audit_table] {
        let ttl = client.describe_time_to_live().table_name(table).send().await.map_err(|e| e.to_string())?;
        let enabled = ttl.time_to_live_description.and_then(|d| d.attribute_name).is_some();
        if !enabled {
            client
                .update_time_to_live()
                .table_name(table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(schema::TTL)
                        .build()
                        .map_err(|e| e.to_string())?,
                )
                .send()
                .await
                .map_err(|e| format!("enabling TTL on {table}: {}", token_vault::chain(&e)))?;
        }
    }
    Ok(())
}

/// Signs development claims with an HS256 secret.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> Result<String, String> {
    let key = EncodingKey::from_secret(secret).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::HS256), claims, &key).map_err(|e| e.to_string())
}

/// Claims of a machine-to-machine token for `client_id` in `org_id`, valid for `ttl_secs`.
pub fn m2m_claims(issuer: &str, audience: &str, org_id: &str, client_id: &str, scope: &str, ttl_secs: i64) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "iss": issuer, "aud": audience, "iat": now, "exp": now + ttl_secs,
        "sub": format!("{client_id}@clients"), "client_id": client_id, "gty": "client-credentials",
        "org_id": org_id, "scope": scope,
    })
}

/// Claims of a user token for `user_id` through `client_id` in `org_id`, valid for `ttl_secs`.
pub fn user_claims(
    issuer: &str,
    audience: &str,
    org_id: &str,
    client_id: &str,
    user_id: &str,
    scope: &str,
    ttl_secs: i64,
) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "iss": issuer, "aud": audience, "iat": now, "exp": now + ttl_secs,
        "sub": user_id, "azp": client_id, "org_id": org_id, "scope": scope,
    })
}
