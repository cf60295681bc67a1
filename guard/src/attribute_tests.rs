//! The attribution path with the in-memory table, fakes for EC2's launches, IAM and SNS, and a
//! fixed clock: both orders of arrival, duplicates, bursts, and every rail of the response.

use std::collections::HashMap;
use std::sync::Mutex;

use ec2pass_shared::alert::Alert;
use ec2pass_shared::store::memory::MemoryStore;
use ec2pass_shared::store::{AlertStore, CallerLookup, VerdictStore};
use ec2pass_shared::time::FixedClock;
use ec2pass_shared::verdict::{AlertClaim, DenyReason};

use super::*;
use crate::ec2::AwsError;
use crate::respond::{Action, IamError};

const AT: &str = "2026-12-02T10:00:00Z";

fn at() -> UnixTime {
    UnixTime::parse_rfc3339(AT).unwrap()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fixture(name: &str) -> Call {
    let path = format!(
        "{}/../tests/fixtures/cloudtrail/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let payload: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path);
    calls::parse(&payload).expect("a call")
}

fn id(n: u32) -> InstanceId {
    InstanceId::parse(&format!("i-{n:017x}")).unwrap()
}

/// EC2's launches by client token: `token` launched these.
#[derive(Default)]
struct FakeLaunches(HashMap<String, Vec<(InstanceId, UnixTime)>>);

impl Launches for FakeLaunches {
    async fn launched_with(
        &self,
        _place: &Place,
        token: &str,
    ) -> Result<Vec<(InstanceId, UnixTime)>, String> {
        Ok(self.0.get(token).cloned().unwrap_or_default())
    }
}

/// IAM that records each action; can fail the next ones.
#[derive(Default)]
struct FakeIam {
    done: Mutex<Vec<Action>>,
    /// The next actions fail for now (throttled).
    failures: Mutex<u32>,
    /// Every action is refused for good with this.
    refuses: Mutex<Option<IamError>>,
}

impl Iam for FakeIam {
    async fn act(&self, action: &Action, _at: UnixTime) -> Result<(), IamError> {
        let mut failures = lock(&self.failures);
        if *failures > 0 {
            *failures -= 1;
            return Err(IamError {
                message: "Throttling: Rate exceeded".into(),
                retry: true,
            });
        }
        if let Some(refusal) = lock(&self.refuses).clone() {
            return Err(refusal);
        }
        lock(&self.done).push(action.clone());
        Ok(())
    }
}

#[derive(Default)]
struct FakeSns(Mutex<Vec<Alert>>);

impl Alerts for FakeSns {
    async fn publish(&self, alert: &Alert) -> Result<(), AwsError> {
        lock(&self.0).push(alert.clone());
        Ok(())
    }
}

type Test = Attributor<MemoryStore, FakeLaunches, FakeIam, FakeSns, FixedClock>;

fn rails(enabled: bool) -> Rails {
    Rails {
        enabled,
        account: "123456789012".into(),
        admin: "arn:aws:iam::123456789012:role/ec2pass-admin".into(),
        own_roles: vec!["ec2pass-*".into()],
        allow: vec!["arn:aws:iam::123456789012:role/break-glass".into()],
    }
}

fn attributor(response: bool) -> Test {
    attributor_at(response, at().plus(Duration::from_secs(60)))
}

fn attributor_at(response: bool, now: UnixTime) -> Test {
    Attributor {
        store: MemoryStore::new(),
        launches: FakeLaunches::default(),
        iam: FakeIam::default(),
        alerts: FakeSns::default(),
        clock: FixedClock(now),
        rails: rails(response),
        settings: Settings::default(),
    }
}

impl Test {
    /// A deny of `instance`'s start launched at `launched`, its alert still owed.
    async fn deny(&self, instance: &InstanceId, launched: UnixTime) -> Cycle {
        let cycle = Cycle {
            instance: instance.clone(),
            launch_time: launched,
        };
        let v = VerdictRecord {
            cycle: cycle.clone(),
            verdict: Verdict::Deny(DenyReason::Missing),
            short_id: None,
            issuer: None,
            password_key: None,
            decided_at: launched.plus(Duration::from_secs(2)),
            event_id: format!("evt-{instance}"),
            place: Some(Place::new("123456789012", "us-east-1")),
            retain_until: launched.plus(Duration::from_secs(86_400)),
            alert: Some(AlertClaim::by("req-1", launched)),
        };
        self.store.record(&v).await.unwrap();
        cycle
    }

    /// The same deny, its alert published (without a caller).
    async fn denied(&self, instance: &InstanceId, launched: UnixTime) -> Cycle {
        let cycle = self.deny(instance, launched).await;
        self.store.alert_sent(&cycle, launched).await.unwrap();
        cycle
    }

    fn alerts(&self, verdict: &str) -> Vec<Alert> {
        lock(&self.alerts.0)
            .iter()
            .filter(|a| a.verdict == verdict)
            .cloned()
            .collect()
    }

    fn actions(&self) -> Vec<Action> {
        lock(&self.iam.done).clone()
    }
}

fn a() -> InstanceId {
    InstanceId::parse("i-0abcdef1234567890").unwrap()
}

fn b() -> InstanceId {
    InstanceId::parse("i-0fedcba0987654321").unwrap()
}

// ---- attribution ---------------------------------------------------------------------------

#[tokio::test]
async fn a_call_after_the_deny_alert_is_told_once_however_often_it_arrives() {
    // Given a deny whose alert went out without a caller (the usual order: CloudTrail is slower)
    let t = attributor(false);
    let cycle = t.denied(&a(), at()).await;
    let call = fixture("run-instances-iam-user");
    // When its call arrives, three times
    let first = t.handle_call(&call).await;
    for _ in 0..2 {
        t.handle_call(&call).await;
    }
    // Then one attribution alert says who started it, and the verdict records the caller
    assert_eq!((first.attributed, first.denied, first.told), (1, 1, 1));
    assert!(!first.again);
    let told = t.alerts("attribution");
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].instance_id, a().to_string());
    assert_eq!(told[0].reason, "missing");
    let who = told[0].caller.as_ref().unwrap();
    assert_eq!(who.access_key_id.as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
    assert_eq!(who.event_id, "11111111-2222-3333-4444-555555555555");
    assert!(
        told[0]
            .subject()
            .starts_with("[ec2pass] WHO STARTED denied i-0abcdef1234567890")
    );
    assert_eq!(t.store.caller_of(&cycle).map(|(_, told)| told), Some(true));
    // With the response off, nothing is changed and nothing said about one
    assert!(t.actions().is_empty());
    assert!(t.alerts("response").is_empty());
}

#[tokio::test]
async fn a_call_before_its_start_is_decided_waits_and_is_told_after_the_deny_alert() {
    let t = attributor(false);
    let call = fixture("start-instances-assumed-role");
    // When the call arrives before either start has a verdict: it is kept, and comes back
    let early = t.handle_call(&call).await;
    assert_eq!((early.waiting, early.again), (2, true));
    assert_eq!(
        t.store
            .call_for(&a())
            .await
            .unwrap()
            .map(|(c, _)| c.event_id),
        Some(call.caller.event_id.clone())
    );
    // When A is denied and its alert is still on its way: the call still waits for it
    let launched = at().plus(Duration::from_secs(2));
    let cycle = t.deny(&a(), launched).await;
    let owed = t.handle_call(&call).await;
    assert_eq!((owed.waiting, owed.told, owed.again), (2, 0, true));
    // When the deny alert went out carrying the caller (the guard read the kept call)
    assert!(
        t.store
            .claim_tell(&cycle, &call.caller, TellClaim::InAlert)
            .await
            .unwrap()
    );
    t.store.alert_sent(&cycle, launched).await.unwrap();
    // And B is allowed
    let allow = VerdictRecord {
        verdict: Verdict::Allow,
        alert: None,
        cycle: Cycle {
            instance: b(),
            launch_time: launched,
        },
        ..t.store.verdict(&cycle).await.unwrap().unwrap()
    };
    t.store.record(&allow).await.unwrap();
    let done = t.handle_call(&call).await;
    // Then nothing repeats the caller: the deny alert told it; B's verdict records it
    assert_eq!(
        (done.attributed, done.denied, done.told, done.again),
        (2, 1, 0, false)
    );
    assert!(t.alerts("attribution").is_empty());
    assert_eq!(
        t.store
            .caller_of(&allow.cycle)
            .map(|(c, _)| c.principal_type),
        Some("AssumedRole".into())
    );
}

#[tokio::test]
async fn a_deny_alert_that_went_out_without_the_caller_is_followed_up_when_the_call_came_first() {
    // The call came first, but the deny alert was published by an invocation that read the call
    // item before it was written: the attribution path tells it once the alert is out.
    let t = attributor(false);
    let call = fixture("start-instances-federated-user");
    assert!(t.handle_call(&call).await.again);
    t.denied(&a(), at().plus(Duration::from_secs(1))).await;
    let out = t.handle_call(&call).await;
    assert_eq!((out.told, out.again), (1, false));
    assert_eq!(
        t.alerts("attribution")[0]
            .caller
            .as_ref()
            .unwrap()
            .principal_type,
        "FederatedUser"
    );
}

#[tokio::test]
async fn a_start_of_the_instance_long_after_the_call_is_not_its_start() {
    // A StartInstances names instances, not starts: a verdict of a later start is not the call's.
    let t = attributor(false);
    t.denied(&a(), at().plus(Duration::from_secs(3600))).await;
    let out = t
        .handle_call(&fixture("start-instances-federated-user"))
        .await;
    assert_eq!((out.attributed, out.waiting), (0, 1));
    assert!(t.alerts("attribution").is_empty());
}

#[tokio::test]
async fn a_call_whose_starts_never_come_is_let_go_after_the_wait() {
    let t = attributor_at(false, at().plus(Duration::from_secs(31 * 60)));
    let out = t
        .handle_call(&fixture("start-instances-assumed-role"))
        .await;
    assert_eq!((out.waiting, out.again), (2, false));
    // It is still kept by instance, for a deny the sweep decides later
    assert!(t.store.call_for(&a()).await.unwrap().is_some());
}

#[tokio::test]
async fn an_aws_services_launch_is_attributed_to_the_service() {
    let t = attributor(true);
    t.denied(&a(), at()).await;
    let out = t.handle_call(&fixture("run-instances-aws-service")).await;
    assert_eq!(out.told, 1);
    assert_eq!(
        t.alerts("attribution")[0].caller.as_ref().unwrap().who(),
        "AWSService autoscaling.amazonaws.com"
    );
    // And a service is never acted on
    assert!(t.actions().is_empty());
    assert_eq!(out.response.as_deref(), Some("refused"));
}

#[tokio::test]
async fn a_launch_of_a_thousand_is_attributed_by_its_client_token_each_deny_told_once() {
    let mut t = attributor(true);
    let ids: Vec<InstanceId> = (0..1000).map(id).collect();
    t.launches.0.insert(
        "burst-1000-4e1c2a".into(),
        ids.iter().map(|i| (i.clone(), at())).collect(),
    );
    for i in &ids {
        t.denied(i, at()).await;
    }
    let call = fixture("run-instances-omitted");
    let out = t.handle_call(&call).await;
    t.handle_call(&call).await;
    assert_eq!((out.attributed, out.denied, out.told), (1000, 1000, 1000));
    assert_eq!(t.alerts("attribution").len(), 1000);
    // One action for the one principal, however many starts it made
    assert_eq!(
        t.actions(),
        [Action::RevokeSessions {
            role: "developer".into(),
            arn: "arn:aws:iam::123456789012:role/developer".into()
        }]
    );
    let response = t.alerts("response");
    assert_eq!(response.len(), 1);
    assert_eq!(response[0].reason, "revoked-sessions");
    assert!(
        response[0]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("1000 denied starts from this call. ")
    );
    assert!(response[0].detail.as_deref().unwrap().contains(
        "To undo: aws iam delete-role-policy --role-name developer --policy-name AWSRevokeOlderSessions"
    ));
}

// ---- response ------------------------------------------------------------------------------

#[tokio::test]
async fn an_iam_users_key_is_deactivated_and_the_alert_says_how_to_undo_it() {
    let t = attributor(true);
    t.denied(&a(), at()).await;
    let out = t.handle_call(&fixture("run-instances-iam-user")).await;
    assert_eq!(out.response.as_deref(), Some("deactivated-key"));
    assert_eq!(
        t.actions(),
        [Action::DeactivateKey {
            user: "Mateo".into(),
            key: "AKIAIOSFODNN7EXAMPLE".into()
        }]
    );
    let alert = &t.alerts("response")[0];
    assert!(alert.detail.as_deref().unwrap().contains(
        "aws iam update-access-key --user-name Mateo --access-key-id AKIAIOSFODNN7EXAMPLE --status Active"
    ));
    assert!(
        alert
            .subject()
            .starts_with("[ec2pass] RESPONSE to the start of i-0abcdef1234567890")
    );
}

#[tokio::test]
async fn with_the_response_off_nothing_is_changed() {
    let t = attributor(false);
    t.denied(&a(), at()).await;
    for name in ["run-instances-iam-user", "start-instances-assumed-role"] {
        let out = t.handle_call(&fixture(name)).await;
        assert_eq!(out.response, None, "{name}");
    }
    assert!(t.actions().is_empty());
    assert!(t.store.responses().is_empty());
}

#[tokio::test]
async fn an_allowed_start_cuts_nobody_off() {
    let t = attributor(true);
    let cycle = t.denied(&a(), at()).await;
    let allow = VerdictRecord {
        verdict: Verdict::Allow,
        ..t.store.verdict(&cycle).await.unwrap().unwrap()
    };
    // A second table: the same start, allowed
    let allowed = attributor(true);
    allowed.store.record(&allow).await.unwrap();
    let out = allowed
        .handle_call(&fixture("run-instances-iam-user"))
        .await;
    assert_eq!((out.attributed, out.denied, out.response), (1, 0, None));
    assert!(allowed.actions().is_empty());
    assert!(lock(&allowed.alerts.0).is_empty());
}

/// A call made with the role `role`, from a session issued at `issued`.
fn role_call(role: &str, issued: &str, event_id: &str) -> Call {
    let mut call = fixture("start-instances-assumed-role");
    call.caller.session_issuer = Some(format!("arn:aws:iam::123456789012:role/{role}"));
    call.caller.principal_arn = Some(format!("arn:aws:sts::123456789012:assumed-role/{role}/s"));
    call.caller.session_created = Some(issued.into());
    call.caller.event_id = event_id.into();
    call
}

#[tokio::test]
async fn one_action_per_principal_in_a_burst_and_again_for_a_call_made_after_it() {
    let t = attributor(true);
    t.denied(&a(), at()).await;
    t.denied(&b(), at()).await;
    // Fifty calls of one stolen session, each starting both instances
    for n in 0..50 {
        let out = t
            .handle_call(&role_call(
                "developer",
                "2026-12-02T09:30:00Z",
                &format!("ct-{n}"),
            ))
            .await;
        assert_eq!(out.denied, 2);
    }
    assert_eq!(t.actions().len(), 1, "one revocation for the burst");
    assert_eq!(t.alerts("response").len(), 1);
    // A call that succeeded after the revocation was made with a session issued after it (the
    // attacker assumed the role again): revoked again; the earlier revocation did not stop it
    let after = t.clock.0.plus(Duration::from_secs(1));
    let later = InstanceId::parse("i-0123456789abcdef0").unwrap();
    t.denied(&later, after).await;
    let mut again = role_call("developer", &after.rfc3339(), "ct-new");
    again.at = after;
    again.caller.event_time = after.rfc3339();
    again.started = Started::Instances(vec![(later, None)]);
    let t = Attributor {
        clock: FixedClock(after.plus(Duration::from_secs(5))),
        ..t
    };
    let out = t.handle_call(&again).await;
    assert_eq!(out.response.as_deref(), Some("revoked-sessions"));
    assert_eq!(t.actions().len(), 2);
}

#[tokio::test]
async fn the_admin_and_ec2passs_own_roles_are_never_cut_off() {
    let t = attributor(true);
    t.denied(&a(), at()).await;
    for (n, role) in ["ec2pass-admin", "ec2pass-guard", "ec2pass-member"]
        .iter()
        .enumerate()
    {
        let out = t
            .handle_call(&role_call(role, "2026-12-02T09:30:00Z", &format!("ct-{n}")))
            .await;
        assert_eq!(out.response.as_deref(), Some("refused"), "{role}");
    }
    assert!(t.actions().is_empty());
    let refused: Vec<String> = t
        .alerts("response")
        .iter()
        .filter_map(|a| a.detail.clone())
        .collect();
    assert!(
        refused[0].contains("the admin is never cut off"),
        "{refused:?}"
    );
    assert!(refused[1].contains("own roles"), "{refused:?}");
}

#[tokio::test]
async fn the_allow_list_holds() {
    let t = attributor(true);
    t.denied(&a(), at()).await;
    let out = t
        .handle_call(&role_call("break-glass", "2026-12-02T09:30:00Z", "ct-1"))
        .await;
    assert_eq!(out.response.as_deref(), Some("refused"));
    assert!(t.actions().is_empty());
    assert!(
        t.alerts("response")[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("allow-list")
    );
}

#[tokio::test]
async fn a_throttled_action_is_given_back_and_tried_again_on_the_next_delivery() {
    let t = attributor(true);
    t.denied(&a(), at()).await;
    *lock(&t.iam.failures) = 1;
    let call = fixture("run-instances-iam-user");
    let throttled = t.handle_call(&call).await;
    assert!(throttled.again, "the call comes back");
    assert!(t.actions().is_empty());
    let retried = t.handle_call(&call).await;
    assert_eq!(retried.response.as_deref(), Some("deactivated-key"));
    assert_eq!(t.actions().len(), 1);
    assert_eq!(t.alerts("response").len(), 1);
}

/// Found in review: IAM refuses for good (a protected role, access denied); trying again on
/// every delivery only repeated the failure alert until the message was dead-lettered.
#[tokio::test]
async fn an_action_iam_refuses_for_good_is_alerted_once_and_not_tried_again() {
    let t = attributor(true);
    t.denied(&a(), at()).await;
    *lock(&t.iam.refuses) = Some(IamError {
        message: "AccessDenied: not authorized to perform iam:UpdateAccessKey".into(),
        retry: false,
    });
    let call = fixture("run-instances-iam-user");
    let failed = t.handle_call(&call).await;
    assert_eq!(
        (failed.response.as_deref(), failed.again),
        (Some("failed"), false)
    );
    t.handle_call(&call).await;
    let alerts = t.alerts("response");
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("AccessDenied")
    );
}

/// A holder of the response claim that died (after claiming, before its action or alert) is
/// taken over once its claim lapses: the caller is still cut off, and it is said.
#[tokio::test]
async fn a_response_whose_holder_died_is_taken_over_after_its_lease() {
    use ec2pass_shared::store::ResponseStore;
    let t = attributor(true);
    t.denied(&a(), at()).await;
    let principal = "key#Mateo#AKIAIOSFODNN7EXAMPLE";
    let died_at = at().minus(Duration::from_secs(1));
    assert!(
        t.store
            .claim_response(
                principal,
                at(),
                died_at,
                died_at.plus(RESPONSE_LEASE),
                died_at.plus(RESPONSE_RETENTION)
            )
            .await
            .unwrap()
    );
    // The clock (a minute past the call) is past the dead holder's lease: taken over
    let out = t.handle_call(&fixture("run-instances-iam-user")).await;
    assert_eq!(out.response.as_deref(), Some("deactivated-key"));
    assert_eq!(t.actions().len(), 1);
}

/// An attribution alert claimed by a sender that died is sent by the call's next delivery.
#[tokio::test]
async fn an_attribution_whose_sender_died_is_sent_after_its_lease() {
    let t = attributor(false);
    let cycle = t.denied(&a(), at()).await;
    let call = fixture("run-instances-iam-user");
    let earlier = at();
    assert!(
        t.store
            .claim_tell(
                &cycle,
                &call.caller,
                TellClaim::After {
                    now: earlier,
                    until: earlier.plus(TELL_LEASE).minus(Duration::from_secs(1)),
                },
            )
            .await
            .unwrap()
    );
    let out = t.handle_call(&call).await;
    assert_eq!(out.told, 1);
    assert_eq!(t.store.caller_of(&cycle).map(|(_, told)| told), Some(true));
}
