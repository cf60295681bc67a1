//! The sweep: every start still going, held against its verdict, at the scale of a fleet.
//!
//! list every `pending` and `running` instance (DescribeInstances by state filter, 1,000 a page)
//! → keep the starts since activation and within the window → their verdicts (BatchGetItem, 100
//! keys a request, [`VERDICT_READS`] requests at once) → what needs work: a start with no verdict
//! (its events were lost) or a verdict left unfinished (a deny still up, an alert still owed, an
//! exemption whose reason went away) → done [`ROUND`] starts at a time, exactly as a batch from
//! the queue is ([`crate::batch`]) → owed alerts of instances no longer running. A hub's guard
//! does this for every member account and region ([`crate::fleet::Fleet::places`]),
//! [`PLACES_AT_ONCE`] at a time, each with its own EC2, starting one place further on each
//! schedule, and announces an owed alert where its start happened.
//!
//! Resumable across runs: the sweep stops between rounds when the invocation's time runs short.
//! What it did not reach still has no verdict, or is still unfinished, so the next sweep finds it
//! again; what it did reach is finished and is skipped. Nothing is kept between runs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ec2pass_shared::store::{AlertStore, CallerLookup, ConsumeStore, PasswordLookup, VerdictStore};
use ec2pass_shared::time::{Clock, UnixTime};
use ec2pass_shared::verdict::{Cycle, VerdictRecord};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::alerts::Alerts;
use crate::batch::Work;
use crate::ec2::{Ec2, InstanceFacts};
use crate::event::Origin;
use crate::fleet::Fleet;
use crate::guard::{Guard, GuardError, Invocation, Patience, Report, sweep_failed};

/// How many starts one round decides or finishes.
pub const ROUND: usize = 100;

/// Time a round needs, at least, before the invocation's deadline: describe and stop paced
/// under throttling, and the alerts.
pub const ROUND_BUDGET: Duration = Duration::from_secs(5);

/// How many BatchGetItem requests run at once.
pub const VERDICT_READS: usize = 4;

/// How many places (account × region) a hub's sweep lists and decides at once.
pub const PLACES_AT_ONCE: usize = 8;

/// How many owed alerts one sweep takes over at most (the rest wait for the next sweep).
pub const SWEEP_ALERTS: usize = 100;

