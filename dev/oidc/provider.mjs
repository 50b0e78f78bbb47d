// The local stack's OpenID Connect provider: oidc-provider (the certified Node.js implementation, pinned
// in package-lock.json) on loopback, configured as a deployed stack's identity provider would be. It issues
// RS256 `at+jwt` access tokens (RFC 9068) for the vault's API carrying the organization (`org_id`) and,
// for admins, the role `vault:admin` (`roles`), which the functions verify through its JWKS exactly as a
// deployed stack does (VAULT_IDP_PROFILE=rfc9068, VAULT_MACHINE_CLAIM=sub=client_id).
//
// Clients: client_local (an agent: client credentials, and the authorization code flow for its user),
// client_admin (an admin machine: client credentials), vault-portal (the admin portal: a public client,
// authorization code with PKCE, no secret). Users sign in on this provider's own login page: `admin` (an
// organization admin) and `alice` (a user, not an admin), both with the password scripts/dev prints.
//
// Started by scripts/dev, which passes (all required):
//   VAULT_LOCAL_OIDC_PORT     port on 127.0.0.1
//   VAULT_LOCAL_OIDC_KEYS     file keeping the signing key across restarts (created 0600)
//   VAULT_LOCAL_OIDC_SECRET   client_local's secret (the agent's)
//   VAULT_LOCAL_OIDC_ADMIN_SECRET client_admin's secret
//   VAULT_LOCAL_OIDC_PASSWORD the users' password
//   VAULT_LOCAL_OIDC_TOKENS   file to write ready tokens to once listening (0600)
//   VAULT_LOCAL_API_PORT      the API's port (the portal's redirect URI)
//   VAULT_JWT_AUDIENCE        the access tokens' audience
import { createServer } from "node:http";
import { createHash, generateKeyPairSync, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import Provider from "oidc-provider";

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`local OIDC provider: ${name} is not set (scripts/dev sets it)`);
    process.exit(1);
  }
  return v;
}

const PORT = Number(need("VAULT_LOCAL_OIDC_PORT"));
const ISSUER = `http://127.0.0.1:${PORT}`;
const SECRETS = { client_local: need("VAULT_LOCAL_OIDC_SECRET"), client_admin: need("VAULT_LOCAL_OIDC_ADMIN_SECRET") };
const PASSWORD = need("VAULT_LOCAL_OIDC_PASSWORD");
const AUDIENCE = need("VAULT_JWT_AUDIENCE");
const API = `http://127.0.0.1:${need("VAULT_LOCAL_API_PORT")}`;
const PORTAL = `${API}/portal/vault`;
// The resource indicator (RFC 8707) of the vault's API; its tokens' `aud` is AUDIENCE.
const RESOURCE = `${API}/vault`;
const ORG = "org_local";
const ADMIN_ROLE = "vault:admin";
const SCOPES = "payments billing";
// Where client_local's user-flow redirect goes: nothing listens there; the code is read off the redirect.
const AGENT_CALLBACK = "http://127.0.0.1/callback";

// Who may sign in, with their organization and roles. The password is scripts/dev's generated one.
const ACCOUNTS = {
  admin: { org: ORG, roles: [ADMIN_ROLE], name: "Local Admin" },
  alice: { org: ORG, roles: [], name: "Alice (not an admin)" },
  "local-user": { org: ORG, roles: [], name: "Local agent user" },
};
// The machines' organization and roles (client metadata a real provider keeps per application).
const MACHINES = { client_local: { org: ORG, roles: [] }, client_admin: { org: ORG, roles: [ADMIN_ROLE] } };

function signingKeys() {
  const file = need("VAULT_LOCAL_OIDC_KEYS");
  if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8"));
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: "jwk" }), kid: `local-${randomUUID().slice(0, 8)}`, alg: "RS256", use: "sig" };
  const jwks = { keys: [jwk] };
  writeFileSync(file, JSON.stringify(jwks), { mode: 0o600 });
  return jwks;
}

