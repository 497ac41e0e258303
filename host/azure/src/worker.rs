//! The worker's view of this deployment: Queue Storage as the worker's
//! [`LeaseQueue`] (messages in upstream's wire format, groups as
//! [`wire::encode_group`] writes them, dead letters in the poison queue).
//! [`AzureBackend`](crate::backend::AzureBackend) is the worker's
//! [`WorkerBackend`](flowcraft_worker::WorkerBackend) with this queue and the
//! Cosmos DB status container's stalled runs (upstream's reconciler query).

use std::time::Duration;

use flowcraft_core::store::{Job, StoreError};
use flowcraft_worker::{Delivery, Group, LeaseQueue};

use crate::queue::{AzureQueue, ReceivedMessage};
use crate::wire;

impl Delivery for ReceivedMessage {
    fn id(&self) -> &str {
        &self.id
    }

    fn dequeue_count(&self) -> u32 {
        self.dequeue_count
    }
}

impl LeaseQueue for AzureQueue {
    type Message = ReceivedMessage;

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, StoreError> {
        Ok(AzureQueue::receive(self, max, visibility).await?)
    }

    fn group(&self, message: &ReceivedMessage) -> Result<Group, String> {
        wire::decode_group(&message.text).map_err(|error| error.to_string())
    }

    async fn delete(&self, message: &ReceivedMessage) -> Result<(), StoreError> {
        Ok(AzureQueue::delete(self, message).await?)
    }

    async fn hide(
        &self,
        message: &mut ReceivedMessage,
        duration: Duration,
    ) -> Result<(), StoreError> {
        let renewed = self.update_visibility(message, duration).await?;
        message.pop_receipt = renewed.pop_receipt;
        Ok(())
    }

    async fn rewrite(
        &self,
        message: &mut ReceivedMessage,
        group: &Group,
        visibility: Duration,
    ) -> Result<(), StoreError> {
        let text = wire::encode_group(&group.jobs, group.lease.as_deref());
        let renewed = self.replace_text(message, &text, visibility).await?;
        message.pop_receipt = renewed.pop_receipt;
        message.text = text;
        Ok(())
    }

    async fn dead_letter(&self, message: &ReceivedMessage, reason: &str) -> Result<(), StoreError> {
        let text = match wire::decode_group(&message.text) {
            Ok(Group {
                jobs,
                lease: Some(_),
            }) => wire::encode_group(&jobs, None),
            _ => message.text.clone(),
        };
        Ok(self.send_poison(&text, reason).await?)
    }

    async fn dead_letter_job(&self, job: &Job, reason: &str) -> Result<(), StoreError> {
        Ok(self.send_poison(&wire::encode(job), reason).await?)
    }
}
