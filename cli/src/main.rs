//! `tvault`: the Token Vault command line. Values are read from stdin or a file, never from an argument
//! (so they stay out of shell history and `ps`), and written to stdout alone; every failure is the API's
//! message on stderr and a distinct exit code.

mod api;
mod config;
mod output;

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Method;
use reqwest::header::{HeaderName, IF_MATCH, IF_NONE_MATCH};
use serde::Serialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use api::{Api, Failure, segment};
use output::{field, list, table, upstream_host};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other error (the vault failed: HTTP 5xx)
  2  usage: a flag or argument is wrong, or no vault URL is configured
  3  not found: no such secret, or no such version
  4  denied: no token, an invalid or expired token, or the token may not do this
  5  invalid input: the vault (or tvault) refused what was sent
  6  unavailable: the vault could not be reached, timed out, or asked to retry later
  7  conflict: an --if-match or --if-absent precondition did not hold

Configuration: --url / TOKEN_VAULT_URL, --proxy-url / TOKEN_VAULT_PROXY_URL, or \"url\" and \"proxyUrl\" in
$XDG_CONFIG_HOME/tvault/config.json (~/.config/tvault/config.json). The token: --token-file,
TOKEN_VAULT_TOKEN, TOKEN_VAULT_TOKEN_FILE, \"tokenFile\" in the config file, or `tvault login`.";

#[derive(Parser)]
#[command(
    name = "tvault",
    version,
    about = "The Token Vault command line: store secrets, and let programs and agents use them.",
    after_help = EXIT_CODES,
    after_long_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// The vault's API URL.
    #[arg(long, global = true, env = "TOKEN_VAULT_URL", value_name = "URL")]
    url: Option<String>,
    /// The proxy's URL (a deployed stack's ProxyUrl output); defaults to the vault URL.
    #[arg(long, global = true, env = "TOKEN_VAULT_PROXY_URL", value_name = "URL")]
    proxy_url: Option<String>,
    /// Read the bearer token from FILE.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON (for scripts) instead of tables and messages.
    #[arg(long, global = true)]
    json: bool,
}

/// An admin acting on another client's app-level secrets.
#[derive(Args)]
struct Client {
    /// Act on this client's app-level secret (organization admins only).
    #[arg(long = "client", value_name = "CLIENT_ID")]
    client: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Store a new version of a secret; the value comes from stdin or --from-file, never an argument.
    #[command(after_help = "Examples:
  tvault put openai_api_key < key.txt
  pbpaste | tvault put stripe_key --scope payments --expires-in 30d
  tvault put openai_api_key --from-file key.txt --use-only --upstream https://api.openai.com/v1 \\
      --method POST --path chat/completions --per-minute 60")]
    Put(Put),
    /// Print a secret's value, exactly as stored, and nothing else.
    #[command(after_help = "Examples:
  export OPENAI_API_KEY=\"$(tvault get openai_api_key)\"
  tvault get openai_api_key --version 3")]
    Get {
        name: String,
        /// An earlier version (the last 5 are retained).
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        client: Client,
    },
    /// List secrets (never values).
    #[command(after_help = "Examples:
  tvault ls
  tvault ls --all --json")]
    Ls {
        /// Every app-level secret of the organization (admins only).
        #[arg(long, conflicts_with = "client")]
        all: bool,
        #[command(flatten)]
        client: Client,
    },
    /// Delete a secret and all its versions.
    #[command(after_help = "Example:
  tvault rm old_key")]
    Rm {
        name: String,
        /// Delete only if the current version is N.
        #[arg(long, value_name = "N")]
        if_match: Option<u64>,
        #[command(flatten)]
        client: Client,
    },
    /// A secret's versions: numbers, dates and scopes, never values.
    #[command(after_help = "Example:
  tvault history openai_api_key")]
    History {
        name: String,
        #[command(flatten)]
        client: Client,
    },
    /// Restore an earlier version as a new one.
    #[command(after_help = "Example:
  tvault rollback openai_api_key 3")]
    Rollback {
        name: String,
        version: u64,
        /// Roll back only if the current version is N.
        #[arg(long, value_name = "N")]
        if_match: Option<u64>,
        #[command(flatten)]
        client: Client,
    },
    /// Recent audit events: who read, used, changed or was refused a secret.
    #[command(after_help = "Examples:
  tvault audit openai_api_key --since 24h
  tvault audit --since 7d --event access_denied --json")]
    Audit {
        /// One secret's events (all secrets' otherwise).
        name: Option<String>,
        /// How far back: 30m, 24h, 7d, 2w (at most 92 days).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        since: i64,
        /// Only this event: retrieved, used, created, updated, rolled_back, deleted, access_denied, ...
        /// (short for vault.secret.retrieved and so on).
        #[arg(long)]
        event: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
    },
    /// Run a command with secrets in its environment: one batch read, then exec; no value is printed.
    #[command(after_help = "Example:
  tvault run --env OPENAI_API_KEY=openai_api_key --env STRIPE_KEY=stripe_key -- python agent.py")]
    Run {
        /// VAR=SECRET_NAME: set VAR to the secret's value (up to 20).
        #[arg(long = "env", value_name = "VAR=NAME", required = true, value_parser = parse_env_pair)]
        env: Vec<(String, String)>,
        #[command(flatten)]
        client: Client,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Print the variables that point an unchanged model SDK at the proxy for a use-only secret.
    #[command(after_help = "Examples:
  eval \"$(tvault proxy-env openai_api_key)\"     # OPENAI_BASE_URL and OPENAI_API_KEY (the vault token)
  eval \"$(tvault proxy-env claude_key --sdk anthropic)\"")]
    ProxyEnv {
        name: String,
        /// Which SDK's variables.
        #[arg(long, value_enum, default_value_t = Sdk::Openai)]
        sdk: Sdk,
        #[command(flatten)]
        client: Client,
    },
    /// Get a token with the OAuth client-credentials grant (or from stdin) and cache it until it expires.
    #[command(after_help = "Examples:
  tvault login --token-endpoint https://example.eu.auth0.com/oauth/token --client-id abc \\
      --audience https://vault.example.com --client-secret-file ~/.secrets/vault-client
  printf %s \"$TOKEN\" | tvault login --token-stdin")]
    Login(Login),
    /// Forget the token `tvault login` cached.
    #[command(after_help = "Example:
  tvault logout")]
    Logout,
}

