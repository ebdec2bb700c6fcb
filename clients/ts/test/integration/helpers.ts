import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import http from "node:http";
import { inject } from "vitest";

export const voucherdUrl = () => inject("voucherdUrl");

/** A user JWT from `voucherd token --sub …`, signed with the test JWT_SECRET. */
export function mintToken(sub: string): string {
  return execFileSync(inject("voucherdBin"), ["token", "--sub", sub], {
    env: { ...process.env, JWT_SECRET: inject("jwtSecret") },
    encoding: "utf8",
  }).trim();
}

/** A unique user id per run (the test database outlives runs). */
export const uniqueSub = (name: string) => `${name}-${randomUUID()}`;

/** Creates an active campaign through the admin API; returns its id. */
export async function createCampaign(opts: { total_stock?: number; per_user_limit?: number } = {}) {
  const res = await fetch(`${voucherdUrl()}/v1/admin/campaigns`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${inject("adminToken")}`,
      "Idempotency-Key": `create-${randomUUID()}`,
      "Content-Type": "application/json",
    },
    body: JSON.stringify({
      name: `clients/ts test ${randomUUID().slice(0, 8)}`,
      total_stock: opts.total_stock ?? 100,
      per_user_limit: opts.per_user_limit ?? 1,
      ends_at: "2099-01-01T00:00:00Z",
      voucher: {
        discount: { type: "fixed", amount: 50000, currency: "VND" },
        min_order_amount: 200000,
        valid_for_seconds: 604800,
      },
    }),
  });
  const body = (await res.json()) as { id: string };
  if (res.status !== 201) throw new Error(`create campaign: ${res.status} ${JSON.stringify(body)}`);
  return body.id;
}

export interface DroppingProxy {
  url: string;
  /** Idempotency-Key of every claim request that reached the proxy, in order. */
  claimKeys: string[];
  /** Claim answers dropped (forwarded to voucherd, then the client socket destroyed). */
  dropped: number;
  close(): Promise<void>;
}

/**
 * An HTTP proxy in front of voucherd that forwards every request; the first `drop`
 * claim requests (POST …/claims) are forwarded and fully answered by voucherd, but
 * the proxy then destroys the client's socket instead of answering: the effect
 * happened, the client saw a network error.
 */
export async function droppingProxy(upstream: string, drop = 1): Promise<DroppingProxy> {
  const target = new URL(upstream);
  const state = { claimKeys: [] as string[], dropped: 0 };
  const server = http.createServer((req, res) => {
    const isClaim = req.method === "POST" && /\/claims$/.test(req.url ?? "");
    if (isClaim) state.claimKeys.push(String(req.headers["idempotency-key"]));
    const dropThis = isClaim && state.dropped < drop;
    if (dropThis) state.dropped++;
    const up = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target.host },
      },
      (upRes) => {
        const chunks: Buffer[] = [];
        upRes.on("data", (c: Buffer) => chunks.push(c));
        upRes.on("end", () => {
          if (dropThis) {
            req.socket.destroy();
            return;
          }
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          res.end(Buffer.concat(chunks));
        });
      },
    );
    up.on("error", () => req.socket.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get claimKeys() {
      return state.claimKeys;
    },
    get dropped() {
      return state.dropped;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
