//! Publishing alerts on SNS, and building them from what the guard knows.

use std::future::Future;

use aws_sdk_sns::Client;
use aws_sdk_sns::error::DisplayErrorContext;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use ec2pass_shared::alert::{Action, Alert, SCHEMA_VERSION};
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::verdict::VerdictRecord;

use crate::ec2::{AwsError, InstanceFacts};
use crate::event::Origin;
use crate::fleet::FleetError;

/// Most messages one SNS PublishBatch takes.
pub const ALERTS_PER_BATCH: usize = 10;

/// Where alerts go.
pub trait Alerts: Send + Sync {
    /// Publishes one alert.
    fn publish(&self, alert: &Alert) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// Publishes many alerts, each with its own answer, in order. SNS takes them
    /// [`ALERTS_PER_BATCH`] a call; this default publishes one by one (for fakes).
    fn publish_many(
        &self,
        alerts: &[Alert],
    ) -> impl Future<Output = Vec<Result<(), AwsError>>> + Send {
        async move {
            let mut answers = Vec::with_capacity(alerts.len());
            for alert in alerts {
                answers.push(self.publish(alert).await);
            }
            answers
        }
    }
}

/// The alert's message attributes as SNS takes them. SNS refuses a String attribute with an
/// empty value, and with it the whole message: an event without an account or region (a forged
/// or malformed one) must not make its deny unannounceable, so an empty value is `unknown`.
fn attributes_of(alert: &Alert) -> Result<Vec<(String, MessageAttributeValue)>, AwsError> {
    alert
        .attributes()
        .into_iter()
        .map(|(name, value)| {
            let value = if value.is_empty() {
                "unknown".to_owned()
            } else {
                value
            };
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map(|a| (name.to_owned(), a))
                .map_err(|e| AwsError::new("Publish", e.to_string()))
        })
        .collect()
}

/// An SNS topic.
#[derive(Clone, Debug)]
pub struct SnsAlerts {
    client: Client,
    topic_arn: String,
}

impl SnsAlerts {
    /// Publishes to `topic_arn` with a client built once at cold start.
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

impl Alerts for SnsAlerts {
    async fn publish(&self, alert: &Alert) -> Result<(), AwsError> {
        let mut request = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(alert.subject())
            .message_structure("json")
            .message(alert.per_protocol());
        for (name, attribute) in attributes_of(alert)? {
            request = request.message_attributes(name, attribute);
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("Publish", DisplayErrorContext(&e).to_string()))
    }

