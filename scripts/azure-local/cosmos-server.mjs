#!/usr/bin/env node
// Cosmos DB (SQL API) stand-in for flowcraft-host tests.
//
// Serves the routes, handlers and in-memory data model of @vercel/cosmosdb-server 1.0.1 (pinned in
// package.json) from our own HTTP layer, which fixes what keeps the Rust SDK (azure_data_cosmos 1.0)
// from working against the stock server (see the shared reference azure-local.md):
//   1. /pkranges answers the range `id` (and `parents`) as strings, not numbers;
//   2. the account metadata (GET /) advertises the scheme actually served (http:// in plain-HTTP mode);
//   3. keep-alive stays on (no `connection: close`), idle connections are kept 120 s, not Node's 5 s;
//   4. reading a missing document answers 404 NotFound instead of crashing with 500;
//   5. a query carrying `x-ms-documentdb-partitionkey` only sees documents of that partition;
//   6. PATCH accepts top-level paths starting with `_` (Flowcraft's `_outputs.*` / `_inputs.*` keys) and
//      refuses only the system properties _rid, _self, _etag, _ts, _attachments;
// and more the SDK needs: a query addressed to partition key range "0" (how the SDK fans out a
// cross-partition query) runs over every document instead of failing with "missing partition keys";
// resource ids (`_rid`) are spelled as Cosmos spells them, base64 with `-` for `/` (the stock server
// writes a `/`, e.g. in the 127th database's ids, and the SDK then refuses to open its containers:
// "failed to extract database RID from container RID").
// It answers a successful write sent with `Prefer: return=minimal` without the document, as Cosmos does
// (the package ignores the header). It also counts requests by kind (GET /_flowcraft/stats,
// POST /_flowcraft/stats/reset), refuses documents larger than Cosmos DB's 2 MB item limit (413, as the
// real service does; the package has no limit), injects faults on demand (faults.mjs: error statuses such as 429 with x-ms-retry-after-ms, connection
// resets) at /_flowcraft/faults, and keeps a journal of the changes of one field of the documents of
// chosen containers: POST /_flowcraft/journal {"container": "<id>", "field": "status"} starts it (and
// empties it), GET answers {"entries": [{"db", "id", "from", "to"}...]} in the order of the writes.
//
// Usage: node cosmos-server.mjs [--host 127.0.0.1] [--port 8081] [--https] [--keep-alive-timeout 120]
//
// The package is pinned exactly because this file reaches into its internals (lib/routes, lib/account,
// the document-operation helpers and the Items store's `_data` map).

import { randomUUID } from "node:crypto";
import { Counters, portNumber } from "./counters.mjs";
import { Faults, injectFailure } from "./faults.mjs";
import { parseArgs as parseArgv } from "node:util";
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
const PKG = "@vercel/cosmosdb-server";
const pkgDir = dirname(require.resolve(`${PKG}/package.json`));
const lib = (path) => require(`${PKG}/lib/${path}`);

const route = lib("routes").default;
const Account = lib("account").default;
const readItems = lib("handler/_read-items").default;
const { patchOperation } = lib("handler/_patch-operations");
const { parsePartitionKey } = lib("utils/get-partition-from-header");
const ResourceId = lib("account/resource-id").default;

// Resource ids as Cosmos writes them: standard base64 with `-` for `/` (read back in either spelling;
// the stock reader also replaced only the first `-`).
ResourceId.toBase64String = (buffer) => buffer.toString("base64").replaceAll("/", "-");
ResourceId.fromBase64String = (text) => Buffer.from(text.replaceAll("-", "/"), "base64");

// ---------------------------------------------------------------------------------------------------
// Options

function parseArgs(argv) {
  const { values } = parseArgv({
    args: argv,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8081" },
      https: { type: "boolean", default: false },
      "keep-alive-timeout": { type: "string", default: "120" },
    },
  });
  return {
    host: values.host,
    port: portNumber(values.port),
    https: values.https,
    keepAliveTimeout: Number.parseFloat(values["keep-alive-timeout"]),
  };
}

// ---------------------------------------------------------------------------------------------------
// Request counters

const TYPE_NAMES = { dbs: "db", colls: "coll", docs: "doc", pkranges: "pkrange", udfs: "udf" };

function isTrue(value) {
  const values = Array.isArray(value) ? value : [value];
  return values.some((v) => typeof v === "string" && v.toLowerCase() === "true");
}

