//! EventBridge → SQS → the guard, locally.
//!
//! moto routes an event put on its EventBridge through the rule `dev/aws_local.py create-queues`
//! made (the template's pattern) into the state-change queue, as AWS does. Nothing polls that
//! queue locally, so [`LocalMapping`] plays Lambda's event source mapping: it receives a batch,
//! invokes the guard binary under `cargo lambda watch` with SQS's event JSON, and deletes every
//! message the partial batch response does not name, the way the mapping does ("Handling errors
//! for an SQS event source in Lambda", AWS Lambda Developer Guide: a message named in
//! `batchItemFailures` stays in the queue and becomes visible again).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use ec2pass_shared::ids::InstanceId;
use serde_json::{Value, json};

use crate::{Local, invoke};

/// How long [`LocalMapping::deliver_once`] pauses after finding the queue empty.
const EMPTY_PAUSE: Duration = Duration::from_millis(200);

/// Puts the state change EC2 would send on moto's EventBridge (default bus).
pub async fn put_state_change(aws: &SdkConfig, instance: &InstanceId, state: &str) {
    let events = aws_sdk_eventbridge::Client::new(aws);
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .source("aws.ec2")
        .detail_type("EC2 Instance State-change Notification")
        .resources(format!(
            "arn:aws:ec2:us-east-1:123456789012:instance/{instance}"
        ))
        .detail(json!({"instance-id": instance.as_str(), "state": state}).to_string())
        .build();
    let out = events
        .put_events()
        .entries(entry)
        .send()
        .await
        .expect("PutEvents against moto");
    assert_eq!(out.failed_entry_count(), 0, "moto took the event");
}

/// The verdict recorded for the instance's current start (`deny missing`, `allow`, …), read
/// from the table as the guard wrote it; `None` while there is none.
pub async fn recorded_verdict(
    local: &Local,
    aws: &SdkConfig,
    instance: &InstanceId,
) -> Option<String> {
    use ec2pass_shared::store::VerdictStore;
    let ec2 = guard::ec2::Ec2Client::new(aws_sdk_ec2::Client::new(aws));
    let facts = guard::ec2::Ec2::describe(&ec2, instance)
        .await
        .expect("DescribeInstances against moto")?;
    let store = ec2pass_shared::store::dynamo::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(aws),
        local.table(),
    );
    let v = store
        .verdict(&facts.cycle()?)
        .await
        .expect("GetItem against moto")?;
    Some(match v.verdict.reason() {
        Some(r) => format!("{} {}", v.verdict.kind(), r.as_str()),
        None => v.verdict.kind().to_owned(),
    })
}

/// What one invocation of the guard by the mapping came to.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The SQS event the guard was invoked with.
    pub event: Value,
    /// Its answer (the partial batch response).
    pub answer: Value,
    /// The message ids it handed back.
    pub handed_back: Vec<String>,
}

/// The event source mapping, played against moto (see the module's doc).
pub struct LocalMapping {
    /// Held while the mapping lives: one queue, so one mapping at a time in a test binary
    /// (two draining at once take each other's messages, as two pollers of one queue would).
    _only: tokio::sync::MutexGuard<'static, ()>,
    local: Local,
    sqs: aws_sdk_sqs::Client,
    url: String,
    arn: String,
}

impl LocalMapping {
    /// The mapping of `dev/local.env`'s state-change queue.
    pub async fn new(local: &Local, aws: &SdkConfig) -> Self {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        local.require_emulator();
        let only = ONE_AT_A_TIME.lock().await;
        let sqs = aws_sdk_sqs::Client::new(aws);
        let url = local.get("EC2PASS_STATE_CHANGE_QUEUE_URL").to_owned();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the state-change queue exists: dev/aws_local.py create-queues");
        let arn = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        Self {
            _only: only,
            local: local.clone(),
            sqs,
            url,
            arn,
        }
    }

    /// Receives one batch (up to 10 messages) and delivers it to the guard; `None`, after a
    /// short pause, when the queue had nothing visible.
    ///
    /// Lambda's poller long-polls; this stand-in must not. `dev/moto_serial.py` serves one
    /// request at a time, so a ReceiveMessage waiting a second in moto holds every other client
    /// (the issuer answering Slack within its 2.5 s deadline among them) for that second. It
    /// asks without waiting and pauses on its own side instead.
    pub async fn deliver_once(&self) -> Option<Delivery> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage against moto");
        let messages = out.messages();
        if messages.is_empty() {
            tokio::time::sleep(EMPTY_PAUSE).await;
            return None;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.arn,
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        let event = json!({ "Records": records });
        let answer = invoke(&self.local, "guard", &event).await;
        let handed_back: Vec<String> = answer["batchItemFailures"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for m in messages {
            if handed_back
                .iter()
                .any(|id| Some(id.as_str()) == m.message_id())
            {
                continue;
            }
            if let Some(receipt) = m.receipt_handle() {
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .expect("DeleteMessage against moto");
            }
        }
        Some(Delivery {
            event,
            answer,
            handed_back,
        })
    }

    /// Delivers until the queue has been empty (nothing visible, nothing in flight) for a
    /// moment, or `patience` runs out; every delivery made.
    pub async fn drain(&self, patience: Duration) -> Vec<Delivery> {
        let until = std::time::Instant::now() + patience;
        let mut deliveries = Vec::new();
        while std::time::Instant::now() < until {
            match self.deliver_once().await {
                Some(d) => deliveries.push(d),
                None if self.in_flight().await == 0 => break,
                None => {}
            }
        }
        deliveries
    }

    /// Messages received but not yet deleted or visible again.
    pub async fn in_flight(&self) -> usize {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .expect("GetQueueAttributes against moto");
        out.attributes()
            .map(|a| {
                a.values()
                    .filter_map(|v| v.parse::<usize>().ok())
                    .sum::<usize>()
            })
            .unwrap_or(0)
    }

    /// Messages in the dead-letter queue (`…-guard-failures`).
    pub async fn dead_letters(&self) -> usize {
        let url = self.url.replace("state-changes", "guard-failures");
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .expect("GetQueueAttributes against moto");
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}
