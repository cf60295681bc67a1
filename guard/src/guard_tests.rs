//! Every decision outcome and enforcement branch, with scripted fakes for EC2 and SNS, the
//! in-memory store, and a fixed clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use ec2pass_shared::alert::Alert;
use ec2pass_shared::config::{Env, GuardConfig};
use ec2pass_shared::ids::{Owner, ShortId};
use ec2pass_shared::password::{Password, new_short_id};
use ec2pass_shared::store::memory::MemoryStore;
use ec2pass_shared::store::{CallerLookup, StoreError};
use ec2pass_shared::time::FixedClock;
use ec2pass_shared::verdict::ALERT_LEASE;
use serde_json::json;

use super::*;
use crate::ec2::{AwsError, StopError};

const A: &str = "i-0aaaaaaaaaaaaaaa0";
const B: &str = "i-0bbbbbbbbbbbbbbb0";
const NOW: UnixTime = UnixTime(1_795_255_200);
const LAUNCH: UnixTime = UnixTime(1_795_255_190);

fn id(s: &str) -> InstanceId {
    InstanceId::parse(s).unwrap_or_else(|| panic!("bad id {s}"))
}

/// EC2 with scripted answers; records every call.
#[derive(Default)]
struct FakeEc2 {
    instances: Mutex<HashMap<String, InstanceFacts>>,
    describe_failures: Mutex<VecDeque<AwsError>>,
    second_looks: Mutex<VecDeque<InstanceFacts>>,
    stop_script: Mutex<VecDeque<Result<(), StopError>>>,
    terminate_script: Mutex<VecDeque<Result<(), StopError>>>,
    untag_fails: bool,
    list_fails: bool,
    calls: Mutex<Vec<String>>,
}

impl FakeEc2 {
    fn with(instances: Vec<InstanceFacts>) -> Self {
        let fake = Self::default();
        for f in instances {
            fake.put(f);
        }
        fake
    }
    fn put(&self, f: InstanceFacts) {
        lock(&self.instances).insert(f.id.to_string(), f);
    }
    fn calls(&self, what: &str) -> usize {
        lock(&self.calls)
            .iter()
            .filter(|c| c.starts_with(what))
            .count()
    }
    fn state(&self, instance: &str) -> Option<String> {
        lock(&self.instances).get(instance).map(|f| f.state.clone())
    }
    fn tags(&self, instance: &str) -> BTreeMap<String, String> {
        lock(&self.instances)
            .get(instance)
            .map(|f| f.tags.clone())
            .unwrap_or_default()
    }
    fn log(&self, call: String) {
        lock(&self.calls).push(call);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn aws_error(operation: &'static str) -> AwsError {
    AwsError {
        operation,
        message: "ThrottlingException: Rate exceeded (after 3 attempts)".into(),
        throttled: false,
    }
}

impl Ec2 for FakeEc2 {
    async fn describe(&self, instance: &InstanceId) -> Result<Option<InstanceFacts>, AwsError> {
        self.log(format!("describe {instance}"));
        if let Some(e) = lock(&self.describe_failures).pop_front() {
            return Err(e);
        }
        // A listing (the sweep) counts as the first look, like a describe.
        let seen = lock(&self.calls)
            .iter()
            .filter(|c| c.starts_with("describe") || c.starts_with("list"))
            .count();
        if seen > 1
            && let Some(later) = lock(&self.second_looks).pop_front()
        {
            self.put(later.clone());
            return Ok(Some(later));
        }
        Ok(lock(&self.instances).get(instance.as_str()).cloned())
    }
    async fn stop(&self, instance: &InstanceId) -> Result<(), StopError> {
        self.log(format!("stop {instance}"));
        let next = lock(&self.stop_script).pop_front().unwrap_or(Ok(()));
        if next.is_ok()
            && let Some(f) = lock(&self.instances).get_mut(instance.as_str())
        {
            f.state = "stopping".into();
        }
        next
    }
    async fn terminate(&self, instance: &InstanceId) -> Result<(), StopError> {
        self.log(format!("terminate {instance}"));
        let next = lock(&self.terminate_script).pop_front().unwrap_or(Ok(()));
        if next.is_ok()
            && let Some(f) = lock(&self.instances).get_mut(instance.as_str())
        {
            f.state = "shutting-down".into();
        }
        next
    }
    async fn clear_stop_protection(&self, instance: &InstanceId) -> Result<(), AwsError> {
        self.log(format!("clear-protection {instance}"));
        Ok(())
    }
    async fn clear_termination_protection(&self, instance: &InstanceId) -> Result<(), AwsError> {
        self.log(format!("clear-termination-protection {instance}"));
        Ok(())
    }
    /// As EC2 does: a key given with a value is deleted only while the tag holds that value
    /// (EC2 API Reference, DeleteTags: "If you specify a tag key with a value, we delete the tag
    /// only if its value matches").
    async fn delete_tag(
        &self,
        instance: &InstanceId,
        key: &str,
        value: &str,
    ) -> Result<(), AwsError> {
        self.log(format!("untag {instance} {key}"));
        if self.untag_fails {
            return Err(aws_error("DeleteTags"));
        }
        if let Some(f) = lock(&self.instances).get_mut(instance.as_str())
            && f.tags.get(key).map(String::as_str) == Some(value)
        {
            f.tags.remove(key);
        }
        Ok(())
    }
    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        self.log("list".into());
        if self.list_fails {
            return Err(aws_error("DescribeInstances"));
        }
        Ok(lock(&self.instances)
            .values()
            .filter(|f| !f.is_down())
            .cloned()
            .collect())
    }
}

/// SNS that records what it is given; can fail the next N publishes.
#[derive(Default)]
struct FakeSns {
    published: Mutex<Vec<Alert>>,
    failures: Mutex<u32>,
}

impl FakeSns {
    fn alerts(&self) -> Vec<Alert> {
        lock(&self.published).clone()
    }
}

impl Alerts for FakeSns {
    async fn publish(&self, alert: &Alert) -> Result<(), AwsError> {
        let mut failures = lock(&self.failures);
        if *failures > 0 {
            *failures -= 1;
            return Err(aws_error("Publish"));
        }
        lock(&self.published).push(alert.clone());
        Ok(())
    }
}

fn config(extra: &[(&str, &str)]) -> GuardConfig {
    let mut vars = vec![
        ("EC2PASS_TABLE", "ec2pass"),
        (
            "EC2PASS_ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:alerts",
        ),
        ("EC2PASS_TAG_RETRY_DELAY", "1s"),
    ];
    vars.extend_from_slice(extra);
    GuardConfig::from_env(&Env::from_fn(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn instance(iid: &str, state: &str, tags: &[(&str, &str)]) -> InstanceFacts {
    InstanceFacts {
        id: id(iid),
        state: state.into(),
        launch_time: Some(LAUNCH),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        root_device_type: Some("ebs".into()),
        spot: false,
    }
}

type TestGuard<S = MemoryStore> = Guard<S, FakeEc2, FakeSns, FixedClock>;

fn guard_with<S>(store: S, ec2: FakeEc2, config: GuardConfig) -> TestGuard<S>
where
    S: ConsumeStore + VerdictStore + AlertStore + PasswordLookup + CallerLookup,
{
    Guard::new(config, store, ec2, FakeSns::default(), FixedClock(NOW))
}

fn guard(ec2: FakeEc2) -> TestGuard {
    guard_with(MemoryStore::new(), ec2, config(&[]))
}

/// A guard whose store holds a fresh password scoped to `scope`, set as the `Auth` tag of the
/// pending instance `on`.
fn tagged(
    on: &str,
    scope: Option<&str>,
    expires_at: UnixTime,
    config: GuardConfig,
) -> (TestGuard, Password, ShortId) {
    let store = MemoryStore::new();
    let (password, short_id) = mint(&store, scope, expires_at);
    let ec2 = FakeEc2::with(vec![instance(
        on,
        "pending",
        &[("Auth", &password.display())],
    )]);
    (guard_with(store, ec2, config), password, short_id)
}

/// Stores a password minted at NOW-60 for 15 minutes (or as given), scoped to `scope`.
fn mint(store: &MemoryStore, scope: Option<&str>, expires_at: UnixTime) -> (Password, ShortId) {
    let password = Password::generate();
    let short_id = new_short_id();
    store.insert(PasswordRecord {
        short_id: short_id.clone(),
        digest: password.digest(),
        owner: Owner {
            team_id: "T1".into(),
            user_id: "U1".into(),
        },
        channel_id: "C1".into(),
        scope: scope.map(id),
        issued_at: UnixTime(NOW.0 - 60),
        expires_at,
        consumed_by: None,
    });
    (password, short_id)
}

fn event(iid: &str, state: &str) -> Value {
    json!({"version":"0","id":format!("evt-{iid}-{state}"),"detail-type":"EC2 Instance State-change Notification",
        "source":"aws.ec2","account":"123456789012","time":"2026-11-21T10:00:00Z","region":"us-east-1",
        "resources":[format!("arn:aws:ec2:us-east-1:123456789012:instance/{iid}")],
        "detail":{"instance-id":iid,"state":state}})
}

fn inv(name: &str) -> Invocation {
    Invocation {
        request_id: name.into(),
        deadline: Instant::now() + Duration::from_secs(30),
    }
}

async fn run<S>(g: &TestGuard<S>, iid: &str, state: &str) -> Result<Report, GuardError>
where
    S: ConsumeStore + VerdictStore + AlertStore + PasswordLookup + CallerLookup,
{
    g.handle(&event(iid, state), &inv(&format!("req-{state}")))
        .await
        .map(|mut r| r.remove(0))
}

fn verdict_of(r: &Result<Report, GuardError>) -> Option<(&str, Option<&str>, Action)> {
    r.as_ref()
        .ok()
        .map(|r| (r.verdict.as_str(), r.reason.as_deref(), r.action))
}

// ---- decisions -----------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_password_allows_the_start_consumes_it_and_removes_the_tag() {
    // Given a password for A, set as A's Auth tag
    let (g, _, _) = tagged(A, Some(A), NOW.plus(Duration::from_secs(900)), config(&[]));
    // When A enters pending
    let report = run(&g, A, "pending").await;
    // Then the start is allowed: not stopped, tag gone, password consumed by this cycle, no alert
    assert_eq!(verdict_of(&report), Some(("allow", None, Action::None)));
    assert_eq!(g.ec2.calls("stop"), 0);
    assert!(!g.ec2.tags(A).contains_key("Auth"));
    let cycle = Cycle {
        instance: id(A),
        launch_time: LAUNCH,
    };
    assert_eq!(g.store.records()[0].consumed_by, Some(cycle.id()));
    assert!(g.alerts.alerts().is_empty());
    assert_eq!(g.store.verdicts().len(), 1);
}

#[tokio::test]
async fn no_tag_is_denied_missing_stopped_and_alerted() {
    let g = guard(FakeEc2::with(vec![instance(
        A,
        "running",
        &[("Name", "web-prod")],
    )]));
    let report = run(&g, A, "running").await;
    assert_eq!(
        verdict_of(&report),
        Some(("deny", Some("missing"), Action::Stopped))
    );
    assert_eq!(g.ec2.state(A).as_deref(), Some("stopping"));
    let alerts = g.alerts.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        alerts[0].subject(),
        format!("[ec2pass] DENIED start of {A} (web-prod) in 123456789012/us-east-1: missing")
    );
    assert_eq!(
        alerts[0].launch_time.as_deref(),
        Some("2026-11-21T09:59:50Z")
    );
}

fn caller(event_id: &str) -> ec2pass_shared::caller::Caller {
    ec2pass_shared::caller::Caller {
        principal_type: "IAMUser".into(),
        principal_arn: Some("arn:aws:iam::123456789012:user/Mateo".into()),
        account: Some("123456789012".into()),
        user_name: Some("Mateo".into()),
        access_key_id: Some("AKIAIOSFODNN7EXAMPLE".into()),
        session_issuer: None,
        session_created: None,
        mfa: Some(false),
        invoked_by: None,
        source_ip: Some("192.0.2.10".into()),
        user_agent: Some("aws-cli/2.15.0".into()),
        event_name: "StartInstances".into(),
        event_id: event_id.into(),
        event_time: LAUNCH.rfc3339(),
    }
}

/// SPEC §11: CloudTrail's call can arrive before the deny alert goes out. Then the alert says
/// who made the start, and the caller is marked told, so no attribution alert repeats it.
#[tokio::test]
async fn a_deny_alert_carries_the_caller_when_the_call_came_first() {
    use ec2pass_shared::store::CallerStore;
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    let retain = NOW.plus(Duration::from_secs(3600));
    g.store
        .put_call(
            &id(A),
            &caller("ct-1"),
            LAUNCH.minus(Duration::from_secs(1)),
            retain,
        )
        .await
        .unwrap();
    let report = run(&g, A, "running").await;
    assert_eq!(
        verdict_of(&report),
        Some(("deny", Some("missing"), Action::Stopped))
    );
    let alerts = g.alerts.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].caller, Some(caller("ct-1")));
    assert!(
        alerts[0]
            .readable()
            .contains("Started by: arn:aws:iam::123456789012:user/Mateo")
    );
    let cycle = Cycle {
        instance: id(A),
        launch_time: LAUNCH,
    };
    assert_eq!(g.store.caller_of(&cycle), Some((caller("ct-1"), true)));
    // No deny path call was added before the stop: describe, then the stop.
    assert_eq!(g.ec2.calls("describe"), 1);
}

