//! Turns the root `openapi.yaml` into the JSON the portal function serves at `/vault/openapi.json`, so
//! the YAML file stays the one source of the API's contract.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let source = manifest.join("../openapi.yaml");
    println!("cargo::rerun-if-changed={}", source.display());
    let yaml = std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("reading {}: {e}", source.display()));
    let doc: serde_json::Value =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", source.display()));
    let json = serde_json::to_string(&doc).unwrap_or_else(|e| panic!("serializing the OpenAPI document: {e}"));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("openapi.json");
    std::fs::write(&out, json).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
