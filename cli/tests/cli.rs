//! The built `tvault` binary against the local stack: every command, every exit code, values that
//! round-trip exactly, and no value on a command line.
//!
//! Ignored by default: `scripts/test` starts the stack and runs these with `--ignored`, given
//! `VAULT_SMOKE_URL` (the API) and `VAULT_SMOKE_TOKENS` (the tokens file `scripts/dev` wrote).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

const TVAULT: &str = env!("CARGO_BIN_EXE_tvault");

fn setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set; run this through scripts/test"))
}

fn tokens() -> HashMap<String, String> {
    let text = std::fs::read_to_string(setting("VAULT_SMOKE_TOKENS")).unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// A name no other run or test uses.
fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{nanos}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A user's environment for tvault: its own config directory, the stack's URL, and `token` (if any).
struct User {
    home: PathBuf,
    token: Option<String>,
}

impl User {
    fn new(token: Option<&str>) -> Self {
        let home = std::env::temp_dir().join(unique("tvault-home"));
        std::fs::create_dir_all(&home).unwrap();
        Self { home, token: token.map(str::to_owned) }
    }

    fn m2m() -> Self {
        Self::new(Some(&tokens()["M2M_TOKEN"]))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(TVAULT);
        cmd.args(args)
            .env_remove("TOKEN_VAULT_TOKEN")
            .env_remove("TOKEN_VAULT_TOKEN_FILE")
            .env_remove("TOKEN_VAULT_PROXY_URL")
            .env("TOKEN_VAULT_URL", setting("VAULT_SMOKE_URL"))
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("HOME", &self.home);
        if let Some(t) = &self.token {
            cmd.env("TOKEN_VAULT_TOKEN", t);
        }
        cmd
    }

    /// Runs tvault with `stdin` as its input.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> Output {
        let out = self.run(args, stdin);
        assert_eq!(out.status.code(), Some(0), "tvault {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_slice(&self.ok(&all, b"").stdout).unwrap()
    }
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Newlines, tabs, a carriage return, and non-ASCII text: what must come back byte for byte.
const AWKWARD: &str = "line one\nligne deux: é ü ß\r\n日本語 🔑\ttab  \n\n";

#[test]
#[ignore = "needs the local stack; run by scripts/test"]
fn values_round_trip_exactly_through_put_get_and_run() {
    let u = User::m2m();
    let name = unique("cli_awkward");
    let out = u.ok(&["put", &name], AWKWARD.as_bytes());
    assert!(stderr(&out).contains("Created"), "{}", stderr(&out));
    assert!(stderr(&out).contains("ends with a newline"), "the trailing newline is pointed out");
    assert_eq!(u.ok(&["get", &name], b"").stdout, AWKWARD.as_bytes());

    // From a file, and through `run` into a program's environment.
    let file = u.home.join("value.txt");
    std::fs::write(&file, AWKWARD.replace("one", "two")).unwrap();
    u.ok(&["put", &name, "--from-file", file.to_str().unwrap()], b"");
    assert_eq!(u.ok(&["get", &name], b"").stdout, AWKWARD.replace("one", "two").as_bytes());
    assert_eq!(u.ok(&["get", &name, "--version", "1"], b"").stdout, AWKWARD.as_bytes());
    let env_arg = format!("THE_KEY={name}");
    let out = u.ok(&["run", "--env", &env_arg, "--", "sh", "-c", "printf %s \"$THE_KEY\""], b"");
    assert_eq!(out.stdout, AWKWARD.replace("one", "two").as_bytes(), "run passes the exact value");
    assert!(out.stderr.is_empty(), "run prints nothing of its own: {}", stderr(&out));

    // --strip-newline drops the one newline `echo` adds; empty and non-UTF-8 values are refused.
    u.ok(&["put", &name, "--strip-newline"], b"sk-live-123\n");
    assert_eq!(u.ok(&["get", &name], b"").stdout, b"sk-live-123");
    let out = u.run(&["put", &name], b"\xff\xfe binary");
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("not UTF-8"), "{}", stderr(&out));
    assert_eq!(code(&u.run(&["put", &name], b"")), Some(5));
    u.ok(&["rm", &name], b"");
}

/// The command line of a running process, from /proc.
fn cmdline(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

#[test]
#[ignore = "needs the local stack; run by scripts/test"]
fn no_value_is_ever_on_a_command_line() {
    let u = User::m2m();
    let name = unique("cli_ps");
    let value = format!("sk-never-in-ps-{}", std::process::id());
    // A value given as an argument is a usage error, and nothing is stored.
    let out = u.run(&["put", &name, &value], b"");
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&value) || stderr(&out).contains("unexpected argument"), "{}", stderr(&out));
    assert_eq!(code(&u.run(&["get", &name], b"")), Some(3), "nothing was stored");

    // While `put` waits for its value, its command line (what `ps` shows, and what a shell's history
    // holds) has no value in it; it arrives over stdin.
    let mut child =
        u.command(&["put", &name]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // (Polled until the process shows its command line; the assertion is on what it shows.)
    let mut seen = cmdline(child.id());
    for _ in 0..500 {
        if !seen.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        seen = cmdline(child.id());
    }
    assert!(seen.windows(4).any(|w| w == b"put\0"), "read the process's command line: {seen:?}");
    child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(!seen.windows(value.len()).any(|w| w == value.as_bytes()));

    // `run` hands the value to the program's environment, not its arguments.
    let env_arg = format!("K={name}");
    let out =
        u.ok(&["run", "--env", &env_arg, "--", "sh", "-c", "cat /proc/$$/cmdline; printf '\\n%s' \"${#K}\""], b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains(&value), "{text}");
    assert!(text.ends_with(&format!("\n{}", value.len())), "the program got the value: {text}");
    // And no output of tvault's own carries it.
    for args in [vec!["ls"], vec!["history", name.as_str()], vec!["audit", name.as_str()]] {
        let out = u.ok(&args, b"");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(&value), "{args:?}");
    }
    u.ok(&["rm", &name], b"");
}

