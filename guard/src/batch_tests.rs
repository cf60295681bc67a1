//! The batch path with fakes: few calls for many starts, nothing waited for, every start decided
//! as on the single path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use ec2pass_shared::alert::{Action, Alert};
use ec2pass_shared::config::{Env, GuardConfig};
use ec2pass_shared::ids::{InstanceId, Owner};
use ec2pass_shared::password::{Password, new_short_id};
use ec2pass_shared::store::PasswordRecord;
use ec2pass_shared::store::memory::MemoryStore;
use ec2pass_shared::time::{FixedClock, UnixTime};
use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::ec2::{AwsError, InstanceFacts, StopError};
use crate::guard::Guard;
use crate::sweep::ROUND;

const NOW: UnixTime = UnixTime(1_795_255_200);
const LAUNCH: UnixTime = UnixTime(1_795_255_190);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn id(n: usize) -> InstanceId {
    InstanceId::parse(&format!("i-0{n:016x}")).unwrap_or_else(|| panic!("bad id {n}"))
}

/// EC2 that answers the batch calls as EC2 does and logs each call with how many ids it named.
#[derive(Default)]
struct Fleet {
    instances: Mutex<HashMap<InstanceId, InstanceFacts>>,
    describe_fails: Mutex<Option<AwsError>>,
    protected: Mutex<Vec<InstanceId>>,
    calls: Mutex<Vec<(&'static str, usize)>>,
    /// How long a StopInstances takes.
    stop_latency: Duration,
}

impl Fleet {
    fn put(&self, n: usize, state: &str, tags: &[(&str, &str)]) {
        let f = InstanceFacts {
            id: id(n),
            state: state.into(),
            launch_time: Some(LAUNCH),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            root_device_type: Some("ebs".into()),
            spot: false,
        };
        lock(&self.instances).insert(f.id.clone(), f);
    }
    fn set_state(&self, n: usize, state: &str) {
        if let Some(f) = lock(&self.instances).get_mut(&id(n)) {
            f.state = state.into();
        }
    }
    fn state(&self, n: usize) -> String {
        lock(&self.instances)
            .get(&id(n))
            .map(|f| f.state.clone())
            .unwrap_or_default()
    }
    fn calls(&self, op: &str) -> Vec<usize> {
        lock(&self.calls)
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, n)| *n)
            .collect()
    }
    fn log(&self, op: &'static str, n: usize) {
        lock(&self.calls).push((op, n));
    }
}

impl Ec2 for Fleet {
    async fn describe(&self, i: &InstanceId) -> Result<Option<InstanceFacts>, AwsError> {
        self.log("describe", 1);
        Ok(lock(&self.instances).get(i).cloned())
    }
    async fn stop(&self, _: &InstanceId) -> Result<(), StopError> {
        self.log("stop", 1);
        Ok(())
    }
    async fn terminate(&self, _: &InstanceId) -> Result<(), StopError> {
        self.log("terminate", 1);
        Ok(())
    }
    async fn clear_stop_protection(&self, i: &InstanceId) -> Result<(), AwsError> {
        self.log("clear-stop-protection", 1);
        lock(&self.protected).retain(|p| p != i);
        Ok(())
    }
    async fn clear_termination_protection(&self, _: &InstanceId) -> Result<(), AwsError> {
        Ok(())
    }
    async fn delete_tag(&self, _: &InstanceId, _: &str, _: &str) -> Result<(), AwsError> {
        self.log("untag", 1);
        Ok(())
    }
    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        self.log("list", 1);
        Ok(lock(&self.instances)
            .values()
            .filter(|f| f.is_active())
            .cloned()
            .collect())
    }
    async fn describe_many(&self, ids: &[InstanceId]) -> Result<Vec<InstanceFacts>, AwsError> {
        self.log("describe-many", ids.len());
        if let Some(e) = lock(&self.describe_fails).clone() {
            return Err(e);
        }
        let all = lock(&self.instances);
        Ok(ids.iter().filter_map(|i| all.get(i).cloned()).collect())
    }
    /// As EC2: a pending instance among them refuses the whole call.
    async fn stop_many(&self, ids: &[InstanceId]) -> Vec<(InstanceId, Result<(), StopError>)> {
        self.log("stop-many", ids.len());
        tokio::time::sleep(self.stop_latency).await;
        let mut all = lock(&self.instances);
        if ids
            .iter()
            .any(|i| all.get(i).is_some_and(|f| f.state == "pending"))
        {
            return ids
                .iter()
                .map(|i| (i.clone(), Err(StopError::NotYet)))
                .collect();
        }
        let protected = lock(&self.protected);
        ids.iter()
            .map(|i| {
                if protected.contains(i) {
                    return (i.clone(), Err(StopError::Protected));
                }
                if let Some(f) = all.get_mut(i) {
                    f.state = "stopping".into();
                }
                (i.clone(), Ok(()))
            })
            .collect()
    }
    async fn delete_tag_many(
        &self,
        ids: &[InstanceId],
        key: &str,
        value: &str,
    ) -> Result<(), AwsError> {
        self.log("untag-many", ids.len());
        for i in ids {
            if let Some(f) = lock(&self.instances).get_mut(i)
                && f.tags.get(key).map(String::as_str) == Some(value)
            {
                f.tags.remove(key);
            }
        }
        Ok(())
    }
}

