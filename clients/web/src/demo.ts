/**
 * The storefront demo (`/demo`): live and upcoming campaigns with a countdown on the
 * server's clock, the grab button through the typed client's `grab()` (one key per
 * intent, kept in sessionStorage, so double clicks and reloads yield one voucher), the
 * wallet, and a pretend checkout that redeems and rolls back.
 */
import { createVoucherClient, jwtSubject, type GrabResult, type PublicCampaign } from "../../ts/src/index";
import { $, discountText, h, input, IntentKeys, money, newKey, say, span, when } from "./dom";

const TOKEN_KEY = "voucherd:demo:token";
let token = sessionStorage.getItem(TOKEN_KEY) ?? "";
const client = createVoucherClient({ baseUrl: location.origin, token: () => token });
/** The public list goes without the shopper's token: a CDN caches (and logs) it only so. */
const publicClient = createVoucherClient({ baseUrl: location.origin });

/**
 * The server's clock minus this device's: from the recent list answer with the
 * shortest round trip (the least uncertain), its `server_time` aged by `Age` when a
 * cache served it.
 */
let offsetMs = 0;
const clockSamples: { rtt: number; offset: number }[] = [];

function sampleClock(serverTime: string, age: string | null, sent: number, received: number): void {
  const ageMs = Number(age ?? 0) * 1000 || 0;
  clockSamples.push({ rtt: received - sent, offset: Date.parse(serverTime) + ageMs - (sent + received) / 2 });
  if (clockSamples.length > 10) clockSamples.shift();
  offsetMs = clockSamples.reduce((best, s) => (s.rtt < best.rtt ? s : best)).offset;
}
const serverNow = () => Date.now() + offsetMs;

interface Card {
  root: HTMLElement;
  status: HTMLElement;
  remaining: HTMLElement;
  countdown: HTMLElement;
  button: HTMLButtonElement;
  message: HTMLElement;
  campaign: PublicCampaign;
}
const cards = new Map<string, Card>();
const grabbing = new Set<string>();

const REFUSALS: Record<string, string> = {
  sold_out: "Sold out: every voucher is taken.",
  limit_reached: "You already hold as many of these vouchers as one person may.",
  campaign_not_active: "This sale is not open right now.",
  campaign_not_found: "This sale no longer exists.",
  unauthorized: "Your token was refused: paste a fresh one.",
  rate_limited: "Too many tries: wait a moment.",
};

function signedIn(): boolean {
  return token !== "";
}

function showUser(): void {
  const sub = signedIn() ? jwtSubject(token) : undefined;
  $("sign-in").hidden = signedIn();
  $("who").hidden = !signedIn();
  $("sign-out").hidden = !signedIn();
  $("who").textContent = sub ? `signed in as ${sub}` : "";
}

/** What the campaign is now by the server's clock (the list's status may be a second old). */
function liveStatus(c: PublicCampaign): string {
  const now = serverNow();
  if (now >= Date.parse(c.ends_at)) return "ended";
  if (c.status === "paused" || c.status === "sold_out") return c.status;
  if (now < Date.parse(c.starts_at)) return "scheduled";
  return "active";
}

function makeCard(c: PublicCampaign): Card {
  const status = h("span", { class: "status" });
  const remaining = h("span", { class: "big" });
  const countdown = h("div", { class: "muted" });
  const button = h("button", { class: "primary", "data-campaign": c.id }, "Grab") as HTMLButtonElement;
  const message = h("p", { class: "message" });
  const terms = c.voucher;
  const root = h(
    "div",
    { class: "card", "data-campaign": c.id },
    h("h3", {}, c.name),
    h("div", {}, status, " ", h("span", { class: "muted" }, `limit ${c.per_user_limit} per person`)),
    h("p", {}, discountText(terms.discount), terms.min_order_amount ? h("span", { class: "muted" }, ` on orders from ${money(terms.min_order_amount, terms.discount.currency)}`) : null),
    h("div", {}, remaining, h("span", { class: "muted" }, " left")),
    countdown,
    button,
    message,
  );
  button.addEventListener("click", () => void grab(c.id));
  return { root, status, remaining, countdown, button, message, campaign: c };
}

