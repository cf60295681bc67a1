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
//! decide the outcome (untag, burn, publish) run with or after the stop.
//!
//! The invocation that records a verdict owns its alert; if publishing (or the stop before it)
//! fails it gives the alert back and returns an error, and the retry that finds the verdict
//! publishes it. When AWS cannot be reached after the SDK's retries the guard fails closed
//! (stops, alerts `guard-error`, returns an error so Lambda retries), or open if so configured.

use ec2pass_shared::alert::Action;
use ec2pass_shared::config::{FailMode, GuardConfig};
use ec2pass_shared::digest::Digest;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::store::{
    Consume, ConsumeOutcome, ConsumeStore, PasswordLookup, PasswordRecord, Recorded, VerdictStore,
};
use ec2pass_shared::time::{Clock, UnixTime};
use ec2pass_shared::verdict::{Cycle, DenyReason, Verdict, VerdictRecord};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::alerts::{self, Alerts};
use crate::decide::{self, Assessment};
use crate::ec2::{Ec2, InstanceFacts};
use crate::enforce;
use crate::event::{self, Origin, Trigger};

/// One invocation: who it is (to own alerts) and when its time runs out.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Lambda's request id.
    pub request_id: String,
    /// When to give up retrying a stop (before Lambda's own timeout).
    pub deadline: Instant,
}

/// What happened to one instance: for the logs, the invocation's answer, and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The instance.
    pub instance_id: String,
    /// The cycle's verdict (`allow`, `deny`, `exempt`), or `none` when the instance is gone.
    pub verdict: String,
    /// The deny reason, if any.
    pub reason: Option<String>,
    /// Whether this invocation recorded the verdict (`false`: it enforced an existing one).
    pub decided_here: bool,
    /// What was done about the instance.
    pub action: Action,
    /// Whether this invocation published the verdict's alert.
    pub alerted: bool,
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
    /// What failed: `describe`, `consume`, `record-verdict`, `stop`, `publish`, `list`.
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

/// The guard and what it depends on.
pub struct Guard<S, E, A, C> {
    /// Validated configuration.
    pub config: GuardConfig,
    /// The password and verdict table.
    pub store: S,
    /// EC2.
    pub ec2: E,
    /// The alert topic.
    pub alerts: A,
    /// The time.
    pub clock: C,
}

