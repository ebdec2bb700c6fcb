#!/usr/bin/env node
// npm run generate -- [url]: writes src/schema.d.ts from a live /openapi.json.
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { render, urlArg } from "./lib.mjs";

const out = fileURLToPath(new URL("../src/schema.d.ts", import.meta.url));
const url = urlArg();
try {
  await writeFile(out, await render(url));
  console.log(`wrote ${out} from ${url}`);
} catch (e) {
  console.error(`generate: ${e.message}`);
  process.exit(1);
}
