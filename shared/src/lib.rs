//! Token Vault: the shared crate behind every Lambda function.
//!
//! Layers, each importing only those below it:
//!
//! ```text
//! lambda, portal        cold-start wiring; the admin page
//! mcp                   the MCP server (tools that use secrets through the proxy)
//! proxy                 the credential-injection proxy (streams the upstream's answer)
//! http                  requests and responses
//! service               the operations (and the operator jobs)
//! store                 DynamoDB: keys, item codec, reads, writes, audit, organizations
//! auth, policy          who is calling; who may do what
//! config                the environment, read once
//! crypto, rules         keys and envelopes; every limit and input rule
//! model, error          the domain words; every error and code the API can send
//! tls                   the TLS settings and root certificates the HTTPS clients share
//! timings               cold-start phase timings (VAULT_INIT_TIMINGS=1), for the benchmarks
//! ```
//!
//! The modules are private; what the functions, the local tools, the tests and the benchmarks use is
//! re-exported here, and `unreachable_pub` keeps everything else visibly internal.
#![warn(unreachable_pub)]

mod auth;
mod config;
mod crypto;
mod error;
mod http;
mod lambda;
mod mcp;
mod model;
mod policy;
mod portal;
mod proxy;
mod rules;
mod service;
mod store;
mod timings;
mod tls;

pub use auth::TokenVerifier;
pub use config::{
    ClaimRules, Config, ConfigError, DEFAULT_AUDIENCE, DEFAULT_ISSUER, IdpProfile, JWKS_REFRESH_INTERVAL, JwtConfig,
    JwtKeySource, KEYRING_PURPOSE, KeyUse, MachineRule, ProxySettings, SealedKeyring,
};
pub use crypto::{Binding, MasterKey, OrgKey};
pub use error::{ApiError, Code, chain};
pub use http::{Operation, handle, validate_request};
pub use lambda::{
    init_logging, sdk_config_loader, serve, serve_job, serve_mcp, serve_portal, serve_proxy, vault_from_env,
};
pub use mcp::{MCP_PATH, RESOURCE_METADATA_PATH, handle_mcp};
pub use model::{
    Access, AuditEvent, EventKind, Injection, Limits, Owner, Principal, RequestMeta, TokenKind, Upstream, UpstreamWire,
};
pub use proxy::{PROXY_PATH, Proxy, ProxyBody, ProxyOptions, handle_proxy};
pub use service::{RewrapOptions, RewrapReport, ShredReport, Vault};

/// Limits of the API, for the tests and tools that check against them.
pub mod limits {
    pub use crate::auth::MAX_JWKS_BYTES;
    pub use crate::rules::{
        MAX_BATCH_NAMES, MAX_BODY_BYTES, MAX_ID_LEN, MAX_LIST_LIMIT, MAX_NAME_LEN, MAX_PROXY_BODY_BYTES,
        MAX_RATE_LIMIT, MAX_SCOPE_LEN, MAX_SCOPES, MAX_UPSTREAM_PATHS, MAX_URL_LEN, MAX_VALUE_BYTES, PROXY_METHODS,
        RETAINED_VERSIONS,
    };
}

/// The DynamoDB layout and its store, for the tools, tests and benchmarks that create, seed or inspect
/// the tables directly.
pub mod table {
    pub use crate::store::{
        AUDIT_SHARDS, AuditFilter, AuditPart, AuditSource, Count, Item, Replace, SecretItem, Store, Tables, ToItem,
        WriteGuard, audit_partition_key, audit_secret_key, audit_shard, new_lifetime, partition_key, record_key,
        schema, unsharded_audit_partition_key,
    };
}
