//! The scenarios, run in virtual time against either design, and their figures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ec2pass_shared::config::{Env, GuardConfig};
use ec2pass_shared::ids::{InstanceId, Owner};
use ec2pass_shared::org::Place;
use ec2pass_shared::password::{Password, new_short_id};
use ec2pass_shared::store::{PasswordRecord, VerdictStore};
use ec2pass_shared::time::UnixTime;
use ec2pass_shared::verdict::{Cycle, Verdict, VerdictRecord};
use guard::ec2::{Ec2, Ec2Client};
use guard::fleet::{Fleet, MemberRoles};
use guard::guard::Guard;
use guard::pace::Paced;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::aws::{Sts, Table, Topic, VirtualClock};
use super::bucket::Key;
use super::ec2::{
    ACCOUNT, ApiCount, Ec2Model, Latency, Logged, Members, REGION, client, hub_config,
};
use super::lambda::{self, AsyncQueue, Invocations, QUEUE_CONCURRENCY, RESERVED_CONCURRENCY, Sqs};
use crate::Deterministic;
use crate::org::member_state_change;

/// Wall-clock second at the burst's start (2026-11-21T10:00:00Z).
pub const EPOCH: UnixTime = UnixTime(1_795_255_200);
/// The guard's activation: twelve hours before the burst (every instance of a scenario is
/// launched after it).
pub const ACTIVATION: UnixTime = UnixTime(EPOCH.0 - 12 * 3600);
/// How long a burst is followed at most, from its start.
pub const HORIZON: Duration = Duration::from_secs(15 * 60);
/// `pending` lasts this long at least …
pub const PENDING_MIN: Duration = Duration::from_secs(5);
/// … and at most (each instance draws its own, uniformly, from a seeded sequence).
pub const PENDING_MAX: Duration = Duration::from_secs(20);
/// EventBridge delivers each state change this long after it happens, at least …
pub const DELIVERY_MIN: Duration = Duration::from_millis(500);
/// … and at most (assumption; drawn per event).
pub const DELIVERY_MAX: Duration = Duration::from_millis(1000);
/// The schedule's sweep interval (`SweepSchedule`, rate(5 minutes)).
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// Most sweep runs a sweep scenario waits for.
pub const MAX_SWEEP_RUNS: usize = 12;

/// The attacker's own calls, each a little faster than its bucket refills (so that bucket stays
/// empty while the attack lasts): the API, the bucket, requests a second.
pub const ATTACK: [(&str, Key, f64); 4] = [
    ("DescribeInstances", Key::DescribeInstances, 30.0),
    ("DescribeInstances", Key::DescribeInstancesUnfiltered, 12.0),
    ("StopInstances", Key::StopInstances, 6.0),
    ("DeleteTags", Key::DeleteTags, 12.0),
];

/// Which design handles the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Design {
    /// One asynchronous invocation per EventBridge event, the plain `Ec2Client` (before issue 11).
    Baseline,
    /// EventBridge → SQS → `handle_batch`, `Paced(Ec2Client)`, as `guard/src/main.rs` wires it.
    Batched,
}

impl Design {
    /// Both, baseline first.
    pub const BOTH: [Design; 2] = [Design::Baseline, Design::Batched];

    /// Its short name.
    pub fn name(self) -> &'static str {
        match self {
            Design::Baseline => "baseline",
            Design::Batched => "batched",
        }
    }
}

/// What happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Scenario {
    /// `instances` launched at once, `legitimate` of them with a valid password each; with or
    /// without the attacker spending the buckets meanwhile.
    Burst {
        /// How many.
        instances: usize,
        /// Of those, started with a password.
        legitimate: usize,
        /// Whether the attacker makes its own calls ([`ATTACK`]).
        attacker: bool,
    },
    /// A burst in each of `accounts` member accounts at once (the same region), guarded by the
    /// hub through each account's member role (issue 12): `instances` unauthorized launches in
    /// each, with or without the attacker spending the first account's buckets meanwhile. The
    /// hub is batched only: [`Design::Baseline`] is not a hub, and a run of it is refused.
    Accounts {
        /// How many member accounts.
        accounts: usize,
        /// Launches in each.
        instances: usize,
        /// Whether the attacker makes its own calls in the first account ([`ATTACK`]).
        attacker: bool,
    },
    /// `instances` running (launched two hours before, after the activation), all with a
    /// verdict but `undecided` of them (lost events); the schedule's sweep until those are
    /// decided.
    Sweep {
        /// How many are running.
        instances: usize,
        /// Of those, without a verdict.
        undecided: usize,
    },
}

