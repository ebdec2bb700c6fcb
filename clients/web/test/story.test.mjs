// The pages end to end in a real browser (Debian's chromium through playwright-core)
// against a real voucherd: an admin creates a campaign and watches it live, a shopper
// grabs, redeems and rolls back; double clicks and a reload mid-grab yield one voucher.
// Run by `npm test` (scripts/check); VOUCHERD_BIN names the binary to start.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const here = new URL(".", import.meta.url).pathname;
const BIN = process.env.VOUCHERD_BIN ?? join(here, "../../../target/debug/voucherd");
const PORT = Number(process.env.WEB_TEST_PORT ?? 18391);
const BASE = `http://127.0.0.1:${PORT}`;
const ADMIN = "web-test-admin-token-0123";
const JWT_SECRET = "web-test-jwt-secret-0123456789abcdef0123";
const SHOTS = process.env.SCREENSHOT_DIR ?? join(here, "../../../target/screenshots");
const env = {
  ...process.env,
  DATABASE_URL: process.env.WEB_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/voucherd_web_test",
  REDIS_URL: process.env.WEB_TEST_REDIS_URL ?? "redis://127.0.0.1:6379/15",
  JWT_SECRET,
  ADMIN_TOKEN: ADMIN,
  LISTEN_ADDR: `127.0.0.1:${PORT}`,
  INSTANCE_NAME: "web-test",
  RUST_LOG: "warn",
};

let server;
let browser;
/** Console reports of a refused resource or script (the pages' CSP) and page errors. */
const violations = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  if (await fetch(`${BASE}/healthz`).then(() => true, () => false)) {
    throw new Error(`something already answers on ${BASE}: set WEB_TEST_PORT`);
  }
  // a database of this run's own (voucherd creates it), so the event log starts empty
  const db = new URL(env.DATABASE_URL);
  const name = db.pathname.slice(1);
  db.pathname = "/postgres";
  execFileSync("psql", [db.href, "-qc", `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`]);
  server = spawn(BIN, ["serve"], { env, stdio: ["ignore", "inherit", "inherit"] });
  for (let i = 0; ; i++) {
    if (i > 300 || server.exitCode !== null) throw new Error("voucherd did not become ready");
    if (await fetch(`${BASE}/readyz`).then((r) => r.ok, () => false)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (/Content.Security.Policy|Refused to/i.test(m.text())) violations.push(m.text());
  });
  page.on("pageerror", (e) => violations.push(`page error: ${e.message}`));
  return page;
}

function userToken(sub) {
  return execFileSync(BIN, ["token", "--sub", sub], { env }).toString().trim();
}

async function admin(method, path, body) {
  const r = await fetch(`${BASE}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${ADMIN}`,
      "Content-Type": "application/json",
      ...(method === "GET" ? {} : { "Idempotency-Key": crypto.randomUUID() }),
    },
    body: body && JSON.stringify(body),
  });
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${await r.clone().text()}`);
  return r.json();
}

async function signInShopper(page, sub) {
  await page.goto(`${BASE}/demo`);
  await page.fill("#token", userToken(sub));
  await page.click("#token-form button[type=submit]");
  await page.locator("#who").getByText(sub).waitFor();
}

const walletRows = (page) => page.locator("#wallet tbody tr");

test("an admin creates a campaign and watches it live while a shopper grabs, redeems and rolls back", async () => {
  const name = `Story ${crypto.randomUUID().slice(0, 8)}`;
  const console_ = await newPage();
  await console_.goto(`${BASE}/admin`);
  await console_.fill("#admin-token", ADMIN);
  await console_.click("#sign-in-form button[type=submit]");
  await console_.locator("#view-campaigns").waitFor();
  await console_.fill("#c-name", name);
  await console_.fill("#c-stock", "5");
  await console_.fill("#c-limit", "1");
  await console_.fill("#c-min", "100000");
  await console_.click("#create");
  await console_.locator("#create-message").getByText(`Created "${name}"`).waitFor();
  const row = console_.locator("#campaigns tbody tr", { hasText: name });
  const id = await row.getAttribute("data-campaign");
  assert.match(id, /^[0-9a-f-]{36}$/);
  await console_.screenshot({ path: join(SHOTS, "admin-campaigns.png"), fullPage: true });

  await row.getByRole("link", { name: "Live" }).click();
  await console_.locator("#live-name").getByText(name).waitFor();
  await console_.locator("#live-remaining").getByText("5", { exact: true }).waitFor();
  assert.equal(await console_.textContent("#live-instance"), "web-test");

  const shop = await newPage();
  await signInShopper(shop, `shopper-${crypto.randomUUID().slice(0, 8)}`);
  const card = shop.locator(`.card[data-campaign="${id}"]`);
  await card.getByRole("button", { name: "Grab" }).click();
  await card.locator(".message.ok").getByText("Got it").waitFor();
  await walletRows(shop).first().waitFor();
  assert.equal(await walletRows(shop).count(), 1);

  // the live view's counters move: Postgres' stock and this instance's grants
  await console_.locator("#live-remaining").getByText("4", { exact: true }).waitFor();
  await console_.locator("#live-granted").getByText("1", { exact: true }).waitFor();
  await console_.screenshot({ path: join(SHOTS, "admin-live.png"), fullPage: true });

  // redeem at the pretend checkout, then cancel the order
  await walletRows(shop).first().getByRole("button", { name: "Use at checkout" }).click();
  await shop.fill("#checkout-amount", "120000");
  await shop.click("#quote");
  await shop.locator("#checkout-message").getByText("takes 50,000 VND off").waitFor();
  await shop.click("#pay");
  await shop.locator("#checkout-message").getByText("Paid order").waitFor();
  await walletRows(shop).first().locator(".status.redeemed").waitFor();
  await shop.screenshot({ path: join(SHOTS, "demo.png"), fullPage: true });
  await shop.locator("#orders").getByRole("button", { name: "Cancel order (roll back)" }).click();
  await shop.locator("#orders").getByText("rolled back").waitFor();
  await walletRows(shop).first().locator(".status.issued").waitFor();

  const audit = await admin("GET", `/v1/admin/campaigns/${id}/audit`);
  assert.equal(audit.ok, true, JSON.stringify(audit));
  const c = await admin("GET", `/v1/admin/campaigns/${id}`);
  assert.deepEqual([c.issued, c.remaining, c.redeemed], [1, 4, 0]);

  // A restock whose answer is lost is pressed again: applied once (one key per change
  // until its final answer).
  await console_.click("#nav a[data-view=campaigns]");
  const listed = console_.locator(`#campaigns tbody tr[data-campaign="${id}"]`);
  await listed.waitFor();
  const patch = `**/v1/admin/campaigns/${id}`;
  await console_.route(patch, async (route) => {
    await route.fetch();
    await route.abort();
  });
  await listed.getByRole("button", { name: "Restock" }).click();
  await console_.locator("#campaigns-message").getByText("No answer").waitFor();
  await console_.unroute(patch);
  await listed.getByRole("button", { name: "Restock" }).click();
  await console_.locator("#campaigns-message").getByText("stock added").waitFor();
  const restocked = await admin("GET", `/v1/admin/campaigns/${id}`);
  assert.deepEqual([restocked.total_stock, restocked.remaining], [105, 104]);

  // the event log shows this run's events; the dead letters page renders
  await console_.click("#nav a[data-view=events]");
  await console_
    .locator("#events tbody tr", { hasText: "redemption.rolled_back" })
    .filter({ hasText: id })
    .first()
    .waitFor()
    .catch(async (e) => {
      await console_.screenshot({ path: join(SHOTS, "failure-events.png"), fullPage: true });
      throw e;
    });
  await console_.screenshot({ path: join(SHOTS, "admin-events.png"), fullPage: true });
  await console_.click("#nav a[data-view=dead-letters]");
  await console_.locator("#dead-letters-message").getByText("No dead letters.").waitFor();
  assert.deepEqual(violations, []);
});

