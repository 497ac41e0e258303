#!/usr/bin/env node
// Prints the fault-injection suite's summary table from the rows its scenarios wrote
// (host/cli/tests/faults: one JSON file per scenario in target/tmp/fault-suite/), and exits 1 if a
// scenario lost a run or applied an effect twice, or if no scenario reported at all.
//
// Usage: node scripts/fault-summary.mjs [DIR]

import { readdirSync, readFileSync, existsSync } from "node:fs";
import { join } from "node:path";

const dir = process.argv[2] ?? "target/tmp/fault-suite";
const rows = existsSync(dir)
  ? readdirSync(dir)
      .filter((name) => name.endsWith(".json"))
      .map((name) => JSON.parse(readFileSync(join(dir, name), "utf8")))
      .sort((a, b) => a.scenario.localeCompare(b.scenario, "en", { numeric: true }))
  : [];
if (rows.length === 0) {
  console.error(`fault suite: no results in ${dir} (did the suite run?)`);
  process.exit(1);
}

const columns = [
  ["scenario", "scenario"],
  ["runs", "runs"],
  ["faultsInjected", "faults injected"],
  ["runsCompleted", "completed"],
  ["runsFailedAsDesigned", "failed as designed"],
  ["runsLost", "lost"],
  ["duplicateEffects", "duplicate effects"],
];
const cells = rows.map((row) => columns.map(([key]) => String(row[key])));
const widths = columns.map(([, title], i) => Math.max(title.length, ...cells.map((c) => c[i].length)));
const line = (values) => `| ${values.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join(" | ")} |`;
console.log(line(columns.map(([, title]) => title)));
console.log(`|${widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : `${"-".repeat(w + 1)}:`)).join("|")}|`);
for (const c of cells) console.log(line(c));
console.log();
for (const row of rows) console.log(`${row.scenario}: ${row.notes}`);

const bad = rows.filter((row) => row.runsLost !== 0 || row.duplicateEffects !== 0);
if (bad.length > 0) {
  console.error(`fault suite: runs lost or effects duplicated in: ${bad.map((r) => r.scenario).join(", ")}`);
  process.exit(1);
}
