/** Small DOM helpers shared by the pages: text only, never HTML, so nothing a server or user wrote can run. */

export function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el;
}

export function input(id: string): HTMLInputElement {
  return $(id) as HTMLInputElement;
}

type Child = Node | string | number | null | undefined | false;

/** `h("td", {class: "num"}, "12")`: an element with attributes and text or element children. */
export function h(tag: string, attrs: Record<string, string | boolean | undefined> = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function say(el: HTMLElement, text: string, kind: "ok" | "error" | "" = ""): void {
  el.textContent = text;
  el.className = `message ${kind}`;
}

export function money(amount: number, currency: string): string {
  return `${amount.toLocaleString("en-US")} ${currency}`;
}

/** A discount as people read it: "50,000 VND off", "10% off (at most 100,000 VND)". */
export function discountText(d: { type: string; amount?: number; basis_points?: number; max_amount?: number; currency: string }): string {
  if (d.type === "percent") {
    const pct = (d.basis_points ?? 0) / 100;
    return `${pct}% off` + (d.max_amount ? ` (at most ${money(d.max_amount, d.currency)})` : "");
  }
  return `${money(d.amount ?? 0, d.currency)} off`;
}

export function when(iso: string | null | undefined): string {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** "1d 02:03:04" or "02:03:04" for a span in ms (never negative). */
export function span(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const hms = [Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60), s % 60]
    .map((n) => String(n).padStart(2, "0"))
    .join(":");
  return d > 0 ? `${d}d ${hms}` : hms;
}

/** A fresh idempotency key. */
export function newKey(): string {
  return crypto.randomUUID();
}

/**
 * Whether an answer is final for its idempotency key: anything but a 5xx, a 408, a
 * 429 or a 409 `idempotency_key_in_use` (the original still running). Until then the
 * same intent is sent again with the same key.
 */
export function isFinal(status: number, error?: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code;
  return status < 500 && status !== 408 && status !== 429 && code !== "idempotency_key_in_use";
}

/** Keys of intents not answered finally yet, by what the intent is. */
export class IntentKeys {
  private readonly keys = new Map<string, string>();
  key(intent: unknown): string {
    const k = JSON.stringify(intent);
    let key = this.keys.get(k);
    if (!key) {
      key = newKey();
      this.keys.set(k, key);
    }
    return key;
  }
  settle(intent: unknown, status: number, error?: unknown): void {
    if (isFinal(status, error)) this.keys.delete(JSON.stringify(intent));
  }
}
