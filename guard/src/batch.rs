//! The batch path: state changes from the SQS queue, many starts an invocation, few EC2 calls.
//!
//! messages → starts (one per instance, however many of its events the batch holds), by the
//! account and region they happened in ([`crate::fleet`]) → for each place, one
//! DescribeInstances by `instance-id` filter for all of its starts → each start decided, consumed and
//! recorded exactly as on the single path ([`crate::guard`]), concurrently → their stops, untags
//! and alerts gathered into as few StopInstances, DeleteTags and PublishBatch calls as EC2 and SNS
//! allow ([`Gathered`]) → one summary alert for the batch → the messages to hand back.
//!
//! Nothing waits inside the invocation ([`Patience::HandBack`]): a start still `pending` that
//! must be stopped, or a tagless pending one whose launch tags may lag, is handed back to the
//! queue with a short visibility ([`recheck_after`]); its `running` event, or its own return,
//! finishes it. A start that failed is handed back too and SQS redelivers it; only what keeps
//! failing reaches the dead-letter queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ec2pass_shared::alert::{Action, Alert, SCHEMA_VERSION};
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::org::Place;
use ec2pass_shared::store::{AlertStore, CallerLookup, ConsumeStore, PasswordLookup, VerdictStore};
use ec2pass_shared::time::{Clock, UnixTime};
use ec2pass_shared::verdict::VerdictRecord;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::alerts::Alerts;
use crate::ec2::{AwsError, Ec2, InstanceFacts, StopError};
use crate::event::{self, Origin, Trigger};
use crate::fleet::Fleet;
use crate::guard::{
    ACTIVATION_FALLBACK, Existing, Guard, GuardError, Invocation, Patience, Report,
};

/// Longest a recheck is put off, however often the start came back.
pub const MAX_RECHECK: Duration = Duration::from_secs(60);

/// Longest a gathered call waits for the other starts of the batch to reach theirs (one slow
/// DynamoDB answer must not hold every stop).
pub const HOLD: Duration = Duration::from_millis(100);

/// One SQS message of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its message id (what a partial batch response names).
    pub id: String,
    /// Its receipt handle (to change its visibility).
    pub receipt: String,
    /// How many times SQS has delivered it (`ApproximateReceiveCount`).
    pub receive_count: u32,
    /// The body: an EventBridge event.
    pub body: String,
}

/// A message to hand back with a visibility of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandBack {
    /// Its message id.
    pub id: String,
    /// Its receipt handle.
    pub receipt: String,
    /// When it should be seen again.
    pub after: Duration,
}

/// What a batch came to.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// Every message that must come back (the partial batch response's `batchItemFailures`).
    pub failed: Vec<String>,
    /// Of those, the ones to see again soon (`pending` starts), with their delay.
    #[serde(skip)]
    pub recheck: Vec<HandBack>,
    /// What happened to each start.
    pub reports: Vec<Report>,
}

/// How soon a start handed back while `pending` is looked at again: `first` on its first
/// return, doubling with every delivery, at most [`MAX_RECHECK`].
pub fn recheck_after(first: Duration, receive_count: u32) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(6);
    (first * 2u32.pow(doublings)).min(MAX_RECHECK)
}

/// Each instance of a batch once: the event that first named it, and the indices of every
/// message that did.
pub type Starts = BTreeMap<InstanceId, (Origin, Vec<usize>)>;

/// The batch's starts by the place they happened in, and the indices of the messages that name
/// none (logged, acknowledged).
fn starts(messages: &[Message]) -> (BTreeMap<Place, Starts>, Vec<usize>) {
    let mut starts: BTreeMap<Place, Starts> = BTreeMap::new();
    let mut ignored = Vec::new();
    for (n, m) in messages.iter().enumerate() {
        let payload: Value = match serde_json::from_str(&m.body) {
            Ok(v) => v,
            Err(e) => {
                warn!(message_id = %m.id, error = %e, "ignored message: not JSON");
                ignored.push(n);
                continue;
            }
        };
        match event::parse(&payload) {
            Trigger::StateChange {
                instance, origin, ..
            } => {
                let entry = starts
                    .entry(origin.place())
                    .or_default()
                    .entry(instance)
                    .or_insert_with(|| (origin, Vec::new()));
                entry.1.push(n);
            }
            Trigger::Sweep { .. } => {
                warn!(message_id = %m.id, "ignored message: a sweep arrives by schedule, not by queue");
                ignored.push(n);
            }
            Trigger::Ignore(why) => {
                warn!(message_id = %m.id, %why, "ignored message");
                ignored.push(n);
            }
        }
    }
    (starts, ignored)
}

