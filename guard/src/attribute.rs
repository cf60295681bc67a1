//! The attribution path (SPEC §11): calls → instances → callers recorded → told → response →
//! alerts.
//!
//! CloudTrail's record of each `RunInstances`/`StartInstances` ([`crate::calls`]) arrives on its
//! own queue, seconds to minutes after the state change, or (rarely) before it. For each call:
//!
//! 1. **instances**: the ids the call named, or those EC2 launched with its client token.
//! 2. **record**: the call is kept by instance (`call#<instance>`), so a deny decided later puts
//!    the caller in its own alert ([`crate::guard`] reads it before publishing); and the caller is
//!    recorded with the verdict of each start the call made, once it exists.
//! 3. **tell**: a deny whose alert went out without the caller gets one attribution alert,
//!    claimed on its verdict (`caller_told`) by whoever tells first: the deny alert, or this.
//!    While the deny's alert is still owed, or its start is not decided yet, the call waits
//!    (its message comes back) for up to [`Settings::give_up`].
//! 4. **respond** (opt-in, [`crate::respond`]): once one of the call's starts is denied, its
//!    caller's key is deactivated or its role's sessions revoked, at most once per principal
//!    and burst, each action alerted with the command that undoes it.
//!
//! Duplicates and redeliveries change nothing twice: every step is a conditional write.

use std::future::Future;
use std::time::Duration;

use ec2pass_shared::alert::{Action as Done, Alert, SCHEMA_VERSION};
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::org::Place;
use ec2pass_shared::store::{CallerStore, ResponseStore, TellClaim, VerdictHistory};
use ec2pass_shared::time::{Clock, UnixTime};
use ec2pass_shared::verdict::{Cycle, Verdict, VerdictRecord};
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::alerts::Alerts;
use crate::batch::{BatchOutcome, HandBack, Message, recheck_after};
use crate::calls::{self, Call, Started, started_by};
use crate::ec2::Ec2Client;
use crate::pace::Paced;
use crate::respond::{self, Iam, Plan, RESPONSE_LEASE, RESPONSE_RETENTION, Rails};

/// How long an attribution alert's claim is held while it is sent: a sender that died is taken
/// over on the call's next delivery.
pub const TELL_LEASE: Duration = Duration::from_secs(60);

/// How many starts of one call are worked on at once.
const CONCURRENCY: usize = 32;

/// How long to wait for a call's starts, and how long calls are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long after the call its starts are waited for (decided, their alerts published):
    /// `EC2PASS_ATTRIBUTION_WAIT`, default 30 minutes (the sweep decides a start within 5).
    pub give_up: Duration,
    /// How long a call is kept by instance (`call#`), for a deny decided later.
    pub call_retention: Duration,
    /// First delay before a waiting call is looked at again (doubling, at most a minute).
    pub recheck: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            give_up: Duration::from_secs(30 * 60),
            call_retention: Duration::from_secs(48 * 3600),
            recheck: Duration::from_secs(15),
        }
    }
}

/// The instances EC2 launched with a client token, in a place.
pub trait Launches: Send + Sync {
    /// Instance ids and launch times.
    fn launched_with(
        &self,
        place: &Place,
        client_token: &str,
    ) -> impl Future<Output = Result<Vec<(InstanceId, UnixTime)>, String>> + Send;
}

impl Launches for Paced<Ec2Client> {
    async fn launched_with(
        &self,
        _place: &Place,
        client_token: &str,
    ) -> Result<Vec<(InstanceId, UnixTime)>, String> {
        self.0
            .launched_with(client_token)
            .await
            .map_err(|e| e.to_string())
    }
}

