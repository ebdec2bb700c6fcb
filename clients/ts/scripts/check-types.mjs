#!/usr/bin/env node
// npm run check-types -- [url]: regenerates the types from a live /openapi.json into
// a temporary file and fails (exit 1) on any difference from the committed
// src/schema.d.ts, printing the first differing lines. Exit 2: the document could
// not be fetched or turned into types.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { render, urlArg } from "./lib.mjs";

const committedPath = fileURLToPath(new URL("../src/schema.d.ts", import.meta.url));
const url = urlArg();
const dir = await mkdtemp(join(tmpdir(), "voucherd-types-"));
const tmp = join(dir, "schema.d.ts");
let fresh;
try {
  fresh = await render(url);
  await writeFile(tmp, fresh);
} catch (e) {
  console.error(`check-types: cannot generate from ${url}: ${e.message}`);
  await rm(dir, { recursive: true, force: true });
  process.exit(2);
}
const committed = await readFile(committedPath, "utf8").catch(() => "");
await rm(dir, { recursive: true, force: true });
if (committed === fresh) {
  console.log(`check-types: src/schema.d.ts matches ${url}`);
  process.exit(0);
}
const a = committed.split("\n");
const b = fresh.split("\n");
let shown = 0;
console.error(`check-types: src/schema.d.ts differs from the types of ${url}`);
for (let i = 0; i < Math.max(a.length, b.length) && shown < 20; i++) {
  if (a[i] !== b[i]) {
    console.error(`  line ${i + 1}:\n    committed: ${a[i] ?? "<end of file>"}\n    live:      ${b[i] ?? "<end of file>"}`);
    shown++;
  }
}
console.error("run `npm run generate -- <url>` and commit src/schema.d.ts");
process.exit(1);
