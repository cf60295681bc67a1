//! Load against the moto emulator: hundreds of concurrent guard invocations and issuer requests,
//! then the table, EC2 and the alert topic are checked for exactly-once outcomes.
//!
//! Both functions are driven in-process (`local_guard`; the issuer on `local_issuer`'s store, see
//! [`Launched`]): `cargo lambda watch` runs one invocation at a time, so it cannot show what
//! concurrency does. moto answers one request at a time, so the requests overlap in the functions
//! and the SDK (where the races are), and queue at the emulator. Names are unique per run and
//! every check is scoped to this run's instances, users and triggers, so reruns against the same
//! emulator do not collide; a passing run deletes the items it wrote (see `delete_items`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::password::Password;
use ec2pass_shared::store::dynamo::{DynamoStore, record_from_item, verdict_from_item};
use ec2pass_shared::store::{MintOutcome, MintStore, PasswordLookup};
use ec2pass_shared::time::{FixedClock, UnixTime};
use ec2pass_shared::verdict::VerdictRecord;
use ec2pass_tests::{
    AlertQueue, Deterministic, Local, SlashCommand, delete_items, invocation, item_text,
    launch_instance, local_guard, local_issuer, now, password_in, run_bounded, scan_all,
    state_change, tag, unique,
};
use issuer::instances::{DirectoryError, InstanceDirectory, InstanceInfo};
use issuer::request::Incoming;
use issuer::verify::{HeaderValue, sign};

/// Invocations or requests in flight at once.
const CONCURRENCY: usize = 32;

/// The seed of the load tests' pseudo-random choices (fixed: the same order every run).
const SEED: u64 = 0x5EED_10AD;

/// What an instance of the guard's fleet presents in its `Auth` tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// Its own valid password.
    Authorized,
    /// No `Auth` tag.
    NoTag,
    /// A well-formed password ec2pass never issued.
    Garbage,
    /// A valid password issued for another instance.
    OtherInstance,
    /// Its own password, expired before the start.
    Expired,
}

impl Kind {
    /// The verdict the guard must record, as `Verdict` displays it.
    fn expected(self) -> &'static str {
        match self {
            Kind::Authorized => "allow",
            Kind::NoTag => "deny (missing)",
            Kind::Garbage => "deny (unknown)",
            Kind::OtherInstance => "deny (wrong-instance)",
            Kind::Expired => "deny (expired)",
        }
    }
}

/// The fleet: about two thirds authorized, the rest denied for each reason.
const FLEET: [(Kind, usize); 5] = [
    (Kind::Authorized, 60),
    (Kind::NoTag, 9),
    (Kind::Garbage, 9),
    (Kind::OtherInstance, 9),
    (Kind::Expired, 5),
];

/// Mints a password through the store as the issuer does, issued at `issued_at` for 15 minutes;
/// the keys of the items it wrote go to `written`.
async fn mint(
    store: &DynamoStore,
    scope: &InstanceId,
    issued_at: UnixTime,
    written: &Mutex<Vec<String>>,
) -> Password {
    let cmd = issuer::request::SlashCommand {
        team_id: "T0LOAD".into(),
        enterprise_id: None,
        api_app_id: None,
        user_id: unique("U"),
        channel_id: "C0LOAD".into(),
        command: "/ec2pass".into(),
        text: String::new(),
        trigger_id: unique("trigger."),
        response_url: None,
        front: Default::default(),
    };
    let (password, plan) = issuer::mint::plan(
        &cmd,
        Some(scope.clone()),
        Duration::from_secs(900),
        issued_at,
        10,
    );
    assert_eq!(
        store.mint(&plan).await.ok(),
        Some(MintOutcome::Minted),
        "minting a fleet password"
    );
    written.lock().expect("not poisoned").extend([
        format!("trigger#{}", plan.trigger.trigger_id),
        format!("rate#{}#{}", plan.rate.owner.key(), plan.rate.window),
        plan.record.digest.table_key(),
    ]);
    password
}

