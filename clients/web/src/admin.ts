/**
 * The admin console (`/admin`): sign in with an admin token (kept in sessionStorage),
 * list, create, pause, restock and end campaigns, read the event log, replay dead
 * letters, and watch a campaign live (server-sent events, drawn with uPlot).
 */
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { createVoucherClient, type components } from "../../ts/src/index";
import { $, h, input, IntentKeys, isFinal, newKey, say, when } from "./dom";
import { stream } from "./sse";

type Campaign = components["schemas"]["Campaign"];
type LiveFrame = components["schemas"]["LiveFrame"];
type Problem = components["schemas"]["Problem"];

const TOKEN_KEY = "voucherd:admin:token";
let token = sessionStorage.getItem(TOKEN_KEY) ?? "";
const api = createVoucherClient({ baseUrl: location.origin, token: () => token }).raw;
/** Public reads carry no credential (a CDN caches them only without one). */
const publicApi = createVoucherClient({ baseUrl: location.origin }).raw;
// A token that stops working (rotated, or a user's) sends the console back to sign-in.
api.use({
  onResponse({ response }) {
    if (response.status === 401 && token) signOut("The admin token was refused; sign in again.");
    return undefined;
  },
});

function signOut(message = ""): void {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  route();
  say($("sign-in-message"), message, message ? "error" : "");
}

function problemText(error: unknown, status: number): string {
  const p = error as Problem | undefined;
  if (p && typeof p === "object" && "code" in p) {
    const fields = (p as { errors?: { field: string; message: string }[] }).errors;
    const detail = fields?.length ? fields.map((f) => `${f.field}: ${f.message}`).join("; ") : p.detail;
    return `${p.code}: ${detail ?? ""}`;
  }
  return `HTTP ${status}`;
}

// ---- sign-in and views --------------------------------------------------------

const VIEWS = ["campaigns", "live", "events", "dead-letters"] as const;
let stopLive: (() => void) | undefined;

function route(): void {
  const signed = token !== "";
  $("sign-in").hidden = signed;
  $("nav").hidden = !signed;
  $("sign-out").hidden = !signed;
  stopLive?.();
  stopLive = undefined;
  for (const v of VIEWS) $(`view-${v}`).hidden = true;
  if (!signed) return;
  const [, view = "campaigns", id] = location.hash.split("/");
  for (const a of $("nav").querySelectorAll("a")) a.classList.toggle("current", a.dataset.view === view);
  if (view === "live" && id) {
    $("view-live").hidden = false;
    stopLive = watch(id);
  } else if (view === "events") {
    $("view-events").hidden = false;
    void loadEvents(true);
  } else if (view === "dead-letters") {
    $("view-dead-letters").hidden = false;
    void loadDeadLetters();
  } else {
    $("view-campaigns").hidden = false;
    void loadCampaigns(true);
  }
}

async function signIn(candidate: string): Promise<void> {
  const r = await api.GET("/v1/admin/campaigns", {
    params: { query: { limit: 1 } },
    headers: { Authorization: `Bearer ${candidate}` },
  });
  if (!r.response.ok) {
    return say($("sign-in-message"), r.response.status === 403 ? "That is a user's token, not an admin's." : "That token was refused.", "error");
  }
  token = candidate;
  sessionStorage.setItem(TOKEN_KEY, token);
  input("admin-token").value = "";
  say($("sign-in-message"), "");
  route();
}

// ---- campaigns ----------------------------------------------------------------

let nextCursor: string | null = null;

async function loadCampaigns(fresh: boolean): Promise<void> {
  const body = $("campaigns").querySelector("tbody")!;
  const r = await api.GET("/v1/admin/campaigns", { params: { query: { limit: 50, cursor: fresh ? undefined : nextCursor ?? undefined } } });
  if (!r.data) return say($("campaigns-message"), problemText(r.error, r.response.status), "error");
  if (fresh) body.replaceChildren();
  for (const c of r.data.items) body.append(campaignRow(c));
  nextCursor = r.data.next_cursor ?? null;
  $("campaigns-more").hidden = nextCursor === null;
}