impl<A, R> Launches for crate::fleet::MemberRoles<A, R>
where
    A: ec2pass_shared::org::Assume,
    R: ec2pass_shared::org::Roster,
{
    async fn launched_with(
        &self,
        place: &Place,
        client_token: &str,
    ) -> Result<Vec<(InstanceId, UnixTime)>, String> {
        use crate::fleet::Fleet;
        let ec2 = self.at(place).await.map_err(|e| e.to_string())?;
        ec2.0
            .launched_with(client_token)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What became of one start of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// Not decided yet (or its deny's alert is still owed): wait.
    Waiting(InstanceId),
    /// Allowed or exempt: the caller is recorded with the verdict.
    Recorded,
    /// Denied; its attribution alert when this call tells it.
    Denied(Box<(VerdictRecord, Option<Alert>)>),
}

/// What became of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOutcome {
    /// Starts whose verdict now carries the caller.
    pub attributed: usize,
    /// Denied starts among them.
    pub denied: usize,
    /// Attribution alerts published.
    pub told: usize,
    /// Starts still waited for.
    pub waiting: usize,
    /// The response alert's reason (`deactivated-key`, `revoked-sessions`, `refused`,
    /// `failed`), when one was published.
    pub response: Option<String>,
    /// Whether the call must come back (waiting, or something failed).
    pub again: bool,
}

/// The attribution path and what it depends on.
pub struct Attributor<S, L, I, A, C> {
    /// The table.
    pub store: S,
    /// EC2's launches by client token.
    pub launches: L,
    /// IAM, for the response.
    pub iam: I,
    /// The alert topic.
    pub alerts: A,
    /// The time.
    pub clock: C,
    /// What the response may act on.
    pub rails: Rails,
    /// Waiting and keeping.
    pub settings: Settings,
}

