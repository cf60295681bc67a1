//! The guard under injected AWS faults (issue #5, item 2), printed as a test report.
//!
//! Every AWS call on the guard's path is made to fail, one call kind at a time, the way the real
//! clients report a fault that outlasted the SDK's own retries (the SDK retries throttling, 5xx
//! and timeouts below the [`Ec2`], store and [`Alerts`] traits; what reaches the guard is what
//! is left when those retries are spent):
//!
//! | fault      | EC2 ([`crate::ec2::Ec2Client`])               | DynamoDB (`DynamoStore`)   | SNS (`SnsAlerts`) |
//! |------------|-----------------------------------------------|----------------------------|-------------------|
//! | throttling | `AwsError` (stop: `StopError::Failed`)        | `StoreError::Unavailable`  | `AwsError`        |
//! | 5xx        | the same                                      | the same                   | the same          |
//! | timeout    | the same                                      | the same                   | the same          |
//! | not-found  | describe `Ok(None)`, stop `Gone`, untag `Ok`  | not a fault (see below)    | not a fault       |
//!
//! `InvalidInstanceID.NotFound` is modelled as EC2's eventual consistency right after a launch:
//! the instance exists, yet this one call says it does not (an instance that is really gone
//! cannot be left running, and `an_instance_that_is_gone_is_logged_and_done` covers it). For the
//! table, a missing password item is the `unknown` verdict, not a fault, and a missing table or
//! topic (`ResourceNotFoundException`, SNS `NotFound`) is classified exactly like a 5xx.
//!
//! Each cell (trigger × call × fault × scenario × fail mode) runs twice on a fresh world:
//!
//! - **transient**: the fault is on for the first invocation only; if it returned an error,
//!   Lambda retries the same event with the same request id (fault cleared); then the next event
//!   of the cycle arrives (the `running` event, or the next scheduled sweep);
//! - **persistent**: the fault is on for every attempt Lambda makes (1 + `MaximumRetryAttempts`
//!   of the guard's `EventInvokeConfig`, read from `infra/template.yaml`); an invocation that
//!   fails every attempt goes to the SQS on-failure destination, which is infrastructure: here it
//!   shows as every attempt returning `Err`. Then the fault clears and the next event arrives.
//!
//! Both must end safe: an unauthorized start stopped, an authorized one running (except the
//! documented fail-closed trade-off, asserted as exactly that), one verdict, the right one, one
//! alert per deny and per exemption, and no invocation that met a fault and still answered `Ok`
//! unless the fault is one the guard absorbs by design (untag is best effort; not-found means
//! gone). A start the first invocation stopped before any verdict was recorded is over: its
//! retry changes nothing (SPEC §4.2), so it ends stopped, with the `guard-error` alert that
//! says so and no verdict, asserted as exactly that ([`Cell::ended_before_verdict`]).
//!
//! A second section drives the real [`crate::ec2::Ec2Client`] and `DynamoStore` over
//! `aws-smithy-mocks` (and a connector that times out): a fault followed by success is retried
//! by the SDK and the guard decides exactly as without it, and a fault that outlasts the SDK's
//! retries reaches the guard as exactly the error the fakes inject.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ec2pass_shared::alert::{Action, Alert};
use ec2pass_shared::config::{Env, GuardConfig};
use ec2pass_shared::digest::Digest;
use ec2pass_shared::ids::{InstanceId, Owner, ShortId};
use ec2pass_shared::password::{Password, new_short_id};
use ec2pass_shared::store::memory::MemoryStore;
use ec2pass_shared::store::{
    AlertStore, CallerLookup, Consume, ConsumeOutcome, ConsumeStore, PasswordLookup,
    PasswordRecord, Recorded, StoreError, VerdictStore,
};
use ec2pass_shared::time::{FixedClock, UnixTime};
use ec2pass_shared::verdict::{Cycle, VerdictRecord};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::alerts::Alerts;
use crate::ec2::{AwsError, Ec2, InstanceFacts, StopError};
use crate::guard::{Guard, GuardError, Invocation, Report};

const A: &str = "i-0aaaaaaaaaaaaaaa0";
const NOW: UnixTime = UnixTime(1_795_255_200);
const LAUNCH: UnixTime = UnixTime(1_795_255_190);
/// The guard touches nothing that started at or before this (the table's creation time).
const ACTIVATION: UnixTime = UnixTime(1_795_255_090);
/// The request id of the first delivery; Lambda's retries of it carry the same one.
const FIRST_REQUEST: &str = "req-1";
const NEXT_REQUEST: &str = "req-2";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn id(s: &str) -> InstanceId {
    InstanceId::parse(s).unwrap_or_else(|| panic!("bad id {s}"))
}

// ---- the dimensions ------------------------------------------------------------------------

/// An AWS call on the guard's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Call {
    /// DescribeTable: the guard's activation time (the table's creation), once per cold start.
    Activation,
    /// DescribeInstances for the event's instance.
    Describe,
    /// DescribeInstances of every pending/running instance (the sweep).
    List,
    /// The consume-and-allow transaction.
    Consume,
    /// The create-once verdict write.
    Record,
    /// The sweep's read of the listed cycles' verdicts (BatchGetItem).
    VerdictLookup,
    /// StopInstances.
    Stop,
    /// DeleteTags of the `Auth` tag.
    Untag,
    /// SNS Publish.
    Publish,
    /// The sweep's query of owed alerts (the sparse `alerts-due` index).
    AlertQuery,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Ec2,
    Dynamo,
    Sns,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Activation => "activation",
            Call::Describe => "describe",
            Call::List => "list",
            Call::Consume => "consume",
            Call::Record => "record verdict",
            Call::VerdictLookup => "verdict lookup",
            Call::Stop => "stop",
            Call::Untag => "untag",
            Call::Publish => "publish",
            Call::AlertQuery => "owed-alert query",
        }
    }

    fn operation(self) -> &'static str {
        match self {
            Call::Activation => "DescribeTable",
            Call::Describe | Call::List => "DescribeInstances",
            Call::Consume => "TransactWriteItems",
            Call::Record => "PutItem",
            Call::VerdictLookup => "BatchGetItem",
            Call::Stop => "StopInstances",
            Call::Untag => "DeleteTags",
            Call::Publish => "Publish",
            Call::AlertQuery => "Query",
        }
    }

    fn service(self) -> Service {
        match self {
            Call::Describe | Call::List | Call::Stop | Call::Untag => Service::Ec2,
            Call::Activation
            | Call::Consume
            | Call::Record
            | Call::VerdictLookup
            | Call::AlertQuery => Service::Dynamo,
            Call::Publish => Service::Sns,
        }
    }

    /// The faults that apply: not-found only where the client gives it a meaning of its own.
    fn faults(self) -> &'static [Fault] {
        match self {
            Call::Describe | Call::Stop | Call::Untag => &[
                Fault::Throttling,
                Fault::ServerError,
                Fault::Timeout,
                Fault::NotFound,
            ],
            _ => &[Fault::Throttling, Fault::ServerError, Fault::Timeout],
        }
    }
}

/// A fault, as it reaches the guard once the SDK's retries are spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Throttling,
    ServerError,
    Timeout,
    NotFound,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Throttling => "throttling",
            Fault::ServerError => "5xx",
            Fault::Timeout => "timeout",
            Fault::NotFound => "not-found",
        }
    }

    /// What the client's error says (as `DisplayErrorContext` renders the SDK's error).
    fn message(self, service: Service) -> String {
        let what = match (self, service) {
            (Fault::Throttling, Service::Ec2) => {
                "service error: RequestLimitExceeded: Request limit exceeded."
            }
            (Fault::Throttling, Service::Dynamo) => {
                "service error: ThrottlingException: Rate of requests exceeds the allowed throughput."
            }
            (Fault::Throttling, Service::Sns) => "service error: Throttled: Rate exceeded",
            (Fault::ServerError, Service::Ec2) => {
                "service error: Unavailable (HTTP 503): The service is unavailable."
            }
            (Fault::ServerError, Service::Dynamo) => {
                "service error: InternalServerError (HTTP 500)"
            }
            (Fault::ServerError, Service::Sns) => "service error: InternalError (HTTP 500)",
            (Fault::Timeout, _) => {
                "dispatch failure: timeout: HTTP connect timeout occurred after 3.1s"
            }
            (Fault::NotFound, _) => "service error: InvalidInstanceID.NotFound",
        };
        format!("{what} (after the SDK's retries)")
    }
}

