//! Round trips: which AWS calls each path makes, in what order, and how many of them stand one
//! after the other before the outcome is decided, counted from the calls themselves.
//!
//! The guard and the issuer run in-process against the emulator, wired as their `main`s wire
//! them (the guard's state changes as a batch of one SQS message, its deployed single-event
//! path), except that every SDK client carries a [`Recorder`]: an interceptor that notes each
//! call's operation and when it began and ended. From that timeline:
//!
//! - a call's *depth* is 1 + the depth of the deepest call that ended before it began (calls
//!   that overlap run concurrently and do not add to each other's depth);
//! - the *decision* is the start of `StopInstances` on a deny path (the stop is issued), the end
//!   of the consume transaction on the allow path, and the end of the mint transaction on the
//!   issuer's path; its depth is the number of sequential round trips before it;
//! - every other call must begin at or after the decision (concurrently with the stop, or
//!   after it), never before it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use ec2pass_shared::config::{Env, GuardConfig, IssuerConfig};
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::password::Password;
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::SystemClock;
use guard::alerts::SnsAlerts;
use guard::batch::Message;
use guard::ec2::{AwsError, Ec2, Ec2Client, InstanceFacts, StopError};
use guard::guard::{Guard, Invocation};
use guard::pace::Paced;
use issuer::handler::Issuer;
use issuer::instances::Ec2Directory;
use issuer::request::Incoming;
use issuer::verify::HeaderValue;
use serde_json::{Value, json};

use crate::process::ms;
use crate::world::{Fallible, World, mint_command};

/// One AWS call as the interceptor saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Service (`EC2`, `DynamoDB`, `SNS`).
    pub service: String,
    /// Operation (`DescribeInstances`, …).
    pub operation: String,
    /// When the SDK began the call.
    pub start: Instant,
    /// When it finished (after its retries).
    pub end: Option<Instant>,
    /// HTTP attempts (more than one when the SDK retried).
    pub attempts: u32,
}

/// An SDK interceptor that records every call.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
}

#[derive(Debug, Clone, Copy)]
struct CallIndex(usize);

impl Storable for CallIndex {
    type Storer = StoreReplace<Self>;
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the calls recorded so far.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.lock())
    }

    fn with_call(&self, cfg: &ConfigBag, f: impl FnOnce(&mut Call)) {
        if let Some(CallIndex(i)) = cfg.load::<CallIndex>().copied()
            && let Some(call) = self.lock().get_mut(i)
        {
            f(call);
        }
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "bench-round-trips"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The operation is named later (its configuration is applied after this hook).
        let mut calls = self.lock();
        calls.push(Call {
            service: "?".into(),
            operation: "?".into(),
            start: Instant::now(),
            end: None,
            attempts: 0,
        });
        let index = CallIndex(calls.len() - 1);
        drop(calls);
        cfg.interceptor_state().store_put(index);
        Ok(())
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>().cloned() {
            self.with_call(cfg, |c| {
                c.service = m.service().to_owned();
                c.operation = m.name().to_owned();
            });
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.with_call(cfg, |c| c.attempts += 1);
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let now = Instant::now();
        self.with_call(cfg, |c| c.end = Some(now));
        Ok(())
    }
}

/// SDK clients for the emulator, each carrying the recorder.
pub struct Clients {
    /// DynamoDB.
    pub ddb: aws_sdk_dynamodb::Client,
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// SNS.
    pub sns: aws_sdk_sns::Client,
}

impl Clients {
    /// Clients built from the world's configuration with `recorder` on each.
    pub fn recorded(world: &World, recorder: &Recorder) -> Self {
        let aws = &world.aws;
        Self {
            ddb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(aws)
                    .interceptor(recorder.clone())
                    .build(),
            ),
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(aws)
                    .interceptor(recorder.clone())
                    .build(),
            ),
            sns: aws_sdk_sns::Client::from_conf(
                aws_sdk_sns::config::Builder::from(aws)
                    .interceptor(recorder.clone())
                    .build(),
            ),
        }
    }
}

/// The real EC2 client, except that instances EC2 reports `running` are reported `pending`:
/// the emulator runs instances at once, and the tagless-pending path needs a `pending` one.
pub struct PendingView(pub Ec2Client);

