//! The guard against the moto emulator through the real SDK: DynamoDB, EC2, SNS → SQS.
//! EventBridge is played by calling the guard with event JSON of the documented shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use ec2pass_shared::alert::Action;
use ec2pass_shared::config::{Env, GuardConfig};
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::password::Password;
use ec2pass_shared::store::dynamo::{DynamoStore, verdict_from_item};
use ec2pass_shared::store::{MintOutcome, MintStore, PasswordLookup};
use ec2pass_shared::time::{SystemClock, UnixTime};
use ec2pass_tests::{
    AlertQueue, Local, inspect, invocation, launch_instance, local_guard, now, scan_all,
    state_change, tag, unique,
};
use guard::alerts::SnsAlerts;
use guard::ec2::{AwsError, Ec2, Ec2Client, InstanceFacts, StopError};
use guard::guard::Guard;
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
            response_url: None,
            front: Default::default(),
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
        assert_eq!(m["schema_version"], 2);
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

/// The guard's settings from `dev/local.env`, on another table if `table` is given.
fn guard_config(local: &Local, table: Option<&str>) -> GuardConfig {
    let lookup = local.lookup();
    GuardConfig::from_env(&Env::from_fn(|k| match (k, table) {
        ("EC2PASS_TABLE", Some(t)) => Some(t.to_owned()),
        _ => lookup(k),
    }))
    .expect("guard configuration from dev/local.env")
}

/// The real EC2 client, except that the operator sets the instance's `Auth` tag to `next` just
/// before the guard's DeleteTags reaches EC2: between the guard's describe and its untag, a
/// password for the next start is tagged.
struct RetagBeforeUntag {
    ec2: Ec2Client,
    raw: aws_sdk_ec2::Client,
    next: String,
    untags: Mutex<Vec<String>>,
}

impl Ec2 for RetagBeforeUntag {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceFacts>, AwsError> {
        self.ec2.describe(id).await
    }
    async fn stop(&self, id: &InstanceId) -> Result<(), StopError> {
        self.ec2.stop(id).await
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
        tag(&self.raw, id, key, &self.next).await;
        self.untags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(value.to_owned());
        self.ec2.delete_tag(id, key, value).await
    }
    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        self.ec2.active_instances().await
    }
}

#[tokio::test]
async fn the_guards_untag_leaves_an_auth_tag_whose_value_changed_meanwhile() {
    // moto implements DeleteTags value matching as EC2 documents it ("If you specify a tag key
    // with a value, we delete the tag only if its value matches"): first, straight through the
    // client the guard uses
    let w = world().await;
    let ec2 = Ec2Client::new(w.ec2.clone());
    let id = launch_instance(&w.ec2, "untag-value").await;
    let first = Password::generate().display();
    let second = Password::generate().display();
    tag(&w.ec2, &id, "Auth", &second).await;
    ec2.delete_tag(&id, "Auth", &first)
        .await
        .expect("DeleteTags");
    assert_eq!(
        inspect(&w.ec2, &id).await.1.get("Auth"),
        Some(&second),
        "another value stays"
    );
    ec2.delete_tag(&id, "Auth", &second)
        .await
        .expect("DeleteTags");
    assert!(!inspect(&w.ec2, &id).await.1.contains_key("Auth"));

    // Given an instance started with its own password, and its operator tagging the password
    // for the next start just before the guard's untag reaches EC2
    let web = launch_instance(&w.ec2, "untag-race").await;
    let now_valid = w.mint(Some(&web)).await;
    let next = w.mint(Some(&web)).await;
    tag(&w.ec2, &web, "Auth", &now_valid.display()).await;
    let guard = Guard::new(
        guard_config(&w.local, None),
        w.store.clone(),
        RetagBeforeUntag {
            ec2: Ec2Client::new(w.ec2.clone()),
            raw: w.ec2.clone(),
            next: next.display(),
            untags: Mutex::new(Vec::new()),
        },
        SnsAlerts::new(
            aws_sdk_sns::Client::new(&w.aws),
            w.local.get("EC2PASS_ALERT_TOPIC_ARN"),
        ),
        SystemClock,
    );

    // When the guard allows the start and removes the tag it read
    let reports = guard
        .handle(&state_change(&web, "pending"), &invocation())
        .await
        .expect("handled");

    // Then it removed it only with the value it read (DeleteTags with the value), so the next
    // start's password stays, unconsumed
    assert_eq!(reports[0].verdict, "allow", "{reports:?}");
    assert_eq!(
        *guard.ec2.untags.lock().unwrap_or_else(|p| p.into_inner()),
        [now_valid.display()]
    );
    let (state, tags) = inspect(&w.ec2, &web).await;
    assert_eq!(state, "running");
    assert_eq!(tags.get("Auth"), Some(&next.display()));
    let stored = w.store.find(&next.digest()).await.ok().flatten();
    assert_eq!(stored.map(|r| r.consumed_by), Some(None));
}