#[test]
#[ignore = "needs the local stack; run by scripts/test"]
fn every_failure_has_its_exit_code_and_the_apis_message() {
    let t = tokens();
    let u = User::m2m();
    let name = unique("cli_codes");
    u.ok(&["put", &name], b"v1");

    // 3: not found (a secret, a version).
    let out = u.run(&["get", &unique("cli_absent")], b"");
    assert_eq!(code(&out), Some(3));
    assert!(stderr(&out).contains("(not_found, HTTP 404)"), "{}", stderr(&out));
    assert_eq!(code(&u.run(&["get", &name, "--version", "9"], b"")), Some(3));
    // --json puts the error on stdout, as JSON.
    let out = u.run(&["get", &unique("cli_absent"), "--json"], b"");
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (code(&out), &error["error"]["code"], &error["error"]["exitCode"]),
        (Some(3), &json!("not_found"), &json!(3))
    );

    // 4: denied (no token, a bad token, a token without the secret's scope, a non-admin naming a client).
    let out = User::new(None).run(&["ls"], b"");
    assert_eq!(code(&out), Some(4));
    assert!(stderr(&out).contains("tvault login"), "{}", stderr(&out));
    let out = User::new(Some("not-a-jwt")).run(&["ls"], b"");
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not-a-jwt"), "the token is never echoed");
    // The M2M token (and the user's) hold the scope `payments`, not `ops`.
    let scoped = unique("cli_scoped");
    u.ok(&["put", &scoped, "--scope", "ops"], b"v1");
    let out = u.run(&["get", &scoped], b"");
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("insufficient_scope"), "{}", stderr(&out));
    let user = User::new(Some(&t["USER_TOKEN"]));
    assert_eq!(code(&user.run(&["get", &scoped], b"")), Some(4), "a user of the client, without the scope");
    u.ok(&["rm", &scoped], b"");
    assert_eq!(code(&u.run(&["ls", "--client", "someone-else"], b"")), Some(4));

    // 5: invalid input, refused by the vault (a bad name, a bad upstream) or by tvault (a bad date).
    let out = u.run(&["put", "bad name!"], b"v");
    assert_eq!(code(&out), Some(5));
    assert!(stderr(&out).contains("invalid_name"), "{}", stderr(&out));
    assert_eq!(code(&u.run(&["put", &name, "--use-only", "--upstream", "ftp://x"], b"v")), Some(5));
    assert_eq!(code(&u.run(&["get", ".."], b"")), Some(5), "a dot segment never reaches another route");

    // 6: unavailable.
    let mut down = u.command(&["ls"]);
    let out = down.env("TOKEN_VAULT_URL", "http://127.0.0.1:9").output().unwrap();
    assert_eq!(code(&out), Some(6));
    assert!(stderr(&out).contains("could not reach the vault at http://127.0.0.1:9"), "{}", stderr(&out));

    // 7: a precondition that does not hold.
    let out = u.run(&["put", &name, "--if-absent"], b"v2");
    assert_eq!(code(&out), Some(7), "{}", stderr(&out));
    assert_eq!(code(&u.run(&["put", &name, "--if-match", "5"], b"v2")), Some(7));
    u.ok(&["put", &name, "--if-match", "1"], b"v2");

    // 1: the vault failed (a 500): its message, and the generic code.
    let failing = TcpListener::bind("127.0.0.1:0").unwrap();
    let failing_url = format!("http://{}", failing.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = failing.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        let body =
            r#"{"success":false,"error":{"code":"internal_error","message":"Something went wrong on our side."}}"#;
        write!(stream, "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    });
    let out = u.command(&["ls"]).env("TOKEN_VAULT_URL", &failing_url).output().unwrap();
    server.join().unwrap();
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Something went wrong on our side. (internal_error, HTTP 500)"), "{}", stderr(&out));

    // 2: usage (a missing argument, an unknown flag, no URL at all).
    assert_eq!(code(&u.run(&["get"], b"")), Some(2));
    assert_eq!(code(&u.run(&["ls", "--bogus"], b"")), Some(2));
    let out = u.command(&["ls"]).env_remove("TOKEN_VAULT_URL").output().unwrap();
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("TOKEN_VAULT_URL"), "{}", stderr(&out));
    u.ok(&["rm", &name], b"");
}

