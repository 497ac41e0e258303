// The npm clients of the three services (Azure Queue Storage, Cosmos DB, Redis), built from the same
// environment the Rust worker reads (`eval "$(scripts/azure-local.sh env)"`), with the same resource
// names and defaults. Shared by the TypeScript reference worker and by the benchmark driver.

import { CosmosClient } from "@azure/cosmos";
import { QueueServiceClient } from "@azure/storage-queue";
import { Redis } from "ioredis";

export { QueueSASPermissions } from "@azure/storage-queue";

/** Queue, database and container names: the Rust worker's variables and defaults. */
export function resourceNames(env = process.env) {
  return {
    queue: env.FLOWCRAFT_QUEUE || "flowcraft-jobs",
    database: env.FLOWCRAFT_DATABASE || "flowcraft",
    contextContainer: env.FLOWCRAFT_CONTEXT_CONTAINER || "workflow-contexts",
    statusContainer: env.FLOWCRAFT_STATUS_CONTAINER || "workflow-statuses",
  };
}

function required(env, name) {
  const value = env[name];
  if (!value) throw new Error(`${name} is not set (eval "$(scripts/azure-local.sh env)")`);
  return value;
}

export function queueServiceClient(env = process.env) {
  return QueueServiceClient.fromConnectionString(required(env, "AZURE_STORAGE_CONNECTION_STRING"));
}

export function cosmosClient(env = process.env) {
  return new CosmosClient(required(env, "COSMOS_DB_CONNECTION_STRING"));
}

export function redisClient(env = process.env) {
  return new Redis(env.REDIS_URL || env.REDIS_CONNECTION_STRING || required(env, "REDIS_URL"));
}