/// Where the event comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// The `pending` state change; the next event of the cycle is `running`.
    Event,
    /// A scheduled sweep (the start's events were lost); the next event is the next sweep.
    Sweep,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Event => "event",
            Trigger::Sweep => "sweep",
        }
    }

    fn calls(self) -> &'static [Call] {
        match self {
            Trigger::Event => &[
                Call::Describe,
                Call::Activation,
                Call::Consume,
                Call::Record,
                Call::Stop,
                Call::Untag,
                Call::Publish,
            ],
            Trigger::Sweep => &[
                Call::Activation,
                Call::List,
                Call::VerdictLookup,
                Call::Consume,
                Call::Record,
                Call::Stop,
                Call::Untag,
                Call::Publish,
                Call::AlertQuery,
            ],
        }
    }

    /// Both decide every scenario (the sweep records, and alerts, an exemption it finds
    /// without a verdict, as an event does).
    fn scenarios(self) -> &'static [Scenario] {
        &[
            Scenario::Authorized,
            Scenario::WrongPassword,
            Scenario::NoAuthTag,
            Scenario::Exempt,
        ]
    }

    fn initial_state(self) -> &'static str {
        match self {
            Trigger::Event => "pending",
            Trigger::Sweep => "running",
        }
    }

    fn first(self) -> Value {
        match self {
            Trigger::Event => state_change("pending"),
            Trigger::Sweep => sweep("sweep-1"),
        }
    }

    fn follow_up(self) -> Value {
        match self {
            Trigger::Event => state_change("running"),
            Trigger::Sweep => sweep("sweep-2"),
        }
    }

    fn follow_up_name(self) -> &'static str {
        match self {
            Trigger::Event => "running event",
            Trigger::Sweep => "next sweep",
        }
    }
}

/// What starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// A valid password for this instance in the `Auth` tag.
    Authorized,
    /// A well-formed password the table does not know.
    WrongPassword,
    /// No `Auth` tag.
    NoAuthTag,
    /// Exempt (`ec2pass:exempt=true`), with an `Auth` tag left on it by mistake.
    Exempt,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Authorized => "(a) authorized",
            Scenario::WrongPassword => "(b) wrong password",
            Scenario::NoAuthTag => "(c) no Auth tag",
            Scenario::Exempt => "(d) exempt",
        }
    }

    /// The verdict the cycle must end with: kind and reason.
    fn verdict(self) -> (&'static str, Option<&'static str>) {
        match self {
            Scenario::Authorized => ("allow", None),
            Scenario::WrongPassword => ("deny", Some("unknown")),
            Scenario::NoAuthTag => ("deny", Some("missing")),
            Scenario::Exempt => ("exempt", None),
        }
    }

    /// Whether the start may keep running.
    fn may_run(self) -> bool {
        matches!(self, Scenario::Authorized | Scenario::Exempt)
    }

    fn is_deny(self) -> bool {
        !self.may_run()
    }

    /// Whether its verdict is announced: every deny, every exemption (by default since issue
    /// 10: an exemption is a door), an allow only with audit alerts.
    fn alerts(self, mode: Mode) -> bool {
        match self {
            Scenario::WrongPassword | Scenario::NoAuthTag | Scenario::Exempt => true,
            Scenario::Authorized => mode.audit(),
        }
    }
}

/// The guard's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The default: fail closed, no audit alerts.
    Closed,
    /// `EC2PASS_FAIL_MODE=open`.
    Open,
    /// Fail closed with `EC2PASS_AUDIT_ALERTS=true` (puts publish on the allow path).
    ClosedAudit,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open => "open",
            Mode::ClosedAudit => "closed+audit",
        }
    }

    fn closed(self) -> bool {
        self != Mode::Open
    }

    fn audit(self) -> bool {
        self == Mode::ClosedAudit
    }

    /// Both fail modes everywhere; audit alerts only where they change the path (publish).
    fn for_call(call: Call) -> &'static [Mode] {
        match call {
            Call::Publish => &[Mode::Closed, Mode::Open, Mode::ClosedAudit],
            _ => &[Mode::Closed, Mode::Open],
        }
    }
}

/// One cell of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cell {
    trigger: Trigger,
    call: Call,
    fault: Fault,
    scenario: Scenario,
    mode: Mode,
}

impl Cell {
    fn all() -> Vec<Cell> {
        let mut cells = Vec::new();
        for &trigger in &[Trigger::Event, Trigger::Sweep] {
            for &call in trigger.calls() {
                for &fault in call.faults() {
                    for &scenario in trigger.scenarios() {
                        for &mode in Mode::for_call(call) {
                            cells.push(Cell {
                                trigger,
                                call,
                                fault,
                                scenario,
                                mode,
                            });
                        }
                    }
                }
            }
        }
        cells
    }

    fn outage(self) -> bool {
        self.fault != Fault::NotFound
    }

    /// Faults the guard absorbs by design: the invocation answers `Ok`. On the event path an
    /// unreadable activation time is one: the guard decides the starts of the last ten minutes
    /// (`guard::ACTIVATION_FALLBACK`) and reads the activation again on the next event.
    fn absorbed(self) -> bool {
        self.call == Call::Untag
            || self.fault == Fault::NotFound
            || (self.call == Call::Activation && self.trigger == Trigger::Event)
    }

    /// The documented price of failing closed: AWS could not tell the guard what the start is,
    /// so it stopped it (SPEC §4.4; docs/configuration.md "Fail closed has a cost").
    fn trade_off(self) -> Option<&'static str> {
        let blind = match self.call {
            // Describe failed: the guard cannot see the password, nor the exemption tag.
            Call::Describe => true,
            // Consume failed: the guard cannot tell a valid password from a bad one.
            Call::Consume => self.scenario == Scenario::Authorized,
            _ => false,
        };
        (blind && self.mode.closed() && self.outage() && self.scenario.may_run()).then_some(
            "TRADE-OFF (documented): fail-closed stopped a start it could not check \
             (SPEC §4.4; docs/configuration.md \"Fail closed has a cost\")",
        )
    }

    /// The first invocation stopped the instance before any verdict was recorded: fail-closed
    /// stopped a start it could not decide, or a certain deny (a password the table refused) was
    /// stopped while its verdict write failed. Its retry and the next event then find the start
    /// over and change nothing (SPEC §4.2: an event about a start that has ended changes
    /// nothing; issue 10, point 3), so the cycle ends stopped, announced by the `guard-error`
    /// alert (saying it was stopped), with no verdict. This is the intended outcome, asserted as
    /// exactly that: there is nothing left to decide, and deciding a stopped start would let a
    /// late event act on a finished one.
    fn ended_before_verdict(self) -> bool {
        if !self.outage() {
            return false;
        }
        match (self.call, self.scenario) {
            // Describe failed: fail-closed stops whatever the instance is.
            (Call::Describe, _) => self.mode.closed(),
            // Consume failed: fail-closed stops it before the password is checked.
            (Call::Consume, Scenario::Authorized | Scenario::WrongPassword) => self.mode.closed(),
            // Recording a deny without a password failed: fail-closed stops it.
            (Call::Record, Scenario::NoAuthTag) => self.mode.closed(),
            // A refused password is certain for the cycle: stopped while it is recorded, in
            // either mode.
            (Call::Record, Scenario::WrongPassword) => true,
            _ => false,
        }
    }

    /// Cells that failed before the fixes made in guard.rs with this matrix, and now guard them.
    fn regression(self) -> Option<&'static str> {
        match (self.trigger, self.call, self.fault, self.scenario) {
            (Trigger::Event, Call::Stop, f, s) if f != Fault::NotFound && s.is_deny() => Some(
                "REGRESSION (guard.rs fix 1): the stop failed after the deny was recorded; its \
                 alert is now given back, so the retry publishes it (before: never published)",
            ),
            (Trigger::Sweep, Call::Stop, f, s) if f != Fault::NotFound && s.is_deny() => Some(
                "REGRESSION (guard.rs fixes 1+2): the alert is given back, and the sweep's retry \
                 enforces the recorded deny again (before: left running, alert never published)",
            ),
            (Trigger::Sweep, Call::Stop, Fault::NotFound, s) if s.is_deny() => Some(
                "REGRESSION (guard.rs fix 2): the next sweep enforces the recorded deny again \
                 (before: left running for good)",
            ),
            (Trigger::Sweep, Call::Publish, f, Scenario::Authorized)
                if f != Fault::NotFound && self.mode.audit() =>
            {
                Some(
                    "REGRESSION (guard.rs fix 2): the sweep's retry publishes the given-back \
                     audit alert (before: never published)",
                )
            }
            (Trigger::Sweep, Call::Publish, f, s) if f != Fault::NotFound && s.is_deny() => Some(
                "REGRESSION (issue 10, owed alerts): the sweep's retry no longer lists the stopped \
                 instance, but finds its given-back alert through the alerts-due index and \
                 publishes it (before: GAP, the deny alert was never published)",
            ),
            _ => None,
        }
    }
}

const ENDED_NOTE: &str = "ENDED (by design, issue 10 point 3): stopped before any verdict was \
    recorded; the retry finds the start over and changes nothing: stopped, guard-error alert \
    (action stopped), no verdict";

