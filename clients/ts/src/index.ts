/**
 * A typed client for voucherd. Every call goes through `openapi-fetch` with the
 * types generated from the served `/openapi.json` (`src/schema.d.ts`).
 *
 * `grab()` does idempotency right on the client side: one `Idempotency-Key` per user
 * intent, kept in (session) storage until the grab has a final answer, so retries,
 * double clicks and page reloads all reuse it and can never yield a second voucher.
 */
import createClient, { type Client, type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type { components, paths } from "./schema";

type Schemas = components["schemas"];
export type Voucher = Schemas["Voucher"];
export type VoucherList = Schemas["VoucherList"];
export type VoucherStatus = Schemas["VoucherStatus"];
export type PublicCampaign = Schemas["PublicCampaign"];
export type PublicCampaignList = Schemas["PublicCampaignList"];
export type Problem = Schemas["Problem"];
export type ProblemCode = Schemas["ProblemCode"];
export type Quote = Schemas["Quote"];
export type RedeemRequest = Schemas["RedeemRequest"];
export type RedemptionResponse = Schemas["RedemptionResponse"];

/** The subset of the Web Storage API the client needs (`sessionStorage` fits). */
export interface KeyStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** An in-memory `KeyStorage`, the default where no `sessionStorage` exists (Node). */
export class MemoryStorage implements KeyStorage {
  private readonly items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, String(value));
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
  get size(): number {
    return this.items.size;
  }
}

export interface RetryOptions {
  /** Attempts in all, the first included (default 5). */
  maxAttempts?: number;
  /** Upper bound of one wait, Retry-After included (default 10 000 ms). */
  maxDelayMs?: number;
  /** First backoff when the server gives no Retry-After; doubles per attempt (default 250 ms). */
  baseDelayMs?: number;
  /** Random extra added to a Retry-After wait, as a fraction of it (default 0.2, at least 100 ms of spread). */
  jitter?: number;
}

export interface VoucherClientOptions {
  /** e.g. `https://api.shop.example` (no trailing `/v1`). */
  baseUrl: string;
  /** The user's JWT, or a function returning it (called on every request). Optional for public reads. */
  token?: string | (() => string | Promise<string>);
  /** Custom fetch (defaults to `globalThis.fetch`). */
  fetch?: (input: Request) => Promise<Response>;
  /** Where grab keys live until a final answer (defaults to `sessionStorage`, else memory). */
  storage?: KeyStorage;
  /** Scopes stored grab keys; defaults to the token's `sub` claim. */
  userId?: string;
  /** Default retry policy of `grab()`. */
  retry?: RetryOptions;
  /** Prefix of the storage keys (default `voucherd:grab`). */
  storagePrefix?: string;
  /** For tests: key generator (default `crypto.randomUUID`), sleep and random source. */
  randomUUID?: () => string;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
}

export interface GrabOptions extends RetryOptions {
  signal?: AbortSignal;
}

/** Codes the client itself reports when there is no problem+json to read. */
export type ClientErrorCode = "network_error" | "aborted" | "unexpected_response";

export type GrabResult =
  | {
      ok: true;
      voucher: Voucher;
      /** The server replayed an earlier answer for this key (`Idempotent-Replayed: true`). */
      replayed: boolean;
      status: 201;
      idempotencyKey: string;
      attempts: number;
    }
  | {
      ok: false;
      code: ProblemCode | ClientErrorCode;
      /** HTTP status; 0 when no answer arrived (network error, abort). */
      status: number;
      problem?: Problem;
      /**
       * true: a final refusal (sold_out, limit_reached, campaign_not_active, any other
       * 4xx but 401 and 403); the stored key was cleared and the next grab is a new intent.
       * false: the outcome is unknown or temporary (attempts exhausted, network error,
       * 5xx, a refused credential); the key is kept, and the next grab() of this
       * campaign reuses it.
       */
      final: boolean;
      /** The server's Retry-After, in ms, when it sent one. */
      retryAfterMs?: number;
      idempotencyKey: string;
      attempts: number;
    };

/** The outcome of the plain calls: the typed body, or the problem. */
export type ApiResult<T> =
  | { ok: true; status: number; data: T; response: Response }
  | { ok: false; status: number; code: ProblemCode | "unexpected_response"; problem?: Problem; response: Response };

const RETRYABLE_STATUS = new Set([408, 429, 503]);
const DEFAULTS: Required<RetryOptions> = { maxAttempts: 5, maxDelayMs: 10_000, baseDelayMs: 250, jitter: 0.2 };

/** The `sub` claim of a JWT, without verifying it (it only scopes stored keys). */
export function jwtSubject(token: string): string | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const json = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** Retry-After in ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value == null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * The wait before attempt `attempt + 1` (attempt counts from 1): the server's
 * Retry-After plus jitter when given, else exponential backoff with full jitter;
 * always within [0, maxDelayMs].
 */
