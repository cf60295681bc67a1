//! The rest of AWS around the guard in the model: DynamoDB (the real [`MemoryStore`] with a
//! fixed virtual latency per call), SNS (a counting fake), and a clock on virtual time.
//!
//! Neither DynamoDB (on-demand) nor SNS is throttled in the model: at a burst's few thousand
//! calls a minute both are far below their limits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_sdk_ec2::config::Credentials;
use ec2pass_shared::alert::Alert;
use ec2pass_shared::digest::Digest;
use ec2pass_shared::ids::{Owner, ShortId};
use ec2pass_shared::org::Assume;
use ec2pass_shared::store::memory::MemoryStore;
use ec2pass_shared::store::{
    AlertStore, CallerLookup, Consume, ConsumeOutcome, ConsumeStore, PasswordLookup,
    PasswordRecord, Recorded, StoreError, VerdictStore,
};
use ec2pass_shared::time::{Clock, UnixTime};
use ec2pass_shared::verdict::{Cycle, VerdictRecord};
use guard::alerts::{ALERTS_PER_BATCH, Alerts};
use guard::ec2::AwsError;
use tokio::time::Instant;

/// Virtual latency of one DynamoDB call (assumption).
pub const DYNAMODB_LATENCY: Duration = Duration::from_millis(10);
/// Virtual latency of one SNS Publish or PublishBatch call (assumption).
pub const SNS_LATENCY: Duration = Duration::from_millis(20);
/// Most keys one BatchGetItem reads.
pub const KEYS_PER_BATCH_GET: usize = 100;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The time, from tokio's (virtual) clock: `epoch` at `start`.
#[derive(Debug, Clone, Copy)]
pub struct VirtualClock {
    /// Seconds since the Unix epoch at `start`.
    pub epoch: UnixTime,
    /// Virtual time zero.
    pub start: Instant,
}

impl Clock for VirtualClock {
    fn now(&self) -> UnixTime {
        let secs = Instant::now()
            .saturating_duration_since(self.start)
            .as_secs();
        UnixTime(self.epoch.0 + i64::try_from(secs).unwrap_or(i64::MAX))
    }
}

/// What the table saw.
#[derive(Debug, Default)]
pub struct TableLog {
    /// DynamoDB calls, by operation (BatchGetItem counted per 100 keys).
    pub calls: BTreeMap<&'static str, u64>,
    /// Verdicts created, by cycle key (a create-once write that was ours, or a consume that
    /// allowed), with when.
    pub created: HashMap<String, Vec<Instant>>,
}

/// The shared table, as every execution environment reaches it.
#[derive(Debug, Clone)]
pub struct Table {
    /// The items.
    pub inner: Arc<MemoryStore>,
    /// What it saw.
    pub log: Arc<Mutex<TableLog>>,
}

impl Table {
    /// A table activated at `at`.
    pub fn activated_at(at: UnixTime) -> Self {
        Self {
            inner: Arc::new(MemoryStore::activated_at(at)),
            log: Arc::default(),
        }
    }

    /// Every verdict.
    pub fn verdicts(&self) -> Vec<VerdictRecord> {
        self.inner.verdicts()
    }

    /// Stores a password directly, as if minted earlier.
    pub fn insert(&self, record: PasswordRecord) {
        self.inner.insert(record);
    }

    /// DynamoDB calls so far.
    pub fn calls(&self) -> u64 {
        lock(&self.log).calls.values().sum()
    }

    async fn call(&self, operation: &'static str, n: u64) {
        *lock(&self.log).calls.entry(operation).or_default() += n;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        tokio::time::sleep(DYNAMODB_LATENCY * n).await;
    }

    fn created(&self, key: String) {
        lock(&self.log)
            .created
            .entry(key)
            .or_default()
            .push(Instant::now());
    }
}

impl ConsumeStore for Table {
    async fn consume(&self, consume: &Consume) -> Result<ConsumeOutcome, StoreError> {
        self.call("TransactWriteItems", 1).await;
        let outcome = ConsumeStore::consume(&*self.inner, consume).await?;
        if outcome == ConsumeOutcome::Allowed {
            self.created(consume.cycle.verdict_key());
        }
        Ok(outcome)
    }

    async fn burn(&self, digest: &Digest, cycle: &Cycle) -> Result<(), StoreError> {
        self.call("UpdateItem", 1).await;
        ConsumeStore::burn(&*self.inner, digest, cycle).await
    }
}

impl VerdictStore for Table {
    async fn record(&self, verdict: &VerdictRecord) -> Result<Recorded, StoreError> {
        self.call("PutItem", 1).await;
        let recorded = VerdictStore::record(&*self.inner, verdict).await?;
        if recorded == Recorded::Ours {
            self.created(verdict.cycle.verdict_key());
        }
        Ok(recorded)
    }

    async fn verdict(&self, cycle: &Cycle) -> Result<Option<VerdictRecord>, StoreError> {
        self.call("GetItem", 1).await;
        VerdictStore::verdict(&*self.inner, cycle).await
    }

    async fn verdicts(
        &self,
        cycles: &[Cycle],
    ) -> Result<HashMap<String, VerdictRecord>, StoreError> {
        let batches = cycles.len().div_ceil(KEYS_PER_BATCH_GET).max(1);
        self.call("BatchGetItem", batches as u64).await;
        VerdictStore::verdicts(&*self.inner, cycles).await
    }

    async fn annotate(
        &self,
        cycle: &Cycle,
        short_id: &ShortId,
        issuer: &Owner,
    ) -> Result<(), StoreError> {
        self.call("UpdateItem", 1).await;
        VerdictStore::annotate(&*self.inner, cycle, short_id, issuer).await
    }