#[test]
#[ignore = "needs the local stack; run by scripts/test"]
fn listing_history_rollback_removal_and_audit() {
    let u = User::m2m();
    let name = unique("cli_life");
    u.ok(&["put", &name, "--scope", "payments", "--scope", "a", "--expires-in", "30d"], b"first");
    u.ok(&["put", &name, "--scope", "payments", "--expires-at", "2099-01-31"], b"second");

    // ls: a table for people, JSON for scripts, never a value.
    let table = String::from_utf8(u.ok(&["ls"], b"").stdout).unwrap();
    assert!(table.starts_with("NAME "), "{table}");
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" 2 ") && row.contains("readable") && row.contains("2099-01-31T00:00:00Z"), "{row}");
    assert!(!table.contains("second"));
    let listed = u.json(&["ls"]);
    let entry = listed["secrets"].as_array().unwrap().iter().find(|s| s["name"] == name.as_str()).unwrap().clone();
    assert_eq!((&entry["version"], &entry["scope"]), (&json!(2), &json!(["payments"])));
    assert!(entry.get("value").is_none());

    // history and rollback.
    let history = u.json(&["history", &name]);
    let versions: Vec<u64> =
        history["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [2, 1]);
    let table = String::from_utf8(u.ok(&["history", &name], b"").stdout).unwrap();
    assert!(table.lines().nth(1).unwrap().contains("current"), "{table}");
    let out = u.ok(&["rollback", &name, "1"], b"");
    assert!(stderr(&out).contains("Restored version 1") && stderr(&out).contains("as version 3"), "{}", stderr(&out));
    assert_eq!(u.ok(&["get", &name], b"").stdout, b"first");
    assert_eq!(code(&u.run(&["rollback", &name, "9"], b"")), Some(3));

    // audit: the reads above, newest first.
    let events = u.json(&["audit", &name, "--since", "1h"]);
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"vault.secret.retrieved"), "newest first: {kinds:?}");
    assert!(kinds.contains(&"vault.secret.rolled_back") && kinds.contains(&"vault.secret.created"), "{kinds:?}");
    let only = u.json(&["audit", &name, "--event", "updated", "--limit", "1"]);
    assert_eq!(only["events"].as_array().unwrap().len(), 1);
    assert_eq!(only["events"][0]["event"], "vault.secret.updated");
    let table = String::from_utf8(u.ok(&["audit", &name], b"").stdout).unwrap();
    assert!(table.starts_with("TIME ") && table.contains("retrieved"), "{table}");
    assert_eq!(code(&u.run(&["audit", "--since", "1year"], b"")), Some(2));

    // rm: the secret and its versions are gone.
    u.ok(&["rm", &name], b"");
    assert_eq!(code(&u.run(&["get", &name], b"")), Some(3));
    assert_eq!(code(&u.run(&["history", &name], b"")), Some(3));
    assert_eq!(code(&u.run(&["rm", &name], b"")), Some(3));
}