export function retryDelay(
  attempt: number,
  retryAfterMs: number | undefined,
  policy: Required<RetryOptions>,
  random: () => number = Math.random,
): number {
  let ms: number;
  if (retryAfterMs !== undefined) {
    const spread = Math.max(100, retryAfterMs * policy.jitter);
    ms = retryAfterMs + random() * spread;
  } else {
    const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
    ms = ceiling / 2 + (random() * ceiling) / 2;
  }
  return Math.max(0, Math.min(policy.maxDelayMs, Math.round(ms)));
}

function defaultStorage(): KeyStorage {
  try {
    const s = (globalThis as { sessionStorage?: KeyStorage }).sessionStorage;
    if (s) return s;
  } catch {
    // sessionStorage can throw (privacy settings); fall back to memory
  }
  return new MemoryStorage();
}

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function problemOf(body: unknown): Problem | undefined {
  if (body && typeof body === "object" && typeof (body as { code?: unknown }).code === "string") {
    return body as Problem;
  }
  return undefined;
}

function toResult<T>(r: { data?: T; error?: unknown; response: Response }): ApiResult<T> {
  if (r.response.ok && r.data !== undefined) {
    return { ok: true, status: r.response.status, data: r.data, response: r.response };
  }
  const problem = problemOf(r.error);
  return {
    ok: false,
    status: r.response.status,
    code: problem?.code ?? "unexpected_response",
    problem,
    response: r.response,
  };
}