/// The call kept for an instance may be an earlier start's (the instance was started, stopped
/// and started again): a deny alert names a caller only when the call made this start.
#[tokio::test]
async fn a_deny_alert_names_no_caller_of_another_start() {
    use ec2pass_shared::store::CallerStore;
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    let earlier = LAUNCH.minus(Duration::from_secs(3600));
    g.store
        .put_call(
            &id(A),
            &caller("ct-old"),
            earlier,
            NOW.plus(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    run(&g, A, "running").await.unwrap();
    let alerts = g.alerts.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].caller, None);
    let cycle = Cycle {
        instance: id(A),
        launch_time: LAUNCH,
    };
    assert_eq!(g.store.caller_of(&cycle), None);
}

#[tokio::test]
async fn a_tag_that_is_not_a_password_we_issued_is_unknown() {
    for tag in ["letmein".to_owned(), Password::generate().display()] {
        let g = guard(FakeEc2::with(vec![instance(
            A,
            "pending",
            &[("Auth", &tag)],
        )]));
        let report = run(&g, A, "pending").await;
        assert_eq!(
            verdict_of(&report),
            Some(("deny", Some("unknown"), Action::Stopped)),
            "{tag}"
        );
        assert!(
            !g.ec2.tags(A).contains_key("Auth"),
            "the tag is removed on a deny too"
        );
    }
}

#[tokio::test]
async fn an_expired_password_is_denied_expired() {
    let (g, password, short_id) = tagged(A, Some(A), UnixTime(NOW.0 - 1), config(&[]));
    let report = run(&g, A, "pending").await;
    assert_eq!(
        verdict_of(&report),
        Some(("deny", Some("expired"), Action::Stopped))
    );
    let alert = &g.alerts.alerts()[0];
    assert_eq!(alert.password_short_id.as_deref(), Some(short_id.as_str()));
    assert_eq!(alert.issuer_user_id.as_deref(), Some("U1"));
    assert!(!alert.message().contains(password.canonical()));
}

#[tokio::test]
async fn a_password_used_by_another_start_is_denied_reused() {
    // Given a password already consumed by an earlier start of A
    let (first, password, _) = tagged(A, Some(A), NOW.plus(Duration::from_secs(900)), config(&[]));
    assert_eq!(
        verdict_of(&run(&first, A, "pending").await).map(|v| v.0),
        Some("allow")
    );
    // When A is started again (new LaunchTime) with the same password
    let mut again = instance(A, "pending", &[("Auth", &password.display())]);
    again.launch_time = Some(UnixTime(LAUNCH.0 + 600));
    first.ec2.put(again);
    let report = run(&first, A, "pending").await;
    // Then it is denied as reused
    assert_eq!(
        verdict_of(&report),
        Some(("deny", Some("reused"), Action::Stopped))
    );
}

