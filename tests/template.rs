//! `template.yaml` and the tables the local stack and the tests create must be the same tables: this
//! checks the template against the shared schema and against what DynamoDB reports after creation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_sdk_dynamodb::Client;
use serde_yaml::Value;
use token_vault::table::schema;
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
    // The salts' table: the same keys, never restorable to a point in time (a shred must stay a shred).
    let keys_table = &t["Resources"]["KeysTable"]["Properties"];
    assert_eq!(keys(&keys_table["KeySchema"]), [pair(schema::PK, "HASH"), pair(schema::SK, "RANGE")]);
    assert_eq!(keys_table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(), Some(false));
    assert!(keys_table["TimeToLiveSpecification"].is_null(), "salts never expire");
    assert_eq!(t["Resources"]["KeysTable"]["DeletionPolicy"].as_str(), Some("Retain"));

    // What the local stack creates is what DynamoDB then describes, key for key.
    let tv = TestVault::start().await;
    let keys_desc = tv.client.describe_table().table_name(KEYS_TABLE).send().await.unwrap().table.unwrap();
    let described: Vec<(String, String)> = keys_desc
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned()))
        .collect();
    assert_eq!(described, keys(&keys_table["KeySchema"]));
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
    // The audit table's per-secret index, declared and created alike: every attribute projected.
    let audit_gsi = &audit["GlobalSecondaryIndexes"][0];
    assert_eq!(audit_gsi["IndexName"].as_str(), Some(schema::SECRET_INDEX));
    assert_eq!(keys(&audit_gsi["KeySchema"]), [pair(schema::SECRET_KEY, "HASH"), pair(schema::SK, "RANGE")]);
    assert_eq!(audit_gsi["Projection"]["ProjectionType"].as_str(), Some("ALL"));
    let audit_desc = tv.client.describe_table().table_name(AUDIT_TABLE).send().await.unwrap().table.unwrap();
    let index = &audit_desc.global_secondary_indexes()[0];
    assert_eq!(index.index_name(), Some(schema::SECRET_INDEX));
    let described: Vec<(String, String)> =
        index.key_schema().iter().map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned())).collect();
    assert_eq!(described, keys(&audit_gsi["KeySchema"]));
    assert_eq!(index.projection().unwrap().projection_type().map(|p| p.as_str()), Some("ALL"));
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
        ("ListVersionsFunction", "list-versions", "GET", "/vault/secrets/{name}/versions"),
        ("QueryAuditFunction", "query-audit", "GET", "/vault/audit"),
        ("QueryAuditFunction", "query-audit", "GET", "/vault/secrets/{name}/audit"),
        ("PortalFunction", "portal", "GET", "/portal/vault"),
        ("PortalFunction", "portal", "GET", "/vault/openapi.json"),
        ("McpFunction", "mcp", "GET", "/.well-known/oauth-protected-resource"),
        ("McpFunction", "mcp", "GET", "/.well-known/oauth-protected-resource/vault/mcp"),
    ];
    // Every crate under functions/ (the one list of functions, which the scripts read through `cargo
    // metadata`) is a function of the template, and every function of the template is such a crate.
    let crates: std::collections::BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../functions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    let binaries: std::collections::BTreeSet<String> = t["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter_map(|r| r["Metadata"]["BuildProperties"]["Binary"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(crates, binaries, "functions/ and template.yaml name the same functions");
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
    // The proxy sits behind its own streaming function URL (the vault token is its credential), never
    // behind API Gateway, and the local router sends it any method under /vault/proxy/.
    let proxy = &t["Resources"]["ProxyFunction"];
    assert_eq!(proxy["Metadata"]["BuildProperties"]["Binary"].as_str(), Some("proxy"));
    assert_eq!(proxy["Properties"]["FunctionUrlConfig"]["AuthType"].as_str(), Some("NONE"));
    assert_eq!(proxy["Properties"]["FunctionUrlConfig"]["InvokeMode"].as_str(), Some("RESPONSE_STREAM"));
    assert!(proxy["Properties"]["Events"].is_null(), "the proxy has no API Gateway route");
    assert_eq!(proxy["Properties"]["Timeout"].as_u64(), Some(900));
    assert!(format!("{:?}", t["Outputs"]["ProxyUrl"]).contains("ProxyFunctionUrl"));
    for route in ["\"/vault/proxy/{name}\" = \"proxy\"", "\"/vault/proxy/{name}/{*path}\" = \"proxy\""] {
        assert!(cargo.contains(route), "Cargo.toml's watch router lacks {route}");
    }
    // The MCP server answers any method at /vault/mcp (405 but for POST), locally and on AWS.
    let mcp = &t["Resources"]["McpFunction"];
    let mcp_events = format!("{:?}", mcp["Properties"]["Events"]);
    assert!(mcp_events.contains("/vault/mcp") && mcp_events.contains("ANY"), "{mcp_events}");
    assert!(mcp["Properties"]["Timeout"].as_u64().is_some_and(|s| s < 30), "below API Gateway's 30 s");
    // It checks tokens itself (a 401 must name its metadata), and the metadata is public: API Gateway's
    // JWT authorizer stays off its routes.
    for (name, event) in mcp["Properties"]["Events"].as_mapping().unwrap() {
        assert_eq!(event["Properties"]["Auth"]["Authorizer"].as_str(), Some("NONE"), "{name:?}");
    }
    assert!(cargo.contains("\"/vault/mcp\" = \"mcp\""), "Cargo.toml's watch router lacks /vault/mcp");
    // The portal has no access to any table, and no configuration but its sign-in settings, each from its
    // parameter.
    assert!(t["Resources"]["PortalFunction"]["Properties"]["Policies"].is_null());
    let portal_env = t["Resources"]["PortalFunction"]["Properties"]["Environment"]["Variables"].as_mapping().unwrap();
    let names: Vec<&str> = portal_env.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "VAULT_PORTAL_OIDC_ISSUER",
            "VAULT_PORTAL_OIDC_CLIENT_ID",
            "VAULT_PORTAL_OIDC_SCOPE",
            "VAULT_PORTAL_OIDC_PARAMS",
            "VAULT_PORTAL_OIDC_ORIGINS"
        ]
    );
    for (name, value) in portal_env {
        let param = format!("{:?}", value);
        assert!(param.contains("PortalOidc"), "{name:?} comes from a PortalOidc parameter: {param}");
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
    assert!(t["Outputs"]["ApiUrl"].is_mapping());
}