#[test]
#[ignore = "needs the local stack; run by scripts/test"]
fn run_reads_once_execs_and_refuses_to_start_without_every_secret() {
    let u = User::m2m();
    let (a, b) = (unique("cli_run_a"), unique("cli_run_b"));
    u.ok(&["put", &a], b"alpha");
    u.ok(&["put", &b], b"beta");
    let (ea, eb) = (format!("A={a}"), format!("B={b}"));
    let out = u.ok(&["run", "--env", &ea, "--env", &eb, "--", "sh", "-c", "printf '%s:%s' \"$A\" \"$B\""], b"");
    assert_eq!(out.stdout, b"alpha:beta");
    // The program gets its keys, not the vault token that could read every other secret.
    let out = u.ok(&["run", "--env", &ea, "--", "sh", "-c", "printf '%s' \"${TOKEN_VAULT_TOKEN:-none}\""], b"");
    assert_eq!(out.stdout, b"none");
    // The program's exit status is tvault's.
    assert_eq!(code(&u.run(&["run", "--env", &ea, "--", "sh", "-c", "exit 42"], b"")), Some(42));
    // A missing secret: the program never starts.
    let marker = u.home.join("started");
    let missing = format!("C={}", unique("cli_run_missing"));
    let script = format!("touch {}", marker.display());
    let out = u.run(&["run", "--env", &ea, "--env", &missing, "--", "sh", "-c", &script], b"");
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(!marker.exists(), "the program was not started");
    // A use-only secret is never handed to a program.
    let used = unique("cli_run_use_only");
    u.ok(&["put", &used, "--use-only", "--upstream", "https://api.openai.com/v1"], b"sk-use-only");
    let out = u.run(&["run", "--env", &format!("K={used}"), "--", "sh", "-c", &script], b"");
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("use_only") && !marker.exists());
    // A program that cannot be started.
    assert_eq!(code(&u.run(&["run", "--env", &ea, "--", "/nonexistent/program"], b"")), Some(127));
    assert_eq!(code(&u.run(&["run", "--env", "1BAD=x", "--", "true"], b"")), Some(2));
    for n in [&a, &b, &used] {
        u.ok(&["rm", n], b"");
    }
}

/// An upstream on loopback that answers every request with the Authorization header it received.
fn echo_upstream() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut auth = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if line.to_ascii_lowercase().starts_with("authorization:") {
                auth = line["authorization:".len()..].trim().to_owned();
            }
        }
        let body = json!({"authorization": auth}).to_string();
        let mut stream = stream;
        write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    });
    (port, handle)
}

#[tokio::test]
#[ignore = "needs the local stack; run by scripts/test"]
async fn proxy_env_points_an_sdk_at_the_proxy() {
    let u = User::m2m();
    let name = unique("cli_proxy");
    let (port, upstream) = echo_upstream();
    let base = format!("http://127.0.0.1:{port}/v1");
    u.ok(
        &["put", &name, "--use-only", "--upstream", &base, "--method", "post", "--path", "/chat/completions"],
        b"sk-injected-key",
    );
    let out = String::from_utf8(u.ok(&["proxy-env", &name], b"").stdout).unwrap();
    let vars: HashMap<&str, String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('\'').to_owned()))
        .collect();
    let url = setting("VAULT_SMOKE_URL");
    assert_eq!(vars["OPENAI_BASE_URL"], format!("{url}/vault/proxy/{name}"));
    assert_eq!(vars["OPENAI_API_KEY"], tokens()["M2M_TOKEN"], "the vault token, never the key");
    assert!(!out.contains("sk-injected-key"));
    // What an SDK does with them: the proxy injects the key into the call to the upstream.
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", vars["OPENAI_BASE_URL"]))
        .bearer_auth(&vars["OPENAI_API_KEY"])
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["authorization"], "Bearer [REDACTED]", "the upstream got the key (scrubbed from the answer)");
    upstream.join().unwrap();
    let anthropic = u.json(&["proxy-env", &name, "--sdk", "anthropic"]);
    assert_eq!(anthropic["ANTHROPIC_BASE_URL"], format!("{url}/vault/proxy/{name}"));
    // A proxy URL of its own (a deployed stack's ProxyUrl output).
    let out = u
        .command(&["proxy-env", &name, "--json"])
        .env("TOKEN_VAULT_PROXY_URL", "https://proxy.example/")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["OPENAI_BASE_URL"], format!("https://proxy.example/vault/proxy/{name}"));
    // A secret without an upstream cannot be used through the proxy.
    let plain = unique("cli_plain");
    u.ok(&["put", &plain], b"v");
    let out = u.run(&["proxy-env", &plain], b"");
    assert_eq!(code(&out), Some(5));
    assert!(stderr(&out).contains("no upstream"), "{}", stderr(&out));
    for n in [&name, &plain] {
        u.ok(&["rm", n], b"");
    }
}

