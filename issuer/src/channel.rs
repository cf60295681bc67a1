//! Denials in a channel: each deny alert, forwarded by the follow-up function to the channel
//! topic as an Amazon Q Developer in chat applications (formerly AWS Chatbot) custom
//! notification, which the channel configuration subscribed to that topic shows as a readable
//! message in Slack (or Teams).
//!
//! The format is the one AWS documents for custom notifications
//! (<https://docs.aws.amazon.com/chatbot/latest/adminguide/custom-notifs.html>): `version`
//! `1.0`, `source` `custom`, `content` with `textType` `client-markdown`, a `title` and a
//! `description`, and `metadata` (`threadId` keeps one instance's alerts in one thread,
//! `eventType` names the verdict, `relatedResources` the instance). Nothing in it is a secret: the
//! alert it comes from never holds a password.
//!
//! The guard is not involved: it publishes its alert once, as before; the forwarding happens in
//! the follow-up function, off the guard's path, and a channel that is down only delays the
//! forwarding (the alert goes back to the follow-up queue).

use std::future::Future;

use aws_sdk_sns::Client;
use aws_sdk_sns::error::DisplayErrorContext;
use ec2pass_shared::alert::{Action, Alert};
use serde_json::{Value, json};

/// The custom notification of a deny alert.
pub fn notification(alert: &Alert) -> Value {
    let name = alert
        .instance_name
        .as_deref()
        .map(|n| format!(" ({})", plain(n)))
        .unwrap_or_default();
    let title = format!(
        ":rotating_light: ec2pass stopped an unauthorized start of {}{name}",
        alert.instance_id
    );
    let mut lines = vec![
        format!("*Why:* {}", reason(&alert.reason)),
        format!(
            "*Where:* account {}, region {}",
            alert.account, alert.region
        ),
        format!("*Done:* {}", done(alert.action)),
        format!("*When:* {}", alert.event_time),
    ];
    if let Some(id) = &alert.password_short_id {
        let whose = alert
            .issuer_user_id
            .as_deref()
            .map(|u| format!(", issued to {}", plain(u)))
            .unwrap_or_default();
        lines.push(format!("*Password:* `{id}`{whose}"));
    }
    json!({
        "version": "1.0",
        "source": "custom",
        "id": alert.event_id,
        "content": {
            "textType": "client-markdown",
            "title": title,
            "description": lines.join("\n"),
            "keywords": ["ec2pass", "deny", alert.reason],
        },
        "metadata": {
            "threadId": alert.instance_id,
            "summary": format!("ec2pass denied a start of {}: {}", alert.instance_id, alert.reason),
            "eventType": "ec2pass-deny",
            "relatedResources": [alert.instance_id],
        },
    })
}

/// A deny reason in words.
fn reason(reason: &str) -> String {
    let words = match reason {
        "missing" => "no `Auth` tag",
        "unknown" => "the `Auth` tag holds no password ec2pass issued",
        "expired" => "the password had expired",
        "reused" => "the password had already been used",
        "wrong-instance" => "the password was for another instance: it has leaked, and is burned",
        other => return plain(other),
    };
    format!("{words} (`{reason}`)")
}

fn done(action: Action) -> &'static str {
    match action {
        Action::Stopped => "stopped",
        Action::StopPending => "stopped once EC2 lets it (it was pending)",
        Action::Terminated => "terminated (it could not be stopped)",
        Action::AlertOnly => "nothing but this alert (it could not be stopped)",
        Action::None => "nothing",
    }
}

/// Text from outside (a `Name` tag), kept from acting as markup: no backticks, no mentions,
/// no links, one line.
fn plain(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '`' | '<' | '>' | '*' | '_' | '~' | '[' | ']' => ' ',
            '@' => '＠',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// A forward that failed.
#[derive(Debug, thiserror::Error)]
#[error("the channel topic: {0}")]
pub struct ChannelError(pub String);

/// Where deny alerts are forwarded.
pub trait Channel: Send + Sync {
    /// Publishes one notification.
    fn announce(
        &self,
        notification: &Value,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// Whether anything is forwarded at all.
    fn enabled(&self) -> bool {
        true
    }
}

/// The channel topic on SNS (`EC2PASS_CHAT_TOPIC_ARN`).
#[derive(Clone, Debug)]
pub struct SnsChannel {
    client: Client,
    topic_arn: String,
}

impl SnsChannel {
    /// Publishes to `topic_arn` with a client built once at cold start.
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

impl Channel for SnsChannel {
    async fn announce(&self, notification: &Value) -> Result<(), ChannelError> {
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(notification.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ChannelError(DisplayErrorContext(&e).to_string()))
    }
}

/// No channel configured: nothing is forwarded.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoChannel;

impl Channel for NoChannel {
    async fn announce(&self, _notification: &Value) -> Result<(), ChannelError> {
        Ok(())
    }

    fn enabled(&self) -> bool {
        false
    }
}

/// A channel when one is configured, else nothing forwarded (what the deployed function holds).
#[derive(Clone, Debug)]
pub struct MaybeChannel<C>(pub Option<C>);

impl<C: Channel> Channel for MaybeChannel<C> {
    async fn announce(&self, notification: &Value) -> Result<(), ChannelError> {
        match &self.0 {
            Some(channel) => channel.announce(notification).await,
            None => Ok(()),
        }
    }

    fn enabled(&self) -> bool {
        self.0.as_ref().is_some_and(Channel::enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec2pass_shared::alert::SCHEMA_VERSION;

    fn deny() -> Alert {
        Alert {
            schema_version: SCHEMA_VERSION,
            verdict: "deny".into(),
            reason: "wrong-instance".into(),
            instance_id: "i-0abc1234".into(),
            instance_name: Some("web `x` <!channel> @here".into()),
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            event_id: "0f1e-event".into(),
            event_time: "2026-12-02T10:00:00Z".into(),
            launch_time: None,
            action: Action::Stopped,
            password_short_id: Some("ab12cd34".into()),
            issuer_user_id: Some("U1".into()),
            detail: None,
            caller: None,
        }
    }

    #[test]
    fn a_deny_becomes_a_custom_notification_in_the_documented_shape() {
        let n = notification(&deny());
        assert_eq!(n["version"], "1.0");
        assert_eq!(n["source"], "custom");
        assert_eq!(n["content"]["textType"], "client-markdown");
        assert_eq!(n["metadata"]["threadId"], "i-0abc1234");
        let title = n["content"]["title"].as_str().unwrap_or_default();
        assert!(title.contains("i-0abc1234"), "{title}");
        for markup in ['`', '<', '@'] {
            assert!(!title.contains(markup), "{markup} in {title}");
        }
        let description = n["content"]["description"].as_str().unwrap_or_default();
        for needed in [
            "leaked",
            "123456789012",
            "eu-west-1",
            "stopped",
            "`ab12cd34`",
            "U1",
        ] {
            assert!(
                description.contains(needed),
                "{needed} missing: {description}"
            );
        }
        let mut keys: Vec<&String> = n
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(keys, ["content", "id", "metadata", "source", "version"]);
    }
}