#[test]
fn functions_get_least_privilege() {
    let t = template();
    let writes: &[&str] = &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"];
    let expected: [(&str, &[&str]); 11] = [
        ("CreateSecretFunction", writes),
        ("GetSecretFunction", &["dynamodb:GetItem"]),
        ("ListSecretsFunction", &["dynamodb:Query"]),
        ("DeleteSecretFunction", &["dynamodb:GetItem", "dynamodb:DeleteItem"]),
        ("BatchGetSecretsFunction", &["dynamodb:GetItem", "dynamodb:BatchGetItem"]),
        ("RollbackSecretFunction", writes),
        ("RotateKeysFunction", &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]),
        ("ShredOrgFunction", &["dynamodb:DeleteItem"]),
        ("ProxyFunction", &["dynamodb:GetItem"]),
        ("ListVersionsFunction", &["dynamodb:GetItem", "dynamodb:Query"]),
        ("McpFunction", &["dynamodb:GetItem", "dynamodb:Query"]),
    ];
    for (resource, secrets_actions) in expected {
        let statements = t["Resources"][resource]["Properties"]["Policies"][0]["Statement"].as_sequence().unwrap();
        let queries_index = ["RotateKeysFunction", "ShredOrgFunction", "ListSecretsFunction"].contains(&resource);
        let writes_versions = secrets_actions == writes;
        let counts_uses = resource == "ProxyFunction" || resource == "McpFunction";
        let seals = SEALING_FUNCTIONS.contains(&resource);
        let keys_table = seals || resource == "ShredOrgFunction";
        let expected_statements = 2
            + usize::from(resource == "McpFunction")
            + usize::from(queries_index || writes_versions || counts_uses)
            + usize::from(keys_table)
            + usize::from(seals);
        assert_eq!(statements.len(), expected_statements, "{resource}");
        for st in statements {
            let actions: Vec<&str> = st["Action"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            let target = format!("{:?}", st["Resource"]);
            assert!(!actions.iter().any(|a| a.contains('*')) && !target.contains('*'), "{resource}: no wildcards");
            if actions == ["kms:Decrypt"] {
                // Checked by `only_the_sealing_functions_may_decrypt_the_key_ring`.
                assert!(seals, "{resource} may not decrypt");
            } else if target.contains("KeysTable") {
                let want: &[&str] = match resource {
                    "CreateSecretFunction" | "RollbackSecretFunction" => {
                        &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:ConditionCheckItem"]
                    }
                    "ShredOrgFunction" => &["dynamodb:DeleteItem"],
                    _ => &["dynamodb:GetItem"],
                };
                assert_eq!(actions, want, "{resource}");
            } else if target.contains("/index/by-org") {
                assert!(queries_index, "{resource}: only listings and operator jobs query the index");
                assert_eq!(actions, ["dynamodb:Query"], "{resource}");
            } else if target.contains("/index/by-secret") {
                assert_eq!(resource, "McpFunction", "{resource}: only audit readers query the per-secret index");
                assert_eq!(actions, ["dynamodb:Query"], "{resource}");
            } else if target.contains("SecretsTable") {
                assert_eq!(actions, secrets_actions, "{resource}");
            } else if actions == ["dynamodb:UpdateItem"] {
                // Only writers and the proxy update the audit table, and there only the partitions of
                // version sequences (`seq#`) or of use counters (`rate#`), never an event.
                assert!((writes_versions || counts_uses) && target.contains("AuditTable"), "{resource}: {target}");
                let leading = &st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
                assert_eq!(leading.as_sequence().map(Vec::len), Some(1), "{resource}");
                assert_eq!(leading[0].as_str(), Some(if counts_uses { "rate#*" } else { "seq#*" }), "{resource}");
            } else {
                assert!(target.contains("AuditTable"), "{resource}: {target}");
                // Only the MCP server (its audit tool) also reads events.
                let want: &[&str] = if resource == "McpFunction" {
                    &["dynamodb:PutItem", "dynamodb:Query"]
                } else {
                    &["dynamodb:PutItem"]
                };
                assert_eq!(actions, want, "{resource}");
                assert!(st.get("Condition").is_none(), "{resource}");
            }
        }
    }
    // The audit reader may only query the audit table and its per-secret index.
    let statements =
        t["Resources"]["QueryAuditFunction"]["Properties"]["Policies"][0]["Statement"].as_sequence().unwrap();
    assert_eq!(statements.len(), 2);
    for (st, index) in statements.iter().zip([false, true]) {
        assert_eq!(st["Action"].as_sequence().unwrap().len(), 1);
        assert_eq!(st["Action"][0].as_str(), Some("dynamodb:Query"));
        let target = format!("{:?}", st["Resource"]);
        assert!(target.contains("AuditTable"));
        assert_eq!(target.contains("/index/by-secret"), index, "{target}");
    }
    // Only the audit readers (the audit function, the MCP server's audit tool) query the per-secret index.
    for (name, r) in t["Resources"].as_mapping().unwrap() {
        let policy = format!("{:?}", r["Properties"]["Policies"]);
        let name = name.as_str().unwrap();
        assert_eq!(
            policy.contains("/index/by-secret"),
            ["QueryAuditFunction", "McpFunction"].contains(&name),
            "{name}"
        );
    }
}