impl<S, E, A, C> Guard<S, E, A, C>
where
    S: ConsumeStore + VerdictStore + AlertStore + PasswordLookup + CallerLookup,
    E: Fleet,
    A: Alerts,
    C: Clock,
{
    /// The sweep (see the module's doc): every place in turn, then the owed alerts.
    pub(crate) async fn sweep(
        &self,
        activation: UnixTime,
        origin: &Origin,
        inv: &Invocation,
    ) -> Result<Vec<Report>, GuardError> {
        let now = self.clock.now();
        let mut reports = Vec::new();
        let mut first_error = None;
        let mut seen = HashSet::new();
        let (mut places, stale) = self.ec2.places(&origin.place()).await;
        // The Organization could not be read: the last members known are swept, and someone
        // is told (an account that joined meanwhile is not swept until it is read).
        if let Some(problem) = stale {
            let _ = sweep_failed(&self.alerts, origin, "organizations", problem).await;
        }
        // Each schedule starts one place further on, so that a sweep cut short by its deadline
        // does not leave the same places to the end every time.
        if !places.is_empty() {
            let turn = usize::try_from(now.0.div_euclid(60)).unwrap_or(0) % places.len();
            places.rotate_left(turn);
        }
        let count = places.len();
        for (n, group) in places.chunks(PLACES_AT_ONCE).enumerate() {
            if Instant::now() + ROUND_BUDGET > inv.deadline {
                warn!(
                    left = count - n * PLACES_AT_ONCE,
                    "sweep: out of time; the next sweep takes up the other places"
                );
                break;
            }
            // Places are independent (EC2 throttles each account and region on its own): a
            // few at once.
            let swept = futures_util::future::join_all(group.iter().map(|place| async move {
                // The alerts of a place's starts name that place.
                let here = Origin {
                    account: place.account.clone(),
                    region: place.region.clone(),
                    ..origin.clone()
                };
                match self.ec2.at(place).await {
                    Ok(ec2) => self.sweep_place(&ec2, activation, &here, inv, now).await,
                    Err(e) => (Err(self.cannot_act(&[], &here, &e).await), HashSet::new()),
                }
            }))
            .await;
            for (result, listed) in swept {
                seen.extend(listed);
                match result {
                    Ok(done) => reports.extend(done),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match self.store.due_alerts(now, SWEEP_ALERTS).await {
            Ok(due) => {
                for theirs in due {
                    if seen.contains(&theirs.cycle.verdict_key()) {
                        continue;
                    }
                    // Announced where the start happened (a verdict recorded before hubs
                    // names no place: where the sweep runs).
                    let place = theirs.place.clone().unwrap_or_else(|| origin.place());
                    let announced = match self.ec2.at(&place).await {
                        Ok(ec2) => {
                            self.flow_over(&ec2, &self.alerts, Patience::HandBack)
                                .announce_owed(theirs, origin, inv)
                                .await
                        }
                        Err(e) => Err(self.cannot_act(&[&theirs.cycle.instance], origin, &e).await),
                    };
                    match announced {
                        Ok(report) => reports.push(report),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert(
                    sweep_failed(&self.alerts, origin, "alert-lookup", e.to_string()).await,
                );
            }
        }
        info!(
            finished = reports.len(),
            places = places.len(),
            "sweep done"
        );
        first_error.map_or(Ok(reports), Err)
    }

    /// One place: list its active instances → keep the starts the guard may decide → their
    /// verdicts → decide or finish what needs it, [`ROUND`] at a time, while time lasts. Also
    /// gives the verdict keys it listed.
    async fn sweep_place<E2: Ec2>(
        &self,
        ec2: &E2,
        activation: UnixTime,
        origin: &Origin,
        inv: &Invocation,
        now: UnixTime,
    ) -> (Result<Vec<Report>, GuardError>, HashSet<String>) {
        let flow = self.flow_over(ec2, &self.alerts, Patience::HandBack);
        let instances = match ec2.active_instances().await {
            Ok(list) => list,
            Err(e) => {
                let failed = flow.sweep_failed(origin, "list", e.to_string()).await;
                return (Err(failed), HashSet::new());
            }
        };
        let oldest = now.minus(self.config.sweep_window);
        let candidates: Vec<(InstanceFacts, Cycle)> = instances
            .into_iter()
            .filter_map(|f| {
                let cycle = f.cycle()?;
                // Before the guard, or too old to decide: never touched (see `old_start`).
                (cycle.launch_time > activation && cycle.launch_time >= oldest)
                    .then_some((f, cycle))
            })
            .collect();
        let verdicts = match self.read_verdicts(&candidates).await {
            Ok(v) => v,
            Err(detail) => {
                let failed = flow.sweep_failed(origin, "verdict-lookup", detail).await;
                return (Err(failed), HashSet::new());
            }
        };
        let seen: HashSet<String> = candidates.iter().map(|(_, c)| c.verdict_key()).collect();
        let listed = candidates.len();
        let mut work = Vec::new();
        for (facts, cycle) in candidates {
            match verdicts.get(&cycle.verdict_key()) {
                Some(theirs) if flow.unfinished(theirs, &facts, now, inv) => {
                    work.push(Work::Finish(
                        facts,
                        Box::new(theirs.clone()),
                        origin.clone(),
                    ));
                }
                Some(_) => {}
                None => work.push(Work::Decide(facts, origin.clone())),
            }
        }
        info!(
            listed,
            to_do = work.len(),
            account = %origin.account,
            region = %origin.region,
            "sweep: starts without a verdict or with one unfinished"
        );
        let mut reports = Vec::new();
        let mut first_error = None;
        let mut rounds = Vec::new();
        while !work.is_empty() {
            let rest = work.split_off(work.len().min(ROUND));
            rounds.push(std::mem::replace(&mut work, rest));
        }
        let mut left = rounds.iter().map(Vec::len).sum::<usize>();
        for round in rounds {
            if Instant::now() + ROUND_BUDGET > inv.deadline {
                warn!(left, "sweep: out of time; the next sweep takes up the rest");
                break;
            }
            left -= round.len();
            for (_, result) in self.guard_gathered(ec2, round, activation, inv).await {
                match result {
                    Ok(report) => reports.push(report),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        // What it listed is its own even when a round failed: the owed alerts are not taken
        // over again in the same sweep (Lambda's retry of the failed sweep does that).
        (first_error.map_or(Ok(reports), Err), seen)
    }

    /// The verdicts of these starts, [`VERDICT_READS`] BatchGetItem requests at a time.
    async fn read_verdicts(
        &self,
        candidates: &[(InstanceFacts, Cycle)],
    ) -> Result<HashMap<String, VerdictRecord>, String> {
        let cycles: Vec<Cycle> = candidates.iter().map(|(_, c)| c.clone()).collect();
        let share = cycles.len().div_ceil(VERDICT_READS).max(100);
        let reads = cycles
            .chunks(share)
            .map(|chunk| VerdictStore::verdicts(&self.store, chunk));
        let mut all = HashMap::new();
        for part in futures_util::future::join_all(reads).await {
            all.extend(part.map_err(|e| e.to_string())?);
        }
        Ok(all)
    }
}