impl Scenario {
    /// The scenarios: 1,000 launches; the same with the attacker; 50 legitimate among 1,000;
    /// 1,000 in each of two accounts at once, without and with the attacker in one (issue 12);
    /// a sweep of 10,000 all decided, and with 1,000 lost events.
    pub fn all() -> Vec<(&'static str, Scenario)> {
        vec![
            ("burst", Self::burst(1000)),
            (
                "burst+attacker",
                Scenario::Burst {
                    instances: 1000,
                    legitimate: 0,
                    attacker: true,
                },
            ),
            (
                "burst+50 legitimate",
                Scenario::Burst {
                    instances: 1000,
                    legitimate: 50,
                    attacker: false,
                },
            ),
            (
                "2 accounts x 1,000",
                Scenario::Accounts {
                    accounts: 2,
                    instances: 1000,
                    attacker: false,
                },
            ),
            (
                "2 accounts x 1,000, the attacker in the first",
                Scenario::Accounts {
                    accounts: 2,
                    instances: 1000,
                    attacker: true,
                },
            ),
            (
                "sweep 10,000",
                Scenario::Sweep {
                    instances: 10_000,
                    undecided: 0,
                },
            ),
            (
                "sweep 10,000, 1,000 lost",
                Scenario::Sweep {
                    instances: 10_000,
                    undecided: 1000,
                },
            ),
        ]
    }

    /// `instances` unauthorized launches, no attacker.
    pub fn burst(instances: usize) -> Self {
        Scenario::Burst {
            instances,
            legitimate: 0,
            attacker: false,
        }
    }
}

/// The figures of one scenario in one design.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// The scenario's name.
    pub scenario: String,
    /// `baseline` or `batched`.
    pub design: &'static str,
    /// Instances in the scenario.
    pub instances: usize,
    /// Of those, started with a valid password (or, in a sweep, allowed before).
    pub authorized: usize,
    /// The guard's EC2 requests (every HTTP request, throttled or not).
    pub ec2_requests: u64,
    /// Of those, throttled (`RequestLimitExceeded`).
    pub ec2_throttled: u64,
    /// Of those, refused otherwise (`IncorrectInstanceState`, …).
    pub ec2_refused: u64,
    /// The same by API.
    pub ec2_by_api: BTreeMap<String, ApiCount>,
    /// The attacker's requests by API.
    pub attacker: BTreeMap<String, ApiCount>,
    /// Guard invocations (batches, or events; Lambda's retries included).
    pub invocations: u64,
    /// Of those, returned an error.
    pub invocation_errors: u64,
    /// Of those, killed at the 30 s timeout.
    pub invocation_timeouts: u64,
    /// Longest invocation, s.
    pub longest_invocation_s: f64,
    /// Events in the failure queue (baseline: after Lambda's retries; batched: the queue's
    /// dead-letter queue).
    pub failure_queue: usize,
    /// `guard-error` alerts.
    pub guard_error_alerts: usize,
    /// `deny` alerts.
    pub deny_alerts: usize,
    /// Deny verdicts.
    pub deny_verdicts: usize,
    /// Allow verdicts.
    pub allow_verdicts: usize,
    /// `summary` alerts (batches that decided more than one start).
    pub summary_alerts: usize,
    /// Fewest and most `deny` alerts of one denied start.
    pub alerts_per_deny: (usize, usize),
    /// Most verdicts created for one start cycle.
    pub verdicts_per_cycle_max: usize,
    /// SNS Publish calls.
    pub publish_calls: u64,
    /// SNS PublishBatch calls.
    pub publish_batch_calls: u64,
    /// DynamoDB calls.
    pub dynamodb_calls: u64,
    /// ChangeMessageVisibilityBatch calls the guard's rechecks cost (batched design).
    pub visibility_calls: u64,
    /// SQS receives (a message received twice counts twice; batched design).
    pub messages_received: u64,
    /// Authorized instances stopped or terminated.
    pub authorized_stopped: usize,
    /// Unauthorized instances stopped or terminated.
    pub unauthorized_stopped: usize,
    /// Unauthorized instances: median seconds from reaching `running` to the accepted stop.
    pub stop_after_running_median_s: Option<f64>,
    /// … and the most.
    pub stop_after_running_max_s: Option<f64>,
    /// The last stop, seconds from the scenario's start.
    pub last_stop_s: Option<f64>,
    /// The last verdict created, seconds from the scenario's start.
    pub last_verdict_s: Option<f64>,
    /// Unauthorized instances still running (or pending) at the end.
    pub still_running: usize,
    /// Virtual seconds the run lasted.
    pub ended_s: f64,
    /// Whether it ended because everything was done (rather than at the horizon).
    pub quiet: bool,
    /// Sweep runs (schedule invocations and their retries), and each one's duration, s.
    pub sweep_runs_s: Vec<f64>,
    /// Undecided starts the scenario began with, and how many of them have a verdict now.
    pub undecided: (usize, usize),
    /// Real seconds the simulation took.
    pub wall_s: f64,
    /// Requests the model could not answer faithfully (should be empty).
    pub unsupported: Vec<String>,
    /// A hub's run: the same figures for each member account, by account id. Its instances,
    /// EC2 requests, verdicts, alerts and stops are that account's; invocations, the failure
    /// queue, DynamoDB, SNS and SQS counts are the run's, shared.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_account: BTreeMap<String, Figures>,
    /// STS AssumeRole calls (a hub's run).
    pub assume_role_calls: u64,
    /// Every EC2 request of the guard (for looking into a run; not in the JSON).
    #[serde(skip)]
    pub requests: Vec<Logged>,
    /// Each instance: id, virtual seconds when it reached `running` and when it was stopped
    /// (for looking into a run; not in the JSON).
    #[serde(skip)]
    pub timeline: Vec<(String, f64, Option<f64>)>,
}

