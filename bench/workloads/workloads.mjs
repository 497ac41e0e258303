// The benchmark workloads: which blueprint of `blueprints/` each one runs, the initial context of a
// run, and the node outputs a correct run ends with. Both workers load the same blueprint files; the
// driver checks every finished run against `expectedOutputs` with `checkOutputs`.
//
// Also the two large blueprints of the embedded comparison (a 1000-node chain and a 100-way fan-out),
// generated rather than committed because they are regular.

import { readFileSync } from "node:fs";

export const blueprintDir = new URL("./blueprints/", import.meta.url).pathname;

const blueprint = (id) => JSON.parse(readFileSync(`${blueprintDir}${id}.json`, "utf8"));

/** `{"_outputs.<id>": value}` for each `[id, value]`. */
const outputs = (pairs) => Object.fromEntries(pairs.map(([id, value]) => [`_outputs.${id}`, value]));

const range = (n) => [...Array(n).keys()];

/** 16 KiB of JSON (exactly 16384 bytes serialized): 128 rows of about 128 bytes, the same every run. */
function payload16KiB() {
  const rows = range(128).map((i) => ({ row: i, text: "" }));
  const rowSize = (row) => JSON.stringify(row).length + 1; // with the comma (or bracket) after it
  for (const row of rows) row.text = "x".repeat(128 - rowSize(row));
  const envelope = JSON.stringify({ rows: [] }).length - 1; // `{"rows":[` and `}`
  rows[0].text = rows[0].text.slice(envelope);
  return { rows };
}

const payload = payload16KiB();

/** Distributed workloads, in the order the driver measures them. */
export const workloads = [
  {
    name: "chain-10",
    blueprintId: "bench-chain",
    description: "10 doubling nodes in a row",
    initialContext: { value: 1 },
    expectedOutputs: outputs(range(10).map((i) => [`n${i}`, 2 ** (i + 1)])),
  },
  {
    name: "fan-8",
    blueprintId: "bench-fan",
    description: "start -> 8 parallel doubling nodes -> all-join -> end",
    initialContext: { value: 1 },
    expectedOutputs: outputs([
      ["start", 2],
      ...range(8).map((i) => [`w${i}`, 4]),
      ["join", 4],
      ["end", 4],
    ]),
  },
  {
    name: "diamond",
    blueprintId: "bench-diamond",
    description: "a -> (b double, c times10) -> d reading both outputs",
    initialContext: { value: 1 },
    expectedOutputs: outputs([["a", 2], ["b", 4], ["c", 20], ["d", { left: 4, right: 20 }]]),
  },
  {
    name: "payload-16k",
    blueprintId: "bench-payload",
    description: "a 16 KiB JSON object passed along a chain of 10 echo nodes",
    initialContext: { payload },
    expectedOutputs: outputs(range(10).map((i) => [`p${i}`, payload])),
  },
].map((workload) => ({ ...workload, nodes: blueprint(workload.blueprintId).nodes.length }));

/** Start node ids of a blueprint: nodes that are no edge's target (none of ours has a fallback). */
export function startNodes(blueprintId) {
  const { nodes, edges } = blueprint(blueprintId);
  const targets = new Set(edges.map((edge) => edge.target));
  return nodes.map((node) => node.id).filter((id) => !targets.has(id));
}

/**
 * What is wrong with a finished run's context, or null when it is right: every expected `_outputs.*`
 * key present with the expected value, no other `_outputs.*` key, and the initial keys unchanged.
 */
export function checkOutputs(context, expectedOutputs, initialContext) {
  const problems = [];
  for (const [key, value] of Object.entries(expectedOutputs)) {
    if (!(key in context)) problems.push(`${key} missing`);
    else if (!sameJson(context[key], value)) problems.push(`${key} = ${short(context[key])}`);
  }
  for (const key of Object.keys(context)) {
    if (key.startsWith("_outputs.") && !(key in expectedOutputs)) problems.push(`unexpected ${key}`);
  }
  for (const [key, value] of Object.entries(initialContext)) {
    if (!sameJson(context[key], value)) problems.push(`initial key ${key} changed`);
  }
  return problems.length ? problems.join(", ") : null;
}

/** Deep equality of JSON values (object key order ignored). */
function sameJson(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && sameJson(a[key], b[key]));
}

const short = (value) => {
  const text = JSON.stringify(value) ?? "undefined";
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
};

/** The embedded comparison's blueprints, with their initial context and expected outputs. */
export function embeddedWorkloads() {
  const chainLength = 1000;
  const fanWidth = 100;
  const chain = {
    id: "embedded-chain-1000",
    nodes: range(chainLength).map((i) =>
      i === 0 ? { id: "n0", uses: "echo", inputs: "value" } : { id: `n${i}`, uses: "echo" },
    ),
    edges: range(chainLength - 1).map((i) => ({ source: `n${i}`, target: `n${i + 1}` })),
  };
  const fan = {
    id: "embedded-fan-100",
    nodes: [
      { id: "start", uses: "double", inputs: "value" },
      ...range(fanWidth).map((i) => ({ id: `w${i}`, uses: "double" })),
      { id: "join", uses: "echo" },
      { id: "end", uses: "echo" },
    ],
    edges: [
      ...range(fanWidth).map((i) => ({ source: "start", target: `w${i}` })),
      ...range(fanWidth).map((i) => ({ source: `w${i}`, target: "join" })),
      { source: "join", target: "end" },
    ],
  };
  return [
    {
      name: "chain-1000",
      blueprint: chain,
      initialContext: { value: 1 },
      expectedOutputs: outputs(range(chainLength).map((i) => [`n${i}`, 1])),
    },
    {
      name: "fan-100",
      blueprint: fan,
      initialContext: { value: 1 },
      expectedOutputs: outputs([
        ["start", 2],
        ...range(fanWidth).map((i) => [`w${i}`, 4]),
        ["join", 4],
        ["end", 4],
      ]),
    },
  ].map((workload) => ({ ...workload, nodes: workload.blueprint.nodes.length }));
}

/** A one-node blueprint: its run time is the fixed cost (process start, loading) of an embedded run. */
export const embeddedBaseline = {
  name: "one-node",
  blueprint: { id: "embedded-one-node", nodes: [{ id: "n0", uses: "echo", inputs: "value" }], edges: [] },
  initialContext: { value: 1 },
  expectedOutputs: outputs([["n0", 1]]),
  nodes: 1,
};
