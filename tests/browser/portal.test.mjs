// The admin portal in a real browser (Debian's headless Chromium via playwright-core), against the local
// stack that scripts/test starts: VAULT_SMOKE_URL is its API, VAULT_SMOKE_TOKENS the tokens file (with the
// local OpenID provider's tokens, and the user and password that sign in on its login page).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const BASE = process.env.VAULT_SMOKE_URL;
const TOKENS_FILE = process.env.VAULT_SMOKE_TOKENS;
if (!BASE || !TOKENS_FILE) throw new Error("VAULT_SMOKE_URL and VAULT_SMOKE_TOKENS must be set; run through scripts/test");
const tokens = Object.fromEntries(
  readFileSync(TOKENS_FILE, "utf8").trim().split("\n").map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
);
const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), "..", "artifacts");
for (const needed of ["M2M_TOKEN", "ADMIN_TOKEN", "PORTAL_USER", "PORTAL_NON_ADMIN", "PORTAL_PASSWORD"]) {
  if (!tokens[needed]) throw new Error(`${TOKENS_FILE} has no ${needed}: is the stack running with its OpenID provider?`);
}

async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, name), fullPage: true });
}

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
});

async function openPortal(viewport = { width: 1280, height: 900 }) {
  const page = await browser.newPage({ viewport });
  // Console errors and page errors (CSP violations among them), and any failed load of the page or its
  // assets. The API's deliberate 4xx answers to the tests' own fetches are not problems.
  const problems = [];
  page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("response", (r) => r.url().includes("/portal/") && r.status() >= 400 && problems.push(`${r.status()} ${r.url()}`));
  // The script marks the document once its handlers are attached. Under the local emulator (cargo lambda
  // watch) an asset request now and then stalls while it starts another function instance; the page is
  // then loaded once more, and a second stall fails the test. (An asset answered with an error during the
  // load that counts is caught by the response listener above.)
  for (let attempt = 1; ; attempt++) {
    const resp = await page.goto(`${BASE}/portal/vault`, { timeout: 120_000 });
    assert.equal(resp.status(), 200);
    assert.match(resp.headers()["content-security-policy"], /default-src 'none'; script-src 'self'/);
    try {
      await page.locator("html[data-ready='true']").waitFor({ state: "attached", timeout: 20_000 });
      return { page, problems };
    } catch (e) {
      if (attempt === 2) throw e;
      console.error("the portal's script did not load within 20 s under the local emulator; loading the page again");
      // What the stalled load reported (the emulator's own 500 for the stalled asset) is dropped with it;
      // anything the second load reports still fails the test.
      problems.length = 0;
    }
  }
}

// The development fallback: a pasted token.
async function signIn(page, token) {
  if (!(await page.getByLabel("Bearer token").isVisible())) await page.getByText("Paste a bearer token instead").click();
  await page.getByLabel("Bearer token").fill(token);
  await page.getByRole("button", { name: "Use this token" }).click();
}

