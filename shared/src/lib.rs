//! Token Vault: the shared crate behind every Lambda function.
//!
//! Layers, each importing only those below it:
//!
//! ```text
//! lambda, portal        cold-start wiring; the admin page
//! http                  requests and responses
//! service               the operations (and the operator jobs)
//! store                 DynamoDB: keys, item codec, reads, writes, audit, organizations
//! auth, policy          who is calling; who may do what
//! config                the environment, read once
//! crypto, rules         keys and envelopes; every limit and input rule
//! model, error          the domain words; every error and code the API can send
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
mod model;
mod policy;
mod portal;
mod rules;
mod service;
mod store;

pub use auth::TokenVerifier;
pub use config::{
    ClaimRules, Config, ConfigError, DEFAULT_AUDIENCE, DEFAULT_ISSUER, IdpProfile, JWKS_REFRESH_INTERVAL, JwtConfig,
    JwtKeySource, KEYRING_PURPOSE, KeyUse, MachineRule, SealedKeyring,
};
pub use crypto::{Binding, MasterKey, OrgKey};
pub use error::{ApiError, Code, chain};
pub use http::{Operation, handle, validate_request};
pub use lambda::{init_logging, sdk_config_loader, serve, serve_job, serve_portal, vault_from_env};
pub use model::{AuditEvent, EventKind, Owner, Principal, RequestMeta, TokenKind};
pub use service::{RewrapOptions, RewrapReport, ShredReport, Vault};

/// Limits of the API, for the tests and tools that check against them.
pub mod limits {
    pub use crate::auth::MAX_JWKS_BYTES;
    pub use crate::rules::{
        MAX_BATCH_NAMES, MAX_BODY_BYTES, MAX_ID_LEN, MAX_LIST_LIMIT, MAX_NAME_LEN, MAX_SCOPE_LEN, MAX_SCOPES,
        MAX_VALUE_BYTES, RETAINED_VERSIONS,
    };
}

/// The DynamoDB layout and its store, for the tools, tests and benchmarks that create, seed or inspect
/// the tables directly.
pub mod table {
    pub use crate::store::{
        AuditDay, AuditFilter, Item, Replace, SecretItem, Store, Tables, ToItem, WriteGuard, audit_partition_key,
        new_lifetime, partition_key, record_key, schema,
    };
}
