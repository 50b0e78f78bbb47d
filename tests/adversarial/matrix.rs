//! The adversarial matrix: one named row per case, in four categories (tokens, isolation, input, crypto).
//!
//! Every row is sent through the real handler of its operation against a vault seeded with the same
//! fixture, and asserts the status, the error `code`, that no secret value appears in the body, and that
//! the secrets table and the audit table changed exactly as the row says: nothing at all for a refused
//! request, one `access_denied` event for a policy refusal (the design audits those, reads and writes
//! alike), one `integrity_error` event for a tampered envelope, and exactly one new item and one
//! `created` event for a row that legitimately creates a secret. A failing row is reported by name; all
//! rows run before the suite fails.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use token_vault::Vault;
use vault_tests::*;

use crate::leaks;

const ORG_A: &str = "org-a";
const ORG_B: &str = "org-b";
const CREATED: &str = "vault.secret.created";
const DENIED: &str = "vault.secret.access_denied";
const INTEGRITY: &str = "vault.secret.integrity_error";

/// Which vault a row is sent to: all three share one DynamoDB server and its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The test configuration (HS256 tokens).
    Hs256,
    /// Tokens verified against the identity provider's JWKS (RS256/ES256).
    Jwks,
    /// A vault started with another master key.
    OtherMasterKey,
}