    async fn publish_many(&self, alerts: &[Alert]) -> Vec<Result<(), AwsError>> {
        let mut answers = Vec::with_capacity(alerts.len());
        for chunk in alerts.chunks(ALERTS_PER_BATCH) {
            let mut entries = Vec::with_capacity(chunk.len());
            let mut bad = Vec::new();
            for (n, alert) in chunk.iter().enumerate() {
                let entry = attributes_of(alert).and_then(|attributes| {
                    PublishBatchRequestEntry::builder()
                        .id(n.to_string())
                        .subject(alert.subject())
                        .message_structure("json")
                        .message(alert.per_protocol())
                        .set_message_attributes(Some(attributes.into_iter().collect()))
                        .build()
                        .map_err(|e| AwsError::new("PublishBatch", e.to_string()))
                });
                match entry {
                    Ok(e) => entries.push(e),
                    Err(e) => bad.push((n, e)),
                }
            }
            let mut chunk_answers: Vec<Result<(), AwsError>> = (0..chunk.len())
                .map(|_| Err(AwsError::new("PublishBatch", "not in SNS's answer")))
                .collect();
            for (n, e) in bad {
                chunk_answers[n] = Err(e);
            }
            if !entries.is_empty() {
                match self
                    .client
                    .publish_batch()
                    .topic_arn(&self.topic_arn)
                    .set_publish_batch_request_entries(Some(entries))
                    .send()
                    .await
                {
                    Ok(out) => {
                        for ok in out.successful() {
                            if let Some(slot) = ok
                                .id()
                                .and_then(|id| id.parse::<usize>().ok())
                                .and_then(|n| chunk_answers.get_mut(n))
                            {
                                *slot = Ok(());
                            }
                        }
                        for failed in out.failed() {
                            if let Some(slot) = failed
                                .id()
                                .parse::<usize>()
                                .ok()
                                .and_then(|n| chunk_answers.get_mut(n))
                            {
                                *slot = Err(AwsError::new(
                                    "PublishBatch",
                                    format!(
                                        "{}: {}",
                                        failed.code(),
                                        failed.message().unwrap_or_default()
                                    ),
                                ));
                            }
                        }
                    }
                    Err(e) => {
                        let e = AwsError::new("PublishBatch", DisplayErrorContext(&e).to_string());
                        for slot in &mut chunk_answers {
                            if slot.is_err() {
                                *slot = Err(e.clone());
                            }
                        }
                    }
                }
            }
            answers.extend(chunk_answers);
        }
        answers
    }
}

/// The alert for a recorded verdict.
pub fn for_verdict(
    v: &VerdictRecord,
    facts: &InstanceFacts,
    origin: &Origin,
    action: Action,
) -> Alert {
    Alert {
        schema_version: SCHEMA_VERSION,
        verdict: v.verdict.kind().to_owned(),
        reason: v.verdict.reason().map_or("none", |r| r.as_str()).to_owned(),
        instance_id: facts.id.to_string(),
        instance_name: facts.name().map(str::to_owned),
        account: origin.account.clone(),
        region: origin.region.clone(),
        event_id: origin.event_id.clone(),
        event_time: origin.event_time.clone(),
        launch_time: Some(v.cycle.launch_time.rfc3339()),
        action,
        password_short_id: v.short_id.as_ref().map(|id| id.to_string()),
        issuer_user_id: v.issuer.as_ref().map(|o| o.user_id.clone()),
        detail: None,
        caller: None,
    }
}

/// The alert for a sweep that failed as a whole (its listing or a lookup): no one instance is
/// concerned, so the instance id reads `sweep`.
pub fn for_sweep_error(origin: &Origin, failed: &str, detail: String) -> Alert {
    Alert {
        schema_version: SCHEMA_VERSION,
        verdict: "guard-error".to_owned(),
        reason: failed.to_owned(),
        instance_id: "sweep".to_owned(),
        instance_name: None,
        account: origin.account.clone(),
        region: origin.region.clone(),
        event_id: origin.event_id.clone(),
        event_time: origin.event_time.clone(),
        launch_time: None,
        action: Action::None,
        password_short_id: None,
        issuer_user_id: None,
        detail: Some(detail),
        caller: None,
    }
}

/// The alert for starts in a place the guard cannot act in: the account, the member role and
/// STS's answer, and the starts, which come back (the queue redelivers them) rather than being
/// skipped.
pub fn for_unreachable(origin: &Origin, ids: &[&InstanceId], error: &FleetError) -> Alert {
    let names: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
    let instance_id = match names.as_slice() {
        [one] => (*one).to_owned(),
        [] => "sweep".to_owned(),
        _ => "batch".to_owned(),
    };
    let what = if ids.is_empty() {
        "the sweep of this account and region waits for the next schedule".to_owned()
    } else {
        format!(
            "{} start(s) left for the queue to deliver again: {}",
            names.len(),
            names.join(" ")
        )
    };
    Alert {
        instance_id,
        account: error.place.account.clone(),
        region: error.place.region.clone(),
        ..for_sweep_error(origin, "assume-role", format!("{error}; {what}"))
    }
}

/// The alert for a guard error: what failed, and what was done about it.
pub fn for_error(
    instance: &InstanceId,
    facts: Option<&InstanceFacts>,
    origin: &Origin,
    failed: &str,
    detail: String,
    action: Action,
) -> Alert {
    Alert {
        schema_version: SCHEMA_VERSION,
        verdict: "guard-error".to_owned(),
        reason: failed.to_owned(),
        instance_id: instance.to_string(),
        instance_name: facts.and_then(|f| f.name()).map(str::to_owned),
        account: origin.account.clone(),
        region: origin.region.clone(),
        event_id: origin.event_id.clone(),
        event_time: origin.event_time.clone(),
        launch_time: facts.and_then(|f| f.launch_time).map(|t| t.rfc3339()),
        action,
        password_short_id: None,
        issuer_user_id: None,
        detail: Some(detail),
        caller: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec2pass_shared::alert::Action;

    #[test]
    fn an_empty_attribute_value_is_sent_as_unknown_so_sns_takes_the_alert() {
        let alert = Alert {
            schema_version: SCHEMA_VERSION,
            verdict: "deny".into(),
            reason: "missing".into(),
            instance_id: "i-0123456789abcdef0".into(),
            instance_name: None,
            account: String::new(),
            region: String::new(),
            event_id: "e".into(),
            event_time: String::new(),
            launch_time: None,
            action: Action::Stopped,
            password_short_id: None,
            issuer_user_id: None,
            detail: None,
            caller: None,
        };
        let attributes = attributes_of(&alert).unwrap_or_default();
        assert_eq!(attributes.len(), 5);
        for (name, value) in attributes {
            assert!(
                value.string_value().is_some_and(|v| !v.is_empty()),
                "{name} is empty"
            );
        }
    }
}
