//! Warm handler cost: the time one invocation spends in ec2pass's own code once the process is
//! warm, with AWS replaced by in-memory fakes (so network and emulator time are excluded).
//!
//! Each iteration is timed from the raw event bytes to the serialised answer, as the runtime
//! hands them over: for the issuer, the function URL event is turned into an HTTP request
//! (`lambda_http`), then signature check, form parsing, command parsing, instance lookup (fake),
//! password generation and digest, the store's mint (in memory) and the Block Kit answer; for
//! the guard, the EventBridge JSON is parsed, then describe (fake), decision, consume or record
//! (in memory), stop and untag (fake), the alert built and serialised (fake publish), and the
//! answer serialised. Every iteration is a new request or a new start cycle, so each one takes
//! the full path rather than a replay or an existing verdict. Logging is on, at INFO in JSON, as
//! deployed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ec2pass_shared::alert::Alert;
use ec2pass_shared::config::{Env, GuardConfig, IssuerConfig, SigningSecret};
use ec2pass_shared::ids::{InstanceId, Owner};
use ec2pass_shared::password::{Password, new_short_id};
use ec2pass_shared::store::PasswordRecord;
use ec2pass_shared::store::memory::MemoryStore;
use ec2pass_shared::time::{Clock, SystemClock, UnixTime};
use guard::alerts::Alerts;
use guard::ec2::{AwsError, Ec2, InstanceFacts, StopError};
use guard::guard::{Guard, Invocation};
use issuer::handler::Issuer;
use issuer::instances::{DirectoryError, InstanceDirectory, InstanceInfo};
use serde_json::{Value, json};

use crate::stats::Summary;
use crate::world::{Fallible, issuer_event, local_env, mint_command};

/// One warm path's figures.
#[derive(Debug, Clone)]
pub struct WarmResult {
    /// Short name.
    pub name: &'static str,
    /// Per-invocation time, in microseconds.
    pub summary: Summary,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// EC2 in memory: describe answers from a map; stop and untag change it.
#[derive(Default)]
struct MemoryEc2 {
    instances: Mutex<HashMap<String, InstanceFacts>>,
}

impl Ec2 for MemoryEc2 {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceFacts>, AwsError> {
        Ok(lock(&self.instances).get(id.as_str()).cloned())
    }
    async fn stop(&self, id: &InstanceId) -> Result<(), StopError> {
        if let Some(f) = lock(&self.instances).get_mut(id.as_str()) {
            f.state = "stopping".into();
        }
        Ok(())
    }
    async fn terminate(&self, id: &InstanceId) -> Result<(), StopError> {
        if let Some(f) = lock(&self.instances).get_mut(id.as_str()) {
            f.state = "shutting-down".into();
        }
        Ok(())
    }
    async fn clear_stop_protection(&self, _id: &InstanceId) -> Result<(), AwsError> {
        Ok(())
    }
    async fn clear_termination_protection(&self, _id: &InstanceId) -> Result<(), AwsError> {
        Ok(())
    }
    async fn delete_tag(&self, id: &InstanceId, key: &str, value: &str) -> Result<(), AwsError> {
        // As EC2 does: a key with a value deletes the tag only while it holds that value.
        if let Some(f) = lock(&self.instances).get_mut(id.as_str())
            && f.tags.get(key).is_some_and(|v| v == value)
        {
            f.tags.remove(key);
        }
        Ok(())
    }
    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        Ok(lock(&self.instances).values().cloned().collect())
    }
}

/// SNS in memory: renders each alert as SNS would be sent it, and counts.
#[derive(Default)]
struct CountingAlerts {
    published: Mutex<usize>,
}

impl Alerts for CountingAlerts {
    async fn publish(&self, alert: &Alert) -> Result<(), AwsError> {
        let rendered = alert.subject().len() + alert.message().len() + alert.attributes().len();
        std::hint::black_box(rendered);
        *lock(&self.published) += 1;
        Ok(())
    }
}

/// Every instance is known and running.
struct KnownDirectory;

impl InstanceDirectory for KnownDirectory {
    async fn describe(&self, _id: &InstanceId) -> Result<Option<InstanceInfo>, DirectoryError> {
        Ok(Some(InstanceInfo {
            name: Some("bench-web".into()),
            state: "running".into(),
            place: None,
        }))
    }
}

fn settings() -> impl Fn(&str) -> Option<String> {
    let vars = local_env();
    move |k| vars.get(k).cloned()
}

/// The issuer's mint path, `iterations` times (after `warmup` untimed ones).
pub async fn issuer_mint(iterations: usize, warmup: usize) -> Fallible<WarmResult> {
    let config = IssuerConfig::from_env(&Env::from_fn(settings()))
        .map_err(|e| format!("issuer configuration: {e}"))?;
    let secret = SigningSecret::new(
        local_env()
            .get("EC2PASS_DEV_SIGNING_SECRET")
            .cloned()
            .unwrap_or_default(),
    );
    let issuer = Issuer {
        store: MemoryStore::new(),
        directory: KnownDirectory,
        clock: SystemClock,
        secret: secret.clone(),
        mattermost: None,
        replies: None,
        chat: issuer::chat::HttpChat::new().expect("an HTTP client"),
        config,
    };
    let scope = InstanceId::parse("i-0123456789abcdef0").ok_or("bad instance id")?;
    let events: Vec<String> = (0..warmup + iterations)
        .map(|_| {
            String::from_utf8_lossy(&issuer_event(&secret, &mint_command(&scope))).into_owned()
        })
        .collect();
    let mut samples = Vec::with_capacity(iterations);
    for (i, event) in events.iter().enumerate() {
        let t = Instant::now();
        let request = lambda_http::request::from_str(event)
            .map_err(|e| format!("lambda_http cannot read the issuer event: {e}"))?;
        let response = issuer.handle_http(request).await;
        let status = response.status();
        let answer = std::hint::black_box(response.into_body().to_vec());
        let elapsed = t.elapsed();
        if status != 200 || answer.is_empty() {
            return Err(format!("the issuer answered {status}"));
        }
        if i >= warmup {
            samples.push(micros(elapsed));
        }
    }
    let minted = issuer.store.records().len();
    if minted != events.len() {
        return Err(format!(
            "{minted} passwords minted for {} requests",
            events.len()
        ));
    }
    summarise("issuer mint (scoped)", &samples)
}

