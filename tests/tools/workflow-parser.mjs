// Parses GitHub workflow files with GitHub's own parser (npm @actions/workflow-parser, the
// one behind the Actions VS Code extension): parse, then convert to the workflow model, which
// checks jobs, needs, expressions and their contexts. Prints one line per error,
// `FILE: MESSAGE`, then a count. Exit 1 when any file has errors, 2 when the parser crashed.
//
// Its ESM build does not load on Node 20 (a JSON import without import attributes), so the
// tests bundle this script first (tests/integration/workflow_gen.rs):
//   esbuild workflow-parser.mjs --bundle --platform=node --format=cjs --outfile=<tmp>/workflow-parser.cjs
import { readFileSync } from "node:fs";
import { parseWorkflow, convertWorkflowTemplate, NoOperationTraceWriter } from "@actions/workflow-parser";

async function check(file) {
  const result = parseWorkflow({ name: file, content: readFileSync(file, "utf8") }, new NoOperationTraceWriter());
  const messages = result.context.errors.getErrors().map((e) => e.message);
  if (messages.length === 0) {
    if (result.value === undefined) {
      messages.push("the parser produced no workflow");
    } else {
      const template = await convertWorkflowTemplate(result.context, result.value);
      messages.push(...result.context.errors.getErrors().map((e) => e.message));
      messages.push(...(template.errors ?? []).map((e) => e.Message));
    }
  }
  return [...new Set(messages)];
}

async function main() {
  const files = process.argv.slice(2);
  let failures = 0;
  for (const file of files) {
    for (const message of await check(file)) {
      console.log(`${file}: ${message}`);
      failures++;
    }
  }
  console.log(`workflow-parser: ${files.length} file(s), ${failures} error(s)`);
  return failures;
}

main().then(
  (failures) => process.exit(failures ? 1 : 0),
  (e) => {
    console.error(e);
    process.exit(2);
  },
);