#[derive(Clone, Copy, ValueEnum)]
enum Sdk {
    Openai,
    Anthropic,
}

#[derive(Args)]
struct Put {
    name: String,
    /// Read the value from FILE (exact bytes) instead of stdin.
    #[arg(long, value_name = "FILE")]
    from_file: Option<PathBuf>,
    /// Drop one trailing newline from the value (as `echo` adds).
    #[arg(long)]
    strip_newline: bool,
    /// A scope a token must hold to read it (repeat for any-of).
    #[arg(long = "scope", value_name = "SCOPE")]
    scope: Vec<String>,
    /// Expire after this long: 30m, 12h, 30d, 2w.
    #[arg(long, value_parser = parse_duration, conflicts_with = "expires_at", value_name = "DURATION")]
    expires_in: Option<i64>,
    /// Expire at this time: RFC 3339 (2027-01-31T12:00:00Z) or a date (2027-01-31, midnight UTC).
    #[arg(long, value_parser = parse_date, value_name = "DATE")]
    expires_at: Option<i64>,
    /// Use-only: the value is never returned, only injected by the proxy into calls to its upstream.
    #[arg(long, requires = "upstream")]
    use_only: bool,
    /// The one upstream the proxy may send the value to (its base URL).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// A method the proxy may call the upstream with (repeat; default all).
    #[arg(long = "method", value_name = "METHOD", requires = "upstream")]
    methods: Vec<String>,
    /// A path under the base URL the proxy may call (repeat; `*` ends a prefix).
    #[arg(long = "path", value_name = "PATH", requires = "upstream")]
    paths: Vec<String>,
    /// The header the proxy injects the value into (default Authorization).
    #[arg(long, value_name = "NAME", requires = "upstream", conflicts_with = "query_param")]
    header: Option<String>,
    /// The header's template, with {value} (default "Bearer {value}").
    #[arg(long, value_name = "TEMPLATE", requires = "upstream", conflicts_with = "query_param")]
    template: Option<String>,
    /// Inject the value as this query parameter instead of a header.
    #[arg(long, value_name = "NAME", requires = "upstream")]
    query_param: Option<String>,
    /// At most N uses through the proxy per minute.
    #[arg(long, value_name = "N")]
    per_minute: Option<u32>,
    /// At most N uses through the proxy per day.
    #[arg(long, value_name = "N")]
    per_day: Option<u32>,
    /// Write only if the current version is N.
    #[arg(long, value_name = "N", conflicts_with = "if_absent")]
    if_match: Option<u64>,
    /// Write only if no such secret exists yet.
    #[arg(long)]
    if_absent: bool,
    #[command(flatten)]
    client: Client,
}