/// SNS that records each alert and each PublishBatch.
#[derive(Default)]
struct Topic {
    alerts: Mutex<Vec<Alert>>,
    batches: Mutex<Vec<usize>>,
}

impl Topic {
    fn alerts(&self, verdict: &str) -> Vec<Alert> {
        lock(&self.alerts)
            .iter()
            .filter(|a| a.verdict == verdict)
            .cloned()
            .collect()
    }
}

impl Alerts for Topic {
    async fn publish(&self, alert: &Alert) -> Result<(), AwsError> {
        lock(&self.alerts).push(alert.clone());
        Ok(())
    }
    async fn publish_many(&self, alerts: &[Alert]) -> Vec<Result<(), AwsError>> {
        lock(&self.batches).push(alerts.len());
        lock(&self.alerts).extend(alerts.iter().cloned());
        alerts.iter().map(|_| Ok(())).collect()
    }
}

fn config() -> GuardConfig {
    let vars = [
        ("EC2PASS_TABLE", "ec2pass"),
        (
            "EC2PASS_ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:alerts",
        ),
    ];
    GuardConfig::from_env(&Env::from_fn(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

type TestGuard = Guard<MemoryStore, Fleet, Topic, FixedClock>;

fn guard() -> TestGuard {
    Guard::new(
        config(),
        MemoryStore::activated_at(UnixTime(1_700_000_000)),
        Fleet::default(),
        Topic::default(),
        FixedClock(NOW),
    )
}

fn message(n: usize, state: &str, receive_count: u32) -> Message {
    message_at(
        n,
        state,
        receive_count,
        &Place::new("123456789012", "us-east-1"),
    )
}

/// A state change of instance `n` as EventBridge delivers it from an account and region.
fn message_at(n: usize, state: &str, receive_count: u32, place: &Place) -> Message {
    let iid = id(n);
    let (account, region) = (&place.account, &place.region);
    let body = json!({"version":"0","id":format!("evt-{iid}-{state}"),"detail-type":"EC2 Instance State-change Notification",
        "source":"aws.ec2","account":account,"time":"2026-11-21T10:00:00Z","region":region,
        "resources":[format!("arn:aws:ec2:{region}:{account}:instance/{iid}")],
        "detail":{"instance-id":iid.as_str(),"state":state}});
    Message {
        id: format!("msg-{n}-{state}-{receive_count}"),
        receipt: format!("receipt-{n}-{state}"),
        receive_count,
        body: body.to_string(),
    }
}

fn inv() -> Invocation {
    Invocation {
        request_id: "req-batch".into(),
        deadline: Instant::now() + Duration::from_secs(23),
    }
}

/// A password for instance `n`, minted a minute ago for 15 minutes.
fn mint(store: &MemoryStore, n: usize) -> Password {
    let password = Password::generate();
    store.insert(PasswordRecord {
        short_id: new_short_id(),
        digest: password.digest(),
        owner: Owner {
            team_id: "T1".into(),
            user_id: "U1".into(),
        },
        channel_id: "C1".into(),
        scope: Some(id(n)),
        issued_at: NOW.minus(Duration::from_secs(60)),
        expires_at: NOW.plus(Duration::from_secs(900)),
        consumed_by: None,
    });
    password
}

fn verdicts(g: &TestGuard) -> BTreeMap<String, String> {
    g.store
        .verdicts()
        .into_iter()
        .map(|v| (v.cycle.instance.to_string(), v.verdict.kind().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_burst_of_running_unauthorized_starts_costs_one_describe_and_one_stop() {
    let g = guard();
    let messages: Vec<Message> = (0..60)
        .map(|n| {
            g.ec2.put(n, "running", &[("Name", "miner")]);
            message(n, "running", 1)
        })
        .collect();
    let outcome = g.handle_batch(&messages, &inv()).await;
    assert_eq!(g.ec2.calls("describe-many"), [60]);
    assert_eq!(g.ec2.calls("stop-many"), [60], "one StopInstances for all");
    assert!(g.ec2.calls("describe").is_empty() && g.ec2.calls("stop").is_empty());
    assert!((0..60).all(|n| g.ec2.state(n) == "stopping"));
    assert_eq!(verdicts(&g).values().filter(|v| *v == "deny").count(), 60);
    let denies = g.topic_alerts("deny");
    assert_eq!(denies.len(), 60, "one alert per deny");
    assert!(denies.iter().all(|a| a.action == Action::Stopped));
    assert_eq!(lock(&g.alerts.batches).iter().sum::<usize>(), 60);
    let summary = g.topic_alerts("summary");
    assert_eq!(summary.len(), 1, "one summary for the batch");
    assert_eq!(summary[0].reason, "60 denied of 60");
    assert!(outcome.failed.is_empty() && outcome.recheck.is_empty());
}

impl<E> Guard<MemoryStore, E, Topic, FixedClock> {
    fn topic_alerts(&self, verdict: &str) -> Vec<Alert> {
        self.alerts.alerts(verdict)
    }
}

#[tokio::test]
async fn a_tagless_pending_start_is_handed_back_undecided_and_decided_when_running() {
    let g = guard();
    g.ec2.put(1, "pending", &[]);
    let outcome = g.handle_batch(&[message(1, "pending", 1)], &inv()).await;
    assert!(verdicts(&g).is_empty(), "its launch tags may still come");
    assert!(g.ec2.calls("stop-many").is_empty());
    assert_eq!(outcome.failed, ["msg-1-pending-1"]);
    assert_eq!(outcome.recheck[0].after, Duration::from_secs(5));
    assert_eq!(outcome.recheck[0].receipt, "receipt-1-pending");
    // It comes back (second delivery) running: decided and stopped.
    g.ec2.set_state(1, "running");
    let outcome = g.handle_batch(&[message(1, "pending", 2)], &inv()).await;
    assert_eq!(
        verdicts(&g).get(id(1).as_str()).map(String::as_str),
        Some("deny")
    );
    assert_eq!(g.ec2.state(1), "stopping");
    assert!(outcome.failed.is_empty());
}

#[tokio::test]
async fn a_pending_start_with_a_wrong_password_is_denied_at_once_and_stopped_when_running() {
    let g = guard();
    g.ec2.put(1, "pending", &[("Auth", "let-me-in")]);
    let outcome = g.handle_batch(&[message(1, "pending", 1)], &inv()).await;
    assert_eq!(
        verdicts(&g).get(id(1).as_str()).map(String::as_str),
        Some("deny")
    );
    assert!(
        g.ec2.calls("stop-many").is_empty(),
        "a pending id is never sent: it would fail the whole call"
    );
    assert_eq!(outcome.failed, ["msg-1-pending-1"]);
    assert_eq!(g.topic_alerts("deny").len(), 1);
    assert_eq!(g.topic_alerts("deny")[0].action, Action::StopPending);
    // The running event: stopped, and no second alert.
    g.ec2.set_state(1, "running");
    let outcome = g.handle_batch(&[message(1, "running", 1)], &inv()).await;
    assert_eq!(g.ec2.calls("stop-many"), [1]);
    assert_eq!(g.ec2.state(1), "stopping");
    assert_eq!(g.topic_alerts("deny").len(), 1, "one alert per deny");
    assert!(outcome.failed.is_empty());
}

#[tokio::test]
async fn both_events_of_a_start_in_one_batch_are_one_start() {
    let g = guard();
    g.ec2.put(1, "running", &[]);
    let outcome = g
        .handle_batch(
            &[message(1, "pending", 1), message(1, "running", 1)],
            &inv(),
        )
        .await;
    assert_eq!(outcome.reports.len(), 1);
    assert_eq!(g.ec2.calls("describe-many"), [1]);
    assert_eq!(g.ec2.calls("stop-many"), [1]);
    assert_eq!(g.store.verdicts().len(), 1);
    assert_eq!(g.topic_alerts("deny").len(), 1);
    assert!(
        g.topic_alerts("summary").is_empty(),
        "one verdict: no summary"
    );
    assert!(outcome.failed.is_empty());
}

#[tokio::test]
async fn an_allowed_start_inside_a_burst_is_not_stopped_and_its_password_is_consumed_once() {
    let g = guard();
    let password = mint(&g.store, 0);
    g.ec2.put(0, "running", &[("Auth", &password.display())]);
    let mut messages = vec![message(0, "running", 1)];
    for n in 1..=20 {
        g.ec2.put(n, "running", &[]);
        messages.push(message(n, "running", 1));
    }
    let outcome = g.handle_batch(&messages, &inv()).await;
    assert_eq!(
        verdicts(&g).get(id(0).as_str()).map(String::as_str),
        Some("allow")
    );
    assert_eq!(g.ec2.state(0), "running");
    assert_eq!(g.ec2.calls("stop-many"), [20]);
    assert_eq!(
        g.ec2.calls("untag-many"),
        [1],
        "the consumed password's tag goes"
    );
    assert!(
        g.store.records()[0].consumed_by.is_some(),
        "consumed by this start"
    );
    assert_eq!(g.topic_alerts("summary")[0].reason, "20 denied of 21");
    assert!(outcome.failed.is_empty());
}

#[tokio::test]
async fn a_describe_throttled_past_the_pace_hands_the_batch_back_with_one_alert_and_no_stop() {
    let g = guard();
    let messages: Vec<Message> = (0..30)
        .map(|n| {
            g.ec2.put(n, "running", &[]);
            message(n, "running", 1)
        })
        .collect();
    *lock(&g.ec2.describe_fails) = Some(AwsError {
        operation: "DescribeInstances",
        message: "RequestLimitExceeded: Request limit exceeded.".into(),
        throttled: true,
    });
    let outcome = g.handle_batch(&messages, &inv()).await;
    assert_eq!(outcome.failed.len(), 30, "every message comes back");
    assert!(
        outcome.recheck.is_empty(),
        "after the queue's visibility timeout"
    );
    assert!(g.ec2.calls("stop-many").is_empty() && g.ec2.calls("stop").is_empty());
    let errors = g.topic_alerts("guard-error");
    assert_eq!(
        errors.len(),
        1,
        "one alert for the batch, not one per instance"
    );
    assert_eq!(errors[0].instance_id, "batch");
    assert!(g.store.verdicts().is_empty());
}

#[tokio::test]
async fn stop_protection_on_one_instance_is_cleared_and_the_others_are_not_held_back() {
    let g = guard();
    for n in 0..5 {
        g.ec2.put(n, "running", &[]);
    }
    lock(&g.ec2.protected).push(id(3));
    let messages: Vec<Message> = (0..5).map(|n| message(n, "running", 1)).collect();
    let outcome = g.handle_batch(&messages, &inv()).await;
    assert_eq!(
        g.ec2.calls("stop-many"),
        [5, 1],
        "the protected one is stopped again alone"
    );
    assert_eq!(g.ec2.calls("clear-stop-protection"), [1]);
    assert!((0..5).all(|n| g.ec2.state(n) == "stopping"));
    assert!(outcome.failed.is_empty());
}

#[tokio::test]
async fn malformed_messages_are_acknowledged_and_touch_nothing() {
    let g = guard();
    let mut bad = message(1, "running", 1);
    bad.body = "{not json".into();
    let mut other = message(2, "running", 1);
    other.body = json!({"source": "aws.s3", "detail-type": "Object Created"}).to_string();
    let outcome = g.handle_batch(&[bad, other], &inv()).await;
    assert!(
        outcome.failed.is_empty(),
        "retrying them would change nothing"
    );
    assert!(lock(&g.ec2.calls).is_empty());
}

#[tokio::test]
async fn an_instance_ec2_does_not_know_is_left_alone_without_failing_the_batch() {
    let g = guard();
    g.ec2.put(1, "running", &[]);
    let outcome = g
        .handle_batch(
            &[message(1, "running", 1), message(2, "running", 1)],
            &inv(),
        )
        .await;
    assert_eq!(g.ec2.calls("describe-many"), [2]);
    assert_eq!(verdicts(&g).len(), 1);
    assert!(outcome.failed.is_empty());
}

#[test]
fn a_recheck_doubles_with_each_return_up_to_a_minute() {
    let first = Duration::from_secs(5);
    let after: Vec<u64> = (1..=7).map(|n| recheck_after(first, n).as_secs()).collect();
    assert_eq!(after, [5, 10, 20, 40, 60, 60, 60]);
    assert_eq!(recheck_after(first, 0), first);
    assert_eq!(recheck_after(first, u32::MAX), MAX_RECHECK);
}

fn sweep_event() -> serde_json::Value {
    json!({"version":"0","id":"sweep-1","detail-type":"Scheduled Event","source":"aws.events",
        "account":"123456789012","time":"2026-11-21T10:00:00Z","region":"us-east-1",
        "resources":["arn:aws:events:us-east-1:123456789012:rule/ec2pass-sweep"],"detail":{}})
}

#[tokio::test]
async fn the_sweep_decides_lost_starts_in_gathered_rounds() {
    let g = guard();
    for n in 0..250 {
        g.ec2.put(n, "running", &[]);
    }
    let reports = g.handle(&sweep_event(), &inv()).await.unwrap_or_default();
    assert_eq!(reports.len(), 250);
    assert_eq!(g.ec2.calls("list"), [1]);
    assert_eq!(
        g.ec2.calls("stop-many"),
        [100, 100, 50],
        "a round of {ROUND} starts, one StopInstances each"
    );
    assert_eq!(verdicts(&g).len(), 250);
    assert_eq!(g.topic_alerts("deny").len(), 250);
}

#[tokio::test(start_paused = true)]
async fn a_sweep_short_of_time_stops_between_rounds_and_the_next_takes_up_the_rest() {
    let mut g = guard();
    g.ec2.stop_latency = Duration::from_millis(10);
    for n in 0..250 {
        g.ec2.put(n, "running", &[]);
    }
    // Time for one round only.
    let short = Invocation {
        request_id: "sweep-short".into(),
        deadline: Instant::now() + crate::sweep::ROUND_BUDGET + Duration::from_millis(1),
    };
    let first = g.handle(&sweep_event(), &short).await.unwrap_or_default();
    assert_eq!(first.len(), 100);
    assert_eq!(verdicts(&g).len(), 100);
    // The next sweep finds the 150 still without a verdict, and only those.
    let second = g.handle(&sweep_event(), &inv()).await.unwrap_or_default();
    assert_eq!(second.len(), 150);
    assert_eq!(verdicts(&g).len(), 250);
    assert_eq!(g.topic_alerts("deny").len(), 250, "no start decided twice");
}

#[tokio::test]
async fn distinct_made_up_passwords_cost_one_untag_each_but_never_hold_back_the_stop() {
    let g = guard();
    let messages: Vec<Message> = (0..50)
        .map(|n| {
            g.ec2.put(n, "running", &[("Auth", &format!("guess-{n}"))]);
            message(n, "running", 1)
        })
        .collect();
    let outcome = g.handle_batch(&messages, &inv()).await;
    assert_eq!(g.ec2.calls("stop-many"), [50], "one StopInstances for all");
    assert_eq!(
        g.ec2.calls("untag-many").len(),
        50,
        "DeleteTags is per value"
    );
    let calls = lock(&g.ec2.calls).clone();
    let first_stop = calls.iter().position(|(op, _)| *op == "stop-many");
    let first_untag = calls.iter().position(|(op, _)| *op == "untag-many");
    assert!(first_stop < first_untag, "the stop goes first: {calls:?}");
    assert_eq!(g.topic_alerts("deny").len(), 50);
    assert!(outcome.failed.is_empty());
}

/// A hub's member accounts, each with its own fake EC2; one account's role cannot be assumed.
struct Members {
    ec2: BTreeMap<Place, Fleet>,
    refused: &'static str,
    /// Why the Organization could not be read, if it could not.
    roster_problem: Option<String>,
}

impl crate::fleet::Fleet for Members {
    type Ec2<'a> = &'a Fleet;

    async fn at<'a>(&'a self, place: &Place) -> Result<&'a Fleet, crate::fleet::FleetError> {
        match self.ec2.get(place) {
            Some(ec2) if place.account != self.refused => Ok(ec2),
            _ => Err(crate::fleet::FleetError {
                place: place.clone(),
                message: format!(
                    "could not assume arn:aws:iam::{}:role/ec2pass-member: AccessDenied",
                    place.account
                ),
            }),
        }
    }

    async fn places(&self, _here: &Place) -> (Vec<Place>, Option<String>) {
        (
            self.ec2.keys().cloned().collect(),
            self.roster_problem.clone(),
        )
    }
}

/// The hub's guard over `members`.
fn hub_guard(members: Members) -> Guard<MemoryStore, Members, Topic, FixedClock> {
    Guard::new(
        config(),
        MemoryStore::activated_at(UnixTime(1_700_000_000)),
        members,
        Topic::default(),
        FixedClock(NOW),
    )
}

/// Two accounts in two regions and, last, a third account whose member role refuses the hub.
fn hub_places() -> ([Place; 4], Members) {
    let places = [
        Place::new("111111111111", "us-east-1"),
        Place::new("111111111111", "eu-west-1"),
        Place::new("222222222222", "us-east-1"),
        Place::new("333333333333", "us-east-1"),
    ];
    let members = Members {
        ec2: places
            .iter()
            .map(|p| (p.clone(), Fleet::default()))
            .collect(),
        refused: "333333333333",
        roster_problem: None,
    };
    (places, members)
}

#[tokio::test]
async fn a_hub_acts_in_each_account_with_its_own_ec2_and_alerts_an_account_it_cannot_reach() {
    // Given a hub over two accounts in two regions, and one account whose member role refuses it
    let (places, members) = hub_places();
    for (n, place) in places.iter().enumerate() {
        for k in 0..2 {
            members.ec2[place].put(10 * n + k, "running", &[("Name", "miner")]);
        }
    }
    let g = hub_guard(members);
    // When one batch holds two unauthorized starts of each place
    let messages: Vec<Message> = places
        .iter()
        .enumerate()
        .flat_map(|(n, p)| (0..2).map(move |k| message_at(10 * n + k, "running", 1, p)))
        .collect();
    let outcome = g.handle_batch(&messages, &inv()).await;

    // Then each reachable place was described and stopped with its own EC2, in one call each
    for (n, place) in places[..3].iter().enumerate() {
        let ec2 = &g.ec2.ec2[place];
        assert_eq!(ec2.calls("describe-many"), [2], "{place}");
        assert_eq!(ec2.calls("stop-many"), [2], "{place}");
        assert!(
            (0..2).all(|k| ec2.state(10 * n + k) == "stopping"),
            "{place}"
        );
    }
    // And the place whose role refused: nothing called, one guard-error naming the account
    // and the role, and both messages handed back for the queue to deliver again
    assert!(lock(&g.ec2.ec2[&places[3]].calls).is_empty());
    let errors = g.topic_alerts("guard-error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].reason, "assume-role");
    assert_eq!(
        (errors[0].account.as_str(), errors[0].region.as_str()),
        ("333333333333", "us-east-1")
    );
    let detail = errors[0].detail.clone().unwrap_or_default();
    assert!(
        detail.contains("arn:aws:iam::333333333333:role/ec2pass-member")
            && detail.contains(id(30).as_str()),
        "{detail}"
    );
    assert_eq!(outcome.failed, ["msg-30-running-1", "msg-31-running-1"]);
    // And every deny alert names the account and region its start happened in
    let denies = g.topic_alerts("deny");
    assert_eq!(denies.len(), 6);
    for a in &denies {
        let n: usize = places
            .iter()
            .position(|p| p.account == a.account && p.region == a.region)
            .unwrap_or(usize::MAX);
        assert!(
            n < 3
                && (a.instance_id == id(10 * n).as_str()
                    || a.instance_id == id(10 * n + 1).as_str()),
            "{a:?}"
        );
    }
    // And the verdicts say where
    assert!(
        g.store
            .verdicts()
            .iter()
            .all(|v| v.place.as_ref().is_some_and(|p| places[..3].contains(p)))
    );
}

#[tokio::test]
async fn a_hubs_sweep_covers_every_member_place_and_alerts_the_one_it_cannot_reach() {
    // Given a hub over three reachable places and one whose role refuses, each with a start
    // whose events were lost
    let (places, members) = hub_places();
    for (n, place) in places.iter().enumerate() {
        members.ec2[place].put(n, "running", &[("Name", "lost")]);
    }
    let g = hub_guard(members);
    // When the schedule's sweep runs (in the hub's own account, which is not a member)
    let _ = g.handle(&sweep_event(), &inv()).await;
    // Then each reachable place's lost start is denied and stopped there, its alert naming it
    for (n, place) in places[..3].iter().enumerate() {
        assert_eq!(g.ec2.ec2[place].state(n), "stopping", "{place}");
        let mine: Vec<Alert> = g
            .topic_alerts("deny")
            .into_iter()
            .filter(|a| a.instance_id == id(n).as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{place}");
        assert_eq!(
            (&mine[0].account, &mine[0].region),
            (&place.account, &place.region)
        );
    }
    // And the place it cannot reach is one guard-error naming it; nothing was asked there
    assert!(lock(&g.ec2.ec2[&places[3]].calls).is_empty());
    let errors = g.topic_alerts("guard-error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (
            errors[0].reason.as_str(),
            errors[0].account.as_str(),
            errors[0].instance_id.as_str()
        ),
        ("assume-role", "333333333333", "sweep")
    );
}

#[tokio::test]
async fn a_hubs_sweep_that_cannot_read_the_organization_sweeps_the_last_members_and_says_so() {
    // Given a hub whose Organization cannot be read (the last members known still serve)
    let (places, mut members) = hub_places();
    members.roster_problem =
        Some("ListAccountsForParent ou-ab12-cdef3456: AccessDeniedException".into());
    members.ec2[&places[0]].put(0, "running", &[("Name", "lost")]);
    let g = hub_guard(members);
    // When the schedule's sweep runs
    let _ = g.handle(&sweep_event(), &inv()).await;
    // Then the members it has are swept
    assert_eq!(g.ec2.ec2[&places[0]].state(0), "stopping");
    // And one guard-error says the list may be out of date, and why
    let errors: Vec<Alert> = g
        .topic_alerts("guard-error")
        .into_iter()
        .filter(|a| a.reason == "organizations")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("AccessDeniedException")),
        "{errors:?}"
    );
}