impl<S, E, A, C> Guard<S, E, A, C>
where
    S: ConsumeStore + VerdictStore + AlertStore + PasswordLookup + CallerLookup,
    E: Fleet,
    A: Alerts,
    C: Clock,
{
    /// Handles one batch of SQS messages: see the module's doc.
    pub async fn handle_batch(&self, messages: &[Message], inv: &Invocation) -> BatchOutcome {
        let (places, _ignored) = starts(messages);
        let count: usize = places.values().map(Starts::len).sum();
        info!(
            messages = messages.len(),
            starts = count,
            places = places.len(),
            "batch"
        );
        let mut outcome = BatchOutcome::default();
        // Each place with its own EC2, all at once: EC2 throttles per account and region.
        let done = futures_util::future::join_all(
            places
                .iter()
                .map(|(place, starts)| self.handle_place(place, starts, messages, inv)),
        )
        .await;
        for part in done {
            outcome.failed.extend(part.failed);
            outcome.recheck.extend(part.recheck);
            outcome.reports.extend(part.reports);
        }
        let starts: Starts = places.into_values().flatten().collect();
        if let Some(summary) = summary(&outcome.reports, &starts)
            && let Err(e) = self.alerts.publish(&summary).await
        {
            warn!(error = %e, "could not publish the batch's summary");
        }
        outcome
    }

    /// The starts of one place: where → describe → guard each → what to hand back.
    async fn handle_place(
        &self,
        place: &Place,
        starts: &Starts,
        messages: &[Message],
        inv: &Invocation,
    ) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        let ec2 = match self.ec2.at(place).await {
            Ok(ec2) => ec2,
            Err(e) => {
                let ids: Vec<&InstanceId> = starts.keys().collect();
                if let Some((_, (origin, _))) = starts.iter().next() {
                    self.cannot_act(&ids, origin, &e).await;
                }
                outcome.failed = messages_of(starts, messages, |_| true);
                return outcome;
            }
        };
        let ids: Vec<InstanceId> = starts.keys().cloned().collect();
        let (described, activation) = tokio::join!(ec2.describe_many(&ids), self.activation());
        let facts: HashMap<InstanceId, InstanceFacts> = match described {
            Ok(list) => list.into_iter().map(|f| (f.id.clone(), f)).collect(),
            Err(e) => {
                // Throttled past the pace, or EC2 unreachable: hand the whole batch back. Every
                // message comes back after the queue's visibility timeout; failing closed here
                // would stop a hundred instances blind and raise an alert for each.
                error!(error = %e, starts = ids.len(), %place, "describe failed: the batch is handed back");
                self.batch_error(starts, &e).await;
                outcome.failed = messages_of(starts, messages, |_| true);
                return outcome;
            }
        };
        let activation = activation.unwrap_or_else(|detail| {
            error!(%detail, "activation unreadable: deciding only starts of the last ten minutes");
            self.clock.now().minus(ACTIVATION_FALLBACK)
        });
        let work = starts
            .iter()
            .map(|(id, (origin, _))| match facts.get(id) {
                Some(f) => Work::Decide(f.clone(), origin.clone()),
                None => Work::Gone(id.clone()),
            })
            .collect();
        let results = self.guard_gathered(&ec2, work, activation, inv).await;
        let mut back: HashMap<InstanceId, bool> = HashMap::new();
        for (id, result) in results {
            match result {
                Ok(report) => {
                    if report.hand_back {
                        back.insert(id, true);
                    }
                    outcome.reports.push(report);
                }
                Err(e) => {
                    warn!(instance_id = %id, error = %e, "the start is handed back to the queue");
                    back.insert(id, false);
                }
            }
        }
        for (id, (_, ns)) in starts {
            let Some(&soon) = back.get(id) else { continue };
            for &n in ns {
                let Some(m) = messages.get(n) else { continue };
                outcome.failed.push(m.id.clone());
                if soon {
                    outcome.recheck.push(HandBack {
                        id: m.id.clone(),
                        receipt: m.receipt.clone(),
                        after: recheck_after(self.config.recheck_delay, m.receive_count),
                    });
                }
            }
        }
        outcome
    }

    /// Guards many starts at once, each as the single path would, their stops, untags and alerts
    /// gathered (see [`Gathered`]); never waits for a `pending` instance.
    pub(crate) async fn guard_gathered<E2: Ec2>(
        &self,
        ec2: &E2,
        work: Vec<Work>,
        activation: UnixTime,
        inv: &Invocation,
    ) -> Vec<(InstanceId, Result<Report, GuardError>)> {
        let facts: HashMap<InstanceId, InstanceFacts> = work
            .iter()
            .filter_map(|w| match w {
                Work::Decide(f, _) | Work::Finish(f, _, _) => Some((f.id.clone(), f.clone())),
                Work::Gone(_) => None,
            })
            .collect();
        let gathered = Gathered::new(ec2, &self.alerts, &facts, work.len());
        let flow = self.flow_over(&gathered, &gathered, Patience::HandBack);
        let runs = work.into_iter().map(|w| {
            let (flow, gathered) = (&flow, &gathered);
            async move {
                let (id, result) = match w {
                    Work::Decide(f, origin) => (f.id.clone(), flow.guard_facts(f, activation, &origin, inv).await),
                    Work::Finish(f, theirs, origin) => {
                        let id = f.id.clone();
                        let result = match flow.enforce_existing(&f, *theirs, &origin, inv).await {
                            Ok(Existing::Enforced(report)) => Ok(report),
                            Ok(Existing::Withdrawn) => flow.guard_facts(f, activation, &origin, inv).await,
                            Err(e) => Err(e),
                        };
                        (id, result)
                    }
                    Work::Gone(id) => {
                        info!(instance_id = %id, "not described: the instance no longer exists (or not yet)");
                        let report = Report::untouched(&id);
                        (id, Ok(report))
                    }
                };
                gathered.done();
                (id, result)
            }
        });
        let (results, ()) = tokio::join!(futures_util::future::join_all(runs), gathered.drive());
        results
    }

    /// One `guard-error` alert for a batch that could not be described, naming its instances.
    async fn batch_error(&self, starts: &Starts, e: &AwsError) {
        let Some((_, (origin, _))) = starts.iter().next() else {
            return;
        };
        let ids: Vec<&str> = starts.keys().map(InstanceId::as_str).collect();
        let detail = format!(
            "{e}; the {} starts of this batch are handed back to the queue and decided when it \
             delivers them again: {}",
            ids.len(),
            ids.join(" ")
        );
        let alert = about_the_batch(
            origin,
            "guard-error",
            "describe".into(),
            Action::None,
            detail,
        );
        if let Err(e) = self.alerts.publish(&alert).await {
            error!(error = %e, "could not publish a guard-error alert");
        }
    }
}

