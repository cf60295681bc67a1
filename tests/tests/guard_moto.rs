//! The guard against the moto emulator through the real SDK: DynamoDB, EC2, SNS → SQS.
//! EventBridge is played by calling the guard with event JSON of the documented shape.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::password::Password;
use ec2pass_shared::store::dynamo::{DynamoStore, verdict_from_item};
use ec2pass_shared::store::{MintOutcome, MintStore, PasswordLookup};
use ec2pass_shared::time::UnixTime;
use ec2pass_tests::{
    AlertQueue, Local, inspect, invocation, launch_instance, local_guard, now, scan_all,
    state_change, tag, unique,
};
use issuer::request::SlashCommand;

struct World {
    local: Local,
    aws: aws_config::SdkConfig,
    ec2: aws_sdk_ec2::Client,
    ddb: aws_sdk_dynamodb::Client,
    store: DynamoStore,
}

async fn world() -> World {
    let local = Local::load();
    let aws = local.aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    World {
        ec2: aws_sdk_ec2::Client::new(&aws),
        store: DynamoStore::new(ddb.clone(), local.table()),
        ddb,
        aws,
        local,
    }
}

impl World {
    /// Mints a password as the issuer does (digest only, 15 minutes), for `scope`.
    async fn mint(&self, scope: Option<&InstanceId>) -> Password {
        let cmd = SlashCommand {
            team_id: "T0GUARD".into(),
            enterprise_id: None,
            api_app_id: None,
            user_id: unique("U"),
            channel_id: "C0GUARD".into(),
            command: "/ec2pass".into(),
            text: String::new(),
            trigger_id: unique("trigger."),
        };
        let (password, mint) = issuer::mint::plan(
            &cmd,
            scope.cloned(),
            Duration::from_secs(900),
            UnixTime(now()),
            10,
        );
        assert_eq!(self.store.mint(&mint).await.ok(), Some(MintOutcome::Minted));
        password
    }