const provider = new Provider(ISSUER, {
  clients: [
    {
      client_id: "client_local",
      client_secret: SECRETS.client_local,
      grant_types: ["client_credentials", "authorization_code"],
      response_types: ["code"],
      redirect_uris: [AGENT_CALLBACK],
      scope: `openid ${SCOPES}`,
    },
    { client_id: "client_admin", client_secret: SECRETS.client_admin, grant_types: ["client_credentials"], response_types: [], redirect_uris: [], scope: SCOPES },
    {
      client_id: "vault-portal",
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code"],
      response_types: ["code"],
      redirect_uris: [PORTAL],
      post_logout_redirect_uris: [PORTAL],
      scope: `openid ${SCOPES}`,
    },
  ],
  scopes: ["openid", ...SCOPES.split(" ")],
  jwks: signingKeys(),
  cookies: { keys: [randomBytes(32).toString("base64url")] },
  pkce: { required: () => true },
  ttl: {
    AccessToken: 3600, AuthorizationCode: 60, ClientCredentials: 12 * 3600, Grant: 12 * 3600, IdToken: 3600,
    Interaction: 600, Session: 8 * 3600,
  },
  findAccount: async (_ctx, id) =>
    ACCOUNTS[id] && { accountId: id, claims: async () => ({ sub: id, name: ACCOUNTS[id].name }) },
  claims: { openid: ["sub"], profile: ["name"] },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // This provider's own pages (the defaults load a web font from another origin).
      logoutSource: async (ctx, form) => {
        ctx.body = page(
          "Sign out",
          `<p>Sign out of Token Vault's local identity provider?</p>${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm" class="secondary">No, stay signed in</button>`,
        );
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = page("Signed out", `<p>You are signed out.</p><p><a href="${escape(PORTAL)}">Back to the portal</a></p>`);
      },
    },
    resourceIndicators: {
      enabled: true,
      // Every token is for the vault's API unless asked otherwise, in both flows.
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator, client) => {
        if (indicator !== RESOURCE) throw new Provider.errors.InvalidTarget();
        return {
          scope: SCOPES,
          audience: AUDIENCE,
          // The printed development tokens last 12 hours; the portal's sessions one.
          accessTokenTTL: client.clientId === "vault-portal" ? 3600 : 12 * 3600,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "RS256" } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    if (token.kind === "ClientCredentials") {
      const m = MACHINES[token.clientId];
      return m && { org_id: m.org, roles: m.roles };
    }
    const a = ACCOUNTS[token.accountId];
    return a && { org_id: a.org, roles: a.roles };
  },
  // oidc-provider's default (allow the public clients' redirect origins) is what the portal needs; said
  // here so that it is a decision, not a default.
  clientBasedCORS: (ctx, origin, client) =>
    client.clientAuthMethod === "none" && client.redirectUris.some((u) => new URL(u).origin === origin),
  renderError: async (ctx, out) => {
    ctx.type = "html";
    ctx.body = page("Sign-in error", `<p class="error">${escape(out.error)}: ${escape(out.error_description || "")}</p>`);
  },
});
provider.proxy = false;

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)} · Token Vault local sign-in</title><style>
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1c2330}main{max-width:24rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:.5rem;box-shadow:0 1px 3px #0002}
label{display:block;margin-top:1rem;font-weight:600}input{width:100%;box-sizing:border-box;padding:.5rem;font:inherit}button{margin-top:1.5rem;padding:.5rem 1rem;font:inherit;background:#1f5fbf;color:#fff;border:0;border-radius:.25rem}
.error{color:#b00020}small{color:#555}button.secondary{background:#fff;color:#1f5fbf;border:1px solid #1f5fbf;margin-left:.5rem}</style></head><body><main><h1>${escape(title)}</h1>${body}</main></body></html>`;
}

function loginForm(uid, client, error) {
  return page(
    "Sign in",
    `<p>to <strong>${escape(client)}</strong> (Token Vault's local identity provider)</p>
${error ? `<p class="error" role="alert">${escape(error)}</p>` : ""}
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="username">User name</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form>
<p><small>Users: admin (an organization admin), alice (not an admin). The password is in the output of scripts/dev.</small></p>`,
  );
}

function passwordMatches(given) {
  const h = (s) => createHash("sha256").update(s).digest();
  return timingSafeEqual(h(given), h(PASSWORD));
}

async function readForm(req) {
  let body = "";
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 8192) throw new Error("form too large");
  }
  return new URLSearchParams(body);
}