// ---- fault injection -----------------------------------------------------------------------

/// The one fault injected at a time, and how often it fired.
#[derive(Default)]
struct Faults {
    active: Mutex<Option<(Call, Fault)>>,
    fired: AtomicUsize,
}

impl Faults {
    fn inject(&self, call: Call, fault: Fault) {
        *lock(&self.active) = Some((call, fault));
    }

    fn clear(&self) {
        *lock(&self.active) = None;
    }

    fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }

    /// The fault this call meets, if one is injected for it (counted).
    fn meet(&self, call: Call) -> Option<Fault> {
        let fault = lock(&self.active)
            .filter(|(c, _)| *c == call)
            .map(|(_, f)| f)?;
        self.fired.fetch_add(1, Ordering::SeqCst);
        Some(fault)
    }
}

fn aws_error(call: Call, fault: Fault) -> AwsError {
    AwsError {
        operation: call.operation(),
        message: fault.message(call.service()),
        throttled: false,
    }
}

fn store_error(call: Call, fault: Fault) -> StoreError {
    StoreError::Unavailable {
        operation: call.operation(),
        message: fault.message(call.service()),
    }
}

/// EC2 in memory: one instance whose state and tags the guard's calls change.
struct FaultyEc2 {
    instances: Mutex<HashMap<String, InstanceFacts>>,
    faults: Arc<Faults>,
}

impl FaultyEc2 {
    fn instance(&self) -> Option<InstanceFacts> {
        lock(&self.instances).get(A).cloned()
    }

    /// A `pending` instance has booted by the time its `running` event arrives.
    fn boot(&self) {
        if let Some(f) = lock(&self.instances).get_mut(A)
            && f.state == "pending"
        {
            f.state = "running".into();
        }
    }
}

impl Ec2 for FaultyEc2 {
    async fn describe(&self, instance: &InstanceId) -> Result<Option<InstanceFacts>, AwsError> {
        match self.faults.meet(Call::Describe) {
            // The client reads InvalidInstanceID.NotFound as "gone", though it is there.
            Some(Fault::NotFound) => Ok(None),
            Some(fault) => Err(aws_error(Call::Describe, fault)),
            None => Ok(lock(&self.instances).get(instance.as_str()).cloned()),
        }
    }

    async fn stop(&self, instance: &InstanceId) -> Result<(), StopError> {
        match self.faults.meet(Call::Stop) {
            // The client reads InvalidInstanceID.NotFound as "gone"; nothing was stopped.
            Some(Fault::NotFound) => Err(StopError::Gone),
            Some(fault) => Err(StopError::Failed(aws_error(Call::Stop, fault))),
            None => {
                if let Some(f) = lock(&self.instances).get_mut(instance.as_str())
                    && !f.is_down()
                {
                    f.state = "stopping".into();
                }
                Ok(())
            }
        }
    }

    async fn terminate(&self, _: &InstanceId) -> Result<(), StopError> {
        unreachable!("no scenario here is unstoppable")
    }

    async fn clear_stop_protection(&self, _: &InstanceId) -> Result<(), AwsError> {
        unreachable!("no scenario here has stop protection")
    }

    async fn clear_termination_protection(&self, _: &InstanceId) -> Result<(), AwsError> {
        unreachable!("no scenario here is unstoppable")
    }

    async fn delete_tag(
        &self,
        instance: &InstanceId,
        key: &str,
        value: &str,
    ) -> Result<(), AwsError> {
        match self.faults.meet(Call::Untag) {
            // The client reads InvalidInstanceID.NotFound as done; the tag is still there.
            Some(Fault::NotFound) => Ok(()),
            Some(fault) => Err(aws_error(Call::Untag, fault)),
            None => {
                // As EC2 does: a key with a value deletes the tag only while it holds that value.
                if let Some(f) = lock(&self.instances).get_mut(instance.as_str())
                    && f.tags.get(key).is_some_and(|v| v == value)
                {
                    f.tags.remove(key);
                }
                Ok(())
            }
        }
    }

    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        if let Some(fault) = self.faults.meet(Call::List) {
            return Err(aws_error(Call::List, fault));
        }
        Ok(lock(&self.instances)
            .values()
            .filter(|f| !f.is_down())
            .cloned()
            .collect())
    }
}

/// The in-memory table, with faults on the calls the guard's decision depends on.
struct FaultyStore {
    inner: MemoryStore,
    faults: Arc<Faults>,
}

impl ConsumeStore for FaultyStore {
    async fn consume(&self, c: &Consume) -> Result<ConsumeOutcome, StoreError> {
        match self.faults.meet(Call::Consume) {
            Some(fault) => Err(store_error(Call::Consume, fault)),
            None => self.inner.consume(c).await,
        }
    }
    async fn burn(&self, digest: &Digest, cycle: &Cycle) -> Result<(), StoreError> {
        self.inner.burn(digest, cycle).await
    }
}

impl VerdictStore for FaultyStore {
    async fn record(&self, v: &VerdictRecord) -> Result<Recorded, StoreError> {
        match self.faults.meet(Call::Record) {
            Some(fault) => Err(store_error(Call::Record, fault)),
            None => self.inner.record(v).await,
        }
    }
    async fn verdict(&self, cycle: &Cycle) -> Result<Option<VerdictRecord>, StoreError> {
        match self.faults.meet(Call::VerdictLookup) {
            Some(fault) => Err(store_error(Call::VerdictLookup, fault)),
            None => self.inner.verdict(cycle).await,
        }
    }
    async fn verdicts(
        &self,
        cycles: &[Cycle],
    ) -> Result<HashMap<String, VerdictRecord>, StoreError> {
        match self.faults.meet(Call::VerdictLookup) {
            Some(fault) => Err(store_error(Call::VerdictLookup, fault)),
            None => VerdictStore::verdicts(&self.inner, cycles).await,
        }
    }
    async fn annotate(
        &self,
        cycle: &Cycle,
        short_id: &ShortId,
        issuer: &Owner,
    ) -> Result<(), StoreError> {
        self.inner.annotate(cycle, short_id, issuer).await
    }
    async fn withdraw_exemption(&self, cycle: &Cycle) -> Result<bool, StoreError> {
        self.inner.withdraw_exemption(cycle).await
    }
    async fn activation(&self) -> Result<UnixTime, StoreError> {
        match self.faults.meet(Call::Activation) {
            Some(fault) => Err(store_error(Call::Activation, fault)),
            None => self.inner.activation().await,
        }
    }
}

impl AlertStore for FaultyStore {
    async fn claim_alert(
        &self,
        cycle: &Cycle,
        owner: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.inner.claim_alert(cycle, owner, now).await
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
        match self.faults.meet(Call::AlertQuery) {
            Some(fault) => Err(store_error(Call::AlertQuery, fault)),
            None => self.inner.due_alerts(now, limit).await,
        }
    }
}

impl CallerLookup for FaultyStore {
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

impl PasswordLookup for FaultyStore {
    async fn find(&self, digest: &Digest) -> Result<Option<PasswordRecord>, StoreError> {
        self.inner.find(digest).await
    }
}

/// SNS that keeps what it publishes.
struct FaultySns {
    published: Mutex<Vec<Alert>>,
    faults: Arc<Faults>,
}

impl FaultySns {
    fn new(faults: Arc<Faults>) -> Self {
        Self {
            published: Mutex::default(),
            faults,
        }
    }