function campaignRow(c: Campaign): HTMLElement {
  const live = h("a", { href: `#/live/${c.id}` }, "Live");
  const pause = h("button", {}, c.paused ? "Resume" : "Pause");
  const restock = h("button", {}, "Restock");
  const amount = h("input", { type: "number", min: "1", value: "100", class: "restock", "aria-label": "units to add" }) as HTMLInputElement;
  const end = h("button", { title: c.status === "scheduled" ? "not open yet: pause it instead" : "" }, "End") as HTMLButtonElement;
  // a campaign not open yet cannot end before it starts (ends_at > starts_at)
  end.disabled = c.status === "scheduled" || c.status === "ended";
  const row = h(
    "tr",
    { "data-campaign": c.id },
    h("td", {}, c.name, h("div", { class: "muted mono" }, c.id)),
    h("td", {}, h("span", { class: `status ${c.status}` }, c.status.replace("_", " "))),
    h("td", { class: "num" }, c.remaining.toLocaleString("en-US")),
    h("td", { class: "num" }, c.total_stock.toLocaleString("en-US")),
    h("td", { class: "num" }, c.issued.toLocaleString("en-US")),
    h("td", { class: "num" }, c.redeemed.toLocaleString("en-US")),
    h("td", { class: "muted" }, when(c.starts_at)),
    h("td", { class: "muted" }, when(c.ends_at)),
    h("td", { class: "actions" }, live, " ", pause, " ", amount, restock, " ", end),
  );
  const act = (button: HTMLElement, body: () => components["schemas"]["UpdateCampaign"] | undefined, done: string) =>
    button.addEventListener("click", async () => {
      const b = button as HTMLButtonElement;
      const change = body();
      if (!change) return;
      b.disabled = true;
      try {
        const r = await update(c.id, change);
        if (!r.ok) return say($("campaigns-message"), r.text, "error");
        say($("campaigns-message"), `${c.name}: ${done}.`, "ok");
        row.replaceWith(campaignRow(r.campaign));
      } finally {
        b.disabled = false;
      }
    });
  act(pause, () => ({ paused: !c.paused }), c.paused ? "resumed" : "paused");
  act(restock, () => ({ add_stock: Number(amount.value) }), "stock added");
  act(
    end,
    () => {
      if (!confirm(`End "${c.name}" now? Grabs stop at once.`)) return undefined;
      // now by the server's clock, which decides when a campaign is over; never the
      // device's, which may run ahead and leave the sale open
      if (serverOffsetMs === undefined) {
        say($("campaigns-message"), "The server's clock is not known yet; try again in a moment.", "error");
        return undefined;
      }
      return { ends_at: new Date(Date.now() + serverOffsetMs).toISOString() };
    },
    "ended",
  );
  return row;
}

/** One key per change (campaign and body) until the server answers it finally, so a
 * retried restock whose answer was lost is applied once. */
const changeKeys = new IntentKeys();

async function update(id: string, body: components["schemas"]["UpdateCampaign"]) {
  const intent = [id, body];
  try {
    const r = await api.PATCH("/v1/admin/campaigns/{id}", {
      params: { path: { id }, header: { "Idempotency-Key": changeKeys.key(intent) } },
      body,
    });
    changeKeys.settle(intent, r.response.status, r.error);
    return r.data ? { ok: true as const, campaign: r.data } : { ok: false as const, text: problemText(r.error, r.response.status) };
  } catch {
    return { ok: false as const, text: "No answer (offline?). Press again: the change is applied once." };
  }
}

/** The server's clock minus this device's, from the public list's `server_time`. */
let serverOffsetMs: number | undefined;

async function measureServerClock(): Promise<void> {
  const sent = Date.now();
  const r = await publicApi.GET("/v1/campaigns").catch(() => null);
  if (r?.data) serverOffsetMs = Date.parse(r.data.server_time) - (sent + Date.now()) / 2;
}

/** The key of the campaign being created: kept until the server gives a final answer. */
let createKey: string | undefined;

function utc(id: string): string | undefined {
  const v = input(id).value;
  return v ? new Date(`${v}Z`).toISOString() : undefined;
}

