//! EC2 at the HTTP level: the fleet, the buckets, and the Query protocol the SDK speaks.
//!
//! [`Ec2Model`] holds the instances (state, launch time, tags, root device, when each reached
//! `running` and when it was stopped) and the token buckets ([`super::bucket`]). [`Endpoint`] is
//! an `HttpClient` for the real AWS SDK: it reads the form-encoded request
//! (`Action=StopInstances&InstanceId.1=…`), applies the buckets, answers with EC2's XML, and takes
//! a fixed virtual latency ([`Latency`]). [`client`] builds an `aws_sdk_ec2::Client` on it with
//! what `guard/src/main.rs` configures (standard retries, the same timeouts), so the guard's own
//! `Ec2Client`, the SDK's retries and retry quota, and `Paced` all run as in production.
//!
//! States follow time: an instance is `pending` until its `running_at`, then `running`; a stop
//! makes it `stopping`, then `stopped` after [`STOPPING`]; a termination `shutting-down`, then
//! `terminated`. StopInstances naming a `pending` instance fails whole with
//! `IncorrectInstanceState`, naming that instance, as EC2 does.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_sdk_ec2::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use ec2pass_shared::time::UnixTime;
use serde::Serialize;
use tokio::time::Instant;

use super::bucket::{Bucket, Key};

/// The account the model's events come from.
pub const ACCOUNT: &str = "123456789012";
/// The region.
pub const REGION: &str = "us-east-1";
/// How long an instance stays `stopping` (assumption: real stops take longer; the guard only
/// needs "on its way down").
pub const STOPPING: Duration = Duration::from_secs(5);

/// Virtual latency of one EC2 call (assumptions, not measurements): the request reaches EC2
/// after half of it (where the buckets and the fleet see it), the answer comes back after the
/// other half; a DescribeInstances answer takes longer the more instances it lists.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// DescribeInstances, before its per-instance part.
    pub describe: Duration,
    /// DescribeInstances, per instance in the answer.
    pub describe_per_instance: Duration,
    /// StopInstances and TerminateInstances.
    pub stop: Duration,
    /// DeleteTags and ModifyInstanceAttribute.
    pub mutate: Duration,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            describe: Duration::from_millis(150),
            describe_per_instance: Duration::from_millis(1),
            stop: Duration::from_millis(150),
            mutate: Duration::from_millis(100),
        }
    }
}

/// Requests to one API, and how many EC2 throttled or refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApiCount {
    /// Every request, throttled or not.
    pub requests: u64,
    /// Answered `RequestLimitExceeded`.
    pub throttled: u64,
    /// Answered with another error (`IncorrectInstanceState`, an unknown id, a dry run…).
    pub refused: u64,
}

/// One instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// `i-…`.
    pub id: String,
    /// LaunchTime (whole seconds, as EC2 reports it).
    pub launch_time: UnixTime,
    /// When it was launched (virtual time).
    pub launched_at: Instant,
    /// When it reaches `running`.
    pub running_at: Instant,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// When a StopInstances for it was accepted.
    pub stopped_at: Option<Instant>,
    /// When a TerminateInstances for it was accepted.
    pub terminated_at: Option<Instant>,
    /// `DisableApiStop`.
    pub disable_api_stop: bool,
    /// `DisableApiTermination`.
    pub disable_api_termination: bool,
    /// Its reservation (one per launch call).
    pub reservation: String,
    /// Whether the scenario started it with a valid password (for the figures only).
    pub authorized: bool,
}

impl Instance {
    /// Its state at `now`.
    pub fn state(&self, now: Instant) -> &'static str {
        if let Some(t) = self.terminated_at {
            return if now >= t + STOPPING {
                "terminated"
            } else {
                "shutting-down"
            };
        }
        if let Some(t) = self.stopped_at {
            return if now >= t + STOPPING {
                "stopped"
            } else {
                "stopping"
            };
        }
        if now >= self.running_at {
            "running"
        } else {
            "pending"
        }
    }
}

fn state_code(state: &str) -> u16 {
    match state {
        "pending" => 0,
        "running" => 16,
        "shutting-down" => 32,
        "terminated" => 48,
        "stopping" => 64,
        _ => 80,
    }
}

/// Who made a request: the guard (through the SDK) or the attacker (straight at the buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The guard, over HTTP.
    Guard,
    /// The simulated attacker.
    Attacker,
}