/// One start for [`Guard::guard_gathered`].
pub(crate) enum Work {
    /// Decide it (or enforce the verdict another invocation recorded).
    Decide(InstanceFacts, Origin),
    /// Finish the verdict it has.
    Finish(InstanceFacts, Box<VerdictRecord>, Origin),
    /// EC2 does not know it.
    Gone(InstanceId),
}

/// The message ids of the starts `pick` chooses.
fn messages_of(
    starts: &Starts,
    messages: &[Message],
    pick: impl Fn(&InstanceId) -> bool,
) -> Vec<String> {
    starts
        .iter()
        .filter(|(id, _)| pick(id))
        .flat_map(|(_, (_, ns))| ns.iter().filter_map(|&n| messages.get(n)))
        .map(|m| m.id.clone())
        .collect()
}

/// One alert summing up the verdicts a batch decided, when it decided more than one: counts by
/// verdict and reason, and the instances. Subscribers who want one message per burst filter on
/// `verdict = summary`; every verdict still has its own alert.
pub fn summary(reports: &[Report], starts: &Starts) -> Option<Alert> {
    let decided: Vec<&Report> = reports
        .iter()
        .filter(|r| r.decided_here && r.verdict != "none")
        .collect();
    if decided.len() < 2 {
        return None;
    }
    let (_, (origin, _)) = starts.iter().next()?;
    let mut counts: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in &decided {
        let key = match &r.reason {
            Some(reason) => format!("{} {reason}", r.verdict),
            None => r.verdict.clone(),
        };
        counts.entry(key).or_default().push(&r.instance_id);
    }
    let denied = decided.iter().filter(|r| r.verdict == "deny").count();
    let detail = counts
        .iter()
        .map(|(k, ids)| format!("{k}: {} ({})", ids.len(), ids.join(" ")))
        .collect::<Vec<_>>()
        .join("; ");
    let action = if denied > 0 {
        Action::Stopped
    } else {
        Action::None
    };
    let reason = format!("{denied} denied of {}", decided.len());
    Some(about_the_batch(origin, "summary", reason, action, detail))
}

