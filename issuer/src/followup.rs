//! Follow-ups: the requester hears what became of each password (SPEC §10), in the
//! conversation where they asked, through the command's reply URL.
//!
//! The guard knows nothing of chat: it decides, stops and alerts as before, and no chat call is
//! on its path. The follow-up function learns what became of a password two ways:
//!
//! - the guard's alerts, from the alert topic through its own queue (so a chat outage fills
//!   only that queue): at once, for a burn (deny alerts are always published) and for a use
//!   when the guard publishes allow alerts (`EC2PASS_AUDIT_ALERTS`);
//! - the schedule, every five minutes ([`Followup::catch_up`]): each password whose outcome is
//!   still untold is read, and its state says it ([`outcome_from_state`]): used, burned, or
//!   expired unused. This is how a use is told without allow alerts, and how nothing is missed
//!   when an alert is.
//!
//! Either way: the outcome → the password's [`Reply`] → a post taken from its five
//! ([`ReplyStore::take_post`], with the 30 minutes) → [`message`] → the reply URL, checked again
//! against the chat's origins ([`ec2pass_shared::reply::allowed`]).
//!
//! A post that fails gives its slot back and the alert goes back to the queue. A reply URL that
//! can carry no more (five posts, or past its 30 minutes) ends the password's follow-ups: the
//! outcome is marked told. No message holds a password: only its short id, the instance and
//! what happened.

use ec2pass_shared::alert::Alert;
use ec2pass_shared::ids::ShortId;
use ec2pass_shared::reply::Front;
use ec2pass_shared::reply::{Origin, ReplyKey, allowed, open};
use ec2pass_shared::store::{PasswordLookup, PasswordRecord, Reply, ReplyStore, StoreError};
use ec2pass_shared::time::{Clock, UnixTime};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};
use url::Url;

use crate::channel::{self, Channel, ChannelError, NoChannel};
use crate::chat::{BotToken, Chat, ChatError};
use crate::front;

/// Most untold passwords one scheduled run reads (soonest expiry first). Outstanding passwords
/// count too, and each requester has at most about 20 (10 an hour, two hours at most), so this
/// covers about 50 requesters with passwords at once; beyond, the latest wait for a run with
/// fewer (docs/chat.md).
pub const CATCH_UP_PER_RUN: usize = 1000;

/// What became of a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It opened the start it was for.
    Used {
        /// The instance.
        instance: String,
        /// When (the event's time).
        at: String,
    },
    /// It was presented on another instance than its own: that start was denied and the
    /// password burned. It has leaked.
    Burned {
        /// The instance it was presented on.
        instance: String,
        /// When.
        at: String,
    },
    /// It was presented again after it was used or after it expired (`reused`, `expired`).
    PresentedAgain {
        /// The instance.
        instance: String,
        /// `reused` or `expired`.
        reason: String,
        /// When.
        at: String,
    },
    /// It expired unused.
    Expired,
}

impl Outcome {
    /// Whether this tells the password's outcome (after which no expiry is told).
    pub fn settles(&self) -> bool {
        matches!(
            self,
            Outcome::Used { .. } | Outcome::Burned { .. } | Outcome::Expired
        )
    }
}

/// What the follow-up reads of a published alert (schema version 1, docs/alerts.md): the
/// fields it needs, nothing else.
#[derive(Clone, Debug, Deserialize)]
pub struct Heard {
    /// `allow`, `deny`, …
    pub verdict: String,
    /// The deny reason.
    #[serde(default)]
    pub reason: String,
    /// The instance.
    #[serde(default)]
    pub instance_id: String,
    /// When the event happened.
    #[serde(default)]
    pub event_time: String,
    /// The presented password's short id.
    #[serde(default)]
    pub password_short_id: Option<String>,
}

/// An alert as the follow-up queue holds it: the SNS notification around the alert's JSON.
pub fn heard_in(body: &str) -> Result<Heard, String> {
    let envelope: Value =
        serde_json::from_str(body).map_err(|e| format!("not an SNS notification: {e}"))?;
    let message = envelope["Message"]
        .as_str()
        .ok_or("an SNS notification without a Message")?;
    serde_json::from_str(message).map_err(|e| format!("not an ec2pass alert: {e}"))
}

