//! Azure stores for flowcraft-host: the engine's job queue on Azure Queue
//! Storage, run contexts and statuses on Cosmos DB, run progress on Redis.
//! Wire-compatible with `@flowcraft/azure-adapter`: queue messages, document
//! shapes and upstream Redis keys are upstream's; new mechanisms use new keys.
//! The queue and Cosmos DB authenticate with keys or with Entra ID token
//! credentials ([`credential`]).
//!
//! The Redis coordination store ([`redis_store`]) lives in this crate because
//! the deployment the crate implements is `@flowcraft/azure-adapter`'s: Queue
//! Storage, Cosmos DB and Redis together, with upstream's Redis keys (our
//! progress records sit beside them in the same `flowcraft:` namespace, under
//! names of our own). The Redis store is part of that wire contract, not a
//! general-purpose Redis backend.
pub mod backend;
pub mod cosmos;
pub mod credential;
pub mod directory;
pub mod queue;
pub mod redis_store;
pub mod retry;
pub mod storage_account;
pub mod wakeups;
pub mod wire;
pub mod worker;