function isQuery(req) {
  return (
    req.method === "POST" &&
    (isTrue(req.headers["x-ms-documentdb-isquery"]) ||
      req.headers["content-type"] === "application/query+json")
  );
}

/** "doc.read", "doc.upsert", "doc.patch", "doc.query", "pkrange.list", "account.read", ... */
function requestKind(req, pathname) {
  const segments = pathname.split("/").filter(Boolean);
  if (segments.length === 0) return `account.${req.method === "GET" ? "read" : req.method.toLowerCase()}`;
  const hasId = segments.length % 2 === 0;
  const typeSegment = segments[hasId ? segments.length - 2 : segments.length - 1];
  const type = TYPE_NAMES[typeSegment] ?? typeSegment;
  let op;
  switch (req.method) {
    case "GET": op = hasId ? "read" : "list"; break;
    case "POST":
      if (isQuery(req)) op = "query";
      else if (isTrue(req.headers["x-ms-documentdb-is-upsert"])) op = "upsert";
      else if (isTrue(req.headers["x-ms-cosmos-is-batch-request"])) op = "batch";
      else op = "create";
      break;
    case "PUT": op = "replace"; break;
    case "PATCH": op = "patch"; break;
    case "DELETE": op = "delete"; break;
    default: op = req.method.toLowerCase();
  }
  return `${type}.${op}`;
}


// ---------------------------------------------------------------------------------------------------
// Helpers

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

class HttpError extends Error {
  constructor(statusCode, body) {
    super(body.message);
    this.statusCode = statusCode;
    this.body = body;
  }
}

async function readJson(req) {
  const text = await readBody(req);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, { code: "BadRequest", message: `invalid JSON body: ${err.message}` });
  }
}

const NOT_FOUND = () => ({
  code: "NotFound",
  message: "Entity with the specified id does not exist in the system.,",
});

/**
 * The partition key values of a partition-scoped request, or undefined when the request is not scoped
 * (no header, `[]`, or the SDK's "no partition key" marker `[{}]`).
 */
function scopedPartitionKey(req) {
  let header = req.headers["x-ms-documentdb-partitionkey"];
  if (Array.isArray(header)) [header] = header;
  if (typeof header !== "string" || header.trim() === "") return undefined;
  let parsed;
  try {
    parsed = JSON.parse(header);
  } catch {
    throw new HttpError(400, {
      code: "BadRequest",
      message: `Failed to parse x-ms-documentdb-partitionkey header: ${header}`,
    });
  }
  const values = Array.isArray(parsed) ? parsed : [parsed];
  if (values.length === 0) return undefined;
  if (values.length === 1 && isUndefinedMarker(values[0])) return undefined;
  return values;
}

function isUndefinedMarker(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value) && Object.keys(value).length === 0;
}

function valueAtPath(doc, path) {
  let current = doc;
  for (const segment of path.split("/").filter(Boolean)) {
    if (current === null || typeof current !== "object") return undefined;
    current = current[segment];
  }
  return current;
}

function partitionMatches(doc, paths, values) {
  return paths.every((path, i) => {
    const expected = values[i];
    const actual = valueAtPath(doc, path);
    if (expected === undefined || isUndefinedMarker(expected)) return actual === undefined;
    return actual === expected;
  });
}

function partitionKeyPaths(collectionData) {
  const paths = collectionData?.partitionKey?.paths;
  if (!Array.isArray(paths) || paths.length === 0 || paths[0] === "/_partitionKey") return ["/id"];
  return paths;
}

// PATCH of `_`-prefixed top-level paths (fix 6). The package's patch engine refuses every path that starts
// with `/_`. While patching, top-level keys that start with `_` but are not system properties are renamed
// to MARK + key (in the document and in the operation paths), and renamed back before the document is
// stored, so the engine's own rules (set/add/remove/replace/incr/move, If-Match, condition) still apply.
const SYSTEM_PROPERTIES = new Set(["_rid", "_self", "_etag", "_ts", "_attachments"]);
const MARK = "\u0000flowcraft\u0000";

function userUnderscoreKey(key) {
  return key.startsWith("_") && !SYSTEM_PROPERTIES.has(key);
}

function escapePath(path) {
  if (typeof path !== "string" || !path.startsWith("/_")) return path;
  const slash = path.indexOf("/", 1);
  const first = slash === -1 ? path.slice(1) : path.slice(1, slash);
  const key = first.replace(/~1/g, "/").replace(/~0/g, "~");
  return SYSTEM_PROPERTIES.has(key) ? path : `/${MARK}${path.slice(1)}`;
}