/// An alert about a batch as a whole (`instance_id` `batch`), in the place of its first event.
fn about_the_batch(
    origin: &Origin,
    verdict: &str,
    reason: String,
    action: Action,
    detail: String,
) -> Alert {
    Alert {
        schema_version: SCHEMA_VERSION,
        verdict: verdict.to_owned(),
        reason,
        instance_id: "batch".into(),
        instance_name: None,
        account: origin.account.clone(),
        region: origin.region.clone(),
        event_id: origin.event_id.clone(),
        event_time: origin.event_time.clone(),
        launch_time: None,
        action,
        password_short_id: None,
        issuer_user_id: None,
        detail: Some(detail),
        caller: None,
    }
}

/// The calls the starts of one batch make, gathered: each start asks for its stop, untag or
/// alert as on the single path, and waits; when every start still running is waiting (or after
/// [`HOLD`]), [`Gathered::drive`] sends them all as one StopInstances, one DeleteTags per tag
/// value and PublishBatch calls, and hands each start its own answer. A start whose last describe
/// showed it `pending` is answered "not yet" without a call: one pending instance makes a
/// StopInstances of many fail whole.
pub(crate) struct Gathered<'a, E, A> {
    ec2: &'a E,
    alerts: &'a A,
    facts: &'a HashMap<InstanceId, InstanceFacts>,
    queue: Mutex<Queue>,
    changed: Notify,
}

type Answer<T> = oneshot::Sender<T>;

/// A queued DeleteTags: the instance, the key, the value, and where its answer goes.
type Untag = (InstanceId, String, String, Answer<Result<(), AwsError>>);

#[derive(Default)]
struct Queue {
    /// Starts still running.
    live: usize,
    /// How many queued calls each start has.
    waiting: HashMap<String, usize>,
    /// When the oldest queued call was queued.
    since: Option<Instant>,
    stops: Vec<(InstanceId, Answer<Result<(), StopError>>)>,
    untags: Vec<Untag>,
    alerts: Vec<(Alert, Answer<Result<(), AwsError>>)>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.stops.is_empty() && self.untags.is_empty() && self.alerts.is_empty()
    }

    /// Whether a round is due: calls are queued and every running start waits.
    fn ready(&self) -> bool {
        !self.is_empty() && self.waiting.len() >= self.live
    }

    /// The queued calls, leaving the count of running starts.
    fn take(&mut self) -> Self {
        let live = self.live;
        let work = std::mem::take(self);
        self.live = live;
        work
    }

    fn queued(&mut self, who: &str) {
        *self.waiting.entry(who.to_owned()).or_default() += 1;
        self.since.get_or_insert_with(Instant::now);
    }
}