async function create(): Promise<void> {
  const button = $("create") as HTMLButtonElement;
  const msg = $("create-message");
  const percent = (input("c-type") as unknown as HTMLSelectElement).value === "percent";
  const currency = input("c-currency").value.trim().toUpperCase();
  const body = {
    name: input("c-name").value,
    total_stock: Number(input("c-stock").value),
    per_user_limit: Number(input("c-limit").value),
    starts_at: utc("c-starts"),
    ends_at: utc("c-ends") ?? "",
    voucher: {
      discount: percent
        ? { type: "percent" as const, basis_points: Number(input("c-bp").value), max_amount: Number(input("c-max").value), currency }
        : { type: "fixed" as const, amount: Number(input("c-amount").value), currency },
      min_order_amount: Number(input("c-min").value) || undefined,
      valid_for_seconds: Number(input("c-valid").value) || undefined,
    },
  };
  createKey ??= newKey();
  button.disabled = true;
  try {
    const r = await api.POST("/v1/admin/campaigns", {
      params: { header: { "Idempotency-Key": createKey } },
      body: body as components["schemas"]["CreateCampaign"],
    });
    if (isFinal(r.response.status, r.error)) createKey = undefined;
    if (!r.data) return say(msg, problemText(r.error, r.response.status), "error");
    say(msg, `Created "${r.data.name}" (${r.data.id}).`, "ok");
    await loadCampaigns(true);
  } catch {
    say(msg, "No answer (offline?). Create again: it will not make a second campaign.", "error");
  } finally {
    button.disabled = false;
  }
}

// ---- the live view --------------------------------------------------------------

const WINDOW = 300;

function chart(el: HTMLElement, title: string, series: { label: string; stroke: string }[]): uPlot {
  const width = Math.max(320, el.clientWidth || 360);
  return new uPlot(
    {
      title,
      width,
      height: 220,
      scales: { x: { time: true } },
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.stroke, width: 2 }))],
      axes: [{}, { size: 60 }],
    },
    [[], ...series.map(() => [])],
    el,
  );
}

function watch(id: string): () => void {
  $("live-name").textContent = id;
  say($("live-message"), "connecting…");
  const t: number[] = [];
  const stock: (number | null)[] = [];
  const gps: number[] = [];
  const rps: number[] = [];
  const e5: number[] = [];
  const p99: (number | null)[] = [];
  const refusals = new Map<string, number>();
  let granted = 0;
  let instance = "";
  let lastSeq = -1;
  for (const c of ["chart-stock", "chart-rates", "chart-p99"]) $(c).replaceChildren();
  const charts = {
    stock: chart($("chart-stock"), "Remaining stock", [{ label: "remaining", stroke: "#1f8a4c" }]),
    rates: chart($("chart-rates"), "Per second (this instance)", [
      { label: "grants", stroke: "#1f8a4c" },
      { label: "refusals", stroke: "#b26b00" },
      { label: "5xx", stroke: "#d9363e" },
    ]),
    p99: chart($("chart-p99"), "Grab p99 (ms)", [{ label: "p99", stroke: "#4b4bb0" }]),
  };
  const stop = stream({
    url: `/v1/admin/campaigns/${encodeURIComponent(id)}/live`,
    token: () => token,
    onStatus: (s, error) => say($("live-message"), s, error ? "error" : ""),
    onRefused: (status, body) => say($("live-message"), problemText(body, status), "error"),
    onEvent: (type, data) => {
      if (type !== "frame") return;
      const f = JSON.parse(data) as LiveFrame;
      // A reconnect is first sent the frame last seen; a new instance (another replica
      // behind the balancer, or a restart) starts its own totals.
      if (f.instance !== instance) {
        instance = f.instance;
        granted = 0;
        refusals.clear();
      } else if (f.seq === lastSeq) {
        return;
      }
      lastSeq = f.seq;
      const per = (n: number) => n / (f.interval_seconds || 1);
      const refused = Object.values(f.refusals).reduce((a, b) => a + (b ?? 0), 0);
      granted += f.grants;
      for (const [code, n] of Object.entries(f.refusals)) refusals.set(code, (refusals.get(code) ?? 0) + (n ?? 0));
      $("live-instance").textContent = f.instance;
      if (f.campaign) {
        $("live-name").textContent = f.campaign.name;
        $("live-status").textContent = f.campaign.status.replace("_", " ");
        $("live-status").className = `status ${f.campaign.status}`;
        $("live-remaining").textContent = f.campaign.remaining.toLocaleString("en-US");
        $("live-issued").textContent = `${f.campaign.issued.toLocaleString("en-US")} / ${f.campaign.total_stock.toLocaleString("en-US")}`;
      } else {
        say($("live-message"), "Postgres did not answer this second's read; figures below are still this instance's.", "error");
      }
      $("live-gps").textContent = per(f.grants).toFixed(1);
      $("live-granted").textContent = granted.toLocaleString("en-US");
      $("live-rps").textContent = per(refused).toFixed(1);
      $("live-p99").textContent = f.p99_ms == null ? "–" : f.p99_ms.toFixed(1);
      $("live-5xx").textContent = per(f.errors_5xx).toFixed(1);
      $("live-refusals").querySelector("tbody")!.replaceChildren(
        ...[...refusals].sort((a, b) => b[1] - a[1]).map(([code, n]) => h("tr", {}, h("td", {}, h("code", {}, code)), h("td", { class: "num" }, n.toLocaleString("en-US")))),
      );
      t.push(Date.parse(f.at) / 1000);
      stock.push(f.campaign?.remaining ?? null);
      gps.push(per(f.grants));
      rps.push(per(refused));
      e5.push(per(f.errors_5xx));
      p99.push(f.p99_ms ?? null);
      for (const a of [t, stock, gps, rps, e5, p99]) if (a.length > WINDOW) a.shift();
      charts.stock.setData([t, stock as number[]]);
      charts.rates.setData([t, gps, rps, e5]);
      charts.p99.setData([t, p99 as number[]]);
    },
  });
  return () => {
    stop();
    for (const c of Object.values(charts)) c.destroy();
  };
}