    async fn withdraw_exemption(&self, cycle: &Cycle) -> Result<bool, StoreError> {
        self.call("DeleteItem", 1).await;
        VerdictStore::withdraw_exemption(&*self.inner, cycle).await
    }

    async fn activation(&self) -> Result<UnixTime, StoreError> {
        self.call("DescribeTable", 1).await;
        VerdictStore::activation(&*self.inner).await
    }
}

impl AlertStore for Table {
    async fn claim_alert(
        &self,
        cycle: &Cycle,
        owner: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.call("UpdateItem", 1).await;
        AlertStore::claim_alert(&*self.inner, cycle, owner, now).await
    }

    async fn release_alert(&self, cycle: &Cycle, owner: &str) -> Result<(), StoreError> {
        self.call("UpdateItem", 1).await;
        AlertStore::release_alert(&*self.inner, cycle, owner).await
    }

    async fn alert_sent(&self, cycle: &Cycle, now: UnixTime) -> Result<(), StoreError> {
        self.call("UpdateItem", 1).await;
        AlertStore::alert_sent(&*self.inner, cycle, now).await
    }

    async fn due_alerts(
        &self,
        now: UnixTime,
        limit: usize,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        self.call("Query", 1).await;
        AlertStore::due_alerts(&*self.inner, now, limit).await
    }
}

impl CallerLookup for Table {
    async fn call_for(
        &self,
        id: &ec2pass_shared::ids::InstanceId,
    ) -> Result<Option<(ec2pass_shared::caller::Caller, UnixTime)>, StoreError> {
        self.call("GetItem", 1).await;
        self.inner.call_for(id).await
    }
    async fn claim_tell(
        &self,
        cycle: &Cycle,
        caller: &ec2pass_shared::caller::Caller,
        claim: ec2pass_shared::store::TellClaim,
    ) -> Result<bool, StoreError> {
        self.call("UpdateItem", 1).await;
        self.inner.claim_tell(cycle, caller, claim).await
    }
}

impl PasswordLookup for Table {
    async fn find(&self, digest: &Digest) -> Result<Option<PasswordRecord>, StoreError> {
        self.call("GetItem", 1).await;
        PasswordLookup::find(&*self.inner, digest).await
    }
}

/// One published alert, as the figures need it.
#[derive(Debug, Clone)]
pub struct Published {
    /// `allow`, `deny`, `exempt`, `guard-error`, `summary`.
    pub verdict: String,
    /// Its reason.
    pub reason: String,
    /// The instance (`batch` for summaries and batch errors, `sweep` for sweep errors).
    pub instance_id: String,
    /// The account it names.
    pub account: String,
    /// When it was published.
    pub at: Instant,
}

/// What the topic saw.
#[derive(Debug, Default)]
pub struct TopicLog {
    /// Every alert published.
    pub alerts: Vec<Published>,
    /// Publish calls.
    pub publish_calls: u64,
    /// PublishBatch calls (ten alerts each at most).
    pub publish_batch_calls: u64,
}

/// The alert topic: records every alert, answers every call after [`SNS_LATENCY`].
#[derive(Debug, Clone, Default)]
pub struct Topic {
    /// What it saw.
    pub log: Arc<Mutex<TopicLog>>,
}

impl Topic {
    fn record(&self, alert: &Alert) {
        lock(&self.log).alerts.push(Published {
            verdict: alert.verdict.clone(),
            reason: alert.reason.clone(),
            instance_id: alert.instance_id.clone(),
            account: alert.account.clone(),
            at: Instant::now(),
        });
    }

    /// Every alert so far.
    pub fn alerts(&self) -> Vec<Published> {
        lock(&self.log).alerts.clone()
    }

    /// (Publish calls, PublishBatch calls).
    pub fn calls(&self) -> (u64, u64) {
        let log = lock(&self.log);
        (log.publish_calls, log.publish_batch_calls)
    }
}

impl Alerts for Topic {
    async fn publish(&self, alert: &Alert) -> Result<(), AwsError> {
        lock(&self.log).publish_calls += 1;
        tokio::time::sleep(SNS_LATENCY).await;
        self.record(alert);
        Ok(())
    }

    async fn publish_many(&self, alerts: &[Alert]) -> Vec<Result<(), AwsError>> {
        for chunk in alerts.chunks(ALERTS_PER_BATCH) {
            lock(&self.log).publish_batch_calls += 1;
            tokio::time::sleep(SNS_LATENCY).await;
            for alert in chunk {
                self.record(alert);
            }
        }
        alerts.iter().map(|_| Ok(())).collect()
    }
}

/// Virtual latency of one STS AssumeRole call (assumption).
pub const STS_LATENCY: Duration = Duration::from_millis(100);

/// STS as the hub's guard meets it: any member role is assumed, after [`STS_LATENCY`], for
/// credentials that do not expire within a run and whose access key names the account
/// ([`super::ec2::member_access_key`], which [`super::ec2::Members`] routes by).
#[derive(Debug, Clone, Default)]
pub struct Sts {
    calls: Arc<Mutex<u64>>,
}

impl Sts {
    /// AssumeRole calls so far.
    pub fn calls(&self) -> u64 {
        *lock(&self.calls)
    }
}

impl Assume for Sts {
    async fn assume(&self, role_arn: &str) -> Result<Credentials, String> {
        *lock(&self.calls) += 1;
        tokio::time::sleep(STS_LATENCY).await;
        // arn:aws:iam::<account>:role/<name>
        let account = role_arn.split(':').nth(4).unwrap_or_default();
        Ok(Credentials::new(
            super::ec2::member_access_key(account),
            "model-secret",
            Some("model-session".into()),
            None,
            "model-sts",
        ))
    }
}