// Through the identity provider: its own login page, then back to the portal.
async function signInWithProvider(page, user, password = tokens.PORTAL_PASSWORD) {
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL((u) => u.pathname.startsWith("/interaction/"));
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

function localInput(date) {
  return new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

test("an admin adds, sees and deletes a secret of another client", async () => {
  const { page, problems } = await openPortal();
  await signIn(page, tokens.ADMIN_TOKEN);
  await page.getByText("Organization org_local · client client_admin").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 1, "the token is kept in sessionStorage");

  const name = `portal_${Date.now()}`;
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("OAuth client").fill("client_a");
  await page.getByLabel("Value").fill("sk-portal-value-0001");
  await page.getByRole("button", { name: "Show" }).click();
  assert.equal(await page.getByLabel("Value").getAttribute("type"), "text", "show reveals the value");
  await page.getByRole("button", { name: "Hide" }).click();
  assert.equal(await page.getByLabel("Value").getAttribute("type"), "password");
  await page.getByLabel(/^Scopes/).fill("payments, billing");
  await page.getByLabel(/^Expires/).fill(localInput(new Date(Date.now() + 3 * 86400e3 + 2 * 3600e3)));
  await page.getByRole("button", { name: "Save secret" }).click();
  await page.getByText(`Created ${name} for client client_a.`).waitFor();

  const row = page.getByRole("row").filter({ hasText: name });
  await row.waitFor();
  const text = await row.innerText();
  for (const expected of ["client_a", "payments", "billing", "expires in 3 days"]) {
    assert.ok(text.includes(expected), `the row shows ${expected}: ${text}`);
  }
  assert.equal(await row.locator("time").count(), 3, "created, updated and expiry dates are shown");
  assert.equal(await page.getByLabel("Value").inputValue(), "", "the value is cleared from the form once saved");
  assert.ok(!(await page.locator("body").innerText()).includes("sk-portal-value-0001"), "values are never shown");
  await page.getByLabel("Client", { exact: true }).selectOption("client_a");
  await row.waitFor();
  await screenshot(page, "portal.png");
  await page.getByLabel("Client", { exact: true }).selectOption("");

  // A bad name is refused before any request, with the API's own message.
  let posts = 0;
  page.on("request", (r) => r.method() === "POST" && posts++);
  await page.getByLabel("Name", { exact: true }).fill("bad name");
  await page.getByLabel("Value").fill("x");
  await page.getByRole("button", { name: "Save secret" }).click();
  const shown = await page.locator("#f-name-error").innerText();
  const apiMessage = await page.evaluate(async (token) => {
    const r = await fetch("/vault/secrets", {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ name: "bad name", value: "x", clientId: "client_a" }),
    });
    return (await r.json()).error.message;
  }, tokens.ADMIN_TOKEN);
  assert.equal(shown, apiMessage);
  assert.equal(posts, 1, "only the test's own request reached the API");
  assert.equal(await page.getByLabel("Name", { exact: true }).getAttribute("aria-invalid"), "true");

  // Delete through the confirmation dialog, which needs the name typed.
  await row.getByRole("button", { name: `Delete ${name} of client_a` }).click();
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  const confirm = dialog.getByRole("button", { name: "Delete" });
  assert.ok(await confirm.isDisabled());
  await dialog.getByLabel("Secret name").fill(name.slice(0, -1));
  assert.ok(await confirm.isDisabled(), "a near-miss does not enable deletion");
  await dialog.getByLabel("Secret name").fill(name);
  await confirm.click();
  await page.getByText(`Deleted ${name} of client client_a.`).waitFor();
  assert.equal(await page.getByRole("row").filter({ hasText: name }).count(), 0);
  const status = await page.evaluate(
    async ([token, n]) => (await fetch(`/vault/secrets/${n}?clientId=client_a`, { headers: { Authorization: `Bearer ${token}` } })).status,
    [tokens.ADMIN_TOKEN, name],
  );
  assert.equal(status, 404, "the secret is gone from the API too");

  await page.getByRole("button", { name: "Sign out" }).click();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "sign-out clears the token");
  await page.getByRole("button", { name: "Use this token" }).waitFor();
  assert.deepEqual(problems, [], "no console errors or CSP violations");
});