export function createVoucherClient(options: VoucherClientOptions) {
  const storage = options.storage ?? defaultStorage();
  const prefix = options.storagePrefix ?? "voucherd:grab";
  const randomUUID = options.randomUUID ?? (() => globalThis.crypto.randomUUID());
  const sleep = options.sleep ?? defaultSleep;
  const random = options.random ?? Math.random;
  const basePolicy = { ...DEFAULTS, ...options.retry };

  const api: Client<paths> = createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ""),
    fetch: options.fetch,
  });
  const auth: Middleware = {
    async onRequest({ request }) {
      const token = typeof options.token === "function" ? await options.token() : options.token;
      if (token && !request.headers.has("Authorization")) {
        request.headers.set("Authorization", `Bearer ${token}`);
      }
      return request;
    },
  };
  api.use(auth);

  async function userId(): Promise<string> {
    if (options.userId) return options.userId;
    const token = typeof options.token === "function" ? await options.token() : options.token;
    return (token && jwtSubject(token)) || "anonymous";
  }

  function storageKey(user: string, campaignId: string): string {
    return `${prefix}:${encodeURIComponent(user)}:${campaignId}`;
  }

  /** The key of the current intent for this user and campaign, created once. */
  function intentKey(slot: string): string {
    const existing = storage.getItem(slot);
    if (existing) return existing;
    const key = randomUUID();
    storage.setItem(slot, key);
    return key;
  }

  function clearIntent(slot: string, key: string): void {
    // only our own key: never drop a newer intent's key
    if (storage.getItem(slot) === key) storage.removeItem(slot);
  }

  // Concurrent grab() calls for one slot in this page (a double click) share one run.
  const inFlight = new Map<string, Promise<GrabResult>>();

  async function runGrab(slot: string, campaignId: string, opts: GrabOptions): Promise<GrabResult> {
    const policy: Required<RetryOptions> = {
      maxAttempts: Math.max(1, opts.maxAttempts ?? basePolicy.maxAttempts),
      maxDelayMs: opts.maxDelayMs ?? basePolicy.maxDelayMs,
      baseDelayMs: opts.baseDelayMs ?? basePolicy.baseDelayMs,
      jitter: opts.jitter ?? basePolicy.jitter,
    };
    const key = intentKey(slot);
    let attempt = 0;
    for (;;) {
      attempt++;
      let retryAfterMs: number | undefined;
      let failure: Extract<GrabResult, { ok: false }>;
      try {
        const r = await api.POST("/v1/campaigns/{id}/claims", {
          params: { path: { id: campaignId }, header: { "Idempotency-Key": key } },
          signal: opts.signal,
        });
        const status = r.response.status;
        if (status === 201 && r.data) {
          clearIntent(slot, key);
          return {
            ok: true,
            voucher: r.data.voucher,
            replayed: r.response.headers.get("Idempotent-Replayed") === "true",
            status: 201,
            idempotencyKey: key,
            attempts: attempt,
          };
        }
        const problem = problemOf(r.error);
        const code = problem?.code ?? "unexpected_response";
        retryAfterMs = parseRetryAfter(r.response.headers.get("Retry-After"));
        const retryable =
          RETRYABLE_STATUS.has(status) || (status === 409 && code === "idempotency_key_in_use");
        // Any other 4xx is a final refusal (sold_out, limit_reached, campaign_not_active,
        // campaign_not_found, …). A 5xx other than 503 is not retried but not final
        // either: the key is kept so the next grab of this intent reuses it. Neither is
        // a 401 or 403: the grab was not looked at, and the same intent sent again with
        // a fresh token must reuse its key (its first answer may have been lost).
        const final = !retryable && status >= 400 && status < 500 && status !== 401 && status !== 403;
        failure = { ok: false, code, status, problem, final, retryAfterMs, idempotencyKey: key, attempts: attempt };
        if (!retryable) {
          if (final) clearIntent(slot, key);
          return failure;
        }
      } catch (e) {
        if (opts.signal?.aborted) {
          return { ok: false, code: "aborted", status: 0, final: false, idempotencyKey: key, attempts: attempt };
        }
        // a network error: the request may or may not have reached the server; the
        // same key makes the retry safe either way
        void e;
        failure = { ok: false, code: "network_error", status: 0, final: false, idempotencyKey: key, attempts: attempt };
      }
      if (attempt >= policy.maxAttempts) return failure;
      try {
        await sleep(retryDelay(attempt, retryAfterMs, policy, random), opts.signal);
      } catch {
        return { ok: false, code: "aborted", status: 0, final: false, idempotencyKey: key, attempts: attempt };
      }
    }
  }

  return {
    /** The underlying openapi-fetch client, for any other route of the API. */
    raw: api,

    /** Live and upcoming campaigns, soonest first, with `server_time`. */
    async listCampaigns(): Promise<ApiResult<PublicCampaignList>> {
      return toResult(await api.GET("/v1/campaigns"));
    },

    /** One campaign's public view (cached by the server, lags ≤ ~1 s). */
    async getCampaign(id: string): Promise<ApiResult<PublicCampaign>> {
      return toResult(await api.GET("/v1/campaigns/{id}", { params: { path: { id } } }));
    },

    /** The caller's wallet. */
    async myVouchers(
      query: { status?: VoucherStatus; limit?: number; cursor?: string } = {},
    ): Promise<ApiResult<VoucherList>> {
      return toResult(await api.GET("/v1/me/vouchers", { params: { query } }));
    },

    /** One of the caller's vouchers. */
    async myVoucher(code: string): Promise<ApiResult<Voucher>> {
      return toResult(await api.GET("/v1/me/vouchers/{code}", { params: { path: { code } } }));
    },

    /** What redeeming `code` on this order would give now; no effect. */
    async quote(
      code: string,
      order: { order_id: string; order_amount: number; currency: string },
    ): Promise<ApiResult<Quote>> {
      return toResult(
        await api.GET("/v1/vouchers/{code}/quote", { params: { path: { code }, query: order } }),
      );
    },

    /**
     * Redeem at checkout. Pass the same `idempotencyKey` when retrying one checkout
     * (e.g. derived from the order id); without one a fresh key is used.
     */
    async redeem(
      code: string,
      body: RedeemRequest,
      opts: { idempotencyKey?: string } = {},
    ): Promise<ApiResult<RedemptionResponse>> {
      const key = opts.idempotencyKey ?? randomUUID();
      return toResult(
        await api.POST("/v1/vouchers/{code}/redemptions", {
          params: { path: { code }, header: { "Idempotency-Key": key } },
          body,
        }),
      );
    },

    /** Roll a redemption back (the order was cancelled); rolling back twice replays. */
    async rollback(
      redemptionId: string,
      opts: { idempotencyKey?: string } = {},
    ): Promise<ApiResult<RedemptionResponse>> {
      const key = opts.idempotencyKey ?? `rollback-${redemptionId}`;
      return toResult(
        await api.POST("/v1/redemptions/{id}/rollback", {
          params: { path: { id: redemptionId }, header: { "Idempotency-Key": key } },
        }),
      );
    },

    /**
     * Grab a voucher of `campaignId`. One user intent is one idempotency key, stored
     * (per user and campaign) until a final answer: retries, a second click and a
     * reload of the page reuse it, so the intent yields at most one voucher.
     */
    async grab(campaignId: string, opts: GrabOptions = {}): Promise<GrabResult> {
      const slot = storageKey(await userId(), campaignId);
      const running = inFlight.get(slot);
      if (running) return running;
      const run = runGrab(slot, campaignId, opts).finally(() => inFlight.delete(slot));
      inFlight.set(slot, run);
      return run;
    },

    /** The stored key of a pending grab intent, if any (e.g. to show "finishing your grab…"). */
    async pendingGrabKey(campaignId: string): Promise<string | null> {
      return storage.getItem(storageKey(await userId(), campaignId));
    },
  };
}

export type VoucherClient = ReturnType<typeof createVoucherClient>;
