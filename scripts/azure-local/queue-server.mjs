#!/usr/bin/env node
// Azure Queue Storage stand-in for flowcraft-host tests: Azurite 3.35.0's queue service (pinned in
// package.json), started programmatically instead of through `azurite-queue`, so that we can
//   - keep idle keep-alive connections for 120 s (the CLI leaves Node's 5 s, the moment clients reuse
//     them, which shows up as sporadic `socket hang up` / connection resets);
//   - replace the periodic (60 s) extent garbage collection's per-extent removal, a full scan of the
//     extent collection per extent in a loop that never yields (a 75 s freeze after ~8,000 messages),
//     with one bulk removal;
//   - count requests by kind; see GET /_flowcraft/stats and POST /_flowcraft/stats/reset on the same
//     port (`_flowcraft` can never be a storage account name, so it cannot shadow an Azurite route).
// Equivalent CLI flags: --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent
// (telemetry is never initialised here; the access log and debug log are off).
//
// Usage: node queue-server.mjs [--host 127.0.0.1] [--port 10001] [--keep-alive-timeout 120]
//        [--gc-interval-ms 60000]

import { randomUUID } from "node:crypto";
import { Counters, portNumber } from "./counters.mjs";
import { parseArgs as parseArgv } from "node:util";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const azurite = (path) => require(`azurite/dist/src/${path}`);

const QueueServer = azurite("queue/QueueServer").default;
const QueueConfiguration = azurite("queue/QueueConfiguration").default;
const { configLogger } = azurite("common/Logger");

function parseArgs(argv) {
  const { values } = parseArgv({
    args: argv,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "10001" },
      "keep-alive-timeout": { type: "string", default: "120" },
      "gc-interval-ms": { type: "string", default: "60000" },
    },
  });
  return {
    host: values.host,
    port: portNumber(values.port),
    keepAliveTimeout: Number.parseFloat(values["keep-alive-timeout"]),
    gcIntervalMs: Number.parseInt(values["gc-interval-ms"], 10),
  };
}

// ---------------------------------------------------------------------------------------------------
// Request counters

/** "message.send", "message.receive", "message.update", "message.delete", "queue.create", ... */
function requestKind(method, url) {
  const segments = url.pathname.split("/").filter(Boolean);
  const comp = url.searchParams.get("comp");
  switch (segments.length) {
    case 0:
    case 1: // account
      if (comp === "list") return "service.list_queues";
      if (comp === "properties") return method === "PUT" ? "service.set_properties" : "service.get_properties";
      if (comp === "stats") return "service.stats";
      return `service.${method.toLowerCase()}`;
    case 2: // queue
      if (comp === "metadata") return method === "PUT" ? "queue.set_metadata" : "queue.get_metadata";
      if (comp === "acl") return method === "PUT" ? "queue.set_acl" : "queue.get_acl";
      if (method === "PUT") return "queue.create";
      if (method === "DELETE") return "queue.delete";
      return `queue.${method.toLowerCase()}`;
    case 3: // messages
      if (method === "POST") return "message.send";
      if (method === "GET") {
        return url.searchParams.get("peekonly") === "true" ? "message.peek" : "message.receive";
      }
      if (method === "DELETE") return "message.clear";
      return `messages.${method.toLowerCase()}`;
    default: // one message
      if (method === "PUT") return "message.update";
      if (method === "DELETE") return "message.delete";
      return `message.${method.toLowerCase()}`;
  }
}


function sendJson(res, status, body) {
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify(body));
}

// ---------------------------------------------------------------------------------------------------
// Garbage collection fix

/**
 * MemoryExtentStore.deleteExtents removes each extent's metadata with its own `findAndRemove`, which
 * is linear in the number of extents and never yields to the event loop. Remove the chunks, then all
 * the metadata documents in one pass.
 */
function installBulkExtentRemoval(server) {
  const store = server.extentStore;
  const metadata = server.extentMetadataStore;
  if (!store || typeof store.deleteExtents !== "function" || !store.chunks || !metadata?.db) {
    throw new Error("unexpected Azurite internals: cannot install the bulk extent removal");
  }
  store.deleteExtents = async function deleteExtents(extents) {
    const ids = new Set(extents);
    if (ids.size === 0) return 0;
    const started = Date.now();
    for (const id of ids) store.chunks.delete(store.categoryName, id);
    const collection = metadata.db.getCollection(metadata.EXTENTS_COLLECTION);
    if (collection) collection.removeWhere((doc) => ids.has(doc.id));
    console.log(`gc: removed ${ids.size} unreferenced extents in ${Date.now() - started} ms`);
    return ids.size;
  };
}

// ---------------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  configLogger(false);

  // In-memory persistence: Loki only *loads* these paths if they exist, so point them into a directory
  // that is never created (an existing database file there is what makes `--location` +
  // `--inMemoryPersistence` fail in the CLI).
  const nowhere = join(tmpdir(), `flowcraft-azurite-in-memory-${randomUUID()}`);
  const persistence = [{ locationId: "Default", locationPath: join(nowhere, "extents"), maxConcurrency: 1 }];
  const config = new QueueConfiguration(
    opts.host,
    opts.port,
    opts.keepAliveTimeout,
    join(nowhere, "__azurite_db_queue__.json"),
    join(nowhere, "__azurite_db_queue_extent__.json"),
    persistence,
    false, // access log
    undefined, // access log stream
    false, // debug log
    undefined, // debug log file
    false, // loose
    true, // skipApiVersionCheck
    "", // cert
    "", // key
    "", // pwd
    undefined, // oauth
    false, // disableProductStyleUrl
    true, // inMemoryPersistence
  );
  const server = new QueueServer(config);
  installBulkExtentRemoval(server);
  if (server.gcManager) server.gcManager.gcIntervalInMS = opts.gcIntervalMs;

  // Put the counters (and the stats endpoint) in front of Azurite's request listener.
  const httpServer = server.httpServer;
  const azuriteListeners = httpServer.listeners("request");
  if (azuriteListeners.length !== 1) throw new Error("unexpected Azurite internals: request listeners");
  const [azuriteListener] = azuriteListeners;
  const counters = new Counters();
  httpServer.removeAllListeners("request");
  httpServer.on("request", (req, res) => {
    const url = new URL(req.url, "http://localhost");
    if (url.pathname === "/_flowcraft/stats" && req.method === "GET") {
      return sendJson(res, 200, counters.snapshot("queue"));
    }
    if (url.pathname === "/_flowcraft/stats/reset" && req.method === "POST") {
      const before = counters.snapshot("queue");
      counters.reset();
      return sendJson(res, 200, before);
    }
    const kind = requestKind(req.method, url);
    res.on("finish", () => counters.record(kind, res.statusCode));
    return azuriteListener(req, res);
  });
  httpServer.headersTimeout = opts.keepAliveTimeout * 1000 + 5000;

  await server.start();
  console.log(
    `queue stand-in (azurite queue service + flowcraft wrapper) listening on ${server.getHttpServerAddress()}` +
      ` (keep-alive ${opts.keepAliveTimeout}s, gc every ${opts.gcIntervalMs}ms)`,
  );

  let closing = false;
  const shutdown = () => {
    if (closing) return;
    closing = true;
    setTimeout(() => process.exit(0), 2000).unref();
    server.close().then(() => process.exit(0), () => process.exit(0));
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

main().catch((err) => {
  console.error(`queue stand-in: ${err.message}`);
  process.exit(1);
});