/// A token endpoint that grants `client`/`secret` the client-credentials grant for `audience`
/// (RFC 6749, 4.4, with HTTP Basic client authentication), answering `token`.
fn token_endpoint(token: String) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/oauth/token", listener.local_addr().unwrap().port());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut auth, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("authorization:") {
                    auth = line[line.len() - v.len()..].trim().to_owned();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            // base64("client-1:s3cret")
            let granted = auth == "Basic Y2xpZW50LTE6czNjcmV0"
                && body.contains("grant_type=client_credentials")
                && body.contains("audience=token-vault");
            let (status, answer) = if granted {
                ("200 OK", json!({"access_token": token, "token_type": "Bearer", "expires_in": 300}))
            } else {
                (
                    "401 Unauthorized",
                    json!({"error": "invalid_client", "error_description": "Client authentication failed."}),
                )
            };
            seen.push(body);
            let answer = answer.to_string();
            write!(stream, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len()).unwrap();
        }
        seen
    });
    (url, handle)
}

#[test]
#[ignore = "needs the local stack; run by scripts/test"]
fn login_runs_the_client_credentials_grant_and_caches_the_token_privately() {
    let u = User::new(None);
    let (url, endpoint) = token_endpoint(tokens()["M2M_TOKEN"].clone());
    let login = ["login", "--token-endpoint", &url, "--client-id", "client-1", "--audience", "token-vault"];
    let out = u.run(&login, b"wrong\n");
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid_client") && !stderr(&out).contains("wrong"), "{}", stderr(&out));
    let out = u.ok(&login, b"s3cret\n");
    assert!(stderr(&out).contains("token cached in"), "{}", stderr(&out));
    let bodies = endpoint.join().unwrap();
    assert!(bodies.iter().all(|b| !b.contains("s3cret")), "the secret goes in the Basic header, not the body");

    let cache = u.home.join("config/tvault/token.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the cached token is its owner's alone");
    let dir_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(cache.parent().unwrap()).unwrap().permissions());
    assert_eq!(dir_mode & 0o077, 0);
    // Later commands use it.
    let name = unique("cli_login");
    u.ok(&["put", &name], b"v");
    assert_eq!(u.ok(&["get", &name], b"").stdout, b"v");
    u.ok(&["rm", &name], b"");

    // A token that has expired is not sent; the user is told to log in again.
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"x","exp":1000000000}"#);
    u.ok(&["login", "--token-stdin"], format!("h.{payload}.s").as_bytes());
    let out = u.run(&["ls"], b"");
    assert_eq!(code(&out), Some(4));
    assert!(stderr(&out).contains("expired") && stderr(&out).contains("tvault login"), "{}", stderr(&out));
    // logout forgets it.
    u.ok(&["logout"], b"");
    assert!(!Path::new(&cache).exists());
    assert_eq!(code(&u.run(&["ls"], b"")), Some(4));
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in ["put", "get", "ls", "rm", "history", "rollback", "audit", "run", "proxy-env", "login", "logout"] {
        let out = Command::new(TVAULT).args([cmd, "--help"]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{cmd}");
        assert!(text.contains("Example") && text.contains(&format!("tvault {cmd}")), "{cmd}: {text}");
    }
    let top = Command::new(TVAULT).arg("--help").output().unwrap();
    let text = String::from_utf8(top.stdout).unwrap();
    assert!(text.contains("Exit codes") && text.contains("7  conflict"), "{text}");
}
