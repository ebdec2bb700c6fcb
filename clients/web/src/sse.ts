/**
 * Server-sent events over `fetch`, so the admin token travels in `Authorization`
 * (the browser's `EventSource` cannot send headers, and a token in a URL leaks into
 * logs). Reconnects with backoff until stopped.
 */
import { EventSourceParserStream } from "eventsource-parser/stream";

export interface StreamOptions {
  url: string;
  token: () => string;
  onEvent: (type: string, data: string) => void;
  /** Called with a status line: "connected", "reconnecting in 2 s (…)" */
  onStatus?: (status: string, error?: boolean) => void;
  /** A final refusal (4xx other than 408/429): stop, do not reconnect. */
  onRefused?: (status: number, body: unknown) => void;
}

export function stream(opts: StreamOptions): () => void {
  const abort = new AbortController();
  void (async () => {
    let backoff = 1000;
    while (!abort.signal.aborted) {
      try {
        const r = await fetch(opts.url, {
          headers: { Authorization: `Bearer ${opts.token()}`, Accept: "text/event-stream" },
          signal: abort.signal,
          cache: "no-store",
        });
        if (!r.ok || !r.body) {
          const body = await r.json().catch(() => undefined);
          if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) {
            opts.onRefused?.(r.status, body);
            return;
          }
          throw new Error(`HTTP ${r.status}`);
        }
        opts.onStatus?.("connected");
        backoff = 1000;
        const events = r.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
        const reader = events.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          opts.onEvent(value.event ?? "message", value.data);
        }
        throw new Error("the stream ended");
      } catch (e) {
        if (abort.signal.aborted) return;
        const wait = backoff + Math.random() * 500;
        opts.onStatus?.(`reconnecting in ${Math.round(wait / 1000)} s (${(e as Error).message})`, true);
        await new Promise((r) => setTimeout(r, wait));
        backoff = Math.min(backoff * 2, 15_000);
      }
    }
  })();
  return () => abort.abort();
}
