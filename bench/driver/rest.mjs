// The driver's own requests (run starts and status polls) as plain HTTP on keep-alive connections.
// The Azure SDKs cost 0.5–1 ms of CPU per request here; the driver shares the machine's cores with
// the workers and services it measures, so it keeps its own cost small by speaking REST directly:
// Cosmos items with master-key signatures, queue messages with a SAS made once by the queue SDK.

import { createHmac } from "node:crypto";
import { Agent, request } from "node:http";
import { QueueSASPermissions } from "../ts-reference/clients.mjs";

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

/** One HTTP request; resolves to `{status, body}` (body as text). */
function send(url, method, headers, body) {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, agent }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

function setting(connectionString, name) {
  const part = connectionString.split(";").find((p) => p.startsWith(`${name}=`));
  if (!part) throw new Error(`the connection string has no ${name}`);
  return part.slice(name.length + 1);
}

/** Items of one Cosmos container, partitioned by `/runId`, over the REST API. */
export class CosmosItems {
  constructor(connectionString, database, container) {
    this.endpoint = setting(connectionString, "AccountEndpoint").replace(/\/+$/, "");
    this.key = Buffer.from(setting(connectionString, "AccountKey"), "base64");
    this.link = `dbs/${database}/colls/${container}`;
  }

  headers(method, resourceLink, partitionKey) {
    const date = new Date().toUTCString();
    const signed = `${method.toLowerCase()}\ndocs\n${resourceLink}\n${date.toLowerCase()}\n\n`;
    const signature = createHmac("sha256", this.key).update(signed).digest("base64");
    return {
      authorization: encodeURIComponent(`type=master&ver=1.0&sig=${signature}`),
      "x-ms-date": date,
      "x-ms-version": "2020-07-15",
      "x-ms-documentdb-partitionkey": JSON.stringify([partitionKey]),
      "content-type": "application/json",
    };
  }

  async write(item, { upsert }) {
    const headers = this.headers("POST", this.link, item.runId);
    if (upsert) headers["x-ms-documentdb-is-upsert"] = "True";
    const { status, body } = await send(`${this.endpoint}/${this.link}/docs`, "POST", headers, JSON.stringify(item));
    if (status >= 300) throw new Error(`Cosmos ${upsert ? "upsert" : "create"} of ${item.id} answered ${status}: ${body}`);
  }

  /** The item whose id and partition key are `runId`, or null. */
  async read(runId) {
    const link = `${this.link}/docs/${encodeURIComponent(runId)}`;
    const { status, body } = await send(`${this.endpoint}/${link}`, "GET", this.headers("GET", link, runId));
    if (status === 404) return null;
    if (status >= 300) throw new Error(`Cosmos read of ${runId} answered ${status}: ${body}`);
    return JSON.parse(body);
  }
}

/** Sends messages to one queue over the REST API, authorised by a SAS from `queueClient`. */
export class QueueSender {
  constructor(queueClient) {
    const expiresOn = new Date(Date.now() + 24 * 3600 * 1000);
    const sasUrl = new URL(queueClient.generateSasUrl({ permissions: QueueSASPermissions.parse("a"), expiresOn }));
    this.url = `${sasUrl.origin}${sasUrl.pathname}/messages${sasUrl.search}`;
  }

  async send(text) {
    const body = `<?xml version="1.0" encoding="utf-8"?><QueueMessage><MessageText>${text}</MessageText></QueueMessage>`;
    const { status, body: answer } = await send(this.url, "POST", { "x-ms-version": "2020-10-02", "content-type": "application/xml" }, body);
    if (status >= 300) throw new Error(`queue send answered ${status}: ${answer}`);
  }
}
