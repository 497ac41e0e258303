#!/usr/bin/env node
// Azure Queue Storage stand-in for flowcraft-host tests: Azurite 3.35.0's queue service (pinned in
// package.json), started programmatically instead of through `azurite-queue`, so that we can
//   - keep idle keep-alive connections for 120 s (the CLI leaves Node's 5 s, the moment clients reuse
//     them, which shows up as sporadic `socket hang up` / connection resets);
//   - replace the periodic (60 s) extent garbage collection's per-extent removal, a full scan of the
//     extent collection per extent in a loop that never yields (a 75 s freeze after ~8,000 messages),
//     with one bulk removal;
//   - count requests by kind; see GET /_flowcraft/stats and POST /_flowcraft/stats/reset on the same
//     port (`_flowcraft` can never be a storage account name, so it cannot shadow an Azurite route);
//   - inject faults on demand (faults.mjs: error statuses, connection resets, duplicated messages) at
//     /_flowcraft/faults, and keep a journal of the messages sent to chosen queues:
//     POST /_flowcraft/journal {"path": "<queue name>"} starts it (and zeroes it), GET answers
//     {"entries": [{"queue", "text", "message"?}...], "pendingDuplicates", "duplicatesStored",
//     "duplicatesFailed"} (each message text as sent or rewritten, in arrival order, with the id of the
//     message a rewrite replaces the text of, and how many injected duplicates are still to be stored,
//     were stored, or were refused).
// Equivalent CLI flags: --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent
// (telemetry is never initialised here; the access log and debug log are off).
//
// Usage: node queue-server.mjs [--host 127.0.0.1] [--port 10001] [--keep-alive-timeout 120]
//        [--gc-interval-ms 60000]

import { createHmac, randomUUID } from "node:crypto";
import { Counters, portNumber } from "./counters.mjs";
import { Faults, injectFailure } from "./faults.mjs";
import http from "node:http";
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


// ---------------------------------------------------------------------------------------------------
// Fault injection and the send journal

/** Marks a request the wrapper sends to Azurite itself (a consumed body sent on, or a duplicate). */
const REPLAY_HEADER = "x-flowcraft-replay";

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function readJson(req) {
  const text = (await readBody(req)).toString("utf8");
  return text.trim() === "" ? {} : JSON.parse(text);
}

/** The text of a `<QueueMessage><MessageText>…</MessageText></QueueMessage>` body (XML-unescaped). */
function messageText(body) {
  const match = /<MessageText>([\s\S]*)<\/MessageText>/.exec(body.toString("utf8"));
  const text = match ? match[1] : "";
  return text
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&quot;", '"')
    .replaceAll("&apos;", "'")
    .replaceAll("&amp;", "&");
}

/**
 * Sends `req` (whose body was consumed: `body`) to Azurite again through this port, unchanged except for
 * the replay mark (not a signed header, so its Shared Key signature stays valid); the answer goes to
 * `res`, or nowhere for an injected duplicate (then `done` is called with the answer's status, 0 if
 * there was none).
 */
function replay(port, req, body, res, done) {
  const copy = http.request(
    { host: "127.0.0.1", port, method: req.method, path: req.url, headers: { ...req.headers, [REPLAY_HEADER]: "1" } },
    (answer) => {
      if (!res) {
        answer.on("end", () => done?.(answer.statusCode));
        return answer.resume();
      }
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    },
  );
  copy.on("error", (err) => {
    if (res && !res.headersSent) sendJson(res, 502, { message: `replay failed: ${err.message}` });
    else console.error(`duplicate send failed: ${err.message}`);
    done?.(0);
  });
  copy.end(body);
}

/**
 * The emulator's well-known account key (public, documented by Microsoft for Azurite and the storage
 * emulator): the wrapper signs the duplicates it makes of rewritten messages with it.
 */
const EMULATOR_ACCOUNT_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/**
 * A Put Message request (Shared Key signed, path-style as Azurite serves it) that stores a message with
 * the text of the update request body `body` in `queue`: the request and its body, for `replay`.
 */
