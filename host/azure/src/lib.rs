//! Azure stores for flowcraft-host: the engine's job queue on Azure Queue
//! Storage, run contexts and statuses on Cosmos DB, run progress on Redis.
//! Wire-compatible with `@flowcraft/azure-adapter`: queue messages, document
//! shapes and upstream Redis keys are upstream's; new mechanisms use new keys.
pub mod backend;
pub mod cosmos;
pub mod queue;
pub mod redis_store;
pub mod storage_account;
pub mod wire;
