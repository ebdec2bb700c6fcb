// Starts a real voucherd (the release binary) on a free port against its own
// Postgres database and Redis db, for the integration tests; stops it afterwards.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

// The repository's release build (`cargo build --release -p voucherd`) unless told.
export const VOUCHERD_BIN =
  process.env.VOUCHERD_BIN ??
  fileURLToPath(new URL("../../../../target/release/voucherd", import.meta.url));
export const JWT_SECRET = "clients-ts-test-jwt-secret-0123456789abcdef";
export const ADMIN_TOKEN = "clients-ts-test-admin-token";

declare module "vitest" {
  export interface ProvidedContext {
    voucherdUrl: string;
    voucherdBin: string;
    jwtSecret: string;
    adminToken: string;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

let child: ChildProcess | undefined;

export default async function setup(project: TestProject) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = {
    ...process.env,
    DATABASE_URL:
      process.env.VOUCHERD_TEST_DATABASE_URL ??
      "postgres://postgres:postgres@127.0.0.1:5432/voucherd_client_test",
    REDIS_URL: process.env.VOUCHERD_TEST_REDIS_URL ?? "redis://127.0.0.1:6379/11",
    JWT_SECRET,
    ADMIN_TOKEN,
    LISTEN_ADDR: `127.0.0.1:${port}`,
    RATE_LIMIT_USER: "0",
    RUST_LOG: process.env.RUST_LOG ?? "warn",
  };
  let log = "";
  child = spawn(VOUCHERD_BIN, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.on("data", (b) => (log += b));
  child.stderr?.on("data", (b) => (log += b));
  let exited: string | undefined;
  child.once("error", (e) => (exited = `spawn ${VOUCHERD_BIN}: ${e.message}`));
  child.once("exit", (code, sig) => (exited ??= `voucherd exited (${code ?? sig})`));

  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) throw new Error(`${exited}\n${log}`);
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`voucherd not ready at ${url} within 60 s\n${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }

  project.provide("voucherdUrl", url);
  project.provide("voucherdBin", VOUCHERD_BIN);
  project.provide("jwtSecret", JWT_SECRET);
  project.provide("adminToken", ADMIN_TOKEN);

  return async () => {
    const c = child;
    if (!c || c.exitCode !== null) return;
    const done = new Promise((r) => c.once("exit", r));
    c.kill("SIGTERM");
    const t = setTimeout(() => c.kill("SIGKILL"), 10_000);
    await done;
    clearTimeout(t);
  };
}
