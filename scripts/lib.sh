# Shared by scripts/dev, scripts/test and .ci/run. Sourced, not run.
# Every tool the project needs is installed here from the package registries; nothing is assumed.

# Pinned tool versions (PyPI).
CARGO_LAMBDA_VERSION="1.9.2"
SAM_CLI_VERSION="1.170.0"
SCHEMATHESIS_VERSION="4.32.5"
MOTO_VERSION="5.2.5"
OPENAI_SDK_VERSION="3.51.0"
ANTHROPIC_SDK_VERSION="2.10.0"
MCP_SDK_VERSION="2.3.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SAM_CLI_TELEMETRY=0

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

# Installs PACKAGE==VERSION from PyPI unless `COMMAND... --version` already reports VERSION.
ensure_pypi_tool() {
  local package="$1" version="$2"
  shift 2
  if ! "$@" --version 2>/dev/null | grep -qF "$version"; then
    log "installing $package $version (PyPI)"
    pip_install "$package==$version"
    hash -r
  fi
  "$@" --version >/dev/null 2>&1 || die "'$*' is not on PATH after installing $package (is pip's bin directory on PATH?)"
}

# cargo-lambda (a prebuilt binary with the zig that `cargo lambda build` needs).
ensure_cargo_lambda() { ensure_pypi_tool cargo-lambda "$CARGO_LAMBDA_VERSION" cargo lambda; }
# AWS SAM CLI (brings cfn-lint for `sam validate --lint`).
ensure_sam() { ensure_pypi_tool aws-sam-cli "$SAM_CLI_VERSION" sam; }
# schemathesis, for the contract test of openapi.yaml.
ensure_schemathesis() { ensure_pypi_tool schemathesis "$SCHEMATHESIS_VERSION" schemathesis; }

# moto's server, the local AWS KMS the tests seal key rings with.
ensure_moto() {
  if ! python3 -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null \
     || ! command -v moto_server >/dev/null; then
    log "installing moto[server] $MOTO_VERSION (PyPI)"
    pip_install "moto[server]==$MOTO_VERSION"
    hash -r
  fi
  command -v moto_server >/dev/null || die "moto_server is not on PATH after installing moto (is pip's bin directory on PATH?)"
}