test("a double click and a reload in the middle of a grab yield one voucher (per_user_limit 3)", async () => {
  const ends = new Date(Date.now() + 3600_000).toISOString();
  const campaign = await admin("POST", "/v1/admin/campaigns", {
    name: `Limit three ${crypto.randomUUID().slice(0, 8)}`,
    total_stock: 10,
    per_user_limit: 3,
    ends_at: ends,
    voucher: { discount: { type: "fixed", amount: 1000, currency: "VND" }, valid_for_seconds: 3600 },
  });
  const page = await newPage();
  await signInShopper(page, `reloader-${crypto.randomUUID().slice(0, 8)}`);
  const card = page.locator(`.card[data-campaign="${campaign.id}"]`);
  const grab = card.getByRole("button", { name: "Grab" });
  await grab.waitFor();

  // The server grants the first grab, but its answer never reaches the page, which
  // is reloaded while waiting for it.
  let granted;
  const answered = new Promise((resolve) => (granted = resolve));
  let reloaded;
  const gone = new Promise((resolve) => (reloaded = resolve));
  let first = true;
  await page.route(`**/v1/campaigns/${campaign.id}/claims`, async (route) => {
    if (!first) return route.continue();
    first = false;
    const response = await route.fetch();
    granted(response.status());
    // the answer is held until the page has gone, then dropped
    await gone;
    await route.abort().catch(() => {});
  });
  await grab.dblclick();
  assert.equal(await answered, 201);
  assert.equal(
    await page.evaluate(() => Object.keys(sessionStorage).filter((k) => k.startsWith("voucherd:grab")).length),
    1,
    "the pending intent's key is stored",
  );
  await page.reload();
  reloaded();
  // the reloaded page finishes the stored intent with its own key: a replay
  await card.locator(".message.ok").getByText("already granted").waitFor();
  await walletRows(page).first().waitFor();
  assert.equal(await walletRows(page).count(), 1);

  // a plain double click is one intent too
  await grab.dblclick();
  await card.locator(".message.ok").getByText("Got it").waitFor();
  await page.waitForFunction(() => document.querySelectorAll("#wallet tbody tr").length >= 2);
  assert.equal(await walletRows(page).count(), 2);

  const c = await admin("GET", `/v1/admin/campaigns/${campaign.id}`);
  assert.equal(c.issued, 2);
  const audit = await admin("GET", `/v1/admin/campaigns/${campaign.id}/audit`);
  assert.equal(audit.ok, true, JSON.stringify(audit));
  assert.equal(await page.evaluate(() => Object.keys(sessionStorage).filter((k) => k.startsWith("voucherd:grab")).length), 0);
  assert.deepEqual(violations, []);
});
