//! Turns the root `openapi.yaml` into the JSON the portal function serves at `/vault/openapi.json`, so
//! the YAML file stays the one source of the API's contract. A missing or invalid file fails the build.

use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let source = manifest.join("../openapi.yaml");
    println!("cargo::rerun-if-changed={}", source.display());
    let yaml = std::fs::read_to_string(&source).map_err(|e| format!("reading {}: {e}", source.display()))?;
    let doc: serde_json::Value =
        serde_yaml::from_str(&yaml).map_err(|e| format!("{} is not valid YAML: {e}", source.display()))?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("openapi.json");
    std::fs::write(&out, serde_json::to_string(&doc)?)?;
    Ok(())
}
