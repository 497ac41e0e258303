#!/usr/bin/env node
// The TypeScript side of the embedded comparison: runs one blueprint with npm `flowcraft`'s in-memory
// FlowRuntime and the JavaScript benchmark nodes, and prints `{"status","context","runMs","runCpuMs"}`
// on stdout: the shape of `flowcraft-host run`'s output that the driver checks, plus the wall and CPU
// time of `FlowRuntime.run` itself (without Node's start-up and module loading).
//
// Usage: node bench/ts-reference/embedded.mjs BLUEPRINT.json --context JSON

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { FlowRuntime, NullLogger } from "flowcraft";
import { nodes } from "./nodes.mjs";

const { values, positionals } = parseArgs({ options: { context: { type: "string" } }, allowPositionals: true });
if (positionals.length !== 1) {
  console.error("usage: embedded.mjs BLUEPRINT.json --context JSON");
  process.exit(2);
}

const blueprint = JSON.parse(readFileSync(positionals[0], "utf8"));
const runtime = new FlowRuntime({ registry: nodes, logger: new NullLogger() });
const context = JSON.parse(values.context ?? "{}");
const cpuBefore = process.cpuUsage();
const begun = performance.now();
const result = await runtime.run(blueprint, context);
const runMs = performance.now() - begun;
const cpu = process.cpuUsage(cpuBefore);
const runCpuMs = (cpu.user + cpu.system) / 1000;
process.stdout.write(`${JSON.stringify({ status: result.status, context: result.context, runMs, runCpuMs })}\n`);
