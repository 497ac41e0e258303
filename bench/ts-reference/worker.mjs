#!/usr/bin/env node
// The TypeScript reference worker of the benchmark: npm `flowcraft` 2.10.1's distributed adapter with
// our upstream-equivalent Azure wiring (azure-wiring.mjs) and the JavaScript benchmark nodes.
//
// Usage: node bench/ts-reference/worker.mjs --blueprints DIR
// Environment: what `scripts/azure-local.sh env` prints, plus FLOWCRAFT_QUEUE, FLOWCRAFT_DATABASE,
// FLOWCRAFT_CONTEXT_CONTAINER, FLOWCRAFT_STATUS_CONTAINER (the Rust worker's names and defaults).
// The queue, database and containers must exist. Logs warnings and errors only (as the Rust worker
// with FLOWCRAFT_LOG=warn); the upstream adapter's per-job console lines are left out.

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { AzureQueueWorker, RedisCoordinationStore } from "./azure-wiring.mjs";
import { cosmosClient, queueServiceClient, redisClient, resourceNames } from "./clients.mjs";
import { nodes } from "./nodes.mjs";

/** Warnings and errors to stderr; info and debug dropped. */
const warningLogger = {
  debug() {},
  info() {},
  warn: (message) => console.error(`warn: ${message}`),
  error: (message) => console.error(`error: ${message}`),
};

function readBlueprints(dir) {
  const blueprints = {};
  for (const file of readdirSync(dir).filter((name) => name.endsWith(".json"))) {
    const blueprint = JSON.parse(readFileSync(join(dir, file), "utf8"));
    blueprints[blueprint.id] = blueprint;
  }
  return blueprints;
}

const { values } = parseArgs({ options: { blueprints: { type: "string" } } });
if (!values.blueprints) {
  console.error("usage: worker.mjs --blueprints DIR");
  process.exit(2);
}

const names = resourceNames();
const database = cosmosClient().database(names.database);
const worker = new AzureQueueWorker({
  runtimeOptions: { registry: nodes, blueprints: readBlueprints(values.blueprints), logger: warningLogger },
  coordinationStore: new RedisCoordinationStore(redisClient()),
  queue: queueServiceClient().getQueueClient(names.queue),
  contextContainer: database.container(names.contextContainer),
  statusContainer: database.container(names.statusContainer),
});
worker.start();
