// Token Vault admin portal. Plain JavaScript, no dependencies, served with a strict CSP (no inline
// script, no eval, connections only to this origin). Everything shown is built with textContent and DOM
// nodes, never parsed as markup, so no value coming from the API can become HTML.
"use strict";

const API = "/vault/secrets";
const PAGE_SIZE = 100;
const TOKEN_KEY = "token-vault.token";

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

// Where the bearer token comes from. Today it is pasted; an OIDC sign-in can later fill the same slot.
const session = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

const state = { token: null, claims: null, secrets: [], nextToken: null, lastUse: new Map(), sort: { key: "name", dir: 1 } };

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

function isAdmin(claims) {
  const scopes = typeof claims.scope === "string" ? claims.scope.split(" ") : [];
  const scp = Array.isArray(claims.scp) ? claims.scp : [];
  const permissions = Array.isArray(claims.permissions) ? claims.permissions : [];
  return [...scopes, ...scp, ...permissions].includes("vault:admin");
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

async function signIn(token) {
  token = token.trim().replace(/^Bearer\s+/i, "");
  const claims = decodeClaims(token);
  if (!claims) return "This is not a JWT bearer token.";
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) return "This token has expired; get a fresh one.";
  if (!claims.org_id) return "This token names no organization (org_id).";
  if (!isAdmin(claims)) {
    return "This token is not an organization admin's: it lacks vault:admin, so it cannot manage the organization's secrets.";
  }
  state.token = token;
  state.claims = claims;
  try {
    await loadSecrets(true, true);
  } catch (e) {
    state.token = null;
    state.claims = null;
    return e.status === 401 ? `The vault refused this token: ${e.message}` : e.message;
  }
  session.set(token);
  enterApp();
  return null;
}

function enterApp() {
  const c = state.claims;
  const client = c.client_id || c.azp || "?";
  const exp = typeof c.exp === "number" ? ` · expires ${formatDate(new Date(c.exp * 1000).toISOString())}` : "";
  $("who").textContent = `Organization ${c.org_id} · client ${client}${exp}`;
  $("session").hidden = false;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  if (!$("f-client").value) $("f-client").value = client;
  render();
  $("f-name").focus();
}

function signOut() {
  session.clear();
  Object.assign(state, { token: null, claims: null, secrets: [], nextToken: null });
  $("token").value = "";
  $("session").hidden = true;
  $("app").hidden = true;
  $("sign-in").hidden = false;
  show($("sign-in-error"), "");
  $("token").focus();
}

// ---- Listing ----

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
    if (e.status === 401) signOut();
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
    const name = document.createElement("td");
    name.className = "name";
    name.dataset.label = "Name";
    name.textContent = s.name;
    const client = document.createElement("td");
    client.dataset.label = "Client";
    client.textContent = s.clientId;
    const scopes = document.createElement("td");
    scopes.dataset.label = "Scopes";
    if (s.scope.length === 0) scopes.textContent = "any token";
    for (const sc of s.scope) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = sc;
      scopes.append(tag);
    }
    const use = document.createElement("td");
    use.dataset.label = "Use";
    const mode = document.createElement("span");
    mode.className = `tag ${s.access === "use-only" ? "use-only" : ""}`;
    mode.textContent = s.access === "use-only" ? "use-only" : "readable";
    use.append(mode);
    if (s.upstream) {
      const host = document.createElement("span");
      host.className = "hint";
      host.textContent = `→ ${new URL(s.upstream.baseUrl).host}`;
      host.title = s.upstream.baseUrl;
      use.append(host);
    }
    if (s.limits) {
      const limits = document.createElement("span");
      limits.className = "hint";
      limits.textContent = [s.limits.perMinute && `${s.limits.perMinute}/min`, s.limits.perDay && `${s.limits.perDay}/day`]
        .filter(Boolean)
        .join(", ");
      use.append(limits);
    }
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
    const del = document.createElement("button");
    del.type = "button";
    del.className = "secondary";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete ${s.name} of ${s.clientId}`);
    del.addEventListener("click", () => openDelete(s));
    actions.append(del);
    tr.append(name, client, scopes, use, lastUsed, timeCell("Created", s.createdAt), timeCell("Updated", s.updatedAt), expires, actions);
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
    if (e.status === 401) signOut();
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

// ---- Wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    show($("sign-in-error"), "");
    const err = await signIn($("token").value);
    if (err) {
      show($("sign-in-error"), err);
      $("token").focus();
    }
  });
  $("sign-out").addEventListener("click", signOut);
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

  document.documentElement.dataset.ready = "true";
  const saved = session.get();
  if (saved) {
    signIn(saved).then((err) => {
      if (err) {
        session.clear();
        show($("sign-in-error"), err);
      }
    });
  } else {
    $("token").focus();
  }
});