/// How a warm guard path's instances are arranged.
#[derive(Debug, Clone, Copy)]
pub enum GuardCase {
    /// `Name` only.
    NoTag,
    /// A password nobody issued.
    NeverIssued,
    /// A password for another instance.
    OtherInstance,
    /// Its own password.
    Valid,
}

impl GuardCase {
    fn name(self) -> &'static str {
        match self {
            GuardCase::NoTag => "guard deny: no Auth tag",
            GuardCase::NeverIssued => "guard deny: password never issued",
            GuardCase::OtherInstance => "guard deny: password for another instance",
            GuardCase::Valid => "guard allow",
        }
    }

    fn expected(self) -> (&'static str, Option<&'static str>) {
        match self {
            GuardCase::NoTag => ("deny", Some("missing")),
            GuardCase::NeverIssued => ("deny", Some("unknown")),
            GuardCase::OtherInstance => ("deny", Some("wrong-instance")),
            GuardCase::Valid => ("allow", None),
        }
    }
}

/// The guard cases measured.
pub const GUARD_CASES: [GuardCase; 4] = [
    GuardCase::NoTag,
    GuardCase::NeverIssued,
    GuardCase::OtherInstance,
    GuardCase::Valid,
];

/// One guard path, `iterations` times (after `warmup` untimed ones), each on a new instance.
pub async fn guard_path(case: GuardCase, iterations: usize, warmup: usize) -> Fallible<WarmResult> {
    let mut config = GuardConfig::from_env(&Env::from_fn(settings()))
        .map_err(|e| format!("guard configuration: {e}"))?;
    // A pending instance without a password is described a second time after this pause
    // (SPEC §4.3 step 3): the second describe is the guard's work and is timed, the pause is
    // waiting, not work, so it is left out.
    config.tag_retry_delay = Duration::ZERO;
    let store = MemoryStore::new();
    let ec2 = MemoryEc2::default();
    let now = SystemClock.now();
    let owner = Owner {
        team_id: "T0BENCH".into(),
        user_id: "U0BENCH".into(),
    };
    let elsewhere = InstanceId::parse("i-0ffffffffffffffff").ok_or("bad instance id")?;
    let mut events = Vec::new();
    for n in 0..warmup + iterations {
        let id = InstanceId::parse(&format!("i-{n:017x}")).ok_or("bad instance id")?;
        let mut tags = BTreeMap::from([("Name".to_owned(), format!("bench-{n}"))]);
        let issue = |scope: &InstanceId| {
            let password = Password::generate();
            store.insert(PasswordRecord {
                short_id: new_short_id(),
                digest: password.digest(),
                owner: owner.clone(),
                channel_id: "C0BENCH".into(),
                scope: Some(scope.clone()),
                issued_at: now,
                expires_at: now.plus(Duration::from_secs(3600)),
                consumed_by: None,
            });
            password
        };
        let auth = match case {
            GuardCase::NoTag => None,
            GuardCase::NeverIssued => Some(Password::generate()),
            GuardCase::OtherInstance => Some(issue(&elsewhere)),
            GuardCase::Valid => Some(issue(&id)),
        };
        if let Some(p) = auth {
            tags.insert(config.auth_tag.clone(), p.display());
        }
        lock(&ec2.instances).insert(
            id.to_string(),
            InstanceFacts {
                id: id.clone(),
                state: "pending".into(),
                launch_time: Some(UnixTime(now.0 - 5)),
                tags,
                root_device_type: Some("ebs".into()),
                spot: false,
            },
        );
        events.push(
            ec2pass_tests::state_change(&id, "pending")
                .to_string()
                .into_bytes(),
        );
    }
    let guard = Guard::new(config, store, ec2, CountingAlerts::default(), SystemClock);
    let expected = case.expected();
    let mut samples = Vec::with_capacity(iterations);
    for (i, event) in events.iter().enumerate() {
        let inv = Invocation {
            request_id: format!("bench-{i}"),
            deadline: tokio::time::Instant::now() + Duration::from_secs(20),
        };
        let t = Instant::now();
        let payload: Value =
            serde_json::from_slice(event).map_err(|e| format!("event JSON: {e}"))?;
        let reports = guard
            .handle(&payload, &inv)
            .await
            .map_err(|e| format!("{}: the guard failed: {e}", case.name()))?;
        let answer = serde_json::to_vec(&json!({ "reports": reports }))
            .map_err(|e| format!("answer JSON: {e}"))?;
        std::hint::black_box(answer);
        let elapsed = t.elapsed();
        match reports.as_slice() {
            [r] if (r.verdict.as_str(), r.reason.as_deref()) == expected => {}
            _ => {
                return Err(format!(
                    "{}: expected {expected:?}, got {reports:?}",
                    case.name()
                ));
            }
        }
        if i >= warmup {
            samples.push(micros(elapsed));
        }
    }
    summarise(case.name(), &samples)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summarise(name: &'static str, samples: &[f64]) -> Fallible<WarmResult> {
    Summary::of(samples)
        .map(|summary| WarmResult { name, summary })
        .ok_or_else(|| format!("{name}: no samples"))
}