impl<S, E, A, C> Guard<S, E, A, C>
where
    S: ConsumeStore + VerdictStore + PasswordLookup,
    E: Ec2,
    A: Alerts,
    C: Clock,
{
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
            Trigger::Sweep { origin } => self.sweep(&origin, inv).await,
        }
    }

    /// describe → (a second look at a tagless pending instance) → decide.
    async fn guard_instance(
        &self,
        id: &InstanceId,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Report, GuardError> {
        match self.describe(id, origin, inv).await? {
            Some(facts) => self.guard_facts(facts, origin, inv).await,
            None => Ok(Report::new(id, None, false, Action::None, false)),
        }
    }

    async fn describe(
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

    /// decide → consume or record → enforce → alert, for an instance already described (by
    /// the event path or the sweep's listing: both get the same second look).
    async fn guard_facts(
        &self,
        mut facts: InstanceFacts,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Report, GuardError> {
        // Tags given at launch can lag behind a pending instance: look once more before a
        // tagless instance is denied `missing` (or, in opt-in mode, passed over as exempt).
        if decide::worth_a_second_look(&facts) {
            tokio::time::sleep(self.config.tag_retry_delay).await;
            facts = match self.describe(&facts.id, origin, inv).await? {
                Some(f) => f,
                None => return Ok(Report::new(&facts.id, None, false, Action::None, false)),
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
        let now = self.clock.now();
        match decide::assess(&facts, &self.config) {
            Assessment::Exempt(why) => {
                info!(instance_id = %facts.id, ?why, "exempt");
                self.exempt(&facts, cycle, origin, inv, now).await
            }
            Assessment::NoPassword(reason) => {
                self.deny_without_password(&facts, cycle, reason, origin, inv, now)
                    .await
            }
            Assessment::Password(digest) => {
                self.consume(&facts, cycle, digest, origin, inv, now).await
            }
        }
    }

    fn record_for(
        &self,
        cycle: Cycle,
        verdict: Verdict,
        origin: &Origin,
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
            retain_until: now.plus(self.config.verdict_retention),
            alert_owner: None,
        }
    }

    /// Whether a verdict gets an alert: every deny; allows and exemptions only when auditing.
    fn alerts_on(&self, verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Deny(_)) || self.config.audit_alerts
    }

    async fn exempt(
        &self,
        facts: &InstanceFacts,
        cycle: Cycle,
        origin: &Origin,
        inv: &Invocation,
        now: UnixTime,
    ) -> Result<Report, GuardError> {
        let mut v = self.record_for(cycle, Verdict::Exempt, origin, now);
        v.alert_owner = self
            .alerts_on(Verdict::Exempt)
            .then(|| inv.request_id.clone());
        match self.store.record(&v).await {
            Ok(Recorded::Ours) => {
                // Not guarded, so never stopped; but a password left in its tag is removed all
                // the same, so none lingers (the issue: the tag goes on every verdict).
                self.untag(facts).await;
                let alerted = self.alerts_on(Verdict::Exempt);
                if alerted {
                    self.publish_ours(&v, facts, origin, Action::None, inv)
                        .await?;
                }
                Ok(Report::new(
                    &facts.id,
                    Some(Verdict::Exempt),
                    true,
                    Action::None,
                    alerted,
                ))
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
    ) -> Result<Report, GuardError> {
        let mut v = self.record_for(cycle, Verdict::Deny(reason), origin, now);
        v.alert_owner = Some(inv.request_id.clone());
        match self.store.record(&v).await {
            Ok(Recorded::Ours) => {
                info!(instance_id = %facts.id, reason = reason.as_str(), "deny");
                let action = match self.stop_and_untag(facts, origin, inv).await {
                    Ok(action) => action,
                    Err(e) => {
                        // The retry that finds this verdict stops again and alerts.
                        self.give_back_alert(&v.cycle, inv).await;
                        return Err(e);
                    }
                };
                self.publish_ours(&v, facts, origin, action, inv).await?;
                Ok(Report::new(&facts.id, Some(v.verdict), true, action, true))
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
    ) -> Result<Report, GuardError> {
        let mut allow = self.record_for(cycle.clone(), Verdict::Allow, origin, now);
        allow.password_key = Some(digest.table_key());
        allow.alert_owner = self
            .alerts_on(Verdict::Allow)
            .then(|| inv.request_id.clone());
        let consume = Consume {
            digest,
            cycle: cycle.clone(),
            now,
            allow: allow.clone(),
        };
        match self.store.consume(&consume).await {
            Ok(ConsumeOutcome::Allowed) => {
                info!(instance_id = %facts.id, "allow");
                // The verdict is recorded, so the tag can go now.
                self.untag(facts).await;
                let alerted = self.alerts_on(Verdict::Allow);
                if alerted {
                    let password = self.store.find(&digest).await.ok().flatten();
                    describe_password(&mut allow, password.as_ref());
                    self.publish_ours(&allow, facts, origin, Action::None, inv)
                        .await?;
                }
                Ok(Report::new(
                    &facts.id,
                    Some(Verdict::Allow),
                    true,
                    Action::None,
                    alerted,
                ))
            }
            Ok(ConsumeOutcome::Decided(theirs)) => {
                self.enforce_existing(facts, theirs, origin, inv).await
            }
            Ok(ConsumeOutcome::Refused(stored)) => {
                let reason = decide::why_refused(stored.as_ref(), &digest, &cycle, now);
                let mut v = self.record_for(cycle.clone(), Verdict::Deny(reason), origin, now);
                v.password_key = Some(digest.table_key());
                v.alert_owner = Some(inv.request_id.clone());
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
                    self.untag(facts).await;
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
                        Ok(Report::new(&facts.id, Some(v.verdict), true, action, true))
                    }
                    Ok(Recorded::Theirs(theirs)) => {
                        if theirs.verdict == Verdict::Allow {
                            // Only possible if the tag changed during the start.
                            error!(instance_id = %facts.id, "stopped a start another invocation allowed: the Auth tag changed mid-start");
                        }
                        Ok(Report::new(
                            &facts.id,
                            Some(theirs.verdict),
                            false,
                            action,
                            false,
                        ))
                    }
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

    /// Another invocation decided the cycle: enforce its verdict, decide nothing.
    async fn enforce_existing(
        &self,
        facts: &InstanceFacts,
        theirs: VerdictRecord,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Report, GuardError> {
        let action = match theirs.verdict {
            Verdict::Deny(_) => self.stop_and_untag(facts, origin, inv).await?,
            Verdict::Allow | Verdict::Exempt => Action::None,
        };
        // The recorder owns the alert; if it gave it back (its publish failed), take it over.
        // This holds for every verdict that alerts: denies always, allows and exemptions when
        // auditing.
        let mut alerted = false;
        if self.alerts_on(theirs.verdict) && theirs.alert_owner.is_none() {
            match self.store.claim_alert(&theirs.cycle, &inv.request_id).await {
                Ok(true) => {
                    self.publish_ours(&theirs, facts, origin, action, inv)
                        .await?;
                    alerted = true;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not claim a verdict's alert"),
            }
        }
        Ok(Report::new(
            &facts.id,
            Some(theirs.verdict),
            false,
            action,
            alerted,
        ))
    }

    async fn stop(
        &self,
        facts: &InstanceFacts,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Action, GuardError> {
        match enforce::stop(&self.ec2, &self.config, facts, inv.deadline).await {
            Ok(action) => {
                info!(instance_id = %facts.id, ?action, "enforced");
                Ok(action)
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

    /// Stops a denied instance and removes its `Auth` tag, at the same time.
    async fn stop_and_untag(
        &self,
        facts: &InstanceFacts,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Action, GuardError> {
        let (action, ()) = tokio::join!(self.stop(facts, origin, inv), self.untag(facts));
        action
    }

    /// Removes the `Auth` tag, if the instance has one. Best effort: the password it held is
    /// consumed, burned or worthless by now, so a failure is logged, not fatal.
    async fn untag(&self, facts: &InstanceFacts) {
        if !facts.tags.contains_key(&self.config.auth_tag) {
            return;
        }
        if let Err(e) = self.ec2.delete_tag(&facts.id, &self.config.auth_tag).await {
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
        let alert = alerts::for_verdict(v, facts, origin, action);
        match self.alerts.publish(&alert).await {
            Ok(()) => Ok(()),
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

    /// Gives a verdict's alert back, so the retry that finds the verdict publishes it.
    async fn give_back_alert(&self, cycle: &Cycle, inv: &Invocation) {
        if let Err(e) = self.store.release_alert(cycle, &inv.request_id).await {
            error!(error = %e, "could not give back a verdict's alert");
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
                enforce::stop(&self.ec2, &self.config, target, inv.deadline)
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

    /// The sweep: decide every guarded, running start since activation that has no verdict, and
    /// enforce again a verdict left unfinished (a deny still up because its stop failed, or an
    /// alert given back because its publish failed): the sweep's own retries, and later sweeps,
    /// see only instances still pending or running.
    async fn sweep(&self, origin: &Origin, inv: &Invocation) -> Result<Vec<Report>, GuardError> {
        let now = self.clock.now();
        let sweep_error = |what: &'static str, detail: String| GuardError {
            instance: "sweep".into(),
            what,
            detail,
        };
        let activation = match self.config.activation_time {
            Some(t) => UnixTime(t),
            None => self
                .store
                .activation(now)
                .await
                .map_err(|e| sweep_error("activation", e.to_string()))?,
        };
        let instances = self
            .ec2
            .active_instances()
            .await
            .map_err(|e| sweep_error("list", e.to_string()))?;
        let mut reports = Vec::new();
        let mut first_error = None;
        for facts in instances {
            if matches!(decide::assess(&facts, &self.config), Assessment::Exempt(_)) {
                continue;
            }
            let Some(cycle) = facts.cycle() else { continue };
            if cycle.launch_time <= activation {
                continue; // started before the guard was installed: never touched
            }
            match self.store.verdict(&cycle).await {
                Ok(Some(theirs)) => {
                    let unfinished = matches!(theirs.verdict, Verdict::Deny(_))
                        || (self.alerts_on(theirs.verdict) && theirs.alert_owner.is_none());
                    if unfinished {
                        info!(instance_id = %facts.id, "sweep: enforcing an unfinished verdict again");
                        match self.enforce_existing(&facts, theirs, origin, inv).await {
                            Ok(report) => reports.push(report),
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(sweep_error("verdict-lookup", e.to_string()));
                    continue;
                }
            }
            info!(instance_id = %facts.id, "sweep: a start without a verdict");
            match self.guard_facts(facts, origin, inv).await {
                Ok(report) => reports.push(report),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        info!(decided = reports.len(), "sweep done");
        first_error.map_or(Ok(reports), Err)
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