impl Figures {
    /// The acceptance for a burst (SPEC §8): every unauthorized instance stopped within
    /// 5 s of reaching `running`, the last within 30 s of the start, at most 300 EC2 requests,
    /// nothing in the failure queue, no authorized instance stopped, one verdict per cycle and one
    /// alert per deny. The figures that miss it.
    pub fn misses(&self) -> Vec<String> {
        let mut misses = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                misses.push(what);
            }
        };
        let unauthorized = self.instances - self.authorized;
        check(
            self.unauthorized_stopped == unauthorized && self.still_running == 0,
            format!(
                "{} of {unauthorized} unauthorized instances stopped, {} still running",
                self.unauthorized_stopped, self.still_running
            ),
        );
        check(
            self.stop_after_running_max_s.is_some_and(|s| s <= 5.0),
            format!(
                "slowest stop {:?} s after running (at most 5)",
                self.stop_after_running_max_s
            ),
        );
        check(
            self.last_stop_s.is_some_and(|s| s <= 30.0),
            format!("last stop at {:?} s (at most 30)", self.last_stop_s),
        );
        check(
            self.ec2_requests <= 300,
            format!("{} EC2 requests (at most 300)", self.ec2_requests),
        );
        check(
            self.failure_queue == 0,
            format!("{} events in the failure queue", self.failure_queue),
        );
        check(
            self.authorized_stopped == 0,
            format!("{} authorized instances stopped", self.authorized_stopped),
        );
        check(
            self.verdicts_per_cycle_max <= 1,
            format!("{} verdicts for one cycle", self.verdicts_per_cycle_max),
        );
        check(
            self.deny_alerts == self.deny_verdicts
                && (self.deny_verdicts == 0 || self.alerts_per_deny == (1, 1)),
            format!(
                "{} deny alerts for {} denies ({:?} per deny)",
                self.deny_alerts, self.deny_verdicts, self.alerts_per_deny
            ),
        );
        misses
    }

    /// One line of the key figures.
    pub fn line(&self) -> String {
        let s = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.1}"));
        format!(
            "{} {}: {} EC2 requests ({} throttled), {} invocations, {} in the failure queue, \
             {} guard-error alerts, {} deny alerts / {} denies, {} authorized stopped, stopped \
             {} s (median) / {} s (max) after running, last at {} s, {} still running",
            self.scenario,
            self.design,
            self.ec2_requests,
            self.ec2_throttled,
            self.invocations,
            self.failure_queue,
            self.guard_error_alerts,
            self.deny_alerts,
            self.deny_verdicts,
            self.authorized_stopped,
            s(self.stop_after_running_median_s),
            s(self.stop_after_running_max_s),
            s(self.last_stop_s),
            self.still_running
        )
    }
}