#[derive(Debug)]
struct Fleet {
    instances: BTreeMap<String, Instance>,
    buckets: HashMap<Key, Bucket>,
    guard: BTreeMap<String, ApiCount>,
    attacker: BTreeMap<String, ApiCount>,
    next_id: u64,
    next_request: u64,
    unsupported: Vec<String>,
    log: Vec<Logged>,
}

/// One request of the guard, as EC2 saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Logged {
    /// Virtual seconds since time zero, when EC2 handled it.
    pub at: f64,
    /// The API.
    pub action: String,
    /// How many instances it named (`InstanceId.N`, `ResourceId.N`, or an `instance-id` filter).
    pub ids: usize,
    /// The HTTP status of the answer.
    pub status: u16,
}

/// The EC2 of one region of one account.
pub struct Ec2Model {
    fleet: Mutex<Fleet>,
    latency: Latency,
    /// Virtual time zero (the burst's start).
    pub start: Instant,
    /// Wall-clock seconds at [`Ec2Model::start`].
    pub epoch: UnixTime,
}

impl fmt::Debug for Ec2Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ec2Model")
    }
}

/// An EC2 error: HTTP status, code, message.
type Refusal = (u16, &'static str, String);

impl Ec2Model {
    /// An empty fleet with full buckets, its time zero now.
    pub fn new(epoch: UnixTime, latency: Latency) -> Self {
        Self::numbered(epoch, latency, 0)
    }

    /// As [`Ec2Model::new`], its instance ids in a series of their own (`series` in the id's
    /// upper half): the fleets of several accounts, whose ids must not collide.
    pub fn numbered(epoch: UnixTime, latency: Latency, series: u16) -> Self {
        let now = Instant::now();
        Self {
            fleet: Mutex::new(Fleet {
                instances: BTreeMap::new(),
                buckets: Key::ALL
                    .iter()
                    .map(|&k| (k, Bucket::full(k.rate(), now)))
                    .collect(),
                guard: BTreeMap::new(),
                attacker: BTreeMap::new(),
                next_id: 0x0b0b_0000_0000_0000 | (u64::from(series) << 32),
                next_request: 0,
                unsupported: Vec::new(),
                log: Vec::new(),
            }),
            latency,
            start: now,
            epoch,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Virtual seconds since time zero.
    pub fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }

    /// The wall-clock second at a virtual instant.
    pub fn unix(&self, t: Instant) -> UnixTime {
        let secs = t.saturating_duration_since(self.start).as_secs();
        UnixTime(self.epoch.0 + i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// Launches instances (RunInstances, not throttled in the model): each `pending` until
    /// `now + running_after[i]`, with its tags, in one reservation. Their ids, in order.
    pub fn launch(
        &self,
        running_after: &[Duration],
        tags: impl Fn(usize, &str) -> Vec<(String, String)>,
        authorized: impl Fn(usize) -> bool,
    ) -> Vec<String> {
        self.launch_earlier(Duration::ZERO, running_after, tags, authorized)
    }

    /// As [`Ec2Model::launch`], with a LaunchTime `earlier` than now (the sweep scenario's fleet,
    /// running since before the scenario began).
    pub fn launch_earlier(
        &self,
        earlier: Duration,
        running_after: &[Duration],
        tags: impl Fn(usize, &str) -> Vec<(String, String)>,
        authorized: impl Fn(usize) -> bool,
    ) -> Vec<String> {
        let at = Instant::now();
        let launch_time = self.unix(at).minus(earlier);
        let mut fleet = self.lock();
        let reservation = format!("r-0{:016x}", fleet.next_id);
        let mut ids = Vec::with_capacity(running_after.len());
        for (n, after) in running_after.iter().enumerate() {
            fleet.next_id += 1;
            let id = format!("i-0{:016x}", fleet.next_id);
            let instance = Instance {
                id: id.clone(),
                launch_time,
                launched_at: at,
                running_at: at + *after,
                tags: tags(n, &id).into_iter().collect(),
                stopped_at: None,
                terminated_at: None,
                disable_api_stop: false,
                disable_api_termination: false,
                reservation: reservation.clone(),
                authorized: authorized(n),
            };
            fleet.instances.insert(id.clone(), instance);
            ids.push(id);
        }
        ids
    }

    /// The ids an instance would get next (to mint passwords for them before the launch).
    pub fn next_ids(&self, n: usize) -> Vec<String> {
        let first = self.lock().next_id;
        (1..=n as u64)
            .map(|k| format!("i-0{:016x}", first + k))
            .collect()
    }

    /// Every instance as it is now.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock().instances.values().cloned().collect()
    }

    /// The guard's requests, by API.
    pub fn guard_counts(&self) -> BTreeMap<String, ApiCount> {
        self.lock().guard.clone()
    }

    /// The attacker's requests, by API.
    pub fn attacker_counts(&self) -> BTreeMap<String, ApiCount> {
        self.lock().attacker.clone()
    }

    /// Every request of the guard, in the order EC2 handled them.
    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// Requests the model could not answer faithfully (a filter or action it does not know).
    pub fn unsupported(&self) -> Vec<String> {
        self.lock().unsupported.clone()
    }

    /// One request from the attacker straight at the buckets (no HTTP, no latency): a
    /// DescribeInstances (filtered or not), a StopInstances dry run, or a DeleteTags of a tag
    /// nobody has. It spends a token like anyone's request and changes nothing else.
    pub fn attack(&self, action: &'static str, key: Key) {
        let now = Instant::now();
        let mut fleet = self.lock();
        let allowed = fleet.take(now, &[(key, 1.0)]);
        let count = fleet.attacker.entry(action.to_owned()).or_default();
        count.requests += 1;
        if allowed {
            // A dry run answers DryRunOperation; the others succeed. Either way nothing changes.
            if action == "StopInstances" {
                count.refused += 1;
            }
        } else {
            count.throttled += 1;
        }
    }

    /// Answers one Query-protocol request: the HTTP status, the XML body, and how many
    /// instances the answer lists (for the latency).
    fn serve(&self, params: &Params) -> (u16, String, usize) {
        let now = Instant::now();
        let mut fleet = self.lock();
        fleet.next_request += 1;
        let request_id = format!("00000000-0000-4000-8000-{:012x}", fleet.next_request);
        let action = params.one("Action").unwrap_or_default().to_owned();
        let result = match action.as_str() {
            "DescribeInstances" => fleet.describe(now, params, &request_id),
            "StopInstances" => fleet.stop(now, params, &request_id, false),
            "TerminateInstances" => fleet.stop(now, params, &request_id, true),
            "DeleteTags" => fleet.delete_tags(now, params, &request_id),
            "ModifyInstanceAttribute" => fleet.modify(now, params, &request_id),
            other => {
                fleet.unsupported.push(format!("action {other}"));
                Err((
                    400,
                    "InvalidAction",
                    format!("The action {other} is not valid for this web service."),
                ))
            }
        };
        let ids = params.list("InstanceId").len()
            + params.list("ResourceId").len()
            + params
                .filters()
                .iter()
                .filter(|(name, _)| name == "instance-id")
                .map(|(_, v)| v.len())
                .sum::<usize>();
        let status = match &result {
            Ok(_) => 200,
            Err((status, _, _)) => *status,
        };
        let at = self.secs(now);
        fleet.log.push(Logged {
            at,
            action: action.clone(),
            ids,
            status,
        });
        let count = fleet.guard.entry(action).or_default();
        count.requests += 1;
        match result {
            Ok((xml, listed)) => (200, xml, listed),
            Err((status, code, message)) => {
                if code == "RequestLimitExceeded" {
                    count.throttled += 1;
                } else {
                    count.refused += 1;
                }
                (status, error_xml(code, &message, &request_id), 0)
            }
        }
    }

    fn latency_of(&self, action: &str) -> Duration {
        match action {
            "DescribeInstances" => self.latency.describe,
            "StopInstances" | "TerminateInstances" => self.latency.stop,
            _ => self.latency.mutate,
        }
    }
}

fn throttled() -> Refusal {
    (
        503,
        "RequestLimitExceeded",
        "Request limit exceeded.".into(),
    )
}

fn not_found(ids: &[&str]) -> Refusal {
    let message = match ids {
        [one] => format!("The instance ID '{one}' does not exist"),
        many => format!("The instance IDs '{}' do not exist", many.join(", ")),
    };
    (400, "InvalidInstanceID.NotFound", message)
}

impl Fleet {
    /// Takes every token asked for, or none (a throttled request spends nothing).
    fn take(&mut self, now: Instant, asks: &[(Key, f64)]) -> bool {
        let all = asks
            .iter()
            .all(|&(k, n)| self.buckets.get_mut(&k).is_some_and(|b| b.has(now, n)));
        if all {
            for &(k, n) in asks {
                if let Some(b) = self.buckets.get_mut(&k) {
                    b.take(n);
                }
            }
        }
        all
    }

    fn give(&mut self, key: Key, n: f64) {
        if let Some(b) = self.buckets.get_mut(&key) {
            b.give(n);
        }
    }

    fn unknown<'a>(&self, ids: &'a [String]) -> Vec<&'a str> {
        ids.iter()
            .filter(|id| !self.instances.contains_key(id.as_str()))
            .map(String::as_str)
            .collect()
    }

    fn describe(
        &mut self,
        now: Instant,
        params: &Params,
        request_id: &str,
    ) -> Result<(String, usize), Refusal> {
        let ids = params.list("InstanceId");
        let filters = params.filters();
        let max_results = params.one("MaxResults");
        let token = params.one("NextToken");
        let key = if filters.is_empty() && max_results.is_none() && token.is_none() {
            Key::DescribeInstancesUnfiltered
        } else {
            Key::DescribeInstances
        };
        if !self.take(now, &[(key, 1.0)]) {
            return Err(throttled());
        }
        if !ids.is_empty() && max_results.is_some() {
            return Err((
                400,
                "InvalidParameterCombination",
                "The parameter instancesSet cannot be used with the parameter maxResults".into(),
            ));
        }
        let unknown = self.unknown(&ids);
        if !unknown.is_empty() {
            return Err(not_found(&unknown));
        }
        let max = match max_results {
            None => usize::MAX,
            Some(m) => match m.parse::<usize>() {
                Ok(n) if (5..=1000).contains(&n) => n,
                _ => {
                    return Err((
                        400,
                        "InvalidParameterValue",
                        format!(
                            "Value ( {m} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000."
                        ),
                    ));
                }
            },
        };
        let from = match token {
            None => 0,
            Some(t) => t
                .strip_prefix("page-")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    (
                        400,
                        "InvalidParameterValue",
                        format!("Unable to parse pagination token {t}"),
                    )
                })?,
        };
        for (name, _) in &filters {
            let known = matches!(
                name.as_str(),
                "instance-id" | "instance-state-name" | "tag-key"
            ) || name.starts_with("tag:");
            if !known {
                self.unsupported.push(format!("filter {name}"));
                return Err((
                    400,
                    "InvalidParameterValue",
                    format!("The filter '{name}' is invalid"),
                ));
            }
        }
        let matches = |i: &Instance| {
            let state = i.state(now);
            filters.iter().all(|(name, values)| match name.as_str() {
                "instance-id" => values.contains(&i.id),
                "instance-state-name" => values.iter().any(|v| v == state),
                "tag-key" => values.iter().any(|v| i.tags.contains_key(v)),
                tag => {
                    let key = tag.trim_start_matches("tag:");
                    i.tags.get(key).is_some_and(|v| values.contains(v))
                }
            })
        };
        let selected: Vec<&Instance> = if ids.is_empty() {
            self.instances.values().filter(|i| matches(i)).collect()
        } else {
            let mut sorted = ids.clone();
            sorted.sort();
            sorted.dedup();
            sorted
                .iter()
                .filter_map(|id| self.instances.get(id))
                .filter(|i| matches(i))
                .collect()
        };
        let page: Vec<&Instance> = selected.iter().skip(from).take(max).copied().collect();
        let next = (from.saturating_add(page.len()) < selected.len())
            .then(|| format!("page-{}", from + page.len()));
        let mut xml = String::with_capacity(512 + page.len() * 400);
        xml.push_str("<reservationSet>");
        let mut at = 0;
        while at < page.len() {
            let reservation = &page[at].reservation;
            xml.push_str("<item><reservationId>");
            xml.push_str(reservation);
            xml.push_str("</reservationId><ownerId>");
            xml.push_str(ACCOUNT);
            xml.push_str("</ownerId><groupSet/><instancesSet>");
            while at < page.len() && &page[at].reservation == reservation {
                instance_xml(&mut xml, page[at], now);
                at += 1;
            }
            xml.push_str("</instancesSet></item>");
        }
        xml.push_str("</reservationSet>");
        if let Some(t) = next {
            xml.push_str("<nextToken>");
            xml.push_str(&t);
            xml.push_str("</nextToken>");
        }
        Ok((ok_xml("DescribeInstances", request_id, &xml), page.len()))
    }

    /// StopInstances, or TerminateInstances with `terminate`.
    fn stop(
        &mut self,
        now: Instant,
        params: &Params,
        request_id: &str,
        terminate: bool,
    ) -> Result<(String, usize), Refusal> {
        let ids = params.list("InstanceId");
        let (action, requests, resources) = if terminate {
            (
                "TerminateInstances",
                Key::TerminateInstances,
                Key::TerminateInstancesResources,
            )
        } else {
            (
                "StopInstances",
                Key::StopInstances,
                Key::StopInstancesResources,
            )
        };
        #[allow(clippy::cast_precision_loss)]
        let n = ids.len() as f64;
        let dry_run = params.one("DryRun") == Some("true");
        let asks: &[(Key, f64)] = if dry_run {
            &[(requests, 1.0)]
        } else {
            &[(requests, 1.0), (resources, n)]
        };
        if !self.take(now, asks) {
            return Err(throttled());
        }
        let refuse = |fleet: &mut Fleet, e: Refusal| {
            if !dry_run {
                fleet.give(resources, n);
            }
            Err(e)
        };
        if ids.is_empty() {
            return refuse(
                self,
                (
                    400,
                    "MissingParameter",
                    "The request must contain the parameter InstanceId".into(),
                ),
            );
        }
        let unknown = self.unknown(&ids);
        if !unknown.is_empty() {
            let e = not_found(&unknown);
            return refuse(self, e);
        }
        for id in &ids {
            let Some(i) = self.instances.get(id) else {
                continue;
            };
            let state = i.state(now);
            let refusal = if terminate {
                i.disable_api_termination.then(|| {
                    (
                        400,
                        "OperationNotPermitted",
                        format!("The instance '{id}' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again."),
                    )
                })
            } else if matches!(state, "pending" | "shutting-down" | "terminated") {
                Some((
                    400,
                    "IncorrectInstanceState",
                    format!("The instance '{id}' is not in a state from which it can be stopped."),
                ))
            } else if i.disable_api_stop && state == "running" {
                Some((
                    400,
                    "OperationNotPermitted",
                    format!(
                        "The instance '{id}' may not be stopped. Modify its 'disableApiStop' instance attribute and try again."
                    ),
                ))
            } else {
                None
            };
            if let Some(e) = refusal {
                return refuse(self, e);
            }
        }
        if dry_run {
            return Err((
                412,
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.".into(),
            ));
        }
        let mut xml = String::from("<instancesSet>");
        for id in &ids {
            let Some(i) = self.instances.get_mut(id) else {
                continue;
            };
            let before = i.state(now);
            if terminate {
                if i.terminated_at.is_none() {
                    i.terminated_at = Some(now);
                }
            } else if before == "running" {
                i.stopped_at = Some(now);
            }
            let after = i.state(now);
            xml.push_str(&format!(
                "<item><instanceId>{id}</instanceId><currentState><code>{}</code><name>{after}</name></currentState><previousState><code>{}</code><name>{before}</name></previousState></item>",
                state_code(after),
                state_code(before)
            ));
        }
        xml.push_str("</instancesSet>");
        Ok((ok_xml(action, request_id, &xml), 0))
    }

    fn delete_tags(
        &mut self,
        now: Instant,
        params: &Params,
        request_id: &str,
    ) -> Result<(String, usize), Refusal> {
        if !self.take(now, &[(Key::DeleteTags, 1.0)]) {
            return Err(throttled());
        }
        let ids = params.list("ResourceId");
        let unknown = self.unknown(&ids);
        if !unknown.is_empty() {
            return Err(not_found(&unknown));
        }
        let tags = params.tags();
        for id in &ids {
            let Some(i) = self.instances.get_mut(id) else {
                continue;
            };
            if tags.is_empty() {
                i.tags.clear();
            }
            for (key, value) in &tags {
                let matches = match value {
                    Some(v) => i.tags.get(key) == Some(v),
                    None => true,
                };
                if matches {
                    i.tags.remove(key);
                }
            }
        }
        Ok((ok_xml("DeleteTags", request_id, "<return>true</return>"), 0))
    }

    fn modify(
        &mut self,
        now: Instant,
        params: &Params,
        request_id: &str,
    ) -> Result<(String, usize), Refusal> {
        if !self.take(now, &[(Key::ModifyInstanceAttribute, 1.0)]) {
            return Err(throttled());
        }
        let id = params.one("InstanceId").unwrap_or_default().to_owned();
        let stop = params.one("DisableApiStop.Value").map(|v| v == "true");
        let term = params
            .one("DisableApiTermination.Value")
            .map(|v| v == "true");
        let Some(i) = self.instances.get_mut(&id) else {
            return Err(not_found(&[id.as_str()]));
        };
        if let Some(v) = stop {
            i.disable_api_stop = v;
        }
        if let Some(v) = term {
            i.disable_api_termination = v;
        }
        Ok((
            ok_xml(
                "ModifyInstanceAttribute",
                request_id,
                "<return>true</return>",
            ),
            0,
        ))
    }
}