test("an admin adds a use-only secret bound to an upstream, and sees where and when it was used", async () => {
  const { page, problems } = await openPortal();
  await signIn(page, tokens.ADMIN_TOKEN);
  await page.getByText("Organization org_local · client client_admin").waitFor();
  const name = `portal_use_${Date.now()}`;
  // Its upstream is the local stack's own portal page (loopback, which the local stack may call), so that
  // the proxy can use it here.
  const upstream = `${BASE}/portal`;
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("OAuth client").fill("client_admin");
  await page.getByLabel("Value").fill("sk-portal-use-only-0002");
  await page.getByLabel("Access").selectOption("use-only");
  await page.getByRole("button", { name: "Save secret" }).click();
  assert.match(await page.locator("#f-upstream-error").innerText(), /needs an upstream/, "use-only without an upstream is refused");
  await page.getByLabel("Upstream base URL").fill(upstream);
  await page.getByLabel(/^Methods/).fill("get");
  await page.getByLabel(/^Uses per minute/).fill("60");
  await page.getByRole("button", { name: "Save secret" }).click();
  await page.getByText(`Created ${name} for client client_admin.`).waitFor();
  const row = page.getByRole("row").filter({ hasText: name });
  await row.waitFor();
  let text = await row.innerText();
  for (const expected of ["use-only", `→ ${new URL(BASE).host}`, "60/min", "not yet"]) {
    assert.ok(text.includes(expected), `the row shows ${expected}: ${text}`);
  }
  // Its value cannot be read, and an agent (here the admin's own client) uses it through the proxy.
  const [read, used] = await page.evaluate(
    async ([token, n]) => {
      const headers = { Authorization: `Bearer ${token}` };
      const read = (await (await fetch(`/vault/secrets/${n}`, { headers })).json()).error.code;
      const used = (await fetch(`/vault/proxy/${n}/vault`, { headers })).status;
      return [read, used];
    },
    [tokens.ADMIN_TOKEN, name],
  );
  assert.deepEqual([read, used], ["use_only", 200]);
  await page.getByRole("button", { name: "Refresh" }).click();
  await page.getByRole("row").filter({ hasText: name }).filter({ hasText: "by client_admin" }).waitFor();
  text = await page.getByRole("row").filter({ hasText: name }).innerText();
  assert.ok(!text.includes("not yet"), text);
  assert.ok(!(await page.locator("body").innerText()).includes("sk-portal-use-only-0002"), "values are never shown");
  assert.deepEqual(problems, [], "no console errors or CSP violations");
});

test("a user or a client without vault:admin is refused with a clear message", async () => {
  const { page, problems } = await openPortal();
  await signInWithProvider(page, tokens.PORTAL_NON_ADMIN);
  await page.locator("#oidc-error").getByText(/lacks vault:admin/).waitFor();
  assert.ok(await page.locator("#app").isHidden());
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "a refused sign-in keeps no token");
  await signIn(page, tokens.M2M_TOKEN);
  await page.locator("#sign-in-error").getByText(/lacks vault:admin/).waitFor();
  assert.ok(await page.locator("#oidc-error").isHidden(), "only the latest refusal is shown");
  assert.ok(await page.locator("#app").isHidden());
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await signIn(page, "not a token");
  await page.getByText("This is not a JWT bearer token.").waitFor();
  // An answer this tab did not ask for (a crafted link) is neither trusted nor echoed, and is gone from
  // the address bar.
  for (const query of ["?error=access_denied&error_description=Call+evil.example", "?code=forged&state=forged"]) {
    await page.goto(`${BASE}/portal/vault${query}`);
    await page.locator("#oidc-error").getByText("does not belong to a sign-in started in this tab").waitFor();
    assert.ok(!(await page.locator("body").innerText()).includes("evil.example"));
    assert.equal(new URL(page.url()).search, "");
  }
  assert.deepEqual(problems, []);
});