/// Runs one scenario in one design, in virtual time, on a thread of its own (a current-thread
/// runtime with time paused; the guard's logs go nowhere). `seed` fixes the fleet (pending
/// times, delivery delays) and the SDK's retry jitter.
pub fn run(name: &str, scenario: &Scenario, design: Design, seed: u64) -> Figures {
    let (name, scenario) = (name.to_owned(), scenario.clone());
    let wall = std::time::Instant::now();
    let thread = std::thread::Builder::new()
        .name(format!("burst-model-{}", design.name()))
        .spawn(move || {
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap_or_else(|e| panic!("a runtime for the burst model: {e}"));
            runtime.block_on(async move {
                fastrand::seed(seed);
                match scenario {
                    Scenario::Burst {
                        instances,
                        legitimate,
                        attacker,
                    } => {
                        let w = World::new(&name, design, None);
                        burst(w, instances, legitimate, attacker, seed).await
                    }
                    Scenario::Accounts { .. } if design == Design::Baseline => Figures {
                        scenario: name,
                        design: design.name(),
                        unsupported: vec!["the hub's guard is batched: no baseline".into()],
                        ..Figures::default()
                    },
                    Scenario::Accounts {
                        accounts,
                        instances,
                        attacker,
                    } => {
                        let w = World::new(&name, design, Some(accounts));
                        burst(w, instances, 0, attacker, seed).await
                    }
                    Scenario::Sweep {
                        instances,
                        undecided,
                    } => sweep(&name, design, instances, undecided).await,
                }
            })
        })
        .unwrap_or_else(|e| panic!("a thread for the burst model: {e}"));
    let mut figures = thread
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    figures.wall_s = round(wall.elapsed().as_secs_f64());
    figures
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The guard's configuration: the design's, and a hub's for `members` (alias, account).
fn config(design: Design, members: &[(String, Place)]) -> GuardConfig {
    let mut vars: Vec<(&str, String)> = vec![
        ("EC2PASS_TABLE", "ec2pass-model".into()),
        (
            "EC2PASS_ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:ec2pass-alerts".into(),
        ),
    ];
    if design == Design::Batched {
        vars.push((
            "EC2PASS_STATE_CHANGE_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/ec2pass-state-changes".into(),
        ));
    }
    if !members.is_empty() {
        let accounts: Vec<String> = members
            .iter()
            .map(|(alias, p)| format!("{alias}={}", p.account))
            .collect();
        vars.push(("EC2PASS_MEMBER_ROLE", "ec2pass-member".into()));
        vars.push(("EC2PASS_ACCOUNTS", accounts.join(",")));
        vars.push(("EC2PASS_REGIONS", REGION.into()));
    }
    GuardConfig::from_env(&Env::from_fn(|k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }))
    .unwrap_or_else(|e| panic!("the model's guard configuration: {e}"))
}

/// The `n`th member account of a hub's run: `member-<n>`, `1111…`, `2222…`, …
fn member(n: usize) -> (String, Place) {
    let digit = char::from(b'1' + u8::try_from(n % 9).unwrap_or(0));
    (
        format!("member-{}", n + 1),
        Place::new(digit.to_string().repeat(12), REGION),
    )
}

/// Everything one run shares.
struct World {
    name: String,
    design: Design,
    /// Each place's EC2: the one account's, or each member account's in a hub's run.
    places: Vec<(Place, Arc<Ec2Model>)>,
    /// A hub's run: its member accounts (alias, place).
    members: Vec<(String, Place)>,
    /// STS, for a hub's run.
    sts: Sts,
    table: Table,
    topic: Topic,
    clock: VirtualClock,
    run: u64,
    /// Lambda's asynchronous invocations: every event in the baseline, the schedule's sweeps in
    /// both designs.
    lambda: AsyncQueue,
    /// The state-change queue (batched design).
    sqs: Sqs,
}

/// How a run ended: quiet or not, its invocations, the failure queue, SQS's counts.
type Served = (bool, Invocations, usize, (u64, u64, u64));

impl World {
    /// One account's run, or with `accounts` a hub's with that many member accounts.
    fn new(name: &str, design: Design, accounts: Option<usize>) -> Self {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let members: Vec<(String, Place)> = (0..accounts.unwrap_or(0)).map(member).collect();
        let places: Vec<(Place, Arc<Ec2Model>)> = if members.is_empty() {
            let model = Ec2Model::new(EPOCH, Latency::default());
            vec![(Place::new(ACCOUNT, REGION), Arc::new(model))]
        } else {
            (0u16..)
                .zip(&members)
                .map(|(n, (_, place))| {
                    let model = Ec2Model::numbered(EPOCH, Latency::default(), n + 1);
                    (place.clone(), Arc::new(model))
                })
                .collect()
        };
        let clock = VirtualClock {
            epoch: EPOCH,
            start: places[0].1.start,
        };
        Self {
            name: name.to_owned(),
            design,
            places,
            members,
            sts: Sts::default(),
            table: Table::activated_at(ACTIVATION),
            topic: Topic::default(),
            clock,
            run: RUNS.fetch_add(1, Ordering::Relaxed),
            lambda: AsyncQueue::default(),
            sqs: Sqs::default(),
        }
    }

    /// The first (or only) place's EC2.
    fn model(&self) -> &Arc<Ec2Model> {
        &self.places[0].1
    }