// The login and consent steps. The vault's clients are first-party: consent is granted for what the
// client asked within what it is registered for, without a page.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  const client = await provider.Client.find(params.client_id);
  if (req.method === "POST" && req.url.endsWith("/login")) {
    const form = await readForm(req);
    const username = form.get("username") || "";
    if (!Object.hasOwn(ACCOUNTS, username) || !passwordMatches(form.get("password") || "")) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      return res.end(loginForm(uid, client?.clientId, "Wrong user name or password."));
    }
    return provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === "login") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
    return res.end(loginForm(uid, client?.clientId));
  }
  if (prompt.name === "consent") {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(" "));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(" "));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  res.writeHead(400, { "content-type": "text/plain" });
  res.end(`unexpected prompt ${prompt.name}\n`);
}

const callback = provider.callback();
const server = createServer((req, res) => {
  if (req.url.startsWith("/interaction/")) {
    interaction(req, res).catch((e) => {
      res.writeHead(400, { "content-type": "text/html; charset=utf-8" });
      res.end(page("Sign-in error", `<p class="error">${escape(e.message)}</p><p><a href="${escape(PORTAL)}">Back to the portal</a></p>`));
    });
  } else {
    callback(req, res);
  }
});

// ---- The ready tokens scripts/dev prints: from this provider's own endpoints, as any client gets them ----

const basic = (client) => `Basic ${Buffer.from(`${client}:${SECRETS[client]}`).toString("base64")}`;

// An access token from the token endpoint, as `client` (with its secret) asks for it with `form`.
async function tokenRequest(client, what, form) {
  const r = await fetch(`${ISSUER}/token`, {
    method: "POST",
    headers: { authorization: basic(client), "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(`the token request ${what}: ${body.error}: ${body.error_description}`);
  return body.access_token;
}

const clientCredentials = (client, scope) =>
  tokenRequest(client, `of ${client}`, { grant_type: "client_credentials", resource: RESOURCE, ...(scope ? { scope } : {}) });

// A user's token through the authorization code flow with PKCE, signing in on the login page above.
async function userToken(client, username, scope) {
  const cookies = new Map();
  const go = async (url, init = {}) => {
    const r = await fetch(url, {
      ...init,
      redirect: "manual",
      headers: { ...(init.headers || {}), cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join("; ") },
    });
    for (const c of r.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const at = pair.indexOf("=");
      cookies.set(pair.slice(0, at), pair.slice(at + 1));
    }
    return r;
  };
  const verifier = randomBytes(32).toString("base64url");
  const challenge = createHash("sha256").update(verifier).digest("base64url");
  const state = randomBytes(16).toString("base64url");
  const auth = new URL(`${ISSUER}/auth`);
  auth.search = new URLSearchParams({
    client_id: client, response_type: "code", redirect_uri: AGENT_CALLBACK, scope, state,
    code_challenge: challenge, code_challenge_method: "S256", resource: RESOURCE,
  });
  let r = await go(auth);
  let location = new URL(r.headers.get("location"), ISSUER);
  r = await go(`${location}/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username, password: PASSWORD }),
  });
  // Login done -> /auth/<uid> -> consent (/interaction/<uid>) -> /auth/<uid> -> the callback with the code.
  for (let hops = 0; hops < 10; hops++) {
    location = new URL(r.headers.get("location"), ISSUER);
    if (location.origin + location.pathname === AGENT_CALLBACK) break;
    r = await go(location);
  }
  if (location.searchParams.get("state") !== state || !location.searchParams.get("code")) {
    throw new Error(`the authorization code flow for ${username} ended at ${location.origin}${location.pathname} (${location.searchParams.get("error") || "no code"})`);
  }
  return tokenRequest(client, `for ${username}`, {
    grant_type: "authorization_code", code: location.searchParams.get("code"), redirect_uri: AGENT_CALLBACK, code_verifier: verifier,
  });
}

server.listen(PORT, "127.0.0.1", async () => {
  try {
    const [m2m, admin, user] = await Promise.all([
      clientCredentials("client_local", "payments"),
      clientCredentials("client_admin", ""),
      userToken("client_local", "local-user", "openid payments"),
    ]);
    writeFileSync(need("VAULT_LOCAL_OIDC_TOKENS"), `M2M_TOKEN=${m2m}\nUSER_TOKEN=${user}\nADMIN_TOKEN=${admin}\n`, { mode: 0o600 });
    console.error(`local OIDC provider (oidc-provider) at ${ISSUER}`);
  } catch (e) {
    console.error(`local OIDC provider: could not issue the development tokens: ${e.message}`);
    process.exit(1);
  }
});