impl<S, L, I, A, C> Attributor<S, L, I, A, C>
where
    S: CallerStore + ResponseStore + VerdictHistory,
    L: Launches,
    I: Iam,
    A: Alerts,
    C: Clock,
{
    /// A batch of the call queue's messages: each call handled; the calls to see again handed
    /// back with a growing delay.
    pub async fn handle_batch(&self, messages: &[Message]) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        for m in messages {
            let call = serde_json::from_str::<Value>(&m.body)
                .map_err(|e| e.to_string())
                .and_then(|payload| calls::parse(&payload));
            let call = match call {
                Ok(call) => call,
                Err(why) => {
                    warn!(message_id = %m.id, %why, "ignored message");
                    continue;
                }
            };
            if self.handle_call(&call).await.again {
                outcome.failed.push(m.id.clone());
                outcome.recheck.push(HandBack {
                    id: m.id.clone(),
                    receipt: m.receipt.clone(),
                    after: recheck_after(self.settings.recheck, m.receive_count),
                });
            }
        }
        outcome
    }

    /// One call: instances → record → tell → respond → alerts.
    pub async fn handle_call(&self, call: &Call) -> CallOutcome {
        let now = self.clock.now();
        let young = now < call.at.plus(self.settings.give_up);
        let mut outcome = CallOutcome::default();
        let starts = match self.instances(call).await {
            Ok(starts) => starts,
            Err(e) => {
                error!(event_id = %call.caller.event_id, error = %e, "could not find the call's instances");
                outcome.again = young;
                return outcome;
            }
        };
        if starts.is_empty() {
            // EC2 may not list a launch's instances by its token yet.
            outcome.again = young;
            return outcome;
        }
        let found: Vec<Result<Found, String>> = stream::iter(starts)
            .map(|(id, launched)| self.attribute(call, id, launched, now))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut denied = Vec::new();
        let mut tells = Vec::new();
        for f in found {
            match f {
                Ok(Found::Waiting(id)) => {
                    info!(instance_id = %id, event_id = %call.caller.event_id, "start not decided (or its alert not out) yet");
                    outcome.waiting += 1;
                }
                Ok(Found::Recorded) => outcome.attributed += 1,
                Ok(Found::Denied(denial)) => {
                    let (v, tell) = *denial;
                    outcome.attributed += 1;
                    outcome.denied += 1;
                    tells.extend(tell.map(|a| (v.cycle.clone(), a)));
                    denied.push(v);
                }
                Err(e) => {
                    warn!(event_id = %call.caller.event_id, error = %e, "could not attribute a start");
                    outcome.again = true;
                }
            }
        }
        // Cut the caller off first: every second counts more than the alert's.
        let mut alerts = Vec::new();
        let mut claim = None;
        if let Some(first) = denied.first() {
            match self.respond(call, first, denied.len(), now, young).await {
                Ok(Some(responded)) => {
                    outcome.response = Some(responded.alert.reason.clone());
                    claim = Some(responded.claim);
                    alerts.push(responded.alert);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "could not claim the response");
                    outcome.again = true;
                }
            }
        }
        let told_from = alerts.len();
        alerts.extend(tells.iter().map(|(_, a)| a.clone()));
        let answers = self.alerts.publish_many(&alerts).await;
        for (n, answer) in answers.into_iter().enumerate() {
            match (answer, n.checked_sub(told_from)) {
                (Ok(()), Some(t)) => {
                    outcome.told += 1;
                    if let Err(e) = self.store.confirm_tell(&tells[t].0).await {
                        // Its claim lapses: a later delivery may tell it once more.
                        warn!(error = %e, "could not mark an attribution told");
                    }
                }
                (Ok(()), None) => {
                    if let Some((principal, at)) = &claim
                        && let Err(e) = self.store.confirm_response(principal, *at).await
                    {
                        warn!(error = %e, "could not confirm the response");
                    }
                }
                (Err(e), Some(t)) => {
                    error!(error = %e, "could not publish an attribution alert");
                    if let Err(e) = self.store.release_tell(&tells[t].0).await {
                        warn!(error = %e, "could not give an attribution back");
                    }
                    outcome.again = true;
                }
                (Err(e), None) => {
                    // Act (again: both actions are idempotent) and say so on the next delivery.
                    error!(error = %e, "could not publish the response alert");
                    if let Some((principal, at)) = &claim
                        && let Err(e) = self.store.release_response(principal, *at).await
                    {
                        warn!(error = %e, "could not give the response back");
                    }
                    outcome.again = true;
                }
            }
        }
        outcome.again |= outcome.waiting > 0 && young;
        outcome
    }

    /// The call's starts: the ids it named, or those launched with its client token.
    async fn instances(&self, call: &Call) -> Result<Vec<(InstanceId, Option<UnixTime>)>, String> {
        match &call.started {
            Started::Instances(ids) => Ok(ids.clone()),
            Started::ClientToken(token) => Ok(self
                .launches
                .launched_with(&call.place, token)
                .await?
                .into_iter()
                // A later start of one of those instances is not this call's.
                .filter(|(_, launched)| started_by(call.at, *launched))
                .map(|(id, launched)| (id, Some(launched)))
                .collect()),
        }
    }

    /// record → find the verdict → tell, for one start.
    async fn attribute(
        &self,
        call: &Call,
        id: InstanceId,
        launched: Option<UnixTime>,
        now: UnixTime,
    ) -> Result<Found, String> {
        let caller = &call.caller;
        self.store
            .put_call(&id, caller, call.at, now.plus(self.settings.call_retention))
            .await
            .map_err(|e| e.to_string())?;
        let cycle = match launched {
            Some(launch_time) => Some(Cycle {
                instance: id.clone(),
                launch_time,
            }),
            // The index of verdicts by instance: the start this call made is the one launched
            // within moments of it.
            None => self
                .store
                .recent_verdicts(&id, 5)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|v| v.cycle)
                .filter(|c| started_by(call.at, c.launch_time))
                .min_by_key(|c| c.launch_time),
        };
        let Some(cycle) = cycle else {
            return Ok(Found::Waiting(id));
        };
        let Some(found) = self
            .store
            .attribute(&cycle, caller)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Found::Waiting(id));
        };
        let v = found.verdict;
        if !matches!(v.verdict, Verdict::Deny(_)) {
            return Ok(Found::Recorded);
        }
        if found.told.is_some_and(|until| until >= now) {
            // Told, or being told by a live invocation.
            return Ok(Found::Denied(Box::new((v, None))));
        }
        if v.alert.is_some() {
            // Its alert is on its way and may carry the caller: see again.
            return Ok(Found::Waiting(id));
        }
        let claimed = self
            .store
            .claim_tell(
                &cycle,
                caller,
                TellClaim::After {
                    now,
                    until: now.plus(TELL_LEASE),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let alert = claimed.then(|| attribution_alert(&v, call));
        Ok(Found::Denied(Box::new((v, alert))))
    }

    /// The response to the caller of `denied` (the first of `count` denied starts of the call):
    /// its alert, and the claim to confirm once the alert is out.
    async fn respond(
        &self,
        call: &Call,
        denied: &VerdictRecord,
        count: usize,
        now: UnixTime,
        young: bool,
    ) -> Result<Option<Responded>, String> {
        let caller = &call.caller;
        let keep = now.plus(RESPONSE_RETENTION);
        let lease = now.plus(RESPONSE_LEASE);
        let (principal, reason, detail) = match respond::plan(caller, &self.rails) {
            Plan::Off => return Ok(None),
            Plan::Refused(why) => {
                // Said once per principal and hour, however many calls a burst makes.
                let key = format!("refused#{}#{}", caller.who(), now.0 / 3600);
                if !self
                    .store
                    .claim_response(&key, UnixTime(i64::MIN), now, lease, keep)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Ok(None);
                }
                info!(principal = %caller.who(), %why, "not cut off");
                (key, "refused", format!("Not cut off: {why}."))
            }
            Plan::Act(action) => {
                let principal = action.principal();
                if !self
                    .store
                    .claim_response(&principal, call.at, now, lease, keep)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    info!(%principal, "an action taken after this call covers it");
                    return Ok(None);
                }
                match self.iam.act(&action, now).await {
                    Ok(()) => {
                        info!(%principal, reason = action.reason(), "caller cut off");
                        (principal, action.reason(), action.told(now))
                    }
                    Err(e) if e.retry && young => {
                        // Throttled or unanswered: the call's next delivery tries again.
                        warn!(%principal, error = %e, "the response failed for now");
                        if let Err(e) = self.store.release_response(&principal, now).await {
                            warn!(error = %e, "could not give the response claim back");
                        }
                        return Err(format!("the response failed for now: {e}"));
                    }
                    Err(e) => {
                        // A refusal that stays (access denied, a protected role): said once, not
                        // tried again for this burst.
                        error!(%principal, error = %e, "the response failed");
                        let detail = format!("Cutting {} off failed: {e}", caller.who());
                        (principal, "failed", detail)
                    }
                }
            }
        };
        let starts = if count > 1 {
            format!("{count} denied starts from this call. ")
        } else {
            String::new()
        };
        let mut alert = attribution_alert(denied, call);
        alert.verdict = "response".into();
        alert.reason = reason.into();
        alert.detail = Some(format!("{starts}{detail}"));
        Ok(Some(Responded {
            alert,
            claim: (principal, now),
        }))
    }
}

/// A response's alert, and the claim to confirm once it is published.
struct Responded {
    alert: Alert,
    claim: (String, UnixTime),
}

/// The attribution alert of a denied start: its verdict, and the caller.
fn attribution_alert(v: &VerdictRecord, call: &Call) -> Alert {
    let place = v.place.clone().unwrap_or_else(|| call.place.clone());
    Alert {
        schema_version: SCHEMA_VERSION,
        verdict: "attribution".into(),
        reason: v.verdict.reason().map_or("none", |r| r.as_str()).into(),
        instance_id: v.cycle.instance.to_string(),
        instance_name: None,
        account: place.account,
        region: place.region,
        event_id: v.event_id.clone(),
        event_time: call.caller.event_time.clone(),
        launch_time: Some(v.cycle.launch_time.rfc3339()),
        // The deny alert says what was done to the instance; this one is about the caller.
        action: Done::None,
        password_short_id: v.short_id.as_ref().map(|s| s.as_str().to_owned()),
        issuer_user_id: v.issuer.as_ref().map(|o| o.user_id.clone()),
        detail: None,
        caller: Some(call.caller.clone()),
    }
}

#[cfg(test)]
#[path = "attribute_tests.rs"]
mod tests;