/// State and tags of many instances, in one DescribeInstances.
async fn states(
    ec2: &aws_sdk_ec2::Client,
    ids: &[InstanceId],
) -> HashMap<String, (String, HashSet<String>)> {
    let mut out = HashMap::new();
    let mut pages = ec2
        .describe_instances()
        .set_instance_ids(Some(ids.iter().map(|i| i.as_str().to_owned()).collect()))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.expect("DescribeInstances against moto");
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            let tags = i
                .tags()
                .iter()
                .filter_map(|t| t.key().map(str::to_owned))
                .collect();
            out.insert(
                i.instance_id().unwrap_or_default().to_owned(),
                (state, tags),
            );
        }
    }
    out
}

/// Launches `count` instances in one RunInstances call (moto starts them `running`).
async fn launch_many(ec2: &aws_sdk_ec2::Client, count: usize, name: &str) -> Vec<InstanceId> {
    let n = i32::try_from(count).expect("a small fleet");
    let out = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(n)
        .max_count(n)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("Name")
                        .value(name)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("RunInstances against moto");
    let ids: Vec<InstanceId> = out
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().and_then(InstanceId::parse))
        .collect();
    assert_eq!(ids.len(), count, "instances launched");
    ids
}

/// A string attribute of an item, or `""`.
fn s_attr<'a>(item: &'a HashMap<String, AttributeValue>, key: &str) -> &'a str {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guard_under_load_one_verdict_per_cycle_no_false_stops_no_unauthorized_runs() {
    let started = Instant::now();
    let local = Local::load();
    let aws = local.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let store = DynamoStore::new(ddb.clone(), local.table());
    let topic = local.get("EC2PASS_ALERT_TOPIC_ARN").to_owned();
    let alerts = AlertQueue::subscribe(&aws, &topic, None).await;

    // Given a fleet of freshly started instances: 60 with their own valid password in the Auth
    // tag, 9 with none, 9 with a made-up password, 9 with a password issued for an instance
    // outside the fleet, 5 with their own password expired
    let elsewhere = launch_instance(&ec2, "load-elsewhere").await;
    let kinds: Vec<Kind> = FLEET
        .iter()
        .flat_map(|(kind, count)| std::iter::repeat_n(*kind, *count))
        .collect();
    let launched = launch_many(&ec2, kinds.len(), "load-fleet").await;
    let plan: Vec<(Kind, InstanceId)> = kinds.into_iter().zip(launched).collect();
    let written = Arc::new(Mutex::new(Vec::new()));
    let setup_jobs = plan
        .into_iter()
        .map(|(kind, id)| {
            let (ec2, store, elsewhere) = (ec2.clone(), store.clone(), elsewhere.clone());
            let written = written.clone();
            async move {
                let password = match kind {
                    Kind::Authorized => Some(mint(&store, &id, UnixTime(now()), &written).await),
                    Kind::Expired => {
                        Some(mint(&store, &id, UnixTime(now() - 3600), &written).await)
                    }
                    Kind::OtherInstance => {
                        Some(mint(&store, &elsewhere, UnixTime(now()), &written).await)
                    }
                    Kind::Garbage => Some(Password::generate()),
                    Kind::NoTag => None,
                };
                if let Some(p) = &password {
                    tag(&ec2, &id, "Auth", &p.display()).await;
                }
                (id, kind, password)
            }
        })
        .collect();
    let (fleet, _) = run_bounded(8, setup_jobs).await;
    let setup = started.elapsed();

    // When every start is delivered as 2–4 pending and 2–4 running events, all shuffled
    // together (a fixed seed: the same order every run), at most 32 invocations at once
    let mut rng = Deterministic::new(SEED);
    let mut events = Vec::new();
    for (id, _, _) in &fleet {
        for state in ["pending", "running"] {
            for _ in 0..rng.between(2, 4) {
                events.push((id.clone(), state_change(id, state)));
            }
        }
    }
    rng.shuffle(&mut events);
    assert!(events.len() >= 500, "{} events", events.len());
    let guard = Arc::new(local_guard(&local, &aws));
    let jobs = events
        .iter()
        .map(|(id, event)| {
            let (guard, id, event) = (guard.clone(), id.clone(), event.clone());
            async move { (id, guard.handle(&event, &invocation()).await) }
        })
        .collect();
    let run_started = Instant::now();
    let (results, peak) = run_bounded(CONCURRENCY, jobs).await;
    let run = run_started.elapsed();

    // Then: every invocation succeeded and reported on its instance
    let mut problems: Vec<String> = Vec::new();
    let mut decided_here: HashMap<String, usize> = HashMap::new();
    let mut alerted_here: HashMap<String, usize> = HashMap::new();
    let mut lost = 0;
    for (id, result) in &results {
        match result {
            Ok(reports) if reports.len() == 1 && reports[0].instance_id == id.as_str() => {
                *decided_here.entry(id.to_string()).or_default() +=
                    usize::from(reports[0].decided_here);
                *alerted_here.entry(id.to_string()).or_default() += usize::from(reports[0].alerted);
            }
            other => {
                lost += 1;
                problems.push(format!("{id}: invocation answered {other:?}"));
            }
        }
    }

    // And the table holds exactly one verdict per start cycle, the right one
    let fleet_ids: HashSet<&str> = fleet.iter().map(|(id, _, _)| id.as_str()).collect();
    let table = scan_all(&ddb, &local.table()).await;
    let mut verdicts: HashMap<String, Vec<VerdictRecord>> = HashMap::new();
    for item in &table {
        let pk = s_attr(item, "pk");
        let Some(instance) = pk
            .strip_prefix("verdict#")
            .and_then(|rest| rest.split('@').next())
        else {
            continue;
        };
        if fleet_ids.contains(instance) {
            verdicts
                .entry(instance.to_owned())
                .or_default()
                .push(verdict_from_item(item).expect("a well-formed verdict"));
        }
    }
    let allow_keys: Vec<&str> = verdicts
        .values()
        .flatten()
        .filter(|v| v.verdict.kind() == "allow")
        .filter_map(|v| v.password_key.as_deref())
        .collect();

    // And EC2 agrees: allowed starts stand, denied ones are stopped, no Auth tag is left
    let ids: Vec<InstanceId> = fleet.iter().map(|(id, _, _)| id.clone()).collect();
    let ec2_now = states(&ec2, &ids).await;

    // And the topic got exactly one alert per deny and none for an allow
    let mut received = alerts.drain().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    received.extend(alerts.drain().await);
    let mut alerts_for: HashMap<String, Vec<&ec2pass_tests::Received>> = HashMap::new();
    for a in &received {
        let instance = a.message["instance_id"].as_str().unwrap_or_default();
        if fleet_ids.contains(instance) {
            alerts_for.entry(instance.to_owned()).or_default().push(a);
        }
    }

    let (mut allowed, mut denied, mut false_stops, mut unauthorized_running) = (0, 0, 0, 0);
    let mut per_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for (id, kind, password) in &fleet {
        *per_kind.entry(*kind).or_default() += 1;
        let key = id.as_str();
        let recorded = verdicts.get(key).map(Vec::as_slice).unwrap_or_default();
        if recorded.len() != 1 {
            problems.push(format!(
                "{id} ({kind:?}): {} verdicts: {recorded:?}",
                recorded.len()
            ));
            continue;
        }
        let verdict = &recorded[0];
        if verdict.verdict.to_string() != kind.expected() {
            problems.push(format!(
                "{id} ({kind:?}): verdict {} (expected {})",
                verdict.verdict,
                kind.expected()
            ));
        }
        if decided_here.get(key) != Some(&1) {
            problems.push(format!(
                "{id} ({kind:?}): {:?} invocations said they decided the cycle",
                decided_here.get(key)
            ));
        }
        let (state, tags) = ec2_now.get(key).cloned().unwrap_or_default();
        if tags.contains("Auth") {
            problems.push(format!("{id} ({kind:?}): the Auth tag is still there"));
        }
        let alerts_here = alerts_for.get(key).map(Vec::as_slice).unwrap_or_default();
        let digest = password.as_ref().map(Password::digest);
        let stored = match &digest {
            Some(d) => store.find(d).await.expect("GetItem against moto"),
            None => None,
        };
        if *kind == Kind::Authorized {
            allowed += 1;
            if state != "running" {
                false_stops += 1;
                problems.push(format!("{id}: allowed but {state}"));
            }
            if !alerts_here.is_empty() || alerted_here.get(key).copied().unwrap_or(0) != 0 {
                problems.push(format!("{id}: an allow alerted: {alerts_here:?}"));
            }
            // Its password consumed by exactly this cycle, and by no other
            let digest_key = digest.map(|d| d.table_key()).unwrap_or_default();
            let consumed_by = stored.and_then(|r| r.consumed_by);
            if consumed_by != Some(verdict.cycle.id()) {
                problems.push(format!(
                    "{id}: password consumed by {consumed_by:?}, not {}",
                    verdict.cycle.id()
                ));
            }
            let uses = allow_keys.iter().filter(|k| **k == digest_key).count();
            if uses != 1 {
                problems.push(format!("{id}: its password allowed {uses} cycles"));
            }
        } else {
            denied += 1;
            if state != "stopped" && state != "stopping" {
                unauthorized_running += 1;
                problems.push(format!("{id} ({kind:?}): denied but {state}"));
            }
            let deny_alerts = alerts_here
                .iter()
                .filter(|a| {
                    a.message["verdict"] == "deny"
                        && Some(a.message["reason"].as_str().unwrap_or_default())
                            == verdict.verdict.reason().map(|r| r.as_str())
                })
                .count();
            if alerts_here.len() != 1 || deny_alerts != 1 {
                problems.push(format!(
                    "{id} ({kind:?}): {} alerts ({deny_alerts} matching deny): {alerts_here:?}",
                    alerts_here.len()
                ));
            }
            if alerted_here.get(key).copied().unwrap_or(0) != 1 {
                problems.push(format!(
                    "{id} ({kind:?}): {:?} invocations published its alert",
                    alerted_here.get(key)
                ));
            }
            // A denied start consumes nothing: a leaked password is burned, an expired one
            // left alone, a made-up one does not exist
            let consumed_by = stored.as_ref().and_then(|r| r.consumed_by.clone());
            let fine = match kind {
                Kind::OtherInstance => consumed_by
                    .as_deref()
                    .is_some_and(|c| c.starts_with("burned:")),
                Kind::Expired => stored.is_some() && consumed_by.is_none(),
                Kind::Garbage => stored.is_none(),
                _ => true,
            };
            if !fine {
                problems.push(format!("{id} ({kind:?}): password now {stored:?}"));
            }
        }
    }
    let expected_alerts = denied;
    let fleet_alerts: usize = alerts_for.values().map(Vec::len).sum();
    let checks = started.elapsed() - setup - run;

    println!(
        "guard-load: {} events, concurrency {CONCURRENCY} (peak in flight {peak}), {} cycles, \
         {allowed} allowed, {denied} denied, {false_stops} false stops, \
         {unauthorized_running} unauthorized running, alerts {fleet_alerts} (expected \
         {expected_alerts}), lost {lost}",
        events.len(),
        fleet.len(),
    );
    println!("guard-load: fleet {per_kind:?}");
    println!(
        "guard-load: took {:.1}s (setup {:.1}s, {} invocations {:.1}s = {:.1}/s, checks {:.1}s)",
        started.elapsed().as_secs_f64(),
        setup.as_secs_f64(),
        events.len(),
        run.as_secs_f64(),
        events.len() as f64 / run.as_secs_f64(),
        checks.as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!((false_stops, unauthorized_running, lost), (0, 0, 0));
    assert_eq!(fleet_alerts, expected_alerts);

    // Passed: leave the shared table as it was (see `delete_items`)
    let mut keys = written.lock().expect("not poisoned").clone();
    keys.extend(verdicts.values().flatten().map(|v| v.cycle.verdict_key()));
    delete_items(&ddb, &local.table(), &keys).await;
}

