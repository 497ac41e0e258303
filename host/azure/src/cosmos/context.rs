//! Run contexts in the context container: one document per run,
//! `{"id": runId, "runId": runId, "<key>": <value>, ...}` with every context key
//! a top-level property (names may contain dots: `_outputs.A`), exactly as
//! `@flowcraft/azure-adapter` stores them.
//!
//! Requests per operation (happy path): `create_context` 1 create;
//! `load_context` 1 point read; `apply_changes` 1 server-side PATCH per 10
//! changes, nothing for none. Cosmos refuses a `remove` of an absent path
//! (400); when a chunk with removes gets that answer the document is read once
//! and the chunk is sent again without the removes of absent keys (deleting an
//! absent key is a no-op in the engine's contract). A PATCH of a run without a
//! document creates it, as the in-memory store does.

use std::collections::HashSet;
use std::sync::Arc;

use azure_data_cosmos::CosmosError;
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::{PATCH_TRACKING_PROPERTY, PatchInstructions, PatchOperation};
use flowcraft_core::context::{ContextChange, ContextMap, ContextValue, context_to_object};
use flowcraft_core::store::{ContextStore, StoreError, StoredContext};
use serde_json::Value;

use super::{retry_transient, status_code};
use crate::retry::{Backoff, RetryPolicy};

const SERVICE: &str = "cosmos context";

/// At most this many operations per PATCH request (a Cosmos limit).
pub const MAX_PATCH_OPERATIONS: usize = 10;

/// Properties that Cosmos or the SDK add to documents: never context keys.
pub(crate) const SYSTEM_PROPERTIES: &[&str] = &[
    "_rid",
    "_self",
    "_etag",
    "_attachments",
    "_ts",
    "_lsn",
    PATCH_TRACKING_PROPERTY,
];

/// The run-context store on a Cosmos container (partition key `/runId`).
#[derive(Clone)]
pub struct CosmosContextStore {
    container: ContainerClient,
}

impl CosmosContextStore {
    pub(crate) fn new(container: ContainerClient) -> Self {
        Self { container }
    }

    /// The underlying container client (for tools and tests).
    pub fn container(&self) -> &ContainerClient {
        &self.container
    }