    /// Every verdict recorded for an instance.
    async fn verdicts(&self, instance: &InstanceId) -> Vec<ec2pass_shared::verdict::VerdictRecord> {
        scan_all(&self.ddb, &self.local.table())
            .await
            .iter()
            .filter(|item| {
                item.get("pk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|pk| pk.starts_with(&format!("verdict#{instance}@")))
            })
            .map(|item| verdict_from_item(item).expect("a well-formed verdict"))
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Authorized,
    NoTag,
    Garbage,
    OtherInstances,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_and_races_yield_one_verdict_per_start_and_never_stop_an_allowed_one() {
    // Given 13 freshly started instances: 5 with their own valid password in the Auth tag,
    // 4 with no tag, 2 with a made-up password, 2 with a password minted for another instance
    let w = world().await;
    let topic = w.local.get("EC2PASS_ALERT_TOPIC_ARN").to_owned();
    let alerts = AlertQueue::subscribe(&w.aws, &topic, None).await;
    let elsewhere = launch_instance(&w.ec2, "elsewhere").await;
    let plan = [
        (Kind::Authorized, 5),
        (Kind::NoTag, 4),
        (Kind::Garbage, 2),
        (Kind::OtherInstances, 2),
    ];
    let mut fleet: Vec<(InstanceId, Kind, Option<Password>)> = Vec::new();
    for (kind, count) in plan {
        for n in 0..count {
            let id = launch_instance(&w.ec2, &format!("race-{kind:?}-{n}")).await;
            let password = match kind {
                Kind::Authorized => Some(w.mint(Some(&id)).await),
                Kind::OtherInstances => Some(w.mint(Some(&elsewhere)).await),
                Kind::Garbage => Some(Password::generate()),
                Kind::NoTag => None,
            };
            if let Some(p) = &password {
                tag(&w.ec2, &id, "Auth", &p.display()).await;
            }
            fleet.push((id, kind, password));
        }
    }

    // When each start is delivered four times at once: pending twice, running twice (52 invocations)
    let guard = Arc::new(local_guard(&w.local, &w.aws));
    let mut invocations = tokio::task::JoinSet::new();
    for (id, _, _) in &fleet {
        for state in ["pending", "running", "pending", "running"] {
            let (guard, event) = (guard.clone(), state_change(id, state));
            invocations.spawn(async move { guard.handle(&event, &invocation()).await });
        }
    }
    let results = invocations.join_all().await;
    assert_eq!(results.len(), 52);
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // Then every start has exactly one verdict, the right one, and was enforced accordingly
    let received = alerts.drain().await;
    for (id, kind, password) in &fleet {
        let verdicts = w.verdicts(id).await;
        assert_eq!(verdicts.len(), 1, "{id} ({kind:?}): {verdicts:?}");
        let (state, tags) = inspect(&w.ec2, id).await;
        let expected = match kind {
            Kind::Authorized => "allow",
            Kind::NoTag => "deny (missing)",
            Kind::Garbage => "deny (unknown)",
            Kind::OtherInstances => "deny (wrong-instance)",
        };
        assert_eq!(verdicts[0].verdict.to_string(), expected, "{id}");
        assert!(!tags.contains_key("Auth"), "{id}: the Auth tag is removed");
        let alerts_here = received
            .iter()
            .filter(|a| a.message["instance_id"] == id.as_str())
            .count();
        if *kind == Kind::Authorized {
            assert_eq!(
                state, "running",
                "{id}: an allowed instance is never stopped"
            );
            assert_eq!(alerts_here, 0, "{id}");
            // And its password is consumed by exactly this start
            let digest = password.as_ref().map(Password::digest).expect("a password");
            let record = w
                .store
                .find(&digest)
                .await
                .ok()
                .flatten()
                .expect("the password");
            assert_eq!(record.consumed_by, Some(verdicts[0].cycle.id()));
        } else {
            assert!(
                state == "stopped" || state == "stopping",
                "{id} ({kind:?}) is {state}"
            );
            assert_eq!(
                alerts_here, 1,
                "{id} ({kind:?}): exactly one alert per deny"
            );
        }
    }
}

#[tokio::test]
async fn a_password_for_a_presented_on_b_is_denied_and_then_cannot_start_a() {
    let w = world().await;
    let a = launch_instance(&w.ec2, "owner-a").await;
    let b = launch_instance(&w.ec2, "thief-b").await;
    let password = w.mint(Some(&a)).await;
    let guard = local_guard(&w.local, &w.aws);

    tag(&w.ec2, &b, "Auth", &password.display()).await;
    let on_b = guard
        .handle(&state_change(&b, "pending"), &invocation())
        .await
        .expect("handled");
    assert_eq!(on_b[0].reason.as_deref(), Some("wrong-instance"));
    assert_eq!(inspect(&w.ec2, &b).await.0, "stopped");

    tag(&w.ec2, &a, "Auth", &password.display()).await;
    let on_a = guard
        .handle(&state_change(&a, "pending"), &invocation())
        .await
        .expect("handled");
    assert_eq!(
        on_a[0].reason.as_deref(),
        Some("reused"),
        "the leaked password was burned"
    );
    assert_eq!(inspect(&w.ec2, &a).await.0, "stopped");
}

#[tokio::test]
async fn alerts_arrive_through_sns_in_the_documented_schema_and_filter_policies_work() {
    // Given one subscriber of everything and one that asked only for wrong-instance denials
    let w = world().await;
    let topic = w.local.get("EC2PASS_ALERT_TOPIC_ARN").to_owned();
    let everything = AlertQueue::subscribe(&w.aws, &topic, None).await;
    let leaks =
        AlertQueue::subscribe(&w.aws, &topic, Some(r#"{"reason": ["wrong-instance"]}"#)).await;
    let guard = local_guard(&w.local, &w.aws);

    // When one instance starts without a tag and another with a password for a third
    let untagged = launch_instance(&w.ec2, "alert-untagged").await;
    let leaked_to = launch_instance(&w.ec2, "alert-leak").await;
    let owner = launch_instance(&w.ec2, "alert-owner").await;
    let password = w.mint(Some(&owner)).await;
    tag(&w.ec2, &leaked_to, "Auth", &password.display()).await;
    for id in [&untagged, &leaked_to] {
        guard
            .handle(&state_change(id, "running"), &invocation())
            .await
            .expect("handled");
    }

    // Then the first subscriber gets both, in the documented schema with String attributes
    let mine = |r: &Vec<ec2pass_tests::Received>| -> Vec<ec2pass_tests::Received> {
        r.iter()
            .filter(|a| {
                a.message["instance_id"] == untagged.as_str()
                    || a.message["instance_id"] == leaked_to.as_str()
            })
            .cloned()
            .collect()
    };
    let all = mine(&everything.drain().await);
    assert_eq!(all.len(), 2, "{all:?}");
    for alert in &all {
        let m = &alert.message;
        assert_eq!(m["schema_version"], 1);
        assert_eq!(m["verdict"], "deny");
        assert_eq!(m["account"], "123456789012");
        assert_eq!(m["region"], "us-east-1");
        assert_eq!(m["action"], "stopped");
        for key in [
            "reason",
            "instance_id",
            "instance_name",
            "event_id",
            "event_time",
            "launch_time",
        ] {
            assert!(m[key].is_string(), "{key} in {m}");
        }
        assert!(
            alert.subject.starts_with("[ec2pass] DENIED start of i-") && alert.subject.len() <= 100,
            "{}",
            alert.subject
        );
        let expected: HashMap<String, String> =
            ["verdict", "reason", "instance_id", "account", "region"]
                .iter()
                .map(|k| {
                    (
                        (*k).to_owned(),
                        m[*k].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
        assert_eq!(alert.attributes, expected);
        let text = m.to_string();
        assert!(!text.contains(password.canonical()) && !text.contains(&hex_digest(&password)));
    }
    let leak = all
        .iter()
        .find(|a| a.message["reason"] == "wrong-instance")
        .expect("the leak alert");
    assert!(
        leak.message["password_short_id"].is_string() && leak.message["issuer_user_id"].is_string()
    );

    // And the filtered subscriber only what it asked for
    let filtered = mine(&leaks.drain().await);
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    assert_eq!(filtered[0].message["instance_id"], leaked_to.as_str());
}

fn hex_digest(p: &Password) -> String {
    use std::fmt::Write;
    p.digest()
        .as_bytes()
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