impl Ec2 for PendingView {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceFacts>, AwsError> {
        let facts = self.0.describe(id).await?;
        Ok(facts.map(|mut f| {
            if f.state == "running" {
                f.state = "pending".into();
            }
            f
        }))
    }
    async fn stop(&self, id: &InstanceId) -> Result<(), StopError> {
        self.0.stop(id).await
    }
    async fn terminate(&self, id: &InstanceId) -> Result<(), StopError> {
        self.0.terminate(id).await
    }
    async fn clear_stop_protection(&self, id: &InstanceId) -> Result<(), AwsError> {
        self.0.clear_stop_protection(id).await
    }
    async fn clear_termination_protection(&self, id: &InstanceId) -> Result<(), AwsError> {
        self.0.clear_termination_protection(id).await
    }
    async fn delete_tag(&self, id: &InstanceId, key: &str, value: &str) -> Result<(), AwsError> {
        self.0.delete_tag(id, key, value).await
    }
    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        self.0.active_instances().await
    }
}

/// Where a path's outcome is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// When `StopInstances` begins.
    StopIssued,
    /// When this transaction ends.
    TransactionDone,
}

/// One measured path.
#[derive(Debug, Clone)]
pub struct PathResult {
    /// Short name (`guard deny: no Auth tag`, …).
    pub name: &'static str,
    /// The target count, where the issue sets one.
    pub target: Option<usize>,
    /// Sequential round trips up to the decision (the decision's depth).
    pub sequential: usize,
    /// The calls on that sequence, in order.
    pub chain: Vec<String>,
    /// Other calls that began before the decision (should be none).
    pub early: Vec<String>,
    /// Other calls, which began with or after the decision.
    pub later: Vec<String>,
    /// From the start of the handler to the decision, in ms.
    pub decision_ms: f64,
    /// The whole handler, in ms.
    pub handle_ms: f64,
    /// What the handler answered (verdict, or the issuer's outcome).
    pub outcome: String,
    /// Every call, for the JSON.
    pub calls: Value,
    /// Why this path has the count it has.
    pub note: &'static str,
}

impl PathResult {
    /// Whether the path meets its target: the count, and no undeciding call before the decision.
    pub fn pass(&self) -> Option<bool> {
        self.target
            .map(|t| self.sequential == t && self.early.is_empty())
    }

    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "target": self.target,
            "sequential_calls": self.sequential,
            "pass": self.pass(),
            "chain": self.chain,
            "other_calls_before_decision": self.early,
            "other_calls_with_or_after_decision": self.later,
            "decision_ms": crate::stats::round3(self.decision_ms),
            "handler_ms": crate::stats::round3(self.handle_ms),
            "outcome": self.outcome,
            "note": self.note,
            "calls": self.calls,
        })
    }
}

/// What a timeline shows.
struct Analysis {
    /// The decision's depth.
    sequential: usize,
    /// The calls in sequence up to the decision.
    chain: Vec<String>,
    /// Other calls begun before the decision.
    early: Vec<String>,
    /// Other calls begun with or after it.
    later: Vec<String>,
    /// From `t0` to the decision, in ms.
    decision_ms: f64,
    /// Every call, for the JSON.
    calls: Value,
}

/// Analyses a timeline: the decision call's depth and chain, and what began before it.
fn analyse(
    mut calls: Vec<Call>,
    t0: Instant,
    decision_op: &str,
    decision: Decision,
) -> Fallible<Analysis> {
    calls.sort_by_key(|c| c.start);
    let end = |c: &Call| c.end.unwrap_or(c.start);
    let mut depth = vec![0usize; calls.len()];
    for i in 0..calls.len() {
        depth[i] = 1
            + (0..i)
                .filter(|&j| end(&calls[j]) <= calls[i].start)
                .map(|j| depth[j])
                .max()
                .unwrap_or(0);
    }
    let d = calls
        .iter()
        .position(|c| c.operation == decision_op)
        .ok_or_else(|| {
            format!(
                "no {decision_op} among the calls: {:?}",
                calls.iter().map(|c| &c.operation).collect::<Vec<_>>()
            )
        })?;
    // Walk back from the decision through the latest-ending call one level shallower.
    let mut chain = vec![d];
    let mut at = d;
    while depth[at] > 1 {
        let prev = (0..calls.len())
            .filter(|&j| depth[j] == depth[at] - 1 && end(&calls[j]) <= calls[at].start)
            .max_by_key(|&j| end(&calls[j]))
            .ok_or("inconsistent timeline")?;
        chain.push(prev);
        at = prev;
    }
    chain.reverse();
    let decided_at = match decision {
        Decision::StopIssued => calls[d].start,
        Decision::TransactionDone => end(&calls[d]),
    };
    let mut early = Vec::new();
    let mut later = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        if chain.contains(&i) {
            continue;
        }
        if c.start < decided_at {
            early.push(c.operation.clone());
        } else {
            later.push(c.operation.clone());
        }
    }
    let since = |t: Instant| crate::stats::round3(ms(t.saturating_duration_since(t0)));
    let timeline = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "service": c.service,
                "operation": c.operation,
                "start_ms": since(c.start),
                "end_ms": c.end.map(since),
                "attempts": c.attempts,
                "depth": depth[i],
                "on_chain": chain.contains(&i),
            })
        })
        .collect();
    Ok(Analysis {
        sequential: depth[d],
        chain: chain.iter().map(|&i| calls[i].operation.clone()).collect(),
        early,
        later,
        decision_ms: ms(decided_at.saturating_duration_since(t0)),
        calls: Value::Array(timeline),
    })
}

