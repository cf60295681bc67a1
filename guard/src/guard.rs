//! The guard's path: event → describe → decide → consume → record → enforce → alert.
//!
//! Correctness under duplicates, retries and races (SPEC §4.3.1) rests on three rules:
//!
//! - **One verdict per start cycle**, created once. Whoever creates it decides; everyone else
//!   enforces what it says and decides nothing anew.
//! - **Consumption is idempotent per cycle**: the password is marked consumed *by the cycle*, in
//!   the same transaction that creates the allow verdict, so a retry or the `running` event of the
//!   same cycle passes the same condition, and a password never serves two cycles.
//! - **A missing tag is not proof**: a concurrent invocation may have allowed the cycle and
//!   removed the tag. So a deny without a password is recorded (create-once) *before* the stop,
//!   and the allow path removes the tag only *after* its verdict is recorded. A deny that comes
//!   from a failed password condition is certain for the cycle, so its stop is issued while the
//!   verdict is being recorded.
//!
//! Every deny path therefore makes three sequential AWS calls before the stop (describe, one
//! conditional write, stop); the allow path two (describe, one transaction). Calls that do not
//! decide the outcome (untag, burn, publish) run with or after the stop. The activation time is
//! read once per cold start, alongside the first describe.
//!
//! What an event may touch (SPEC §4.2): only a start that is still going (`pending` or
//! `running`), launched after the guard's activation and within the sweep window. A late or
//! duplicated event about a start that has ended changes nothing; a forged event about an
//! instance that predates the guard changes nothing; a start too old to have a verdict any more is
//! never decided anew (time must never stop an authorized server). A tag is removed only with the
//! value the verdict was about, so a password tagged since, for the next start, stays.
//!
//! Every verdict that alerts is recorded with its alert owed and leased to the recording
//! invocation ([`ec2pass_shared::verdict::ALERT_LEASE`]); publishing marks it sent. If the
//! recorder dies anywhere in between, its own retry, a later event of the cycle or the sweep (which
//! also queries owed alerts of instances no longer running) takes the alert over once the lease
//! lapses. When AWS cannot be reached after the SDK's retries the guard fails closed (stops,
//! alerts `guard-error`, returns an error so Lambda retries), or open if so configured.

use ec2pass_shared::alert::Action;
use ec2pass_shared::config::{FailMode, GuardConfig};
use ec2pass_shared::digest::Digest;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::password::Password;
use ec2pass_shared::store::{
    AlertStore, CallerLookup, Consume, ConsumeOutcome, ConsumeStore, PasswordLookup,
    PasswordRecord, Recorded, VerdictStore,
};
use ec2pass_shared::time::{Clock, UnixTime};
use ec2pass_shared::verdict::{AlertClaim, Cycle, DenyReason, Verdict, VerdictRecord};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::alerts::{self, Alerts};
use crate::decide::{self, Assessment, Exemption};
use crate::ec2::{Ec2, InstanceFacts};
use crate::enforce;
use crate::event::{self, Origin, Trigger};
use crate::fleet::{Fleet, FleetError};

/// When the activation time cannot be read, starts older than this are treated as older than
/// the guard: the longest an EventBridge event is delivered for (`MaximumEventAgeInSeconds` of
/// the state-change rule in infra/template.yaml).
pub const ACTIVATION_FALLBACK: std::time::Duration = std::time::Duration::from_secs(600);

/// One invocation: who it is (to own alerts) and when its time runs out.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Lambda's request id.
    pub request_id: String,
    /// When to give up retrying a stop: Lambda's own deadline less the time to announce the
    /// verdict ([`crate::DEADLINE_MARGIN`]).
    pub deadline: Instant,
}

/// What happened to one instance: for the logs, the invocation's answer, and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The instance.
    pub instance_id: String,
    /// The cycle's verdict (`allow`, `deny`, `exempt`), or `none` when nothing was decided or
    /// enforced (the instance is gone, its start is over, or it is not the guard's to touch).
    pub verdict: String,
    /// The deny reason, if any.
    pub reason: Option<String>,
    /// Whether this invocation recorded the verdict (`false`: it enforced an existing one).
    pub decided_here: bool,
    /// What was done about the instance.
    pub action: Action,
    /// Whether this invocation published the verdict's alert.
    pub alerted: bool,
    /// Whether the start must be looked at again soon (still `pending`: it could not be stopped
    /// yet, or its launch tags may still be on their way); the batch path hands its message back.
    pub hand_back: bool,
}

impl Report {
    fn new(
        id: &InstanceId,
        verdict: Option<Verdict>,
        decided_here: bool,
        action: Action,
        alerted: bool,
    ) -> Self {
        Self {
            instance_id: id.to_string(),
            verdict: verdict.map_or("none", Verdict::kind).to_owned(),
            reason: verdict
                .and_then(Verdict::reason)
                .map(|r| r.as_str().to_owned()),
            decided_here,
            action,
            alerted,
            hand_back: action == Action::StopPending,
        }
    }