impl<'a, E: Ec2, A: Alerts> Gathered<'a, E, A> {
    fn new(
        ec2: &'a E,
        alerts: &'a A,
        facts: &'a HashMap<InstanceId, InstanceFacts>,
        live: usize,
    ) -> Self {
        Self {
            ec2,
            alerts,
            facts,
            queue: Mutex::new(Queue {
                live,
                ..Queue::default()
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A start has finished.
    fn done(&self) {
        let mut q = self.lock();
        q.live = q.live.saturating_sub(1);
        drop(q);
        self.changed.notify_one();
    }

    /// Queues a call and waits for its answer. The call that completes a round (every running
    /// start now waits) sends it itself, at once: a lone start's stop is issued before whatever it
    /// does alongside (its verdict's write), as on the single path.
    async fn ask<T>(&self, who: &str, queue: impl FnOnce(&mut Queue, Answer<T>)) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let round = {
            let mut q = self.lock();
            queue(&mut q, tx);
            q.queued(who);
            q.ready().then(|| q.take())
        };
        match round {
            Some(work) => self.send(work).await,
            None => self.changed.notify_one(),
        }
        rx.await.ok()
    }

    /// Sends what is queued whenever every running start waits, or the oldest call has waited
    /// [`HOLD`]; returns once every start has finished.
    async fn drive(&self) {
        loop {
            let (ready, since, finished) = {
                let q = self.lock();
                (q.ready(), q.since, q.live == 0 && q.is_empty())
            };
            if finished {
                return;
            }
            if !ready {
                match since {
                    Some(t) => {
                        tokio::select! {
                            () = self.changed.notified() => continue,
                            () = tokio::time::sleep_until(t + HOLD) => {}
                        }
                    }
                    None => {
                        self.changed.notified().await;
                        continue;
                    }
                }
            }
            let work = self.lock().take();
            if !work.is_empty() {
                self.send(work).await;
            }
        }
    }

    /// Sends one round of gathered calls, concurrently, and answers each start.
    async fn send(&self, work: Queue) {
        let Queue {
            stops,
            untags,
            alerts,
            ..
        } = work;
        let stop_ids: Vec<InstanceId> = stops.iter().map(|(id, _)| id.clone()).collect();
        let mut by_value: BTreeMap<(String, String), Vec<InstanceId>> = BTreeMap::new();
        for (id, key, value, _) in &untags {
            by_value
                .entry((key.clone(), value.clone()))
                .or_default()
                .push(id.clone());
        }
        let to_publish: Vec<Alert> = alerts.iter().map(|(a, _)| a.clone()).collect();
        let stopping = async {
            if stop_ids.is_empty() {
                Vec::new()
            } else {
                self.ec2.stop_many(&stop_ids).await
            }
        };
        let untagging =
            futures_util::future::join_all(by_value.iter().map(|((key, value), ids)| async move {
                (
                    (key.clone(), value.clone()),
                    self.ec2.delete_tag_many(ids, key, value).await,
                )
            }));
        let publishing = async {
            if to_publish.is_empty() {
                Vec::new()
            } else {
                self.alerts.publish_many(&to_publish).await
            }
        };
        let (stopped, untagged, published) = tokio::join!(stopping, untagging, publishing);
        let mut stopped: HashMap<InstanceId, Result<(), StopError>> = stopped.into_iter().collect();
        for (id, tx) in stops {
            let answer = stopped.remove(&id).unwrap_or_else(|| {
                Err(StopError::Failed(AwsError::new(
                    "StopInstances",
                    "no answer for this instance",
                )))
            });
            let _ = tx.send(answer);
        }
        let untagged: HashMap<(String, String), Result<(), AwsError>> =
            untagged.into_iter().collect();
        for (_, key, value, tx) in untags {
            let answer = untagged
                .get(&(key, value))
                .cloned()
                .unwrap_or_else(|| Err(AwsError::new("DeleteTags", "no answer")));
            let _ = tx.send(answer);
        }
        let mut published = published.into_iter();
        for (_, tx) in alerts {
            let answer = published
                .next()
                .unwrap_or_else(|| Err(AwsError::new("PublishBatch", "no answer")));
            let _ = tx.send(answer);
        }
    }
}

impl<E: Ec2, A: Alerts> Ec2 for Gathered<'_, E, A> {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceFacts>, AwsError> {
        self.ec2.describe(id).await
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), StopError> {
        if self.facts.get(id).is_some_and(|f| f.state == "pending") {
            return Err(StopError::NotYet);
        }
        let id = id.clone();
        self.ask(id.as_str(), |q, tx| q.stops.push((id.clone(), tx)))
            .await
            .unwrap_or_else(|| Err(StopError::Failed(AwsError::new("StopInstances", "dropped"))))
    }

    async fn terminate(&self, id: &InstanceId) -> Result<(), StopError> {
        self.ec2.terminate(id).await
    }

    async fn clear_stop_protection(&self, id: &InstanceId) -> Result<(), AwsError> {
        self.ec2.clear_stop_protection(id).await
    }

    async fn clear_termination_protection(&self, id: &InstanceId) -> Result<(), AwsError> {
        self.ec2.clear_termination_protection(id).await
    }

    async fn delete_tag(&self, id: &InstanceId, key: &str, value: &str) -> Result<(), AwsError> {
        let id = id.clone();
        self.ask(id.as_str(), |q, tx| {
            q.untags
                .push((id.clone(), key.to_owned(), value.to_owned(), tx));
        })
        .await
        .unwrap_or_else(|| Err(AwsError::new("DeleteTags", "dropped")))
    }

    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        self.ec2.active_instances().await
    }
}

impl<E: Ec2, A: Alerts> Alerts for Gathered<'_, E, A> {
    async fn publish(&self, alert: &Alert) -> Result<(), AwsError> {
        let alert = alert.clone();
        let who = alert.instance_id.clone();
        self.ask(&who, |q, tx| q.alerts.push((alert, tx)))
            .await
            .unwrap_or_else(|| Err(AwsError::new("Publish", "dropped")))
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