#[derive(Args)]
struct Login {
    /// The identity provider's OAuth token endpoint.
    #[arg(long, value_name = "URL", required_unless_present = "token_stdin", requires = "client_id")]
    token_endpoint: Option<String>,
    /// The OAuth client's id.
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Read the client secret from FILE (otherwise from stdin).
    #[arg(long, value_name = "FILE")]
    client_secret_file: Option<PathBuf>,
    /// The `audience` to ask for (Auth0 and others): the vault's JWT audience.
    #[arg(long)]
    audience: Option<String>,
    /// The `resource` to ask for (RFC 8707), for providers that take resource indicators.
    #[arg(long)]
    resource: Option<String>,
    /// Scopes to ask for, space-separated.
    #[arg(long)]
    scope: Option<String>,
    /// How the client authenticates to the token endpoint.
    #[arg(long, value_enum, default_value_t = ClientAuth::Basic)]
    client_auth: ClientAuth,
    /// Cache a token read from stdin instead (its `exp` claim says until when).
    #[arg(long, conflicts_with_all = ["token_endpoint", "client_id", "client_secret_file"])]
    token_stdin: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClientAuth {
    /// HTTP Basic (client_secret_basic, which every provider supports).
    Basic,
    /// In the form body (client_secret_post).
    Post,
}

fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits.parse().map_err(|_| format!("{s:?} is not a duration such as 30m, 24h, 30d or 2w"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{s:?} is not a duration such as 30m, 24h, 30d or 2w")),
    };
    match n.checked_mul(unit) {
        Some(secs) if secs > 0 && secs <= 100 * 365 * 86_400 => Ok(secs),
        _ => Err(format!("{s:?} is out of range")),
    }
}

fn parse_date(s: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &format)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time (2027-01-31T12:00:00Z) nor a date (2027-01-31)"))
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    let (var, name) = s.split_once('=').ok_or_else(|| format!("{s:?}: give VAR=SECRET_NAME"))?;
    let valid_var = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_var {
        return Err(format!("{var:?} is not an environment variable name (letters, digits and _)"));
    }
    if name.is_empty() {
        return Err(format!("{s:?}: the secret name is missing"));
    }
    Ok((var.to_owned(), name.to_owned()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.global.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if json {
                println!("{}", failure.to_json());
            } else {
                eprintln!("tvault: {failure}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

/// What every command that calls the vault needs.
struct Context {
    api: Api,
    proxy_url: String,
    json: bool,
}

fn context(g: &Global) -> Result<Context, Failure> {
    let file = config::load_file_config()?;
    let url = config::vault_url(g.url.as_deref(), &file)?;
    let proxy_url = config::proxy_url(g.proxy_url.as_deref(), &file, &url)?;
    let token = config::token(g.token_file.as_deref(), &file)?;
    Ok(Context { api: Api::new(&url, token)?, proxy_url, json: g.json })
}

/// Every item of a paged listing at `path` (each page's items under `key`), asking for each page with
/// `query(items in hand)` and the page's `nextToken`, until the vault sends none or `enough` items are in
/// hand. A `nextToken` sent twice stops the listing with an error instead of looping.
async fn pages(
    api: &Api,
    path: &str,
    key: &str,
    enough: usize,
    query: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> Result<Vec<Value>, Failure> {
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut q = query(items.len());
        q.extend(next.take().map(|t| ("nextToken", t)));
        let page = api.call(Method::GET, path, &q, None, None).await?;
        items.extend(page[key].as_array().cloned().unwrap_or_default());
        match page["nextToken"].as_str() {
            Some(t) if q.iter().any(|(k, v)| *k == "nextToken" && v == t) => {
                return Err(Failure::Other("the vault returned the same nextToken twice".into()));
            }
            Some(t) if items.len() < enough => next = Some(t.to_owned()),
            _ => return Ok(items),
        }
    }
}

fn client_query(client: &Client) -> Vec<(&'static str, String)> {
    client.client.iter().map(|c| ("clientId", c.clone())).collect()
}

fn if_match(n: Option<u64>) -> Option<(HeaderName, String)> {
    n.map(|n| (IF_MATCH, format!("\"{n}\"")))
}

fn print_json(v: &Value) {
    println!("{v}");
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Login(login) => return self::login(login, cli.global.json).await,
        Command::Logout => {
            let removed = config::forget_token()?;
            if cli.global.json {
                print_json(&json!({"success": true, "removed": removed}));
            } else {
                eprintln!("{}", if removed { "Logged out: the cached token is gone." } else { "No cached token." });
            }
            return Ok(());
        }
        _ => {}
    }
    let cx = context(&cli.global)?;
    match cli.command {
        Command::Put(put) => self::put(&cx, put).await,
        Command::Get { name, version, client } => {
            let mut query = client_query(&client);
            query.extend(version.map(|v| ("version", v.to_string())));
            let path = format!("/vault/secrets/{}", segment(&name)?);
            let body = cx.api.call(Method::GET, &path, &query, None, None).await?;
            if cx.json {
                print_json(&body);
                return Ok(());
            }
            let value = body["value"].as_str().ok_or_else(|| Failure::Other("the vault sent no value".into()))?;
            let mut out = std::io::stdout().lock();
            let written = out.write_all(value.as_bytes()).and_then(|()| {
                // A person at a terminal gets the prompt on its own line; `$(...)` and pipes get the exact value.
                if std::io::stdout().is_terminal() { out.write_all(b"\n") } else { Ok(()) }
            });
            written.and_then(|()| out.flush()).map_err(|e| Failure::Other(format!("could not write the value: {e}")))
        }
        Command::Ls { all, client } => {
            let mut query = client_query(&client);
            if all {
                query.push(("all", "true".into()));
            }
            let secrets = pages(&cx.api, "/vault/secrets", "secrets", usize::MAX, |_| query.clone()).await?;
            if cx.json {
                print_json(&json!({"secrets": secrets}));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = secrets
                .iter()
                .map(|s| {
                    let owner = match s["clientId"].as_str() {
                        Some(c) => format!("app:{c}"),
                        None => "user".into(),
                    };
                    vec![
                        field(s, "name"),
                        field(s, "version"),
                        field(s, "access"),
                        upstream_host(s),
                        list(&s["scope"]),
                        owner,
                        field(s, "expiresAt"),
                        field(s, "updatedAt"),
                    ]
                })
                .collect();
            let header = ["NAME", "VERSION", "ACCESS", "UPSTREAM", "SCOPE", "OWNER", "EXPIRES", "UPDATED"];
            print!("{}", table(&header, &rows));
            Ok(())
        }
        Command::Rm { name, if_match: n, client } => {
            let path = format!("/vault/secrets/{}", segment(&name)?);
            let body = cx.api.call(Method::DELETE, &path, &client_query(&client), None, if_match(n)).await?;
            if cx.json {
                print_json(&body);
            } else {
                eprintln!("Deleted {name} and all its versions.");
            }
            Ok(())
        }
        Command::History { name, client } => {
            let path = format!("/vault/secrets/{}/versions", segment(&name)?);
            let body = cx.api.call(Method::GET, &path, &client_query(&client), None, None).await?;
            if cx.json {
                print_json(&body);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = body["versions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|v| {
                    vec![
                        field(v, "version"),
                        if v["current"] == true { "current".into() } else { String::new() },
                        field(v, "updatedAt"),
                        list(&v["scope"]),
                        field(v, "access"),
                        upstream_host(v),
                        field(v, "expiresAt"),
                    ]
                })
                .collect();
            print!("{}", table(&["VERSION", "", "WRITTEN", "SCOPE", "ACCESS", "UPSTREAM", "EXPIRES"], &rows));
            Ok(())
        }
        Command::Rollback { name, version, if_match: n, client } => {
            let path = format!("/vault/secrets/{}/rollback", segment(&name)?);
            let mut body = json!({"version": version});
            if let Some(c) = &client.client {
                body["clientId"] = c.clone().into();
            }
            let body = serde_json::to_vec(&body).map_err(|e| Failure::Other(e.to_string()))?;
            let answer = cx.api.call(Method::POST, &path, &[], Some(body), if_match(n)).await?;
            if cx.json {
                print_json(&answer);
            } else {
                eprintln!("Restored version {version} of {name} as version {}.", field(&answer, "version"));
            }
            Ok(())
        }
        Command::Audit { name, since, event, limit } => {
            let from = output::date(config::now() - since);
            let path = match &name {
                Some(n) => format!("/vault/secrets/{}/audit", segment(n)?),
                None => "/vault/audit".to_owned(),
            };
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let mut events = pages(&cx.api, &path, "events", limit, |have| {
                let mut q = vec![("from", from.clone()), ("limit", (limit - have).min(100).to_string())];
                q.extend(
                    event
                        .as_deref()
                        .map(|e| ("event", if e.contains('.') { e.to_owned() } else { format!("vault.secret.{e}") })),
                );
                q
            })
            .await?;
            events.truncate(limit);
            if cx.json {
                print_json(&json!({"events": events}));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    vec![
                        field(e, "time"),
                        field(e, "event"),
                        field(e, "secret"),
                        field(e, "outcome"),
                        field(e, "actorClientId"),
                        field(e, "actorUserId"),
                        field(e, "sourceIp"),
                        field(e, "userAgent"),
                    ]
                })
                .collect();
            let header = ["TIME", "EVENT", "SECRET", "OUTCOME", "CLIENT", "USER", "IP", "USER AGENT"];
            print!("{}", table(&header, &rows));
            Ok(())
        }
        Command::Run { env, client, command } => self::run_command(&cx, env, client, command).await,
        Command::ProxyEnv { name, sdk, client } => {
            if client.client.is_some() {
                return Err(Failure::Usage("the proxy uses the token's own secrets; --client does not apply".into()));
            }
            // Check first that the proxy can use it: it exists for this caller and has an upstream.
            let path = format!("/vault/secrets/{}/versions", segment(&name)?);
            let body = cx.api.call(Method::GET, &path, &client_query(&client), None, None).await?;
            if body["versions"][0]["upstream"].is_null() {
                return Err(Failure::Invalid(format!(
                    "{name} has no upstream, so the proxy cannot use it: write it with --upstream URL (and --use-only)"
                )));
            }
            let base = format!("{}/vault/proxy/{}", cx.proxy_url, segment(&name)?);
            let (url_var, key_var) = match sdk {
                Sdk::Openai => ("OPENAI_BASE_URL", "OPENAI_API_KEY"),
                Sdk::Anthropic => ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
            };
            let token = cx.api_token();
            if cx.json {
                print_json(&json!({url_var: base, key_var: token.as_str()}));
            } else {
                println!("export {url_var}={}", shell_quote(&base));
                println!("export {key_var}={}", shell_quote(&token));
            }
            Ok(())
        }
        Command::Login(_) | Command::Logout => Ok(()),
    }
}

impl Context {
    fn api_token(&self) -> Zeroizing<String> {
        self.api.token()
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PutBody<'a> {
    name: &'a str,
    value: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    scope: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
}

/// Reads a value: all of stdin, or a file, as exact bytes, which must be UTF-8 text.
fn read_value(from_file: Option<&PathBuf>, strip_newline: bool) -> Result<Zeroizing<String>, Failure> {
    let mut bytes = Zeroizing::new(Vec::new());
    match from_file {
        Some(path) => {
            let mut f = std::fs::File::open(path)
                .map_err(|e| Failure::Invalid(format!("could not open {}: {e}", path.display())))?;
            f.read_to_end(&mut bytes)
                .map_err(|e| Failure::Invalid(format!("could not read {}: {e}", path.display())))?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                return Err(Failure::Usage(
                    "tvault put reads the value from stdin or --from-file, never from an argument or the \
                     terminal: `tvault put NAME < file`, or pipe it in (`pbpaste | tvault put NAME`)"
                        .into(),
                ));
            }
            stdin.lock().read_to_end(&mut bytes).map_err(|e| Failure::Invalid(format!("could not read stdin: {e}")))?;
        }
    }
    if strip_newline {
        let len = bytes.len();
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(len - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(len - 1);
        }
    }
    if bytes.is_empty() {
        return Err(Failure::Invalid("the value is empty".into()));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Failure::Invalid("the value is not UTF-8 text (encode binary values, e.g. with base64)".into()))?;
    Ok(Zeroizing::new(text.to_owned()))
}

async fn put(cx: &Context, p: Put) -> Result<(), Failure> {
    let value = read_value(p.from_file.as_ref(), p.strip_newline)?;
    if !p.strip_newline && value.ends_with('\n') && !cx.json {
        eprintln!("tvault: note: the value ends with a newline, stored as is (--strip-newline drops it)");
    }
    let expires_at = match (p.expires_in, p.expires_at) {
        (Some(secs), _) => Some(output::date(config::now() + secs)),
        (None, Some(at)) => Some(output::date(at)),
        (None, None) => None,
    };
    let upstream = p.upstream.as_ref().map(|base| {
        let mut u = json!({"baseUrl": base});
        if !p.methods.is_empty() {
            u["methods"] = json!(p.methods.iter().map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>());
        }
        if !p.paths.is_empty() {
            u["paths"] = json!(p.paths);
        }
        if let Some(h) = &p.header {
            u["header"] = json!(h);
        }
        if let Some(t) = &p.template {
            u["template"] = json!(t);
        }
        if let Some(q) = &p.query_param {
            u["query"] = json!(q);
        }
        u
    });
    let limits = (p.per_minute.is_some() || p.per_day.is_some()).then(|| {
        let mut l = json!({});
        if let Some(n) = p.per_minute {
            l["perMinute"] = n.into();
        }
        if let Some(n) = p.per_day {
            l["perDay"] = n.into();
        }
        l
    });
    let body = PutBody {
        name: &p.name,
        value: &value,
        scope: &p.scope,
        expires_at,
        access: p.use_only.then_some("use-only"),
        upstream,
        limits,
        client_id: p.client.client.as_deref(),
    };
    let body = Zeroizing::new(serde_json::to_vec(&body).map_err(|e| Failure::Other(e.to_string()))?);
    let precondition = if p.if_absent { Some((IF_NONE_MATCH, "*".to_owned())) } else { if_match(p.if_match) };
    let answer = cx.api.call(Method::POST, "/vault/secrets", &[], Some(body.to_vec()), precondition).await?;
    if cx.json {
        print_json(&answer);
    } else {
        eprintln!("{} {} (version {}).", capitalized(&field(&answer, "action")), p.name, field(&answer, "version"));
    }
    Ok(())
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

async fn run_command(
    cx: &Context,
    env: Vec<(String, String)>,
    client: Client,
    command: Vec<OsString>,
) -> Result<(), Failure> {
    let mut names: Vec<&str> = Vec::new();
    for (_, name) in &env {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let mut body = json!({"names": names});
    if let Some(c) = &client.client {
        body["clientId"] = c.clone().into();
    }
    let body = serde_json::to_vec(&body).map_err(|e| Failure::Other(e.to_string()))?;
    let read = cx.api.call(Method::POST, "/vault/secrets/batch-get", &[], Some(body), None).await?;
    // Every name must have been read: a program started without one of its keys fails later and less clearly.
    if let Some(errors) = read["errors"].as_array().filter(|e| !e.is_empty()) {
        let first = &errors[0];
        for e in errors.iter().skip(1) {
            eprintln!("tvault: {}: {} ({})", field(e, "name"), field(e, "message"), field(e, "code"));
        }
        let status = match first["code"].as_str() {
            Some("not_found") => 404,
            Some("insufficient_scope" | "use_only" | "forbidden") => 403,
            _ => 500,
        };
        return Err(Failure::Api {
            status,
            code: field(first, "code"),
            message: format!("{}: {}", field(first, "name"), field(first, "message")),
        });
    }
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // The program gets the keys it was given, not the vault token that could read every other secret.
    cmd.env_remove("TOKEN_VAULT_TOKEN").env_remove("TOKEN_VAULT_TOKEN_FILE");
    for (var, name) in &env {
        let secret = read["secrets"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name.as_str()))
            .and_then(|s| s["value"].as_str())
            .ok_or_else(|| Failure::Other(format!("the vault did not return {name}")))?;
        if secret.contains('\0') {
            return Err(Failure::Invalid(format!("{name} holds a NUL byte, which no environment variable can")));
        }
        cmd.env(var, secret);
    }
    let program = command[0].to_string_lossy().into_owned();
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Replaces this process: the command's exit status is tvault's.
        let e = cmd.exec();
        eprintln!("tvault: could not run {program}: {e}");
        std::process::exit(127);
    }
    #[cfg(not(unix))]
    {
        let status = cmd.status().map_err(|e| Failure::Other(format!("could not run {program}: {e}")))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

async fn login(l: Login, json_out: bool) -> Result<(), Failure> {
    let mut secret_text = Zeroizing::new(String::new());
    let read_stdin = |what: &str, buf: &mut Zeroizing<String>| -> Result<(), Failure> {
        if std::io::stdin().is_terminal() {
            return Err(Failure::Usage(format!(
                "pipe the {what} into tvault login (it is not read from the terminal)"
            )));
        }
        std::io::stdin().read_to_string(buf).map_err(|e| Failure::Invalid(format!("could not read stdin: {e}")))?;
        Ok(())
    };
    let cached = if l.token_stdin {
        read_stdin("token", &mut secret_text)?;
        let token = secret_text.trim().to_owned();
        if token.is_empty() {
            return Err(Failure::Invalid("no token on stdin".into()));
        }
        config::CachedToken {
            expires_at: config::jwt_expiry(&token),
            access_token: token,
            token_endpoint: None,
            client_id: None,
        }
    } else {
        let endpoint = l.token_endpoint.clone().unwrap_or_default();
        let client_id = l.client_id.clone().unwrap_or_default();
        match &l.client_secret_file {
            Some(path) => {
                *secret_text = std::fs::read_to_string(path)
                    .map_err(|e| Failure::Invalid(format!("could not read {}: {e}", path.display())))?
            }
            None => read_stdin("client secret", &mut secret_text)?,
        }
        let client_secret = secret_text.trim();
        if client_secret.is_empty() {
            return Err(Failure::Invalid("the client secret is empty".into()));
        }
        let http = api::http_client()?;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        form.extend(l.audience.as_deref().map(|a| ("audience", a)));
        form.extend(l.resource.as_deref().map(|r| ("resource", r)));
        form.extend(l.scope.as_deref().map(|s| ("scope", s)));
        let parsed =
            reqwest::Url::parse(&endpoint).map_err(|e| Failure::Invalid(format!("{endpoint:?} is not a URL: {e}")))?;
        config::check_transport(&parsed)?;
        let mut req = http.post(parsed).header(reqwest::header::ACCEPT, "application/json");
        match l.client_auth {
            ClientAuth::Basic => req = req.basic_auth(form_encode(&client_id), Some(form_encode(client_secret))),
            ClientAuth::Post => {
                form.push(("client_id", &client_id));
                form.push(("client_secret", client_secret));
            }
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| api::unreachable("could not reach the token endpoint", &endpoint, &e))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // An OAuth error response (RFC 6749, 5.2): `error` and `error_description`.
            return Err(Failure::Api {
                status: status.as_u16(),
                code: body["error"].as_str().unwrap_or("token_request_failed").to_owned(),
                message: format!(
                    "the token endpoint refused: {}",
                    body["error_description"].as_str().unwrap_or("no description given")
                ),
            });
        }
        let token = body["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::Other("the token endpoint answered without an access_token".into()))?
            .to_owned();
        // `expires_in` is a number (RFC 6749, 5.1); some providers send it as a string.
        let expires_in = body["expires_in"].as_i64().or_else(|| body["expires_in"].as_str()?.trim().parse().ok());
        let expires_at = expires_in.map(|s| config::now() + s).or_else(|| config::jwt_expiry(&token));
        config::CachedToken {
            access_token: token,
            expires_at,
            token_endpoint: Some(endpoint),
            client_id: Some(client_id),
        }
    };
    let path = config::save_token(&cached)?;
    let until = cached.expires_at.map(output::date);
    if json_out {
        print_json(&json!({"success": true, "cachedAt": path, "expiresAt": until}));
    } else {
        match until {
            Some(t) => eprintln!("Logged in: token cached in {} until {t}.", path.display()),
            None => eprintln!("Logged in: token cached in {} (no expiry given).", path.display()),
        }
    }
    Ok(())
}

/// RFC 6749 (2.3.1): client credentials in HTTP Basic are form-encoded first.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._*".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_dates_and_env_pairs_parse() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("90m"), Ok(5_400));
        for bad in ["", "30", "d", "-1d", "0h", "1y", "999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_date("2027-01-31"), Ok(1_801_353_600));
        assert_eq!(parse_date("2027-01-31T00:00:00Z"), Ok(1_801_353_600));
        assert!(parse_date("31/01/2027").is_err());
        assert_eq!(parse_env_pair("OPENAI_API_KEY=openai"), Ok(("OPENAI_API_KEY".into(), "openai".into())));
        for bad in ["X", "=a", "1X=a", "A-B=a", "A="] {
            assert!(parse_env_pair(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_encode("a b:c%"), "a+b%3Ac%25");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