/// The functions that seal or open values: the only ones given the key ring, or the right to decrypt it.
const SEALING_FUNCTIONS: [&str; 7] = [
    "CreateSecretFunction",
    "GetSecretFunction",
    "BatchGetSecretsFunction",
    "RollbackSecretFunction",
    "RotateKeysFunction",
    "ProxyFunction",
    "McpFunction",
];

/// No function's configuration holds key material in the clear: the only key material in the template is
/// the key ring's KMS ciphertext, given to the sealing functions alone, and only they may decrypt it (in
/// their IAM policy and in the KMS key's policy, under the key ring's encryption context).
#[test]
fn only_the_sealing_functions_may_decrypt_the_key_ring() {
    let t = template();
    let context = |c: &Value| {
        let e = &c["StringEquals"];
        e["kms:EncryptionContext:purpose"].as_str() == Some("token-vault-keyring")
            && format!("{:?}", e["kms:EncryptionContext:stack"]).contains("AWS::StackName")
    };
    // No parameter is a secret (nothing to hide with NoEcho), and no variable anywhere names a plain key.
    for (name, param) in t["Parameters"].as_mapping().unwrap() {
        assert!(param["NoEcho"].is_null(), "{name:?}: no secret is passed as a parameter");
    }
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
    for plain in ["VAULT_MASTER_KEY", "VAULT_JWT_HS256_SECRET"] {
        assert!(!text.contains(plain), "{plain} appears in the template");
    }
    assert!(
        format!("{:?}", t["Globals"]).contains("VAULT_KEYS_TABLE")
            && !format!("{:?}", t["Globals"]).contains("KEYRING")
    );
    for (name, r) in t["Resources"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if r["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let seals = SEALING_FUNCTIONS.contains(&name);
        let env = &r["Properties"]["Environment"]["Variables"];
        assert_eq!(
            !env["VAULT_KEYRING_CIPHERTEXT"].is_null(),
            seals,
            "{name}: the sealed ring only where values are sealed or opened"
        );
        if seals {
            assert!(format!("{:?}", env["VAULT_KEYRING_CIPHERTEXT"]).contains("KeyRingCiphertext"), "{name}");
            assert!(format!("{:?}", env["VAULT_KEYRING_STACK"]).contains("AWS::StackName"), "{name}");
        } else {
            // (The portal's own settings are its sign-in provider's, checked above: nothing about keys.)
            let own =
                env.as_mapping().map(|m| m.keys().filter_map(|k| k.as_str()).collect::<Vec<_>>()).unwrap_or_default();
            assert!(
                own.iter().all(|k| k.starts_with("VAULT_PORTAL_OIDC_")),
                "{name} has no configuration of its own: {own:?}"
            );
        }
        let statements = r["Properties"]["Policies"][0]["Statement"].as_sequence().cloned().unwrap_or_default();
        let decrypts: Vec<&Value> =
            statements.iter().filter(|s| format!("{:?}", s["Action"]).contains("kms:")).collect();
        assert_eq!(decrypts.len(), usize::from(seals), "{name}");
        for st in decrypts {
            assert_eq!(st["Action"].as_sequence().unwrap().len(), 1, "{name}: kms:Decrypt alone");
            assert_eq!(st["Action"][0].as_str(), Some("kms:Decrypt"), "{name}");
            assert!(context(&st["Condition"]), "{name}: only under the key ring's encryption context");
        }
    }
    // The key's own policy: the account administers it and encrypts; it decrypts for those functions alone.
    let policy = &t["Resources"]["VaultKey"]["Properties"]["KeyPolicy"]["Statement"];
    let statements = policy.as_sequence().unwrap();
    let decrypting: Vec<&Value> =
        statements.iter().filter(|s| format!("{:?}", s["Action"]).contains("kms:Decrypt")).collect();
    assert_eq!(decrypting.len(), 1, "one statement lets anyone decrypt");
    assert!(statements.iter().all(|s| !format!("{:?}", s["Action"]).contains("kms:*")), "no kms:* in the key policy");
    let roles = format!("{:?}", decrypting[0]["Condition"]["ArnLike"]["aws:PrincipalArn"]);
    for f in SEALING_FUNCTIONS {
        assert!(roles.contains(&format!("*{f}Role*")), "{f} may decrypt");
    }
    assert_eq!(
        decrypting[0]["Condition"]["ArnLike"]["aws:PrincipalArn"].as_sequence().unwrap().len(),
        SEALING_FUNCTIONS.len()
    );
    assert!(context(&decrypting[0]["Condition"]));
}

/// The (action, resource) pairs a function's policy allows, resources named as the tests' tables are:
/// `vault-secrets`, `vault-secrets/index/by-org`, `vault-audit`, `vault-audit/index/by-secret`, `vault-keys`
/// (KMS statements aside).
fn allowed(t: &Value, resource: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for st in t["Resources"][resource]["Properties"]["Policies"][0]["Statement"].as_sequence().unwrap() {
        let target = format!("{:?}", st["Resource"]);
        if format!("{:?}", st["Action"]).contains("kms:") {
            continue;
        }
        let table = if target.contains("KeysTable") {
            KEYS_TABLE.to_owned()
        } else if target.contains("/index/by-org") {
            format!("{SECRETS_TABLE}/index/by-org")
        } else if target.contains("/index/by-secret") {
            format!("{AUDIT_TABLE}/index/by-secret")
        } else if target.contains("SecretsTable") {
            SECRETS_TABLE.to_owned()
        } else {
            assert!(target.contains("AuditTable"), "{target}");
            AUDIT_TABLE.to_owned()
        };
        for action in st["Action"].as_sequence().unwrap() {
            let action = action.as_str().unwrap().strip_prefix("dynamodb:").unwrap();
            out.push((action.to_owned(), table.clone()));
        }
    }
    out
}

/// Drives every function's operations (their success paths and the branches that touch more of the
/// table: a brand-new organization, versions past the retained five, a user's two candidates, an expired
/// secret replaced) through a vault that records each DynamoDB request, and checks that every action is
/// one its function's policy in `template.yaml` allows: a deployment can never fail with AccessDenied on
/// a path the tests know, and no function holds a permission it does not use. No function ever scans.
#[tokio::test]
async fn every_function_calls_dynamodb_only_as_its_policy_allows() {
    use token_vault::KeyUse;
    use token_vault::RewrapOptions;
    let tv = TestVault::start().await;
    let t = template();
    let app = m2m("org-iam", "client-a");
    let u1 = user("org-iam", "client-a", "auth0|u1");
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // An organization whose salt an earlier build kept in the secrets table: readers read it there.
    let legacy = m2m("org-legacy", "client-a");
    assert_eq!(tv.send(put(&legacy, serde_json::json!({"name": "k", "value": "v"}))).await.status, 201);
    assert_eq!(tv.send(put(&legacy, serde_json::json!({"name": "k", "value": "v2"}))).await.status, 200);
    tv.move_salt_to_the_secrets_table("org-legacy").await;
    // A writer moves it to the keys table first.
    let legacy_rollback =
        Call::new("POST", "/vault/secrets/k/rollback").token(&legacy).json(&serde_json::json!({"version": 1}));
    let batch = |tok: &str| {
        Call::new("POST", "/vault/secrets/batch-get").token(tok).json(&serde_json::json!({"names": ["k", "absent"]}))
    };
    let rollback = Call::new("POST", "/vault/secrets/k/rollback").token(&app).json(&serde_json::json!({"version": 7}));
    let scenarios: Vec<(&str, KeyUse, Vec<Call>)> = vec![
        (
            "CreateSecretFunction",
            KeyUse::Required,
            // A secret that expires at once, 7 versions of another, and the expired one written again.
            [put(&app, serde_json::json!({"name": "brief", "value": "v", "expiresAt": soon}))]
                .into_iter()
                .chain((1..=7).map(|i| put(&app, serde_json::json!({"name": "k", "value": format!("v{i}")}))))
                .chain([put(&u1, serde_json::json!({"name": "k", "value": "mine"}))])
                .chain([put(&app, serde_json::json!({"name": "brief", "value": "again"}))])
                .collect(),
        ),
        (
            "GetSecretFunction",
            KeyUse::Required,
            vec![
                get(&app, "k"),
                get(&app, "k").query("version", "6"),
                get(&u1, "k"),
                get(&u1, "k").query("version", "1"),
            ],
        ),
        (
            "ListSecretsFunction",
            KeyUse::Required,
            // A refused listing is audited.
            vec![
                list(&app),
                list(&u1),
                list(&admin("org-iam", "ops")).query("all", "true"),
                list(&app).query("all", "true"),
            ],
        ),
        ("BatchGetSecretsFunction", KeyUse::Required, vec![batch(&app), batch(&u1), batch(&legacy)]),
        ("RollbackSecretFunction", KeyUse::Required, vec![rollback.clone(), legacy_rollback]),
        (
            "QueryAuditFunction",
            KeyUse::None,
            vec![
                Call::new("GET", "/vault/audit").token(&admin("org-iam", "ops")),
                Call::new("GET", "/vault/secrets/k/audit").token(&u1).query("limit", "1"),
            ],
        ),
        (
            "ListVersionsFunction",
            KeyUse::None,
            // A refused history (another client's, without admin) is audited.
            vec![
                Call::new("GET", "/vault/secrets/k/versions").token(&app),
                Call::new("GET", "/vault/secrets/k/versions").token(&u1),
                Call::new("GET", "/vault/secrets/k/versions").token(&app).query("clientId", "client-b"),
            ],
        ),
        ("DeleteSecretFunction", KeyUse::Required, vec![delete(&app, "k"), delete(&u1, "k")]),
    ];
    // Writers that race: each of these calls loses a race, exactly (its transaction is held while another
    // writer commits), and goes on with a number from the secret's sequence.
    let raced = |call: Call| Some((call, put(&app, serde_json::json!({"name": "k", "value": "meanwhile"}))));
    let races = [
        ("CreateSecretFunction", raced(put(&app, serde_json::json!({"name": "k", "value": "raced"})))),
        ("RollbackSecretFunction", raced(rollback.clone())),
    ];
    let proxy = proxy::Proxy::start(&tv.endpoint).await;
    let through_proxy = isolated_client(&proxy.endpoint, "iam").await;
    for (resource, keys, calls) in scenarios {
        let (vault, log) = TestVault::recorded_over(&through_proxy, keys).await;
        let vault = std::sync::Arc::new(vault);
        for call in calls {
            if resource == "CreateSecretFunction" && call.operation() == token_vault::Operation::Create {
                // Let the short expiry pass before the secret is written again.
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            }
            let r = send_to(&vault, call).await;
            assert!(r.status < 300 || r.json["error"]["code"] == "forbidden", "{resource}: {} {}", r.status, r.body);
        }
        if let Some((call, meanwhile)) = races.iter().find(|(r, _)| *r == resource).and_then(|(_, race)| race.clone()) {
            let hold = proxy.hold_next("TransactWriteItems");
            let racer = {
                let vault = vault.clone();
                tokio::spawn(async move { send_to(&vault, call).await })
            };
            hold.arrived().await;
            assert!(tv.send(meanwhile).await.status < 300);
            hold.release();
            let r = racer.await.unwrap();
            assert_eq!(r.status, 200, "{resource} after a lost race: {}", r.body);
        }
        check_calls(&t, resource, &log.take());
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // The operator jobs, with a ring that makes the rewrap job move every key.
    let ring = format!("k2:{},k1:{MASTER_KEY}", "9a".repeat(32));
    let (_, log) = tv.recorded(KeyUse::Required).await;
    let client = Client::from_conf(tv.client.config().to_builder().interceptor(log.clone()).build());
    let job =
        token_vault::Vault::new(config(&[("VAULT_MASTER_KEY", ""), ("VAULT_MASTER_KEYS", &ring)]), client.clone())
            .await
            .unwrap();
    let report = job.rewrap_all(&RewrapOptions::default(), |_| {}).await.unwrap();
    assert!(report.rewrapped > 0, "{report:?}");
    check_calls(&t, "RotateKeysFunction", &log.take());
    job.shred_org("org-iam", "org-iam").await.unwrap();
    check_calls(&t, "ShredOrgFunction", &log.take());

    // The proxy: a use counted against its secret's limits and audited, and a refused one audited.
    let upstream =
        vault_tests::upstream::TestUpstream::http(vault_tests::upstream::answer_json(200, serde_json::json!({}))).await;
    let body = serde_json::json!({"name": "metered", "value": "sk-x", "access": "use-only",
        "upstream": {"baseUrl": upstream.http_url(""), "methods": ["GET"]}, "limits": {"perDay": 10}});
    let tv = TestVault::start_with(&[("VAULT_PROXY_ALLOW_LOOPBACK", "true")]).await;
    assert_eq!(tv.send(put(&app, body)).await.status, 201);
    let log = CallLog::default();
    let client = Client::from_conf(tv.client.config().to_builder().interceptor(log.clone()).build());
    let proxy = proxy_over(&client, &[], token_vault::ProxyOptions::default()).await;
    let used = send_proxy(&proxy, Call::new("GET", "/vault/proxy/metered/x").token(&app)).await;
    assert_eq!(used.status, 200);
    let refused = send_proxy(&proxy, Call::new("POST", "/vault/proxy/metered/x").token(&app)).await;
    assert_eq!(refused.status, 403);
    check_calls(&t, "ProxyFunction", &log.take());

    // The MCP server: a listing, a use through call_api, a refused one, and an audit query.
    let log = CallLog::default();
    let client = Client::from_conf(tv.client.config().to_builder().interceptor(log.clone()).build());
    let mcp = proxy_over(&client, &[], token_vault::ProxyOptions::default()).await;
    for call in [
        mcp_tool(&app, "list_secrets", serde_json::json!({})),
        mcp_tool(&app, "call_api", serde_json::json!({"name": "metered", "path": "/x"})),
        mcp_tool(&app, "call_api", serde_json::json!({"name": "metered", "method": "POST", "path": "/x"})),
        mcp_tool(&app, "audit", serde_json::json!({"name": "metered"})),
    ] {
        let r = send_mcp(&mcp, call).await;
        assert!(r.status == 200 && r.json["result"].is_object(), "{}", r.body);
    }
    check_calls(&t, "McpFunction", &log.take());
}

fn check_calls(t: &Value, resource: &str, used: &[(String, String)]) {
    assert!(!used.is_empty(), "{resource} made no DynamoDB call");
    let allowed = allowed(t, resource);
    for call in used {
        assert_ne!(call.0, "Scan", "{resource} scans {}", call.1);
        assert!(allowed.contains(call), "{resource} calls {call:?}, which its policy does not allow: {allowed:?}");
    }
    // Least privilege the other way round: every permission granted is one the function used.
    for grant in &allowed {
        assert!(used.contains(grant), "{resource} is granted {grant:?} but never used it");
    }
}