function renameKeys(doc, rename) {
  const out = {};
  for (const [key, value] of Object.entries(doc)) out[rename(key)] = value;
  return out;
}

const markKeys = (doc) => renameKeys(doc, (k) => (userUnderscoreKey(k) ? MARK + k : k));
const unmarkKeys = (doc) => renameKeys(doc, (k) => (k.startsWith(MARK) ? k.slice(MARK.length) : k));

/** A view of `collection` for the package's patchOperation: it sees marked keys, stores unmarked ones. */
function patchView(collection) {
  let original;
  return {
    document(id, partitionKey) {
      return {
        read() {
          original = collection.document(id, partitionKey).read();
          return original && markKeys(original);
        },
      };
    },
    documents: {
      query: (params, options) => collection.documents.query(params, options),
      replace: (data) => collection.documents.replace(withinItemLimit(unmarkKeys(data)), original),
    },
  };
}

/** Cosmos DB's largest item (2 MB), as JSON text. */
const MAX_ITEM_BYTES = 2 * 1024 * 1024;

function tooLarge() {
  return new HttpError(413, { code: "RequestEntityTooLarge", message: "Request size is too large" });
}

/** `doc`, or a 413 error if it is larger than an item may be. */
function withinItemLimit(doc) {
  if (Buffer.byteLength(JSON.stringify(doc)) > MAX_ITEM_BYTES) throw tooLarge();
  return doc;
}

// ---------------------------------------------------------------------------------------------------
// Field journal

/** Changes of one field of the documents of one container, observed after every document write. */
class Journal {
  constructor() {
    this.container = undefined;
    this.field = undefined;
    this.entries = [];
    this.seen = new Map();
  }

  start({ container, field }) {
    if (typeof container !== "string" || typeof field !== "string") {
      throw new HttpError(400, { message: 'expected {"container": "<id>", "field": "<name>"}' });
    }
    Object.assign(this, { container, field, entries: [], seen: new Map() });
  }

