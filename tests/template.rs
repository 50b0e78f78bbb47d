//! `template.yaml` and the tables the local stack and the tests create must be the same tables: this
//! checks the template against the shared schema and against what DynamoDB reports after creation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_yaml::Value;
use token_vault::store::schema;
use vault_tests::*;

fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn keys(v: &Value) -> Vec<(String, String)> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|k| (k["AttributeName"].as_str().unwrap().to_owned(), k["KeyType"].as_str().unwrap().to_owned()))
        .collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

#[tokio::test]
async fn tables_match_the_template() {
    let t = template();
    let secrets = &t["Resources"]["SecretsTable"]["Properties"];
    let audit = &t["Resources"]["AuditTable"]["Properties"];
    assert_eq!(keys(&secrets["KeySchema"]), [pair(schema::PK, "HASH"), pair(schema::SK, "RANGE")]);
    assert_eq!(keys(&audit["KeySchema"]), [pair(schema::PK, "HASH"), pair(schema::SK, "RANGE")]);
    let gsi = &secrets["GlobalSecondaryIndexes"][0];
    assert_eq!(gsi["IndexName"].as_str(), Some(schema::ORG_INDEX));
    assert_eq!(keys(&gsi["KeySchema"]), [pair(schema::ORG_PK, "HASH"), pair(schema::ORG_SK, "RANGE")]);
    assert_eq!(gsi["Projection"]["ProjectionType"].as_str(), Some("INCLUDE"));
    let projected: Vec<&str> =
        gsi["Projection"]["NonKeyAttributes"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(projected, schema::ORG_INDEX_PROJECTION);
    assert!(!projected.iter().any(|a| ["ciphertext", "wrappedKey"].contains(a)), "the index never holds ciphertext");
    for (name, table) in [("SecretsTable", secrets), ("AuditTable", audit)] {
        assert_eq!(table["TimeToLiveSpecification"]["AttributeName"].as_str(), Some(schema::TTL), "{name}");
        assert_eq!(table["TimeToLiveSpecification"]["Enabled"].as_bool(), Some(true), "{name}");
        assert_eq!(table["BillingMode"].as_str(), Some("PAY_PER_REQUEST"), "{name}");
        assert_eq!(table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(), Some(true));
        assert_eq!(table["SSESpecification"]["SSEEnabled"].as_bool(), Some(true));
        assert_eq!(t["Resources"][name]["DeletionPolicy"].as_str(), Some("Retain"));
    }

    // What the local stack creates is what DynamoDB then describes, key for key.
    let tv = TestVault::start().await;
    let desc = tv.client.describe_table().table_name(SECRETS_TABLE).send().await.unwrap().table.unwrap();
    let described: Vec<(String, String)> =
        desc.key_schema().iter().map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned())).collect();
    assert_eq!(described, keys(&secrets["KeySchema"]));
    let index = &desc.global_secondary_indexes()[0];
    assert_eq!(index.index_name(), gsi["IndexName"].as_str());
    let described: Vec<(String, String)> =
        index.key_schema().iter().map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned())).collect();
    assert_eq!(described, keys(&gsi["KeySchema"]));
    let mut local: Vec<String> = index.projection().unwrap().non_key_attributes().to_vec();
    let mut declared: Vec<String> = projected.iter().map(|s| s.to_string()).collect();
    local.sort();
    declared.sort();
    assert_eq!(local, declared);
    for table in [SECRETS_TABLE, AUDIT_TABLE] {
        let ttl = tv.client.describe_time_to_live().table_name(table).send().await.unwrap();
        assert_eq!(ttl.time_to_live_description.unwrap().attribute_name.as_deref(), Some(schema::TTL));
    }
}

