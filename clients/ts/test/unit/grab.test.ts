import { describe, expect, it } from "vitest";
import { createVoucherClient, MemoryStorage, parseRetryAfter, retryDelay, jwtSubject } from "../../src/index";

const CAMPAIGN = "7c3e2a4e-1111-4222-8333-944445555666";
const VOUCHER = {
  id: "0f0e0d0c-0b0a-4900-8800-776655443322",
  code: "ABCDEF1234567890",
  campaign_id: CAMPAIGN,
  status: "issued",
  discount: { type: "fixed", amount: 50000, currency: "VND" },
  min_order_amount: 200000,
  issued_at: "2026-01-01T00:00:00Z",
  expires_at: "2026-01-08T00:00:00Z",
  redeemed_at: null,
  order_id: null,
};

// a token whose payload says sub=alice (the signature is not checked client-side)
function token(sub: string): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: 4102444800 })}.sig`;
}

type Step =
  | { status: number; body?: unknown; headers?: Record<string, string> }
  | "network_error";

function problem(status: number, code: string) {
  return { type: "about:blank", title: code, status, detail: code, code };
}

/** A fake fetch answering the scripted steps in order, recording every request. */
function fakeFetch(steps: Step[]) {
  const requests: { url: string; method: string; key: string | null; auth: string | null }[] = [];
  const fetch = async (req: Request): Promise<Response> => {
    requests.push({
      url: req.url,
      method: req.method,
      key: req.headers.get("Idempotency-Key"),
      auth: req.headers.get("Authorization"),
    });
    const step = steps.shift();
    if (!step) throw new Error("fake fetch: no more scripted answers");
    if (step === "network_error") throw new TypeError("fetch failed");
    const isProblem = step.status >= 400;
    return new Response(step.body === undefined ? null : JSON.stringify(step.body), {
      status: step.status,
      headers: {
        "Content-Type": isProblem ? "application/problem+json" : "application/json",
        ...step.headers,
      },
    });
  };
  return { fetch, requests };
}

// distinct across clients, as crypto.randomUUID is: a reloaded page cannot mint the old key
let n = 0;

function setup(steps: Step[], storage = new MemoryStorage(), sub = "alice") {
  const { fetch, requests } = fakeFetch(steps);
  const sleeps: number[] = [];
  const client = createVoucherClient({
    baseUrl: "http://voucherd.test",
    token: token(sub),
    fetch,
    storage,
    randomUUID: () => `key-${sub}-${++n}-0000`,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    random: () => 0.5,
  });
  return { client, requests, sleeps, storage };
}

const granted = (replayed = false): Step => ({
  status: 201,
  body: { voucher: VOUCHER },
  headers: replayed ? { "Idempotent-Replayed": "true" } : {},
});

describe("grab()", () => {
  it("returns the voucher and clears the stored key on 201", async () => {
    const { client, requests, storage } = setup([granted()]);
    const r = await client.grab(CAMPAIGN);
    expect(r).toMatchObject({ ok: true, replayed: false, attempts: 1, voucher: { code: VOUCHER.code } });
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({
      method: "POST",
      url: `http://voucherd.test/v1/campaigns/${CAMPAIGN}/claims`,
      key: expect.stringMatching(/^key-alice-\d+-0000$/),
      auth: `Bearer ${token("alice")}`,
    });
    expect(storage.size).toBe(0);
  });

  it("retries network errors, 408, 429, 503 and 409 idempotency_key_in_use with the same key", async () => {
    const { client, requests } = setup([
      "network_error",
      { status: 408, body: problem(408, "request_timeout") },
      { status: 429, body: problem(429, "rate_limited"), headers: { "Retry-After": "1" } },
      { status: 503, body: problem(503, "overloaded"), headers: { "Retry-After": "2" } },
      { status: 409, body: problem(409, "idempotency_key_in_use"), headers: { "Retry-After": "1" } },
      granted(true),
    ]);
    const r = await client.grab(CAMPAIGN, { maxAttempts: 6 });
    expect(r).toMatchObject({ ok: true, replayed: true, attempts: 6 });
    expect(new Set(requests.map((q) => q.key)).size).toBe(1);
  });

  it("honours Retry-After (seconds) with jitter, capped by maxDelayMs", async () => {
    const { client, sleeps } = setup([
      { status: 503, body: problem(503, "overloaded"), headers: { "Retry-After": "2" } },
      { status: 429, body: problem(429, "rate_limited"), headers: { "Retry-After": "30" } },
      granted(),
    ]);
    const r = await client.grab(CAMPAIGN, { maxDelayMs: 5_000 });
    expect(r.ok).toBe(true);
    // 2 s + 0.5 × 20% of 2 s of jitter; 30 s capped at 5 s
    expect(sleeps).toEqual([2_200, 5_000]);
  });

  it("backs off exponentially without Retry-After", async () => {
    const { client, sleeps } = setup(["network_error", "network_error", "network_error", granted()]);
    await client.grab(CAMPAIGN, { baseDelayMs: 100 });
    // full jitter over the upper half with random() = 0.5: 75 % of 100, 200, 400
    expect(sleeps).toEqual([75, 150, 300]);
  });

  it("gives up after maxAttempts and keeps the key (the outcome is unknown)", async () => {
    const { client, requests, storage } = setup([
      { status: 503, body: problem(503, "overloaded"), headers: { "Retry-After": "1" } },
      { status: 503, body: problem(503, "overloaded"), headers: { "Retry-After": "1" } },
      { status: 503, body: problem(503, "overloaded"), headers: { "Retry-After": "1" } },
    ]);
    const r = await client.grab(CAMPAIGN, { maxAttempts: 3 });
    expect(r).toMatchObject({ ok: false, code: "overloaded", status: 503, final: false, retryAfterMs: 1000, attempts: 3 });
    expect(requests).toHaveLength(3);
    expect(storage.size).toBe(1);
  });

  it.each([
    [409, "sold_out"],
    [409, "limit_reached"],
    [409, "campaign_not_active"],
    [404, "campaign_not_found"],
    [422, "idempotency_key_reused"],
  ])("stops at once on %i %s and clears the key", async (status, code) => {
    const { client, requests, storage, sleeps } = setup([
      { status, body: problem(status, code), headers: { "Retry-After": "1" } },
    ]);
    const r = await client.grab(CAMPAIGN);
    expect(r).toMatchObject({ ok: false, code, status, final: true, attempts: 1 });
    if (!r.ok) expect(r.problem?.code).toBe(code);
    expect(requests).toHaveLength(1);
    expect(sleeps).toHaveLength(0);
    expect(storage.size).toBe(0);
  });

  it.each([
    [401, "unauthorized"],
    [403, "forbidden"],
  ])("stops on %i %s but keeps the key: the grab was not looked at", async (status, code) => {
    const { client, requests, storage, sleeps } = setup([{ status, body: problem(status, code) }]);
    const r = await client.grab(CAMPAIGN);
    expect(r).toMatchObject({ ok: false, code, status, final: false, attempts: 1 });
    expect(requests).toHaveLength(1);
    expect(sleeps).toHaveLength(0);
    expect(storage.size).toBe(1);
  });

  it("does not retry a 500 but keeps the key for the next grab of the intent", async () => {
    const storage = new MemoryStorage();
    const first = setup([{ status: 500, body: problem(500, "internal_error") }], storage);
    const r = await first.client.grab(CAMPAIGN);
    expect(r).toMatchObject({ ok: false, status: 500, final: false });
    expect(first.requests).toHaveLength(1);
    expect(storage.size).toBe(1);
  });

  it("reuses the stored key across a simulated reload (same storage, new client)", async () => {
    const storage = new MemoryStorage();
    const before = setup(["network_error"], storage);
    const r1 = await before.client.grab(CAMPAIGN, { maxAttempts: 1 });
    expect(r1).toMatchObject({ ok: false, code: "network_error", status: 0, final: false });
    expect(storage.size).toBe(1);

    // the page reloads: a new client, a new key generator, the same sessionStorage
    const after = setup([granted(true)], storage);
    const r2 = await after.client.grab(CAMPAIGN);
    expect(r2).toMatchObject({ ok: true, replayed: true });
    expect(after.requests[0].key).toBe(before.requests[0].key);
    expect(storage.size).toBe(0);
  });

  it("mints a new key for the next intent once the previous one had its final answer", async () => {
    const { client, requests } = setup([granted(), { status: 409, body: problem(409, "limit_reached") }]);
    await client.grab(CAMPAIGN);
    await client.grab(CAMPAIGN);
    expect(requests[0].key).not.toBe(requests[1].key);
  });

  it("keys are per user and per campaign", async () => {
    const storage = new MemoryStorage();
    const a = setup(["network_error", "network_error"], storage, "alice");
    const b = setup(["network_error"], storage, "bob");
    await a.client.grab(CAMPAIGN, { maxAttempts: 1 });
    await a.client.grab("9d3e2a4e-1111-4222-8333-944445555666", { maxAttempts: 1 });
    await b.client.grab(CAMPAIGN, { maxAttempts: 1 });
    expect(storage.size).toBe(3);
    expect(new Set([...a.requests, ...b.requests].map((q) => q.key)).size).toBe(3);
  });

  it("a double click shares one run (one request)", async () => {
    const { client, requests } = setup([granted()]);
    const [r1, r2] = await Promise.all([client.grab(CAMPAIGN), client.grab(CAMPAIGN)]);
    expect(r1).toEqual(r2);
    expect(requests).toHaveLength(1);
  });

  it("reports an abort without clearing the key", async () => {
    const ctrl = new AbortController();
    const storage = new MemoryStorage();
    const { fetch } = fakeFetch([]);
    const client = createVoucherClient({
      baseUrl: "http://voucherd.test",
      token: token("alice"),
      storage,
      fetch: async (req) => {
        ctrl.abort();
        return fetch(req);
      },
    });
    const r = await client.grab(CAMPAIGN, { signal: ctrl.signal });
    expect(r).toMatchObject({ ok: false, code: "aborted", final: false });
    expect(storage.size).toBe(1);
  });
});