test("the page works on a narrow screen and from the keyboard", async () => {
  // Ids as long as the API allows must not widen the page (a 256-character client id, a 128-character name).
  const long = await fetch(`${BASE}/vault/secrets`, {
    method: "POST",
    headers: { Authorization: `Bearer ${tokens.ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "n".repeat(128), value: "v", clientId: "c".repeat(256) }),
  });
  assert.ok(long.status === 201 || long.status === 200, `seeding a long client id: ${long.status}`);
  const { page, problems } = await openPortal({ width: 390, height: 844 });
  // The provider's sign-in button has focus; the pasted-token fallback opens from the keyboard too.
  await page.getByText("Paste a bearer token instead").focus();
  await page.keyboard.press("Enter");
  await page.getByLabel("Bearer token").focus();
  await page.keyboard.insertText(tokens.ADMIN_TOKEN);
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await page.getByText("Organization org_local").waitFor();
  // The name field has focus after sign-in; fill the form from the keyboard alone.
  const name = `narrow_${Date.now()}`;
  await page.keyboard.insertText(name);
  await page.getByLabel("OAuth client").focus();
  await page.keyboard.press("Control+A");
  await page.keyboard.insertText("client_narrow");
  await page.getByLabel("Value").focus();
  await page.keyboard.insertText("v");
  await page.getByRole("button", { name: "Save secret" }).focus();
  await page.keyboard.press("Enter");
  await page.getByText(`Created ${name} for client client_narrow.`).waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling (${overflow}px)`);
  // The secret's history, from the keyboard: opened from its row, left with the focused back button.
  await page.getByRole("button", { name: `History of ${name} of client_narrow` }).focus();
  await page.keyboard.press("Enter");
  await page.locator("#versions tbody tr").first().waitFor();
  await page.locator("#trail tbody tr").first().waitFor();
  const detailOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(detailOverflow <= 0, `no horizontal scrolling in the history (${detailOverflow}px)`);
  await screenshot(page, "portal-secret-narrow.png");
  assert.equal(await page.evaluate(() => document.activeElement.id), "detail-back");
  await page.keyboard.press("Enter");
  await page.getByRole("row").filter({ hasText: name }).waitFor();
  await page.getByRole("row").filter({ hasText: name }).getByRole("button", { name: /^Delete/ }).click();
  await page.keyboard.insertText(name);
  await page.keyboard.press("Enter");
  await page.getByText(`Deleted ${name} of client client_narrow.`).waitFor();
  assert.deepEqual(problems, []);
});

test("an admin signs in through the identity provider, reads a use-only secret's history and audit trail, rolls it back and signs out", async () => {
  const { page, problems } = await openPortal();
  assert.match(
    (await page.goto(`${BASE}/portal/vault`)).headers()["content-security-policy"],
    new RegExp(`connect-src 'self' ${new URL(tokens.OIDC_ISSUER || "http://127.0.0.1").origin.replace(/[.]/g, "\\.")};`),
    "the policy allows exactly the provider's origin",
  );
  await page.locator("html[data-ready='true']").waitFor({ state: "attached" });
  await screenshot(page, "portal-sign-in.png");
  assert.ok(await page.getByRole("button", { name: "Sign out" }).isHidden(), "nothing to sign out of yet");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByLabel("User name").waitFor();
  await screenshot(page, "provider-login.png");
  await page.getByLabel("User name").fill(tokens.PORTAL_USER);
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Wrong user name or password.").waitFor();
  await page.getByLabel("User name").fill(tokens.PORTAL_USER);
  await page.getByLabel("Password").fill(tokens.PORTAL_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText(`Organization org_local · user ${tokens.PORTAL_USER} · client vault-portal`).waitFor();
  assert.equal(new URL(page.url()).search, "", "the code and state are gone from the address bar");
  assert.deepEqual(await page.evaluate(() => Object.keys(sessionStorage)), ["token-vault.token"], "only this tab's tokens are kept");

  // A use-only secret of the agent's client, bound to the local stack's own portal page (loopback).
  const name = `portal_history_${Date.now()}`;
  const save = async (value, scope) => {
    await page.getByLabel("Name", { exact: true }).fill(name);
    await page.getByLabel("OAuth client").fill("client_local");
    await page.getByLabel("Value").fill(value);
    await page.getByLabel(/^Scopes/).fill(scope);
    await page.getByLabel("Access").selectOption("use-only");
    await page.getByLabel("Upstream base URL").fill(`${BASE}/portal`);
    await page.getByRole("button", { name: "Save secret" }).click();
  };
  await save("sk-history-0001", "");
  await page.getByText(`Created ${name} for client client_local.`).waitFor();
  await save("sk-history-0002", "payments");
  await page.getByText(`Updated ${name} for client client_local.`).waitFor();

  // The agent uses it through the proxy, and is refused when it tries to read it.
  const [used, read] = await page.evaluate(
    async ([token, n]) => {
      const headers = { Authorization: `Bearer ${token}` };
      return [(await fetch(`/vault/proxy/${n}/vault`, { headers })).status, (await fetch(`/vault/secrets/${n}`, { headers })).status];
    },
    [tokens.M2M_TOKEN, name],
  );
  assert.deepEqual([used, read], [200, 403]);
  await page.getByRole("button", { name: "Refresh" }).click();
  const row = page.getByRole("row").filter({ hasText: name });
  await row.filter({ hasText: "by client_local" }).waitFor();
  await screenshot(page, "portal-list.png");

  await row.getByRole("button", { name: `History of ${name} of client_local` }).click();
  await page.getByRole("heading", { name: `Secret ${name}` }).waitFor();
  const versions = page.locator("#versions tbody tr");
  await versions.nth(1).waitFor();
  assert.equal(await versions.count(), 2);
  assert.match(await versions.nth(0).innerText(), /v2\s+current[\s\S]*payments[\s\S]*use-only/);
  assert.match(await versions.nth(1).innerText(), /v1[\s\S]*any token/);
  assert.equal(await versions.nth(0).getByRole("button").count(), 0, "the current version cannot be rolled back to");
  const trail = page.locator("#trail tbody tr");
  const eventOf = (kind) => trail.filter({ has: page.locator('td[data-label="Event"]', { hasText: new RegExp(`^${kind}$`) }) });
  await eventOf("used").waitFor();
  const usedRow = await eventOf("used").innerText();
  assert.match(usedRow, /success[\s\S]*client_local[\s\S]*127\.0\.0\.1/, usedRow);
  // The user agent API Gateway reports (under the local emulator, cargo lambda's own name).
  assert.match(await eventOf("used").locator('td[data-label="User agent"]').innerText(), /^[^—\s]+/);
  const kinds = await page.locator('#trail td[data-label="Event"]').allInnerTexts();
  assert.deepEqual(kinds, ["refused", "used", "updated", "created"], "newest first, each kind once");
  assert.match(await eventOf("refused").innerText(), /use_only[\s\S]*client_local/, "the refused read, with why");
  await page.getByLabel("Event").selectOption("vault.secret.used");
  await page.waitForFunction(() => document.querySelectorAll("#trail tbody tr").length === 1);
  assert.equal(await trail.count(), 1);
  assert.equal(await eventOf("used").count(), 1);
  await page.getByLabel("Event").selectOption("");
  await eventOf("created").waitFor();
  await screenshot(page, "portal-secret.png");

  // Rollback asks first; cancelling changes nothing.
  await page.getByRole("button", { name: "Roll back to version 1" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  assert.match(await dialog.innerText(), new RegExp(`Restore version v1 of ${name}`));
  await screenshot(page, "portal-rollback.png");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  assert.equal(await versions.count(), 2);
  await page.getByRole("button", { name: "Roll back to version 1" }).click();
  await dialog.getByRole("button", { name: "Roll back" }).click();
  await page.getByText(`Rolled back ${name} to version 1's value, now version 3.`).waitFor();
  await versions.nth(2).waitFor();
  assert.match(await versions.nth(0).innerText(), /v3\s+current[\s\S]*any token/, "version 1's scopes are back");
  await eventOf("rolled back").waitFor();
  assert.ok(!(await page.locator("body").innerText()).includes("sk-history-"), "values are never shown");

  await page.getByRole("button", { name: "Back to all secrets" }).click();
  await row.getByRole("button", { name: `History of ${name} of client_local` }).waitFor();
  // Focus returns to the row it left from (once the list has been loaded again).
  await page.waitForFunction(
    (label) => document.activeElement?.getAttribute("aria-label") === label && !document.querySelector("#secrets[aria-busy]"),
    `History of ${name} of client_local`,
  );

  // Signing out forgets the tokens and ends the provider's session: the next sign-in asks again.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Yes, sign me out" }).click();
  await page.getByRole("button", { name: "Sign in", exact: true }).waitFor();
  assert.equal(new URL(page.url()).pathname, "/portal/vault");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByLabel("User name").waitFor();
  assert.deepEqual(problems, [], "no console errors or CSP violations");
});