#[test]
fn every_function_is_built_from_its_crate_and_routed() {
    let t = template();
    let expected = [
        ("CreateSecretFunction", "create-secret", "POST", "/vault/secrets"),
        ("GetSecretFunction", "get-secret", "GET", "/vault/secrets/{name}"),
        ("ListSecretsFunction", "list-secrets", "GET", "/vault/secrets"),
        ("DeleteSecretFunction", "delete-secret", "DELETE", "/vault/secrets/{name}"),
        ("BatchGetSecretsFunction", "batch-get-secrets", "POST", "/vault/secrets/batch-get"),
        ("RollbackSecretFunction", "rollback-secret", "POST", "/vault/secrets/{name}/rollback"),
        ("QueryAuditFunction", "query-audit", "GET", "/vault/audit"),
        ("QueryAuditFunction", "query-audit", "GET", "/vault/secrets/{name}/audit"),
        ("PortalFunction", "portal", "GET", "/portal/vault"),
        ("PortalFunction", "portal", "GET", "/vault/openapi.json"),
    ];
    let cargo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
    for (resource, binary, method, path) in expected {
        let f = &t["Resources"][resource];
        assert_eq!(f["Type"].as_str(), Some("AWS::Serverless::Function"));
        assert_eq!(f["Metadata"]["BuildMethod"].as_str(), Some("rust-cargolambda"));
        assert_eq!(f["Metadata"]["BuildProperties"]["Binary"].as_str(), Some(binary));
        assert!(
            std::path::Path::new(&format!("{}/../functions/{binary}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))).exists()
        );
        let events = f["Properties"]["Events"].as_mapping().unwrap();
        assert!(
            events.values().any(|e| e["Properties"]["Method"].as_str() == Some(method)
                && e["Properties"]["Path"].as_str() == Some(path)),
            "{resource} is routed at {method} {path}"
        );
        // The local router serves the same route with the same function.
        let local_route = format!("{{ method = \"{method}\", function = \"{binary}\" }}");
        assert!(cargo.contains(&local_route), "Cargo.toml's watch router lacks {method} {path} -> {binary}");
    }
    // The portal has no access to any table, and no key material in its environment.
    assert!(t["Resources"]["PortalFunction"]["Properties"]["Policies"].is_null());
    assert!(t["Resources"]["PortalFunction"]["Properties"]["Environment"].is_null());
    let global_env = format!("{:?}", t["Globals"]["Function"]["Environment"]);
    for secret in ["VAULT_MASTER_KEY", "VAULT_JWT_HS256_SECRET"] {
        assert!(!global_env.contains(secret), "{secret} must not be global: the portal would get it");
    }
    // The audit reader never touches a value: no master key in its environment.
    let audit_env = &t["Resources"]["QueryAuditFunction"]["Properties"]["Environment"]["Variables"];
    assert!(audit_env["VAULT_MASTER_KEY"].is_null() && audit_env["VAULT_MASTER_KEYS"].is_null());
    assert!(!audit_env["VAULT_JWT_HS256_SECRET"].is_null(), "it verifies tokens like every API function");
    for resource in [
        "CreateSecretFunction",
        "GetSecretFunction",
        "ListSecretsFunction",
        "DeleteSecretFunction",
        "BatchGetSecretsFunction",
        "RollbackSecretFunction",
        "RotateKeysFunction",
        "ShredOrgFunction",
    ] {
        let env = &t["Resources"][resource]["Properties"]["Environment"]["Variables"];
        for var in ["VAULT_MASTER_KEY", "VAULT_MASTER_KEYS", "VAULT_JWT_HS256_SECRET"] {
            assert!(!env[var].is_null(), "{resource} gets {var}");
        }
    }
    // Operator functions exist, built from their crates, and have no HTTP route.
    for (resource, binary) in [("RotateKeysFunction", "rotate-keys"), ("ShredOrgFunction", "shred-org")] {
        let f = &t["Resources"][resource];
        assert_eq!(f["Metadata"]["BuildProperties"]["Binary"].as_str(), Some(binary));
        assert!(
            std::path::Path::new(&format!("{}/../functions/{binary}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))).exists()
        );
        let events = format!("{:?}", f["Properties"]["Events"]);
        assert!(!events.contains("HttpApi"), "{resource} must not be reachable over HTTP");
    }
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Architectures"][0].as_str(), Some("arm64"));
    assert_eq!(globals["LoggingConfig"]["LogFormat"].as_str(), Some("JSON"));
    assert_eq!(t["Parameters"]["MasterKey"]["NoEcho"].as_bool(), Some(true));
    assert!(t["Outputs"]["ApiUrl"].is_mapping());
}

#[test]
fn functions_get_least_privilege() {
    let t = template();
    let writes: &[&str] =
        &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"];
    let expected: [(&str, &[&str]); 8] = [
        ("CreateSecretFunction", writes),
        ("GetSecretFunction", &["dynamodb:GetItem"]),
        ("ListSecretsFunction", &["dynamodb:Query"]),
        ("DeleteSecretFunction", &["dynamodb:GetItem", "dynamodb:DeleteItem"]),
        ("BatchGetSecretsFunction", &["dynamodb:GetItem", "dynamodb:BatchGetItem"]),
        ("RollbackSecretFunction", writes),
        ("RotateKeysFunction", &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]),
        ("ShredOrgFunction", &["dynamodb:DeleteItem"]),
    ];
    for (resource, secrets_actions) in expected {
        let statements = t["Resources"][resource]["Properties"]["Policies"][0]["Statement"].as_sequence().unwrap();
        let queries_index = ["RotateKeysFunction", "ShredOrgFunction", "ListSecretsFunction"].contains(&resource);
        assert_eq!(statements.len(), if queries_index { 3 } else { 2 }, "{resource}");
        for st in statements {
            let actions: Vec<&str> = st["Action"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            let target = format!("{:?}", st["Resource"]);
            assert!(!actions.iter().any(|a| a.contains('*')) && !target.contains('*'), "{resource}: no wildcards");
            if target.contains("/index/by-org") {
                assert!(queries_index, "{resource}: only listings and operator jobs query the index");
                assert_eq!(actions, ["dynamodb:Query"], "{resource}");
            } else if target.contains("SecretsTable") {
                assert_eq!(actions, secrets_actions, "{resource}");
            } else {
                assert!(target.contains("AuditTable"), "{resource}: {target}");
                assert_eq!(actions, ["dynamodb:PutItem"], "{resource}");
            }
        }
    }
    // The audit reader may only query the audit table.
    let statements =
        t["Resources"]["QueryAuditFunction"]["Properties"]["Policies"][0]["Statement"].as_sequence().unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Action"].as_sequence().unwrap().len(), 1);
    assert_eq!(statements[0]["Action"][0].as_str(), Some("dynamodb:Query"));
    assert!(format!("{:?}", statements[0]["Resource"]).contains("AuditTable"));
}