    /// The SDK keeps retry quotas per partition name for the whole process: a name per run and
    /// environment gives each environment its own, as each is its own process in Lambda.
    fn quota(&self, env: usize) -> String {
        format!("ec2-model-{}-{}-env{env}", self.run, self.design.name())
    }

    /// An execution environment's guard, with its own SDK client and retry quota.
    fn guard<E: Ec2>(
        &self,
        env: usize,
        wrap: impl Fn(Ec2Client) -> E,
    ) -> Guard<Table, E, Topic, VirtualClock> {
        Guard::new(
            config(self.design, &[]),
            self.table.clone(),
            wrap(Ec2Client::new(client(self.model(), &self.quota(env)))),
            self.topic.clone(),
            self.clock,
        )
    }

    /// A hub's execution environment's guard, wired as `guard/src/main.rs` wires it: the member
    /// roles through STS, a client per account on that account's EC2, each with its own quota.
    fn hub_guard(&self, env: usize) -> Guard<Table, MemberRoles<Sts>, Topic, VirtualClock> {
        let config = config(self.design, &self.members);
        let hub = config
            .hub
            .clone()
            .unwrap_or_else(|| panic!("the model's hub configuration names no members"));
        let routes = self
            .places
            .iter()
            .map(|(p, m)| (p.account.clone(), p.region.clone(), m.clone()))
            .collect();
        let base = hub_config(Members(Arc::new(routes)), REGION);
        let fleet = MemberRoles::new(hub, self.sts.clone(), base).with_retry_quota(self.quota(env));
        Guard::new(
            config,
            self.table.clone(),
            fleet,
            self.topic.clone(),
            self.clock,
        )
    }

    /// Runs the design's execution environments on the state changes `events` until they are
    /// all delivered, every queue is idle and `done`, or until `horizon`; with `extra` (the
    /// attacker, the schedule) alongside.
    async fn serve(
        &self,
        events: Vec<(Instant, Value)>,
        extra: impl std::future::Future<Output = ()>,
        done: impl Fn() -> bool,
        horizon: Instant,
    ) -> Served {
        let delivered = AtomicBool::new(false);
        let deliver = async {
            lambda::deliver(events, |p| match self.design {
                Design::Baseline => self.lambda.send(p),
                Design::Batched => self.sqs.send(p.to_string()),
            })
            .await;
            delivered.store(true, Ordering::SeqCst);
        };
        let idle = || {
            delivered.load(Ordering::SeqCst)
                && self.lambda.is_idle()
                && self.sqs.is_idle()
                && done()
        };
        let every = Duration::from_millis(250);
        match self.design {
            Design::Baseline => {
                let guards: Vec<_> = (0..RESERVED_CONCURRENCY)
                    .map(|k| self.guard(k, |c| c))
                    .collect();
                let names: Vec<String> = (0..guards.len()).map(|k| format!("env{k}")).collect();
                let envs = futures_util::future::join_all(
                    guards
                        .iter()
                        .zip(&names)
                        .map(|(g, n)| self.lambda.serve(g, n)),
                );
                let work = async {
                    tokio::join!(envs, deliver, extra);
                };
                let quiet = lambda::until(work, idle, every, horizon).await;
                (
                    quiet,
                    self.lambda.invocations(),
                    self.lambda.failed().len(),
                    (0, 0, 0),
                )
            }
            Design::Batched if self.members.is_empty() => {
                let work = self.batched(|k| self.guard(k, Paced), deliver, extra);
                let quiet = lambda::until(work, idle, every, horizon).await;
                self.batched_served(quiet)
            }
            Design::Batched => {
                let work = self.batched(|k| self.hub_guard(k), deliver, extra);
                let quiet = lambda::until(work, idle, every, horizon).await;
                self.batched_served(quiet)
            }
        }
    }

    /// The batched design's work: the queue's execution environments, and the schedule's
    /// sweeper (which still arrives by schedule, straight to the function), each a guard from
    /// `guard`; with `deliver` and `extra` alongside.
    async fn batched<F: Fleet>(
        &self,
        guard: impl Fn(usize) -> Guard<Table, F, Topic, VirtualClock>,
        deliver: impl std::future::Future<Output = ()>,
        extra: impl std::future::Future<Output = ()>,
    ) {
        let guards: Vec<_> = (0..QUEUE_CONCURRENCY).map(&guard).collect();
        let sweeper = guard(QUEUE_CONCURRENCY);
        let names: Vec<String> = (0..guards.len()).map(|k| format!("env{k}")).collect();
        let envs = futures_util::future::join_all(
            guards.iter().zip(&names).map(|(g, n)| self.sqs.serve(g, n)),
        );
        tokio::join!(envs, self.lambda.serve(&sweeper, "sweeper"), deliver, extra);
    }