function paintCard(card: Card): void {
  const c = card.campaign;
  const st = liveStatus(c);
  card.status.textContent = st.replace("_", " ");
  card.status.className = `status ${st}`;
  card.remaining.textContent = c.remaining.toLocaleString("en-US");
  const now = serverNow();
  card.countdown.textContent =
    st === "scheduled" ? `opens in ${span(Date.parse(c.starts_at) - now)}` : st === "ended" ? "over" : `ends in ${span(Date.parse(c.ends_at) - now)}`;
  const busy = grabbing.has(c.id);
  card.button.disabled = busy || !signedIn() || st !== "active";
  card.button.textContent = busy ? "Grabbing…" : "Grab";
}

async function refreshCampaigns(): Promise<void> {
  const sent = Date.now();
  const r = await publicClient.listCampaigns().catch(() => null);
  if (!r || !r.ok) return;
  sampleClock(r.data.server_time, r.response.headers.get("Age"), sent, Date.now());
  const box = $("campaigns");
  const seen = new Set<string>();
  for (const c of r.data.items) {
    seen.add(c.id);
    let card = cards.get(c.id);
    if (!card) {
      card = makeCard(c);
      cards.set(c.id, card);
      box.append(card.root);
    }
    card.campaign = c;
    paintCard(card);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
  $("campaigns-empty").hidden = cards.size > 0;
}

function tick(): void {
  $("server-clock").textContent = `server time ${new Date(serverNow()).toISOString().slice(11, 19)}Z`;
  for (const card of cards.values()) paintCard(card);
}

async function grab(id: string, resuming = false): Promise<void> {
  const card = cards.get(id);
  // a second click while the first grab runs is the same intent: nothing more to do
  if (!card || grabbing.has(id) || !signedIn()) return;
  grabbing.add(id);
  paintCard(card);
  say(card.message, resuming ? "Finishing the grab you started before the page reloaded…" : "");
  let r: GrabResult;
  try {
    r = await client.grab(id);
  } finally {
    grabbing.delete(id);
  }
  if (r.ok) {
    say(card.message, `${r.replayed ? "Your voucher (already granted)" : "Got it"}: ${r.voucher.code}`, "ok");
  } else if (r.final) {
    say(card.message, REFUSALS[r.code] ?? r.problem?.detail ?? r.code, "error");
  } else {
    say(card.message, "No final answer yet (busy or offline). Press Grab again: it will not take a second voucher.", "error");
  }
  paintCard(card);
  await refreshWallet();
}

/** Grabs this tab started but never saw answered (a reload mid-grab) are finished with their own keys. */
async function resumePending(): Promise<void> {
  for (const id of cards.keys()) {
    if (await client.pendingGrabKey(id)) void grab(id, true);
  }
}

async function refreshWallet(): Promise<void> {
  const body = $("wallet").querySelector("tbody")!;
  if (!signedIn()) {
    body.replaceChildren();
    $("wallet-empty").hidden = false;
    return;
  }
  const r = await client.myVouchers({ limit: 100 }).catch(() => null);
  if (r && !r.ok && r.status === 401) return signOut("Your token was refused (expired?): paste a fresh one.");
  if (!r || !r.ok) return;
  body.replaceChildren(
    ...r.data.items.map((v) => {
      const use = h("button", {}, "Use at checkout");
      use.addEventListener("click", () => {
        input("checkout-code").value = v.code;
        input("checkout-order").value = `order-${newKey().slice(0, 8)}`;
      });
      return h(
        "tr",
        { "data-code": v.code },
        h("td", {}, h("code", {}, v.code)),
        h("td", {}, h("span", { class: `status ${v.status}` }, v.status)),
        h("td", {}, discountText(v.discount)),
        h("td", {}, money(v.min_order_amount, v.discount.currency)),
        h("td", { class: "muted" }, when(v.expires_at)),
        h("td", {}, v.status === "issued" ? use : null),
      );
    }),
  );
  $("wallet-empty").hidden = r.data.items.length > 0;
}

function order() {
  return {
    order_id: input("checkout-order").value.trim(),
    order_amount: Number(input("checkout-amount").value),
    currency: input("checkout-currency").value.trim().toUpperCase(),
  };
}

/** One key per checkout attempt (voucher and order), until it has a final answer. */
const payKeys = new IntentKeys();

async function quote(): Promise<void> {
  const msg = $("checkout-message");
  const r = await client.quote(input("checkout-code").value.trim(), order()).catch(() => null);
  if (!r) return say(msg, "No answer (offline?).", "error");
  if (!r.ok) return say(msg, r.problem?.detail ?? r.code, "error");
  const q = r.data;
  say(msg, q.redeemable ? `This voucher takes ${money(q.discount_amount ?? 0, order().currency)} off.` : `Not redeemable: ${q.detail ?? q.code}`, q.redeemable ? "ok" : "error");
}

async function pay(): Promise<void> {
  const button = $("pay") as HTMLButtonElement;
  // a second click or Enter while paying is the same payment: nothing more to do
  if (button.disabled) return;
  button.disabled = true;
  try {
    await payOnce();
  } finally {
    button.disabled = false;
  }
}

async function payOnce(): Promise<void> {
  const msg = $("checkout-message");
  const code = input("checkout-code").value.trim();
  const o = order();
  const attempt = [code, o];
  const r = await client.redeem(code, o, { idempotencyKey: payKeys.key(attempt) }).catch(() => null);
  if (!r) return say(msg, "No answer (offline?). Pay again: the same attempt is not charged twice.", "error");
  payKeys.settle(attempt, r.status, r.ok ? undefined : r.problem);
  if (!r.ok) return say(msg, r.problem?.detail ?? r.code, "error");
  const { redemption, voucher } = r.data;
  say(msg, `Paid order ${redemption.order_id}: ${money(redemption.discount_amount, redemption.currency)} off with ${voucher.code}.`, "ok");
  const state = h("td", {}, h("span", { class: "status active" }, "active"));
  const cancel = h("button", {}, "Cancel order (roll back)") as HTMLButtonElement;
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    const back = await client.rollback(redemption.id).catch(() => null);
    if (back?.ok) {
      state.replaceChildren(h("span", { class: "status paused" }, "rolled back"));
      cancel.remove();
      say(msg, `Order ${redemption.order_id} cancelled: ${voucher.code} is back in your wallet.`, "ok");
    } else {
      cancel.disabled = false;
      say(msg, back?.problem?.detail ?? "the rollback failed; try again", "error");
    }
    await refreshWallet();
  });
  // a replayed payment is the order already listed
  if (document.querySelector(`#orders tr[data-redemption="${CSS.escape(redemption.id)}"]`)) return refreshWallet();
  $("orders").querySelector("tbody")!.prepend(
    h(
      "tr",
      { "data-redemption": redemption.id },
      h("td", {}, redemption.order_id),
      h("td", {}, h("code", {}, voucher.code)),
      h("td", { class: "num" }, money(redemption.order_amount, redemption.currency)),
      h("td", { class: "num" }, money(redemption.discount_amount, redemption.currency)),
      state,
      h("td", {}, cancel),
    ),
  );
  await refreshWallet();
}

function signOut(message = ""): void {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  showUser();
  say($("sign-in-message"), message, message ? "error" : "");
  void refreshWallet();
}

function start(): void {
  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = input("token").value.trim();
    if (!jwtSubject(t)) return say($("sign-in-message"), "That is not a JWT with a sub claim.", "error");
    token = t;
    sessionStorage.setItem(TOKEN_KEY, t);
    showUser();
    await refreshWallet();
    await resumePending();
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("checkout-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void pay();
  });
  $("quote").addEventListener("click", () => void quote());
  input("checkout-order").value = `order-${newKey().slice(0, 8)}`;
  showUser();
  void (async () => {
    await refreshCampaigns();
    await refreshWallet();
    await resumePending();
  })();
  // the list is cached for a second by the server (and by any CDN in front of it)
  setInterval(() => void refreshCampaigns(), 2000);
  setInterval(tick, 250);
  setInterval(() => void refreshWallet(), 5000);
}

start();
