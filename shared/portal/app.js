// Token Vault admin portal. Plain JavaScript, no dependencies, served with a strict CSP (no inline
// script, no eval, connections only to this origin and the identity provider's). Everything shown is
// built with textContent and DOM nodes, never parsed as markup, so no value coming from the API can
// become HTML.
//
// Sign-in: the OpenID Connect authorization code flow with PKCE, as a public client (no secret), against
// the provider the portal function is configured with (config.json); or, for development, a pasted token.
"use strict";

const API = "/vault/secrets";
const PAGE_SIZE = 100;
const TOKEN_KEY = "token-vault.token";
// The pending sign-in (state, nonce, PKCE verifier) while the browser is at the provider.
const PENDING_KEY = "token-vault.oidc-pending";
const TRAIL_PAGE = 25;

// The rules the API enforces, with its own messages, checked before a request is sent.
const RULES = {
  name: /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/,
  scope: /^[A-Za-z0-9_.:-]{1,64}$/,
  nameMessage: "Secret names are 1 to 128 characters of A-Z, a-z, 0-9, '_', '.' and '-', starting with a letter or digit.",
  scopeMessage: "Each scope is 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'.",
  maxScopes: 20,
  maxValueBytes: 65536,
};

const $ = (id) => document.getElementById(id);

// This tab's session: the access token, and with an OIDC sign-in the ID token (for the provider's sign-out).
const session = {
  get: () => {
    try {
      const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY));
      return saved && typeof saved.token === "string" ? saved : null;
    } catch {
      return null;
    }
  },
  set: (token, idToken) => sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token, idToken: idToken || null })),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

const state = {
  token: null, idToken: null, claims: null, secrets: [], nextToken: null, lastUse: new Map(), sort: { key: "name", dir: 1 },
  config: { oidc: null },
};

function decodeClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch {
    throw new ApiError(0, "network_error", "The vault could not be reached. Check your connection and try again.");
  }
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = data && data.error ? data.error : { code: "http_" + resp.status, message: `The vault answered ${resp.status}.` };
    throw new ApiError(resp.status, err.code, err.message);
  }
  return data;
}

function show(el, text) {
  el.textContent = text || "";
  el.hidden = !text;
}

// ---- Sign-in ----

// The claims are read for display only; the vault decides (a token that is not an admin's is refused by
// the API, whatever it claims).
async function signIn(token, idToken) {
  token = token.trim().replace(/^Bearer\s+/i, "");
  const claims = decodeClaims(token);
  if (!claims) return "This is not a JWT bearer token.";
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) return "This token has expired; sign in again.";
  state.token = token;
  state.claims = claims;
  try {
    await loadSecrets(true, true);
  } catch (e) {
    state.token = null;
    state.claims = null;
    if (e.status === 403) {
      return "This token is not an organization admin's: it lacks vault:admin, so it cannot manage the organization's secrets.";
    }
    return e.status === 401 ? `The vault refused this token: ${e.message}` : e.message;
  }
  state.idToken = idToken || null;
  session.set(token, idToken);
  enterApp();
  return null;
}

function enterApp() {
  const c = state.claims;
  const client = c.client_id || c.azp || c.appid || c.cid || "?";
  const org = c.org_id || c.tid || c.org || "?";
  const who = c.sub && c.sub !== client ? `user ${c.preferred_username || c.sub} · client ${client}` : `client ${client}`;
  const exp = typeof c.exp === "number" ? ` · expires ${formatDate(new Date(c.exp * 1000).toISOString())}` : "";
  $("who").textContent = `Organization ${org} · ${who}${exp}`;
  $("session").hidden = false;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  if (!$("f-client").value && client !== "?") $("f-client").value = client;
  render();
  $("f-name").focus();
}

// Where a sign-in problem is said: beside the provider's button, or the pasted token's form.
const signInError = () => (state.config.oidc ? $("oidc-error") : $("sign-in-error"));

// The vault refused the token (expired, or revoked at the provider): forget it here and say so; the
// provider's session is left alone, so signing in again may not even ask for a password.
function sessionEnded() {
  signOut({ provider: false });
  show(signInError(), "Your session has ended; sign in again.");
}