#[tokio::test]
async fn a_password_for_another_instance_is_denied_and_burned() {
    // Given a password minted for A, presented on B
    let store = MemoryStore::new();
    let (password, _) = mint(&store, Some(A), NOW.plus(Duration::from_secs(900)));
    let g = guard_with(
        store,
        FakeEc2::with(vec![
            instance(B, "pending", &[("Auth", &password.display())]),
            instance(A, "pending", &[("Auth", &password.display())]),
        ]),
        config(&[]),
    );
    // Then B is denied wrong-instance
    assert_eq!(
        verdict_of(&run(&g, B, "pending").await),
        Some(("deny", Some("wrong-instance"), Action::Stopped))
    );
    // And the password can no longer start A either: it leaked, so it was burned
    assert_eq!(
        verdict_of(&run(&g, A, "pending").await),
        Some(("deny", Some("reused"), Action::Stopped))
    );
}

#[tokio::test]
async fn exempt_instances_are_recorded_and_untagged_but_never_stopped() {
    let quiet = ("EC2PASS_ALERT_EXEMPTIONS", "false");
    for (tags, extra) in [
        (vec![("ec2pass:exempt", "true"), ("Auth", "x")], vec![quiet]),
        (
            vec![("aws:autoscaling:groupName", "web"), ("Auth", "x")],
            vec![quiet, ("EC2PASS_EXEMPT_GROUPS", "web")],
        ),
        (
            vec![("Auth", "x")],
            vec![quiet, ("EC2PASS_GUARD_MODE", "opt-in")],
        ),
    ] {
        let g = guard_with(
            MemoryStore::new(),
            FakeEc2::with(vec![instance(A, "running", &tags)]),
            config(&extra),
        );
        assert_eq!(
            verdict_of(&run(&g, A, "running").await),
            Some(("exempt", None, Action::None)),
            "{tags:?}"
        );
        assert_eq!(
            (g.ec2.calls("stop"), g.ec2.calls("untag")),
            (0, 1),
            "{tags:?}"
        );
        assert!(g.alerts.alerts().is_empty());
    }
    // By default every exemption is announced: an exemption is a door.
    let audited = guard_with(
        MemoryStore::new(),
        FakeEc2::with(vec![instance(A, "running", &[("ec2pass:exempt", "true")])]),
        config(&[]),
    );
    run(&audited, A, "running").await.ok();
    assert_eq!(
        audited
            .alerts
            .alerts()
            .iter()
            .map(|a| a.verdict.as_str())
            .collect::<Vec<_>>(),
        ["exempt"]
    );
}

#[tokio::test]
async fn audit_mode_alerts_allows_with_the_passwords_short_id() {
    let (g, _, short_id) = tagged(
        A,
        Some(A),
        NOW.plus(Duration::from_secs(900)),
        config(&[("EC2PASS_AUDIT_ALERTS", "true")]),
    );
    run(&g, A, "pending").await.ok();
    let alerts = g.alerts.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (
            alerts[0].verdict.as_str(),
            alerts[0].password_short_id.as_deref()
        ),
        ("allow", Some(short_id.as_str()))
    );
}

#[tokio::test]
async fn a_tagless_pending_instance_is_described_again_before_a_deny() {
    // Given an instance whose tags arrive just after the pending event
    let store = MemoryStore::new();
    let (password, _) = mint(&store, Some(A), NOW.plus(Duration::from_secs(900)));
    let ec2 = FakeEc2::with(vec![instance(A, "pending", &[])]);
    lock(&ec2.second_looks).push_back(instance(A, "pending", &[("Auth", &password.display())]));
    let g = guard_with(store, ec2, config(&[("EC2PASS_TAG_RETRY_DELAY", "1s")]));
    // Then the second look finds the password and allows
    assert_eq!(
        verdict_of(&run(&g, A, "pending").await).map(|v| v.0),
        Some("allow")
    );
    assert_eq!(g.ec2.calls("describe"), 2);
}

// ---- duplicates, retries and races --------------------------------------------------------

#[tokio::test]
async fn a_duplicate_pending_event_enforces_the_first_verdict_and_decides_nothing() {
    let (g, _, _) = tagged(A, Some(A), NOW.plus(Duration::from_secs(900)), config(&[]));
    let first = run(&g, A, "pending").await;
    // The tag is gone now, so the duplicate sees no tag: a missing deny it must not act on
    let second = run(&g, A, "pending").await;
    let running = run(&g, A, "running").await;
    assert_eq!(
        first
            .as_ref()
            .map(|r| (r.verdict.as_str(), r.decided_here))
            .ok(),
        Some(("allow", true))
    );
    for r in [&second, &running] {
        assert_eq!(
            r.as_ref()
                .map(|r| (r.verdict.as_str(), r.decided_here))
                .ok(),
            Some(("allow", false))
        );
    }
    assert_eq!(
        g.ec2.calls("stop"),
        0,
        "an allowed instance is never stopped"
    );
    assert_eq!(g.store.verdicts().len(), 1);
    assert!(g.alerts.alerts().is_empty());
}

#[tokio::test]
async fn a_retry_after_the_passwords_expiry_still_sees_its_own_consumption() {
    // Given a start allowed a second before the password expired
    let (g, password, _) = tagged(A, Some(A), NOW.plus(Duration::from_secs(1)), config(&[]));
    assert_eq!(
        verdict_of(&run(&g, A, "pending").await).map(|v| v.0),
        Some("allow")
    );
    // When the verdict is lost (say the retry runs against a fresh store copy) and the same cycle
    // presents the same password after expiry, the consumption condition still passes for it
    let records = g.store.records();
    let later = guard_with(
        MemoryStore::new(),
        FakeEc2::with(vec![instance(
            A,
            "pending",
            &[("Auth", &password.display())],
        )]),
        config(&[]),
    );
    for r in records {
        later.store.insert(r);
    }
    let later = Guard {
        clock: FixedClock(NOW.plus(Duration::from_secs(120))),
        ..later
    };
    assert_eq!(
        verdict_of(&run(&later, A, "pending").await).map(|v| v.0),
        Some("allow")
    );
}

#[tokio::test]
async fn a_deny_is_alerted_exactly_once_across_duplicates() {
    let g = guard(FakeEc2::with(vec![instance(A, "pending", &[])]));
    let g = Guard {
        config: config(&[("EC2PASS_TAG_RETRY_DELAY", "1s")]),
        ..g
    };
    for state in ["pending", "pending", "running"] {
        run(&g, A, state).await.ok();
    }
    assert_eq!(g.alerts.alerts().len(), 1);
    assert_eq!(g.store.verdicts().len(), 1);
}

#[tokio::test]
async fn a_failed_publish_is_retried_by_the_next_invocation_and_sent_once() {
    // Given SNS failing once
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    *lock(&g.alerts.failures) = 1;
    // When the first invocation denies, its publish fails: it returns an error (Lambda retries)
    let first = run(&g, A, "running").await;
    assert_eq!(first.as_ref().err().map(|e| e.what), Some("publish"));
    assert_eq!(
        g.ec2.state(A).as_deref(),
        Some("stopping"),
        "the stop happened before the alert"
    );
    // Then the retry enforces the recorded deny and publishes the alert, once
    let retry = run(&g, A, "running").await;
    assert!(retry.as_ref().is_ok_and(|r| r.alerted && !r.decided_here));
    run(&g, A, "running").await.ok();
    assert_eq!(g.alerts.alerts().len(), 1);
}

// ---- enforcement ---------------------------------------------------------------------------

#[tokio::test]
async fn a_pending_instance_that_refuses_to_stop_is_retried_until_it_stops() {
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    lock(&g.ec2.stop_script).extend([Err(StopError::NotYet), Err(StopError::NotYet), Ok(())]);
    assert_eq!(
        verdict_of(&run(&g, A, "running").await),
        Some(("deny", Some("missing"), Action::Stopped))
    );
    assert_eq!(g.ec2.calls("stop"), 3);
}