    fn alerts(&self) -> Vec<Alert> {
        lock(&self.published).clone()
    }
}

impl Alerts for FaultySns {
    async fn publish(&self, alert: &Alert) -> Result<(), AwsError> {
        if let Some(fault) = self.faults.meet(Call::Publish) {
            return Err(aws_error(Call::Publish, fault));
        }
        lock(&self.published).push(alert.clone());
        Ok(())
    }
}

// ---- the world of one cell -----------------------------------------------------------------

fn config(mode: Mode) -> GuardConfig {
    let mut vars = vec![
        ("EC2PASS_TABLE", "ec2pass"),
        (
            "EC2PASS_ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:alerts",
        ),
    ];
    match mode {
        Mode::Closed => {}
        Mode::Open => vars.push(("EC2PASS_FAIL_MODE", "open")),
        Mode::ClosedAudit => vars.push(("EC2PASS_AUDIT_ALERTS", "true")),
    }
    let mut config = GuardConfig::from_env(&Env::from_fn(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    // A pending instance without a password is described again after this pause: the second
    // look is on the path, the wait is not what the matrix is about.
    config.tag_retry_delay = Duration::ZERO;
    config
}

/// Stores a fresh password for A, valid for 15 minutes.
fn mint(store: &MemoryStore) -> Password {
    let password = Password::generate();
    store.insert(PasswordRecord {
        short_id: new_short_id(),
        digest: password.digest(),
        owner: Owner {
            team_id: "T1".into(),
            user_id: "U1".into(),
        },
        channel_id: "C1".into(),
        scope: Some(id(A)),
        issued_at: UnixTime(NOW.0 - 60),
        expires_at: NOW.plus(Duration::from_secs(900)),
        consumed_by: None,
    });
    password
}

fn tags_for(scenario: Scenario, password: Option<&Password>) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::from([("Name".to_owned(), "web".to_owned())]);
    match scenario {
        Scenario::Authorized => {
            if let Some(p) = password {
                tags.insert("Auth".into(), p.display());
            }
        }
        Scenario::WrongPassword => {
            tags.insert("Auth".into(), Password::generate().display());
        }
        Scenario::NoAuthTag => {}
        Scenario::Exempt => {
            tags.insert("ec2pass:exempt".into(), "true".into());
            tags.insert("Auth".into(), "left-here-by-mistake".into());
        }
    }
    tags
}

fn facts(state: &str, tags: BTreeMap<String, String>) -> InstanceFacts {
    InstanceFacts {
        id: id(A),
        state: state.into(),
        launch_time: Some(LAUNCH),
        tags,
        root_device_type: Some("ebs".into()),
        spot: false,
    }
}

fn state_change(state: &str) -> Value {
    json!({"version":"0","id":format!("evt-{state}"),"detail-type":"EC2 Instance State-change Notification",
        "source":"aws.ec2","account":"123456789012","time":"2026-11-21T10:00:00Z","region":"us-east-1",
        "resources":[format!("arn:aws:ec2:us-east-1:123456789012:instance/{A}")],
        "detail":{"instance-id":A,"state":state}})
}

fn sweep(event_id: &str) -> Value {
    json!({"version":"0","id":event_id,"detail-type":"Scheduled Event","source":"aws.events",
        "account":"123456789012","time":"2026-11-21T10:05:00Z","region":"us-east-1","resources":[],"detail":{}})
}

type FaultyGuard = Guard<FaultyStore, FaultyEc2, FaultySns, FixedClock>;

/// One instance, its table and topic, and the fault switch.
struct World {
    guard: FaultyGuard,
    faults: Arc<Faults>,
}

impl World {
    fn new(trigger: Trigger, scenario: Scenario, mode: Mode) -> Self {
        let faults = Arc::new(Faults::default());
        let store = MemoryStore::activated_at(ACTIVATION);
        let password = (scenario == Scenario::Authorized).then(|| mint(&store));
        let instance = facts(
            trigger.initial_state(),
            tags_for(scenario, password.as_ref()),
        );
        World {
            guard: Guard::new(
                config(mode),
                FaultyStore {
                    inner: store,
                    faults: faults.clone(),
                },
                FaultyEc2 {
                    instances: Mutex::new(HashMap::from([(A.to_owned(), instance)])),
                    faults: faults.clone(),
                },
                FaultySns::new(faults.clone()),
                FixedClock(NOW),
            ),
            faults,
        }
    }

    async fn invoke(&self, payload: &Value, request_id: &str) -> Step {
        invoke(&self.guard, &self.faults, payload, request_id).await
    }

    fn end(&self) -> End {
        let instance = self.guard.ec2.instance();
        End {
            state: instance
                .as_ref()
                .map_or_else(|| "gone".to_owned(), |f| f.state.clone()),
            auth_tag: instance.and_then(|f| f.tags.get("Auth").cloned()),
            verdicts: self.guard.store.inner.verdicts(),
            alerts: self.guard.alerts.alerts(),
            consumed_by: self
                .guard
                .store
                .inner
                .records()
                .into_iter()
                .find_map(|r| r.consumed_by),
        }
    }
}

/// Whether an invocation answered `Ok` having changed nothing: no verdict, nothing done (an
/// event's one report says `none`; a sweep lists no instance that is down).
fn untouched(result: &Result<Vec<Report>, GuardError>) -> bool {
    matches!(result, Ok(reports) if reports.iter().all(|r| r.verdict == "none" && r.action == Action::None && !r.alerted))
}

/// One invocation: its answer, the alerts it published, the faults it met.
struct Step {
    result: Result<Vec<Report>, GuardError>,
    alerts: Vec<Alert>,
    fired: usize,
}

async fn invoke<S, E>(
    guard: &Guard<S, E, FaultySns, FixedClock>,
    faults: &Faults,
    payload: &Value,
    request_id: &str,
) -> Step
where
    S: ConsumeStore + VerdictStore + AlertStore + PasswordLookup + CallerLookup,
    E: Ec2,
{
    let published = guard.alerts.alerts().len();
    let fired = faults.fired();
    let result = guard
        .handle(
            payload,
            &Invocation {
                request_id: request_id.into(),
                deadline: Instant::now() + Duration::from_secs(30),
            },
        )
        .await;
    Step {
        result,
        alerts: guard.alerts.alerts().split_off(published),
        fired: faults.fired() - fired,
    }
}

/// How a world ended.
struct End {
    state: String,
    auth_tag: Option<String>,
    verdicts: Vec<VerdictRecord>,
    alerts: Vec<Alert>,
    consumed_by: Option<String>,
}

impl End {
    fn is_down(&self) -> bool {
        matches!(
            self.state.as_str(),
            "stopping" | "stopped" | "shutting-down" | "terminated" | "gone"
        )
    }

    fn verdict_alerts(&self) -> Vec<&Alert> {
        self.alerts
            .iter()
            .filter(|a| a.verdict != "guard-error")
            .collect()
    }
}

/// The transient run: fault on the first invocation, then Lambda's retry, then the next event.
struct Transient {
    first: Step,
    retry: Option<Step>,
    follow_up: Step,
    end: End,
}

async fn transient(
    trigger: Trigger,
    scenario: Scenario,
    mode: Mode,
    fault: Option<(Call, Fault)>,
) -> Transient {
    let world = World::new(trigger, scenario, mode);
    if let Some((call, fault)) = fault {
        world.faults.inject(call, fault);
    }
    let first = world.invoke(&trigger.first(), FIRST_REQUEST).await;
    world.faults.clear();
    let retry = match first.result {
        Err(_) => Some(world.invoke(&trigger.first(), FIRST_REQUEST).await),
        Ok(_) => None,
    };
    world.guard.ec2.boot();
    let follow_up = world.invoke(&trigger.follow_up(), NEXT_REQUEST).await;
    Transient {
        first,
        retry,
        follow_up,
        end: world.end(),
    }
}

/// The persistent run: the fault on every attempt Lambda makes, then cleared for the next event.
struct Persistent {
    attempts: Vec<Step>,
    follow_up: Step,
    end: End,
}

async fn persistent(cell: Cell, attempts: usize) -> Persistent {
    let world = World::new(cell.trigger, cell.scenario, cell.mode);
    world.faults.inject(cell.call, cell.fault);
    let mut steps: Vec<Step> = Vec::new();
    for _ in 0..attempts {
        let step = world.invoke(&cell.trigger.first(), FIRST_REQUEST).await;
        let done = step.result.is_ok();
        steps.push(step);
        if done {
            break; // Lambda does not retry a success
        }
    }
    world.faults.clear();
    world.guard.ec2.boot();
    let follow_up = world.invoke(&cell.trigger.follow_up(), NEXT_REQUEST).await;
    Persistent {
        attempts: steps,
        follow_up,
        end: world.end(),
    }
}

/// Lambda's attempts at an asynchronous event: 1 + the guard's `MaximumRetryAttempts`.
fn lambda_attempts() -> usize {
    const TEMPLATE: &str = include_str!("../../infra/template.yaml");
    let retries = TEMPLATE
        .split_once("EventInvokeConfig:")
        .and_then(|(_, rest)| {
            rest.lines()
                .find_map(|l| l.trim().strip_prefix("MaximumRetryAttempts:"))
        })
        .and_then(|v| v.trim().parse::<usize>().ok())
        .expect("infra/template.yaml sets the guard's EventInvokeConfig MaximumRetryAttempts");
    1 + retries
}

// ---- rendering -----------------------------------------------------------------------------

fn action(a: Action) -> &'static str {
    match a {
        Action::Stopped => "stopped",
        Action::StopPending => "stop-pending",
        Action::Terminated => "terminated",
        Action::AlertOnly => "alert-only",
        Action::None => "none",
    }
}

fn verdict_label(kind: &str, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{kind}:{r}"),
        None => kind.to_owned(),
    }
}

fn report_label(r: &Report) -> String {
    if r.verdict == "none" {
        return "nothing done".into();
    }
    format!(
        "{} {}{}",
        verdict_label(&r.verdict, r.reason.as_deref()),
        action(r.action),
        if r.decided_here { "" } else { " (enforced)" }
    )
}