    async fn read_document(&self, run_id: &str) -> Result<Option<ContextMap>, CosmosError> {
        let read = retry_transient("read context", || {
            self.container.read_item(run_id.to_owned(), run_id, None)
        })
        .await;
        match read {
            Ok(response) => response.into_model::<ContextMap>().map(Some),
            Err(error) if status_code(&error) == 404 => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn create_document(
        &self,
        run_id: &str,
        document: &ContextMap,
    ) -> Result<(), CosmosError> {
        let mut backoff = Backoff::new(RetryPolicy::DEFAULT);
        loop {
            let created = self
                .container
                .create_item(run_id.to_owned(), run_id, document, None)
                .await;
            match created {
                Err(error) if super::transient(&error).is_some() => {
                    let why = super::transient(&error);
                    let Some(wait) = why.and_then(|why| backoff.next(why)) else {
                        return Err(error);
                    };
                    tracing::debug!(run = run_id, error = %super::one_line(&error), "creating a context document failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(error) if backoff.attempts() > 1 && status_code(&error) == 409 => {
                    // The first attempt may have landed before the connection
                    // broke: that is success if the stored document is ours.
                    // Compared parsed: the service may format values differently.
                    let stored = self
                        .read_document(run_id)
                        .await?
                        .map(|stored| context_to_object(&strip_system(stored)));
                    let ours = context_to_object(&strip_system(document.clone()));
                    return if stored.as_ref() == Some(&ours) {
                        Ok(())
                    } else {
                        Err(error)
                    };
                }
                other => return other.map(|_| ()),
            }
        }
    }

    /// One server-side PATCH.
    async fn patch(&self, run_id: &str, changes: &[ContextChange]) -> Result<(), CosmosError> {
        super::patch_document(&self.container, run_id, || {
            PatchInstructions::from(changes.iter().map(patch_operation).collect::<Vec<_>>())
        })
        .await
    }
}

impl ContextStore for CosmosContextStore {
    async fn create_context(&self, run_id: &str, initial: ContextMap) -> Result<(), StoreError> {
        check_run_id(run_id)?;
        if let Some(key) = initial.keys().find(|key| is_reserved(key)) {
            return Err(StoreError::new(
                SERVICE,
                format!(
                    "cannot create the context of run '{run_id}': key '{key}' is reserved (document identity or system property)"
                ),
            ));
        }
        let mut document = ContextMap::new();
        document.extend(identity(run_id));
        document.extend(initial);
        match self.create_document(run_id, &document).await {
            Ok(()) => Ok(()),
            Err(error) if status_code(&error) == 409 => Err(StoreError::new(
                SERVICE,
                format!("cannot create the context of run '{run_id}': it exists already"),
            )),
            Err(error) => Err(failure("create", run_id, &error)),
        }
    }

    async fn load_context(&self, run_id: &str) -> Result<Option<StoredContext>, StoreError> {
        check_run_id(run_id)?;
        let document = self
            .read_document(run_id)
            .await
            .map_err(|error| failure("read", run_id, &error))?;
        Ok(document.map(|values| StoredContext {
            values: Arc::new(context_of(values)),
        }))
    }

    async fn apply_changes(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<(), StoreError> {
        check_run_id(run_id)?;
        if let Some(change) = changes.iter().find(|change| is_reserved(change.key())) {
            return Err(StoreError::new(
                SERVICE,
                format!(
                    "cannot change the context of run '{run_id}': key '{}' is reserved (document identity or system property)",
                    change.key()
                ),
            ));
        }
        // Keys known to be present, once the document had to be read.
        let mut present: Option<HashSet<String>> = None;
        let mut created = false;
        let mut start = 0;
        while start < changes.len() {
            let end = (start + MAX_PATCH_OPERATIONS).min(changes.len());
            let chunk = &changes[start..end];
            let send = match present.as_mut() {
                Some(present) => without_absent_removes(chunk, present),
                None => chunk.to_vec(),
            };
            if send.is_empty() {
                start = end;
                continue;
            }
            let error = match self.patch(run_id, &send).await {
                Ok(()) => {
                    start = end;
                    continue;
                }
                Err(error) => error,
            };
            match status_code(&error) {
                404 if !created => {
                    created = true;
                    match self.create_with(run_id, &changes[start..]).await {
                        Ok(()) => return Ok(()),
                        // Created concurrently: patch it after all.
                        Err(error) if status_code(&error) == 409 => continue,
                        Err(error) => return Err(failure("create", run_id, &error)),
                    }
                }
                400 if has_removes(&send) && present.is_none() => {
                    let Some(document) = self
                        .read_document(run_id)
                        .await
                        .map_err(|error| failure("read", run_id, &error))?
                    else {
                        continue; // gone meanwhile: the 404 path recreates it
                    };
                    let mut keys: HashSet<String> = document.keys().cloned().collect();
                    let retry = without_absent_removes(chunk, &mut keys);
                    if retry.len() == send.len() {
                        return Err(failure("patch", run_id, &error));
                    }
                    if !retry.is_empty() {
                        self.patch(run_id, &retry)
                            .await
                            .map_err(|error| failure("patch", run_id, &error))?;
                    }
                    present = Some(keys);
                    start = end;
                }
                _ => return Err(failure("patch", run_id, &error)),
            }
        }
        Ok(())
    }
}

impl CosmosContextStore {
    /// Creates the run's document holding `changes` applied to nothing.
    async fn create_with(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<(), CosmosError> {
        let mut document = ContextMap::new();
        document.extend(identity(run_id));
        for change in changes {
            change.apply_to(&mut document);
        }
        self.create_document(run_id, &document).await
    }
}

/// The chunk without removes of keys absent from `present`, which is updated
/// to the state after the chunk.
fn without_absent_removes(
    chunk: &[ContextChange],
    present: &mut HashSet<String>,
) -> Vec<ContextChange> {
    chunk
        .iter()
        .filter(|change| match change {
            ContextChange::Set { key, .. } => {
                present.insert(key.clone());
                true
            }
            ContextChange::Delete { key } => present.remove(key),
        })
        .cloned()
        .collect()
}

fn has_removes(changes: &[ContextChange]) -> bool {
    changes
        .iter()
        .any(|change| matches!(change, ContextChange::Delete { .. }))
}

/// The SDK takes parsed values: each is parsed for the request only.
fn patch_operation(change: &ContextChange) -> PatchOperation {
    match change {
        ContextChange::Set { key, value } => PatchOperation::set(pointer(key), value.to_value()),
        ContextChange::Delete { key } => PatchOperation::remove(pointer(key)),
    }
}

/// The JSON Pointer (RFC 6901) of a top-level property.
pub(crate) fn pointer(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// The document identity and the system properties: never written as context.
fn is_reserved(key: &str) -> bool {
    matches!(key, "id" | "runId") || SYSTEM_PROPERTIES.contains(&key)
}

/// The run context a stored document holds: without the document identity
/// (`id`, `runId`) and the system properties.
fn context_of(mut document: ContextMap) -> ContextMap {
    document.shift_remove("id");
    document.shift_remove("runId");
    strip_system(document)
}

/// The document identity properties, `id` and `runId` (the partition key).
fn identity(run_id: &str) -> [(String, ContextValue); 2] {
    let run_id = ContextValue::from(Value::from(run_id));
    [("id".into(), run_id.clone()), ("runId".into(), run_id)]
}

/// `document` without the properties Cosmos or the SDK add.
fn strip_system(mut document: ContextMap) -> ContextMap {
    document.retain(|key, _| !SYSTEM_PROPERTIES.contains(&key.as_str()));
    document
}

fn check_run_id(run_id: &str) -> Result<(), StoreError> {
    super::check_run_id(SERVICE, run_id)
}

fn failure(operation: &str, run_id: &str, error: &CosmosError) -> StoreError {
    super::failure(SERVICE, "context", operation, run_id, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(key: &str) -> ContextChange {
        ContextChange::Set {
            key: key.into(),
            value: json!(1).into(),
        }
    }

    fn delete(key: &str) -> ContextChange {
        ContextChange::Delete { key: key.into() }
    }

    #[test]
    fn pointers_escape_tilde_then_slash() {
        assert_eq!(pointer("_outputs.A"), "/_outputs.A");
        assert_eq!(pointer("a/b~c"), "/a~1b~0c");
        assert_eq!(pointer("~/"), "/~0~1");
    }

    #[test]
    fn absent_removes_are_dropped_in_order() {
        let mut present: HashSet<String> = ["x".to_owned()].into();
        let chunk = [
            delete("absent"),
            set("y"),
            delete("y"),
            delete("x"),
            delete("x"),
        ];
        assert_eq!(
            without_absent_removes(&chunk, &mut present),
            vec![set("y"), delete("y"), delete("x")]
        );
        assert!(present.is_empty());
    }

    #[test]
    fn changes_become_cosmos_patch_operations() {
        let body = serde_json::to_value(PatchInstructions::from(vec![
            patch_operation(&ContextChange::Set {
                key: "_outputs.A".into(),
                value: json!({"v": 1}).into(),
            }),
            patch_operation(&delete("tmp/x")),
        ]))
        .unwrap();
        assert_eq!(
            body,
            json!({"operations": [
                {"op": "set", "path": "/_outputs.A", "value": {"v": 1}},
                {"op": "remove", "path": "/tmp~1x"}
            ]})
        );
    }
}