/// The request's form parameters.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Reads a form-encoded body.
    pub fn parse(body: &[u8]) -> Self {
        Self(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }

    /// One parameter's value.
    pub fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `Name.1`, `Name.2`, … in order.
    pub fn list(&self, name: &str) -> Vec<String> {
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(name)?.strip_prefix('.')?.parse().ok()?;
                Some((n, v.clone()))
            })
            .collect();
        items.sort_by_key(|(n, _)| *n);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// `Filter.N.Name` with its `Filter.N.Value.M`.
    pub fn filters(&self) -> Vec<(String, Vec<String>)> {
        let mut filters: BTreeMap<u32, (String, Vec<(u32, String)>)> = BTreeMap::new();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix("Filter.") else {
                continue;
            };
            let Some((n, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(n) = n.parse::<u32>() else { continue };
            let entry = filters.entry(n).or_default();
            if field == "Name" {
                entry.0 = v.clone();
            } else if let Some(m) = field.strip_prefix("Value.").and_then(|m| m.parse().ok()) {
                entry.1.push((m, v.clone()));
            }
        }
        filters
            .into_values()
            .map(|(name, mut values)| {
                values.sort_by_key(|(m, _)| *m);
                (name, values.into_iter().map(|(_, v)| v).collect())
            })
            .collect()
    }

    /// `Tag.N.Key` with its optional `Tag.N.Value`.
    pub fn tags(&self) -> Vec<(String, Option<String>)> {
        let mut tags: BTreeMap<u32, (String, Option<String>)> = BTreeMap::new();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix("Tag.") else {
                continue;
            };
            let Some((n, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(n) = n.parse::<u32>() else { continue };
            let entry = tags.entry(n).or_default();
            match field {
                "Key" => entry.0 = v.clone(),
                "Value" => entry.1 = Some(v.clone()),
                _ => {}
            }
        }
        tags.into_values().collect()
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn instance_xml(xml: &mut String, i: &Instance, now: Instant) {
    let state = i.state(now);
    xml.push_str(&format!(
        "<item><instanceId>{}</instanceId><imageId>ami-12c6146b</imageId><instanceState><code>{}</code><name>{state}</name></instanceState><instanceType>t3.micro</instanceType><launchTime>{}</launchTime><rootDeviceType>ebs</rootDeviceType><rootDeviceName>/dev/xvda</rootDeviceName>",
        i.id,
        state_code(state),
        i.launch_time.rfc3339().replace('Z', ".000Z"),
    ));
    if i.tags.is_empty() {
        xml.push_str("<tagSet/>");
    } else {
        xml.push_str("<tagSet>");
        for (k, v) in &i.tags {
            xml.push_str("<item><key>");
            xml.push_str(&escape(k));
            xml.push_str("</key><value>");
            xml.push_str(&escape(v));
            xml.push_str("</value></item>");
        }
        xml.push_str("</tagSet>");
    }
    xml.push_str("</item>");
}

fn ok_xml(action: &str, request_id: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>{request_id}</requestId>{inner}</{action}Response>"
    )
}

fn error_xml(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
        escape(message)
    )
}

/// The model as the SDK's HTTP client.
#[derive(Debug, Clone)]
pub struct Endpoint(pub Arc<Ec2Model>);

impl HttpClient for Endpoint {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for Endpoint {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let model = self.0.clone();
        let params = Params::parse(request.body().bytes().unwrap_or_default());
        HttpConnectorFuture::new(async move {
            let latency = model.latency_of(params.one("Action").unwrap_or_default());
            tokio::time::sleep(latency / 2).await;
            let (status, xml, listed) = model.serve(&params);
            let listed = u32::try_from(listed).unwrap_or(u32::MAX);
            tokio::time::sleep(latency / 2 + model.latency.describe_per_instance * listed).await;
            Ok(respond(status, xml))
        })
    }
}

/// Several accounts' and regions' models as one HTTP client, as the hub's guard meets them: a
/// request goes to the model of the account its credentials belong to and of the region it is
/// signed for (SigV4's `Credential=<access key>/<date>/<region>/ec2/aws4_request`). The access
/// key names the account as [`member_access_key`] makes it; a request no model answers is the
/// `AuthFailure` EC2 gives a key it does not know.
#[derive(Debug, Clone)]
pub struct Members(pub Arc<Vec<(String, String, Arc<Ec2Model>)>>);

/// The access key of a member account's assumed-role credentials in the model.
pub fn member_access_key(account: &str) -> String {
    format!("ASIA{account}MODL")
}

impl Members {
    fn model(&self, request: &HttpRequest) -> Option<Arc<Ec2Model>> {
        let auth = request.headers().get("authorization")?;
        let scope = auth.split("Credential=").nth(1)?;
        let mut parts = scope.split('/');
        let (key, _date, region) = (parts.next()?, parts.next()?, parts.next()?);
        self.0
            .iter()
            .find(|(account, r, _)| member_access_key(account) == key && r == region)
            .map(|(_, _, m)| m.clone())
    }
}

impl HttpClient for Members {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for Members {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        match self.model(&request) {
            Some(model) => Endpoint(model).call(request),
            None => HttpConnectorFuture::ready(Ok(respond(
                401,
                error_xml(
                    "AuthFailure",
                    "AWS was not able to validate the provided access credentials",
                    "model-unknown-key",
                ),
            ))),
        }
    }
}

fn respond(status: u16, xml: String) -> HttpResponse {
    let status = StatusCode::try_from(status).unwrap_or_else(|_| {
        StatusCode::try_from(500).unwrap_or_else(|_| unreachable!("500 is a status"))
    });
    let mut response = HttpResponse::new(status, SdkBody::from(xml));
    response
        .headers_mut()
        .insert("content-type", "text/xml;charset=UTF-8");
    response
}

/// The configuration `guard/src/main.rs` loads, on an HTTP client of the model: the latest
/// behaviour version, standard retries (3 attempts), a 2 s attempt and 6 s operation timeout.
fn base(http: impl HttpClient + 'static, region: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(http)
        .retry_config(RetryConfig::standard())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(6))
                .build(),
        )
        .build()
}