// "Sign out": forget the tokens and, signed in through the provider, end its session too.
async function signOut({ provider = true } = {}) {
  const idToken = provider ? state.idToken : null;
  session.clear();
  Object.assign(state, { token: null, idToken: null, claims: null, secrets: [], nextToken: null });
  $("secrets").tBodies[0].replaceChildren();
  $("session").hidden = true;
  $("app").hidden = true;
  $("detail").hidden = true;
  $("sign-in").hidden = false;
  $("token").value = "";
  show($("sign-in-error"), "");
  show($("oidc-error"), "");
  // Signed in through the provider: end its session too, and come back here.
  if (idToken && state.config.oidc) {
    try {
      const d = await discover(state.config.oidc.issuer);
      if (d.end_session_endpoint) {
        const url = new URL(d.end_session_endpoint);
        url.searchParams.set("id_token_hint", idToken);
        url.searchParams.set("post_logout_redirect_uri", redirectUri());
        url.searchParams.set("client_id", state.config.oidc.clientId);
        location.assign(url.toString());
        return;
      }
    } catch {
      // The tokens are forgotten either way; the provider's session then ends with its own lifetime.
    }
  }
  (state.config.oidc ? $("oidc-start") : $("token")).focus();
}

// ---- OpenID Connect: authorization code with PKCE ----

const redirectUri = () => `${location.origin}/portal/vault`;

function randomText(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

function base64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

let discovered = null;
async function discover(issuer) {
  if (discovered) return discovered;
  const url = `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
  let doc;
  try {
    const resp = await fetch(url, { cache: "no-store", credentials: "omit" });
    if (!resp.ok) throw new Error(`it answered ${resp.status}`);
    doc = await resp.json();
  } catch (e) {
    throw new Error(`The identity provider's discovery document could not be loaded (${e.message}).`);
  }
  if (doc.issuer !== issuer) throw new Error("The identity provider's discovery document names another issuer.");
  if (!doc.authorization_endpoint || !doc.token_endpoint) throw new Error("The identity provider's discovery document lacks its endpoints.");
  discovered = doc;
  return doc;
}

async function startOidc() {
  const cfg = state.config.oidc;
  show($("oidc-error"), "");
  $("oidc-start").disabled = true;
  try {
    const d = await discover(cfg.issuer);
    const pending = { state: randomText(16), nonce: randomText(16), verifier: randomText(32) };
    const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(pending.verifier)));
    sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
    const url = new URL(d.authorization_endpoint);
    const params = {
      ...cfg.params,
      response_type: "code", client_id: cfg.clientId, redirect_uri: redirectUri(), scope: cfg.scope,
      state: pending.state, nonce: pending.nonce, code_challenge: challenge, code_challenge_method: "S256",
    };
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    location.assign(url.toString());
  } catch (e) {
    show($("oidc-error"), e.message);
    $("oidc-start").disabled = false;
  }
}