function signedSend(account, queue, body) {
  const path = `/${account}/${queue}/messages`;
  const headers = {
    "content-type": "application/xml",
    "content-length": String(body.length),
    "x-ms-date": new Date().toUTCString(),
    "x-ms-version": "2021-12-02",
  };
  const canonicalHeaders = Object.keys(headers)
    .filter((name) => name.startsWith("x-ms-"))
    .sort()
    .map((name) => `${name}:${headers[name]}\n`)
    .join("");
  const stringToSign =
    ["POST", "", "", headers["content-length"], "", headers["content-type"], "", "", "", "", "", ""].join("\n") +
    "\n" + canonicalHeaders + `/${account}${path}`;
  const signature = createHmac("sha256", Buffer.from(EMULATOR_ACCOUNT_KEY, "base64")).update(stringToSign, "utf8").digest("base64");
  headers.authorization = `SharedKey ${account}:${signature}`;
  return { req: { method: "POST", url: path, headers }, body };
}

/** The queue service's error answer (XML). */
function queueError(status, code) {
  return {
    contentType: "application/xml",
    body: `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>injected by the flowcraft fault suite (HTTP ${status})</Message></Error>`,
  };
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
  const faults = new Faults();
  const journal = { path: undefined, entries: [], pendingDuplicates: 0, duplicatesStored: 0, duplicatesFailed: 0 };
  const port = () => httpServer.address().port;
  httpServer.removeAllListeners("request");
  httpServer.on("request", async (req, res) => {
    const url = new URL(req.url, "http://localhost");
    if (req.headers[REPLAY_HEADER]) return azuriteListener(req, res);
    if (url.pathname === "/_flowcraft/stats" && req.method === "GET") {
      return sendJson(res, 200, counters.snapshot("queue"));
    }
    if (url.pathname === "/_flowcraft/stats/reset" && req.method === "POST") {
      const before = counters.snapshot("queue");
      counters.reset();
      return sendJson(res, 200, before);
    }
    if (await faults.control(req, res, url.pathname, readJson, sendJson)) return;
    if (url.pathname === "/_flowcraft/journal") {
      if (req.method === "POST") {
        Object.assign(journal, { path: (await readJson(req)).path, entries: [], duplicatesStored: 0, duplicatesFailed: 0 });
      }
      return sendJson(res, 200, journal);
    }
    const kind = requestKind(req.method, url);
    res.on("finish", () => counters.record(kind, res.statusCode));
    // A send, or an update that replaces a message's text (a worker handing its message on to the
    // next job), enqueues work.
    const enqueues =
      kind === "message.send" || (kind === "message.update" && Number(req.headers["content-length"] ?? 0) > 0);
    const rule = faults.pick(kind, url.pathname, enqueues);
    if (rule && rule.effect !== "duplicate") return injectFailure(rule, req, res, queueError);
    const journaled = enqueues && journal.path && url.pathname.includes(journal.path);
    if (!journaled && !rule) return azuriteListener(req, res);
    const body = await readBody(req);
    const queue = url.pathname.split("/")[2];
    if (journaled) {
      const message = kind === "message.update" ? url.pathname.split("/")[4] : undefined;
      journal.entries.push({ queue, text: messageText(body), message });
    }
    replay(port(), req, body, res);
    if (rule) {
      const low = rule.minDelayMs ?? 0;
      const delay = low + Math.random() * Math.max(0, (rule.maxDelayMs ?? low) - low);
      const account = url.pathname.split("/")[1];
      const copy = kind === "message.send" ? { req, body } : signedSend(account, queue, body);
      journal.pendingDuplicates += 1;
      const stored = (status) => {
        journal.pendingDuplicates -= 1;
        if (status === 201) journal.duplicatesStored += 1;
        else journal.duplicatesFailed += 1;
      };
      setTimeout(() => replay(port(), copy.req, copy.body, undefined, stored), delay);
    }
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
