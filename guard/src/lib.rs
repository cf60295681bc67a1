//! The ec2pass guard: an EC2 start in, a verdict, its enforcement and an alert out.
//!
//! An event flows through the modules in this order:
//!
//! 1. [`event`]: the EventBridge payload (`pending`/`running` state change, or the scheduled
//!    sweep); anything else is logged and acknowledged.
//! 2. [`ec2`]: DescribeInstances gives the facts (state, LaunchTime, tags).
//! 3. [`decide`]: pure decisions: is the instance guarded, what does its `Auth` tag hold, and
//!    why a password did not work.
//! 4. consume and record ([`ec2pass_shared::store`]): one conditional transaction consumes the
//!    password for this start and records the allow, or a create-once write records the deny.
//! 5. [`enforce`]: stopping a denied instance, patiently while it is still `pending`; clearing
//!    stop protection, and terminating what cannot stop.
//! 6. [`alerts`]: the SNS alert, at least once per verdict that alerts.
//!
//! [`guard`] strings them together and holds the rules that keep it right under duplicates,
//! retries and races. [`batch`] takes the state changes of a burst from the SQS queue many at a
//! time: one describe for all, each start decided as above, their stops, untags and alerts
//! gathered into few calls, and what is still `pending` handed back to the queue ([`queue`]).
//! [`pace`] retries throttled EC2 calls at the rate EC2's buckets refill. [`fleet`] says where
//! each start is acted on: this account, or (a hub's guard) the member account and region it
//! happened in, through that account's member role. `main.rs` only wires real AWS clients into
//! [`guard::Guard`].
//!
//! Who started it (SPEC §11) has a path of its own, fed by CloudTrail's calls on their own queue
//! (`bin/attribution.rs`): [`calls`] reads a `RunInstances`/`StartInstances` record,
//! [`attribute`] ties it to its starts' verdicts, tells the caller once per deny and, opt-in,
//! has [`respond`] cut the caller off. The deny path only reads the call, when it came first, to
//! put the caller in its alert.

pub mod alerts;
pub mod attribute;
pub mod batch;
pub mod calls;
pub mod decide;
pub mod ec2;
pub mod enforce;
pub mod event;
pub mod fleet;
pub mod guard;
pub mod pace;
pub mod queue;
pub mod respond;
pub mod sweep;

#[cfg(test)]
mod fault_matrix;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The AWS SDK configuration both of the guard crate's functions build once at cold start:
/// bounded calls, so a call that connects but never answers is an error like any other (fail
/// closed, alert, let Lambda retry) instead of running until Lambda kills the invocation.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(6))
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}

/// How long before Lambda's own timeout the guard stops retrying a stop: the time to announce
/// the verdict afterwards (a publish is bounded at 6 s by the SDK's operation timeout, and the
/// mark that it was sent follows it). Should the invocation die anyway, the alert's lease lapses
/// and a retry or the sweep announces it.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(7);

/// The point to give up retrying, from Lambda's deadline (milliseconds since the epoch).
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    Instant::now() + remaining.saturating_sub(DEADLINE_MARGIN)
}