/// How an instance is arranged for a guard path.
#[derive(Debug, Clone, Copy)]
enum Arrange {
    /// A `Name` tag, no `Auth` tag.
    NameOnly,
    /// An `Auth` tag that cannot be a password.
    Garbage,
    /// A well-formed password nobody issued.
    NeverIssued,
    /// A password issued for another instance.
    OtherInstance,
    /// Its own valid password.
    Valid,
    /// No tags at all, seen `pending`.
    TaglessPending,
}

struct GuardPath {
    name: &'static str,
    arrange: Arrange,
    target: Option<usize>,
    expect: (&'static str, Option<&'static str>),
    note: &'static str,
}

const GUARD_PATHS: [GuardPath; 6] = [
    GuardPath {
        name: "guard deny: no Auth tag",
        arrange: Arrange::NameOnly,
        target: Some(3),
        expect: ("deny", Some("missing")),
        note: "describe, create-once deny verdict, stop (the deny is recorded before the stop: a missing tag is not proof, SPEC §4.3.1)",
    },
    GuardPath {
        name: "guard deny: tag is not a password",
        arrange: Arrange::Garbage,
        target: Some(3),
        expect: ("deny", Some("unknown")),
        note: "as with no tag: nothing to consume, so the deny is recorded, then the stop",
    },
    GuardPath {
        name: "guard deny: password never issued",
        arrange: Arrange::NeverIssued,
        target: Some(3),
        expect: ("deny", Some("unknown")),
        note: "describe, consume transaction (refused), stop; the deny verdict is recorded alongside the stop, the untag follows it",
    },
    GuardPath {
        name: "guard deny: password for another instance",
        arrange: Arrange::OtherInstance,
        target: Some(3),
        expect: ("deny", Some("wrong-instance")),
        note: "describe, consume transaction (refused), stop; the deny verdict and the burn go alongside the stop, the untag follows",
    },
    GuardPath {
        name: "guard allow",
        arrange: Arrange::Valid,
        target: Some(2),
        expect: ("allow", None),
        note: "describe, consume transaction (decided); the untag follows",
    },
    GuardPath {
        name: "guard deny: tagless while pending",
        arrange: Arrange::TaglessPending,
        target: Some(4),
        expect: ("deny", Some("missing")),
        note: "a direct invocation (the batch path hands a tagless pending start back to the queue instead, and decides it when it returns): describe, pause (EC2PASS_TAG_RETRY_DELAY), describe again (launch tags can lag a pending instance, SPEC §4.3 step 3), deny verdict, stop",
    },
];