#[tokio::test]
async fn a_stop_still_refused_at_the_deadline_is_stop_pending() {
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    lock(&g.ec2.stop_script).extend(std::iter::repeat_n(Err(StopError::NotYet), 50));
    let short = Invocation {
        request_id: "r".into(),
        deadline: Instant::now() + Duration::from_millis(700),
    };
    let report = g
        .handle(&event(A, "running"), &short)
        .await
        .map(|mut r| r.remove(0));
    assert_eq!(
        verdict_of(&report),
        Some(("deny", Some("missing"), Action::StopPending))
    );
    assert_eq!(g.alerts.alerts()[0].action, Action::StopPending);
}

#[tokio::test]
async fn unstoppable_instances_are_alerted_or_terminated_as_configured() {
    let mut store_root = instance(A, "running", &[]);
    store_root.root_device_type = Some("instance-store".into());
    let mut spot = instance(B, "running", &[]);
    spot.spot = true;
    for (target, f) in [(A, store_root), (B, spot)] {
        // By default a launch flag does not beat the guard: what cannot stop is terminated.
        let g = guard(FakeEc2::with(vec![f.clone()]));
        lock(&g.ec2.stop_script).push_back(Err(StopError::Unstoppable));
        assert_eq!(
            verdict_of(&run(&g, target, "running").await).map(|v| v.2),
            Some(Action::Terminated)
        );
        assert_eq!(g.ec2.calls("terminate"), 1);
        assert_eq!(g.ec2.state(target).as_deref(), Some("shutting-down"));

        let g = guard_with(
            MemoryStore::new(),
            FakeEc2::with(vec![f]),
            config(&[("EC2PASS_UNSTOPPABLE_ACTION", "alert-only")]),
        );
        lock(&g.ec2.stop_script).push_back(Err(StopError::Unstoppable));
        assert_eq!(
            verdict_of(&run(&g, target, "running").await).map(|v| v.2),
            Some(Action::AlertOnly)
        );
        assert_eq!(g.ec2.calls("terminate"), 0);
    }
}

#[tokio::test]
async fn termination_protection_does_not_keep_an_unstoppable_instance_running() {
    // Given a one-time Spot instance launched with --disable-api-termination
    let mut spot = instance(A, "running", &[]);
    spot.spot = true;
    let g = guard(FakeEc2::with(vec![spot]));
    lock(&g.ec2.stop_script).push_back(Err(StopError::Unstoppable));
    lock(&g.ec2.terminate_script).push_back(Err(StopError::Protected));
    // Then the guard clears the protection and terminates it
    assert_eq!(
        verdict_of(&run(&g, A, "running").await),
        Some(("deny", Some("missing"), Action::Terminated))
    );
    assert_eq!(
        (
            g.ec2.calls("terminate"),
            g.ec2.calls("clear-termination-protection")
        ),
        (2, 1)
    );
    assert_eq!(g.ec2.state(A).as_deref(), Some("shutting-down"));
}

#[tokio::test]
async fn stop_protection_is_cleared_by_default_and_alerted_only_on_request() {
    // Given an instance launched with --disable-api-stop: by default it is cleared and stopped
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    lock(&g.ec2.stop_script).push_back(Err(StopError::Protected));
    assert_eq!(
        verdict_of(&run(&g, A, "running").await).map(|v| v.2),
        Some(Action::Stopped)
    );
    assert_eq!(
        (g.ec2.calls("clear-protection"), g.ec2.calls("stop")),
        (1, 2)
    );
    assert_eq!(g.ec2.state(A).as_deref(), Some("stopping"));

    let g = guard_with(
        MemoryStore::new(),
        FakeEc2::with(vec![instance(A, "running", &[])]),
        config(&[("EC2PASS_CLEAR_STOP_PROTECTION", "false")]),
    );
    lock(&g.ec2.stop_script).push_back(Err(StopError::Protected));
    assert_eq!(
        verdict_of(&run(&g, A, "running").await).map(|v| v.2),
        Some(Action::AlertOnly)
    );
    assert_eq!(g.ec2.calls("clear-protection"), 0);
}

#[tokio::test]
async fn an_instance_that_is_gone_is_logged_and_done() {
    let g = guard(FakeEc2::default());
    let report = run(&g, A, "pending").await;
    assert_eq!(verdict_of(&report), Some(("none", None, Action::None)));
    assert!(g.store.verdicts().is_empty() && g.alerts.alerts().is_empty());
}

#[tokio::test]
async fn an_event_about_a_start_that_is_over_changes_nothing() {
    // Given an instance already stopped (or terminated) when its event arrives
    for state in ["stopping", "stopped", "shutting-down", "terminated"] {
        let g = guard(FakeEc2::with(vec![instance(A, state, &[])]));
        // Then nothing is decided, stopped, recorded or alerted
        assert_eq!(
            verdict_of(&run(&g, A, "running").await),
            Some(("none", None, Action::None)),
            "{state}"
        );
        assert_eq!(g.ec2.calls("stop"), 0, "{state}");
        assert!(g.store.verdicts().is_empty() && g.alerts.alerts().is_empty());
    }
}

#[tokio::test]
async fn a_failed_untag_does_not_undo_the_verdict() {
    let store = MemoryStore::new();
    let (password, _) = mint(&store, Some(A), NOW.plus(Duration::from_secs(900)));
    let ec2 = FakeEc2 {
        untag_fails: true,
        ..FakeEc2::with(vec![instance(
            A,
            "pending",
            &[("Auth", &password.display())],
        )])
    };
    let g = guard_with(store, ec2, config(&[]));
    assert_eq!(
        verdict_of(&run(&g, A, "pending").await).map(|v| v.0),
        Some("allow")
    );
}

// ---- AWS unreachable -----------------------------------------------------------------------

/// A table that cannot be reached.
struct DownStore;

fn down(operation: &'static str) -> StoreError {
    StoreError::Unavailable {
        operation,
        message: "dispatch failure: connection refused".into(),
    }
}

impl ConsumeStore for DownStore {
    async fn consume(&self, _: &Consume) -> Result<ConsumeOutcome, StoreError> {
        Err(down("TransactWriteItems"))
    }
    async fn burn(&self, _: &Digest, _: &Cycle) -> Result<(), StoreError> {
        Err(down("UpdateItem"))
    }
}
impl VerdictStore for DownStore {
    async fn record(&self, _: &VerdictRecord) -> Result<Recorded, StoreError> {
        Err(down("PutItem"))
    }
    async fn verdict(&self, _: &Cycle) -> Result<Option<VerdictRecord>, StoreError> {
        Err(down("GetItem"))
    }
    async fn verdicts(&self, _: &[Cycle]) -> Result<HashMap<String, VerdictRecord>, StoreError> {
        Err(down("BatchGetItem"))
    }
    async fn annotate(&self, _: &Cycle, _: &ShortId, _: &Owner) -> Result<(), StoreError> {
        Err(down("UpdateItem"))
    }
    async fn withdraw_exemption(&self, _: &Cycle) -> Result<bool, StoreError> {
        Err(down("DeleteItem"))
    }
    async fn activation(&self) -> Result<UnixTime, StoreError> {
        // The activation is read once per cold start; these tests are about what comes after.
        Ok(UnixTime(0))
    }
}
impl AlertStore for DownStore {
    async fn claim_alert(&self, _: &Cycle, _: &str, _: UnixTime) -> Result<bool, StoreError> {
        Err(down("UpdateItem"))
    }
    async fn release_alert(&self, _: &Cycle, _: &str) -> Result<(), StoreError> {
        Err(down("UpdateItem"))
    }
    async fn alert_sent(&self, _: &Cycle, _: UnixTime) -> Result<(), StoreError> {
        Err(down("UpdateItem"))
    }
    async fn due_alerts(&self, _: UnixTime, _: usize) -> Result<Vec<VerdictRecord>, StoreError> {
        Err(down("Query"))
    }
}
impl CallerLookup for DownStore {
    async fn call_for(
        &self,
        _: &InstanceId,
    ) -> Result<Option<(ec2pass_shared::caller::Caller, UnixTime)>, StoreError> {
        Err(down("GetItem"))
    }
    async fn claim_tell(
        &self,
        _: &Cycle,
        _: &ec2pass_shared::caller::Caller,
        _: ec2pass_shared::store::TellClaim,
    ) -> Result<bool, StoreError> {
        Err(down("UpdateItem"))
    }
}
impl PasswordLookup for DownStore {
    async fn find(&self, _: &Digest) -> Result<Option<PasswordRecord>, StoreError> {
        Err(down("GetItem"))
    }
}
#[tokio::test]
async fn with_dynamodb_unreachable_the_guard_fails_closed() {
    for tags in [vec![], vec![("Auth", "k7qm-2x9f-h4tr-8wzn-c3pd")]] {
        // Given DynamoDB unreachable
        let g = guard_with(
            DownStore,
            FakeEc2::with(vec![instance(A, "running", &tags)]),
            config(&[]),
        );
        // When A starts
        let result = run(&g, A, "running").await;
        // Then the guard stops it, publishes guard-error, and returns an error for Lambda to retry
        assert!(result.is_err(), "{tags:?}");
        assert_eq!(g.ec2.state(A).as_deref(), Some("stopping"));
        let alerts = g.alerts.alerts();
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].verdict.as_str(), alerts[0].action),
            ("guard-error", Action::Stopped)
        );
    }
}