/// Which password an alert is about, and what became of it; `None` for an alert that names
/// none, or one that tells its requester nothing.
pub fn outcome_of(alert: &Heard) -> Option<(ShortId, Outcome)> {
    let id = ShortId::parse(alert.password_short_id.as_deref()?)?;
    let instance = alert.instance_id.clone();
    let at = alert.event_time.clone();
    let outcome = match (alert.verdict.as_str(), alert.reason.as_str()) {
        ("allow", _) => Outcome::Used { instance, at },
        ("deny", "wrong-instance") => Outcome::Burned { instance, at },
        ("deny", reason @ ("reused" | "expired")) => Outcome::PresentedAgain {
            instance,
            reason: reason.to_owned(),
            at,
        },
        _ => return None,
    };
    Some((id, outcome))
}

/// What a password's stored state tells at `now`: used (`consumed_by` a cycle), burned
/// (`burned:` a cycle), expired unused, or nothing yet.
pub fn outcome_from_state(record: &PasswordRecord, now: UnixTime) -> Option<Outcome> {
    let cycle = |c: &str| {
        let (instance, launch) = c.rsplit_once('@').unwrap_or((c, ""));
        let at = launch
            .parse()
            .map(|t| format!("launch {}", UnixTime(t).rfc3339()))
            .unwrap_or_default();
        (instance.to_owned(), at)
    };
    match record.consumed_by.as_deref() {
        Some(by) => Some(match by.strip_prefix("burned:") {
            Some(c) => {
                let (instance, at) = cycle(c);
                Outcome::Burned { instance, at }
            }
            None => {
                let (instance, at) = cycle(by);
                Outcome::Used { instance, at }
            }
        }),
        None if record.is_expired(now) => Some(Outcome::Expired),
        None => None,
    }
}