/// Every guard path and the issuer's mint path, once each.
pub async fn measure(world: &World) -> Fallible<Vec<PathResult>> {
    let recorder = Recorder::default();
    let clients = Clients::recorded(world, &recorder);
    let config = GuardConfig::from_env(&Env::from_fn(world.lookup()))
        .map_err(|e| format!("guard configuration: {e}"))?;
    // As guard/src/main.rs wires it: EC2 paced; the state changes arrive as SQS batches (here,
    // of one message: the single-event path of the deployed design).
    let guard = Guard::new(
        config.clone(),
        DynamoStore::new(clients.ddb.clone(), world.table.clone()),
        Paced(Ec2Client::new(clients.ec2.clone())),
        SnsAlerts::new(clients.sns.clone(), world.topic_arn.clone()),
        SystemClock,
    );
    let pending_guard = Guard::new(
        config,
        DynamoStore::new(clients.ddb.clone(), world.table.clone()),
        PendingView(Ec2Client::new(clients.ec2.clone())),
        SnsAlerts::new(clients.sns.clone(), world.topic_arn.clone()),
        SystemClock,
    );
    // Each guard reads its activation time (DescribeTable) once, alongside its first describe,
    // as a cold start does; the paths are measured warm, so that read is made first, on an
    // instance that does not exist.
    let nobody = InstanceId::parse("i-0000000000000000f").ok_or("bad instance id")?;
    let warm_up = ec2pass_tests::state_change(&nobody, "pending");
    let inv = Invocation {
        request_id: ec2pass_tests::unique("bench-"),
        deadline: tokio::time::Instant::now() + Duration::from_secs(20),
    };
    let (a, b) = tokio::join!(
        guard.handle(&warm_up, &inv),
        pending_guard.handle(&warm_up, &inv)
    );
    a.and(b)
        .map_err(|e| format!("the guard's warm-up invocation failed: {e}"))?;
    let elsewhere = world.launch(1, &[("Name", "bench-elsewhere")]).await?;
    let mut results = Vec::new();
    for path in &GUARD_PATHS {
        let tags: &[(&str, &str)] = match path.arrange {
            Arrange::TaglessPending => &[],
            _ => &[("Name", "bench-rounds")],
        };
        let id = world.launch(1, tags).await?.remove(0);
        match path.arrange {
            Arrange::NameOnly | Arrange::TaglessPending => {}
            Arrange::Garbage => world.tag_auth(&id, "let-me-in-please").await?,
            Arrange::NeverIssued => world.tag_auth(&id, &Password::generate().display()).await?,
            Arrange::OtherInstance => {
                let p = world.mint(&elsewhere[0]).await?;
                world.tag_auth(&id, &p.display()).await?;
            }
            Arrange::Valid => {
                let p = world.mint(&id).await?;
                world.tag_auth(&id, &p.display()).await?;
            }
        }
        let event = ec2pass_tests::state_change(&id, "pending");
        let inv = Invocation {
            request_id: ec2pass_tests::unique("bench-"),
            deadline: tokio::time::Instant::now() + Duration::from_secs(20),
        };
        recorder.take();
        let t0 = Instant::now();
        let reports = match path.arrange {
            Arrange::TaglessPending => pending_guard.handle(&event, &inv).await,
            _ => {
                let message = Message {
                    id: ec2pass_tests::unique("msg-"),
                    receipt: ec2pass_tests::unique("receipt-"),
                    receive_count: 1,
                    body: event.to_string(),
                };
                let outcome = guard.handle_batch(&[message], &inv).await;
                if outcome.failed.is_empty() {
                    Ok(outcome.reports)
                } else {
                    Err(guard::guard::GuardError {
                        instance: id.to_string(),
                        what: "batch",
                        detail: format!("handed back: {:?}", outcome.reports),
                    })
                }
            }
        };
        let handle_ms = ms(t0.elapsed());
        let calls = recorder.take();
        let reports = reports.map_err(|e| format!("{}: the guard failed: {e}", path.name))?;
        let outcome = match reports.as_slice() {
            [r] if (r.verdict.as_str(), r.reason.as_deref()) == path.expect => {
                format!("{} {}", r.verdict, r.reason.as_deref().unwrap_or_default())
            }
            _ => {
                return Err(format!(
                    "{}: expected {:?}, the guard reported {reports:?}",
                    path.name, path.expect
                ));
            }
        };
        let (op, decision) = if path.expect.0 == "allow" {
            ("TransactWriteItems", Decision::TransactionDone)
        } else {
            ("StopInstances", Decision::StopIssued)
        };
        let a = analyse(calls, t0, op, decision).map_err(|e| format!("{}: {e}", path.name))?;
        results.push(PathResult {
            name: path.name,
            target: path.target,
            sequential: a.sequential,
            chain: a.chain,
            early: a.early,
            later: a.later,
            decision_ms: a.decision_ms,
            handle_ms,
            outcome: outcome.trim().to_owned(),
            calls: a.calls,
            note: path.note,
        });
    }
    results.push(issuer_path(world, &clients, &recorder).await?);
    Ok(results)
}