#[tokio::test]
async fn with_fail_open_configured_an_outage_alerts_but_does_not_stop() {
    let g = guard_with(
        DownStore,
        FakeEc2::with(vec![instance(A, "running", &[])]),
        config(&[("EC2PASS_FAIL_MODE", "open")]),
    );
    let result = run(&g, A, "running").await;
    assert!(result.is_err());
    assert_eq!(g.ec2.calls("stop"), 0);
    assert_eq!(g.alerts.alerts()[0].action, Action::None);
}

#[tokio::test]
async fn with_ec2_unreachable_the_guard_still_tries_to_stop() {
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    lock(&g.ec2.describe_failures).push_back(aws_error("DescribeInstances"));
    let result = run(&g, A, "running").await;
    assert_eq!(result.err().map(|e| e.what), Some("describe"));
    assert_eq!(g.ec2.calls("stop"), 1);
    assert_eq!(g.alerts.alerts()[0].reason, "describe");
}

#[tokio::test]
async fn a_stop_that_fails_after_retries_is_an_error_and_an_alert() {
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    lock(&g.ec2.stop_script).push_back(Err(StopError::Failed(aws_error("StopInstances"))));
    let result = run(&g, A, "running").await;
    assert_eq!(result.err().map(|e| e.what), Some("stop"));
    assert!(
        g.alerts
            .alerts()
            .iter()
            .any(|a| a.verdict == "guard-error" && a.reason == "stop")
    );
}

#[tokio::test]
async fn a_deny_whose_stop_failed_is_alerted_once_by_the_retry() {
    // Given StopInstances failing (past the SDK's retries) once
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    lock(&g.ec2.stop_script).push_back(Err(StopError::Failed(aws_error("StopInstances"))));
    // When the deny is recorded but its stop fails, the invocation fails and Lambda retries it
    let first = run(&g, A, "running").await;
    assert_eq!(first.err().map(|e| e.what), Some("stop"));
    let retry = run(&g, A, "running").await;
    // Then the retry stops it and publishes the deny alert the first invocation gave back
    assert!(
        retry
            .as_ref()
            .is_ok_and(|r| r.action == Action::Stopped && r.alerted && !r.decided_here),
        "{retry:?}"
    );
    run(&g, A, "running").await.ok();
    let alerts: Vec<_> = g
        .alerts
        .alerts()
        .iter()
        .map(|a| (a.verdict.clone(), a.reason.clone()))
        .collect();
    assert_eq!(
        alerts,
        [
            ("guard-error".to_owned(), "stop".to_owned()),
            ("deny".to_owned(), "missing".to_owned())
        ]
    );
}

/// The in-memory table, with the next verdict writes failing.
struct FlakyRecord {
    inner: MemoryStore,
    failures: Mutex<u32>,
    activation_fails: bool,
}

impl ConsumeStore for FlakyRecord {
    async fn consume(&self, c: &Consume) -> Result<ConsumeOutcome, StoreError> {
        self.inner.consume(c).await
    }
    async fn burn(&self, digest: &Digest, cycle: &Cycle) -> Result<(), StoreError> {
        self.inner.burn(digest, cycle).await
    }
}
impl VerdictStore for FlakyRecord {
    async fn record(&self, v: &VerdictRecord) -> Result<Recorded, StoreError> {
        {
            let mut failures = lock(&self.failures);
            if *failures > 0 {
                *failures -= 1;
                return Err(down("PutItem"));
            }
        }
        self.inner.record(v).await
    }
    async fn verdict(&self, cycle: &Cycle) -> Result<Option<VerdictRecord>, StoreError> {
        self.inner.verdict(cycle).await
    }
    async fn verdicts(
        &self,
        cycles: &[Cycle],
    ) -> Result<HashMap<String, VerdictRecord>, StoreError> {
        VerdictStore::verdicts(&self.inner, cycles).await
    }
    async fn annotate(&self, c: &Cycle, id: &ShortId, o: &Owner) -> Result<(), StoreError> {
        self.inner.annotate(c, id, o).await
    }
    async fn withdraw_exemption(&self, cycle: &Cycle) -> Result<bool, StoreError> {
        self.inner.withdraw_exemption(cycle).await
    }
    async fn activation(&self) -> Result<UnixTime, StoreError> {
        if self.activation_fails {
            return Err(down("DescribeTable"));
        }
        self.inner.activation().await
    }
}
impl AlertStore for FlakyRecord {
    async fn claim_alert(&self, c: &Cycle, owner: &str, now: UnixTime) -> Result<bool, StoreError> {
        self.inner.claim_alert(c, owner, now).await
    }
    async fn release_alert(&self, cycle: &Cycle, owner: &str) -> Result<(), StoreError> {
        self.inner.release_alert(cycle, owner).await
    }
    async fn alert_sent(&self, cycle: &Cycle, now: UnixTime) -> Result<(), StoreError> {
        self.inner.alert_sent(cycle, now).await
    }
    async fn due_alerts(
        &self,
        now: UnixTime,
        limit: usize,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        self.inner.due_alerts(now, limit).await
    }
}
impl CallerLookup for FlakyRecord {
    async fn call_for(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(ec2pass_shared::caller::Caller, UnixTime)>, StoreError> {
        self.inner.call_for(id).await
    }
    async fn claim_tell(
        &self,
        cycle: &Cycle,
        caller: &ec2pass_shared::caller::Caller,
        claim: ec2pass_shared::store::TellClaim,
    ) -> Result<bool, StoreError> {
        self.inner.claim_tell(cycle, caller, claim).await
    }
}
impl PasswordLookup for FlakyRecord {
    async fn find(&self, digest: &Digest) -> Result<Option<PasswordRecord>, StoreError> {
        self.inner.find(digest).await
    }
}

#[tokio::test]
async fn a_failed_verdict_write_keeps_the_tag_so_the_retry_denies_for_the_same_reason() {
    // Given an expired password on A, and the verdict write failing once
    let store = MemoryStore::new();
    let (password, short_id) = mint(&store, Some(A), UnixTime(NOW.0 - 1));
    let g = guard_with(
        FlakyRecord {
            inner: store,
            failures: Mutex::new(1),
            activation_fails: false,
        },
        FakeEc2::with(vec![instance(
            A,
            "pending",
            &[("Auth", &password.display())],
        )]),
        config(&[]),
    );
    // When the deny cannot be recorded while the fresh instance still refuses to stop, the
    // invocation fails
    lock(&g.ec2.stop_script).extend([Err(StopError::NotYet), Err(StopError::NotYet)]);
    let short = Invocation {
        request_id: "req-pending".into(),
        deadline: Instant::now() + Duration::from_millis(100),
    };
    let first = g.handle(&event(A, "pending"), &short).await;
    assert_eq!(first.err().map(|e| e.what), Some("record-verdict"));
    assert!(
        g.ec2.tags(A).contains_key("Auth"),
        "the tag stays until the verdict is recorded"
    );
    // Then Lambda's retry still sees the password: the same reason, with its short id
    assert_eq!(
        verdict_of(&run(&g, A, "pending").await),
        Some(("deny", Some("expired"), Action::Stopped))
    );
    // (Had the first invocation stopped the instance, the retry would find the start over and
    // change nothing: the stop and the guard-error alert stand; see
    // `an_event_about_a_start_that_is_over_changes_nothing`.)
    let deny = g.alerts.alerts().into_iter().find(|a| a.verdict == "deny");
    assert_eq!(
        deny.and_then(|a| a.password_short_id).as_deref(),
        Some(short_id.as_str())
    );
    assert!(!g.ec2.tags(A).contains_key("Auth"));
}

#[tokio::test]
async fn malformed_events_are_acknowledged_without_touching_anything() {
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    for payload in [
        json!({}),
        json!("x"),
        event(A, "stopped"),
        json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {}}),
    ] {
        assert_eq!(g.handle(&payload, &inv("r")).await, Ok(vec![]));
    }
    assert!(lock(&g.ec2.calls).is_empty());
}

