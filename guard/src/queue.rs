//! The state-change queue, as the batch path sees it: SQS's event in, the partial batch response
//! out, and the visibility of the messages handed back.
//!
//! A message the guard cannot finish yet (its instance is still `pending`) is named in the
//! response's `batchItemFailures`, so the event source mapping leaves it in the queue, and its
//! visibility is cut to [`crate::batch::recheck_after`] with ChangeMessageVisibilityBatch, so it
//! comes back in seconds rather than after the queue's visibility timeout. Should that call fail,
//! the message still comes back, later.

use std::future::Future;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use tracing::warn;

use crate::batch::{BatchOutcome, HandBack, Message};

/// Most entries one ChangeMessageVisibilityBatch takes.
pub const ENTRIES_PER_CALL: usize = 10;

/// The messages of an SQS event; a record without an id or a receipt cannot be answered for and
/// is left out (it is logged).
pub fn messages(event: &SqsEvent) -> Vec<Message> {
    event
        .records
        .iter()
        .filter_map(|r| {
            let (Some(id), Some(receipt)) = (r.message_id.clone(), r.receipt_handle.clone()) else {
                warn!("an SQS record without a message id or receipt handle");
                return None;
            };
            Some(Message {
                id,
                receipt,
                receive_count: r
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
                body: r.body.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// The partial batch response for an outcome.
pub fn response(outcome: &BatchOutcome) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = outcome
        .failed
        .iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id.clone();
            f
        })
        .collect();
    response
}

/// Where handed-back messages get their short visibility.
pub trait Recheck: Send + Sync {
    /// Sets each message's visibility to its `after`.
    fn recheck(&self, messages: &[HandBack]) -> impl Future<Output = ()> + Send;
}

/// The queue, through the SDK.
#[derive(Clone, Debug)]
pub struct SqsRecheck {
    client: Client,
    queue_url: Option<String>,
}

impl SqsRecheck {
    /// Uses a client built once at cold start; without a queue URL, messages come back after the
    /// queue's own visibility timeout.
    pub fn new(client: Client, queue_url: Option<String>) -> Self {
        Self { client, queue_url }
    }
}

impl Recheck for SqsRecheck {
    async fn recheck(&self, messages: &[HandBack]) {
        let Some(url) = &self.queue_url else { return };
        for chunk in messages.chunks(ENTRIES_PER_CALL) {
            let entries = chunk.iter().enumerate().filter_map(|(n, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(n.to_string())
                    .receipt_handle(&m.receipt)
                    .visibility_timeout(i32::try_from(m.after.as_secs()).unwrap_or(60))
                    .build()
                    .ok()
            });
            match self
                .client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries.collect()))
                .send()
                .await
            {
                Ok(out) if out.failed().is_empty() => {}
                Ok(out) => {
                    warn!(
                        failed = out.failed().len(),
                        "some handed-back messages keep the queue's visibility timeout"
                    );
                }
                Err(e) => {
                    warn!(error = %DisplayErrorContext(&e), "handed-back messages keep the queue's visibility timeout");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_sqs_event_becomes_messages_and_an_outcome_the_partial_batch_response() {
        let event: SqsEvent = serde_json::from_value(json!({"Records": [
            {"messageId": "m-1", "receiptHandle": "r-1", "body": "{}",
             "attributes": {"ApproximateReceiveCount": "3"}, "messageAttributes": {},
             "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q"},
            {"messageId": "m-2", "body": "{}", "attributes": {}, "messageAttributes": {}}
        ]}))
        .unwrap_or_default();
        let messages = messages(&event);
        assert_eq!(
            messages.len(),
            1,
            "a record without a receipt cannot be answered for"
        );
        assert_eq!(
            (messages[0].id.as_str(), messages[0].receive_count),
            ("m-1", 3)
        );
        let outcome = BatchOutcome {
            failed: vec!["m-1".into()],
            ..BatchOutcome::default()
        };
        assert_eq!(
            serde_json::to_value(response(&outcome)).unwrap_or_default(),
            json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]})
        );
        assert_eq!(
            serde_json::to_value(response(&BatchOutcome::default())).unwrap_or_default(),
            json!({"batchItemFailures": []})
        );
    }
}