fn alert_label(a: &Alert) -> String {
    format!("{}:{}/{}", a.verdict, a.reason, action(a.action))
}

fn step_label(s: &Step) -> String {
    let mut out = match &s.result {
        Ok(reports) if reports.is_empty() => "Ok: nothing to do".to_owned(),
        Ok(reports) => reports
            .iter()
            .map(report_label)
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("Err({})", e.what),
    };
    for a in &s.alerts {
        let _ = write!(out, " ▸ {}", alert_label(a));
    }
    out
}

fn end_label(e: &End) -> String {
    let verdicts = e
        .verdicts
        .iter()
        .map(|v| verdict_label(v.verdict.kind(), v.verdict.reason().map(|r| r.as_str())))
        .collect::<Vec<_>>();
    format!(
        "{}; verdict {}; Auth tag {}",
        e.state,
        if verdicts.is_empty() {
            "none".to_owned()
        } else {
            verdicts.join("+")
        },
        if e.auth_tag.is_some() { "kept" } else { "gone" }
    )
}

fn alerts_label(alerts: &[Alert]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in alerts {
        *counts.entry(alert_label(a)).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn persistent_label(p: &Persistent) -> String {
    let errors = p.attempts.iter().filter(|s| s.result.is_err()).count();
    let head = if errors == p.attempts.len() {
        format!("{errors}×Err → on-failure queue")
    } else if p.attempts.iter().all(|s| s.fired == 0) {
        "Ok (fault not met)".to_owned()
    } else if errors == 0 {
        "Ok at once (absorbed)".to_owned()
    } else {
        format!("{errors}×Err, then Ok (acknowledged)")
    };
    format!(
        "{head}; after recovery: {}; verdict alerts {}",
        end_label(&p.end),
        p.end.verdict_alerts().len()
    )
}

// ---- the invariants ------------------------------------------------------------------------

/// What a cell's runs broke, for the report and the final assertion.
#[derive(Default)]
struct Tally {
    faults: usize,
    unauthorized_running: usize,
    authorized_stopped: usize,
    trade_offs: usize,
    events_lost: usize,
    alerts_lost: usize,
    ended: usize,
    regressions: usize,
    violations: Vec<String>,
}

impl Tally {
    fn violation(&mut self, cell: &Cell, phase: &str, what: String) {
        self.violations.push(format!(
            "{} {} × {} × {} [{}] ({phase}): {what}",
            cell.trigger.name(),
            cell.call.name(),
            cell.fault.name(),
            cell.scenario.name(),
            cell.mode.name()
        ));
    }

    /// The end state every run must reach, whatever the fault did on the way.
    fn check_end(&mut self, cell: &Cell, phase: &str, end: &End, attempts: usize) {
        let (kind, reason) = cell.scenario.verdict();
        if cell.scenario.may_run() {
            match (cell.trade_off(), end.is_down()) {
                (Some(_), true) | (None, false) => {}
                (Some(_), false) => self.violation(
                    cell,
                    phase,
                    "expected the documented fail-closed stop".into(),
                ),
                (None, true) => {
                    self.authorized_stopped += 1;
                    self.violation(
                        cell,
                        phase,
                        format!("AUTHORIZED START STOPPED: {}", end.state),
                    );
                }
            }
        } else if !end.is_down() {
            self.unauthorized_running += 1;
            self.violation(
                cell,
                phase,
                format!("UNAUTHORIZED INSTANCE LEFT {}", end.state),
            );
        }
        let verdicts: Vec<_> = end
            .verdicts
            .iter()
            .map(|v| (v.verdict.kind(), v.verdict.reason().map(|r| r.as_str())))
            .collect();
        let ended = cell.ended_before_verdict();
        let expected: &[_] = if ended { &[] } else { &[(kind, reason)] };
        if verdicts != expected {
            self.violation(
                cell,
                phase,
                format!("verdicts {verdicts:?}, expected {expected:?}"),
            );
        }
        if ended {
            // Announced by the guard-error alert of the invocation that stopped it, saying so;
            // once, unless the fault hides the stop from the attempts after it (describe keeps
            // failing: each attempt stops again and says so).
            let errors: Vec<_> = end
                .alerts
                .iter()
                .filter(|a| a.verdict == "guard-error")
                .map(|a| a.action)
                .collect();
            let wanted = if cell.call == Call::Describe {
                attempts
            } else {
                1
            };
            if errors != vec![Action::Stopped; wanted] {
                self.violation(
                    cell,
                    phase,
                    format!("ended before a verdict: guard-error alerts saying {errors:?}, expected {wanted} saying stopped"),
                );
            }
        }
        let alerted: Vec<_> = end
            .verdict_alerts()
            .iter()
            .map(|a| (a.verdict.clone(), a.reason.clone()))
            .collect();
        let wanted = usize::from(!ended && cell.scenario.alerts(cell.mode));
        let right = alerted
            .iter()
            .all(|(v, r)| v == kind && r == reason.unwrap_or("none"));
        if alerted.len() != wanted || !right {
            if cell.scenario.is_deny() && alerted.is_empty() && !ended {
                self.alerts_lost += 1;
            }
            self.violation(
                cell,
                phase,
                format!("verdict alerts {alerted:?}, expected {wanted} × {kind}"),
            );
        }
        if cell.scenario == Scenario::Authorized && !end.is_down() {
            let cycle = Cycle {
                instance: id(A),
                launch_time: LAUNCH,
            };
            if end.consumed_by != Some(cycle.id()) {
                self.violation(
                    cell,
                    phase,
                    format!("password consumed by {:?}", end.consumed_by),
                );
            }
        }
    }

    fn check(&mut self, cell: &Cell, t: &Transient, p: &Persistent, baseline: &Transient) {
        self.faults += t.first.fired + p.attempts.iter().map(|s| s.fired).sum::<usize>();
        // Transient: a fault the guard met either fails the invocation (Lambda retries it) or
        // is one it absorbs by design.
        if t.first.fired > 0 && t.first.result.is_ok() && !cell.absorbed() {
            self.events_lost += 1;
            self.violation(
                cell,
                "transient",
                format!(
                    "met the fault and answered Ok: {}; Lambda would not retry",
                    step_label(&t.first)
                ),
            );
        }
        if t.first.fired == 0 && row_of(t) != row_of(baseline) {
            self.violation(
                cell,
                "transient",
                "never met the fault, yet ended unlike the run without it".into(),
            );
        }
        for (what, step) in [
            ("retry", t.retry.as_ref()),
            ("follow-up", Some(&t.follow_up)),
        ] {
            if let Some(Step { result: Err(e), .. }) = step {
                self.violation(
                    cell,
                    "transient",
                    format!("{what} failed with the fault gone: {e}"),
                );
            }
        }
        self.check_end(cell, "transient", &t.end, 1);
        // Persistent: a fault that fails the first attempt fails all of them, so the event
        // reaches the on-failure destination; except when the first attempt ended the start
        // (stopped it): the next attempt finds it over and acknowledges the event.
        let failed = p.attempts.iter().filter(|s| s.result.is_err()).count();
        let first_failed = p.attempts.first().is_some_and(|s| s.result.is_err());
        let acknowledged_after_the_stop = cell.ended_before_verdict()
            && cell.call != Call::Describe
            && failed == 1
            && p.attempts.len() == 2
            && p.attempts.get(1).is_some_and(|s| untouched(&s.result));
        if first_failed && failed != p.attempts.len() && !acknowledged_after_the_stop {
            self.events_lost += 1;
            self.violation(
                cell,
                "persistent",
                format!("{failed} of {} attempts failed", p.attempts.len()),
            );
        }
        if !first_failed && p.attempts.first().is_some_and(|s| s.fired > 0) && !cell.absorbed() {
            self.events_lost += 1;
            self.violation(cell, "persistent", "met the fault and answered Ok".into());
        }
        if let Err(e) = &p.follow_up.result {
            self.violation(cell, "persistent", format!("follow-up failed: {e}"));
        }
        self.check_end(cell, "persistent", &p.end, p.attempts.len());
        // The documented outcomes, exactly.
        if cell.trade_off().is_some() {
            self.trade_offs += 1;
            let stopped_and_said_so = t.first.result.is_err()
                && t.first
                    .alerts
                    .iter()
                    .any(|a| a.verdict == "guard-error" && a.action == Action::Stopped);
            if !stopped_and_said_so {
                self.violation(
                    cell,
                    "transient",
                    format!(
                        "trade-off cell: expected Err and a guard-error alert saying stopped, got {}",
                        step_label(&t.first)
                    ),
                );
            }
        }
        self.regressions += usize::from(cell.regression().is_some());
        if cell.ended_before_verdict() {
            self.ended += 1;
            let as_designed = t.first.result.is_err()
                && t.retry.as_ref().is_some_and(|s| untouched(&s.result))
                && untouched(&t.follow_up.result)
                && t.end.is_down();
            if !as_designed {
                self.violation(
                    cell,
                    "transient",
                    format!(
                        "ended before a verdict: expected Err, then a retry and a follow-up that change nothing, got {}",
                        row_of(t).join(" | ")
                    ),
                );
            }
            // Describe failing on every attempt hides the stop: every attempt fails (on to the
            // on-failure queue), as any other persistent fault.
            let persistent_as_designed = if cell.call == Call::Describe {
                failed == p.attempts.len()
            } else {
                acknowledged_after_the_stop
            };
            if !persistent_as_designed {
                self.violation(
                    cell,
                    "persistent",
                    format!(
                        "ended before a verdict: unexpected attempts: {}",
                        persistent_label(p)
                    ),
                );
            }
        }
    }
}

/// The columns after the cell's identity, as printed.
fn row_of(t: &Transient) -> [String; 5] {
    [
        step_label(&t.first),
        t.retry.as_ref().map_or_else(|| "—".to_owned(), step_label),
        step_label(&t.follow_up),
        end_label(&t.end),
        alerts_label(&t.end.alerts),
    ]
}

fn note(cell: &Cell, t: &Transient) -> String {
    let documented: Vec<&str> = [
        cell.regression(),
        cell.trade_off(),
        cell.ended_before_verdict().then_some(ENDED_NOTE),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !documented.is_empty() {
        return documented.join("; ");
    }
    if t.first.fired == 0 {
        return "not on this path: as without the fault".into();
    }
    match (cell.call, cell.fault) {
        (Call::Activation, _) if cell.trigger == Trigger::Event => "activation unknown: the \
            start (of the last ten minutes) decided as without the fault; an older one, which \
            may predate the guard, would be left alone; read again on the next event"
            .into(),
        (Call::Activation, _) => "activation unknown: the sweep touches nothing, guard-error \
            alert; Err → the next sweep"
            .into(),
        (Call::Describe, Fault::NotFound) => {
            "read as gone (SPEC §4.3 step 1); the running event decides".into()
        }
        (Call::Stop, Fault::NotFound) => format!(
            "read as stopped; the {} stops it",
            cell.trigger.follow_up_name()
        ),
        (Call::Untag, _) if t.end.auth_tag.is_some() && cell.scenario == Scenario::Authorized => {
            "best effort: the tag stays, its password is consumed".into()
        }
        (Call::Untag, _) => "best effort: logged".into(),
        _ if t.first.result.is_err() => "Err → Lambda retries".into(),
        _ => String::new(),
    }
}

// ---- the matrix ----------------------------------------------------------------------------

struct Row {
    key: [String; 4],
    modes: Vec<&'static str>,
    hit: usize,
    columns: [String; 5],
    persistent: String,
    note: String,
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| trigger | call | fault | scenario | fail mode | hit | 1st invocation (fault on) | Lambda retry (fault off) | follow-up | final state | alerts | fault persists through every attempt | note |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.key[0],
            r.key[1],
            r.key[2],
            r.key[3],
            r.modes.join(", "),
            r.hit,
            r.columns[0],
            r.columns[1],
            r.columns[2],
            r.columns[3],
            r.columns[4],
            r.persistent,
            r.note
        );
    }
    out
}

/// Rows for the same cell in several modes merge when they read the same.
fn push_row(rows: &mut Vec<Row>, row: Row) {
    if let Some(last) = rows.last_mut()
        && last.key == row.key
        && last.hit == row.hit
        && last.columns == row.columns
        && last.persistent == row.persistent
        && last.note == row.note
    {
        last.modes.extend(row.modes);
        return;
    }
    rows.push(row);
}

fn report_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    target.join("reports").join("fault-matrix.md")
}