// ---- sweep ---------------------------------------------------------------------------------

fn sweep_event() -> Value {
    json!({"version":"0","id":"s-1","detail-type":"Scheduled Event","source":"aws.events",
        "account":"123456789012","time":"2026-11-21T10:05:00Z","region":"us-east-1","resources":[],"detail":{}})
}

#[tokio::test]
async fn the_sweep_decides_undecided_starts_since_activation_and_leaves_older_ones_alone() {
    // Given the guard activated at LAUNCH-100; A launched after with no verdict, B before it
    let mut old = instance(B, "running", &[]);
    old.launch_time = Some(UnixTime(LAUNCH.0 - 1_000));
    let g = guard_with(
        MemoryStore::new(),
        FakeEc2::with(vec![instance(A, "running", &[]), old]),
        config(&[("EC2PASS_ACTIVATION_TIME", "1795255090")]),
    );
    // When the sweep runs
    let reports = g.handle(&sweep_event(), &inv("sweep")).await;
    // Then A is decided and stopped, B untouched
    let decided: Vec<_> = reports
        .iter()
        .flatten()
        .map(|r| (r.instance_id.clone(), r.verdict.clone()))
        .collect();
    assert_eq!(decided, vec![(A.to_owned(), "deny".to_owned())]);
    assert_eq!(g.ec2.state(A).as_deref(), Some("stopping"));
    assert_eq!(g.ec2.state(B).as_deref(), Some("running"));
    // And a second sweep finds nothing new to decide
    assert_eq!(
        g.handle(&sweep_event(), &inv("sweep-2"))
            .await
            .map(|r| r.len()),
        Ok(0)
    );
}

#[tokio::test]
async fn the_sweeps_retry_stops_a_denied_instance_whose_stop_failed() {
    // Given a start whose events were lost, and StopInstances failing once
    let g = guard_with(
        MemoryStore::new(),
        FakeEc2::with(vec![instance(A, "running", &[])]),
        config(&[("EC2PASS_ACTIVATION_TIME", "1795255090")]),
    );
    lock(&g.ec2.stop_script).push_back(Err(StopError::Failed(aws_error("StopInstances"))));
    // When the sweep records the deny but cannot stop it, it fails; Lambda retries it
    let first = g.handle(&sweep_event(), &inv("sweep")).await;
    assert_eq!(first.err().map(|e| e.what), Some("stop"));
    assert_eq!(g.ec2.state(A).as_deref(), Some("running"));
    let retry = g.handle(&sweep_event(), &inv("sweep")).await;
    // Then the retry enforces the recorded deny (deciding nothing anew) and alerts it, once
    let enforced: Vec<_> = retry
        .iter()
        .flatten()
        .map(|r| (r.verdict.as_str(), r.decided_here, r.action, r.alerted))
        .collect();
    assert_eq!(enforced, [("deny", false, Action::Stopped, true)]);
    assert_eq!(g.ec2.state(A).as_deref(), Some("stopping"));
    assert_eq!(g.store.verdicts().len(), 1);
    assert_eq!(
        g.alerts
            .alerts()
            .iter()
            .filter(|a| a.verdict == "deny")
            .count(),
        1
    );
}

#[tokio::test]
async fn without_a_configured_activation_the_tables_creation_is_the_activation() {
    // The table was created (the stack deployed) after A was launched: A predates the guard
    let g = guard_with(
        MemoryStore::activated_at(UnixTime(LAUNCH.0 + 1)),
        FakeEc2::with(vec![instance(A, "running", &[])]),
        config(&[]),
    );
    assert_eq!(
        g.handle(&sweep_event(), &inv("sweep"))
            .await
            .map(|r| r.len()),
        Ok(0)
    );
    assert_eq!(g.ec2.state(A).as_deref(), Some("running"));
    // A start after the deploy is swept at once: not only after a first sweep has run
    let g = guard_with(
        MemoryStore::activated_at(UnixTime(LAUNCH.0 - 1)),
        FakeEc2::with(vec![instance(A, "running", &[])]),
        config(&[]),
    );
    let swept = g.handle(&sweep_event(), &inv("sweep")).await;
    assert_eq!(
        swept
            .ok()
            .map(|r| r.iter().map(|r| r.verdict.clone()).collect::<Vec<_>>()),
        Some(vec!["deny".to_owned()])
    );
}

#[tokio::test]
async fn the_sweep_leaves_a_tagless_pending_instance_for_later() {
    // Given a launch the sweep lists before its tags (a valid password among them) are visible
    let store = MemoryStore::new();
    let (password, _) = mint(&store, Some(A), NOW.plus(Duration::from_secs(900)));
    let ec2 = FakeEc2::with(vec![instance(A, "pending", &[])]);
    let g = guard_with(
        store,
        ec2,
        config(&[("EC2PASS_ACTIVATION_TIME", "1795255090")]),
    );
    // When the sweep comes upon it
    let reports = g.handle(&sweep_event(), &inv("sweep")).await;
    // Then it decides nothing yet (no deny of a legitimate start) and waits for nothing
    let verdicts: Vec<_> = reports
        .iter()
        .flatten()
        .map(|r| (r.verdict.clone(), r.hand_back))
        .collect();
    assert_eq!(verdicts, vec![("none".to_owned(), true)]);
    assert!(g.store.verdicts().is_empty());
    assert_eq!(g.ec2.calls("stop"), 0);
    assert_eq!(
        g.ec2.calls("describe"),
        0,
        "no pause and second look inside the sweep"
    );
    // And the next sweep, with the tag visible, allows it
    g.ec2
        .put(instance(A, "running", &[("Auth", &password.display())]));
    let reports = g.handle(&sweep_event(), &inv("sweep-2")).await;
    let verdicts: Vec<_> = reports
        .iter()
        .flatten()
        .map(|r| r.verdict.clone())
        .collect();
    assert_eq!(verdicts, vec!["allow".to_owned()]);
    assert_eq!(g.ec2.calls("stop"), 0);
}

#[tokio::test]
async fn an_audit_alert_whose_publish_failed_is_published_by_the_retry() {
    // Given audit alerts on, and SNS failing once
    let (g, _, _) = tagged(
        A,
        Some(A),
        NOW.plus(Duration::from_secs(900)),
        config(&[("EC2PASS_AUDIT_ALERTS", "true")]),
    );
    *lock(&g.alerts.failures) = 1;
    // When the allowing invocation cannot publish, it fails so that Lambda retries
    let first = run(&g, A, "pending").await;
    assert_eq!(first.as_ref().err().map(|e| e.what), Some("publish"));
    // Then the retry, which finds the recorded allow, publishes it once, and nothing is stopped
    let retry = run(&g, A, "pending").await;
    assert!(
        retry
            .as_ref()
            .is_ok_and(|r| r.verdict == "allow" && r.alerted),
        "{retry:?}"
    );
    run(&g, A, "running").await.ok();
    assert_eq!(
        g.alerts
            .alerts()
            .iter()
            .map(|a| a.verdict.as_str())
            .collect::<Vec<_>>(),
        ["allow"]
    );
    assert_eq!(g.ec2.calls("stop"), 0);
}

// ---- the attacker playbook (docs/threat-model.md) ------------------------------------------

/// The cycle of `iid` at LAUNCH.
fn cycle_of(iid: &str) -> Cycle {
    Cycle {
        instance: id(iid),
        launch_time: LAUNCH,
    }
}