async fn issuer_path(
    world: &World,
    clients: &Clients,
    recorder: &Recorder,
) -> Fallible<PathResult> {
    let config = IssuerConfig::from_env(&Env::from_fn(world.lookup()))
        .map_err(|e| format!("issuer configuration: {e}"))?;
    let issuer = Issuer {
        store: DynamoStore::new(clients.ddb.clone(), world.table.clone()),
        directory: Ec2Directory::new(clients.ec2.clone()),
        clock: SystemClock,
        secret: world.signing_secret(),
        mattermost: None,
        replies: None,
        chat: issuer::chat::HttpChat::new().expect("an HTTP client"),
        config,
    };
    let scope = world
        .launch(1, &[("Name", "bench-issuer")])
        .await?
        .remove(0);
    let body = mint_command(&scope).body();
    let ts = ec2pass_tests::now().to_string();
    let sig = issuer::verify::sign(&world.signing_secret(), &ts, body.as_bytes());
    let incoming = Incoming {
        method: "POST",
        path: "/",
        content_type: HeaderValue::Once("application/x-www-form-urlencoded"),
        timestamp: HeaderValue::Once(&ts),
        signature: HeaderValue::Once(&sig),
        body: body.as_bytes(),
    };
    recorder.take();
    let t0 = Instant::now();
    let reply = issuer.handle(&incoming).await;
    let handle_ms = ms(t0.elapsed());
    let calls = recorder.take();
    let answer = ec2pass_tests::Answer {
        status: reply.status,
        content_type: Some("application/json".into()),
        raw: reply
            .body
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default(),
        json: reply.body.clone(),
    };
    if !(answer.is_ephemeral() && answer.password().is_some()) {
        return Err(format!("issuer mint path: no password in {reply:?}"));
    }
    let a = analyse(calls, t0, "TransactWriteItems", Decision::TransactionDone)
        .map_err(|e| format!("issuer mint path: {e}"))?;
    Ok(PathResult {
        name: "issuer mint (scoped)",
        target: None,
        sequential: a.sequential,
        chain: a.chain,
        early: a.early,
        later: a.later,
        decision_ms: a.decision_ms,
        handle_ms,
        outcome: "minted".into(),
        calls: a.calls,
        note: "describe the instance (name and state for the answer; refuses unknown or terminated ones), then one transaction: trigger claim + rate counter + password",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: &str, start: u64, end: u64, t0: Instant) -> Call {
        Call {
            service: "X".into(),
            operation: op.into(),
            start: t0 + Duration::from_millis(start),
            end: Some(t0 + Duration::from_millis(end)),
            attempts: 1,
        }
    }

    #[test]
    fn concurrent_calls_do_not_add_depth_and_early_side_effects_are_caught() {
        let t0 = Instant::now();
        // describe, then a write, then the stop together with an untag
        let calls = vec![
            call("DescribeInstances", 0, 10, t0),
            call("PutItem", 11, 20, t0),
            call("StopInstances", 21, 30, t0),
            call("DeleteTags", 21, 25, t0),
            call("Publish", 31, 35, t0),
        ];
        let a = analyse(calls, t0, "StopInstances", Decision::StopIssued).expect("a timeline");
        assert_eq!(a.sequential, 3);
        assert_eq!(a.chain, ["DescribeInstances", "PutItem", "StopInstances"]);
        assert!(a.early.is_empty());
        assert_eq!(a.later, ["DeleteTags", "Publish"]);
        assert!((a.decision_ms - 21.0).abs() < 0.001);

        // an untag awaited before the stop is both deeper and early
        let calls = vec![
            call("DescribeInstances", 0, 10, t0),
            call("PutItem", 11, 20, t0),
            call("DeleteTags", 21, 25, t0),
            call("StopInstances", 26, 30, t0),
        ];
        let a = analyse(calls, t0, "StopInstances", Decision::StopIssued).expect("a timeline");
        assert_eq!(a.sequential, 4);
        assert!(a.early.is_empty(), "it is on the chain: the count shows it");

        // a publish begun before the stop but not awaited is early
        let calls = vec![
            call("DescribeInstances", 0, 10, t0),
            call("Publish", 11, 40, t0),
            call("PutItem", 11, 20, t0),
            call("StopInstances", 21, 30, t0),
        ];
        let a = analyse(calls, t0, "StopInstances", Decision::StopIssued).expect("a timeline");
        assert_eq!((a.sequential, a.early), (3, vec!["Publish".to_owned()]));
    }

    #[test]
    fn a_missing_decision_call_is_an_error() {
        let t0 = Instant::now();
        let calls = vec![call("DescribeInstances", 0, 10, t0)];
        assert!(analyse(calls, t0, "StopInstances", Decision::StopIssued).is_err());
    }
}