    /// Nothing decided or enforced.
    pub(crate) fn untouched(id: &InstanceId) -> Self {
        Self::new(id, None, false, Action::None, false)
    }

    /// Nothing decided yet: to be looked at again soon.
    fn later(id: &InstanceId) -> Self {
        Self {
            hand_back: true,
            ..Self::untouched(id)
        }
    }
}

/// An invocation that must fail so Lambda retries it (and, at last, the on-failure destination
/// keeps the event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} failed for {instance}: {detail}")]
pub struct GuardError {
    /// The instance (or `sweep`).
    pub instance: String,
    /// What failed: `describe`, `activation`, `consume`, `record-verdict`, `stop`, `publish`,
    /// `list`, `verdict-lookup`, `assume-role`.
    pub what: &'static str,
    /// Details (never a password or digest).
    pub detail: String,
}

impl From<GuardError> for lambda_runtime::Diagnostic {
    fn from(e: GuardError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: format!("ec2pass::{}", e.what),
            error_message: e.to_string(),
        }
    }
}

/// What became of a cycle that already had a verdict.
pub(crate) enum Existing {
    /// Enforced.
    Enforced(Report),
    /// It was an exemption whose reason went away: withdrawn, so decide the cycle anew.
    Withdrawn,
}

/// The guard and what it depends on.
pub struct Guard<S, E, A, C> {
    /// Validated configuration.
    pub config: GuardConfig,
    /// The password and verdict table.
    pub store: S,
    /// EC2: one account's, or the hub's member accounts ([`Fleet`]).
    pub ec2: E,
    /// The alert topic.
    pub alerts: A,
    /// The time.
    pub clock: C,
    /// The activation time, read once per cold start.
    activation: OnceCell<UnixTime>,
}

impl<S, E, A, C> Guard<S, E, A, C>
where
    S: ConsumeStore + VerdictStore + AlertStore + PasswordLookup + CallerLookup,
    E: Fleet,
    A: Alerts,
    C: Clock,
{
    /// A guard over these parts.
    pub fn new(config: GuardConfig, store: S, ec2: E, alerts: A, clock: C) -> Self {
        Self {
            config,
            store,
            ec2,
            alerts,
            clock,
            activation: OnceCell::new(),
        }
    }

    /// The guard's store, clock and configuration with the EC2 of one place and alert parts
    /// (the batch path's gathered calls).
    pub(crate) fn flow_over<'a, E2, A2>(
        &'a self,
        ec2: &'a E2,
        alerts: &'a A2,
        patience: Patience,
    ) -> Flow<'a, S, E2, A2, C> {
        Flow {
            config: &self.config,
            store: &self.store,
            ec2,
            alerts,
            clock: &self.clock,
            patience,
        }
    }

    /// Handles one invocation payload.
    pub async fn handle(
        &self,
        payload: &Value,
        inv: &Invocation,
    ) -> Result<Vec<Report>, GuardError> {
        match event::parse(payload) {
            Trigger::Ignore(why) => {
                warn!(%why, "ignored event");
                Ok(Vec::new())
            }
            Trigger::StateChange {
                instance,
                state,
                origin,
            } => {
                info!(instance_id = %instance, %state, event_id = origin.event_id, "state change");
                self.guard_instance(&instance, &origin, inv)
                    .await
                    .map(|r| vec![r])
            }
            Trigger::Sweep { origin } => {
                let activation = match self.activation().await {
                    Ok(t) => t,
                    Err(detail) => {
                        return Err(sweep_failed(&self.alerts, &origin, "activation", detail).await);
                    }
                };
                self.sweep(activation, &origin, inv).await
            }
        }
    }

    /// The activation time: configured, or the table's creation time, read once.
    pub(crate) async fn activation(&self) -> Result<UnixTime, String> {
        if let Some(t) = self.config.activation_time {
            return Ok(UnixTime(t));
        }
        self.activation
            .get_or_try_init(|| self.store.activation())
            .await
            .copied()
            .map_err(|e| e.to_string())
    }

    /// One `guard-error` alert for starts in a place the guard cannot act in (its member role
    /// cannot be assumed): they are left to come back (the queue redelivers them; the sweep
    /// looks again), never skipped in silence.
    pub(crate) async fn cannot_act(
        &self,
        ids: &[&InstanceId],
        origin: &Origin,
        e: &FleetError,
    ) -> GuardError {
        error!(account = %e.place.account, region = %e.place.region, error = %e, starts = ids.len(), "cannot act in the account");
        let alert = alerts::for_unreachable(origin, ids, e);
        if let Err(e) = self.alerts.publish(&alert).await {
            error!(error = %e, "could not publish a guard-error alert");
        }
        GuardError {
            instance: ids
                .first()
                .map_or_else(|| "sweep".to_owned(), |id| id.to_string()),
            what: "assume-role",
            detail: e.to_string(),
        }
    }

    /// where → describe (with the activation time, on a cold start) → guard the facts.
    async fn guard_instance(
        &self,
        id: &InstanceId,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Report, GuardError> {
        let ec2 = match self.ec2.at(&origin.place()).await {
            Ok(ec2) => ec2,
            Err(e) => return Err(self.cannot_act(&[id], origin, &e).await),
        };
        let flow = self.flow_over(&ec2, &self.alerts, Patience::Wait);
        let (described, activation) =
            tokio::join!(flow.describe(id, origin, inv), self.activation());
        let Some(facts) = described? else {
            return Ok(Report::untouched(id));
        };
        let activation = match activation {
            Ok(t) => t,
            // Unreadable (DescribeTable failed; it is retried on the next event): failing open
            // here would let anyone who can slow DescribeTable down switch the guard off, and
            // failing closed would stop servers that predate the guard. EventBridge delivers a
            // state change for at most MaximumEventAgeInSeconds (600 s in the template), so
            // only a start of the last ten minutes can be a real event's: decide those.
            Err(detail) => {
                error!(instance_id = %facts.id, %detail, "activation unreadable: deciding only starts of the last ten minutes");
                self.clock.now().minus(ACTIVATION_FALLBACK)
            }
        };
        flow.guard_facts(facts, activation, origin, inv).await
    }
}

