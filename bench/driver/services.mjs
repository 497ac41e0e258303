// The local services as the driver sees them: request counters read at the services (the Cosmos and
// queue stand-ins' `/_flowcraft/stats`; for Redis, `INFO commandstats`, which also counts the commands
// a Lua script runs, and a MONITOR connection, which tells them apart so that round trips can be
// counted), the service processes (for their CPU), and the queue, database and containers each
// measurement creates and deletes.

import { once } from "node:events";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { cosmosClient, queueServiceClient, redisClient } from "../ts-reference/clients.mjs";

/** Redis commands that only the driver sends (connection set-up, counters, clean-up). */
const DRIVER_REDIS_COMMANDS = new Set(["info", "config", "flushdb", "hello", "client", "client|setinfo", "select"]);

/** The `http://host:port` of a connection-string setting, for the stats endpoints. */
function origin(connectionString, setting) {
  const part = connectionString.split(";").find((p) => p.toLowerCase().startsWith(`${setting.toLowerCase()}=`));
  if (!part) throw new Error(`the connection string has no ${setting}`);
  return new URL(part.slice(setting.length + 1)).origin;
}

export class Services {
  constructor(env, stateDir) {
    this.env = env;
    this.stateDir = stateDir;
    this.cosmosOrigin = origin(env.COSMOS_DB_CONNECTION_STRING, "AccountEndpoint");
    this.queueOrigin = origin(env.AZURE_STORAGE_CONNECTION_STRING, "QueueEndpoint");
    this.cosmos = cosmosClient(env);
    this.queues = queueServiceClient(env);
    this.redis = redisClient(env);
  }

  /**
   * Requests served so far: `{cosmos: {kind: n}, queue: {...}, redis: {command: calls}}`; the Redis
   * counts include commands run inside scripts.
   */
  async requests() {
    const [cosmos, queue, info] = await Promise.all([
      this.stats(this.cosmosOrigin),
      this.stats(this.queueOrigin),
      this.redis.info("commandstats"),
    ]);
    const redis = {};
    for (const line of info.split("\n")) {
      const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
      if (match && !DRIVER_REDIS_COMMANDS.has(match[1])) redis[match[1]] = Number(match[2]);
    }
    return { cosmos, queue, redis };
  }

  async stats(serviceOrigin) {
    const response = await fetch(`${serviceOrigin}/_flowcraft/stats`);
    if (!response.ok) throw new Error(`GET ${serviceOrigin}/_flowcraft/stats answered ${response.status}`);
    return (await response.json()).byKind;
  }

  /**
   * Starts counting the Redis commands that clients send (round trips; not the commands scripts
   * run), on a MONITOR connection of its own. `stop()` ends the count and returns `{command: n}`.
   */
  async countRedisRoundTrips() {
    const { hostname, port } = new URL(this.env.REDIS_URL);
    const socket = connect(Number(port || 6379), hostname);
    await once(socket, "connect");
    socket.setEncoding("utf8");
    socket.write("MONITOR\r\n");
    const counts = {};
    let pending = "";
    socket.on("data", (chunk) => {
      const lines = (pending + chunk).split("\r\n");
      pending = lines.pop();
      for (const line of lines) {
        // +<time> [<db> <client address, or "lua" inside a script>] "<COMMAND>" "<arg>" ...
        const match = /^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"/.exec(line);
        if (!match || match[1] === "lua") continue;
        const command = match[2].toLowerCase();
        if (!DRIVER_REDIS_COMMANDS.has(command)) counts[command] = (counts[command] ?? 0) + 1;
      }
    });
    return {
      stop: () => {
        socket.destroy();
        return counts;
      },
    };
  }

  /** Pids of the service processes, from `scripts/azure-local.sh`'s pid files. */
  pids() {
    const pid = (service) => Number(readFileSync(`${this.stateDir}/${service}.pid`, "utf8").trim());
    return { queue: pid("queue"), cosmos: pid("cosmos"), redis: pid("redis") };
  }

  /** Creates the queue, database and containers of one measurement; returns `{queue, database}` clients. */
  async createResources(names) {
    const queue = this.queues.getQueueClient(names.queue);
    await queue.createIfNotExists();
    const { database } = await this.cosmos.databases.createIfNotExists({ id: names.database });
    for (const id of [names.contextContainer, names.statusContainer]) {
      await database.containers.createIfNotExists({ id, partitionKey: { paths: ["/runId"] } });
    }
    return { queue, database };
  }

  /** Deletes what `createResources` made, and every Redis key (runs of one measurement only). */
  async deleteResources(resources) {
    await resources.queue.deleteIfExists();
    await resources.database.delete();
    await this.redis.flushdb();
  }

  close() {
    this.redis.disconnect();
  }
}

/**
 * `minuend - subtrahend` per service and kind, without entries that come to zero: the requests of a
 * window from two counter readings, or the counts without the driver's own requests.
 */
export function subtractCounts(minuend, subtrahend) {
  const result = {};
  for (const [service, kinds] of Object.entries(minuend)) {
    result[service] = {};
    for (const [kind, count] of Object.entries(kinds)) {
      const n = count - (subtrahend[service]?.[kind] ?? 0);
      if (n > 0) result[service][kind] = n;
    }
  }
  return result;
}