#[tokio::test]
async fn fault_matrix() {
    let attempts = lambda_attempts();
    let mut baselines = HashMap::new();
    let mut baseline_rows = Vec::new();
    for &trigger in &[Trigger::Event, Trigger::Sweep] {
        for &scenario in trigger.scenarios() {
            for &mode in &[Mode::Closed, Mode::Open, Mode::ClosedAudit] {
                let t = transient(trigger, scenario, mode, None).await;
                push_row(
                    &mut baseline_rows,
                    Row {
                        key: [
                            trigger.name().into(),
                            "—".into(),
                            "none".into(),
                            scenario.name().into(),
                        ],
                        modes: vec![mode.name()],
                        hit: 0,
                        columns: row_of(&t),
                        persistent: "—".into(),
                        note: "baseline".into(),
                    },
                );
                baselines.insert((trigger.name(), scenario.name(), mode.name()), t);
            }
        }
    }

    let mut tally = Tally::default();
    let mut rows = Vec::new();
    let mut first_outcomes = HashMap::new();
    let cells = Cell::all();
    for cell in &cells {
        let t = transient(
            cell.trigger,
            cell.scenario,
            cell.mode,
            Some((cell.call, cell.fault)),
        )
        .await;
        let p = persistent(*cell, attempts).await;
        let baseline = baselines
            .get(&(cell.trigger.name(), cell.scenario.name(), cell.mode.name()))
            .expect("every trigger, scenario and mode has a baseline");
        tally.check(cell, &t, &p, baseline);
        first_outcomes.insert(
            (
                cell.trigger.name(),
                cell.call,
                cell.fault.name(),
                cell.scenario.name(),
                cell.mode.name(),
            ),
            step_label(&t.first),
        );
        push_row(
            &mut rows,
            Row {
                key: [
                    cell.trigger.name().into(),
                    cell.call.name().into(),
                    cell.fault.name().into(),
                    cell.scenario.name().into(),
                ],
                modes: vec![cell.mode.name()],
                hit: t.first.fired,
                columns: row_of(&t),
                persistent: persistent_label(&p),
                note: note(cell, &t),
            },
        );
    }

    let sdk = sdk::rows(&first_outcomes).await;

    let summary = format!(
        "fault-matrix: {} cells, {} faults injected, {} unauthorized left running, {} authorized stopped, {} lost \
         ({} documented fail-closed trade-offs, {} starts ended before a verdict (stopped, guard-error alert, no verdict), \
         {} deny alerts lost outside them, \
         {} regression cells for the guard.rs fixes, {} SDK-level cells)",
        cells.len(),
        tally.faults,
        tally.unauthorized_running,
        tally.authorized_stopped,
        tally.events_lost,
        tally.trade_offs,
        tally.ended,
        tally.alerts_lost,
        tally.regressions,
        sdk.len(),
    );
    let mut report = String::new();
    let _ = writeln!(report, "# Guard fault-injection matrix\n");
    let _ = writeln!(
        report,
        "Generated by `cargo test --workspace --lib fault_matrix -- --nocapture` (guard/src/fault_matrix.rs).\n\n\
         Each cell injects one fault on one call kind, the way the real client reports it once the SDK's own retries \
         are spent: throttling, 5xx and timeouts are `AwsError`/`StopError::Failed`/`StoreError::Unavailable`; \
         not-found is `InvalidInstanceID.NotFound`, which the EC2 client reads as gone (describe → `None`, stop → `Gone`, \
         untag → done) and which is modelled as EC2's eventual consistency (the instance is there). Not-found does not \
         apply to consume, record, verdict lookup, list or publish: a missing password item is the `unknown` verdict, and a \
         missing table or topic is classified exactly like a 5xx.\n\n\
         *Transient*: the fault is on for the 1st invocation; if it failed, Lambda retries the same event with the same \
         request id with the fault gone; then the follow-up arrives (event: the `running` event of the cycle; sweep: the \
         next scheduled sweep). *Persistent*: the fault stays on for all {attempts} attempts Lambda makes \
         (1 + `EventInvokeConfig.MaximumRetryAttempts` in infra/template.yaml); every attempt failing is what routes the \
         event to the SQS on-failure destination (infrastructure, not run here); then the fault clears and the follow-up \
         arrives. Alerts are written `verdict:reason/action`. Modes that read the same share a row.\n"
    );
    let _ = writeln!(report, "## Without faults\n\n{}", table(&baseline_rows));
    let _ = writeln!(report, "## With one fault\n\n{}", table(&rows));
    let _ = writeln!(
        report,
        "## Below the trait: the SDK's own retries (real clients over aws-smithy-mocks)\n\n{}",
        sdk::table(&sdk)
    );
    let _ = writeln!(report, "{summary}");
    println!("{report}");
    let path = report_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the reports directory");
    }
    std::fs::write(&path, &report).expect("write the fault-matrix report");
    println!("report written to {}", path.display());

    let sdk_mismatches: Vec<_> = sdk.iter().filter(|r| !r.same).collect();
    assert!(
        tally.violations.is_empty() && sdk_mismatches.is_empty(),
        "{} violations:\n{}\nSDK cells that differ: {:?}\n{summary}",
        tally.violations.len(),
        tally.violations.join("\n"),
        sdk_mismatches
            .iter()
            .map(|r| format!("{} {}: {} vs {}", r.call, r.below, r.outcome, r.expected))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        (
            tally.unauthorized_running,
            tally.authorized_stopped,
            tally.events_lost
        ),
        (0, 0, 0)
    );
}