#[tokio::test]
async fn an_authorized_server_still_running_after_its_verdict_aged_out_is_never_stopped() {
    // Given a start allowed on day 0 with the shortest retention the configuration accepts
    let (mut g, _, _) = tagged(
        A,
        Some(A),
        NOW.plus(Duration::from_secs(900)),
        config(&[
            ("EC2PASS_ACTIVATION_TIME", "1795255090"),
            ("EC2PASS_VERDICT_RETENTION", "90d"),
        ]),
    );
    assert_eq!(
        verdict_of(&run(&g, A, "pending").await).map(|v| v.0),
        Some("allow")
    );
    // When the server is still running on day 91, its verdict deleted by the table's TTL
    let day_91 = NOW.plus(Duration::from_secs(91 * 86_400));
    g.store.expire_verdicts(day_91);
    assert!(g.store.verdicts().is_empty(), "the TTL took the verdict");
    g.clock = FixedClock(day_91);
    let swept = g.handle(&sweep_event(), &inv("sweep-day-91")).await;
    // Then the sweep leaves it alone: time never stops an authorized server
    assert_eq!(swept.map(|r| r.len()), Ok(0));
    assert_eq!(g.ec2.calls("stop"), 0);
    assert!(g.store.verdicts().is_empty() && g.alerts.alerts().is_empty());
    // Nor does a (forged or very late) event about that start
    assert_eq!(
        verdict_of(&run(&g, A, "running").await),
        Some(("none", None, Action::None))
    );
    assert_eq!(g.ec2.calls("stop"), 0);
}

#[tokio::test]
async fn a_late_duplicate_of_a_denied_start_leaves_the_next_starts_password_alone() {
    // Given a start denied and stopped
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    run(&g, A, "running").await.ok();
    assert_eq!(g.ec2.state(A).as_deref(), Some("stopping"));
    // and the operator has since minted a password and tagged it for the next start
    let (password, _) = mint(&g.store, Some(A), NOW.plus(Duration::from_secs(900)));
    let mut stopped = instance(A, "stopped", &[("Auth", &password.display())]);
    stopped.launch_time = Some(LAUNCH);
    g.ec2.put(stopped);
    // When a late duplicate of the old start's event arrives
    let late = run(&g, A, "pending").await;
    // Then it changes nothing: the tag and the password are there for the next start
    assert_eq!(verdict_of(&late), Some(("none", None, Action::None)));
    assert_eq!(
        g.ec2.tags(A).get("Auth").map(String::as_str),
        Some(password.display().as_str())
    );
    assert_eq!(g.ec2.calls("untag"), 0);
    assert!(g.store.records().iter().all(|r| r.consumed_by.is_none()));
    assert_eq!(g.store.verdicts().len(), 1);
}

#[tokio::test]
async fn a_tag_is_removed_only_while_it_holds_the_value_the_verdict_was_about() {
    // Given a deny whose stop is still pending at the deadline (a fresh instance)
    let g = guard(FakeEc2::with(vec![instance(A, "pending", &[])]));
    lock(&g.ec2.stop_script).extend([Err(StopError::NotYet), Err(StopError::NotYet)]);
    let short = Invocation {
        request_id: "req-pending".into(),
        deadline: Instant::now() + Duration::from_millis(300),
    };
    g.handle(&event(A, "pending"), &short).await.ok();
    // and a password tagged since, for the next start
    let (password, _) = mint(&g.store, Some(A), NOW.plus(Duration::from_secs(900)));
    g.ec2
        .put(instance(A, "running", &[("Auth", &password.display())]));
    // When the running event enforces the deny
    let report = run(&g, A, "running").await;
    // Then the instance is stopped, but the new password's tag is not the deny's to remove
    assert_eq!(
        verdict_of(&report),
        Some(("deny", Some("missing"), Action::Stopped))
    );
    assert!(g.ec2.tags(A).contains_key("Auth"));
    assert!(g.store.records().iter().all(|r| r.consumed_by.is_none()));
}

#[tokio::test]
async fn a_forged_event_about_an_instance_that_predates_the_guard_touches_nothing() {
    // Given the stack deployed (table created) after A last started
    let g = guard_with(
        MemoryStore::activated_at(UnixTime(LAUNCH.0 + 60)),
        FakeEc2::with(vec![instance(A, "running", &[])]),
        config(&[]),
    );
    // When someone invokes the guard directly with a forged running event for A
    for state in ["pending", "running"] {
        let report = run(&g, A, state).await;
        // Then A is neither decided nor stopped
        assert_eq!(verdict_of(&report), Some(("none", None, Action::None)));
    }
    assert_eq!(g.ec2.calls("stop"), 0);
    assert!(g.store.verdicts().is_empty() && g.alerts.alerts().is_empty());
}

#[tokio::test]
async fn an_auto_scaling_group_anyone_can_create_is_no_way_past_the_guard() {
    // Given an instance launched through a group nobody listed, with the exemption tag the
    // group propagated
    let g = guard(FakeEc2::with(vec![instance(
        A,
        "running",
        &[
            ("aws:autoscaling:groupName", "miner"),
            ("ec2pass:exempt", "true"),
        ],
    )]));
    // Then it is denied, stopped and alerted
    assert_eq!(
        verdict_of(&run(&g, A, "running").await),
        Some(("deny", Some("missing"), Action::Stopped))
    );
    assert_eq!(g.alerts.alerts().len(), 1);
}

#[tokio::test]
async fn an_exemption_whose_reason_went_away_is_assessed_again_by_the_sweep() {
    // Given a member of a listed group, exempt at its start (and alerted)
    let g = guard_with(
        MemoryStore::new(),
        FakeEc2::with(vec![instance(
            A,
            "running",
            &[("aws:autoscaling:groupName", "web")],
        )]),
        config(&[
            ("EC2PASS_EXEMPT_GROUPS", "web"),
            ("EC2PASS_ACTIVATION_TIME", "1795255090"),
        ]),
    );
    assert_eq!(
        verdict_of(&run(&g, A, "running").await).map(|v| v.0),
        Some("exempt")
    );
    // When it is detached from the group (the group's tag goes with it)
    g.ec2.put(instance(A, "running", &[]));
    let swept = g.handle(&sweep_event(), &inv("sweep")).await;
    // Then the sweep decides it again: denied and stopped
    assert_eq!(
        swept.ok().map(|r| r
            .iter()
            .map(|r| (r.verdict.clone(), r.action))
            .collect::<Vec<_>>()),
        Some(vec![("deny".to_owned(), Action::Stopped)])
    );
    assert_eq!(g.ec2.state(A).as_deref(), Some("stopping"));
    assert_eq!(
        g.store
            .verdict(&cycle_of(A))
            .await
            .ok()
            .flatten()
            .map(|v| v.verdict),
        Some(Verdict::Deny(DenyReason::Missing))
    );
    assert_eq!(
        g.alerts
            .alerts()
            .iter()
            .map(|a| a.verdict.as_str())
            .collect::<Vec<_>>(),
        ["exempt", "deny"]
    );
}

/// Records a deny for A's cycle whose alert `owner` claimed at `at` and never published: the
/// recorder died between recording and publishing (a Lambda timeout), after stopping A.
async fn a_recorder_died(g: &TestGuard, owner: &str, at: UnixTime) {
    let v = VerdictRecord {
        cycle: cycle_of(A),
        verdict: Verdict::Deny(DenyReason::Missing),
        short_id: None,
        issuer: None,
        password_key: None,
        decided_at: at,
        event_id: "evt".into(),
        place: None,
        retain_until: at.plus(Duration::from_secs(86_400 * 90)),
        alert: Some(AlertClaim::by(owner, at)),
    };
    assert_eq!(g.store.record(&v).await.ok(), Some(Recorded::Ours));
    g.ec2.put(instance(A, "stopped", &[]));
}

