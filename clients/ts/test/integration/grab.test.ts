// Against a real voucherd started by global-setup.ts (nothing mocked).
import { afterEach, describe, expect, it } from "vitest";
import { createVoucherClient, MemoryStorage, type Voucher } from "../../src/index";
import { createCampaign, droppingProxy, mintToken, uniqueSub, voucherdUrl, type DroppingProxy } from "./helpers";

const fast = { baseDelayMs: 50, maxDelayMs: 2_000 };

async function wallet(token: string, campaignId: string): Promise<Voucher[]> {
  const client = createVoucherClient({ baseUrl: voucherdUrl(), token });
  const r = await client.myVouchers({ limit: 100 });
  if (!r.ok) throw new Error(`wallet: ${r.status} ${r.code}`);
  return r.data.items.filter((v) => v.campaign_id === campaignId);
}

let proxy: DroppingProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

describe("grab() against voucherd", () => {
  it("grants once, then refuses limit_reached as a final answer", async () => {
    const campaign = await createCampaign({ per_user_limit: 1 });
    const token = mintToken(uniqueSub("alice"));
    const storage = new MemoryStorage();
    const client = createVoucherClient({ baseUrl: voucherdUrl(), token, storage, retry: fast });

    const first = await client.grab(campaign);
    expect(first).toMatchObject({ ok: true, replayed: false, attempts: 1 });
    expect(storage.size).toBe(0);

    const second = await client.grab(campaign);
    expect(second).toMatchObject({ ok: false, code: "limit_reached", status: 409, final: true, attempts: 1 });
    if (!second.ok) expect(second.problem?.code).toBe("limit_reached");
    expect(storage.size).toBe(0);
    expect(await wallet(token, campaign)).toHaveLength(1);
  });

  it("stops on sold_out without retrying", async () => {
    const campaign = await createCampaign({ total_stock: 1 });
    const winner = createVoucherClient({ baseUrl: voucherdUrl(), token: mintToken(uniqueSub("w")), retry: fast });
    expect((await winner.grab(campaign)).ok).toBe(true);
    proxy = await droppingProxy(voucherdUrl(), 0);
    const loser = createVoucherClient({ baseUrl: proxy.url, token: mintToken(uniqueSub("l")), retry: fast });
    const r = await loser.grab(campaign);
    expect(r).toMatchObject({ ok: false, code: "sold_out", status: 409, final: true, attempts: 1 });
    expect(proxy.claimKeys).toHaveLength(1);
  });

  it("a dropped first answer is retried with the same key and replays the original voucher", async () => {
    const campaign = await createCampaign({ per_user_limit: 3 });
    const token = mintToken(uniqueSub("bob"));
    proxy = await droppingProxy(voucherdUrl(), 1);
    const storage = new MemoryStorage();
    const client = createVoucherClient({ baseUrl: proxy.url, token, storage, retry: fast });

    const r = await client.grab(campaign);
    expect(r).toMatchObject({ ok: true, replayed: true, attempts: 2 });
    expect(proxy.dropped).toBe(1);
    expect(proxy.claimKeys).toHaveLength(2);
    expect(proxy.claimKeys[1]).toBe(proxy.claimKeys[0]);
    expect(storage.size).toBe(0);

    const held = await wallet(token, campaign);
    expect(held).toHaveLength(1);
    if (r.ok) expect(held[0].code).toBe(r.voucher.code);
  });

  it("double click, a second tab's grab and a reload of one intent yield exactly one voucher (per_user_limit 3)", async () => {
    const campaign = await createCampaign({ per_user_limit: 3 });
    const token = mintToken(uniqueSub("carol"));
    proxy = await droppingProxy(voucherdUrl(), 1);
    const storage = new MemoryStorage(); // the tab's sessionStorage, surviving reloads

    // the first page: the answer to the click is lost, and the page is reloaded
    // before the client retries
    const page1 = createVoucherClient({ baseUrl: proxy.url, token, storage, retry: fast });
    const lost = await page1.grab(campaign, { maxAttempts: 1 });
    expect(lost).toMatchObject({ ok: false, code: "network_error", final: false });
    expect(storage.size).toBe(1);

    // the reloaded page: the user clicks twice; meanwhile a second client instance
    // on the same storage (the old page's code still running) grabs as well
    const page2 = createVoucherClient({ baseUrl: proxy.url, token, storage, retry: fast });
    const straggler = createVoucherClient({ baseUrl: proxy.url, token, storage, retry: fast });
    const results = await Promise.all([page2.grab(campaign), page2.grab(campaign), straggler.grab(campaign)]);

    for (const r of results) expect(r).toMatchObject({ ok: true, replayed: true });
    const codes = new Set(results.map((r) => (r.ok ? r.voucher.code : "")));
    expect(codes.size).toBe(1);
    expect(new Set(proxy.claimKeys).size).toBe(1);
    expect(storage.size).toBe(0);

    const held = await wallet(token, campaign);
    expect(held).toHaveLength(1);
    expect(held[0].code).toBe([...codes][0]);

    // the intent is over: the next click is a new intent with a new key
    const next = await page2.grab(campaign);
    expect(next).toMatchObject({ ok: true, replayed: false });
    expect(await wallet(token, campaign)).toHaveLength(2);
  });
});

describe("typed calls against voucherd", () => {
  it("lists and reads campaigns, reads the wallet, quotes, redeems and rolls back", async () => {
    const campaign = await createCampaign();
    const token = mintToken(uniqueSub("dave"));
    const client = createVoucherClient({ baseUrl: voucherdUrl(), token, retry: fast });

    const list = await client.listCampaigns();
    expect(list.ok).toBe(true);
    if (list.ok) expect(typeof list.data.server_time).toBe("string");

    const one = await client.getCampaign(campaign);
    expect(one).toMatchObject({ ok: true, data: { id: campaign, per_user_limit: 1 } });
    const missing = await client.getCampaign("00000000-0000-4000-8000-000000000000");
    expect(missing).toMatchObject({ ok: false, status: 404, code: "campaign_not_found" });

    const g = await client.grab(campaign);
    if (!g.ok) throw new Error(`grab: ${g.code}`);
    const code = g.voucher.code;

    const mine = await client.myVoucher(code);
    expect(mine).toMatchObject({ ok: true, data: { code, status: "issued" } });

    const order = { order_id: `order-${code}`, order_amount: 250000, currency: "VND" };
    const quote = await client.quote(code, order);
    expect(quote).toMatchObject({ ok: true, data: { redeemable: true, discount_amount: 50000 } });
    const below = await client.quote(code, { ...order, order_id: `small-${code}`, order_amount: 1000 });
    expect(below).toMatchObject({ ok: true, data: { redeemable: false, code: "order_below_minimum" } });

    const key = `redeem-${order.order_id}`;
    const redeemed = await client.redeem(code, order, { idempotencyKey: key });
    if (!redeemed.ok) throw new Error(`redeem: ${redeemed.code}`);
    expect(redeemed.data.voucher.status).toBe("redeemed");
    const again = await client.redeem(code, order, { idempotencyKey: key });
    expect(again).toMatchObject({ ok: true, status: 201 });
    if (again.ok) expect(again.response.headers.get("Idempotent-Replayed")).toBe("true");

    const rolled = await client.rollback(redeemed.data.redemption.id);
    expect(rolled).toMatchObject({ ok: true, status: 200, data: { voucher: { status: "issued" } } });

    const issued = await client.myVouchers({ status: "issued" });
    expect(issued.ok && issued.data.items.some((v) => v.code === code)).toBe(true);
  });
});