// ---- below the trait -----------------------------------------------------------------------

mod sdk {
    //! The real clients over mocked HTTP: transient faults are retried by the SDK and do not
    //! reach the guard; faults that outlast the retries reach it as the fakes above inject them.

    use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
    use aws_sdk_dynamodb::types::TableDescription;
    use aws_sdk_ec2::Client;
    use aws_sdk_ec2::operation::delete_tags::DeleteTagsOutput;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::operation::stop_instances::StopInstancesOutput;
    use aws_sdk_ec2::types::{
        DeviceType, Instance, InstanceState, InstanceStateName, Reservation, Tag,
    };
    use aws_smithy_mocks::{
        MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock, mock_client,
    };
    use aws_smithy_runtime_api::client::http::{
        HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::retry::RetryConfig;
    use ec2pass_shared::store::dynamo::DynamoStore;

    use super::*;
    use crate::ec2::Ec2Client;

    /// One real-client cell.
    pub(super) struct SdkRow {
        pub(super) call: &'static str,
        pub(super) below: &'static str,
        attempts: usize,
        wanted_attempts: usize,
        pub(super) outcome: String,
        pub(super) expected: String,
        compared_with: &'static str,
        pub(super) same: bool,
    }

    pub(super) fn table(rows: &[SdkRow]) -> String {
        let mut out = String::from(
            "| call | injected below the trait | HTTP attempts (expected) | guard's 1st invocation | expected (from) | same |\n|---|---|---|---|---|---|\n",
        );
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}) | {} | {} ({}) | {} |",
                r.call,
                r.below,
                r.attempts,
                r.wanted_attempts,
                r.outcome,
                r.expected,
                r.compared_with,
                if r.same { "yes" } else { "NO" }
            );
        }
        out
    }

    /// The SDK's standard retries (3 attempts), without the wait between them.
    fn quick_retries() -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(1))
    }

    fn ec2_error(status: u16, code: &str) -> Response {
        let status = StatusCode::try_from(status).unwrap_or_else(|_| unreachable!());
        Response::new(
            status,
            SdkBody::from(format!(
                "<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors><RequestID>r</RequestID></Response>"
            )),
        )
    }

    fn described(tags: &BTreeMap<String, String>) -> DescribeInstancesOutput {
        let mut instance = Instance::builder()
            .instance_id(A)
            .state(
                InstanceState::builder()
                    .name(InstanceStateName::Pending)
                    .build(),
            )
            .launch_time(aws_smithy_types::DateTime::from_secs(LAUNCH.0))
            .root_device_type(DeviceType::Ebs);
        for (k, v) in tags {
            instance = instance.tags(Tag::builder().key(k).value(v).build());
        }
        DescribeInstancesOutput::builder()
            .reservations(Reservation::builder().instances(instance.build()).build())
            .build()
    }

    /// Runs the first invocation of `scenario` with EC2 answering by `rules`.
    async fn through_ec2_mocks(
        scenario: Scenario,
        rules: impl Fn(BTreeMap<String, String>) -> Vec<Rule>,
    ) -> (Step, Vec<Rule>) {
        // The tags hold the password minted into the store, so the rules are built after it.
        let faults = Arc::new(Faults::default());
        let store = MemoryStore::activated_at(ACTIVATION);
        let password = (scenario == Scenario::Authorized).then(|| mint(&store));
        let tags = tags_for(scenario, password.as_ref());
        let rules = rules(tags);
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules.iter(), |c| c
            .retry_config(quick_retries()));
        let guard = Guard::new(
            config(Mode::Closed),
            FaultyStore {
                inner: store,
                faults: faults.clone(),
            },
            Ec2Client::new(client),
            FaultySns::new(faults.clone()),
            FixedClock(NOW),
        );
        let step = invoke(&guard, &faults, &Trigger::Event.first(), FIRST_REQUEST).await;
        (step, rules)
    }

    fn describe_rule(
        tags: BTreeMap<String, String>,
        failures: usize,
        code: &'static str,
        status: u16,
    ) -> Rule {
        let out = move || described(&tags);
        if failures == usize::MAX {
            return mock!(Client::describe_instances)
                .sequence()
                .http_response(move || ec2_error(status, code))
                .repeatedly()
                .build();
        }
        let mut seq = mock!(Client::describe_instances).sequence();
        for _ in 0..failures {
            seq = seq.http_response(move || ec2_error(status, code));
        }
        // Then the instance, as often as asked (a pending instance without a password is
        // described a second time).
        seq.output(out).repeatedly().build()
    }

    fn stop_ok() -> Rule {
        mock!(Client::stop_instances)
            .sequence()
            .output(|| StopInstancesOutput::builder().build())
            .repeatedly()
            .build()
    }

    fn untag_ok() -> Rule {
        mock!(Client::delete_tags)
            .sequence()
            .output(|| DeleteTagsOutput::builder().build())
            .repeatedly()
            .build()
    }

    /// EC2 over HTTP that times out the first `n` calls of an action, then answers.
    #[derive(Debug, Clone)]
    struct SlowEc2 {
        timeouts: Arc<Mutex<HashMap<&'static str, usize>>>,
        calls: Arc<Mutex<HashMap<String, usize>>>,
        describe_xml: Arc<String>,
    }

    impl HttpConnector for SlowEc2 {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let body = request
                .body()
                .bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let action = body
                .split('&')
                .find_map(|kv| kv.strip_prefix("Action="))
                .unwrap_or_default()
                .to_owned();
            *lock(&self.calls).entry(action.clone()).or_default() += 1;
            let timed_out = match lock(&self.timeouts).get_mut(action.as_str()) {
                Some(n) if *n > 0 => {
                    *n = n.saturating_sub(1);
                    true
                }
                _ => false,
            };
            if timed_out {
                return HttpConnectorFuture::ready(Err(ConnectorError::timeout(
                    "HTTP connect timeout occurred after 3.1s".into(),
                )));
            }
            let xml = match action.as_str() {
                "DescribeInstances" => self.describe_xml.as_str().to_owned(),
                "StopInstances" => "<StopInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId><instancesSet/></StopInstancesResponse>".to_owned(),
                "DeleteTags" => "<DeleteTagsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId><return>true</return></DeleteTagsResponse>".to_owned(),
                other => panic!("unexpected EC2 action {other}"),
            };
            let status = StatusCode::try_from(200).unwrap_or_else(|_| unreachable!());
            HttpConnectorFuture::ready(Ok(Response::new(status, SdkBody::from(xml))))
        }
    }

    fn describe_xml(tags: &BTreeMap<String, String>) -> String {
        let tag_set: String = tags
            .iter()
            .map(|(k, v)| format!("<item><key>{k}</key><value>{v}</value></item>"))
            .collect();
        format!(
            "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId>\
             <reservationSet><item><reservationId>r-1</reservationId><instancesSet><item>\
             <instanceId>{A}</instanceId><instanceState><code>0</code><name>pending</name></instanceState>\
             <launchTime>{}</launchTime><rootDeviceType>ebs</rootDeviceType><tagSet>{tag_set}</tagSet>\
             </item></instancesSet></item></reservationSet></DescribeInstancesResponse>",
            LAUNCH.rfc3339()
        )
    }

    /// Runs the first invocation of `scenario` with DescribeInstances timing out `n` times.
    async fn through_timeouts(scenario: Scenario, n: usize) -> (Step, usize) {
        let faults = Arc::new(Faults::default());
        let store = MemoryStore::activated_at(ACTIVATION);
        let password = (scenario == Scenario::Authorized).then(|| mint(&store));
        let tags = tags_for(scenario, password.as_ref());
        let http = SlowEc2 {
            timeouts: Arc::new(Mutex::new(HashMap::from([("DescribeInstances", n)]))),
            calls: Arc::default(),
            describe_xml: Arc::new(describe_xml(&tags)),
        };
        let connector = http.clone();
        let conf = aws_sdk_ec2::Config::builder()
            .with_test_defaults_v2()
            .http_client(http_client_fn(move |_, _| {
                SharedHttpConnector::new(connector.clone())
            }))
            .retry_config(quick_retries())
            .build();
        let guard = Guard::new(
            config(Mode::Closed),
            FaultyStore {
                inner: store,
                faults: faults.clone(),
            },
            Ec2Client::new(Client::from_conf(conf)),
            FaultySns::new(faults.clone()),
            FixedClock(NOW),
        );
        let step = invoke(&guard, &faults, &Trigger::Event.first(), FIRST_REQUEST).await;
        let describes = lock(&http.calls)
            .get("DescribeInstances")
            .copied()
            .unwrap_or_default();
        (step, describes)
    }

    /// Runs the first invocation of `scenario` against DynamoDB answering the consume
    /// transaction with `failures` throttling errors, then success.
    async fn through_dynamo(scenario: Scenario, failures: Option<usize>) -> (Step, usize) {
        let throttled = || {
            Response::new(
                StatusCode::try_from(400).unwrap_or_else(|_| unreachable!()),
                SdkBody::from(
                    r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#,
                ),
            )
        };
        let rule = match failures {
            None => mock!(aws_sdk_dynamodb::Client::transact_write_items)
                .sequence()
                .http_response(throttled)
                .repeatedly()
                .build(),
            Some(n) => {
                let mut seq = mock!(aws_sdk_dynamodb::Client::transact_write_items).sequence();
                for _ in 0..n {
                    seq = seq.http_response(throttled);
                }
                seq.output(|| TransactWriteItemsOutput::builder().build())
                    .build()
            }
        };
        // The rest of the table answers as it would: the activation time (DescribeTable), then,
        // after an allow, the password read back (GetItem) and the verdict annotated.
        let activation = mock!(aws_sdk_dynamodb::Client::describe_table)
            .sequence()
            .output(|| {
                DescribeTableOutput::builder()
                    .table(
                        TableDescription::builder()
                            .creation_date_time(aws_smithy_types::DateTime::from_secs(ACTIVATION.0))
                            .build(),
                    )
                    .build()
            })
            .repeatedly()
            .build();
        let read = mock!(aws_sdk_dynamodb::Client::get_item)
            .sequence()
            .output(|| GetItemOutput::builder().build())
            .repeatedly()
            .build();
        let update = mock!(aws_sdk_dynamodb::Client::update_item)
            .sequence()
            .output(|| UpdateItemOutput::builder().build())
            .repeatedly()
            .build();
        let interceptor = MockResponseInterceptor::new()
            .rule_mode(RuleMode::MatchAny)
            .with_rule(&rule)
            .with_rule(&activation)
            .with_rule(&read)
            .with_rule(&update);
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "AKIDFAULTMATRIX",
                "secret",
                None,
                None,
                "fault-matrix",
            ))
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .retry_config(quick_retries())
            .build();
        let faults = Arc::new(Faults::default());
        let world = World::new(Trigger::Event, scenario, Mode::Closed);
        let guard = Guard::new(
            config(Mode::Closed),
            DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(conf), "ec2pass"),
            world.guard.ec2,
            FaultySns::new(faults.clone()),
            FixedClock(NOW),
        );
        let step = invoke(&guard, &faults, &Trigger::Event.first(), FIRST_REQUEST).await;
        (step, rule.num_calls())
    }

    type Key = (&'static str, Call, &'static str, &'static str, &'static str);

    fn cell_key(call: Call, fault: Fault, scenario: Scenario) -> Key {
        (
            Trigger::Event.name(),
            call,
            fault.name(),
            scenario.name(),
            Mode::Closed.name(),
        )
    }

    pub(super) async fn rows(matrix: &HashMap<Key, String>) -> Vec<SdkRow> {
        let from_matrix = |call, fault, scenario| {
            matrix
                .get(&cell_key(call, fault, scenario))
                .cloned()
                .unwrap_or_else(|| panic!("no matrix cell {call:?} {fault:?} {scenario:?}"))
        };
        // The same scenario with no fault at all, through the fakes.
        let clean = |scenario| async move {
            let t = transient(Trigger::Event, scenario, Mode::Closed, None).await;
            step_label(&t.first)
        };
        let mut rows = Vec::new();
        // The SDK makes up to 3 attempts (`quick_retries`); not-found is not retried.
        let mut push = |call,
                        below,
                        (attempts, wanted_attempts),
                        step: &Step,
                        expected: String,
                        compared_with| {
            let outcome = step_label(step);
            rows.push(SdkRow {
                call,
                below,
                attempts,
                wanted_attempts,
                same: outcome == expected && attempts == wanted_attempts,
                outcome,
                expected,
                compared_with,
            });
        };

        // Transient: retried by the SDK, invisible to the guard.
        let (step, rules) = through_ec2_mocks(Scenario::Authorized, |tags| {
            vec![
                describe_rule(tags, 1, "RequestLimitExceeded", 503),
                untag_ok(),
            ]
        })
        .await;
        push(
            "describe",
            "RequestLimitExceeded (503) once, then the instance",
            (rules[0].num_calls(), 2),
            &step,
            clean(Scenario::Authorized).await,
            "no fault",
        );
        let (step, rules) = through_ec2_mocks(Scenario::NoAuthTag, |tags| {
            let stop = mock!(Client::stop_instances)
                .sequence()
                .http_response(|| ec2_error(500, "InternalError"))
                .output(|| StopInstancesOutput::builder().build())
                .build();
            vec![describe_rule(tags, 0, "", 200), stop]
        })
        .await;
        push(
            "stop",
            "InternalError (500) once, then stopped",
            (rules[1].num_calls(), 2),
            &step,
            clean(Scenario::NoAuthTag).await,
            "no fault",
        );
        let (step, calls) = through_timeouts(Scenario::Authorized, 1).await;
        push(
            "describe",
            "connect timeout once, then the instance",
            (calls, 2),
            &step,
            clean(Scenario::Authorized).await,
            "no fault",
        );
        let (step, calls) = through_dynamo(Scenario::Authorized, Some(1)).await;
        push(
            "consume",
            "ThrottlingException once, then committed",
            (calls, 2),
            &step,
            clean(Scenario::Authorized).await,
            "no fault",
        );

        // Outlasting the SDK's retries: exactly what the matrix injects.
        let (step, rules) = through_ec2_mocks(Scenario::Authorized, |tags| {
            vec![
                describe_rule(tags, usize::MAX, "RequestLimitExceeded", 503),
                stop_ok(),
            ]
        })
        .await;
        push(
            "describe",
            "RequestLimitExceeded (503) on every attempt",
            (rules[0].num_calls(), 3),
            &step,
            from_matrix(Call::Describe, Fault::Throttling, Scenario::Authorized),
            "matrix: describe × throttling × (a), closed",
        );
        let (step, calls) = through_timeouts(Scenario::Authorized, usize::MAX).await;
        push(
            "describe",
            "connect timeout on every attempt",
            (calls, 3),
            &step,
            from_matrix(Call::Describe, Fault::Timeout, Scenario::Authorized),
            "matrix: describe × timeout × (a), closed",
        );
        let (step, rules) = through_ec2_mocks(Scenario::NoAuthTag, |tags| {
            let stop = mock!(Client::stop_instances)
                .sequence()
                .http_response(|| ec2_error(503, "Unavailable"))
                .repeatedly()
                .build();
            vec![describe_rule(tags, 0, "", 200), stop]
        })
        .await;
        push(
            "stop",
            "Unavailable (503) on every attempt",
            (rules[1].num_calls(), 3),
            &step,
            from_matrix(Call::Stop, Fault::ServerError, Scenario::NoAuthTag),
            "matrix: stop × 5xx × (c), closed",
        );
        let (step, calls) = through_dynamo(Scenario::Authorized, None).await;
        push(
            "consume",
            "ThrottlingException on every attempt",
            (calls, 3),
            &step,
            from_matrix(Call::Consume, Fault::Throttling, Scenario::Authorized),
            "matrix: consume × throttling × (a), closed",
        );
        let (step, rules) = through_ec2_mocks(Scenario::WrongPassword, |_| {
            vec![
                mock!(Client::describe_instances)
                    .then_http_response(|| ec2_error(400, "InvalidInstanceID.NotFound")),
            ]
        })
        .await;
        push(
            "describe",
            "InvalidInstanceID.NotFound (400)",
            (rules[0].num_calls(), 1),
            &step,
            from_matrix(Call::Describe, Fault::NotFound, Scenario::WrongPassword),
            "matrix: describe × not-found × (b), closed",
        );
        let (step, rules) = through_ec2_mocks(Scenario::NoAuthTag, |tags| {
            let stop = mock!(Client::stop_instances)
                .then_http_response(|| ec2_error(400, "InvalidInstanceID.NotFound"));
            vec![describe_rule(tags, 0, "", 200), stop]
        })
        .await;
        push(
            "stop",
            "InvalidInstanceID.NotFound (400)",
            (rules[1].num_calls(), 1),
            &step,
            from_matrix(Call::Stop, Fault::NotFound, Scenario::NoAuthTag),
            "matrix: stop × not-found × (c), closed",
        );
        rows
    }
}
