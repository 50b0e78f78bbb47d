//! Token Vault: the shared crate behind every Lambda function.
//!
//! Modules, one job each: [`config`], [`error`], [`http`] (request parsing and response building),
//! [`auth`] (token verification, the principal), [`policy`] (who may do what), [`crypto`] (keys,
//! sealing and opening values), [`store`] (DynamoDB items and queries), [`audit`], [`service`]
//! (the operations), [`operations`] (operator jobs), [`portal`] (the admin page) and [`lambda`]
//! (cold-start wiring).

pub mod audit;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod error;
pub mod http;
pub mod lambda;
pub mod operations;
pub mod policy;
pub mod portal;
pub mod service;
pub mod store;

pub use http::Operation;
pub use service::Vault;