  /** After a successful write to container `collId` of database `dbId`: record what changed. */
  observe(account, dbId, collId) {
    if (collId !== this.container) return;
    const documents = account.database(dbId).collection(collId).documents;
    for (const item of documents._data.values()) {
      const doc = item.read();
      const key = `${dbId}/${doc.id}`;
      const value = doc[this.field] ?? null;
      const before = this.seen.has(key) ? this.seen.get(key) : null;
      if (value !== before) {
        this.entries.push({ db: dbId, id: doc.id, from: before, to: value });
        this.seen.set(key, value);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Fixed routes

/** Fix 4: 404 for a missing document (the package's handler dereferences the missing document). */
async function readDocument(account, req, res, params, handler) {
  const collection = account.database(params.dbId).collection(params.collId);
  if (collection.read()) {
    let partitionKey;
    let parsed = false;
    try {
      partitionKey = parsePartitionKey(req.headers["x-ms-documentdb-partitionkey"], params.docId);
      parsed = true;
    } catch {
      // leave malformed or absent headers to the package's handler
    }
    if (parsed && !collection.document(params.docId, partitionKey).read()) {
      res.statusCode = 404;
      return NOT_FOUND();
    }
  }
  return handler(account, req, res, params);
}

/**
 * Fix 5: a query with a partition key header runs over that partition's documents only.
 * Also: a query addressed to a partition key range (`x-ms-documentdb-partitionkeyrangeid`, no partition
 * key), which is how azure_data_cosmos 1.0 fans a cross-partition query out (it never sends
 * `x-ms-documentdb-query-enablecrosspartition`), runs over the whole range instead of being refused with
 * 400 "missing partition keys". The stand-in has one range, "0", covering every document.
 */
async function queryDocuments(account, req, res, params, handler) {
  const values = scopedPartitionKey(req);
  let rangeId = req.headers["x-ms-documentdb-partitionkeyrangeid"];
  if (Array.isArray(rangeId)) [rangeId] = rangeId;
  if (values === undefined && rangeId === undefined) return handler(account, req, res, params);
  if (values === undefined && String(rangeId).trim() !== "0") {
    res.statusCode = 400;
    return { code: "BadRequest", message: `unknown partition key range id ${rangeId} (the stand-in has only "0")` };
  }
  const body = await readJson(req);
  if (!body.query) {
    res.statusCode = 400;
    return { message: "missing query" };
  }
  const collection = account.database(params.dbId).collection(params.collId);
  const collectionData = collection.read();
  if (!collectionData) {
    res.statusCode = 404;
    return NOT_FOUND();
  }
  const documents = collection.documents;
  const run = (store) =>
    readItems(req, res, "Documents", async ({ continuation, maxItemCount }) => {
      try {
        return store.query(body, { continuation, maxItemCount });
      } catch (err) {
        if (err.badRequest) throw new HttpError(400, { code: "BadRequest", message: err.message });
        throw err;
      }
    });
  if (values === undefined) return run(documents);
  const paths = partitionKeyPaths(collectionData);
  // Same store, narrowed: an object inheriting from the collection's Items store whose `_data` map
  // holds only the documents of the requested partition, so the package's own query path runs on it.
  const inPartition = new Map();
  for (const [rid, item] of documents._data) {
    if (partitionMatches(item.read(), paths, values)) inPartition.set(rid, item);
  }
  return run(Object.create(documents, { _data: { value: inPartition } }));
}

/** Fix 6: PATCH of user `_` paths; system properties stay refused by the package's engine. */
async function patchDocument(account, req, res, params) {
  const body = await readJson(req);
  let operations;
  let condition;
  if (Array.isArray(body)) operations = body;
  else if (body && Array.isArray(body.operations)) ({ operations, condition } = body);
  else {
    res.statusCode = 400;
    return { code: "BadRequest", message: "Invalid patch request: check syntax of patch specification." };
  }
  const escaped = operations.map((op) =>
    op && typeof op === "object" ? { ...op, path: escapePath(op.path), from: escapePath(op.from) } : op,
  );
  const result = patchOperation(patchView(account.database(params.dbId).collection(params.collId)), {
    id: params.docId,
    partitionKey: req.headers["x-ms-documentdb-partitionkey"],
    ifMatch: req.headers["if-match"],
    operations: escaped,
    condition,
  });
  res.statusCode = result.statusCode;
  if (result.statusCode >= 400 && result.body && typeof result.body.message === "string") {
    result.body.message = result.body.message.split(MARK).join("");
  }
  return result.body;
}

/** Fix 1: partition key range ids (and parents) as strings. */
async function readPartitionKeyRanges(account, req, res, params, handler) {
  const body = await handler(account, req, res, params);
  if (body && Array.isArray(body.PartitionKeyRanges)) {
    body.PartitionKeyRanges = body.PartitionKeyRanges.map((range) => ({
      ...range,
      id: String(range.id),
      parents: (range.parents ?? []).map(String),
    }));
  }
  return body;
}

const OVERRIDES = {
  "doc.read": readDocument,
  "doc.query": queryDocuments,
  "doc.patch": patchDocument,
  "pkrange.list": readPartitionKeyRanges,
};

// ---------------------------------------------------------------------------------------------------
// Server

const QUERY_METRICS =
  "totalExecutionTimeInMs=0.00;queryCompileTimeInMs=0.00;queryLogicalPlanBuildTimeInMs=0.00;" +
  "queryPhysicalPlanBuildTimeInMs=0.00;queryOptimizationTimeInMs=0.00;VMExecutionTimeInMs=0.00;" +
  "indexLookupTimeInMs=0.00;documentLoadTimeInMs=0.00;systemFunctionExecuteTimeInMs=0.00;" +
  "userFunctionExecuteTimeInMs=0.00;retrievedDocumentCount=0;retrievedDocumentSize=0;outputDocumentCount=1;" +
  "outputDocumentSize=0;writeOutputTimeInMs=0.00;indexUtilizationRatio=0.00";

function sendJson(res, status, body) {
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify(body));
}

const WRITE_KINDS = new Set(["doc.create", "doc.upsert", "doc.replace", "doc.patch", "doc.delete"]);

function createServer(opts) {
  const scheme = opts.https ? "https" : "http";
  const counters = new Counters();
  const faults = new Faults();
  const journal = new Journal();
  let account;

  async function dispatch(req, res, pathname) {
    const matched = route(req);
    if (!matched) {
      res.statusCode = 400;
      return { message: "no route" };
    }
    const [params, handler] = matched;
    const override = OVERRIDES[requestKind(req, pathname)];
    return override ? override(account, req, res, params, handler) : handler(account, req, res, params);
  }

  async function handle(req, res) {
    const { pathname } = new URL(req.url, "http://localhost");
    if (pathname === "/_flowcraft/stats" && req.method === "GET") {
      return sendJson(res, 200, counters.snapshot("cosmos"));
    }
    if (pathname === "/_flowcraft/stats/reset" && req.method === "POST") {
      const before = counters.snapshot("cosmos");
      counters.reset();
      return sendJson(res, 200, before);
    }
    if (await faults.control(req, res, pathname, readJson, sendJson)) return;
    if (pathname === "/_flowcraft/journal") {
      if (req.method === "POST") journal.start(await readJson(req));
      return sendJson(res, 200, { entries: journal.entries });
    }
    const kind = requestKind(req, pathname.replace(/^\/\//, "/"));
    res.on("finish", () => counters.record(kind, res.statusCode));
    const rule = faults.pick(kind, pathname);
    if (rule) {
      return injectFailure(rule, req, res, (status, code) => ({
        contentType: "application/json",
        body: JSON.stringify({ code, message: `injected by the flowcraft fault suite (HTTP ${status})` }),
      }));
    }
    const isWrite = WRITE_KINDS.has(kind);
    if (isWrite && Number(req.headers["content-length"] ?? 0) > MAX_ITEM_BYTES) {
      res.statusCode = 413;
      return res.end(JSON.stringify(tooLarge().body));
    }

    let body;
    try {
      body = await dispatch(req, res, pathname.replace(/^\/\//, "/"));
      if (isWrite && res.statusCode < 300 && journal.container) {
        const matched = route(req);
        if (matched) journal.observe(account, matched[0].dbId, matched[0].collId);
      }
    } catch (err) {
      if (err instanceof HttpError) {
        res.statusCode = err.statusCode;
        body = err.body;
      } else {
        console.error(err);
        res.statusCode = 500;
        body = { message: err.message };
      }
    }
    if (res.statusCode > 399 && body && body.message === undefined) body.message = "";
    if (body && body._etag) res.setHeader("etag", body._etag);
    // A successful write asked for `Prefer: return=minimal` answers without the document, as Cosmos does.
    if (isWrite && res.statusCode < 300 && /return=minimal/i.test(req.headers.prefer ?? "")) body = undefined;
    res.setHeader("content-type", "application/json");
    res.setHeader("content-location", `${scheme}://${req.headers.host}${req.url}`);
    res.setHeader("x-ms-activity-id", randomUUID());
    res.setHeader("x-ms-request-charge", "1");
    if (req.headers["x-ms-documentdb-populatequerymetrics"]) {
      res.setHeader("x-ms-documentdb-query-metrics", QUERY_METRICS);
    }
    if (req.headers["a-im"] && res.statusCode === 200) {
      if (req.headers["if-none-match"]) res.statusCode = 304;
      res.setHeader("etag", "1");
    }
    res.end(body === undefined ? undefined : JSON.stringify(body));
  }

  const listener = (req, res) => {
    handle(req, res).catch((err) => {
      console.error(err);
      if (!res.headersSent) res.statusCode = 500;
      if (!res.writableEnded) res.end();
    });
  };

  const server = opts.https
    ? https.createServer(
        {
          cert: readFileSync(join(pkgDir, "cert.pem")),
          key: readFileSync(join(pkgDir, "key.pem")),
          minVersion: "TLSv1.2",
        },
        listener,
      )
    : http.createServer(listener);
  // Fix 3: Node's default closes idle keep-alive connections after 5 s, the moment clients reuse them.
  server.keepAliveTimeout = opts.keepAliveTimeout * 1000;
  server.headersTimeout = opts.keepAliveTimeout * 1000 + 5000;

  server.on("listening", () => {
    const { address, port } = server.address();
    const host = address === "0.0.0.0" || address === "::" ? "localhost" : address;
    account = new Account(host, port);
    // Fix 2: advertise the scheme actually served (the package hard-codes https://).
    const meta = account.read();
    for (const location of [...meta.writableLocations, ...meta.readableLocations]) {
      location.databaseAccountEndpoint = `${scheme}://${host}:${port}/`;
    }
  });
  return { server, scheme };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { server, scheme } = createServer(opts);
  server.on("error", (err) => {
    console.error(`cosmos stand-in: ${err.message}`);
    process.exit(1);
  });
  server.listen(opts.port, opts.host, () => {
    const { address, port } = server.address();
    console.log(`cosmos stand-in (${PKG} + flowcraft fixes) listening on ${scheme}://${address}:${port}/`);
  });
  const shutdown = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

main();