// Back from the provider with ?code&state (or ?error): checks state, trades the code for tokens, checks
// the ID token's issuer, audience, nonce and expiry, then signs in with the access token.
async function finishOidc(params) {
  const cfg = state.config.oidc;
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(PENDING_KEY));
  } catch {
    pending = null;
  }
  sessionStorage.removeItem(PENDING_KEY);
  history.replaceState(null, "", location.pathname);
  if (!cfg) return "This portal has no identity provider configured.";
  // Nothing from the address bar is shown or used unless it answers the sign-in this tab started.
  if (!pending || params.get("state") !== pending.state) {
    return "This sign-in answer does not belong to a sign-in started in this tab; sign in again.";
  }
  if (params.get("iss") && params.get("iss") !== cfg.issuer) return "The sign-in answer came from another issuer; sign in again.";
  if (params.get("error")) {
    return `The identity provider did not sign you in: ${params.get("error_description") || params.get("error")}`;
  }
  let tokens;
  try {
    const d = await discover(cfg.issuer);
    const resp = await fetch(d.token_endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code", code: params.get("code") || "", redirect_uri: redirectUri(),
        client_id: cfg.clientId, code_verifier: pending.verifier,
      }),
      cache: "no-store",
      credentials: "omit",
    });
    tokens = await resp.json().catch(() => ({}));
    if (!resp.ok) return `The identity provider refused the sign-in: ${tokens.error_description || tokens.error || resp.status}`;
  } catch (e) {
    return e.message.startsWith("The identity provider") ? e.message : "The identity provider could not be reached to finish the sign-in.";
  }
  if (!tokens.access_token) return "The identity provider returned no access token.";
  // Received straight from the token endpoint over TLS, the ID token's issuer is vouched for by that
  // connection (OpenID Connect Core 3.1.3.7); its claims are checked here and the access token by the vault.
  const id = tokens.id_token ? decodeClaims(tokens.id_token) : null;
  if (!id) return "The identity provider returned no ID token.";
  const aud = Array.isArray(id.aud) ? id.aud : [id.aud];
  if (id.iss !== cfg.issuer || !aud.includes(cfg.clientId)) return "The ID token is not for this portal; sign in again.";
  if (id.nonce !== pending.nonce) return "The ID token does not answer this tab's sign-in (nonce); sign in again.";
  if (typeof id.exp !== "number" || id.exp * 1000 < Date.now()) return "The ID token has expired; sign in again.";
  return signIn(tokens.access_token, tokens.id_token);
}

async function loadSecrets(reset, throwErrors) {
  const list = $("secrets");
  list.setAttribute("aria-busy", "true");
  show($("list-error"), "");
  if (reset) {
    $("list-state").textContent = "Loading secrets…";
  }
  try {
    const query = new URLSearchParams({ all: "true", limit: String(PAGE_SIZE) });
    if (!reset && state.nextToken) query.set("nextToken", state.nextToken);
    const [page] = await Promise.all([api("GET", `${API}?${query}`), reset ? loadLastUses().catch(() => null) : null]);
    state.secrets = reset ? page.secrets : state.secrets.concat(page.secrets);
    state.nextToken = page.nextToken;
  } catch (e) {
    if (throwErrors) throw e;
    show($("list-error"), `Could not load secrets: ${e.message}`);
    if (e.status === 401) sessionEnded();
  } finally {
    list.removeAttribute("aria-busy");
  }
  if (state.token) render();
}

// When each secret was last used through the proxy, and by which client: the newest of the
// organization's last 1,000 uses in the audit log's default range (30 days), in one query.
async function loadLastUses() {
  const query = new URLSearchParams({ event: "vault.secret.used", limit: "1000" });
  const page = await api("GET", `/vault/audit?${query}`);
  const uses = new Map();
  for (const e of page.events) {
    const key = `${e.ownerClientId || ""}\u0000${e.secret}`;
    if (!uses.has(key)) uses.set(key, e);
  }
  state.lastUse = uses;
}

function formatDate(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" }).format(d);
}

function expiryHint(iso) {
  if (!iso) return null;
  const ms = new Date(iso).getTime() - Date.now();
  if (ms <= 0) return { text: "expired", cls: "expired" };
  const minutes = Math.round(ms / 60000);
  const hours = Math.round(ms / 3600000);
  const days = Math.round(ms / 86400000);
  if (minutes < 60) return { text: `expires in ${minutes} minute${minutes === 1 ? "" : "s"}`, cls: "soon" };
  if (hours < 48) return { text: `expires in ${hours} hour${hours === 1 ? "" : "s"}`, cls: "soon" };
  return { text: `expires in ${days} days`, cls: days <= 7 ? "soon" : "" };
}

function timeCell(label, iso) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (iso) {
    const t = document.createElement("time");
    t.dateTime = iso;
    t.title = iso;
    t.textContent = formatDate(iso);
    td.append(t);
  } else {
    td.textContent = label === "Expires" ? "never" : "";
  }
  return td;
}

function tagCell(label, values, empty) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (values.length === 0) td.textContent = empty;
  for (const v of values) {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = v;
    td.append(tag);
  }
  return td;
}

function textCell(label, text) {
  const td = document.createElement("td");
  td.dataset.label = label;
  td.textContent = text ?? "";
  return td;
}