/// How a pass waits for a start that is still `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// The single path (one event an invocation): look at a tagless pending instance once more
    /// after `EC2PASS_TAG_RETRY_DELAY`, and retry its stop until the invocation's deadline.
    Wait,
    /// The batch path: never wait inside the invocation. A start that cannot be finished while it
    /// is `pending` is reported for handing back (its message returns in
    /// `EC2PASS_RECHECK_DELAY`), and a throttled EC2 hands the batch back rather than failing
    /// closed.
    HandBack,
}

/// The guard's parts for one pass over instances, and how patient the pass may be: every
/// decision, consumption, enforcement and alert of one start is made here.
pub(crate) struct Flow<'a, S, E, A, C> {
    pub(crate) config: &'a GuardConfig,
    pub(crate) store: &'a S,
    pub(crate) ec2: &'a E,
    pub(crate) alerts: &'a A,
    pub(crate) clock: &'a C,
    pub(crate) patience: Patience,
}

impl<S, E, A, C> Flow<'_, S, E, A, C>
where
    S: ConsumeStore + VerdictStore + AlertStore + PasswordLookup + CallerLookup,
    E: Ec2,
    A: Alerts,
    C: Clock,
{
    pub(crate) async fn describe(
        &self,
        id: &InstanceId,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Option<InstanceFacts>, GuardError> {
        match self.ec2.describe(id).await {
            Ok(Some(f)) => Ok(Some(f)),
            Ok(None) => {
                info!(instance_id = %id, "instance no longer exists");
                Ok(None)
            }
            Err(e) => Err(self
                .fail(id, None, origin, inv, "describe", e.to_string())
                .await),
        }
    }

    /// What an event may touch, then decide → consume or record → enforce → alert, for an
    /// instance already described (by the event path or the sweep's listing).
    pub(crate) async fn guard_facts(
        &self,
        mut facts: InstanceFacts,
        activation: UnixTime,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Report, GuardError> {
        if !facts.is_active() {
            // The start this event was about is over: change nothing. Only an alert its
            // recorder owed and never sent is finished (the retry of an invocation that died
            // after stopping the instance lands here).
            info!(instance_id = %facts.id, state = %facts.state, "the start is over: nothing to do");
            return self.finish_owed_alert(&facts, origin, inv).await;
        }
        // A password tag set just before the start can lag behind the pending event: look once
        // more before denying `missing` (a pending instance cannot be stopped yet anyway).
        if decide::worth_a_second_look(&facts, self.config) {
            if self.patience == Patience::HandBack {
                info!(instance_id = %facts.id, "tagless while pending: looked at again when it comes back");
                return Ok(Report::later(&facts.id));
            }
            tokio::time::sleep(self.config.tag_retry_delay).await;
            facts = match self.describe(&facts.id, origin, inv).await? {
                Some(f) if f.is_active() => f,
                Some(f) => return self.finish_owed_alert(&f, origin, inv).await,
                None => return Ok(Report::untouched(&facts.id)),
            };
        }
        let Some(cycle) = facts.cycle() else {
            return Err(self
                .fail(
                    &facts.id,
                    Some(&facts),
                    origin,
                    inv,
                    "describe",
                    "no LaunchTime".into(),
                )
                .await);
        };
        if cycle.launch_time <= activation {
            // Started before the guard was installed, whatever the event says: never touched.
            info!(instance_id = %facts.id, "started before the guard's activation: left alone");
            return Ok(Report::untouched(&facts.id));
        }
        let now = self.clock.now();
        if cycle.launch_time < now.minus(self.config.sweep_window) {
            return self.old_start(&facts, &cycle, origin, inv).await;
        }
        self.decide(&facts, cycle, origin, inv, now).await
    }

    /// A start older than the sweep window: enforce its verdict if the table still has one,
    /// and otherwise leave it alone. Its verdict may have aged out (TTL), and time must never
    /// stop an authorized server; a start that old was never seen only if the guard was down.
    async fn old_start(
        &self,
        facts: &InstanceFacts,
        cycle: &Cycle,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Report, GuardError> {
        match self.store.verdict(cycle).await {
            Ok(Some(theirs)) if theirs.verdict != Verdict::Exempt => {
                match self.enforce_existing(facts, theirs, origin, inv).await? {
                    Existing::Enforced(report) => Ok(report),
                    Existing::Withdrawn => Ok(Report::untouched(&facts.id)),
                }
            }
            Ok(_) => {
                warn!(instance_id = %facts.id, "a start older than the sweep window without a verdict: left alone");
                Ok(Report::untouched(&facts.id))
            }
            Err(e) => Err(GuardError {
                instance: facts.id.to_string(),
                what: "verdict-lookup",
                detail: e.to_string(),
            }),
        }
    }

    /// Decides the cycle: exempt, deny without a password, or consume the password. A cycle
    /// whose exemption went away since it was recorded is decided a second time.
    async fn decide(
        &self,
        facts: &InstanceFacts,
        cycle: Cycle,
        origin: &Origin,
        inv: &Invocation,
        now: UnixTime,
    ) -> Result<Report, GuardError> {
        for _ in 0..2 {
            let existing = match decide::assess(facts, self.config) {
                Assessment::Exempt(why) => {
                    info!(instance_id = %facts.id, ?why, "exempt");
                    self.exempt(facts, cycle.clone(), why, origin, inv, now)
                        .await?
                }
                Assessment::NoPassword(reason) => {
                    self.deny_without_password(facts, cycle.clone(), reason, origin, inv, now)
                        .await?
                }
                Assessment::Password(digest) => {
                    self.consume(facts, cycle.clone(), digest, origin, inv, now)
                        .await?
                }
            };
            match existing {
                Existing::Enforced(report) => return Ok(report),
                Existing::Withdrawn => {
                    info!(instance_id = %facts.id, "the exemption's reason went away: deciding again");
                }
            }
        }
        Err(GuardError {
            instance: facts.id.to_string(),
            what: "record-verdict",
            detail: "the cycle's verdict changed while it was being decided".into(),
        })
    }

    fn record_for(
        &self,
        cycle: Cycle,
        verdict: Verdict,
        origin: &Origin,
        inv: &Invocation,
        now: UnixTime,
    ) -> VerdictRecord {
        VerdictRecord {
            cycle,
            verdict,
            short_id: None,
            issuer: None,
            password_key: None,
            decided_at: now,
            event_id: origin.event_id.clone(),
            place: Some(origin.place()).filter(|p| !p.account.is_empty() && !p.region.is_empty()),
            retain_until: now.plus(self.config.verdict_retention),
            alert: self
                .alerts_on(verdict)
                .then(|| AlertClaim::by(&inv.request_id, now)),
        }
    }

    /// Whether a verdict gets an alert: every deny; every exemption unless turned off (an
    /// exemption is a door); allows only when auditing.
    fn alerts_on(&self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Deny(_) => true,
            Verdict::Exempt => self.config.alert_exemptions || self.config.audit_alerts,
            Verdict::Allow => self.config.audit_alerts,
        }
    }

    /// The `Auth` tag's value as this describe read it: what a verdict decided now is about.
    fn tag_value<'f>(&self, facts: &'f InstanceFacts) -> Option<&'f str> {
        facts.tags.get(&self.config.auth_tag).map(String::as_str)
    }

    /// The `Auth` tag's value if it holds the password an existing verdict was about.
    fn tag_value_of<'f>(
        &self,
        facts: &'f InstanceFacts,
        theirs: &VerdictRecord,
    ) -> Option<&'f str> {
        let key = theirs.password_key.as_deref()?;
        self.tag_value(facts).filter(|value| {
            Password::from_tag(value.trim()).is_some_and(|p| p.digest().table_key() == key)
        })
    }

    async fn exempt(
        &self,
        facts: &InstanceFacts,
        cycle: Cycle,
        why: Exemption,
        origin: &Origin,
        inv: &Invocation,
        now: UnixTime,
    ) -> Result<Existing, GuardError> {
        let mut v = self.record_for(cycle, Verdict::Exempt, origin, inv, now);
        // In opt-in mode an instance nobody opted in is simply not the guard's: announcing every
        // start of every such instance would bury the alerts that matter. The doors (the
        // exemption tag, a listed group) are announced; this one only when auditing.
        if why == Exemption::NotOptedIn && !self.config.audit_alerts {
            v.alert = None;
        }
        match self.store.record(&v).await {
            Ok(Recorded::Ours) => {
                // Not guarded, so never stopped; but a password left in its tag is removed all
                // the same, so none lingers.
                self.untag(facts, self.tag_value(facts)).await;
                let alerted = v.alert.is_some();
                if alerted {
                    self.publish_ours(&v, facts, origin, Action::None, inv)
                        .await?;
                }
                Ok(Existing::Enforced(Report::new(
                    &facts.id,
                    Some(Verdict::Exempt),
                    true,
                    Action::None,
                    alerted,
                )))
            }
            Ok(Recorded::Theirs(theirs)) => self.enforce_existing(facts, theirs, origin, inv).await,
            // An exempt instance is not stopped for want of an audit record; Lambda retries it.
            Err(e) => Err(GuardError {
                instance: facts.id.to_string(),
                what: "record-verdict",
                detail: e.to_string(),
            }),
        }
    }

    /// No password: record the deny first (a concurrent invocation may have allowed the cycle
    /// and removed the tag), then stop.
    async fn deny_without_password(
        &self,
        facts: &InstanceFacts,
        cycle: Cycle,
        reason: DenyReason,
        origin: &Origin,
        inv: &Invocation,
        now: UnixTime,
    ) -> Result<Existing, GuardError> {
        let v = self.record_for(cycle, Verdict::Deny(reason), origin, inv, now);
        match self.store.record(&v).await {
            Ok(Recorded::Ours) => {
                info!(instance_id = %facts.id, reason = reason.as_str(), "deny");
                let action = match self
                    .stop_and_untag(facts, self.tag_value(facts), origin, inv)
                    .await
                {
                    Ok(action) => action,
                    Err(e) => {
                        // The retry that finds this verdict stops again and alerts.
                        self.give_back_alert(&v.cycle, inv).await;
                        return Err(e);
                    }
                };
                self.publish_ours(&v, facts, origin, action, inv).await?;
                Ok(Existing::Enforced(Report::new(
                    &facts.id,
                    Some(v.verdict),
                    true,
                    action,
                    true,
                )))
            }
            Ok(Recorded::Theirs(theirs)) => self.enforce_existing(facts, theirs, origin, inv).await,
            Err(e) => Err(self
                .fail(
                    &facts.id,
                    Some(facts),
                    origin,
                    inv,
                    "record-verdict",
                    e.to_string(),
                )
                .await),
        }
    }

    /// A password: consume it and record the allow in one transaction.
    async fn consume(
        &self,
        facts: &InstanceFacts,
        cycle: Cycle,
        digest: Digest,
        origin: &Origin,
        inv: &Invocation,
        now: UnixTime,
    ) -> Result<Existing, GuardError> {
        let mut allow = self.record_for(cycle.clone(), Verdict::Allow, origin, inv, now);
        allow.password_key = Some(digest.table_key());
        let consume = Consume {
            digest,
            cycle: cycle.clone(),
            now,
            allow: allow.clone(),
        };
        match self.store.consume(&consume).await {
            Ok(ConsumeOutcome::Allowed) => {
                info!(instance_id = %facts.id, "allow");
                // The verdict is recorded, so the tag can go now; then the verdict learns which
                // password it was (short id, issuer), for audit.
                self.untag(facts, self.tag_value(facts)).await;
                let password = self.store.find(&digest).await.ok().flatten();
                if let Some(p) = &password
                    && let Err(e) = self.store.annotate(&cycle, &p.short_id, &p.owner).await
                {
                    warn!(instance_id = %facts.id, error = %e, "could not note the password on the allow verdict");
                }
                let alerted = allow.alert.is_some();
                if alerted {
                    describe_password(&mut allow, password.as_ref());
                    self.publish_ours(&allow, facts, origin, Action::None, inv)
                        .await?;
                }
                Ok(Existing::Enforced(Report::new(
                    &facts.id,
                    Some(Verdict::Allow),
                    true,
                    Action::None,
                    alerted,
                )))
            }
            Ok(ConsumeOutcome::Decided(theirs)) => {
                self.enforce_existing(facts, theirs, origin, inv).await
            }
            Ok(ConsumeOutcome::Refused(stored)) => {
                let reason = decide::why_refused(stored.as_ref(), &digest, &cycle, now);
                let mut v = self.record_for(cycle.clone(), Verdict::Deny(reason), origin, inv, now);
                v.password_key = Some(digest.table_key());
                describe_password(&mut v, stored.as_ref().filter(|r| r.digest.ct_eq(&digest)));
                info!(instance_id = %facts.id, reason = reason.as_str(), short_id = ?v.short_id, "deny");
                // Certain for this cycle: stop while recording; burn alongside.
                let burn = async {
                    if reason == DenyReason::WrongInstance
                        && let Err(e) = self.store.burn(&digest, &cycle).await
                    {
                        warn!(error = %e, "could not burn a leaked password");
                    }
                };
                let (action, recorded, ()) =
                    tokio::join!(self.stop(facts, origin, inv), self.store.record(&v), burn);
                // Untag once the verdict is recorded: if recording failed, the retry must still
                // see the password to give the same reason.
                if recorded.is_ok() {
                    self.untag(facts, self.tag_value(facts)).await;
                }
                let action = match action {
                    Ok(action) => action,
                    Err(e) => {
                        if matches!(recorded, Ok(Recorded::Ours)) {
                            self.give_back_alert(&v.cycle, inv).await;
                        }
                        return Err(e);
                    }
                };
                match recorded {
                    Ok(Recorded::Ours) => {
                        self.publish_ours(&v, facts, origin, action, inv).await?;
                        Ok(Existing::Enforced(Report::new(
                            &facts.id,
                            Some(v.verdict),
                            true,
                            action,
                            true,
                        )))
                    }
                    Ok(Recorded::Theirs(theirs)) if theirs.verdict == Verdict::Exempt => {
                        // Exempt when it was decided, guarded now (it left its group): the stop
                        // stands; the exemption is withdrawn and the deny recorded.
                        self.withdraw(facts, &theirs).await
                    }
                    Ok(Recorded::Theirs(theirs)) => {
                        if theirs.verdict == Verdict::Allow {
                            // Only possible if the tag changed during the start.
                            error!(instance_id = %facts.id, "stopped a start another invocation allowed: the Auth tag changed mid-start");
                        }
                        Ok(Existing::Enforced(Report::new(
                            &facts.id,
                            Some(theirs.verdict),
                            false,
                            action,
                            false,
                        )))
                    }
                    // The stop is done already (the deny is certain), whatever the fail mode:
                    // the guard-error alert says what was done.
                    Err(e) => Err(self
                        .alert_error(facts, origin, "record-verdict", e.to_string(), action)
                        .await),
                }
            }
            Err(e) => Err(self
                .fail(
                    &facts.id,
                    Some(facts),
                    origin,
                    inv,
                    "consume",
                    e.to_string(),
                )
                .await),
        }
    }

    /// Withdraws an exemption whose reason went away, so the caller decides the cycle anew.
    async fn withdraw(
        &self,
        facts: &InstanceFacts,
        theirs: &VerdictRecord,
    ) -> Result<Existing, GuardError> {
        match self.store.withdraw_exemption(&theirs.cycle).await {
            // Withdrawn by us, or by a concurrent invocation: either way, decide again.
            Ok(_) => Ok(Existing::Withdrawn),
            Err(e) => Err(GuardError {
                instance: facts.id.to_string(),
                what: "record-verdict",
                detail: e.to_string(),
            }),
        }
    }

    /// Another invocation decided the cycle: enforce its verdict, decide nothing (unless it was
    /// an exemption whose reason has gone away: then it is withdrawn, to be decided again).
    pub(crate) async fn enforce_existing(
        &self,
        facts: &InstanceFacts,
        theirs: VerdictRecord,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Existing, GuardError> {
        if theirs.verdict == Verdict::Exempt
            && !matches!(decide::assess(facts, self.config), Assessment::Exempt(_))
        {
            return self.withdraw(facts, &theirs).await;
        }
        let value = self.tag_value_of(facts, &theirs);
        let action = match theirs.verdict {
            Verdict::Deny(_) => self.stop_and_untag(facts, value, origin, inv).await?,
            Verdict::Allow | Verdict::Exempt => {
                self.untag(facts, value).await;
                Action::None
            }
        };
        let alerted = self
            .take_over_alert(&theirs, facts, origin, action, inv)
            .await?;
        Ok(Existing::Enforced(Report::new(
            &facts.id,
            Some(theirs.verdict),
            false,
            action,
            alerted,
        )))
    }

    /// Publishes a verdict's owed alert if this invocation may take it over: the recorder gave
    /// it back, its lease lapsed, or this is the recorder's own retry.
    async fn take_over_alert(
        &self,
        theirs: &VerdictRecord,
        facts: &InstanceFacts,
        origin: &Origin,
        action: Action,
        inv: &Invocation,
    ) -> Result<bool, GuardError> {
        let now = self.clock.now();
        if !theirs.alert_claimable_by(&inv.request_id, now) {
            return Ok(false);
        }
        match self
            .store
            .claim_alert(&theirs.cycle, &inv.request_id, now)
            .await
        {
            Ok(true) => {
                self.publish_ours(theirs, facts, origin, action, inv)
                    .await?;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                warn!(error = %e, "could not claim a verdict's alert");
                Ok(false)
            }
        }
    }

    /// An instance whose start is over: if its cycle's verdict still owes an alert, announce it.
    async fn finish_owed_alert(
        &self,
        facts: &InstanceFacts,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Report, GuardError> {
        let Some(cycle) = facts.cycle() else {
            return Ok(Report::untouched(&facts.id));
        };
        let theirs = match self.store.verdict(&cycle).await {
            Ok(Some(v)) if v.alert.is_some() => v,
            Ok(_) => return Ok(Report::untouched(&facts.id)),
            Err(e) => {
                warn!(instance_id = %facts.id, error = %e, "could not read the verdict of an ended start");
                return Ok(Report::untouched(&facts.id));
            }
        };
        let action = ended_action(theirs.verdict);
        let alerted = self
            .take_over_alert(&theirs, facts, origin, action, inv)
            .await?;
        Ok(Report::new(
            &facts.id,
            Some(theirs.verdict),
            false,
            action,
            alerted,
        ))
    }

    /// Until when a stop is retried while the instance is `pending`: the invocation's deadline
    /// on the single path; not at all on the batch path, which hands the start back instead.
    fn stop_deadline(&self, inv: &Invocation) -> Instant {
        match self.patience {
            Patience::Wait => inv.deadline,
            Patience::HandBack => Instant::now(),
        }
    }

    async fn stop(
        &self,
        facts: &InstanceFacts,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Action, GuardError> {
        match enforce::stop(self.ec2, self.config, facts, self.stop_deadline(inv)).await {
            Ok(action) => {
                info!(instance_id = %facts.id, ?action, "enforced");
                Ok(action)
            }
            Err(e) if e.throttled && self.patience == Patience::HandBack => {
                warn!(instance_id = %facts.id, error = %e, "stop throttled past the pace: handed back");
                Err(GuardError {
                    instance: facts.id.to_string(),
                    what: "stop",
                    detail: e.to_string(),
                })
            }
            Err(e) => {
                let alert = alerts::for_error(
                    &facts.id,
                    Some(facts),
                    origin,
                    "stop",
                    e.to_string(),
                    Action::AlertOnly,
                );
                if let Err(e) = self.alerts.publish(&alert).await {
                    error!(error = %e, "could not publish a guard-error alert");
                }
                error!(instance_id = %facts.id, error = %e, "stop failed");
                Err(GuardError {
                    instance: facts.id.to_string(),
                    what: "stop",
                    detail: e.to_string(),
                })
            }
        }
    }

    /// Stops a denied instance and removes the `Auth` tag with `value`, at the same time.
    async fn stop_and_untag(
        &self,
        facts: &InstanceFacts,
        value: Option<&str>,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Action, GuardError> {
        let (action, ()) = tokio::join!(self.stop(facts, origin, inv), self.untag(facts, value));
        action
    }

    /// Removes the `Auth` tag, but only while it holds `value` (DeleteTags with a value deletes
    /// the tag only if it still has that value). Best effort: the password it held is consumed,
    /// burned or worthless by now, so a failure is logged, not fatal.
    async fn untag(&self, facts: &InstanceFacts, value: Option<&str>) {
        let Some(value) = value else { return };
        if let Err(e) = self
            .ec2
            .delete_tag(&facts.id, &self.config.auth_tag, value)
            .await
        {
            warn!(instance_id = %facts.id, error = %e, "could not remove the Auth tag");
        }
    }

    async fn publish_ours(
        &self,
        v: &VerdictRecord,
        facts: &InstanceFacts,
        origin: &Origin,
        action: Action,
        inv: &Invocation,
    ) -> Result<(), GuardError> {
        let mut alert = alerts::for_verdict(v, facts, origin, action);
        alert.caller = self.caller_to_tell(v).await;
        match self.alerts.publish(&alert).await {
            Ok(()) => {
                // If this mark is lost, the alert is announced once more after the lease:
                // at least once, never never.
                if let Err(e) = self.store.alert_sent(&v.cycle, self.clock.now()).await {
                    warn!(instance_id = %facts.id, error = %e, "could not mark the alert sent");
                }
                Ok(())
            }
            Err(e) => {
                self.give_back_alert(&v.cycle, inv).await;
                error!(instance_id = %facts.id, error = %e, "publishing the alert failed");
                Err(GuardError {
                    instance: facts.id.to_string(),
                    what: "publish",
                    detail: e.to_string(),
                })
            }
        }
    }

    /// Who started a denied start, when CloudTrail's call arrived before its alert is
    /// published (SPEC §11; [`crate::attribute`] tells it otherwise): read after the verdict was
    /// recorded and the stop issued, so it adds nothing to the path to a stop, and claimed on
    /// the verdict so no attribution alert repeats it. Best effort: the alert goes out without
    /// the caller rather than not at all.
    async fn caller_to_tell(&self, v: &VerdictRecord) -> Option<ec2pass_shared::caller::Caller> {
        if !matches!(v.verdict, Verdict::Deny(_)) {
            return None;
        }
        let call = match self.store.call_for(&v.cycle.instance).await {
            Ok(call) => call,
            Err(e) => {
                warn!(instance_id = %v.cycle.instance, error = %e, "could not read who started it");
                return None;
            }
        };
        let caller = crate::calls::caller_of(call, &v.cycle)?;
        if let Err(e) = self
            .store
            .claim_tell(&v.cycle, &caller, ec2pass_shared::store::TellClaim::InAlert)
            .await
        {
            // The attribution path may tell it once more: twice, never never.
            warn!(instance_id = %v.cycle.instance, error = %e, "could not record who started it");
        }
        Some(caller)
    }

    /// Gives a verdict's alert back, so the retry that finds the verdict publishes it. If this
    /// fails too, the lease still lapses and the alert is taken over then.
    async fn give_back_alert(&self, cycle: &Cycle, inv: &Invocation) {
        if let Err(e) = self.store.release_alert(cycle, &inv.request_id).await {
            error!(error = %e, "could not give back a verdict's alert; it is taken over when its lease lapses");
        }
    }

    /// A `guard-error` alert saying what was done (`action`), with no further enforcement,
    /// and the error.
    async fn alert_error(
        &self,
        facts: &InstanceFacts,
        origin: &Origin,
        what: &'static str,
        detail: String,
        action: Action,
    ) -> GuardError {
        error!(instance_id = %facts.id, what, %detail, "guard error");
        let alert = alerts::for_error(&facts.id, Some(facts), origin, what, detail.clone(), action);
        if let Err(e) = self.alerts.publish(&alert).await {
            error!(error = %e, "could not publish a guard-error alert");
        }
        GuardError {
            instance: facts.id.to_string(),
            what,
            detail,
        }
    }

    /// AWS could not be reached: fail closed (stop) or open, alert `guard-error`, and return the
    /// error so Lambda retries.
    async fn fail(
        &self,
        id: &InstanceId,
        facts: Option<&InstanceFacts>,
        origin: &Origin,
        inv: &Invocation,
        what: &'static str,
        detail: String,
    ) -> GuardError {
        error!(instance_id = %id, what, %detail, fail_mode = ?self.config.fail_mode, "guard error");
        let action = match self.config.fail_mode {
            FailMode::Open => Action::None,
            FailMode::Closed => {
                let unknown = InstanceFacts::unknown(id.clone());
                let target = facts.unwrap_or(&unknown);
                enforce::stop(self.ec2, self.config, target, self.stop_deadline(inv))
                    .await
                    .unwrap_or_else(|e| {
                        error!(instance_id = %id, error = %e, "fail-closed stop failed too");
                        Action::AlertOnly
                    })
            }
        };
        let alert = alerts::for_error(id, facts, origin, what, detail.clone(), action);
        if let Err(e) = self.alerts.publish(&alert).await {
            error!(error = %e, "could not publish a guard-error alert");
        }
        GuardError {
            instance: id.to_string(),
            what,
            detail,
        }
    }

    /// A sweep failure that concerns no one instance: alerted as `guard-error`, returned.
    pub(crate) async fn sweep_failed(
        &self,
        origin: &Origin,
        what: &'static str,
        detail: String,
    ) -> GuardError {
        sweep_failed(self.alerts, origin, what, detail).await
    }

    /// Whether a verdict found by the sweep still needs work.
    pub(crate) fn unfinished(
        &self,
        theirs: &VerdictRecord,
        facts: &InstanceFacts,
        now: UnixTime,
        inv: &Invocation,
    ) -> bool {
        match theirs.verdict {
            Verdict::Deny(_) => true,
            Verdict::Exempt
                if !matches!(decide::assess(facts, self.config), Assessment::Exempt(_)) =>
            {
                true
            }
            _ => theirs.alert_claimable_by(&inv.request_id, now),
        }
    }

    /// An owed alert whose instance the sweep did not list (stopped, terminated or gone):
    /// announce it, enforcing the verdict first if the start is somehow still going.
    pub(crate) async fn announce_owed(
        &self,
        theirs: VerdictRecord,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Report, GuardError> {
        let id = theirs.cycle.instance.clone();
        let facts = match self.ec2.describe(&id).await {
            Ok(Some(f)) => f,
            Ok(None) => InstanceFacts::unknown(id.clone()),
            Err(e) => {
                warn!(instance_id = %id, error = %e, "sweep: could not describe; announcing what is known");
                InstanceFacts::unknown(id.clone())
            }
        };
        if facts.is_active() && facts.cycle().as_ref() == Some(&theirs.cycle) {
            return match self.enforce_existing(&facts, theirs, origin, inv).await? {
                Existing::Enforced(report) => Ok(report),
                Existing::Withdrawn => Ok(Report::untouched(&id)),
            };
        }
        let action = ended_action(theirs.verdict);
        let alerted = self
            .take_over_alert(&theirs, &facts, origin, action, inv)
            .await?;
        Ok(Report::new(
            &id,
            Some(theirs.verdict),
            false,
            action,
            alerted,
        ))
    }
}

/// What an alert says was done for a verdict whose start is over: a deny's instance is down.
fn ended_action(verdict: Verdict) -> Action {
    match verdict {
        Verdict::Deny(_) => Action::Stopped,
        Verdict::Allow | Verdict::Exempt => Action::None,
    }
}

/// Copies what a verdict shows of its password: the short id and the issuer.
fn describe_password(v: &mut VerdictRecord, password: Option<&PasswordRecord>) {
    if let Some(p) = password {
        v.short_id = Some(p.short_id.clone());
        v.issuer = Some(p.owner.clone());
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;

/// A sweep failure that concerns no one instance: alerted as `guard-error`, returned.
pub(crate) async fn sweep_failed(
    alerts: &impl Alerts,
    origin: &Origin,
    what: &'static str,
    detail: String,
) -> GuardError {
    error!(what, %detail, "sweep failed");
    let alert = alerts::for_sweep_error(origin, what, detail.clone());
    if let Err(e) = alerts.publish(&alert).await {
        error!(error = %e, "could not publish a guard-error alert");
    }
    GuardError {
        instance: "sweep".into(),
        what,
        detail,
    }
}
