// Builds the pages' scripts (and the chart library's stylesheet) into
// ../../assets/web, beside the hand-written HTML and style.css; the binary embeds them
// all (src/pages.rs). The output is committed, so `cargo build` needs no Node;
// `--check` builds into a scratch folder and fails if a committed file differs (CI).
import { build } from "esbuild";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const here = new URL(".", import.meta.url).pathname;
const committed = join(here, "../../assets/web");
const check = process.argv.includes("--check");
const out = check ? await mkdtemp(join(tmpdir(), "voucherd-web-")) : committed;

await build({
  entryPoints: { demo: join(here, "src/demo.ts"), admin: join(here, "src/admin.ts") },
  outdir: out,
  bundle: true,
  // the typed client (../ts/src) is bundled from source; its one dependency,
  // openapi-fetch, resolves from this package (pinned to the same version)
  nodePaths: [join(here, "node_modules")],
  format: "esm",
  target: ["es2022"],
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
});

if (check) {
  const stale = [];
  for (const f of await readdir(out)) {
    const have = await readFile(join(committed, f)).catch(() => null);
    if (!have || !have.equals(await readFile(join(out, f)))) stale.push(f);
  }
  await rm(out, { recursive: true, force: true });
  if (stale.length) {
    console.error(`assets/web is out of date (${stale.join(", ")}): run \`npm run build\` in clients/web and commit`);
    process.exit(1);
  }
  console.log("assets/web matches its sources");
}