// Readable or use-only, and for a use-only secret its upstream's host (the whole URL on hover) and limits.
function useCell(item) {
  const use = document.createElement("td");
  use.dataset.label = "Use";
  const mode = document.createElement("span");
  mode.className = `tag ${item.access === "use-only" ? "use-only" : ""}`;
  mode.textContent = item.access === "use-only" ? "use-only" : "readable";
  use.append(mode);
  if (item.upstream) {
    const host = document.createElement("span");
    host.className = "hint";
    host.textContent = `→ ${new URL(item.upstream.baseUrl).host}`;
    host.title = item.upstream.baseUrl;
    use.append(host);
  }
  if (item.limits) {
    const limits = document.createElement("span");
    limits.className = "hint";
    limits.textContent = [item.limits.perMinute && `${item.limits.perMinute}/min`, item.limits.perDay && `${item.limits.perDay}/day`]
      .filter(Boolean)
      .join(", ");
    use.append(limits);
  }
  return use;
}

function visibleSecrets() {
  const client = $("filter-client").value;
  const text = $("filter-text").value.trim().toLowerCase();
  const { key, dir } = state.sort;
  return state.secrets
    .filter((s) => !client || s.clientId === client)
    .filter((s) => !text || s.name.toLowerCase().includes(text) || s.scope.some((x) => x.toLowerCase().includes(text)))
    .sort((a, b) => {
      const x = a[key] || "";
      const y = b[key] || "";
      return (x < y ? -1 : x > y ? 1 : 0) * dir || (a.name < b.name ? -1 : 1);
    });
}