# The official OpenAI and Anthropic Python SDKs, which the proxy's SDK test points at the local stack, and
# the official MCP Python SDK, which the MCP server's test connects with.
ensure_model_sdks() {
  if ! python3 -c "import openai, anthropic, importlib.metadata as m, sys; sys.exit(openai.__version__ != '$OPENAI_SDK_VERSION' or anthropic.__version__ != '$ANTHROPIC_SDK_VERSION' or m.version('mcp') != '$MCP_SDK_VERSION')" 2>/dev/null; then
    log "installing openai $OPENAI_SDK_VERSION, anthropic $ANTHROPIC_SDK_VERSION and mcp $MCP_SDK_VERSION (PyPI)"
    pip_install "openai==$OPENAI_SDK_VERSION" "anthropic==$ANTHROPIC_SDK_VERSION" "mcp==$MCP_SDK_VERSION"
  fi
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian's Chromium for the portal's browser tests (Playwright's own browser download is not used).
ensure_chromium() {
  if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
    log "installing chromium (Debian)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
  fi
  "${CHROMIUM_PATH:-/usr/bin/chromium}" --version >/dev/null 2>&1 || die "chromium does not run"
}

# playwright-core for the browser tests, from the npm registry at the locked version.
ensure_browser_test_deps() {
  ensure_chromium
  npm ci --prefix "$ROOT/tests/browser" --no-audit --no-fund --loglevel=error >/dev/null
}

# The local OpenID provider's packages (oidc-provider), from the npm registry at the locked version;
# installed again only when the lock file changes (a stamp of its hash sits in node_modules).
ensure_oidc_provider() {
  node -e 'process.exit(typeof URL.parse === "function" ? 0 : 1)' 2>/dev/null \
    || die "the local OpenID provider needs Node.js 20.18 or later (node --version: $(node --version 2>/dev/null || echo none))"
  local dir="$ROOT/dev/oidc" want
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$dir/node_modules/.token-vault-lock.sha256" 2>/dev/null)" != "$want" ]; then
    log "installing the local OpenID provider (oidc-provider, npm)"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
    echo "$want" > "$dir/node_modules/.token-vault-lock.sha256"
  fi
}

# Development configuration, generated once and kept in .local/dev.env (git-ignored) so that restarts
# keep opening the secrets stored in .local. Values already in the environment win.
#
# How tokens are verified (VAULT_LOCAL_AUTH, set here):
#   oidc     (default) the local OpenID provider (dev/oidc) issues RS256 at+jwt tokens, checked through
#            its JWKS, as a deployed stack checks its provider's;
#   external VAULT_JWKS_URL (with VAULT_JWT_ISSUER, VAULT_JWT_AUDIENCE and VAULT_IDP_PROFILE) from the
#            environment names another provider;
#   hs256    VAULT_JWT_HS256_SECRET from the environment: tokens the local stack mints itself.
load_dev_env() {
  mkdir -p "$ROOT/.local"
  local file="$ROOT/.local/dev.env" name value
  (
    umask 077
    touch "$file"
    # NAME and the Python expression of its generated value: added once, kept across restarts.
    while read -r name value; do
      if ! grep -q "^$name=" "$file"; then echo "$name=$(python3 -c "import secrets; print($value)")" >> "$file"; fi
    done <<'GENERATED'
VAULT_MASTER_KEY secrets.token_hex(32)
VAULT_LOCAL_OIDC_SECRET secrets.token_urlsafe(32)
VAULT_LOCAL_OIDC_ADMIN_SECRET secrets.token_urlsafe(32)
VAULT_LOCAL_OIDC_PASSWORD secrets.token_urlsafe(32)
GENERATED
  )
  # Each value from the file unless the environment already has one. HS256 only when asked for in the
  # environment: a dev.env from an earlier version may hold a secret, which is not loaded.
  while IFS='=' read -r name value; do
    if [ -n "$name" ] && [ "$name" != VAULT_JWT_HS256_SECRET ] && [ -z "${!name:-}" ]; then export "$name=$value"; fi
  done < "$file"
  # A key ring (VAULT_MASTER_KEYS, for rotation) replaces the lone key.
  if [ -n "${VAULT_MASTER_KEYS:-}" ]; then unset VAULT_MASTER_KEY; fi
  export VAULT_LOCAL_API_PORT="${VAULT_LOCAL_API_PORT:-9000}"
  export VAULT_LOCAL_OIDC_PORT="${VAULT_LOCAL_OIDC_PORT:-9100}"
  export VAULT_JWT_AUDIENCE="${VAULT_JWT_AUDIENCE:-token-vault}"
  if [ -n "${VAULT_JWT_HS256_SECRET:-}" ]; then
    [ -z "${VAULT_JWKS_URL:-}" ] || die "set either VAULT_JWKS_URL or VAULT_JWT_HS256_SECRET, not both"
    export VAULT_LOCAL_AUTH=hs256
    export VAULT_JWT_ISSUER="${VAULT_JWT_ISSUER:-https://vault.local/}"
  elif [ -n "${VAULT_JWKS_URL:-}" ]; then
    export VAULT_LOCAL_AUTH=external
    [ -n "${VAULT_JWT_ISSUER:-}" ] || die "VAULT_JWKS_URL is set: set VAULT_JWT_ISSUER (the provider's issuer) too"
    [ -n "${VAULT_IDP_PROFILE:-}" ] || die "VAULT_JWKS_URL is set: set VAULT_IDP_PROFILE (auth0, okta, entra, cognito, keycloak or rfc9068) too"
  else
    export VAULT_LOCAL_AUTH=oidc
    local issuer="http://127.0.0.1:${VAULT_LOCAL_OIDC_PORT}"
    export VAULT_JWT_ISSUER="$issuer" VAULT_JWKS_URL="$issuer/jwks"
    export VAULT_IDP_PROFILE=rfc9068 VAULT_MACHINE_CLAIM=sub=client_id VAULT_ADMIN_CLAIM=roles
    export VAULT_PORTAL_OIDC_ISSUER="${VAULT_PORTAL_OIDC_ISSUER:-$issuer}"
    export VAULT_PORTAL_OIDC_CLIENT_ID="${VAULT_PORTAL_OIDC_CLIENT_ID:-vault-portal}"
    # The admin's portal token carries the scopes it may restore versions of (a rollback needs read rights).
    export VAULT_PORTAL_OIDC_SCOPE="${VAULT_PORTAL_OIDC_SCOPE:-openid payments billing}"
  fi
  export VAULT_SECRETS_TABLE="${VAULT_SECRETS_TABLE:-token-vault-secrets}"
  export VAULT_AUDIT_TABLE="${VAULT_AUDIT_TABLE:-token-vault-audit}"
  export VAULT_KEYS_TABLE="${VAULT_KEYS_TABLE:-token-vault-keys}"
  # The proxy's local-development switch: upstreams on loopback (a mock model server on this machine)
  # may be written and called; private, link-local and metadata addresses stay refused.
  export VAULT_PROXY_ALLOW_LOOPBACK="${VAULT_PROXY_ALLOW_LOOPBACK:-true}"
  export VAULT_LOCAL_DYNAMODB_ADDR="${VAULT_LOCAL_DYNAMODB_ADDR:-127.0.0.1:8000}"
  export VAULT_LOCAL_DB="${VAULT_LOCAL_DB:-$ROOT/.local/dynamodb.sqlite}"
  # The functions find the local server through the SDK's standard variables; no cloud account is used.
  export AWS_ENDPOINT_URL_DYNAMODB="http://${VAULT_LOCAL_DYNAMODB_ADDR}"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
}

# The Lambda functions: every package under functions/, from `cargo metadata` (the one list). With
# `http`, only those serving HTTP; with `jobs`, only the operator jobs (`[package.metadata.token-vault]
# job = true`).
function_crates() {
  cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
kind = sys.argv[1]
for p in sorted(json.load(sys.stdin)["packages"], key=lambda p: p["name"]):
    if "/functions/" not in p["manifest_path"]:
        continue
    job = bool(((p.get("metadata") or {}).get("token-vault") or {}).get("job"))
    if kind == "all" or (kind == "jobs") == job:
        print(p["name"])
' "${1:-all}"
}

# `-p NAME` for each of the named packages.
package_args() { for p in "$@"; do printf -- '-p %s ' "$p"; done; }

# Waits until FILE is there and not empty, or fails after $2 seconds (at once if process $3 has ended).
wait_for_file() {
  local file="$1" secs="$2" pid="${3:-}"
  for _ in $(seq 1 $((secs * 4))); do
    [ -s "$file" ] && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.25
  done
  return 1
}

# Waits until something listens on host:port, or fails after $3 seconds.
wait_for_port() {
  local host="$1" port="$2" secs="${3:-60}"
  for _ in $(seq 1 $((secs * 4))); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.25
  done
  return 1
}
