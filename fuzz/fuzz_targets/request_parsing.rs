//! Request parsing: arbitrary methods, paths, path parameters, query strings, content types and bodies
//! through `token_vault::validate_request`, the checks every handler runs before it needs the
//! token or the store. It must never panic, and a refusal is always a 4xx, never a 5xx.
#![no_main]

use lambda_http::aws_lambda_events::query_map::QueryMap;
use lambda_http::{Body, Request, RequestExt};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use token_vault::Operation;

#[derive(Debug, Arbitrary)]
struct Input {
    op: u8,
    method: u8,
    name: Option<String>,
    raw_path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    if_match: Option<String>,
    if_none_match: Option<String>,
    body: Vec<u8>,
}

const OPERATIONS: [Operation; 8] = [
    Operation::Create,
    Operation::Get,
    Operation::List,
    Operation::Delete,
    Operation::BatchGet,
    Operation::Rollback,
    Operation::Audit,
    Operation::Versions,
];

fuzz_target!(|input: Input| {
    let op = OPERATIONS[input.op as usize % OPERATIONS.len()];
    let method = ["POST", "GET", "DELETE", "PUT"][input.method as usize % 4];
    // Without a `name` path parameter the handlers read the name from the path, as for a function URL.
    let uri = format!("https://vault.test/vault/secrets/{}", input.raw_path);
    let mut builder = lambda_http::http::Request::builder().method(method).uri(uri);
    for (header, value) in
        [("content-type", &input.content_type), ("if-match", &input.if_match), ("if-none-match", &input.if_none_match)]
    {
        if let Some(value) = value {
            builder = builder.header(header, value.as_bytes());
        }
    }
    let Ok(req) = builder.body(Body::Binary(input.body.clone())) else { return };
    let req: Request = req;
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in input.query {
        query.entry(k).or_default().push(v);
    }
    let mut req = req.with_query_string_parameters(QueryMap::from(query));
    if let Some(name) = input.name {
        req = req.with_path_parameters(QueryMap::from(HashMap::from([("name".to_owned(), name)])));
    }
    if let Err(e) = token_vault::validate_request(op, &req) {
        assert!((400..500).contains(&e.status()), "a request problem is a 4xx: {}", e.status());
        assert!(!e.public_message().is_empty());
    }
});