function render() {
  // Client filter and the form's client suggestions.
  const clients = [...new Set(state.secrets.map((s) => s.clientId))].sort();
  const select = $("filter-client");
  const chosen = select.value;
  select.replaceChildren(new Option("All clients", ""), ...clients.map((c) => new Option(c, c)));
  select.value = clients.includes(chosen) ? chosen : "";
  $("clients").replaceChildren(...clients.map((c) => new Option(c)));

  const rows = visibleSecrets().map((s) => {
    const tr = document.createElement("tr");
    const name = textCell("Name", s.name);
    name.className = "name";
    const last = state.lastUse.get(`${s.clientId || ""}\u0000${s.name}`);
    const lastUsed = timeCell("Last used", last ? last.time : null);
    if (!last) lastUsed.textContent = s.upstream ? "not yet" : "";
    if (last) {
      const by = document.createElement("span");
      by.className = "hint";
      by.textContent = `by ${last.actorClientId}${last.actorUserId ? ` (${last.actorUserId})` : ""}`;
      lastUsed.append(by);
    }
    const expires = timeCell("Expires", s.expiresAt);
    const hint = expiryHint(s.expiresAt);
    if (hint) {
      const h = document.createElement("span");
      h.className = `hint ${hint.cls}`;
      h.textContent = hint.text;
      expires.append(h);
    }
    const actions = document.createElement("td");
    actions.className = "row-actions";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "secondary";
    open.textContent = "History";
    open.setAttribute("aria-label", `History of ${s.name} of ${s.clientId}`);
    open.addEventListener("click", () => openDetail(s, open));
    const del = document.createElement("button");
    del.type = "button";
    del.className = "secondary";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete ${s.name} of ${s.clientId}`);
    del.addEventListener("click", () => openDelete(s));
    actions.append(open, del);
    tr.append(name, textCell("Client", s.clientId), tagCell("Scopes", s.scope, "any token"), useCell(s), lastUsed, timeCell("Created", s.createdAt), timeCell("Updated", s.updatedAt), expires, actions);
    return tr;
  });
  $("secrets").tBodies[0].replaceChildren(...rows);
  const total = state.secrets.length;
  let text;
  if (total === 0) text = "No secrets in this organization yet. Add one above.";
  else if (rows.length === 0) text = "No secret matches the filter.";
  else text = `Showing ${rows.length} of ${total} secret${total === 1 ? "" : "s"}${state.nextToken ? " loaded so far" : ""}.`;
  $("list-state").textContent = text;
  $("load-more").hidden = !state.nextToken;
  for (const th of document.querySelectorAll("th[aria-sort]")) {
    const key = th.querySelector("button").dataset.sort;
    th.setAttribute("aria-sort", key === state.sort.key ? (state.sort.dir === 1 ? "ascending" : "descending") : "none");
  }
}

// ---- Add or update ----

function fieldError(id, message) {
  const input = $(id);
  const err = $(`${id}-error`);
  show(err, message);
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
  return !message;
}

function validateForm() {
  const name = $("f-name").value;
  const value = $("f-value").value;
  const client = $("f-client").value.trim();
  const scopes = $("f-scope").value.split(/[\s,]+/).filter(Boolean);
  const expires = $("f-expires").value;
  const bytes = new TextEncoder().encode(value).length;
  let expiresAt = null;
  if (expires) {
    const at = new Date(expires);
    expiresAt = Number.isNaN(at.getTime()) ? "invalid" : at;
  }
  const ok = [
    fieldError("f-name", RULES.name.test(name) ? "" : RULES.nameMessage),
    fieldError("f-value", bytes === 0 ? "value must not be empty." : bytes > RULES.maxValueBytes ? "value is larger than 65,536 bytes." : ""),
    fieldError("f-client", client && client.length <= 256 ? "" : "clientId must be 1 to 256 characters without control characters."),
    fieldError(
      "f-scope",
      scopes.length > RULES.maxScopes ? "A secret may carry at most 20 scopes." : scopes.every((s) => RULES.scope.test(s)) ? "" : RULES.scopeMessage,
    ),
    fieldError(
      "f-expires",
      expiresAt === "invalid" ? "expiresAt must be a date and time." : expiresAt && expiresAt <= new Date() ? "expiresAt must be in the future." : "",
    ),
  ].every(Boolean);
  const usage = validateUsage();
  if (!ok || !usage) return null;
  return {
    name,
    value,
    scope: [...new Set(scopes)],
    expiresAt: expiresAt ? expiresAt.toISOString().replace(/\.\d{3}Z$/, "Z") : null,
    clientId: client,
    ...usage,
  };
}

// The access mode, upstream and limits, as the API takes them (the API checks the rest and says why).
function validateUsage() {
  const words = (id) => $(id).value.split(/[\s,]+/).filter(Boolean);
  const access = $("f-access").value;
  const baseUrl = $("f-upstream").value.trim();
  const header = $("f-header").value.trim();
  const template = $("f-template").value.trim();
  const query = $("f-query").value.trim();
  const methods = words("f-methods").map((m) => m.toUpperCase());
  const paths = words("f-paths");
  const limit = (id) => {
    const text = $(id).value.trim();
    return text === "" ? undefined : /^[0-9]{1,7}$/.test(text) && Number(text) >= 1 && Number(text) <= 1000000 ? Number(text) : NaN;
  };
  const perMinute = limit("f-per-minute");
  const perDay = limit("f-per-day");
  const ok = [
    fieldError(
      "f-upstream",
      access === "use-only" && !baseUrl ? "A use-only secret needs an upstream: the one place the proxy may send its value." :
        baseUrl && !/^https?:\/\//i.test(baseUrl) ? "upstream: baseUrl must start with https://" : "",
    ),
    fieldError("f-query", query && (header || template) ? "Give either a header (and template) or a query parameter, not both." : ""),
    fieldError("f-header", ""),
    fieldError("f-template", template && !template.includes("{value}") ? "The template holds {value} exactly once." : ""),
    fieldError("f-methods", methods.every((m) => ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].includes(m)) ? "" : "Methods are among GET HEAD POST PUT PATCH DELETE OPTIONS."),
    fieldError("f-paths", paths.every((p) => p.startsWith("/")) ? "" : "Each path prefix starts with /."),
    fieldError("f-per-minute", Number.isNaN(perMinute) ? "A whole number from 1 to 1000000." : ""),
    fieldError(
      "f-per-day",
      Number.isNaN(perDay) ? "A whole number from 1 to 1000000." : (perMinute || perDay) && !baseUrl ? "Limits count uses through the proxy, so they need an upstream." : "",
    ),
  ].every(Boolean);
  if (!ok) return null;
  const out = { access };
  if (baseUrl) {
    const upstream = { baseUrl };
    if (query) upstream.query = query;
    if (header) upstream.header = header;
    if (template) upstream.template = template;
    if (methods.length) upstream.methods = methods;
    if (paths.length) upstream.paths = paths;
    out.upstream = upstream;
  }
  if (perMinute || perDay) out.limits = { ...(perMinute ? { perMinute } : {}), ...(perDay ? { perDay } : {}) };
  return out;
}

async function saveSecret(event) {
  event.preventDefault();
  show($("form-error"), "");
  $("form-status").textContent = "";
  const body = validateForm();
  if (!body) {
    document.querySelector("#secret-form [aria-invalid='true']")?.focus();
    return;
  }
  $("save").disabled = true;
  try {
    const result = await api("POST", API, body);
    $("f-value").value = "";
    setValueVisible(false);
    await loadSecrets(true);
    // Announced once the list shows the change.
    $("form-status").textContent = `${result.action === "created" ? "Created" : "Updated"} ${body.name} for client ${body.clientId}.`;
  } catch (e) {
    show($("form-error"), e.message);
    if (e.status === 401) sessionEnded();
  } finally {
    $("save").disabled = false;
  }
}

function setValueVisible(visible) {
  $("f-value").type = visible ? "text" : "password";
  $("toggle-value").textContent = visible ? "Hide" : "Show";
  $("toggle-value").setAttribute("aria-pressed", String(visible));
}

// ---- Delete with confirmation ----

let pendingDelete = null;

function openDelete(secret) {
  pendingDelete = secret;
  $("delete-name").textContent = secret.name;
  $("delete-client").textContent = secret.clientId;
  $("delete-confirm").value = "";
  $("delete-submit").disabled = true;
  show($("delete-error"), "");
  $("delete-dialog").showModal();
  $("delete-confirm").focus();
}

async function confirmDelete(event) {
  event.preventDefault();
  const s = pendingDelete;
  if (!s || $("delete-confirm").value !== s.name) return;
  $("delete-submit").disabled = true;
  try {
    const query = new URLSearchParams({ clientId: s.clientId });
    await api("DELETE", `${API}/${encodeURIComponent(s.name)}?${query}`);
    $("delete-dialog").close();
    // The row goes at once; the status is announced once the list shows it.
    state.secrets = state.secrets.filter((x) => !(x.name === s.name && x.clientId === s.clientId));
    render();
    $("form-status").textContent = `Deleted ${s.name} of client ${s.clientId}.`;
    await loadSecrets(true);
  } catch (e) {
    show($("delete-error"), e.message);
    $("delete-submit").disabled = false;
  }
}

// ---- One secret: its versions (rollback behind a confirmation) and its audit trail ----

const detail = { secret: null, opener: null, versions: [], events: [], next: null };
const EVENT_LABELS = {
  "vault.secret.retrieved": "read", "vault.secret.used": "used", "vault.secret.created": "created",
  "vault.secret.updated": "updated", "vault.secret.rolled_back": "rolled back", "vault.secret.deleted": "deleted",
  "vault.secret.access_denied": "refused", "vault.secret.integrity_error": "integrity error",
};

function secretPath(s, suffix) {
  const query = s.clientId ? `?${new URLSearchParams({ clientId: s.clientId })}` : "";
  return `${API}/${encodeURIComponent(s.name)}${suffix}${query}`;
}

function openDetail(s, opener) {
  Object.assign(detail, { secret: s, opener, versions: [], events: [], next: null });
  $("d-name").textContent = s.name;
  const use = s.access === "use-only" ? `use-only through the proxy → ${s.upstream ? s.upstream.baseUrl : "?"}` : "readable";
  $("d-summary").textContent = `Client ${s.clientId || "(a user's)"} · ${use}`;
  $("detail-status").textContent = "";
  $("trail-event").value = "";
  $("app").hidden = true;
  $("detail").hidden = false;
  $("detail-title").scrollIntoView();
  $("detail-back").focus();
  loadVersions();
  loadTrail(true);
}

function closeDetail() {
  $("detail").hidden = true;
  $("app").hidden = false;
  const opener = detail.opener;
  detail.secret = null;
  opener?.focus();
  loadSecrets(true).then(() => {
    // The row was rebuilt: focus its History button again, unless the admin has moved on meanwhile.
    const active = document.activeElement;
    if (detail.secret || !(active === document.body || active === opener || !active?.isConnected)) return;
    const again = [...document.querySelectorAll("#secrets button")].find((b) => b.getAttribute("aria-label") === opener?.getAttribute("aria-label"));
    (again || $("f-name")).focus();
  });
}

async function loadVersions() {
  const s = detail.secret;
  show($("versions-error"), "");
  $("versions").setAttribute("aria-busy", "true");
  try {
    const page = await api("GET", secretPath(s, "/versions"));
    if (detail.secret !== s) return;
    detail.versions = page.versions;
  } catch (e) {
    show($("versions-error"), `Could not load the versions: ${e.message}`);
    if (e.status === 401) sessionEnded();
  } finally {
    $("versions").removeAttribute("aria-busy");
  }
  const rows = detail.versions.map((v) => {
    const tr = document.createElement("tr");
    const num = textCell("Version", `v${v.version}`);
    num.className = "name";
    if (v.current) {
      const tag = document.createElement("span");
      tag.className = "tag current";
      tag.textContent = "current";
      num.append(" ", tag);
    }
    const actions = document.createElement("td");
    if (!v.current) {
      const back = document.createElement("button");
      back.type = "button";
      back.className = "secondary";
      back.textContent = "Roll back";
      back.setAttribute("aria-label", `Roll back to version ${v.version}`);
      back.addEventListener("click", () => openRollback(v));
      actions.append(back);
    }
    tr.append(num, timeCell("Written", v.updatedAt), tagCell("Scopes", v.scope, "any token"), useCell(v), timeCell("Expires", v.expiresAt), actions);
    return tr;
  });
  $("versions").tBodies[0].replaceChildren(...rows);
}

let trailRequest = 0;

async function loadTrail(reset) {
  const s = detail.secret;
  // Only the latest request's answer is shown (a filter changed, or Refresh, while one was loading).
  const request = ++trailRequest;
  $("trail-more").disabled = true;
  show($("trail-error"), "");
  if (reset) {
    detail.events = [];
    detail.next = null;
    $("trail-state").textContent = "Loading the audit trail…";
  }
  const query = new URLSearchParams({ secret: s.name, limit: String(TRAIL_PAGE) });
  if (s.clientId) query.set("clientId", s.clientId);
  if ($("trail-event").value) query.set("event", $("trail-event").value);
  if (!reset && detail.next) query.set("nextToken", detail.next);
  $("trail").setAttribute("aria-busy", "true");
  try {
    const page = await api("GET", `/vault/audit?${query}`);
    if (detail.secret !== s || request !== trailRequest) return;
    // The same name may be another client's secret: keep this one's events (and refusals, which name no owner).
    const mine = page.events.filter((e) => !e.ownerClientId || !s.clientId || e.ownerClientId === s.clientId);
    detail.events = detail.events.concat(mine);
    detail.next = page.nextToken || null;
  } catch (e) {
    if (request !== trailRequest) return;
    show($("trail-error"), `Could not load the audit trail: ${e.message}`);
    if (e.status === 401) sessionEnded();
  } finally {
    if (request === trailRequest) {
      $("trail").removeAttribute("aria-busy");
      $("trail-more").disabled = false;
    }
  }
  const rows = detail.events.map((e) => {
    const tr = document.createElement("tr");
    const outcome = textCell("Outcome", e.outcome);
    if (e.outcome !== "success") outcome.className = "refused";
    tr.append(
      timeCell("When", e.time),
      textCell("Event", EVENT_LABELS[e.event] || e.event),
      outcome,
      textCell("Client", e.actorClientId),
      textCell("User", e.actorUserId || "—"),
      textCell("IP", e.sourceIp || "—"),
      textCell("User agent", e.userAgent || "—"),
    );
    return tr;
  });
  $("trail").tBodies[0].replaceChildren(...rows);
  const n = detail.events.length;
  $("trail-state").textContent =
    n === 0 && !detail.next ? "No events in the last 30 days." :
      n === 0 ? "No events on this page; older ones may follow." :
        `Showing the newest ${n} event${n === 1 ? "" : "s"}${detail.next ? "; older ones follow" : ""}.`;
  $("trail-more").hidden = !detail.next;
}

let pendingRollback = null;

function openRollback(version) {
  pendingRollback = version;
  $("rollback-version").textContent = `v${version.version}`;
  $("rollback-name").textContent = detail.secret.name;
  show($("rollback-error"), "");
  $("rollback-submit").disabled = false;
  $("rollback-dialog").showModal();
  $("rollback-cancel").focus();
}

async function confirmRollback(event) {
  event.preventDefault();
  const s = detail.secret;
  const v = pendingRollback;
  if (!s || !v) return;
  $("rollback-submit").disabled = true;
  try {
    const body = { version: v.version };
    if (s.clientId) body.clientId = s.clientId;
    const result = await api("POST", `${API}/${encodeURIComponent(s.name)}/rollback`, body);
    $("rollback-dialog").close();
    await Promise.all([loadVersions(), loadTrail(true)]);
    $("detail-status").textContent = `Rolled back ${s.name} to version ${v.version}'s value, now version ${result.version}.`;
    $("detail-back").focus();
  } catch (e) {
    show($("rollback-error"), e.message);
    $("rollback-submit").disabled = false;
  }
}

// ---- Wiring ----

document.addEventListener("DOMContentLoaded", async () => {
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    show($("sign-in-error"), "");
    show($("oidc-error"), "");
    const err = await signIn($("token").value);
    if (err) {
      show($("sign-in-error"), err);
      $("token").focus();
    }
  });
  $("oidc-start").addEventListener("click", startOidc);
  // Back from the provider's page with the browser's Back button (the page restored as it was left).
  window.addEventListener("pageshow", () => {
    $("oidc-start").disabled = false;
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("secret-form").addEventListener("submit", saveSecret);
  $("toggle-value").addEventListener("click", () => setValueVisible($("f-value").type === "password"));
  $("refresh").addEventListener("click", () => loadSecrets(true));
  $("load-more").addEventListener("click", () => loadSecrets(false));
  $("filter-client").addEventListener("change", render);
  $("filter-text").addEventListener("input", render);
  for (const button of document.querySelectorAll("th button[data-sort]")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      render();
    });
  }
  $("delete-form").addEventListener("submit", confirmDelete);
  $("delete-cancel").addEventListener("click", () => $("delete-dialog").close());
  $("delete-confirm").addEventListener("input", () => {
    $("delete-submit").disabled = !pendingDelete || $("delete-confirm").value !== pendingDelete.name;
  });
  $("detail-back").addEventListener("click", closeDetail);
  $("trail-event").addEventListener("change", () => loadTrail(true));
  $("trail-refresh").addEventListener("click", () => loadTrail(true));
  $("trail-more").addEventListener("click", () => loadTrail(false));
  $("rollback-form").addEventListener("submit", confirmRollback);
  $("rollback-cancel").addEventListener("click", () => $("rollback-dialog").close());

  try {
    const resp = await fetch("/portal/vault/config.json", { cache: "no-store" });
    if (resp.ok) state.config = await resp.json();
  } catch {
    // Without it the page still offers the pasted token.
  }
  const oidc = state.config.oidc;
  if (oidc) {
    $("oidc-issuer").textContent = new URL(oidc.issuer).host;
    $("oidc-sign-in").hidden = false;
  } else {
    $("paste-sign-in").open = true;
  }
  document.documentElement.dataset.ready = "true";

  const params = new URLSearchParams(location.search);
  const saved = session.get();
  let err = null;
  if (params.has("code") || params.has("error")) {
    err = await finishOidc(params);
    if (err) show(signInError(), err);
  } else if (saved) {
    err = await signIn(saved.token, saved.idToken);
    if (err) {
      session.clear();
      show(signInError(), err);
    }
  } else {
    (oidc ? $("oidc-start") : $("token")).focus();
  }
});
