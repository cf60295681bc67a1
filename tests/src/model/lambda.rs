//! How events reach the guard in the two designs.
//!
//! **Today's design** ([`AsyncQueue`]): EventBridge invokes the guard asynchronously, once per
//! event. Lambda queues the events; at most the reserved concurrency (20) run at once, the rest
//! wait for a free execution environment. An invocation that returns an error, or runs past the
//! function's 30 s timeout, is run again after one minute, and after two more; then the event goes
//! to the on-failure destination (the failure queue). Source: "How Lambda handles errors and
//! retries with asynchronous invocation", AWS Lambda Developer Guide: "If the function returns an
//! error, by default Lambda attempts to run it two more times, with a one-minute wait between the
//! first two attempts, and two minutes between the second and third attempts. Function errors
//! include … timeouts." (`MaximumRetryAttempts: 2` in infra/template.yaml.)
//!
//! **The batched design** ([`Sqs`]): EventBridge sends each event to the state-change queue; the
//! event source mapping runs at most `MaximumConcurrency` (5) invocations at once, each with up to
//! `BatchSize` (100) messages gathered for at most `MaximumBatchingWindowInSeconds` (1 s). A
//! message the invocation names in `batchItemFailures` stays in the queue: visible again after
//! its `after` if the guard handed it back for a recheck (ChangeMessageVisibilityBatch, ten a
//! call), otherwise after the queue's `VisibilityTimeout` (180 s) from its receipt. Each receipt
//! adds one to its `ApproximateReceiveCount`; a message received `maxReceiveCount` (10) times that
//! comes back once more goes to the dead-letter queue instead. A message the invocation does not
//! name is deleted; an invocation that times out leaves all of its messages to come back.
//!
//! Each execution environment has its own `Guard` with its own SDK client, so its own retry
//! quota, as each is its own process in Lambda. Cold starts take no time in the model.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ec2pass_shared::store::{AlertStore, CallerLookup, ConsumeStore, PasswordLookup, VerdictStore};
use ec2pass_shared::time::Clock;
use guard::alerts::Alerts;
use guard::batch::{HandBack, Message};
use guard::fleet::Fleet;
use guard::guard::{Guard, Invocation};
use guard::queue::ENTRIES_PER_CALL;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The guard's Lambda timeout (infra/template.yaml).
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Lambda's waits before the retries of a failed asynchronous invocation.
pub const ASYNC_RETRY_WAITS: [Duration; 2] = [Duration::from_secs(60), Duration::from_secs(120)];
/// The guard's reserved concurrency (`GuardReservedConcurrency`).
pub const RESERVED_CONCURRENCY: usize = 20;
/// The event source mapping's `MaximumConcurrency` (`GuardQueueConcurrency`).
pub const QUEUE_CONCURRENCY: usize = 5;
/// `BatchSize`.
pub const BATCH_SIZE: usize = 100;
/// `MaximumBatchingWindowInSeconds`.
pub const BATCHING_WINDOW: Duration = Duration::from_secs(1);
/// The queue's `VisibilityTimeout`.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(180);
/// The redrive policy's `maxReceiveCount`.
pub const MAX_RECEIVES: u32 = 10;
/// Virtual latency of one ChangeMessageVisibilityBatch call (assumption).
pub const SQS_LATENCY: Duration = Duration::from_millis(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The invocation a new request gets: its id and deadline (Lambda's timeout less the guard's
/// margin, as `guard::deadline_from_epoch_ms` computes it).
pub fn invocation(request_id: String) -> Invocation {
    Invocation {
        request_id,
        deadline: Instant::now() + FUNCTION_TIMEOUT - guard::DEADLINE_MARGIN,
    }
}

/// Waits until `take` returns something, re-trying whenever `changed` is notified or the
/// instant `take` names passes.
async fn wait_for<T>(changed: &Notify, mut take: impl FnMut() -> Result<T, Option<Instant>>) -> T {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match take() {
            Ok(t) => return t,
            Err(Some(at)) => {
                tokio::select! {
                    biased;
                    () = &mut notified => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            Err(None) => notified.await,
        }
    }
}

/// Counts of one design's invocations.
#[derive(Debug, Clone, Default)]
pub struct Invocations {
    /// Invocations run.
    pub count: u64,
    /// Of those, returned an error.
    pub errors: u64,
    /// Of those, ran past the function's timeout.
    pub timeouts: u64,
    /// Longest invocation (virtual).
    pub longest: Duration,
    /// How long each took, in the order they ended.
    pub took: Vec<Duration>,
}

impl Invocations {
    fn ran(&mut self, took: Duration, error: bool, timeout: bool) {
        self.count += 1;
        self.errors += u64::from(error);
        self.timeouts += u64::from(timeout);
        self.longest = self.longest.max(took);
        self.took.push(took);
    }

    /// Adds another function's invocations (the batched design's scheduled sweeps).
    pub fn add(&mut self, other: &Invocations) {
        self.count += other.count;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.longest = self.longest.max(other.longest);
        self.took.extend(other.took.iter().copied());
    }
}

#[derive(Debug, Default)]
struct AsyncState {
    /// Waiting events by (when they may run, arrival order): the payload and its attempt (1–3).
    waiting: BTreeMap<(Instant, u64), (Value, u32)>,
    seq: u64,
    in_flight: usize,
    failed: Vec<Value>,
    invocations: Invocations,
}

/// Lambda's asynchronous invocation queue for one function.
#[derive(Debug, Default)]
pub struct AsyncQueue {
    state: Mutex<AsyncState>,
    changed: Notify,
}

impl AsyncQueue {
    /// An event arrives (EventBridge, or the schedule).
    pub fn send(&self, payload: Value) {
        self.send_at(Instant::now(), payload, 1);
    }

    fn send_at(&self, at: Instant, payload: Value, attempt: u32) {
        let mut s = lock(&self.state);
        s.seq += 1;
        let seq = s.seq;
        s.waiting.insert((at, seq), (payload, attempt));
        drop(s);
        self.changed.notify_waiters();
    }

    async fn next(&self) -> (Value, u32) {
        wait_for(&self.changed, || {
            let mut s = lock(&self.state);
            let now = Instant::now();
            match s.waiting.first_key_value() {
                Some((&(at, _), _)) if at <= now => {
                    let (_, item) = s.waiting.pop_first().unwrap_or_else(|| unreachable!());
                    s.in_flight += 1;
                    Ok(item)
                }
                Some((&(at, _), _)) => Err(Some(at)),
                None => Err(None),
            }
        })
        .await
    }

    fn finished(&self, payload: Value, attempt: u32, took: Duration, ok: bool, timeout: bool) {
        let mut s = lock(&self.state);
        s.in_flight -= 1;
        s.invocations.ran(took, !ok && !timeout, timeout);
        if ok {
            return;
        }
        let index = usize::try_from(attempt).unwrap_or(usize::MAX) - 1;
        match ASYNC_RETRY_WAITS.get(index) {
            Some(&wait) => {
                drop(s);
                self.send_at(Instant::now() + wait, payload, attempt + 1);
            }
            None => s.failed.push(payload),
        }
    }

    /// Nothing waiting, nothing running, no retry due.
    pub fn is_idle(&self) -> bool {
        let s = lock(&self.state);
        s.waiting.is_empty() && s.in_flight == 0
    }

    /// Events in the failure queue.
    pub fn failed(&self) -> Vec<Value> {
        lock(&self.state).failed.clone()
    }

    /// The invocations so far.
    pub fn invocations(&self) -> Invocations {
        lock(&self.state).invocations.clone()
    }

    /// One execution environment: takes the next event, runs `guard.handle` on it within the
    /// function's timeout, and reports how it ended; forever.
    pub async fn serve<S, E, A, C>(&self, guard: &Guard<S, E, A, C>, name: &str)
    where
        S: ConsumeStore + VerdictStore + AlertStore + PasswordLookup + CallerLookup,
        E: Fleet,
        A: Alerts,
        C: Clock,
    {
        let mut n = 0u64;
        loop {
            let (payload, attempt) = self.next().await;
            n += 1;
            let inv = invocation(format!("{name}-{n}"));
            let started = Instant::now();
            let result = tokio::time::timeout(FUNCTION_TIMEOUT, guard.handle(&payload, &inv)).await;
            let (ok, timeout) = match result {
                Ok(Ok(_)) => (true, false),
                Ok(Err(_)) => (false, false),
                Err(_) => (false, true),
            };
            self.finished(payload, attempt, started.elapsed(), ok, timeout);
        }
    }
}

#[derive(Debug)]
struct Msg {
    body: String,
    receive_count: u32,
    visible_at: Instant,
    receipt: u64,
}

#[derive(Debug, Default)]
struct SqsState {
    messages: BTreeMap<u64, Msg>,
    seq: u64,
    receipts: u64,
    dead: Vec<String>,
    received: u64,
    deleted: u64,
    visibility_calls: u64,
    in_flight: usize,
    invocations: Invocations,
}

/// The state-change queue and its event source mapping.
#[derive(Debug, Default)]
pub struct Sqs {
    state: Mutex<SqsState>,
    changed: Notify,
}

impl Sqs {
    /// EventBridge sends a message.
    pub fn send(&self, body: String) {
        let mut s = lock(&self.state);
        s.seq += 1;
        let seq = s.seq;
        s.messages.insert(
            seq,
            Msg {
                body,
                receive_count: 0,
                visible_at: Instant::now(),
                receipt: 0,
            },
        );
        drop(s);
        self.changed.notify_waiters();
    }

    /// ReceiveMessage: up to `max` visible messages, oldest visibility first; each becomes
    /// invisible for the visibility timeout. A visible message already received
    /// [`MAX_RECEIVES`] times goes to the dead-letter queue instead. Err: none visible, and when
    /// the next becomes visible.
    fn receive(&self, max: usize) -> Result<Vec<Message>, Option<Instant>> {
        let now = Instant::now();
        let mut s = lock(&self.state);
        let mut visible: Vec<(Instant, u64)> = s
            .messages
            .iter()
            .filter(|(_, m)| m.visible_at <= now)
            .map(|(&k, m)| (m.visible_at, k))
            .collect();
        visible.sort();
        let mut out = Vec::new();
        for (_, k) in visible {
            if out.len() >= max {
                break;
            }
            let over = s
                .messages
                .get(&k)
                .is_some_and(|m| m.receive_count >= MAX_RECEIVES);
            if over {
                if let Some(m) = s.messages.remove(&k) {
                    s.dead.push(m.body);
                }
                continue;
            }
            s.receipts += 1;
            s.received += 1;
            let receipt = s.receipts;
            let Some(m) = s.messages.get_mut(&k) else {
                continue;
            };
            m.receive_count += 1;
            m.visible_at = now + VISIBILITY_TIMEOUT;
            m.receipt = receipt;
            out.push(Message {
                id: format!("msg-{k}"),
                receipt: format!("rcpt-{k}-{receipt}"),
                receive_count: m.receive_count,
                body: m.body.clone(),
            });
        }
        if out.is_empty() {
            Err(s.messages.values().map(|m| m.visible_at).min())
        } else {
            Ok(out)
        }
    }

    fn key(id: &str) -> Option<u64> {
        id.strip_prefix("msg-")?.parse().ok()
    }

    /// The mapping deletes what the invocation did not name; the guard's recheck sets the
    /// visibility of what it handed back.
    fn settle(&self, batch: &[Message], failed: &[String], recheck: &[HandBack]) {
        let now = Instant::now();
        let mut s = lock(&self.state);
        for m in batch {
            if failed.contains(&m.id) {
                continue;
            }
            if let Some(k) = Self::key(&m.id)
                && s.messages.remove(&k).is_some()
            {
                s.deleted += 1;
            }
        }
        for h in recheck {
            let receipt = h
                .receipt
                .rsplit('-')
                .next()
                .and_then(|r| r.parse::<u64>().ok());
            if let Some(k) = Self::key(&h.id)
                && let Some(m) = s.messages.get_mut(&k)
                && Some(m.receipt) == receipt
            {
                m.visible_at = now + h.after;
            }
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// Nothing in the queue (visible or not) and no invocation running.
    pub fn is_idle(&self) -> bool {
        let s = lock(&self.state);
        s.messages.is_empty() && s.in_flight == 0
    }

    /// Messages in the dead-letter queue.
    pub fn dead(&self) -> Vec<String> {
        lock(&self.state).dead.clone()
    }

    /// (messages received, deleted, ChangeMessageVisibilityBatch calls).
    pub fn counts(&self) -> (u64, u64, u64) {
        let s = lock(&self.state);
        (s.received, s.deleted, s.visibility_calls)
    }

    /// The invocations so far.
    pub fn invocations(&self) -> Invocations {
        lock(&self.state).invocations.clone()
    }

    /// One poller of the event source mapping with its execution environment: gathers a batch,
    /// runs `guard.handle_batch` on it within the function's timeout, hands back what it names
    /// (as `guard/src/main.rs` does with `SqsRecheck`), and settles the batch; forever.
    pub async fn serve<S, E, A, C>(&self, guard: &Guard<S, E, A, C>, name: &str)
    where
        S: ConsumeStore + VerdictStore + AlertStore + PasswordLookup + CallerLookup,
        E: Fleet,
        A: Alerts,
        C: Clock,
    {
        let mut n = 0u64;
        loop {
            let mut batch = wait_for(&self.changed, || self.receive(BATCH_SIZE)).await;
            let window_ends = Instant::now() + BATCHING_WINDOW;
            while batch.len() < BATCH_SIZE && Instant::now() < window_ends {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match self.receive(BATCH_SIZE - batch.len()) {
                    Ok(more) => batch.extend(more),
                    Err(next) => {
                        let until = next.map_or(window_ends, |t| t.min(window_ends));
                        tokio::select! {
                            biased;
                            () = &mut notified => {}
                            () = tokio::time::sleep_until(until) => {}
                        }
                    }
                }
            }
            lock(&self.state).in_flight += 1;
            n += 1;
            let inv = invocation(format!("{name}-{n}"));
            let started = Instant::now();
            let run = async {
                let outcome = guard.handle_batch(&batch, &inv).await;
                let calls = outcome.recheck.chunks(ENTRIES_PER_CALL).count();
                for _ in 0..calls {
                    lock(&self.state).visibility_calls += 1;
                    tokio::time::sleep(SQS_LATENCY).await;
                }
                outcome
            };
            let result = tokio::time::timeout(FUNCTION_TIMEOUT, run).await;
            let took = started.elapsed();
            // Killed at the timeout: every message comes back after its visibility timeout.
            let timed_out = result.is_err();
            if let Ok(outcome) = result {
                self.settle(&batch, &outcome.failed, &outcome.recheck);
            }
            let mut s = lock(&self.state);
            s.in_flight -= 1;
            s.invocations.ran(took, false, timed_out);
        }
    }
}

/// Delivers `events` (when, payload) in time order to `sink`.
pub async fn deliver(mut events: Vec<(Instant, Value)>, sink: impl Fn(Value)) {
    events.sort_by_key(|(t, _)| *t);
    for (at, payload) in events {
        tokio::time::sleep_until(at).await;
        sink(payload);
    }
}

/// Runs `work` until `done` is true (checked every `every`) or `horizon` passes; whether it
/// ended because `done`.
pub async fn until(
    work: impl Future<Output = ()>,
    done: impl Fn() -> bool,
    every: Duration,
    horizon: Instant,
) -> bool {
    let watch = async {
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= horizon {
                return false;
            }
            tokio::time::sleep(every.min(horizon.saturating_duration_since(Instant::now()))).await;
        }
    };
    tokio::select! {
        biased;
        quiet = watch => quiet,
        () = work => done(),
    }
}