#[tokio::test]
async fn a_late_duplicate_event_neither_untags_nor_consumes_the_next_starts_password() {
    // Given a start denied and stopped, and one allowed and running, whose operators then tag
    // the password for the next start
    let w = world().await;
    let guard = local_guard(&w.local, &w.aws);
    let denied = launch_instance(&w.ec2, "late-denied").await;
    let allowed = launch_instance(&w.ec2, "late-allowed").await;
    let used = w.mint(Some(&allowed)).await;
    tag(&w.ec2, &allowed, "Auth", &used.display()).await;
    let topic = w.local.get("EC2PASS_ALERT_TOPIC_ARN").to_owned();
    let alerts = AlertQueue::subscribe(&w.aws, &topic, None).await;
    for id in [&denied, &allowed] {
        guard
            .handle(&state_change(id, "pending"), &invocation())
            .await
            .expect("handled");
    }
    assert_eq!(inspect(&w.ec2, &denied).await.0, "stopped");
    assert_eq!(inspect(&w.ec2, &allowed).await.0, "running");
    let mut next = Vec::new();
    for id in [&denied, &allowed] {
        let p = w.mint(Some(id)).await;
        tag(&w.ec2, id, "Auth", &p.display()).await;
        next.push(p);
    }

    // When a late duplicate of each start's pending event arrives
    let mut late = Vec::new();
    for id in [&denied, &allowed] {
        late.push(
            guard
                .handle(&state_change(id, "pending"), &invocation())
                .await
                .expect("handled"),
        );
    }

    // Then the stopped start's event changes nothing, the running one's enforces its allow
    // again, and neither touches the next start's password: tagged, unconsumed
    assert_eq!(
        (late[0][0].verdict.as_str(), late[0][0].action),
        ("none", Action::None),
        "{late:?}"
    );
    assert_eq!(late[1][0].verdict, "allow", "{late:?}");
    assert!(!late[1][0].decided_here);
    for (id, p) in [&denied, &allowed].into_iter().zip(&next) {
        assert_eq!(
            inspect(&w.ec2, id).await.1.get("Auth"),
            Some(&p.display()),
            "{id}"
        );
        let stored = w.store.find(&p.digest()).await.ok().flatten();
        assert_eq!(stored.map(|r| r.consumed_by), Some(None), "{id}");
        assert_eq!(w.verdicts(id).await.len(), 1, "{id}");
    }
    assert_eq!(inspect(&w.ec2, &denied).await.0, "stopped");
    assert_eq!(inspect(&w.ec2, &allowed).await.0, "running");
    // And the deny was announced once, the late event announced nothing
    let received: Vec<_> = alerts
        .drain()
        .await
        .into_iter()
        .filter(|a| {
            a.message["instance_id"] == denied.as_str()
                || a.message["instance_id"] == allowed.as_str()
        })
        .collect();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].message["reason"], "missing");
}

#[tokio::test]
async fn a_forged_event_about_an_instance_that_predates_the_guard_changes_nothing() {
    // Given an instance running without a password, and a guard activated after it started:
    // its table created a second later (the activation time is the table's creation time)
    let w = world().await;
    let old = launch_instance(&w.ec2, "predates-the-guard").await;
    let launched = now();
    while now() <= launched {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let table = unique("ec2pass-activated-later-");
    w.ddb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("an attribute definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("a key schema element"),
        )
        .send()
        .await
        .expect("CreateTable");
    let guard = Guard::new(
        guard_config(&w.local, Some(&table)),
        DynamoStore::new(w.ddb.clone(), table.clone()),
        Ec2Client::new(w.ec2.clone()),
        SnsAlerts::new(
            aws_sdk_sns::Client::new(&w.aws),
            w.local.get("EC2PASS_ALERT_TOPIC_ARN"),
        ),
        SystemClock,
    );

    // When anyone with lambda:InvokeFunction sends it a forged pending event for the instance
    let reports = guard
        .handle(&state_change(&old, "pending"), &invocation())
        .await
        .expect("handled");

    // Then nothing is decided or done: it keeps running, and no verdict is recorded
    assert_eq!(
        (reports[0].verdict.as_str(), reports[0].action),
        ("none", Action::None),
        "{reports:?}"
    );
    assert_eq!(inspect(&w.ec2, &old).await.0, "running");
    assert!(scan_all(&w.ddb, &table).await.is_empty());
    w.ddb
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .expect("DeleteTable");
}
