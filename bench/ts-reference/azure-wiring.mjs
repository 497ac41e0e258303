// The Azure wiring of the TypeScript reference worker: npm `flowcraft`'s BaseDistributedAdapter on
// Azure Queue Storage, Cosmos DB and Redis, behaving as upstream's @flowcraft/azure-adapter 1.5.1
// does (that package is not on npm). Written from the behaviour described in
// shared/reference/flowcraft-upstream.md §5; the benchmark needs the upstream request pattern, so
// nothing here is optimised:
//
// - queue messages: base64 of the job's JSON; receive 10 at a time with a 30 s visibility timeout,
//   handle the batch concurrently, delete each handled message, receive again at once (no back-off);
//   after a receive error wait 5 s;
// - run context: one Cosmos item per run (id = runId = partition key), context keys as top-level
//   properties; every `get`/`has`/`toJSON` is a point read, every `set` a point read followed by a
//   full-document upsert, `delete` and `patch` are Cosmos patches (the base class replays a node's
//   writes as one patch after writing them through);
// - status: at the start of every job `status = running` and `lastUpdated = <unix seconds>`, each as
//   a read + upsert of the status item; the final result as three read + upserts (finalStatus,
//   status, lastUpdated);
// - coordination: Redis, `INCR`+`EXPIRE` pipelined for joins, `SET NX EX` for locks and pills.

import { Buffer } from "node:buffer";
import { BaseDistributedAdapter } from "flowcraft";

/** Cosmos system properties that `toJSON` leaves out, with the item's identity. */
const ITEM_PROPERTIES = ["id", "runId", "_rid", "_self", "_etag", "_attachments", "_ts"];

/** One run's context (or status) item, as the upstream adapter's Cosmos context reads and writes it. */
export class CosmosRunItem {
  type = "async";

  constructor(container, runId) {
    this.container = container;
    this.runId = runId;
  }

  async read() {
    try {
      const { resource } = await this.container.item(this.runId, this.runId).read();
      return resource ?? null;
    } catch (error) {
      if (error.code === 404) return null;
      throw error;
    }
  }

  async get(key) {
    return (await this.read())?.[key];
  }

  async has(key) {
    const item = await this.read();
    return item !== null && Object.hasOwn(item, key);
  }

  async set(key, value) {
    const item = await this.read();
    await this.container.items.upsert({ id: this.runId, runId: this.runId, ...item, [key]: value });
  }

  async delete(key) {
    try {
      await this.container.item(this.runId, this.runId).patch([{ op: "remove", path: `/${key}` }]);
      return true;
    } catch (error) {
      if (error.code === 400) return false;
      throw error;
    }
  }

  async toJSON() {
    const item = await this.read();
    if (!item) return {};
    const context = { ...item };
    for (const property of ITEM_PROPERTIES) delete context[property];
    return context;
  }

  async patch(operations) {
    if (operations.length === 0) return;
    const cosmosOperations = operations.map((operation) =>
      operation.op === "set"
        ? { op: "set", path: `/${operation.key}`, value: operation.value }
        : { op: "remove", path: `/${operation.key}` },
    );
    await this.container.item(this.runId, this.runId).patch(cosmosOperations);
  }
}

/** The coordination store on Redis (ioredis), with upstream's commands. */
export class RedisCoordinationStore {
  constructor(redis) {
    this.redis = redis;
  }

  async increment(key, ttlSeconds) {
    const results = await this.redis.pipeline().incr(key).expire(key, ttlSeconds).exec();
    if (!results) return 0;
    return results[0][1];
  }

  async setIfNotExist(key, value, ttlSeconds) {
    return (await this.redis.set(key, value, "EX", ttlSeconds, "NX")) === "OK";
  }

  async extendTTL(key, ttlSeconds) {
    return (await this.redis.expire(key, ttlSeconds)) === 1;
  }

  async delete(key) {
    await this.redis.del(key);
  }

  async get(key) {
    return (await this.redis.get(key)) ?? undefined;
  }
}

const unixSeconds = () => Math.floor(Date.now() / 1000);

/** The worker: BaseDistributedAdapter with the queue, context and status behaviour of upstream's adapter. */
export class AzureQueueWorker extends BaseDistributedAdapter {
  polling = false;

  /**
   * @param {object} options `runtimeOptions` and `coordinationStore` for the base class, plus
   *   `queue` (a QueueClient), `contextContainer` and `statusContainer` (Cosmos containers).
   */
  constructor(options) {
    super(options);
    this.queue = options.queue;
    this.contextContainer = options.contextContainer;
    this.statusContainer = options.statusContainer;
  }

  createContext(runId) {
    return new CosmosRunItem(this.contextContainer, runId);
  }

  async enqueueJob(job) {
    await this.queue.sendMessage(Buffer.from(JSON.stringify(job)).toString("base64"));
  }

  async onJobStart(runId) {
    try {
      const status = new CosmosRunItem(this.statusContainer, runId);
      await status.set("status", "running");
      await status.set("lastUpdated", unixSeconds());
    } catch (error) {
      this.logger.error(`failed to touch the status of run ${runId}: ${error.message}`);
    }
  }

  async publishFinalResult(runId, result) {
    const status = new CosmosRunItem(this.statusContainer, runId);
    await status.set("finalStatus", result);
    await status.set("status", result.status);
    await status.set("lastUpdated", unixSeconds());
  }

  async registerWebhookEndpoint() {
    throw new Error("registerWebhookEndpoint not implemented for AzureAdapter");
  }

  processJobs(handler) {
    if (this.polling) return;
    this.polling = true;
    this.poll(handler);
  }

  async poll(handler) {
    while (this.polling) {
      try {
        const response = await this.queue.receiveMessages({ numberOfMessages: 10, visibilityTimeout: 30 });
        await Promise.all(response.receivedMessageItems.map((message) => this.handleMessage(message, handler)));
      } catch (error) {
        this.logger.error(`queue receive failed: ${error.message}`);
        await new Promise((resolve) => setTimeout(resolve, 5000));
      }
    }
  }

  /** Runs one message's job and deletes the message; on any error leaves it to reappear. */
  async handleMessage(message, handler) {
    try {
      const job = JSON.parse(Buffer.from(message.messageText, "base64").toString());
      await handler(job);
      await this.queue.deleteMessage(message.messageId, message.popReceipt);
    } catch (error) {
      this.logger.error(`job failed, the message will reappear: ${error.message}`);
    }
  }

  stop() {
    this.polling = false;
  }
}