/// The hub's base configuration in the model: [`base`] on [`Members`], in `region` (the
/// hub's). Each member's client adds its credentials, region and retry quota, as the hub's
/// `MemberRoles` does.
pub fn hub_config(members: Members, region: &str) -> aws_config::SdkConfig {
    base(members, region)
}

/// An SDK EC2 client on the model, configured as `guard/src/main.rs` configures it ([`base`]),
/// with static test credentials. `partition` names its retry quota: one per Lambda execution
/// environment (a process of its own in Lambda, so a quota of its own).
pub fn client(model: &Arc<Ec2Model>, partition: &str) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::config::Builder::from(&base(Endpoint(model.clone()), REGION))
        .credentials_provider(Credentials::new(
            "AKIDMODEL000000000000",
            "model-secret",
            None,
            None,
            "burst-model",
        ))
        .retry_partition(RetryPartition::new(partition.to_owned()))
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec2pass_shared::ids::InstanceId;
    use guard::ec2::{Ec2, Ec2Client, StopError};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn model() -> Arc<Ec2Model> {
        Arc::new(Ec2Model::new(UnixTime(1_795_255_200), Latency::default()))
    }

    fn iid(s: &str) -> InstanceId {
        InstanceId::parse(s).unwrap_or_else(|| panic!("bad id {s}"))
    }

    fn requests(m: &Ec2Model, action: &str) -> ApiCount {
        m.guard_counts().get(action).cloned().unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn the_sdk_reads_describe_answers_through_the_guards_client() {
        let m = model();
        let ids = m.launch(
            &[secs(10), secs(0)],
            |n, _| {
                vec![
                    ("Name".into(), format!("web-{n}")),
                    ("Auth".into(), "a&b<c>".into()),
                ]
            },
            |_| false,
        );
        tokio::time::sleep(secs(1)).await;
        let ec2 = Ec2Client::new(client(&m, "model-test-describe"));
        let mut asked: Vec<InstanceId> = ids.iter().map(|s| iid(s)).collect();
        asked.push(iid("i-0ffffffffffffffff"));
        let mut facts = ec2
            .describe_many(&asked)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        facts.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(facts.len(), 2, "an id EC2 does not know is left out");
        assert_eq!(facts[0].state, "pending");
        assert_eq!(facts[1].state, "running");
        assert_eq!(facts[0].name(), Some("web-0"));
        assert_eq!(
            facts[0].tags.get("Auth").map(String::as_str),
            Some("a&b<c>")
        );
        assert_eq!(facts[0].launch_time, Some(UnixTime(1_795_255_200)));
        assert_eq!(facts[0].root_device_type.as_deref(), Some("ebs"));
        assert!(!facts[0].spot);
        // The filtered describe is one request in the large bucket; the single path's
        // InstanceIds describe uses the small one, and an unknown id fails it.
        assert_eq!(requests(&m, "DescribeInstances").requests, 1);
        let one = ec2
            .describe(&asked[1])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.map(|f| f.state), Some("running".to_owned()));
        assert_eq!(ec2.describe(&asked[2]).await, Ok(None));
        let all = ec2
            .active_instances()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn one_pending_instance_among_running_ones_costs_one_refusal_and_the_rest_stop() {
        let m = model();
        let mut after = vec![secs(0); 5];
        after[2] = secs(60);
        let ids = m.launch(&after, |_, _| Vec::new(), |_| false);
        tokio::time::sleep(secs(1)).await;
        let ec2 = Ec2Client::new(client(&m, "model-test-stop"));
        let asked: Vec<InstanceId> = ids.iter().map(|s| iid(s)).collect();
        let answers: BTreeMap<String, Result<(), StopError>> = ec2
            .stop_many(&asked)
            .await
            .into_iter()
            .map(|(id, r)| (id.to_string(), r))
            .collect();
        assert_eq!(answers[&ids[2]], Err(StopError::NotYet));
        for (n, id) in ids.iter().enumerate() {
            if n != 2 {
                assert_eq!(answers[id], Ok(()), "{id}");
            }
        }
        let stops = requests(&m, "StopInstances");
        assert_eq!(
            (stops.requests, stops.refused),
            (2, 1),
            "two calls, one refused"
        );
        let now = Instant::now();
        let states: Vec<&str> = m.instances().iter().map(|i| i.state(now)).collect();
        assert_eq!(
            states,
            ["stopping", "stopping", "pending", "stopping", "stopping"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn untag_only_with_the_value_terminate_and_stop_protection_answer_as_ec2() {
        let m = model();
        let ids = m.launch(
            &[secs(0), secs(0)],
            |_, _| vec![("Auth".into(), "old".into())],
            |_| false,
        );
        tokio::time::sleep(secs(1)).await;
        let ec2 = Ec2Client::new(client(&m, "model-test-untag"));
        let (a, b) = (iid(&ids[0]), iid(&ids[1]));
        assert_eq!(ec2.delete_tag(&a, "Auth", "new").await, Ok(()));
        assert_eq!(
            ec2.delete_tag_many(&[a.clone(), b.clone()], "Auth", "old")
                .await,
            Ok(())
        );
        assert!(m.instances().iter().all(|i| i.tags.is_empty()));
        assert_eq!(
            ec2.delete_tag(&iid("i-0ffffffffffffffff"), "Auth", "x")
                .await,
            Ok(())
        );
        // Stop protection refuses, clearing it lets the stop through.
        let stop_on = aws_sdk_ec2::types::AttributeBooleanValue::builder()
            .value(true)
            .build();
        client(&m, "model-test-untag-2")
            .modify_instance_attribute()
            .instance_id(a.as_str())
            .disable_api_stop(stop_on)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ec2.stop(&a).await, Err(StopError::Protected));
        assert_eq!(ec2.clear_stop_protection(&a).await, Ok(()));
        assert_eq!(ec2.stop(&a).await, Ok(()));
        assert_eq!(ec2.terminate(&b).await, Ok(()));
        assert_eq!(
            ec2.stop(&iid("i-0ffffffffffffffff")).await,
            Err(StopError::Gone)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_bucket_throttles_and_the_sdk_retries_within_its_quota() {
        fastrand::seed(3);
        let m = model();
        let ids = m.launch(&[secs(0)], |_, _| Vec::new(), |_| false);
        tokio::time::sleep(secs(1)).await;
        for _ in 0..50 {
            m.attack("DescribeInstances", Key::DescribeInstancesUnfiltered);
        }
        let ec2 = Ec2Client::new(client(&m, "model-test-throttle"));
        let started = Instant::now();
        // The small bucket is empty: the SDK's first attempt is throttled, its backoff (up to
        // a second, then two) lets a token (10/s) come in.
        let facts = ec2.describe(&iid(&ids[0])).await;
        assert!(matches!(facts, Ok(Some(_))), "{facts:?}");
        let describes = requests(&m, "DescribeInstances");
        assert!(describes.throttled >= 1, "{describes:?}");
        assert!(describes.requests <= 3, "{describes:?}");
        assert!(started.elapsed() < secs(4));
        assert_eq!(m.attacker_counts()["DescribeInstances"].throttled, 0);
    }
}
