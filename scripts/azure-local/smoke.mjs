#!/usr/bin/env node
// Smoke test of the local Azure stand-ins, with plain fetch: each fix of the Cosmos wrapper, a queue
// round trip on Azurite, and both stats endpoints. Run through `scripts/azure-local.sh smoke`, which
// exports the same environment as `scripts/azure-local.sh env` (the connection strings are parsed here).
// Exits non-zero at the first failed check.

import { createHmac, randomUUID } from "node:crypto";

let failures = 0;
function check(name, ok, detail = "") {
  if (ok) {
    console.log(`  ok   ${name}`);
  } else {
    failures += 1;
    console.log(`  FAIL ${name}${detail ? `: ${detail}` : ""}`);
  }
  return ok;
}

function parseConnectionString(value, name) {
  if (!value) throw new Error(`${name} is not set (eval "$(scripts/azure-local.sh env)")`);
  const out = {};
  for (const part of value.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

const keepsAlive = (res) => (res.headers.get("connection") ?? "").toLowerCase() !== "close";

// ---------------------------------------------------------------------------------------------------
// Cosmos (REST, master-key auth; the stand-in does not verify it, real Cosmos would)

function cosmosClient(connectionString) {
  const cs = parseConnectionString(connectionString, "COSMOS_DB_CONNECTION_STRING");
  const endpoint = cs.AccountEndpoint.replace(/\/+$/, "");
  const key = Buffer.from(cs.AccountKey, "base64");

  return async function request(method, path, { body, headers = {}, resourceType, resourceLink } = {}) {
    const date = new Date().toUTCString();
    const toSign = `${method.toLowerCase()}\n${resourceType.toLowerCase()}\n${resourceLink}\n${date.toLowerCase()}\n\n`;
    const sig = createHmac("sha256", key).update(toSign, "utf8").digest("base64");
    const res = await fetch(`${endpoint}${path}`, {
      method,
      headers: {
        authorization: encodeURIComponent(`type=master&ver=1.0&sig=${sig}`),
        "x-ms-date": date,
        "x-ms-version": "2020-07-15",
        accept: "application/json",
        ...(body !== undefined && !headers["content-type"] ? { "content-type": "application/json" } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, json, text, res };
  };
}

async function cosmosSmoke() {
  console.log("cosmos stand-in");
  const endpoint = parseConnectionString(process.env.COSMOS_DB_CONNECTION_STRING, "COSMOS_DB_CONNECTION_STRING")
    .AccountEndpoint.replace(/\/+$/, "");
  const scheme = new URL(endpoint).protocol.slice(0, -1);
  const cosmos = cosmosClient(process.env.COSMOS_DB_CONNECTION_STRING);
  const db = `smoke-${randomUUID().slice(0, 8)}`;
  const coll = "runs";
  const collLink = `dbs/${db}/colls/${coll}`;
  const docs = `/${collLink}/docs`;
  const pk = (v) => ({ "x-ms-documentdb-partitionkey": JSON.stringify([v]) });

  const stats0 = await fetch(`${endpoint}/_flowcraft/stats/reset`, { method: "POST" });
  check("POST /_flowcraft/stats/reset -> 200", stats0.status === 200, `got ${stats0.status}`);

  // fix 2: advertised scheme; fix 3: keep-alive
  let r = await cosmos("GET", "/", { resourceType: "", resourceLink: "" });
  const locations = [...(r.json?.writableLocations ?? []), ...(r.json?.readableLocations ?? [])];
  check("GET / -> 200", r.status === 200, `got ${r.status}`);
  check(
    `GET / advertises ${scheme}:// in writable/readableLocations`,
    locations.length === 2 && locations.every((l) => l.databaseAccountEndpoint === `${endpoint}/`),
    JSON.stringify(locations),
  );
  check("keep-alive (no connection: close)", keepsAlive(r.res), r.headers.get("connection"));
  check("keep-alive idle timeout 120 s", /timeout=120\b/.test(r.headers.get("keep-alive") ?? ""), r.headers.get("keep-alive"));

  r = await cosmos("POST", "/dbs", { body: { id: db }, resourceType: "dbs", resourceLink: "" });
  check("create database -> 201", r.status === 201, `got ${r.status} ${r.text}`);
  r = await cosmos("POST", `/dbs/${db}/colls`, {
    body: { id: coll, partitionKey: { paths: ["/runId"], kind: "Hash" } },
    resourceType: "colls",
    resourceLink: `dbs/${db}`,
  });
  check("create container (partition key /runId) -> 201", r.status === 201, `got ${r.status} ${r.text}`);

  // fix 1: pkranges ids are strings
  r = await cosmos("GET", `/${collLink}/pkranges`, { resourceType: "pkranges", resourceLink: collLink });
  const ranges = r.json?.PartitionKeyRanges ?? [];
  check("GET pkranges -> 200", r.status === 200, `got ${r.status}`);
  check(
    "pkranges ids are strings",
    ranges.length > 0 && ranges.every((x) => typeof x.id === "string"),
    JSON.stringify(ranges.map((x) => x.id)),
  );

  // upsert + read
  const upsert = (doc) =>
    cosmos("POST", docs, {
      body: doc,
      headers: { ...pk(doc.runId), "x-ms-documentdb-is-upsert": "True" },
      resourceType: "docs",
      resourceLink: collLink,
    });
  r = await upsert({ id: "ctx", runId: "run-1", status: "running", "_inputs.A": 1 });
  check("upsert new item -> 201", r.status === 201, `got ${r.status} ${r.text}`);
  r = await upsert({ id: "ctx", runId: "run-1", status: "running", "_inputs.A": 1, n: 1 });
  check("upsert existing item -> 200", r.status === 200, `got ${r.status} ${r.text}`);
  r = await upsert({ id: "ctx", runId: "run-2", status: "done" });
  check("upsert same id in another partition -> 201", r.status === 201, `got ${r.status} ${r.text}`);
  r = await upsert({ id: "other", runId: "run-1", status: "x" });
  check("upsert second item in partition run-1 -> 201", r.status === 201, `got ${r.status} ${r.text}`);

  const read = (id, runId) =>
    cosmos("GET", `${docs}/${id}`, { headers: pk(runId), resourceType: "docs", resourceLink: `${collLink}/docs/${id}` });
  r = await read("ctx", "run-1");
  check("read item -> 200", r.status === 200 && r.json?.runId === "run-1" && r.json?.n === 1, `got ${r.status} ${r.text}`);
  check("read item has an etag header", Boolean(r.headers.get("etag")));

  // fix 4: missing document -> 404
  r = await read("missing", "run-1");
  check("read missing item -> 404", r.status === 404, `got ${r.status} ${r.text}`);

  // fix 6: PATCH of `_` top-level paths, system properties still refused
  const patch = (id, runId, body) =>
    cosmos("PATCH", `${docs}/${id}`, {
      body,
      headers: pk(runId),
      resourceType: "docs",
      resourceLink: `${collLink}/docs/${id}`,
    });
  r = await patch("ctx", "run-1", { operations: [{ op: "set", path: "/_outputs.A", value: { ok: 42 } }] });
  check("PATCH set /_outputs.A -> 200", r.status === 200 && r.json?.["_outputs.A"]?.ok === 42, `got ${r.status} ${r.text}`);
  r = await patch("ctx", "run-1", {
    operations: [
      { op: "incr", path: "/_counter", value: 2 },
      { op: "remove", path: "/_inputs.A" },
      { op: "set", path: "/status", value: "completed" },
    ],
  });
  check(
    "PATCH incr /_counter + remove /_inputs.A + set /status -> 200",
    r.status === 200 && r.json?._counter === 2 && !("_inputs.A" in (r.json ?? {})) && r.json?.status === "completed",
    `got ${r.status} ${r.text}`,
  );
  r = await read("ctx", "run-1");
  check(
    "read after PATCH shows the patched keys",
    r.json?.["_outputs.A"]?.ok === 42 && r.json?._counter === 2 && r.json?.status === "completed" &&
      !Object.keys(r.json ?? {}).some((k) => k.includes("\u0000")),
    r.text,
  );
  for (const sys of ["_etag", "_ts", "_rid", "_self", "_attachments"]) {
    r = await patch("ctx", "run-1", { operations: [{ op: "set", path: `/${sys}`, value: "x" }] });
    check(`PATCH set /${sys} -> 400`, r.status === 400, `got ${r.status} ${r.text}`);
  }
  r = await patch("missing", "run-1", { operations: [{ op: "set", path: "/_outputs.A", value: 1 }] });
  check("PATCH missing item -> 404", r.status === 404, `got ${r.status} ${r.text}`);

  // fix 5: partition-scoped query
  const query = (sql, headers) =>
    cosmos("POST", docs, {
      body: { query: sql, parameters: [] },
      headers: { "content-type": "application/query+json", "x-ms-documentdb-isquery": "True", ...headers },
      resourceType: "docs",
      resourceLink: collLink,
    });
  r = await query("SELECT * FROM c", pk("run-1"));
  const scoped = r.json?.Documents ?? [];
  check(
    "query with partition key header returns only that partition",
    r.status === 200 && scoped.length === 2 && scoped.every((d) => d.runId === "run-1"),
    `got ${r.status} ${JSON.stringify(scoped.map((d) => [d.id, d.runId]))}`,
  );
  r = await query("SELECT VALUE COUNT(1) FROM c", pk("run-2"));
  check("COUNT in partition run-2 = 1", r.status === 200 && r.json?.Documents?.[0] === 1, r.text);
  r = await query("SELECT * FROM c", { "x-ms-documentdb-query-enablecrosspartition": "True" });
  check("cross-partition query sees all partitions", r.status === 200 && r.json?.Documents?.length === 3, r.text);
  r = await query("SELECT * FROM c WHERE c.status != 'x'", { "x-ms-documentdb-partitionkeyrangeid": "0" });
  check(
    "query on partition key range 0 (the SDK's cross-partition fan-out) sees all partitions",
    r.status === 200 && r.json?.Documents?.length === 2,
    `got ${r.status} ${r.text}`,
  );

  // request counters
  const stats = await (await fetch(`${endpoint}/_flowcraft/stats`)).json();
  check(
    "GET /_flowcraft/stats counts requests by kind",
    stats.byKind?.["doc.upsert"] === 4 && stats.byKind?.["doc.read"] === 3 && stats.byKind?.["doc.query"] === 4 &&
      stats.byKind?.["doc.patch"] >= 3 && stats.byKind?.["pkrange.list"] === 1 && stats.byKindStatus?.["doc.read 404"] === 1,
    JSON.stringify(stats.byKind),
  );

  r = await cosmos("DELETE", `/dbs/${db}`, { resourceType: "dbs", resourceLink: `dbs/${db}` });
  check("delete database -> 204", r.status === 204, `got ${r.status}`);
}

// ---------------------------------------------------------------------------------------------------
// Azurite queue (SharedKey auth)

function queueClient(connectionString) {
  const cs = parseConnectionString(connectionString, "AZURE_STORAGE_CONNECTION_STRING");
  const endpoint = cs.QueueEndpoint.replace(/\/+$/, "");
  const account = cs.AccountName;
  const key = Buffer.from(cs.AccountKey, "base64");

  return async function request(method, path, { body, query = {} } = {}) {
    const url = new URL(`${endpoint}${path}`);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const headers = { "x-ms-date": new Date().toUTCString(), "x-ms-version": "2021-12-02" };
    const length = body === undefined ? 0 : Buffer.byteLength(body);
    if (body !== undefined) headers["content-type"] = "application/xml";
    const canonicalHeaders = Object.keys(headers)
      .filter((h) => h.startsWith("x-ms-"))
      .sort()
      .map((h) => `${h}:${headers[h]}\n`)
      .join("");
    const params = [...url.searchParams.keys()].map((k) => k.toLowerCase()).sort();
    const canonicalResource =
      `/${account}${url.pathname}` + params.map((k) => `\n${k}:${url.searchParams.get(k)}`).join("");
    const toSign = [
      method, "", "", length === 0 ? "" : String(length), "", headers["content-type"] ?? "", "", "", "", "", "", "",
    ].join("\n") + `\n${canonicalHeaders}${canonicalResource}`;
    const sig = createHmac("sha256", key).update(toSign, "utf8").digest("base64");
    headers.authorization = `SharedKey ${account}:${sig}`;
    const res = await fetch(url, { method, headers, body });
    return { status: res.status, text: await res.text(), res };
  };
}

async function queueSmoke() {
  console.log("queue stand-in (azurite)");
  const cs = parseConnectionString(process.env.AZURE_STORAGE_CONNECTION_STRING, "AZURE_STORAGE_CONNECTION_STRING");
  check("QueueEndpoint has no trailing slash", !cs.QueueEndpoint.endsWith("/"), cs.QueueEndpoint);
  const base = new URL(cs.QueueEndpoint).origin;
  const queue = queueClient(process.env.AZURE_STORAGE_CONNECTION_STRING);
  const name = `smoke-${randomUUID().slice(0, 8)}`;

  const stats0 = await fetch(`${base}/_flowcraft/stats/reset`, { method: "POST" });
  check("POST /_flowcraft/stats/reset -> 200", stats0.status === 200, `got ${stats0.status}`);

  let r = await queue("PUT", `/${name}`);
  check("create queue -> 201", r.status === 201, `got ${r.status} ${r.text}`);
  check("keep-alive idle timeout 120 s", /timeout=120\b/.test(r.res.headers.get("keep-alive") ?? ""), r.res.headers.get("keep-alive"));
  const text = Buffer.from(JSON.stringify({ runId: "run-1", nodeId: "A" })).toString("base64");
  r = await queue("POST", `/${name}/messages`, {
    body: `<?xml version="1.0" encoding="utf-8"?><QueueMessage><MessageText>${text}</MessageText></QueueMessage>`,
  });
  check("put message -> 201", r.status === 201, `got ${r.status} ${r.text}`);
  r = await queue("GET", `/${name}/messages`, { query: { numofmessages: "1", visibilitytimeout: "30" } });
  const got = /<MessageText>([^<]*)<\/MessageText>/.exec(r.text)?.[1];
  const id = /<MessageId>([^<]*)<\/MessageId>/.exec(r.text)?.[1];
  const receipt = /<PopReceipt>([^<]*)<\/PopReceipt>/.exec(r.text)?.[1];
  check("get message -> 200 with the same text", r.status === 200 && got === text, `got ${r.status} ${r.text}`);
  r = await queue("DELETE", `/${name}/messages/${id}`, { query: { popreceipt: receipt } });
  check("delete message -> 204", r.status === 204, `got ${r.status} ${r.text}`);
  r = await queue("GET", `/${name}/messages`, { query: { numofmessages: "1" } });
  check("queue is empty afterwards", r.status === 200 && !r.text.includes("<QueueMessage>"), r.text);
  r = await queue("DELETE", `/${name}`);
  check("delete queue -> 204", r.status === 204, `got ${r.status} ${r.text}`);

  const stats = await (await fetch(`${base}/_flowcraft/stats`)).json();
  check(
    "GET /_flowcraft/stats counts requests by kind",
    stats.byKind?.["message.send"] === 1 && stats.byKind?.["message.receive"] === 2 &&
      stats.byKind?.["message.delete"] === 1 && stats.byKind?.["queue.create"] === 1,
    JSON.stringify(stats.byKind),
  );
}

// ---------------------------------------------------------------------------------------------------

const which = process.argv[2] ?? "all";
try {
  if (which === "all" || which === "cosmos") await cosmosSmoke();
  if (which === "all" || which === "queue") await queueSmoke();
} catch (err) {
  failures += 1;
  console.log(`  FAIL ${err.stack ?? err}`);
}
if (failures > 0) {
  console.log(`smoke: ${failures} check(s) failed`);
  process.exit(1);
}
console.log("smoke: all checks passed");