/// How the issuer answered one request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// A password (as shown).
    Minted(String),
    /// The documented rate-limit explanation.
    RateLimited,
    /// The documented replay refusal.
    Replayed,
    /// Anything else: always a failure.
    Wrong(String),
}

/// Instance lookups answered from the instances this run launched (as `running`, named
/// `issuer-load`), so the issuer's load falls on the store, where the races are. The real
/// `Ec2Directory` against moto is exercised by `issuer_http` and `issuer_nasty`; here it would
/// only add a DescribeInstances per request to the serialized emulator, whose cost grows with
/// every instance it has ever launched.
struct Launched(HashSet<String>);

impl InstanceDirectory for Launched {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceInfo>, DirectoryError> {
        Ok(self.0.contains(id.as_str()).then(|| InstanceInfo {
            name: Some("issuer-load".into()),
            state: "running".into(),
            place: None,
        }))
    }
}

/// One signed request of the issuer's load.
struct Request {
    user: String,
    instance: InstanceId,
    trigger: String,
    body: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issuer_under_load_answers_right_rate_limits_exactly_and_stores_distinct_digests() {
    let started = Instant::now();
    let local = Local::load();
    let aws = local.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    // The clock stands still, so every request falls in one rate-limit window whatever the
    // wall clock does during the run (an hour boundary cannot split the expectations).
    let clock = FixedClock(UnixTime(now()));
    let instances = launch_many(&ec2, 5, "issuer-load").await;
    // The real store; instance lookups from this run's own launches (see `Launched`).
    let base = local_issuer(&local, &aws, clock);
    let issuer = Arc::new(issuer::handler::Issuer {
        directory: Launched(instances.iter().map(|id| id.to_string()).collect()),
        store: base.store,
        clock: base.clock,
        secret: base.secret,
        mattermost: None,
        replies: None,
        chat: issuer::chat::HttpChat::new().expect("an HTTP client"),
        config: base.config,
    });
    let limit = issuer.config.rate_limit_per_hour;
    let limit_n = usize::try_from(limit).expect("a small limit");
    let ts = clock.0.0.to_string();
    let secret = local.signing_secret();

    // Given 5 users, each with an instance, each sending 10× their hourly limit of distinct
    // mint requests, and replaying 8 of them (the very same signed bytes again)
    let team = unique("T");
    let per_user = 10 * limit_n;
    let mut requests = Vec::new();
    for instance in &instances {
        let user = unique("U");
        for r in 0..per_user {
            let text = if r % 3 == 0 {
                format!("{instance} 30m")
            } else {
                instance.to_string()
            };
            let cmd = SlashCommand::new(&team, &user, &text);
            requests.push(Request {
                user: user.clone(),
                instance: instance.clone(),
                trigger: cmd.trigger_id.clone(),
                body: cmd.body(),
            });
        }
    }
    let distinct = requests.len();
    let replayed: Vec<usize> = (0..distinct).filter(|i| i % per_user < 8).collect();
    let mut order: Vec<usize> = (0..distinct).chain(replayed.iter().copied()).collect();
    let mut rng = Deterministic::new(SEED ^ 0x1550);
    rng.shuffle(&mut order);

    // When they all arrive, at most 32 at once
    let requests = Arc::new(requests);
    let jobs = order
        .iter()
        .map(|&i| {
            let (issuer, requests, ts) = (issuer.clone(), requests.clone(), ts.clone());
            let signature = sign(&secret, &ts, requests[i].body.as_bytes());
            async move {
                let body = requests[i].body.as_bytes();
                // Without Slack's 2.5 s deadline: the local emulator serialises requests
                // (dev/moto_serial.py), so at concurrency 32 a request waits behind 31 others,
                // which DynamoDB does not make it do. This test is about answers, replays and
                // the rate limit under concurrency; the deadline has its own test
                // (`slow_aws_gets_an_answer_before_slack_gives_up_and_nothing_is_minted_after_it`).
                let reply = issuer
                    .handle_within(
                        &Incoming {
                            method: "POST",
                            path: "/",
                            content_type: HeaderValue::Once("application/x-www-form-urlencoded"),
                            timestamp: HeaderValue::Once(&ts),
                            signature: HeaderValue::Once(&signature),
                            body,
                        },
                        Duration::from_secs(120),
                    )
                    .await;
                let text = reply
                    .body
                    .as_ref()
                    .and_then(|b| b["text"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                let ephemeral = reply
                    .body
                    .as_ref()
                    .is_some_and(|b| b["response_type"] == "ephemeral");
                let outcome = match password_in(&text) {
                    _ if reply.status != 200 || !ephemeral => {
                        Outcome::Wrong(format!("{} {:?}", reply.status, reply.body))
                    }
                    Some(p) if text.contains(requests[i].instance.as_str()) => Outcome::Minted(p),
                    None if text.contains("which is the limit") => Outcome::RateLimited,
                    None if text.contains("already answered") => Outcome::Replayed,
                    _ => Outcome::Wrong(text),
                };
                (i, outcome)
            }
        })
        .collect();
    let run_started = Instant::now();
    let (answers, peak) = run_bounded(CONCURRENCY, jobs).await;
    let run = run_started.elapsed();

    // Then every answer is one of the three right ones
    let mut problems: Vec<String> = Vec::new();
    let mut by_trigger: HashMap<usize, Vec<&Outcome>> = HashMap::new();
    let mut minted_by_user: BTreeMap<&str, usize> = BTreeMap::new();
    let mut passwords: Vec<(usize, &str)> = Vec::new();
    let (mut minted, mut rate_limited, mut replays) = (0, 0, 0);
    for (i, outcome) in &answers {
        by_trigger.entry(*i).or_default().push(outcome);
        match outcome {
            Outcome::Minted(p) => {
                ec2pass_tests::secrets::remember(p);
                minted += 1;
                *minted_by_user.entry(&requests[*i].user).or_default() += 1;
                passwords.push((*i, p));
            }
            Outcome::RateLimited => rate_limited += 1,
            Outcome::Replayed => replays += 1,
            Outcome::Wrong(what) => problems.push(format!(
                "{} ({}): wrong answer {what}",
                requests[*i].trigger, requests[*i].user
            )),
        }
    }
    // And a trigger id is answered with a password at most once; once it is, every other
    // delivery of it is refused as a replay
    for (i, outcomes) in &by_trigger {
        let mints = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Minted(_)))
            .count();
        let others_replayed = outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Minted(_)))
            .all(|o| **o == Outcome::Replayed);
        if mints > 1 || (mints == 1 && !others_replayed) {
            problems.push(format!("{}: answered {outcomes:?}", requests[*i].trigger));
        }
    }
    // And each user got exactly their limit, no more, no less
    let users: HashSet<&str> = requests.iter().map(|r| r.user.as_str()).collect();
    for user in &users {
        let got = minted_by_user.get(user).copied().unwrap_or(0);
        if got != limit_n {
            problems.push(format!("{user}: {got} passwords (limit {limit})"));
        }
    }

    // And the table holds one password item per password shown, each digest distinct, each
    // the requester's and for the requested instance; no plaintext anywhere; every trigger
    // claimed; every user's counter at exactly the limit
    let table = scan_all(&ddb, &local.table()).await;
    let ours: Vec<&HashMap<String, AttributeValue>> = table
        .iter()
        .filter(|item| s_attr(item, "pk").starts_with("pw#") && s_attr(item, "team_id") == team)
        .collect();
    let digests: HashSet<Vec<u8>> = ours
        .iter()
        .filter_map(|item| item.get("digest").and_then(|d| d.as_b().ok()))
        .map(|b| b.as_ref().to_vec())
        .collect();
    if ours.len() != minted || digests.len() != minted {
        problems.push(format!(
            "{} password items with {} distinct digests for {minted} passwords shown",
            ours.len(),
            digests.len()
        ));
    }
    let by_key: HashMap<&str, &HashMap<String, AttributeValue>> = ours
        .iter()
        .map(|item| (s_attr(item, "pk"), *item))
        .collect();
    let shown: HashSet<&str> = passwords.iter().map(|(_, p)| *p).collect();
    if shown.len() != passwords.len() {
        problems.push("the same password was shown twice".into());
    }
    let all_text: String = table.iter().map(item_text).collect();
    for (i, p) in &passwords {
        let password = Password::from_tag(p).expect("a password as shown");
        let key = password.digest().table_key();
        match by_key.get(key.as_str()).map(|item| record_from_item(item)) {
            Some(Ok(r))
                if r.owner.user_id == requests[*i].user
                    && r.scope.as_ref() == Some(&requests[*i].instance)
                    && r.consumed_by.is_none() => {}
            other => problems.push(format!("{}: stored as {other:?}", requests[*i].trigger)),
        }
        if all_text.contains(*p) || all_text.contains(password.canonical()) {
            problems.push(format!(
                "{}: a plaintext is in the table",
                requests[*i].trigger
            ));
        }
    }
    let keys: HashSet<&str> = table.iter().map(|item| s_attr(item, "pk")).collect();
    let unclaimed = requests
        .iter()
        .filter(|r| !keys.contains(format!("trigger#{}", r.trigger).as_str()))
        .count();
    if unclaimed != 0 {
        problems.push(format!("{unclaimed} trigger ids were left unclaimed"));
    }
    for user in &users {
        let owner = ec2pass_shared::ids::Owner {
            team_id: team.clone(),
            user_id: (*user).to_owned(),
        };
        let window = issuer::mint::rate_window(owner.clone(), clock.0, limit).window;
        let counter = table
            .iter()
            .find(|item| s_attr(item, "pk") == format!("rate#{}#{window}", owner.key()))
            .and_then(|item| item.get("n"))
            .and_then(|n| n.as_n().ok())
            .and_then(|n| n.parse::<u32>().ok());
        if counter != Some(limit) {
            problems.push(format!("{user}: rate counter {counter:?} (limit {limit})"));
        }
    }
    let checks = started.elapsed() - run;

    println!(
        "issuer-load: {} requests, concurrency {CONCURRENCY} (peak in flight {peak}), {minted} \
         minted, {rate_limited} rate-limited, {replays} replays refused, digests {}",
        answers.len(),
        if digests.len() == minted && ours.len() == minted {
            "distinct"
        } else {
            "NOT distinct"
        }
    );
    println!(
        "issuer-load: {} users × {per_user} distinct triggers + {} replayed, limit {limit}/h: \
         per user {minted_by_user:?}",
        users.len(),
        replayed.len()
    );
    println!(
        "issuer-load: took {:.1}s ({} requests {:.1}s = {:.1}/s, setup and checks {:.1}s)",
        started.elapsed().as_secs_f64(),
        answers.len(),
        run.as_secs_f64(),
        answers.len() as f64 / run.as_secs_f64(),
        checks.as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(minted, users.len() * limit_n);
    assert_eq!(minted + rate_limited + replays, answers.len());

    // Passed: leave the shared table as it was (see `delete_items`)
    let mut keys: Vec<String> = requests
        .iter()
        .map(|r| format!("trigger#{}", r.trigger))
        .collect();
    keys.extend(ours.iter().map(|item| s_attr(item, "pk").to_owned()));
    keys.extend(
        table
            .iter()
            .map(|item| s_attr(item, "pk"))
            .filter(|pk| {
                // The rate counters and the per-owner ledgers of this run's team.
                pk.strip_prefix("rate#")
                    .or_else(|| pk.strip_prefix("owner#"))
                    .and_then(|rest| rest.strip_prefix(&format!("{team}#")))
                    .is_some()
            })
            .map(str::to_owned),
    );
    delete_items(&ddb, &local.table(), &keys).await;
}
