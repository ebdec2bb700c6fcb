// Shared by generate.mjs and check-types.mjs: turns a served OpenAPI document into
// the text of src/schema.d.ts. The output depends on the document only (not on the
// URL it came from), so the check compares like with like.
import openapiTS, { astToString } from "openapi-typescript";

export const DEFAULT_URL = "http://127.0.0.1:8080/openapi.json";

const HEADER = `/**
 * Generated from voucherd's served /openapi.json by openapi-typescript.
 * Do not edit by hand: run \`npm run generate -- <url>\`.
 * \`npm run check-types -- <url>\` fails when this file differs from the live document.
 */

`;

export async function fetchDocument(url) {
  const res = await fetch(url, { headers: { accept: "application/json" } });
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return await res.json();
}

export async function render(url) {
  const doc = await fetchDocument(url);
  const ast = await openapiTS(doc, { alphabetize: false, exportType: false });
  return HEADER + astToString(ast);
}

export function urlArg() {
  const arg = process.argv[2];
  if (arg === "-h" || arg === "--help") {
    console.log(`usage: ${process.argv[1]} [url]   (default ${DEFAULT_URL})`);
    process.exit(0);
  }
  return arg || process.env.VOUCHERD_OPENAPI_URL || DEFAULT_URL;
}