/// The Slack message of a follow-up: ephemeral, added below the answer (not replacing it), one
/// section in `mrkdwn` and the same words as plain `text` (for notifications).
pub fn message(outcome: &Outcome, reply: &Reply) -> Value {
    let id = reply.short_id.as_str();
    let own = reply.scope.as_ref().map_or_else(
        || "any instance".to_owned(),
        |s| format!("`{}`", s.as_str()),
    );
    let text = match outcome {
        Outcome::Used { instance, at } => format!(
            ":white_check_mark: Password `{id}` was used: the start of `{}` at {} was allowed.",
            escape(instance),
            escape(at)
        ),
        Outcome::Burned { instance, at } => format!(
            ":rotating_light: Password `{id}` (for {own}) was presented on another instance, \
             `{}`, at {}. That start was denied and the instance stopped, and the password is \
             burned: it can no longer be used. It has leaked: whoever set it on `{}` had it. \
             Ask for a new one, and tell your security team.",
            escape(instance),
            escape(at),
            escape(instance)
        ),
        Outcome::PresentedAgain {
            instance,
            reason,
            at,
        } => {
            let after = if reason == "reused" {
                "after it was used"
            } else {
                "after it expired"
            };
            format!(
                ":warning: Password `{id}` was presented again on `{}` at {}, {after}. That \
                 start was denied and the instance stopped. Someone still has it.",
                escape(instance),
                escape(at)
            )
        }
        Outcome::Expired => format!(
            ":hourglass: Password `{id}` (for {own}) expired unused at {}.",
            reply.expires_at.rfc3339()
        ),
    };
    json!({
        "response_type": "ephemeral",
        "replace_original": false,
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
}

/// The direct message of a follow-up: the same words, to the requester's own conversation with
/// the app (`chat.postMessage` with the user's id as the channel).
pub fn direct(outcome: &Outcome, reply: &Reply) -> Value {
    let m = message(outcome, reply);
    json!({ "channel": reply.owner.user_id, "text": m["text"], "blocks": m["blocks"] })
}

/// The whole alert, for forwarding (`None`: not an alert of the schema).
pub fn alert_in(body: &str) -> Option<Alert> {
    let envelope: Value = serde_json::from_str(body).ok()?;
    serde_json::from_str(envelope["Message"].as_str()?).ok()
}

/// Slack's three control characters in text, escaped (an instance id or a time never holds
/// them, but the alert is read, not trusted).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What one follow-up came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Told {
    /// Posted.
    Posted,
    /// Sent as a direct message from the bot (the reply URL could carry no more).
    DirectMessage,
    /// The password has no reply (the command gave no reply URL, or one elsewhere).
    NoReply,
    /// Already told, or the reply URL can carry no more (five posts, or past its 30 minutes).
    NoPostLeft,
    /// The stored URL does not point at the chat's origins (never posted to).
    Refused,
    /// The alert tells its requester nothing, or the password is not due.
    Nothing,
}

/// A follow-up that could not be done now (the alert goes back to the queue).
#[derive(Debug, thiserror::Error)]
pub enum FollowupError {
    /// The table.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chat.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The channel topic.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// Direct messages from the Slack app's bot, for an outcome the reply URL can no longer carry
/// (the password outlived the URL's 30 minutes, or its five posts are spent): only with a bot
/// token configured (`EC2PASS_SLACK_BOT_TOKEN_SECRET_ARN`), only to a Slack requester.
#[derive(Clone, Debug)]
pub struct Bot {
    /// The bot token.
    pub token: BotToken,
    /// Slack's `chat.postMessage` (`https://slack.com/api/chat.postMessage`).
    pub api: Url,
}

/// How long a forward record is kept: longer than the follow-up queue keeps a message.
pub const FORWARD_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The follow-up function: the table, the chat, the clock, the chat's origins, and optionally
/// the channel that deny alerts are forwarded to and the bot that sends direct messages.
pub struct Followup<S, C, K, N = NoChannel> {
    /// The table (replies, and the passwords' state at expiry).
    pub store: S,
    /// The chat.
    pub chat: C,
    /// The clock.
    pub clock: K,
    /// Where reply URLs may point (`EC2PASS_REPLY_ORIGINS`).
    pub origins: Vec<Origin>,
    /// The key that opens the stored reply URLs.
    pub key: ReplyKey,
    /// Where deny alerts are forwarded (`EC2PASS_CHAT_TOPIC_ARN`), or [`NoChannel`].
    pub channel: N,
    /// Direct messages, when a bot token is configured.
    pub bot: Option<Bot>,
}

impl<S, C, K, N> Followup<S, C, K, N>
where
    S: ReplyStore + PasswordLookup,
    C: Chat,
    K: Clock,
    N: Channel,
{
    /// Tells the requester what an alert says became of their password.
    pub async fn on_alert(&self, alert: &Heard) -> Result<Told, FollowupError> {
        let Some((id, outcome)) = outcome_of(alert) else {
            return Ok(Told::Nothing);
        };
        let Some(reply) = self.store.reply(&id).await? else {
            return Ok(Told::NoReply);
        };
        self.tell(&reply, &outcome).await
    }

    /// A batch from the follow-up queue, `(message id, body)`: the ids of the messages to
    /// deliver again (a follow-up that could not be done now). A message that is not an alert
    /// is logged and dropped: delivering it again will not make it one.
    pub async fn on_batch(&self, messages: &[(String, String)]) -> Vec<String> {
        let mut again = Vec::new();
        for (id, body) in messages {
            let heard = match heard_in(body) {
                Ok(heard) => heard,
                Err(e) => {
                    warn!(message_id = %id, error = %e, "a message that is not an alert");
                    continue;
                }
            };
            // The channel and the requester are told independently: one failing does not keep
            // the other from happening, and the redelivery forwards nothing twice.
            let forwarded = self.forward(body).await;
            let told = self.on_alert(&heard).await;
            let failures: Vec<FollowupError> = [forwarded.err(), told.err()]
                .into_iter()
                .flatten()
                .collect();
            for e in &failures {
                warn!(message_id = %id, error = %e, "follow-up failed; back to the queue");
            }
            if !failures.is_empty() {
                again.push(id.clone());
            }
        }
        again
    }

    /// Forwards a deny alert to the channel, once per alert: the forward record is claimed
    /// first, and given back when the channel fails.
    pub async fn forward(&self, body: &str) -> Result<(), FollowupError> {
        if !self.channel.enabled() {
            return Ok(());
        }
        let Some(alert) = alert_in(body) else {
            return Ok(());
        };
        if alert.verdict != "deny" {
            return Ok(());
        }
        let key = format!("{}#{}", alert.event_id, alert.instance_id);
        let now = self.clock.now();
        if !self
            .store
            .claim_forward(&key, now.plus(FORWARD_KEPT))
            .await?
        {
            info!(instance_id = %alert.instance_id, "deny alert forwarded already");
            return Ok(());
        }
        if let Err(e) = self.channel.announce(&channel::notification(&alert)).await {
            self.store.release_forward(&key).await?;
            return Err(e.into());
        }
        info!(instance_id = %alert.instance_id, "deny alert forwarded to the channel");
        Ok(())
    }

    /// The schedule's run: each password whose outcome is untold, told from its state (see
    /// the module's doc). A post that fails is left for the next run.
    pub async fn catch_up(&self) -> Result<Vec<(ShortId, Told)>, FollowupError> {
        let now = self.clock.now();
        let mut told = Vec::new();
        for reply in self.store.due_replies(now, CATCH_UP_PER_RUN).await? {
            let result = match self.store.find(&reply.digest).await? {
                // The password is gone (its item outlived by its reply): nothing to tell.
                None => {
                    self.store.settle(&reply.short_id).await?;
                    Told::NoPostLeft
                }
                Some(record) => match outcome_from_state(&record, now) {
                    None => continue,
                    Some(outcome) => match self.tell(&reply, &outcome).await {
                        Ok(t) => t,
                        Err(FollowupError::Chat(e)) => {
                            warn!(short_id = %reply.short_id, error = %e, "left for the next run");
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                },
            };
            told.push((reply.short_id.clone(), result));
        }
        Ok(told)
    }

    /// One follow-up: a post taken, the message, the post given back if it fails.
    async fn tell(&self, reply: &Reply, outcome: &Outcome) -> Result<Told, FollowupError> {
        let id = &reply.short_id;
        let settles = outcome.settles();
        let opened = open(&self.key, &reply.url, id.as_str());
        let Some(url) = opened.as_deref().and_then(|u| allowed(u, &self.origins)) else {
            warn!(short_id = %id, "a reply URL that does not open, or points outside the chat's origins: never posted to");
            self.store.settle(id).await?;
            return Ok(Told::Refused);
        };
        let now = self.clock.now();
        if !self.store.take_post(id, now, settles).await? {
            let untold = !settles || reply.due;
            if let (Some(bot), true, Front::Slack) = (&self.bot, untold, reply.front) {
                // Past its 30 minutes or its five posts: the bot tells it in a direct message.
                let body = direct(outcome, reply);
                self.chat.post_as_bot(&bot.api, &bot.token, &body).await?;
                if settles {
                    self.store.settle(id).await?;
                }
                info!(short_id = %id, outcome = ?kind(outcome), "follow-up sent as a direct message");
                return Ok(Told::DirectMessage);
            }
            if settles && reply.due {
                // Past its 30 minutes or its five posts: the URL can carry no more.
                self.store.settle(id).await?;
            }
            info!(short_id = %id, "no follow-up left on this reply URL");
            return Ok(Told::NoPostLeft);
        }
        if let Err(e) = self
            .chat
            .post(&url, &front::render(reply.front, message(outcome, reply)))
            .await
        {
            warn!(short_id = %id, error = %e, "a follow-up failed; it goes back to the queue");
            self.store.release_post(id, settles).await?;
            return Err(e.into());
        }
        info!(short_id = %id, outcome = ?kind(outcome), "follow-up posted");
        Ok(Told::Posted)
    }
}

/// The outcome's name, for the log line.
fn kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Used { .. } => "used",
        Outcome::Burned { .. } => "burned",
        Outcome::PresentedAgain { .. } => "presented-again",
        Outcome::Expired => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use url::Url;

    use ec2pass_shared::ids::{InstanceId, Owner};
    use ec2pass_shared::password::{Password, new_short_id};
    use ec2pass_shared::reply::origins;
    use ec2pass_shared::store::memory::MemoryStore;
    use ec2pass_shared::store::{
        MintStore, PasswordRecord, REPLY_FOR, REPLY_POSTS, RateWindow, TriggerClaim,
    };
    use ec2pass_shared::time::FixedClock;

    const NOW: UnixTime = UnixTime(1_800_000_000);

    fn test_key() -> ReplyKey {
        ReplyKey::from_secret("unit-test-reply-key").unwrap_or_else(|| unreachable!())
    }
    const URL: &str = "https://hooks.slack.com/commands/T1/123/secret-part";

    /// Records each post; fails while `down`.
    #[derive(Clone, Default)]
    struct FakeChat {
        posts: Arc<Mutex<Vec<(String, Value)>>>,
        down: Arc<Mutex<bool>>,
    }

    impl FakeChat {
        fn posts(&self) -> Vec<(String, Value)> {
            self.posts.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    impl Chat for FakeChat {
        async fn post(&self, url: &Url, body: &Value) -> Result<(), ChatError> {
            if *self.down.lock().unwrap_or_else(|p| p.into_inner()) {
                return Err(ChatError("hooks.slack.com: connection refused".into()));
            }
            self.posts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((url.to_string(), body.clone()));
            Ok(())
        }

        async fn post_as_bot(
            &self,
            url: &Url,
            _token: &BotToken,
            body: &Value,
        ) -> Result<(), ChatError> {
            self.post(url, body).await
        }
    }

    /// A store holding one password (for `i-0123abcd`, 15 minutes from `NOW`) minted with
    /// `url` as its reply URL; the password and the follow-up function at `now`.
    async fn minted(
        url: &str,
        now: UnixTime,
    ) -> (Password, Followup<MemoryStore, FakeChat, FixedClock>) {
        let password = Password::generate();
        let record = PasswordRecord {
            short_id: new_short_id(),
            digest: password.digest(),
            owner: Owner {
                team_id: "T1".into(),
                user_id: "U1".into(),
            },
            channel_id: "C1".into(),
            scope: InstanceId::parse("i-0123abcd"),
            issued_at: NOW,
            expires_at: NOW.plus(Duration::from_secs(900)),
            consumed_by: None,
        };
        let reply = Reply {
            short_id: record.short_id.clone(),
            digest: record.digest,
            owner: record.owner.clone(),
            scope: record.scope.clone(),
            expires_at: record.expires_at,
            url: ec2pass_shared::reply::seal(&test_key(), url, record.short_id.as_str())
                .unwrap_or_default(),
            until: NOW.plus(REPLY_FOR),
            posts: 0,
            due: true,
            front: Default::default(),
        };
        let store = MemoryStore::new();
        let mint = ec2pass_shared::store::Mint {
            trigger: TriggerClaim {
                trigger_id: new_short_id().as_str().to_owned(),
                forget_after: NOW.plus(Duration::from_secs(600)),
            },
            trigger_claimed: false,
            rate: RateWindow {
                owner: record.owner.clone(),
                window: 0,
                limit: 10,
                forget_after: NOW.plus(Duration::from_secs(7200)),
            },
            record,
            reply: Some(reply),
        };
        assert!(store.mint(&mint).await.is_ok());
        let followup = Followup {
            store,
            chat: FakeChat::default(),
            clock: FixedClock(now),
            origins: origins("https://hooks.slack.com").unwrap_or_default(),
            key: test_key(),
            channel: NoChannel,
            bot: None,
        };
        (password, followup)
    }

    fn alert(verdict: &str, reason: &str, instance: &str, short_id: &ShortId) -> Heard {
        heard_in(&queued(verdict, reason, instance, short_id)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An alert as the follow-up queue holds it.
    fn queued(verdict: &str, reason: &str, instance: &str, short_id: &ShortId) -> String {
        let body = json!({
            "Type": "Notification",
            "Message": json!({
                "schema_version": 1, "verdict": verdict, "reason": reason,
                "instance_id": instance, "instance_name": null, "account": "123456789012",
                "region": "eu-west-1", "event_id": "e-1", "event_time": "2027-01-15T08:00:00Z",
                "launch_time": null, "action": "stopped", "password_short_id": short_id.as_str(),
                "issuer_user_id": "U1", "detail": null,
            }).to_string(),
        });
        body.to_string()
    }

    fn short_id(f: &Followup<MemoryStore, FakeChat, FixedClock>) -> ShortId {
        f.store.records()[0].short_id.clone()
    }

    fn text(post: &(String, Value)) -> String {
        post.1["text"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn the_requester_hears_that_the_password_was_used_and_then_nothing_more() {
        let (password, f) = minted(URL, NOW.plus(Duration::from_secs(60))).await;
        let id = short_id(&f);
        assert_eq!(
            f.on_alert(&alert("allow", "none", "i-0123abcd", &id))
                .await
                .ok(),
            Some(Told::Posted)
        );
        let posts = f.chat.posts();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].0, URL);
        let said = text(&posts[0]);
        assert!(
            said.contains(id.as_str()) && said.contains("i-0123abcd") && said.contains("allowed"),
            "{said}"
        );
        assert!(
            !posts[0].1.to_string().contains(&password.display()),
            "never the password"
        );
        assert_eq!(posts[0].1["response_type"], "ephemeral");
        assert_eq!(posts[0].1["replace_original"], false);
        // And when the password expires, nothing is told again (its outcome is told)
        let later = Followup {
            clock: FixedClock(NOW.plus(Duration::from_secs(1000))),
            ..f
        };
        assert!(
            later
                .catch_up()
                .await
                .map(|t| t.is_empty())
                .unwrap_or(false)
        );
        assert_eq!(later.chat.posts().len(), 1);
    }

    #[tokio::test]
    async fn without_an_alert_the_schedule_tells_a_use_and_a_burn_from_the_passwords_state() {
        use ec2pass_shared::store::{Consume, ConsumeStore};
        use ec2pass_shared::verdict::{Cycle, Verdict, VerdictRecord};
        // Given a password used by a start whose allow alert was never published (the guard
        // publishes allow alerts only with EC2PASS_AUDIT_ALERTS)
        let (password, f) = minted(URL, NOW.plus(Duration::from_secs(60))).await;
        let cycle = Cycle {
            instance: InstanceId::parse("i-0123abcd").unwrap_or_else(|| panic!("an id")),
            launch_time: NOW.plus(Duration::from_secs(30)),
        };
        let allow = VerdictRecord {
            cycle: cycle.clone(),
            verdict: Verdict::Allow,
            short_id: None,
            issuer: None,
            password_key: None,
            decided_at: NOW,
            event_id: "e-1".into(),
            place: None,
            retain_until: NOW.plus(Duration::from_secs(86_400)),
            alert: None,
        };
        let consumed = f
            .store
            .consume(&Consume {
                digest: password.digest(),
                cycle,
                now: NOW.plus(Duration::from_secs(40)),
                allow,
            })
            .await;
        assert!(consumed.is_ok());
        // When the schedule runs, the use is told, once
        let told = f.catch_up().await.unwrap_or_default();
        assert_eq!(told.len(), 1, "{told:?}");
        let said = text(&f.chat.posts()[0]);
        assert!(
            said.contains("was used") && said.contains("i-0123abcd"),
            "{said}"
        );
        assert!(f.catch_up().await.map(|t| t.is_empty()).unwrap_or(false));
        // And a burn is read from `burned:` the same way
        let mut burned = f.store.records()[0].clone();
        burned.consumed_by = Some("burned:i-0999999999@1800000030".into());
        assert!(matches!(
            outcome_from_state(&burned, NOW),
            Some(Outcome::Burned { instance, .. }) if instance == "i-0999999999"
        ));
    }

    #[tokio::test]
    async fn a_password_presented_on_another_instance_is_told_as_leaked() {
        let (_, f) = minted(URL, NOW.plus(Duration::from_secs(60))).await;
        let id = short_id(&f);
        let told = f
            .on_alert(&alert("deny", "wrong-instance", "i-0999999999", &id))
            .await;
        assert_eq!(told.ok(), Some(Told::Posted));
        let said = text(&f.chat.posts()[0]);
        assert!(
            said.contains("i-0999999999") && said.contains("burned") && said.contains("leaked"),
            "{said}"
        );
        // Other verdicts, and alerts without a password, tell nothing
        for (verdict, reason) in [
            ("deny", "missing"),
            ("deny", "unknown"),
            ("exempt", "none"),
            ("guard-error", "stop"),
        ] {
            assert_eq!(
                f.on_alert(&alert(verdict, reason, "i-0123abcd", &id))
                    .await
                    .ok(),
                Some(Told::Nothing)
            );
        }
        assert_eq!(f.chat.posts().len(), 1);
    }

    #[tokio::test]
    async fn a_password_that_expires_unused_is_told_once() {
        let (_, f) = minted(URL, NOW.plus(Duration::from_secs(60))).await;
        // Before it expires (unused) there is nothing to tell
        assert!(f.catch_up().await.map(|t| t.is_empty()).unwrap_or(false));
        let f = Followup {
            clock: FixedClock(NOW.plus(Duration::from_secs(900))),
            ..f
        };
        let told = f.catch_up().await.unwrap_or_default();
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].1, Told::Posted);
        assert!(text(&f.chat.posts()[0]).contains("expired unused"));
        assert!(
            f.catch_up().await.map(|t| t.is_empty()).unwrap_or(false),
            "told once"
        );
        assert_eq!(f.chat.posts().len(), 1);
    }

    #[tokio::test]
    async fn a_reply_url_carries_five_posts_within_thirty_minutes_and_no_more() {
        let (_, f) = minted(URL, NOW.plus(Duration::from_secs(60))).await;
        let id = short_id(&f);
        let again = alert("deny", "reused", "i-0123abcd", &id);
        for _ in 0..REPLY_POSTS + 3 {
            let _ = f.on_alert(&again).await;
        }
        assert_eq!(f.chat.posts().len(), REPLY_POSTS as usize);
        // Past the 30 minutes, nothing is posted, and the outcome is marked told
        let (_, late) = minted(URL, NOW.plus(REPLY_FOR)).await;
        let id = short_id(&late);
        let told = late
            .on_alert(&alert("allow", "none", "i-0123abcd", &id))
            .await;
        assert_eq!(told.ok(), Some(Told::NoPostLeft));
        assert!(late.chat.posts().is_empty());
        assert!(
            late.store
                .reply(&id)
                .await
                .ok()
                .flatten()
                .is_some_and(|r| !r.due)
        );
    }

    #[tokio::test]
    async fn a_chat_that_is_down_gives_the_post_back_for_the_retry() {
        let (_, f) = minted(URL, NOW.plus(Duration::from_secs(60))).await;
        let id = short_id(&f);
        let used = alert("allow", "none", "i-0123abcd", &id);
        *f.chat.down.lock().unwrap_or_else(|p| p.into_inner()) = true;
        for _ in 0..REPLY_POSTS + 1 {
            assert!(f.on_alert(&used).await.is_err(), "back to the queue");
        }
        let reply = f.store.reply(&id).await.ok().flatten();
        assert!(
            reply.as_ref().is_some_and(|r| r.posts == 0 && r.due),
            "{reply:?}"
        );
        // When it is back, the retry posts
        *f.chat.down.lock().unwrap_or_else(|p| p.into_inner()) = false;
        assert_eq!(f.on_alert(&used).await.ok(), Some(Told::Posted));
        assert_eq!(f.chat.posts().len(), 1);
    }

    #[tokio::test]
    async fn a_reply_url_elsewhere_is_never_posted_to() {
        // Given a reply item whose URL points elsewhere (written by something other than the
        // issuer, which never keeps one)
        for url in [
            "https://hooks.slack.com.example.net/commands/T1/1/x",
            "https://hooks.slack.com@example.net/x",
            "http://hooks.slack.com/commands/T1/1/x",
            "https://example.net/commands",
        ] {
            let (_, f) = minted(url, NOW.plus(Duration::from_secs(60))).await;
            let id = short_id(&f);
            let told = f.on_alert(&alert("allow", "none", "i-0123abcd", &id)).await;
            assert_eq!(told.ok(), Some(Told::Refused), "{url}");
            assert!(f.chat.posts().is_empty(), "{url}");
        }
    }

    #[test]
    fn what_is_not_an_alert_is_refused_not_panicked_on() {
        for body in [
            "",
            "{}",
            "[]",
            r#"{"Message":"not json"}"#,
            r#"{"Message":"{}"}"#,
            "\u{0}",
        ] {
            assert!(heard_in(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn the_debug_of_a_reply_never_shows_its_url() {
        let reply = Reply {
            short_id: new_short_id(),
            digest: Password::generate().digest(),
            owner: Owner {
                team_id: "T1".into(),
                user_id: "U1".into(),
            },
            scope: None,
            expires_at: NOW,
            url: URL.into(),
            until: NOW,
            posts: 0,
            due: true,
            front: Default::default(),
        };
        assert!(!format!("{reply:?}").contains("secret-part"));
        let cmd = crate::request::SlashCommand::example();
        assert!(!format!("{cmd:?}").contains("hooks.slack.com"));
    }

    /// The channel topic, recording each notification; fails while `down`.
    #[derive(Clone, Default)]
    struct FakeChannel {
        sent: Arc<Mutex<Vec<Value>>>,
        down: Arc<Mutex<bool>>,
    }

    impl Channel for FakeChannel {
        async fn announce(&self, notification: &Value) -> Result<(), ChannelError> {
            if *self.down.lock().unwrap_or_else(|p| p.into_inner()) {
                return Err(ChannelError("SNS: throttled".into()));
            }
            self.sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(notification.clone());
            Ok(())
        }
    }

    async fn with_channel() -> (
        Followup<MemoryStore, FakeChat, FixedClock, FakeChannel>,
        FakeChannel,
    ) {
        let (_, f) = minted(URL, NOW.plus(Duration::from_secs(60))).await;
        let channel = FakeChannel::default();
        let f = Followup {
            store: f.store,
            chat: f.chat,
            clock: f.clock,
            origins: f.origins,
            key: f.key,
            channel: channel.clone(),
            bot: None,
        };
        (f, channel)
    }

    #[tokio::test]
    async fn a_deny_alert_reaches_the_channel_once_however_often_it_is_delivered() {
        let (f, channel) = with_channel().await;
        let id = f.store.records()[0].short_id.clone();
        let deny = queued("deny", "wrong-instance", "i-0999999999", &id);
        let allow = queued("allow", "none", "i-0123abcd", &id);
        let batch = [("m1".to_owned(), deny.clone()), ("m2".to_owned(), allow)];
        assert!(f.on_batch(&batch).await.is_empty());
        assert!(
            f.on_batch(&[("m1".to_owned(), deny)]).await.is_empty(),
            "redelivered"
        );
        let sent = channel.sent.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["source"], "custom");
        assert_eq!(sent[0]["metadata"]["threadId"], "i-0999999999");
        // And the requester heard of the burn as well
        assert!(
            f.chat
                .posts()
                .iter()
                .any(|p| text(p).contains("presented on another instance"))
        );
    }

    #[tokio::test]
    async fn a_channel_that_is_down_sends_the_alert_back_and_it_is_forwarded_later() {
        let (f, channel) = with_channel().await;
        let id = f.store.records()[0].short_id.clone();
        let deny = [(
            "m1".to_owned(),
            queued("deny", "missing", "i-0999999999", &id),
        )];
        *channel.down.lock().unwrap_or_else(|p| p.into_inner()) = true;
        assert_eq!(f.on_batch(&deny).await, ["m1"]);
        *channel.down.lock().unwrap_or_else(|p| p.into_inner()) = false;
        assert!(f.on_batch(&deny).await.is_empty());
        assert_eq!(channel.sent.lock().map(|s| s.len()).unwrap_or_default(), 1);
    }

    #[tokio::test]
    async fn past_its_reply_url_the_bot_tells_the_outcome_in_a_direct_message() {
        // Forty minutes after the command: the reply URL's 30 minutes are over
        let late = NOW.plus(Duration::from_secs(40 * 60));
        let (_, f) = minted(URL, late).await;
        let id = f.store.records()[0].short_id.clone();
        let api =
            Url::parse("https://slack.com/api/chat.postMessage").unwrap_or_else(|_| unreachable!());
        let without_bot = f.on_alert(&alert("allow", "none", "i-0123abcd", &id)).await;
        assert_eq!(without_bot.ok(), Some(Told::NoPostLeft));
        let (_, f) = minted(URL, late).await;
        let id = f.store.records()[0].short_id.clone();
        let f = Followup {
            bot: Some(Bot {
                token: BotToken::new("xoxb-test").unwrap_or_else(|| unreachable!()),
                api: api.clone(),
            }),
            ..f
        };
        let told = f.on_alert(&alert("allow", "none", "i-0123abcd", &id)).await;
        assert_eq!(told.ok(), Some(Told::DirectMessage));
        let posts = f.chat.posts();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].0, api.as_str());
        assert_eq!(posts[0].1["channel"], "U1");
        assert!(text(&posts[0]).contains("was used"), "{posts:?}");
        // Told once: the outcome is settled
        let again = f.on_alert(&alert("allow", "none", "i-0123abcd", &id)).await;
        assert_eq!(again.ok(), Some(Told::NoPostLeft));
        assert_eq!(f.chat.posts().len(), 1);
    }
}