// ---- event log and dead letters ---------------------------------------------------

let eventsAfter = 0;

async function loadEvents(fresh: boolean): Promise<void> {
  const body = $("events").querySelector("tbody")!;
  if (fresh) {
    eventsAfter = 0;
    body.replaceChildren();
  }
  const r = await api.GET("/v1/admin/events", { params: { query: { after: eventsAfter, limit: 100 } } });
  if (!r.data) return say($("events-message"), problemText(r.error, r.response.status), "error");
  for (const e of r.data.items) {
    body.append(
      h("tr", {}, h("td", { class: "num" }, e.seq), h("td", {}, h("code", {}, e.type)), h("td", { class: "muted" }, when(e.occurred_at)), h("td", {}, h("pre", { class: "data" }, JSON.stringify(e.data)))),
    );
  }
  eventsAfter = r.data.next_after;
  say($("events-message"), r.data.items.length ? "" : "No newer events.");
}

async function loadDeadLetters(): Promise<void> {
  const body = $("dead-letters").querySelector("tbody")!;
  const r = await api.GET("/v1/admin/webhooks/dead-letters", { params: { query: { limit: 100 } } });
  if (!r.data) return say($("dead-letters-message"), problemText(r.error, r.response.status), "error");
  body.replaceChildren(
    ...r.data.items.map((d) => {
      const replay = h("button", {}, "Replay") as HTMLButtonElement;
      replay.addEventListener("click", async () => {
        replay.disabled = true;
        const intent = ["replay", d.id];
        try {
          const res = await api.POST("/v1/admin/webhooks/dead-letters/{id}/replay", {
            params: { path: { id: d.id }, header: { "Idempotency-Key": changeKeys.key(intent) } },
          });
          changeKeys.settle(intent, res.response.status, res.error);
          if (!res.response.ok) return say($("dead-letters-message"), problemText(res.error, res.response.status), "error");
          say($("dead-letters-message"), `Event ${d.seq} queued for delivery again.`, "ok");
          await loadDeadLetters();
        } catch {
          say($("dead-letters-message"), "No answer (offline?). Press again: it is replayed once.", "error");
        } finally {
          replay.disabled = false;
        }
      });
      return h("tr", {}, h("td", { class: "num" }, d.seq), h("td", {}, h("code", {}, d.type)), h("td", { class: "num" }, d.attempts), h("td", { class: "muted" }, d.last_error ?? ""), h("td", {}, replay));
    }),
  );
  say($("dead-letters-message"), r.data.items.length ? "" : "No dead letters.");
}

// ---- start ----------------------------------------------------------------------

function start(): void {
  $("sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void signIn(input("admin-token").value.trim());
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void create();
  });
  $("c-type").addEventListener("change", () => {
    const percent = (input("c-type") as unknown as HTMLSelectElement).value === "percent";
    $("c-amount-label").hidden = percent;
    $("c-bp-label").hidden = !percent;
    $("c-max-label").hidden = !percent;
  });
  $("campaigns-more").addEventListener("click", () => void loadCampaigns(false));
  $("events-more").addEventListener("click", () => void loadEvents(false));
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 19);
  input("c-ends").value = tomorrow;
  window.addEventListener("hashchange", route);
  route();
  void measureServerClock();
  setInterval(() => void measureServerClock(), 30_000);
}

start();