/// A change made to the store before a row is sent (crypto rows).
#[derive(Debug, Clone)]
enum Tamper {
    /// XOR one byte of an attribute (`at` counted from the end when negative).
    Flip { pk: String, name: &'static str, attr: &'static str, at: isize },
    /// Cut the ciphertext short.
    Truncate { pk: String, name: &'static str, len: usize },
    /// Copy a whole item to another key.
    Copy { from_pk: String, from: &'static str, to_pk: String, to: &'static str },
    /// Give `name` the attribute `attr` of `donor`.
    Swap { pk: String, name: &'static str, donor: &'static str, attr: &'static str },
    /// Overwrite one attribute.
    Set { pk: String, name: &'static str, attr: &'static str, value: AttributeValue },
}

/// How the secrets table must change.
#[derive(Debug, Clone)]
enum Store {
    Unchanged,
    /// Exactly one new item at (pk, name); every other item unchanged.
    Adds {
        pk: String,
        name: String,
    },
}

type Check = Box<dyn Fn(&Reply) -> Result<(), String> + Send + Sync>;

/// One case of the matrix.
struct Row {
    name: String,
    via: Via,
    tamper: Option<Tamper>,
    call: Call,
    status: u16,
    /// The error code, or "" for a success.
    code: &'static str,
    store: Store,
    /// The audit events this row must add: (organization, event).
    audit: Vec<(&'static str, &'static str)>,
    check: Option<Check>,
}

impl Row {
    fn new(name: impl Into<String>, call: Call, status: u16, code: &'static str) -> Self {
        Self {
            name: name.into(),
            via: Via::Hs256,
            tamper: None,
            call,
            status,
            code,
            store: Store::Unchanged,
            audit: vec![],
            check: None,
        }
    }
    fn via(mut self, via: Via) -> Self {
        self.via = via;
        self
    }
    fn tamper(mut self, t: Tamper) -> Self {
        self.tamper = Some(t);
        self
    }
    /// A policy refusal: audited as `access_denied` in `org`, nothing else changes.
    fn denied(mut self, org: &'static str) -> Self {
        self.audit = vec![(org, DENIED)];
        self
    }
    /// A tampered envelope: audited as `integrity_error` in `org`.
    fn integrity(mut self, org: &'static str) -> Self {
        self.audit = vec![(org, INTEGRITY)];
        self
    }
    /// A legitimate create of (pk, name) in `org`.
    fn creates(mut self, org: &'static str, pk: &str, name: &str) -> Self {
        self.store = Store::Adds { pk: pk.into(), name: name.into() };
        self.audit = vec![(org, CREATED)];
        self
    }
    fn check(mut self, f: impl Fn(&Reply) -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.check = Some(Box::new(f));
        self
    }
}

fn pk_app(org: &str, client: &str) -> String {
    format!("org#{org}#app#{client}")
}

fn pk_user(org: &str, user: &str) -> String {
    format!("org#{org}#user#{user}")
}

/// The principals of the fixture.
struct Who {
    a: String,
    b: String,
    u1: String,
    u2: String,
    x: String,
    xu1: String,
    adm: String,
    admb: String,
}

fn who() -> Who {
    Who {
        a: m2m(ORG_A, "ca"),
        b: m2m(ORG_A, "cb"),
        u1: user(ORG_A, "ca", "ua1"),
        u2: user(ORG_A, "ca", "ua2"),
        x: m2m(ORG_B, "ca"),
        xu1: user(ORG_B, "ca", "ua1"),
        adm: admin(ORG_A, "adm"),
        admb: admin(ORG_B, "adm"),
    }
}

/// Names the crypto rows tamper with, each its own victim.
const CRYPTO_VICTIMS: &[&str] = &[
    "c-flip",
    "c-tag",
    "c-wrap",
    "c-trunc",
    "c-move",
    "c-swap-1",
    "c-swap-2",
    "c-swap-3",
    "c-swap-4",
    "c-keyid",
    "c-version",
    "c-version-3",
];

/// A vault with the fixture every row starts from, and the other vaults rows may be sent to.
struct Bench {
    t: TestVault,
    jwks: Vault,
    /// How often the JWKS was fetched.
    jwks_fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    other_key: Vault,
}

async fn bench() -> Bench {
    let t = TestVault::start().await;
    let w = who();
    let seed = |tok: &str, name: &str, scope: Value| {
        put(tok, json!({"name": name, "value": leaks::value(name), "scope": scope}))
    };
    let mut calls = vec![
        seed(&w.a, "only-a", json!([])),
        seed(&w.a, "scoped", json!(["payments"])),
        seed(&w.u1, "mine", json!([])),
        seed(&w.u1, "c-user", json!([])),
        seed(&w.x, "key", json!([])),
        seed(&m2m(ORG_B, "xb"), "bsecret", json!([])),
    ];
    calls.extend(CRYPTO_VICTIMS.iter().map(|n| seed(&w.a, n, json!([]))));
    for call in calls {
        let r = t.send(call).await;
        assert_eq!(r.status, 201, "seeding: {}", r.body);
    }
    // Two secrets with a retained earlier version each (the crypto rows tamper with those).
    for name in ["c-old", "c-old-move"] {
        for _ in 0..2 {
            let r = t.send(seed(&w.a, name, json!([]))).await;
            assert!(r.status == 201 || r.status == 200, "seeding: {}", r.body);
        }
    }
    let (url, jwks_fetches) = serve_jwks().await;
    let jwks = t.sibling(&[("VAULT_JWT_HS256_SECRET", ""), ("VAULT_JWKS_URL", &url)]).await;
    let other_key = t.sibling(&[("VAULT_MASTER_KEY", &"11".repeat(32))]).await;
    Bench { t, jwks, jwks_fetches, other_key }
}

type Snapshot = BTreeMap<(String, String), String>;

/// Every item of the secrets table, each attribute by attribute, keyed by (pk, sk).
pub(crate) async fn secrets_snapshot(t: &TestVault) -> Snapshot {
    t.all_secret_items()
        .await
        .into_iter()
        .map(|i| {
            let sorted: BTreeMap<_, _> = i.iter().map(|(k, v)| (k.clone(), format!("{v:?}"))).collect();
            ((s(&i, "pk"), s(&i, "sk")), format!("{sorted:?}"))
        })
        .collect()
}

async fn audit_snapshot(t: &TestVault) -> BTreeMap<(String, String), Item> {
    t.all_audit_items().await.into_iter().map(|i| ((s(&i, "pk"), s(&i, "sk")), i)).collect()
}

async fn apply(t: &TestVault, tamper: &Tamper) {
    let item = |pk: &str, name: &str| {
        let (pk, name) = (pk.to_owned(), name.to_owned());
        async move { t.secret_item(&pk, &name).await.unwrap_or_else(|| panic!("fixture item {pk}/{name}")) }
    };
    let bytes = |i: &Item, attr: &str| i[attr].as_b().unwrap().as_ref().to_vec();
    match tamper {
        Tamper::Flip { pk, name, attr, at } => {
            let mut i = item(pk, name).await;
            let mut b = bytes(&i, attr);
            let at = if *at < 0 { (b.len() as isize + at) as usize } else { *at as usize };
            b[at] ^= 0x01;
            i.insert((*attr).into(), AttributeValue::B(Blob::new(b)));
            t.put_secret_item(i).await;
        }
        Tamper::Truncate { pk, name, len } => {
            let mut i = item(pk, name).await;
            let b = bytes(&i, "ciphertext");
            i.insert("ciphertext".into(), AttributeValue::B(Blob::new(b[..*len].to_vec())));
            t.put_secret_item(i).await;
        }
        Tamper::Copy { from_pk, from, to_pk, to } => {
            let mut i = item(from_pk, from).await;
            i.insert("pk".into(), AttributeValue::S(to_pk.clone()));
            i.insert("sk".into(), AttributeValue::S((*to).into()));
            i.insert("name".into(), AttributeValue::S((*to).into()));
            t.put_secret_item(i).await;
        }
        Tamper::Swap { pk, name, donor, attr } => {
            let d = item(pk, donor).await;
            let mut i = item(pk, name).await;
            i.insert((*attr).into(), d[*attr].clone());
            t.put_secret_item(i).await;
        }
        Tamper::Set { pk, name, attr, value } => {
            let mut i = item(pk, name).await;
            i.insert((*attr).into(), value.clone());
            t.put_secret_item(i).await;
        }
    }
}

/// Runs one row; returns what went wrong, if anything.
async fn run_row(bench: &Bench, row: &Row) -> Result<(), String> {
    let t = &bench.t;
    if let Some(tamper) = &row.tamper {
        apply(t, tamper).await;
    }
    let secrets_before = secrets_snapshot(t).await;
    let audit_before = audit_snapshot(t).await;
    let vault = match row.via {
        Via::Hs256 => &t.vault,
        Via::Jwks => &bench.jwks,
        Via::OtherMasterKey => &bench.other_key,
    };
    let r = send_to(vault, row.call.clone()).await;
    let mut errors = Vec::new();
    if r.status != row.status {
        errors.push(format!("status {} (want {})", r.status, row.status));
    }
    if row.code.is_empty() {
        if !r.json.is_object() || r.json.get("error").is_some() || r.json["success"] == json!(false) {
            errors.push("not a success body".into());
        }
    } else {
        if r.code() != row.code {
            errors.push(format!("code {:?} (want {:?})", r.code(), row.code));
        }
        if r.json["success"] != json!(false) || r.json["error"]["message"].as_str().is_none_or(str::is_empty) {
            errors.push("not an error envelope".into());
        }
    }
    if r.body.contains(leaks::VALUE_MARKER) {
        errors.push("a secret value is in the body".into());
    }
    if r.headers.get("cache-control").map(String::as_str) != Some("no-store") {
        errors.push("no Cache-Control: no-store".into());
    }
    match r.status {
        401 if r.headers.get("www-authenticate").is_none_or(|h| !h.contains("invalid_token")) => {
            errors.push("401 without WWW-Authenticate".into())
        }
        503 if !r.headers.contains_key("retry-after") => errors.push("503 without Retry-After".into()),
        405 if !r.headers.contains_key("allow") => errors.push("405 without Allow".into()),
        _ => {}
    }
    if let Some(check) = &row.check
        && let Err(e) = check(&r)
    {
        errors.push(e);
    }

    let secrets_after = secrets_snapshot(t).await;
    match &row.store {
        Store::Unchanged => {
            if secrets_after != secrets_before {
                let changed: Vec<_> = secrets_after
                    .iter()
                    .filter(|(k, v)| secrets_before.get(*k) != Some(*v))
                    .map(|(k, _)| k)
                    .chain(secrets_before.keys().filter(|k| !secrets_after.contains_key(*k)))
                    .collect();
                errors.push(format!("the secrets table changed: {changed:?}"));
            }
        }
        Store::Adds { pk, name } => {
            let mut expected = secrets_before.clone();
            let key = (pk.clone(), name.clone());
            match secrets_after.get(&key) {
                Some(new) if !secrets_before.contains_key(&key) => {
                    expected.insert(key, new.clone());
                }
                _ => errors.push(format!("no new item at {pk}/{name}")),
            }
            if secrets_after != expected {
                errors.push("the secrets table changed beyond the one new item".into());
            }
        }
    }
    let audit_after = audit_snapshot(t).await;
    let mut added: Vec<(String, String)> = audit_after
        .iter()
        .filter(|(k, _)| !audit_before.contains_key(*k))
        .map(|(_, i)| (s(i, "orgId"), s(i, "event")))
        .collect();
    added.sort();
    let mut want: Vec<(String, String)> = row.audit.iter().map(|(o, e)| (o.to_string(), e.to_string())).collect();
    want.sort();
    if added != want {
        errors.push(format!("audit events {added:?} (want {want:?})"));
    }
    if audit_after.len() < audit_before.len() {
        errors.push("audit events disappeared".into());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}\n    body: {:.300}", row.name, errors.join("; "), r.body))
    }
}

/// Runs every row of a category on a fresh bench, then fails listing every failed row.
async fn run(category: &str, rows: Vec<Row>) -> Bench {
    let bench = bench().await;
    let mut failures = Vec::new();
    let mut names = std::collections::HashSet::new();
    for row in &rows {
        assert!(names.insert(row.name.clone()), "row names are unique: {}", row.name);
        if let Err(e) = run_row(&bench, row).await {
            failures.push(e);
        }
    }
    leaks::keep(&bench.t).await;
    println!("matrix {category}: {} rows", rows.len());
    assert!(
        failures.is_empty(),
        "{} of {} {category} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    bench
}

// ---------------------------------------------------------------------------------------------------------
// Tokens

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// The valid claims of `a` (org-a, client ca) as a JSON object, to edit.
fn claims() -> serde_json::Map<String, Value> {
    match vault_dev::m2m_claims(ISSUER, AUDIENCE, ORG_A, "ca", "", 600) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn signed(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut c = claims();
    edit(&mut c);
    token_with(&Value::Object(c))
}

fn rs256(kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
    record_token(jsonwebtoken::encode(&header, &Value::Object(claims()), &key).unwrap())
}

/// The token cases: (name, Authorization header or none, vault, expected code).
fn token_cases() -> Vec<(&'static str, Option<String>, Via, &'static str)> {
    let valid = m2m(ORG_A, "ca");
    let (signing_input, sig) = valid.rsplit_once('.').unwrap();
    let flipped_sig = {
        let mut b = URL_SAFE_NO_PAD.decode(sig).unwrap();
        b[0] ^= 0x01;
        URL_SAFE_NO_PAD.encode(b)
    };
    let payload = Value::Object(claims()).to_string();
    let none_header = b64(r#"{"alg":"none","typ":"JWT"}"#);
    let none_unsigned = format!("{none_header}.{}.", b64(&payload));
    let none_signed = {
        let t = sign_raw(r#"{"alg":"none","typ":"JWT"}"#, &payload);
        format!("{none_header}.{}.{}", b64(&payload), t.rsplit('.').next().unwrap())
    };
    let none_kid = format!("{}.{}.", b64(r#"{"alg":"none","kid":"rsa-1"}"#), b64(&payload));
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let key = EncodingKey::from_secret(RSA_PUB).unwrap();
        record_token(jsonwebtoken::encode(&header, &Value::Object(claims()), &key).unwrap())
    };
    let dup = |member: &str| {
        let text = payload.trim_end_matches('}').to_owned() + "," + member + "}";
        sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &text)
    };
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    let other_secret = record_token(
        vault_dev::sign_hs256(b"another-secret-another-secret-another", &Value::Object(claims())).unwrap(),
    );
    vec![
        ("missing header", None, Via::Hs256, "missing_token"),
        ("basic scheme", Some("Basic dXNlcjpwYXNz".into()), Via::Hs256, "invalid_token"),
        ("basic scheme carrying a valid token", Some(format!("Basic {valid}")), Via::Hs256, "invalid_token"),
        ("bearer alone", Some("Bearer".into()), Via::Hs256, "invalid_token"),
        ("bearer with nothing", Some("Bearer ".into()), Via::Hs256, "invalid_token"),
        ("garbage", bearer("garbage"), Via::Hs256, "invalid_token"),
        ("three dots", bearer("..."), Via::Hs256, "invalid_token"),
        ("two tokens", Some(format!("Bearer {valid} {valid}")), Via::Hs256, "invalid_token"),
        ("signature flipped", bearer(&format!("{signing_input}.{flipped_sig}")), Via::Hs256, "invalid_token"),
        ("signature removed", bearer(&format!("{signing_input}.")), Via::Hs256, "invalid_token"),
        ("signed with another secret", bearer(&other_secret), Via::Hs256, "invalid_token"),
        ("alg none unsigned", bearer(&none_unsigned), Via::Hs256, "invalid_token"),
        ("alg none signed", bearer(&none_signed), Via::Hs256, "invalid_token"),
        ("alg none with a known kid (jwks)", bearer(&none_kid), Via::Jwks, "invalid_token"),
        ("HS256 signed with the RSA public key (jwks)", bearer(&confused), Via::Jwks, "invalid_token"),
        ("HS256 token where JWKS is configured", bearer(&valid), Via::Jwks, "invalid_token"),
        ("unknown kid (jwks)", bearer(&rs256("rotated-away")), Via::Jwks, "invalid_token"),
        ("kid with path text (jwks)", bearer(&rs256("../../../etc/passwd")), Via::Jwks, "invalid_token"),
        ("kid with SQL text (jwks)", bearer(&rs256("' OR '1'='1' --")), Via::Jwks, "invalid_token"),
        ("kid with a URL (jwks)", bearer(&rs256("https://attacker.invalid/jwks.json")), Via::Jwks, "invalid_token"),
        (
            "kid with control characters (jwks)",
            bearer(&rs256("x\r\n{\"level\":\"ERROR\",\"forged\":true}")),
            Via::Jwks,
            "invalid_token",
        ),
        (
            "expired",
            bearer(&signed(|c| {
                c.insert("exp".into(), json!(now() - 3600));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "no exp",
            bearer(&signed(|c| {
                c.remove("exp");
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "nbf in the future",
            bearer(&signed(|c| {
                c.insert("nbf".into(), json!(now() + 3600));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "iat far in the future",
            bearer(&signed(|c| {
                c.insert("iat".into(), json!(now() + 365 * 86_400));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "iat not a number",
            bearer(&signed(|c| {
                c.insert("iat".into(), json!("yesterday"));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "wrong iss",
            bearer(&signed(|c| {
                c.insert("iss".into(), json!("https://attacker.invalid/"));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "wrong aud",
            bearer(&signed(|c| {
                c.insert("aud".into(), json!("another-api"));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "missing aud",
            bearer(&signed(|c| {
                c.remove("aud");
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "missing org_id",
            bearer(&signed(|c| {
                c.remove("org_id");
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "empty org_id",
            bearer(&signed(|c| {
                c.insert("org_id".into(), json!(""));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "org_id a number",
            bearer(&signed(|c| {
                c.insert("org_id".into(), json!(42));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "org_id an array",
            bearer(&signed(|c| {
                c.insert("org_id".into(), json!([ORG_A]));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "org_id null",
            bearer(&signed(|c| {
                c.insert("org_id".into(), Value::Null);
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "org_id with a control character",
            bearer(&signed(|c| {
                c.insert("org_id".into(), json!("org-a\n"));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "oversized token (> 16 KiB), validly signed",
            bearer(&signed(|c| {
                c.insert("padding".into(), json!("p".repeat(17 * 1024)));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        ("duplicate org_id", bearer(&dup(r#""org_id":"org-b""#)), Via::Hs256, "invalid_token"),
        ("duplicate exp", bearer(&dup(&format!(r#""exp":{}"#, now() + 86_400 * 365))), Via::Hs256, "invalid_token"),
        ("duplicate iss", bearer(&dup(r#""iss":"https://attacker.invalid/""#)), Via::Hs256, "invalid_token"),
        ("duplicate aud", bearer(&dup(r#""aud":"token-vault""#)), Via::Hs256, "invalid_token"),
        ("duplicate iat", bearer(&dup(&format!(r#""iat":{}"#, now()))), Via::Hs256, "invalid_token"),
        (
            "duplicate alg in the header",
            bearer(&sign_raw(r#"{"alg":"HS256","typ":"JWT","alg":"none"}"#, &payload)),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "exp a string",
            bearer(&signed(|c| {
                c.insert("exp".into(), json!((now() + 600).to_string()));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "nbf not a number",
            bearer(&signed(|c| {
                c.insert("nbf".into(), json!("later"));
            })),
            Via::Hs256,
            "invalid_token",
        ),
        (
            "client_id a number",
            bearer(&signed(|c| {
                c.insert("client_id".into(), json!(7));
            })),
            Via::Hs256,
            "invalid_token",
        ),
    ]
}

pub async fn tokens() {
    let mut rows = Vec::new();
    for (case, header, via, code) in token_cases() {
        let with = |c: Call| match &header {
            Some(h) => c.header("authorization", h),
            None => c,
        };
        let value = leaks::value("token-row");
        let calls = [
            ("create", with(Call::new("POST", "/vault/secrets").json(&json!({"name": "only-a", "value": value})))),
            ("get", with(Call::new("GET", "/vault/secrets/only-a"))),
            ("list", with(Call::new("GET", "/vault/secrets"))),
            ("delete", with(Call::new("DELETE", "/vault/secrets/only-a"))),
            ("get version", with(Call::new("GET", "/vault/secrets/only-a").query("version", "1"))),
            ("batch-get", with(Call::new("POST", "/vault/secrets/batch-get").json(&json!({"names": ["only-a"]})))),
            ("rollback", with(Call::new("POST", "/vault/secrets/only-a/rollback").json(&json!({"version": 1})))),
            ("audit", with(Call::new("GET", "/vault/audit"))),
            ("secret audit", with(Call::new("GET", "/vault/secrets/only-a/audit"))),
        ];
        for (op, call) in calls {
            rows.push(Row::new(format!("tokens/{case}/{op}"), call, 401, code).via(via));
        }
    }
    let bench = run("tokens", rows).await;
    // Unknown kids, whatever they carry, cost the identity provider at most one extra fetch a minute,
    // and their text reaches no log line.
    let fetches = bench.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(fetches <= 2, "the JWKS was fetched {fetches} times");
    let logs = logs();
    for kid_text in ["etc/passwd", "OR '1'='1'", "attacker.invalid", "forged"] {
        assert!(!logs.contains(kid_text), "token text reached the logs: {kid_text}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Isolation

fn lists(names: &'static [&'static str]) -> impl Fn(&Reply) -> Result<(), String> + Send + Sync {
    move |r: &Reply| {
        let got: Vec<&str> = r.json["secrets"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
            .unwrap_or_default();
        if got == names { Ok(()) } else { Err(format!("listed {got:?} (want {names:?})")) }
    }
}

/// Secrets only org-a has: no event of org-b may name them.
const ORG_A_ONLY: &[&str] = &["scoped", "c-flip", "c-user", "c-move"];

/// A batch read that returned no value, and refused each name with these codes.
fn batch_errors(codes: &'static [&'static str]) -> impl Fn(&Reply) -> Result<(), String> + Send + Sync {
    move |r: &Reply| {
        let got: Vec<&str> = r.json["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["code"].as_str()).collect())
            .unwrap_or_default();
        let values = r.json["secrets"].as_array().map_or(usize::MAX, Vec::len);
        if got == codes && values == 0 {
            Ok(())
        } else {
            Err(format!("errors {got:?}, {values} values (want {codes:?}, 0)"))
        }
    }
}

/// An audit page whose every event passes `keep` (and, for `|_| false`, one with no event at all).
fn events_only(
    keep: impl Fn(&Value) -> bool + Send + Sync + 'static,
) -> impl Fn(&Reply) -> Result<(), String> + Send + Sync {
    move |r: &Reply| {
        let events = r.json["events"].as_array().ok_or("no events array")?;
        match events.iter().find(|e| !keep(e)) {
            None => Ok(()),
            Some(e) => Err(format!("an event it must not see: {e}")),
        }
    }
}

pub async fn isolation() {
    let w = who();
    let v = || leaks::value("isolation");
    let mut rows =
        vec![
            // Across organizations: the same client id and user id in org-b reach nothing of org-a.
            Row::new("org/get", get(&w.x, "only-a"), 404, "not_found"),
            Row::new("org/delete", delete(&w.x, "only-a"), 404, "not_found"),
            Row::new("org/list", list(&w.x), 200, "").check(lists(&["key"])),
            Row::new("org/create makes org-b's own", put(&w.x, json!({"name": "only-a", "value": v()})), 201, "")
                .creates(ORG_B, &pk_app(ORG_B, "ca"), "only-a"),
            Row::new("org user/get", get(&w.xu1, "mine"), 404, "not_found"),
            Row::new("org user/delete", delete(&w.xu1, "mine"), 404, "not_found"),
            Row::new("org user/list", list(&w.xu1), 200, "").check(lists(&["key", "only-a"])),
            Row::new("org user/create makes org-b's own", put(&w.xu1, json!({"name": "mine", "value": v()})), 201, "")
                .creates(ORG_B, &pk_user(ORG_B, "ua1"), "mine"),
            // Across clients of one organization.
            Row::new("client/get", get(&w.b, "only-a"), 404, "not_found"),
            Row::new("client/delete", delete(&w.b, "only-a"), 404, "not_found"),
            Row::new("client/list", list(&w.b), 200, "").check(lists(&[])),
            Row::new("client/create makes cb's own", put(&w.b, json!({"name": "only-a", "value": v()})), 201, "")
                .creates(ORG_A, &pk_app(ORG_A, "cb"), "only-a"),
            // Across users of one client.
            Row::new("user/get", get(&w.u2, "mine"), 404, "not_found"),
            Row::new("user/delete", delete(&w.u2, "mine"), 404, "not_found"),
            Row::new("user/list", list(&w.u2), 200, "").check(lists(&[
                "c-flip",
                "c-keyid",
                "c-move",
                "c-old",
                "c-old-move",
                "c-swap-1",
                "c-swap-2",
                "c-swap-3",
                "c-swap-4",
                "c-tag",
                "c-trunc",
                "c-version",
                "c-version-3",
                "c-wrap",
                "only-a",
                "scoped",
            ])),
            Row::new("user/create makes ua2's own", put(&w.u2, json!({"name": "mine", "value": v()})), 201, "")
                .creates(ORG_A, &pk_user(ORG_A, "ua2"), "mine"),
            // A user token against app-level mutation: it only ever touches its own user-level secret.
            Row::new("user vs app/delete", delete(&w.u1, "only-a"), 404, "not_found"),
            Row::new(
                "user vs app/update makes ua1's own",
                put(&w.u1, json!({"name": "only-a", "value": v()})),
                201,
                "",
            )
            .creates(ORG_A, &pk_user(ORG_A, "ua1"), "only-a"),
            // An M2M token never reaches a user-level secret.
            Row::new("m2m vs user/get", get(&w.a, "mine"), 404, "not_found"),
            Row::new("m2m vs user/delete", delete(&w.a, "mine"), 404, "not_found"),
            // An admin never reaches a user-level secret, even naming the user as a client.
            Row::new("admin vs user/get", get(&w.adm, "mine").query("clientId", "ua1"), 404, "not_found"),
            Row::new("admin vs user/get own", get(&w.adm, "mine"), 404, "not_found"),
            Row::new("admin vs user/delete", delete(&w.adm, "mine").query("clientId", "ua1"), 404, "not_found"),
            Row::new("admin vs user/list", list(&w.adm).query("clientId", "ua1"), 200, "").check(lists(&[])),
            // clientId naming a client of another organization stays inside the admin's organization.
            Row::new("foreign clientId/get", get(&w.adm, "bsecret").query("clientId", "xb"), 404, "not_found"),
            Row::new("foreign clientId/delete", delete(&w.adm, "bsecret").query("clientId", "xb"), 404, "not_found"),
            Row::new("foreign clientId/list", list(&w.adm).query("clientId", "xb"), 200, "").check(lists(&[])),
            Row::new(
                "foreign clientId/create lands in the admin's organization",
                put(&w.adm, json!({"name": "bsecret", "value": v(), "clientId": "xb"})),
                201,
                "",
            )
            .creates(ORG_A, &pk_app(ORG_A, "xb"), "bsecret"),
            Row::new("foreign admin/get", get(&w.admb, "scoped").query("clientId", "ca"), 404, "not_found"),
            Row::new("foreign admin/delete", delete(&w.admb, "scoped").query("clientId", "ca"), 404, "not_found"),
            Row::new("foreign admin/list all", list(&w.admb).query("all", "true"), 200, "")
                .check(lists(&["key", "only-a", "bsecret"])),
            // clientId or all=true from a non-admin: refused and audited, nothing written.
            Row::new("non-admin clientId/get", get(&w.a, "only-a").query("clientId", "ca"), 403, "forbidden")
                .denied(ORG_A),
            Row::new("non-admin clientId/delete", delete(&w.a, "only-a").query("clientId", "ca"), 403, "forbidden")
                .denied(ORG_A),
            Row::new("non-admin clientId/list", list(&w.u1).query("clientId", "cb"), 403, "forbidden").denied(ORG_A),
            Row::new(
                "non-admin clientId/create",
                put(&w.b, json!({"name": "only-a", "value": v(), "clientId": "ca"})),
                403,
                "forbidden",
            )
            .denied(ORG_A),
            Row::new("non-admin all=true/list", list(&w.u1).query("all", "true"), 403, "forbidden").denied(ORG_A),
            // Scopes.
            Row::new("scope/get without the scope", get(&w.u1, "scoped"), 403, "insufficient_scope").denied(ORG_A),
            Row::new(
                "scope/admin without the scope",
                get(&w.adm, "scoped").query("clientId", "ca"),
                403,
                "insufficient_scope",
            )
            .denied(ORG_A),
            // Names that differ by case are different secrets.
            Row::new("case/get upper", get(&w.a, "ONLY-A"), 404, "not_found"),
            Row::new("case/get mixed", get(&w.a, "Only-a"), 404, "not_found"),
            Row::new("case/delete upper", delete(&w.a, "ONLY-A"), 404, "not_found"),
            Row::new("case/create upper is a new secret", put(&w.a, json!({"name": "ONLY-A", "value": v()})), 201, "")
                .creates(ORG_A, &pk_app(ORG_A, "ca"), "ONLY-A"),
        ];
    // The batch read, versions, rollback and the audit log keep the same walls. (These rows run first,
    // against the seeded fixture: the rows above create some of these names for other owners.)
    let batch = |tok: &str, names: &[&str]| {
        Call::new("POST", "/vault/secrets/batch-get").token(tok).json(&json!({"names": names}))
    };
    let rollback = |tok: &str, name: &str| {
        Call::new("POST", &format!("/vault/secrets/{name}/rollback")).token(tok).json(&json!({"version": 1}))
    };
    let audit = |tok: &str| Call::new("GET", "/vault/audit").token(tok);
    rows.splice(
        0..0,
        [
            Row::new("org/batch-get", batch(&w.x, &["only-a", "scoped"]), 200, "")
                .check(batch_errors(&["not_found", "not_found"])),
            Row::new("client/batch-get", batch(&w.b, &["only-a"]), 200, "").check(batch_errors(&["not_found"])),
            Row::new("user/batch-get", batch(&w.u2, &["mine"]), 200, "").check(batch_errors(&["not_found"])),
            Row::new("admin vs user/batch-get", batch(&w.adm, &["mine"]), 200, "").check(batch_errors(&["not_found"])),
            Row::new(
                "foreign clientId/batch-get",
                Call::new("POST", "/vault/secrets/batch-get")
                    .token(&w.adm)
                    .json(&json!({"names": ["bsecret"], "clientId": "xb"})),
                200,
                "",
            )
            .check(batch_errors(&["not_found"])),
            Row::new(
                "non-admin clientId/batch-get",
                Call::new("POST", "/vault/secrets/batch-get")
                    .token(&w.a)
                    .json(&json!({"names": ["only-a"], "clientId": "cb"})),
                403,
                "forbidden",
            )
            .denied(ORG_A),
            Row::new("scope/batch-get without the scope", batch(&w.u1, &["scoped"]), 200, "")
                .check(batch_errors(&["insufficient_scope"]))
                .denied(ORG_A),
            Row::new("org/get version", get(&w.x, "only-a").query("version", "1"), 404, "not_found"),
            Row::new("user/get version", get(&w.u2, "mine").query("version", "1"), 404, "not_found"),
            Row::new("org/rollback", rollback(&w.x, "scoped"), 404, "not_found"),
            Row::new("client/rollback", rollback(&w.b, "only-a"), 404, "not_found"),
            Row::new("user/rollback", rollback(&w.u2, "mine"), 404, "not_found"),
            Row::new("m2m vs user/rollback", rollback(&w.a, "mine"), 404, "not_found"),
            Row::new(
                "non-admin clientId/rollback",
                Call::new("POST", "/vault/secrets/only-a/rollback")
                    .token(&w.b)
                    .json(&json!({"version": 1, "clientId": "ca"})),
                403,
                "forbidden",
            )
            .denied(ORG_A),
            Row::new("org/audit", audit(&w.x), 200, "").check(events_only(|e| {
                e["actorClientId"] == "ca"
                    && e["tokenKind"] == "m2m"
                    && !ORG_A_ONLY.contains(&e["secret"].as_str().unwrap_or(""))
            })),
            Row::new("foreign admin/audit", audit(&w.admb), 200, "")
                .check(events_only(|e| !ORG_A_ONLY.contains(&e["secret"].as_str().unwrap_or("")))),
            Row::new("user/audit", audit(&w.u2), 200, "").check(events_only(|e| e["actorUserId"] == "ua2")),
            Row::new("user/audit naming another user", audit(&w.u2).query("userId", "ua1"), 200, "")
                .check(events_only(|_| false)),
            Row::new("client/audit", audit(&w.b), 200, "")
                .check(events_only(|e| e["actorClientId"] == "cb" && e["actorUserId"].is_null())),
            Row::new("org/secret audit", Call::new("GET", "/vault/secrets/scoped/audit").token(&w.admb), 200, "")
                .check(events_only(|_| false)),
        ],
    );
    // Unicode look-alikes of `only-a` are not names at all.
    for (label, name, raw) in [
        ("cyrillic o", "\u{43e}nly-a", "%D0%BEnly-a"),
        ("unicode hyphen", "only\u{2010}a", "only%E2%80%90a"),
        ("fullwidth o", "\u{ff4f}nly-a", "%EF%BD%8Fnly-a"),
        ("zero-width space", "only-a\u{200b}", "only-a%E2%80%8B"),
    ] {
        let path = format!("/vault/secrets/{raw}");
        rows.push(Row::new(
            format!("look-alike {label}/get"),
            Call::new("GET", &path).token(&w.a).path_param(name),
            400,
            "invalid_name",
        ));
        rows.push(Row::new(
            format!("look-alike {label}/delete"),
            Call::new("DELETE", &path).token(&w.a).path_param(name),
            400,
            "invalid_name",
        ));
        rows.push(Row::new(
            format!("look-alike {label}/create"),
            put(&w.a, json!({"name": name, "value": v()})),
            400,
            "invalid_name",
        ));
    }
    run("isolation", rows).await;
}

// ---------------------------------------------------------------------------------------------------------
// Input

fn raw_post(tok: &str, body: &str) -> Call {
    Call::new("POST", "/vault/secrets").token(tok).header("content-type", "application/json").raw_body(body)
}

pub async fn input() {
    let w = who();
    let a = &w.a;
    let pk = pk_app(ORG_A, "ca");
    let v = || leaks::value("input");
    let long = |n: usize| "n".repeat(n);
    let mut rows = Vec::new();
    // Name rules, in a create body.
    for (label, name) in [
        ("0 chars", String::new()),
        ("129 chars", long(129)),
        (".", ".".into()),
        ("..", "..".into()),
        ("-x", "-x".into()),
        ("_x", "_x".into()),
        ("a/b", "a/b".into()),
        ("a#b", "a#b".into()),
        ("%2F", "%2F".into()),
        ("NUL", "a\u{0}b".into()),
        ("non-ASCII", "caf\u{e9}".into()),
        ("space", "a b".into()),
        ("newline", "a\nb".into()),
    ] {
        rows.push(Row::new(
            format!("name {label}/create"),
            put(a, json!({"name": name, "value": v()})),
            400,
            "invalid_name",
        ));
    }
    rows.push(
        Row::new("name 1 char/create", put(a, json!({"name": "q", "value": v()})), 201, "").creates(ORG_A, &pk, "q"),
    );
    rows.push(Row::new("name 128 chars/create", put(a, json!({"name": long(128), "value": v()})), 201, "").creates(
        ORG_A,
        &pk,
        &long(128),
    ));
    // Name rules, in the path (as API Gateway decodes it into pathParameters).
    for (label, raw, decoded) in [
        ("0 chars", "", ""),
        (".", ".", "."),
        ("..", "..", ".."),
        ("-x", "-x", "-x"),
        ("a/b", "a%2Fb", "a/b"),
        ("%2F", "%252F", "%2F"),
        ("a#b", "a%23b", "a#b"),
        ("NUL", "a%00b", "a\u{0}b"),
        ("non-ASCII", "caf%C3%A9", "caf\u{e9}"),
    ] {
        let path = format!("/vault/secrets/{raw}");
        // (GET /vault/secrets/ is the listing route, not an item.)
        if !raw.is_empty() {
            rows.push(Row::new(
                format!("path name {label}/get"),
                Call::new("GET", &path).token(a).path_param(decoded),
                400,
                "invalid_name",
            ));
        }
        rows.push(Row::new(
            format!("path name {label}/delete"),
            Call::new("DELETE", &path).token(a).path_param(decoded),
            400,
            "invalid_name",
        ));
    }
    rows.push(Row::new("path name 129 chars/get", get(a, &long(129)), 400, "invalid_name"));
    rows.push(Row::new("path name 128 chars absent/get", get(a, &"m".repeat(128)), 404, "not_found"));
    rows.push(Row::new("path trailing slash/get", get(a, "only-a/").without_path_params(), 400, "invalid_name"));
    rows.push(Row::new("path trailing slash/delete", delete(a, "only-a/"), 400, "invalid_name"));
    rows.push(Row::new(
        "path double slash/get",
        Call::new("GET", "/vault/secrets//only-a").token(a).without_path_params(),
        400,
        "invalid_name",
    ));
    rows.push(Row::new(
        "path double slash/delete",
        Call::new("DELETE", "/vault/secrets//only-a").token(a).without_path_params(),
        400,
        "invalid_name",
    ));
    // Values.
    let marker = format!("{}-", leaks::VALUE_MARKER);
    let sized = |n: usize| format!("{marker}{}", "v".repeat(n - marker.len()));
    rows.push(
        Row::new("value 65,536 bytes/create", put(a, json!({"name": "v-max", "value": sized(65_536)})), 201, "")
            .creates(ORG_A, &pk, "v-max"),
    );
    rows.push(Row::new(
        "value 65,537 bytes/create",
        put(a, json!({"name": "v-over", "value": sized(65_537)})),
        413,
        "value_too_large",
    ));
    let wide = |chars: usize| format!("{marker}{}", "\u{e9}".repeat(chars));
    rows.push(
        Row::new(
            "value 65,536 bytes of 2-byte characters/create",
            put(a, json!({"name": "v-wide", "value": wide((65_536 - marker.len()) / 2)})),
            201,
            "",
        )
        .creates(ORG_A, &pk, "v-wide"),
    );
    rows.push(Row::new(
        "value 65,537 bytes of 2-byte characters/create",
        put(a, json!({"name": "v-wide-over", "value": format!("{}x", wide((65_536 - marker.len()) / 2))})),
        413,
        "value_too_large",
    ));
    rows.push(Row::new("value empty/create", put(a, json!({"name": "v-empty", "value": ""})), 400, "invalid_value"));
    rows.push(Row::new("value not a string/create", put(a, json!({"name": "v", "value": [v()]})), 400, "invalid_json"));
    // Bodies.
    rows.push(Row::new(
        "body not UTF-8/create",
        Call::new("POST", "/vault/secrets")
            .token(a)
            .header("content-type", "application/json")
            .binary_body(b"{\"name\":\"nu\",\"value\":\"\xff\xfe\"}"),
        400,
        "invalid_json",
    ));
    rows.push(Row::new(
        "body over 1 MiB/create",
        raw_post(a, &format!(r#"{{"name":"big","value":"{}","scope":["{}"]}}"#, v(), "s".repeat(1024 * 1024))),
        413,
        "body_too_large",
    ));
    rows.push(Row::new(
        "body nested 1,000 deep/create",
        raw_post(
            a,
            &format!(r#"{{"name":"deep","value":"{}","scope":{}{}}}"#, v(), "[".repeat(1000), "]".repeat(1000)),
        ),
        400,
        "invalid_json",
    ));
    rows.push(Row::new(
        "body duplicate value key/create",
        raw_post(a, &format!(r#"{{"name":"dup","value":"{}","value":"{}"}}"#, v(), v())),
        400,
        "invalid_json",
    ));
    rows.push(Row::new(
        "body duplicate name key/create",
        raw_post(a, &format!(r#"{{"name":"dup","value":"{}","name":"only-a"}}"#, v())),
        400,
        "invalid_json",
    ));
    rows.push(Row::new("body empty/create", raw_post(a, ""), 400, "invalid_json"));
    rows.push(Row::new("body a JSON array/create", raw_post(a, "[]"), 400, "invalid_json"));
    rows.push(Row::new("body JSON null/create", raw_post(a, "null"), 400, "invalid_json"));
    rows.push(Row::new("body truncated/create", raw_post(a, r#"{"name":"t","value":"#), 400, "invalid_json"));
    rows.push(Row::new(
        "body unknown field/create",
        put(a, json!({"name": "u", "value": v(), "owner": "someone-else"})),
        400,
        "invalid_json",
    ));
    // Scopes.
    let scopes = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    rows.push(Row::new(
        "scope 21 entries/create",
        put(a, json!({"name": "sc", "value": v(), "scope": scopes(21)})),
        400,
        "invalid_scope",
    ));
    rows.push(
        Row::new(
            "scope 20 entries/create",
            put(a, json!({"name": "sc20", "value": v(), "scope": scopes(20)})),
            201,
            "",
        )
        .creates(ORG_A, &pk, "sc20"),
    );
    for (label, scope) in
        [("space", "a b"), ("slash", "a/b"), ("non-ASCII", "caf\u{e9}"), ("empty", ""), ("65 chars", &"x".repeat(65))]
    {
        rows.push(Row::new(
            format!("scope with {label}/create"),
            put(a, json!({"name": "sc", "value": v(), "scope": [scope]})),
            400,
            "invalid_scope",
        ));
    }
    rows.push(Row::new(
        "scope not an array/create",
        put(a, json!({"name": "sc", "value": v(), "scope": "payments"})),
        400,
        "invalid_json",
    ));
    // Expiry.
    for (label, at, code) in [
        ("in the past", json!("2020-01-01T00:00:00Z"), "invalid_expires_at"),
        ("in year 10000", json!("10000-01-01T00:00:00Z"), "invalid_expires_at"),
        ("without a zone", json!("2099-01-01T00:00:00"), "invalid_expires_at"),
        ("a date only", json!("2099-01-01"), "invalid_expires_at"),
        ("as a number", json!(4_102_444_800_i64), "invalid_json"),
    ] {
        rows.push(Row::new(
            format!("expiresAt {label}/create"),
            put(a, json!({"name": "ex", "value": v(), "expiresAt": at})),
            400,
            code,
        ));
    }
    // Content types.
    let body = json!({"name": "ct", "value": v()}).to_string();
    for (label, ct) in
        [("text/plain", Some("text/plain")), ("missing", None), ("application/jsonx", Some("application/jsonx"))]
    {
        let mut call = Call::new("POST", "/vault/secrets").token(a).raw_body(&body);
        if let Some(ct) = ct {
            call = call.header("content-type", ct);
        }
        rows.push(Row::new(format!("content-type {label}/create"), call, 415, "unsupported_media_type"));
    }
    rows.push(
        Row::new(
            "content-type with charset/create",
            Call::new("POST", "/vault/secrets")
                .token(a)
                .header("content-type", "application/json; charset=utf-8")
                .raw_body(&body),
            201,
            "",
        )
        .creates(ORG_A, &pk, "ct"),
    );
    // Methods.
    for (label, method, path) in [
        ("PUT collection", "PUT", "/vault/secrets"),
        ("PATCH item", "PATCH", "/vault/secrets/only-a"),
        ("HEAD collection", "HEAD", "/vault/secrets"),
        ("OPTIONS item", "OPTIONS", "/vault/secrets/only-a"),
    ] {
        rows.push(Row::new(format!("method {label}"), Call::new(method, path).token(a), 405, "method_not_allowed"));
    }
    // Query strings.
    rows.push(Row::new("query unknown/get", get(a, "only-a").query("force", "1"), 400, "invalid_query"));
    rows.push(Row::new(
        "query unknown/create",
        put(a, json!({"name": "q2", "value": v()})).query("x", "1"),
        400,
        "invalid_query",
    ));
    rows.push(Row::new("query unknown/delete", delete(a, "only-a").query("cascade", "true"), 400, "invalid_query"));
    rows.push(Row::new("query repeated/list", list(a).query("limit", "1").query("limit", "2"), 400, "invalid_query"));
    for (label, limit) in [("0", "0"), ("1001", "1001"), ("-1", "-1"), ("ten", "ten"), ("huge", "99999999999999999999")]
    {
        rows.push(Row::new(format!("limit {label}/list"), list(a).query("limit", limit), 400, "invalid_limit"));
    }
    rows.push(Row::new("nextToken garbage/list", list(a).query("nextToken", "garbage!"), 400, "invalid_next_token"));
    rows.push(Row::new(
        "nextToken forged/list",
        list(a).query("nextToken", &URL_SAFE_NO_PAD.encode(br#"{"o":9,"a":"x"}"#)),
        400,
        "invalid_next_token",
    ));
    rows.push(Row::new(
        "clientId with a control character/get",
        get(&w.adm, "only-a").query("clientId", "c\u{1}a"),
        400,
        "invalid_client_id",
    ));
    rows.push(Row::new(
        "clientId 257 chars/list",
        list(&w.adm).query("clientId", &"c".repeat(257)),
        400,
        "invalid_client_id",
    ));
    rows.push(Row::new(
        "clientId empty/create",
        put(&w.adm, json!({"name": "ce", "value": v(), "clientId": ""})),
        400,
        "invalid_client_id",
    ));
    // Batch reads, versions, preconditions, rollback and audit queries: each bad input is a 400 that
    // writes nothing.
    let batch_raw = |body: &str| {
        Call::new("POST", "/vault/secrets/batch-get").token(a).header("content-type", "application/json").raw_body(body)
    };
    let many: Vec<String> = (0..21).map(|i| format!("n{i}")).collect();
    let deep = "[".repeat(1000) + &"]".repeat(1000);
    for (label, body, code) in [
        ("no names", json!({"names": []}).to_string(), "invalid_names"),
        ("21 names", json!({ "names": many }).to_string(), "invalid_names"),
        ("a bad name", json!({"names": ["ok", "a/b"]}).to_string(), "invalid_name"),
        ("names not an array", json!({"names": "only-a"}).to_string(), "invalid_json"),
        ("names null", json!({"names": null}).to_string(), "invalid_json"),
        ("clientId null", json!({"names": ["only-a"], "clientId": null}).to_string(), "invalid_json"),
        ("unknown field", json!({"names": ["only-a"], "value": "x"}).to_string(), "invalid_json"),
        ("duplicate key", r#"{"names":["only-a"],"names":["scoped"]}"#.to_owned(), "invalid_json"),
        ("nested 1000 deep", format!(r#"{{"names":{deep}}}"#), "invalid_json"),
        ("not JSON", "names=only-a".to_owned(), "invalid_json"),
    ] {
        rows.push(Row::new(format!("batch-get {label}"), batch_raw(&body), 400, code));
    }
    rows.push(Row::new(
        "batch-get as text/plain",
        Call::new("POST", "/vault/secrets/batch-get").token(a).header("content-type", "text/plain").raw_body("{}"),
        415,
        "unsupported_media_type",
    ));
    for (label, version) in [("0", "0"), ("-1", "-1"), ("1.5", "1.5"), ("+1", "+1"), ("text", "one"), ("empty", "")] {
        rows.push(Row::new(
            format!("get version {label}"),
            get(a, "only-a").query("version", version),
            400,
            "invalid_version",
        ));
    }
    rows.push(Row::new("get version 2 (not kept)", get(a, "only-a").query("version", "2"), 404, "version_not_found"));
    let rollback_raw = |body: &str| {
        Call::new("POST", "/vault/secrets/only-a/rollback")
            .token(a)
            .header("content-type", "application/json")
            .raw_body(body)
    };
    for (label, body, code) in [
        ("version 0", r#"{"version":0}"#, "invalid_version"),
        ("version -1", r#"{"version":-1}"#, "invalid_json"),
        ("version as text", r#"{"version":"1"}"#, "invalid_json"),
        ("version 1.5", r#"{"version":1.5}"#, "invalid_json"),
        ("version over u64", r#"{"version":18446744073709551616}"#, "invalid_json"),
        ("no version", r#"{}"#, "invalid_json"),
        ("unknown field", r#"{"version":1,"value":"x"}"#, "invalid_json"),
    ] {
        rows.push(Row::new(format!("rollback {label}"), rollback_raw(body), 400, code));
    }
    rows.push(Row::new("rollback to a version not kept", rollback_raw(r#"{"version":9}"#), 404, "version_not_found"));
    let update = || put(a, json!({"name": "only-a", "value": v()}));
    for (label, header, value) in [
        ("If-Match unquoted text", "if-match", "abc"),
        ("If-Match half-quoted", "if-match", "\"1"),
        ("If-Match weak", "if-match", "W/\"1\""),
        ("If-Match list", "if-match", "\"1\", \"2\""),
        ("If-Match 20 digits", "if-match", "\"99999999999999999999\""),
        ("If-None-Match a tag", "if-none-match", "\"1\""),
    ] {
        rows.push(Row::new(format!("create {label}"), update().header(header, value), 400, "invalid_precondition"));
    }
    rows.push(Row::new("create If-Match stale", update().header("if-match", "\"7\""), 412, "version_conflict"));
    rows.push(Row::new(
        "create If-None-Match on a live secret",
        update().header("if-none-match", "*"),
        412,
        "version_conflict",
    ));
    rows.push(Row::new("delete If-Match stale", delete(a, "only-a").header("if-match", "2"), 412, "version_conflict"));
    let audit = || Call::new("GET", "/vault/audit").token(&w.adm);
    let at = |days: i64| {
        (time::OffsetDateTime::now_utc() - time::Duration::days(days))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    for (label, call, code) in [
        ("from after to", audit().query("from", &at(1)).query("to", &at(2)), "invalid_time_range"),
        ("93 days", audit().query("from", &at(93)), "invalid_time_range"),
        ("from without a zone", audit().query("from", "2026-11-01T00:00:00"), "invalid_time_range"),
        ("to in year 10000", audit().query("to", "10000-01-01T00:00:00Z"), "invalid_time_range"),
        ("unknown event", audit().query("event", "vault.secret.stolen"), "invalid_query"),
        ("bad secret name", audit().query("secret", "a/b"), "invalid_name"),
        ("limit 0", audit().query("limit", "0"), "invalid_limit"),
        ("limit 1001", audit().query("limit", "1001"), "invalid_limit"),
        ("garbage nextToken", audit().query("nextToken", "garbage"), "invalid_next_token"),
        (
            "repeated parameter",
            audit().query("event", "vault.secret.created").query("event", "vault.secret.deleted"),
            "invalid_query",
        ),
        ("unknown parameter", audit().query("orgId", ORG_B), "invalid_query"),
    ] {
        rows.push(Row::new(format!("audit {label}"), call, 400, code));
    }
    run("input", rows).await;
}

// ---------------------------------------------------------------------------------------------------------
// Crypto

pub async fn crypto() {
    let w = who();
    let pk = pk_app(ORG_A, "ca");
    let get_a = |name: &str| get(&w.a, name);
    let rows = vec![
        Row::new(
            "retained version: ciphertext byte flipped",
            get_a("c-old").query("version", "1"),
            500,
            "integrity_error",
        )
        .tamper(Tamper::Flip { pk: pk.clone(), name: "c-old#v1", attr: "ciphertext", at: 14 })
        .integrity(ORG_A),
        Row::new(
            "retained version: ciphertext swapped with another secret's version",
            get_a("c-old-move").query("version", "1"),
            500,
            "integrity_error",
        )
        .tamper(Tamper::Swap { pk: pk.clone(), name: "c-old-move#v1", donor: "c-old#v1", attr: "ciphertext" })
        .integrity(ORG_A),
        Row::new("ciphertext body byte flipped", get_a("c-flip"), 500, "integrity_error")
            .tamper(Tamper::Flip { pk: pk.clone(), name: "c-flip", attr: "ciphertext", at: 14 })
            .integrity(ORG_A),
        Row::new("ciphertext tag byte flipped", get_a("c-tag"), 500, "integrity_error")
            .tamper(Tamper::Flip { pk: pk.clone(), name: "c-tag", attr: "ciphertext", at: -1 })
            .integrity(ORG_A),
        Row::new("wrapped key byte flipped", get_a("c-wrap"), 500, "integrity_error")
            .tamper(Tamper::Flip { pk: pk.clone(), name: "c-wrap", attr: "wrappedKey", at: 20 })
            .integrity(ORG_A),
        Row::new("ciphertext truncated", get_a("c-trunc"), 500, "integrity_error")
            .tamper(Tamper::Truncate { pk: pk.clone(), name: "c-trunc", len: 10 })
            .integrity(ORG_A),
        Row::new("ciphertext moved to another name", get_a("c-moved"), 500, "integrity_error")
            .tamper(Tamper::Copy { from_pk: pk.clone(), from: "c-move", to_pk: pk.clone(), to: "c-moved" })
            .integrity(ORG_A),
        Row::new("ciphertext moved to another client", get(&w.b, "c-move"), 500, "integrity_error")
            .tamper(Tamper::Copy { from_pk: pk.clone(), from: "c-move", to_pk: pk_app(ORG_A, "cb"), to: "c-move" })
            .integrity(ORG_A),
        Row::new("ciphertext moved to another user", get(&w.u2, "c-user"), 500, "integrity_error")
            .tamper(Tamper::Copy {
                from_pk: pk_user(ORG_A, "ua1"),
                from: "c-user",
                to_pk: pk_user(ORG_A, "ua2"),
                to: "c-user",
            })
            .integrity(ORG_A),
        Row::new("ciphertext moved from a user to the app level", get_a("c-user"), 500, "integrity_error")
            .tamper(Tamper::Copy { from_pk: pk_user(ORG_A, "ua1"), from: "c-user", to_pk: pk.clone(), to: "c-user" })
            .integrity(ORG_A),
        Row::new("ciphertext moved to another organization", get(&w.x, "c-move"), 500, "integrity_error")
            .tamper(Tamper::Copy { from_pk: pk.clone(), from: "c-move", to_pk: pk_app(ORG_B, "ca"), to: "c-move" })
            .integrity(ORG_B),
        Row::new("wrapped data key swapped between two secrets", get_a("c-swap-1"), 500, "integrity_error")
            .tamper(Tamper::Swap { pk: pk.clone(), name: "c-swap-1", donor: "c-swap-2", attr: "wrappedKey" })
            .integrity(ORG_A),
        Row::new("ciphertext swapped between two secrets", get_a("c-swap-3"), 500, "integrity_error")
            .tamper(Tamper::Swap { pk: pk.clone(), name: "c-swap-3", donor: "c-swap-4", attr: "ciphertext" })
            .integrity(ORG_A),
        Row::new("key id changed", get_a("c-keyid"), 500, "integrity_error")
            .tamper(Tamper::Set {
                pk: pk.clone(),
                name: "c-keyid",
                attr: "keyId",
                value: AttributeValue::S("mk-000000000000".into()),
            })
            .integrity(ORG_A),
        // Format 1 binds no access mode or upstream: a format-2 envelope relabelled as 1 fails to open.
        Row::new("format version changed", get_a("c-version"), 500, "integrity_error")
            .tamper(Tamper::Set {
                pk: pk.clone(),
                name: "c-version",
                attr: "encVersion",
                value: AttributeValue::N("1".into()),
            })
            .integrity(ORG_A),
        Row::new("format version unknown", get_a("c-version-3"), 500, "integrity_error")
            .tamper(Tamper::Set {
                pk: pk.clone(),
                name: "c-version-3",
                attr: "encVersion",
                value: AttributeValue::N("3".into()),
            })
            .integrity(ORG_A),
        Row::new("vault started with a different master key", get_a("only-a"), 500, "integrity_error")
            .via(Via::OtherMasterKey)
            .integrity(ORG_A),
        Row::new("different master key, user-level secret", get(&w.u1, "mine"), 500, "integrity_error")
            .via(Via::OtherMasterKey)
            .integrity(ORG_A),
    ];
    run("crypto", rows).await;
}