#[tokio::test]
async fn a_deny_whose_recorder_died_before_publishing_is_announced_by_its_retry() {
    let g = guard(FakeEc2::default());
    a_recorder_died(&g, "req-running", NOW).await;
    // When Lambda retries the invocation (same request id), the start is over
    let retry = run(&g, A, "running").await;
    // Then the retry announces the deny it owed, once, and changes nothing else
    assert!(retry.as_ref().is_ok_and(|r| r.alerted), "{retry:?}");
    run(&g, A, "running").await.ok();
    let alerts = g.alerts.alerts();
    assert_eq!(
        alerts
            .iter()
            .map(|a| (a.verdict.as_str(), a.action))
            .collect::<Vec<_>>(),
        [("deny", Action::Stopped)]
    );
    assert_eq!(g.ec2.calls("stop"), 0);
}

#[tokio::test]
async fn a_deny_whose_recorder_died_is_announced_by_the_sweep_once_the_lease_lapses() {
    let mut g = guard_with(
        MemoryStore::new(),
        FakeEc2::default(),
        config(&[("EC2PASS_ACTIVATION_TIME", "1795255090")]),
    );
    a_recorder_died(&g, "req-dead", NOW).await;
    // While the lease holds, another invocation leaves the alert to its owner
    assert!(
        run(&g, A, "running")
            .await
            .is_ok_and(|r| !r.alerted && r.verdict == "deny")
    );
    let early = g.handle(&sweep_event(), &inv("sweep")).await;
    assert_eq!(early.map(|r| r.len()), Ok(0));
    assert!(g.alerts.alerts().is_empty());
    // When the lease has lapsed (the instance stopped, so the sweep does not list it)
    g.clock = FixedClock(NOW.plus(ALERT_LEASE));
    let swept = g.handle(&sweep_event(), &inv("sweep-2")).await;
    // Then the sweep announces it, once
    assert!(swept.is_ok_and(|r| r.len() == 1 && r[0].alerted));
    g.handle(&sweep_event(), &inv("sweep-3")).await.ok();
    assert_eq!(g.alerts.alerts().len(), 1);
}

#[tokio::test]
async fn a_pending_instance_with_other_tags_but_no_password_yet_is_looked_at_again() {
    // Given "tag, then start": Name is visible at pending, the Auth tag only a moment later
    let store = MemoryStore::new();
    let (password, _) = mint(&store, Some(A), NOW.plus(Duration::from_secs(900)));
    let ec2 = FakeEc2::with(vec![instance(A, "pending", &[("Name", "web")])]);
    lock(&ec2.second_looks).push_back(instance(
        A,
        "pending",
        &[("Name", "web"), ("Auth", &password.display())],
    ));
    let g = guard_with(store, ec2, config(&[]));
    // Then the second look finds the password: allowed, not stopped
    assert_eq!(
        verdict_of(&run(&g, A, "pending").await).map(|v| v.0),
        Some("allow")
    );
    assert_eq!(g.ec2.calls("stop"), 0);
}

#[tokio::test]
async fn an_allow_verdict_names_its_password_and_issuer() {
    let (g, _, short_id) = tagged(A, Some(A), NOW.plus(Duration::from_secs(900)), config(&[]));
    run(&g, A, "pending").await.ok();
    let v = g.store.verdict(&cycle_of(A)).await.ok().flatten();
    assert_eq!(
        v.map(|v| (v.short_id, v.issuer.map(|o| o.user_id))),
        Some((Some(short_id), Some("U1".to_owned())))
    );
}

#[tokio::test]
async fn the_retry_of_a_leaked_password_deny_still_says_wrong_instance() {
    // Given a password for B presented on A, and the verdict write failing once
    let store = MemoryStore::new();
    let (password, _) = mint(&store, Some(B), NOW.plus(Duration::from_secs(900)));
    let g = guard_with(
        FlakyRecord {
            inner: store,
            failures: Mutex::new(1),
            activation_fails: false,
        },
        FakeEc2::with(vec![instance(
            A,
            "pending",
            &[("Auth", &password.display())],
        )]),
        config(&[]),
    );
    // (the stop fails too, so the instance is still going when Lambda retries)
    lock(&g.ec2.stop_script).push_back(Err(StopError::Failed(aws_error("StopInstances"))));
    assert!(run(&g, A, "pending").await.is_err());
    assert_eq!(g.ec2.state(A).as_deref(), Some("pending"));
    // When Lambda retries, the password is burned already
    let retry = run(&g, A, "pending").await;
    // Then the reason is still what happened: it leaked
    assert_eq!(
        verdict_of(&retry),
        Some(("deny", Some("wrong-instance"), Action::Stopped))
    );
}

#[tokio::test]
async fn a_sweep_whose_listing_fails_alerts_guard_error() {
    let ec2 = FakeEc2 {
        list_fails: true,
        ..FakeEc2::default()
    };
    let g = guard_with(
        MemoryStore::new(),
        ec2,
        config(&[("EC2PASS_ACTIVATION_TIME", "1795255090")]),
    );
    let result = g.handle(&sweep_event(), &inv("sweep")).await;
    assert_eq!(result.err().map(|e| e.what), Some("list"));
    assert_eq!(
        g.alerts
            .alerts()
            .iter()
            .map(|a| (
                a.verdict.as_str(),
                a.reason.as_str(),
                a.instance_id.as_str()
            ))
            .collect::<Vec<_>>(),
        [("guard-error", "list", "sweep")]
    );
}

#[tokio::test]
async fn an_unreadable_activation_still_leaves_no_fresh_start_unguarded() {
    // Given DescribeTable failing (throttled, say), a fresh start and one of an hour ago
    let mut older = instance(B, "running", &[]);
    older.launch_time = Some(UnixTime(NOW.0 - 3_600));
    let g = guard_with(
        FlakyRecord {
            inner: MemoryStore::new(),
            failures: Mutex::new(0),
            activation_fails: true,
        },
        FakeEc2::with(vec![instance(A, "running", &[]), older]),
        config(&[]),
    );
    // Then the fresh start is decided (an event is delivered for at most ten minutes) ...
    assert_eq!(
        verdict_of(&run(&g, A, "running").await),
        Some(("deny", Some("missing"), Action::Stopped))
    );
    // ... and the older one, which may predate the guard, is left alone
    assert_eq!(
        verdict_of(&run(&g, B, "running").await),
        Some(("none", None, Action::None))
    );
    assert_eq!(g.ec2.state(B).as_deref(), Some("running"));
}

#[tokio::test]
async fn in_opt_in_mode_an_instance_nobody_opted_in_is_not_announced_but_a_door_is() {
    let opt_in = [("EC2PASS_GUARD_MODE", "opt-in")];
    let g = guard_with(
        MemoryStore::new(),
        FakeEc2::with(vec![instance(A, "running", &[("Name", "laptop-ci")])]),
        config(&opt_in),
    );
    assert_eq!(
        verdict_of(&run(&g, A, "running").await).map(|v| v.0),
        Some("exempt")
    );
    assert!(
        g.alerts.alerts().is_empty(),
        "not the guard's instance: no alert"
    );
    // A door in opt-out mode is announced: the exemption tag
    let g = guard(FakeEc2::with(vec![instance(
        A,
        "running",
        &[("ec2pass:exempt", "true")],
    )]));
    run(&g, A, "running").await.ok();
    assert_eq!(g.alerts.alerts().len(), 1);
    // And when auditing, everything is
    let audited = guard_with(
        MemoryStore::new(),
        FakeEc2::with(vec![instance(A, "running", &[])]),
        config(&[opt_in[0], ("EC2PASS_AUDIT_ALERTS", "true")]),
    );
    run(&audited, A, "running").await.ok();
    assert_eq!(audited.alerts.alerts().len(), 1);
}

#[tokio::test]
async fn stop_protection_set_again_between_clear_and_stop_is_cleared_again() {
    // Given an attacker who re-enables --disable-api-stop as fast as the guard clears it
    let g = guard(FakeEc2::with(vec![instance(A, "running", &[])]));
    lock(&g.ec2.stop_script).extend([
        Err(StopError::Protected),
        Err(StopError::Protected),
        Err(StopError::Protected),
    ]);
    // Then the guard clears it again and the stop lands
    assert_eq!(
        verdict_of(&run(&g, A, "running").await).map(|v| v.2),
        Some(Action::Stopped)
    );
    assert_eq!(
        (g.ec2.calls("clear-protection"), g.ec2.calls("stop")),
        (3, 4)
    );
}