    fn batched_served(&self, quiet: bool) -> Served {
        let mut invocations = self.sqs.invocations();
        invocations.add(&self.lambda.invocations());
        (
            quiet,
            invocations,
            self.sqs.dead().len() + self.lambda.failed().len(),
            self.sqs.counts(),
        )
    }

    /// The run's figures; a hub's also for each member account.
    fn figures(
        &self,
        quiet: bool,
        invocations: &Invocations,
        failure_queue: usize,
        sqs: (u64, u64, u64),
    ) -> Figures {
        let served = (quiet, invocations, failure_queue, sqs);
        let mut f = self.figures_of(&self.places, None, served);
        if !self.members.is_empty() {
            f.by_account = self
                .places
                .iter()
                .map(|p| {
                    let account = &p.0.account;
                    let one = self.figures_of(std::slice::from_ref(p), Some(account), served);
                    (account.clone(), one)
                })
                .collect();
            f.assume_role_calls = self.sts.calls();
        }
        f
    }

    /// The figures of `places`; with `account`, only the alerts that name it.
    fn figures_of(
        &self,
        places: &[(Place, Arc<Ec2Model>)],
        account: Option<&str>,
        (quiet, invocations, failure_queue, sqs): (bool, &Invocations, usize, (u64, u64, u64)),
    ) -> Figures {
        let now = Instant::now();
        let m = self.model();
        let instances: Vec<_> = places.iter().flat_map(|(_, m)| m.instances()).collect();
        let ids: BTreeSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
        let merge = |counts: Vec<BTreeMap<String, ApiCount>>| {
            let mut all: BTreeMap<String, ApiCount> = BTreeMap::new();
            for (api, c) in counts.into_iter().flatten() {
                let sum = all.entry(api).or_default();
                sum.requests += c.requests;
                sum.throttled += c.throttled;
                sum.refused += c.refused;
            }
            all
        };
        let by_api = merge(places.iter().map(|(_, m)| m.guard_counts()).collect());
        let attacker = merge(places.iter().map(|(_, m)| m.attacker_counts()).collect());
        let alerts: Vec<_> = self
            .topic
            .alerts()
            .into_iter()
            .filter(|a| account.is_none_or(|id| a.account == id))
            .collect();
        let verdicts: Vec<_> = self
            .table
            .verdicts()
            .into_iter()
            .filter(|v| ids.contains(v.cycle.instance.as_str()))
            .collect();
        let created: HashMap<String, Vec<Instant>> = self
            .table
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .created
            .iter()
            .filter(|(key, _)| ids.iter().any(|id| key.contains(id)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let denied: BTreeSet<String> = verdicts
            .iter()
            .filter(|v| matches!(v.verdict, Verdict::Deny(_)))
            .map(|v| v.cycle.instance.to_string())
            .collect();
        let mut deny_alerts: HashMap<&str, usize> = HashMap::new();
        for a in alerts.iter().filter(|a| a.verdict == "deny") {
            *deny_alerts.entry(a.instance_id.as_str()).or_default() += 1;
        }
        let per_deny: Vec<usize> = denied
            .iter()
            .map(|id| deny_alerts.get(id.as_str()).copied().unwrap_or(0))
            .collect();
        let down = |i: &super::ec2::Instance| i.stopped_at.or(i.terminated_at);
        let unauthorized: Vec<_> = instances.iter().filter(|i| !i.authorized).collect();
        let mut delays: Vec<f64> = unauthorized
            .iter()
            .filter_map(|i| {
                down(i).map(|t| t.saturating_duration_since(i.running_at).as_secs_f64())
            })
            .collect();
        delays.sort_by(f64::total_cmp);
        let median = (!delays.is_empty()).then(|| delays[delays.len() / 2]);
        let last_stop = instances
            .iter()
            .filter_map(down)
            .max()
            .map(|t| round(m.secs(t)));
        let last_verdict = created.values().flatten().max().map(|&t| round(m.secs(t)));
        let (publish_calls, publish_batch_calls) = self.topic.calls();
        Figures {
            scenario: self.name.clone(),
            design: self.design.name(),
            instances: instances.len(),
            authorized: instances.iter().filter(|i| i.authorized).count(),
            ec2_requests: by_api.values().map(|c| c.requests).sum(),
            ec2_throttled: by_api.values().map(|c| c.throttled).sum(),
            ec2_refused: by_api.values().map(|c| c.refused).sum(),
            ec2_by_api: by_api,
            attacker,
            invocations: invocations.count,
            invocation_errors: invocations.errors,
            invocation_timeouts: invocations.timeouts,
            longest_invocation_s: round(invocations.longest.as_secs_f64()),
            failure_queue,
            guard_error_alerts: alerts.iter().filter(|a| a.verdict == "guard-error").count(),
            deny_alerts: alerts.iter().filter(|a| a.verdict == "deny").count(),
            deny_verdicts: denied.len(),
            allow_verdicts: verdicts
                .iter()
                .filter(|v| v.verdict == Verdict::Allow)
                .count(),
            summary_alerts: alerts.iter().filter(|a| a.verdict == "summary").count(),
            alerts_per_deny: (
                per_deny.iter().copied().min().unwrap_or(0),
                per_deny.iter().copied().max().unwrap_or(0),
            ),
            verdicts_per_cycle_max: created.values().map(Vec::len).max().unwrap_or(0),
            publish_calls,
            publish_batch_calls,
            dynamodb_calls: self.table.calls(),
            visibility_calls: sqs.2,
            messages_received: sqs.0,
            authorized_stopped: instances
                .iter()
                .filter(|i| i.authorized && down(i).is_some())
                .count(),
            unauthorized_stopped: unauthorized.iter().filter(|i| down(i).is_some()).count(),
            stop_after_running_median_s: median.map(round),
            stop_after_running_max_s: delays.last().copied().map(round),
            last_stop_s: last_stop,
            last_verdict_s: last_verdict,
            still_running: unauthorized.iter().filter(|i| down(i).is_none()).count(),
            ended_s: round(m.secs(now)),
            quiet,
            sweep_runs_s: Vec::new(),
            undecided: (0, 0),
            wall_s: 0.0,
            unsupported: places.iter().flat_map(|(_, m)| m.unsupported()).collect(),
            by_account: BTreeMap::new(),
            assume_role_calls: 0,
            requests: places.iter().flat_map(|(_, m)| m.log()).collect(),
            timeline: instances
                .iter()
                .map(|i| {
                    (
                        i.id.clone(),
                        round(m.secs(i.running_at)),
                        down(i).map(|t| round(m.secs(t))),
                    )
                })
                .collect(),
        }
    }
}

/// A password for `id`, minted a minute ago for fifteen minutes, as the issuer stores it.
fn mint(table: &Table, id: &str, now: UnixTime) -> Password {
    let password = Password::generate();
    table.insert(PasswordRecord {
        short_id: new_short_id(),
        digest: password.digest(),
        owner: Owner {
            team_id: "T0MODEL".into(),
            user_id: "U0MODEL".into(),
        },
        channel_id: "C0MODEL".into(),
        scope: InstanceId::parse(id),
        issued_at: now.minus(Duration::from_secs(60)),
        expires_at: now.plus(Duration::from_secs(900)),
        consumed_by: None,
    });
    crate::secrets::remember(&password.display());
    password
}

fn between(rng: &mut Deterministic, lo: Duration, hi: Duration) -> Duration {
    let ms = |d: Duration| usize::try_from(d.as_millis()).unwrap_or(usize::MAX);
    Duration::from_millis(rng.between(ms(lo), ms(hi)) as u64)
}

/// The attacker's own calls ([`ATTACK`]), from now until dropped.
async fn attack(model: &Ec2Model) {
    let start = Instant::now();
    let mut next: Vec<Instant> = ATTACK.iter().map(|_| start).collect();
    loop {
        let (k, at) = next
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(_, t)| *t)
            .unwrap_or((0, start));
        tokio::time::sleep_until(at).await;
        let (action, key, per_second) = ATTACK[k];
        model.attack(action, key);
        next[k] = at + Duration::from_secs_f64(1.0 / per_second);
    }
}

/// `n` launches at once in each of the world's places, `legitimate` of each place's with a
/// password; the attacker, if any, in the first place.
async fn burst(w: World, n: usize, legitimate: usize, attacker: bool, seed: u64) -> Figures {
    let mut rng = Deterministic::new(seed);
    let mut events = Vec::with_capacity(2 * n * w.places.len());
    for (place, model) in &w.places {
        let ids = model.next_ids(n);
        // The legitimate starts spread evenly through the burst.
        let legit: BTreeSet<usize> = (0..legitimate).map(|k| k * n / legitimate.max(1)).collect();
        let passwords: HashMap<usize, Password> = legit
            .iter()
            .map(|&k| (k, mint(&w.table, &ids[k], w.clock.epoch)))
            .collect();
        let pending: Vec<Duration> = (0..n)
            .map(|_| between(&mut rng, PENDING_MIN, PENDING_MAX))
            .collect();
        let launched = model.launch(
            &pending,
            |k, _| {
                let mut tags = vec![("Name".to_owned(), format!("burst-{k}"))];
                if let Some(p) = passwords.get(&k) {
                    tags.push(("Auth".to_owned(), p.display()));
                }
                tags
            },
            |k| legit.contains(&k),
        );
        assert_eq!(launched, ids, "the model named the instances as announced");
        for i in model.instances() {
            let Some(id) = InstanceId::parse(&i.id) else {
                continue;
            };
            let d = between(&mut rng, DELIVERY_MIN, DELIVERY_MAX);
            events.push((
                i.launched_at + d,
                member_state_change(&id, "pending", place),
            ));
            let d = between(&mut rng, DELIVERY_MIN, DELIVERY_MAX);
            events.push((i.running_at + d, member_state_change(&id, "running", place)));
        }
    }
    let extra = async {
        if attacker {
            attack(w.model()).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let (quiet, invocations, failed, sqs) = w
        .serve(events, extra, || true, w.model().start + HORIZON)
        .await;
    w.figures(quiet, &invocations, failed, sqs)
}

/// The schedule's event for a sweep run.
fn scheduled(k: u32) -> Value {
    json!({"version":"0","id":format!("sweep-{k}"),"detail-type":"Scheduled Event","source":"aws.events",
        "account":"123456789012","time":"2026-11-21T10:00:00Z","region":"us-east-1",
        "resources":["arn:aws:events:us-east-1:123456789012:rule/ec2pass-sweep"],"detail":{}})
}

async fn sweep(name: &str, design: Design, n: usize, undecided: usize) -> Figures {
    let w = World::new(name, design, None);
    let lost: BTreeSet<usize> = (0..undecided).map(|k| k * n / undecided.max(1)).collect();
    // Launched two hours before (after the activation, within the sweep window), running since.
    let two_hours = Duration::from_secs(7200);
    let ids = w.model().launch_earlier(
        two_hours,
        &vec![Duration::ZERO; n],
        |k, _| vec![("Name".to_owned(), format!("fleet-{k}"))],
        |k| !lost.contains(&k),
    );
    let launch_time = EPOCH.minus(two_hours);
    for (k, id) in ids.iter().enumerate() {
        let Some(instance) = InstanceId::parse(id) else {
            continue;
        };
        if lost.contains(&k) {
            continue;
        }
        // Allowed when it started; the alert (if any) long sent.
        let allowed = VerdictRecord {
            cycle: Cycle {
                instance,
                launch_time,
            },
            verdict: Verdict::Allow,
            short_id: None,
            issuer: None,
            password_key: None,
            decided_at: launch_time.plus(Duration::from_secs(5)),
            event_id: format!("evt-earlier-{k}"),
            place: None,
            retain_until: EPOCH.plus(Duration::from_secs(90 * 86_400)),
            alert: None,
        };
        let _ = VerdictStore::record(&*w.table.inner, &allowed).await;
    }
    let lost_ids: Vec<String> = lost.iter().map(|&k| ids[k].clone()).collect();
    let finished = || {
        let decided: BTreeSet<String> = w
            .table
            .verdicts()
            .into_iter()
            .map(|v| v.cycle.instance.to_string())
            .collect();
        let down: BTreeSet<String> = w
            .model()
            .instances()
            .into_iter()
            .filter(|i| i.stopped_at.is_some() || i.terminated_at.is_some())
            .map(|i| i.id)
            .collect();
        lost_ids
            .iter()
            .filter(|id| decided.contains(*id) && down.contains(*id))
            .count()
    };
    let scheduled_all = AtomicBool::new(false);
    let runs = u32::try_from(MAX_SWEEP_RUNS).unwrap_or(12);
    // The schedule: a run every five minutes until the lost starts are decided and stopped (one
    // run when there are none).
    let schedule = async {
        for k in 0..runs {
            tokio::time::sleep_until(w.model().start + SWEEP_EVERY * k).await;
            if k > 0 && finished() == lost_ids.len() {
                break;
            }
            w.lambda.send(scheduled(k));
        }
        scheduled_all.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
    };
    let horizon = w.model().start + SWEEP_EVERY * runs;
    let (quiet, invocations, failed, sqs) = w
        .serve(
            Vec::new(),
            schedule,
            || scheduled_all.load(Ordering::SeqCst),
            horizon,
        )
        .await;
    let mut f = w.figures(quiet, &invocations, failed, sqs);
    f.sweep_runs_s = w
        .lambda
        .invocations()
        .took
        .iter()
        .map(|d| round(d.as_secs_f64()))
        .collect();
    f.undecided = (undecided, finished());
    // Every instance has been running since before the scenario: no time since `running`.
    f.stop_after_running_median_s = None;
    f.stop_after_running_max_s = None;
    f
}