describe("helpers", () => {
  it("parseRetryAfter reads seconds and HTTP dates", () => {
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter(null)).toBeUndefined();
    expect(parseRetryAfter("soon")).toBeUndefined();
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:10 GMT", Date.parse("2026-01-01T00:00:00Z"))).toBe(10_000);
  });

  it("retryDelay stays within [0, maxDelayMs]", () => {
    const policy = { maxAttempts: 5, maxDelayMs: 1_000, baseDelayMs: 250, jitter: 0.2 };
    for (const r of [0, 0.5, 0.999]) {
      for (let attempt = 1; attempt < 10; attempt++) {
        for (const ra of [undefined, 0, 500, 60_000]) {
          const d = retryDelay(attempt, ra, policy, () => r);
          expect(d).toBeGreaterThanOrEqual(0);
          expect(d).toBeLessThanOrEqual(1_000);
        }
      }
    }
  });

  it("jwtSubject reads the sub claim", () => {
    expect(jwtSubject(token("ålice"))).toBe("ålice");
    expect(jwtSubject("not-a-jwt")).toBeUndefined();
  });
});

describe("typed calls", () => {
  it("listCampaigns and myVouchers return typed data or the problem", async () => {
    const { client, requests } = setup([
      { status: 200, body: { items: [], server_time: "2026-01-01T00:00:00Z" } },
      { status: 401, body: problem(401, "unauthorized") },
    ]);
    const list = await client.listCampaigns();
    expect(list.ok).toBe(true);
    const wallet = await client.myVouchers({ status: "issued" });
    expect(wallet).toMatchObject({ ok: false, status: 401, code: "unauthorized" });
    expect(requests[1].url).toBe("http://voucherd.test/v1/me/vouchers?status=issued");
  });
});
