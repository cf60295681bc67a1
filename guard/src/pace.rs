//! Throttling is a pace, not a failure: EC2 calls retried at the rate EC2's buckets refill.
//!
//! EC2 throttles each API per account and region with a token bucket ("Request throttling for
//! the Amazon EC2 API", EC2 Developer Guide): DescribeInstances holds 100 requests and refills 20
//! a second, StopInstances 50 refilling 5, DeleteTags 100 refilling 10, and an attacker's own
//! calls draw on the same buckets. The SDK gives up after three attempts within about a second,
//! far sooner than a bucket refills under a burst; failing closed then would stop instances
//! blindly and raise a `guard-error` alert for each. [`Paced`] keeps asking instead: after a
//! throttled answer it waits about the time the bucket takes to refill one request (the first
//! pause), doubling up to [`MAX_PAUSE`], for at most [`BUDGET`] in all. A call still throttled
//! after that is an error marked [`AwsError::throttled`], which the batch path answers by handing
//! its messages back to the queue rather than by failing closed.

use std::future::Future;
use std::time::Duration;

use ec2pass_shared::ids::InstanceId;
use tracing::warn;

use crate::ec2::{AwsError, Ec2, InstanceFacts, StopError};

/// Longest pause between two attempts of one call.
pub const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Longest one call keeps trying while throttled, pauses included: the guard's 30 s timeout
/// less [`crate::DEADLINE_MARGIN`] leaves room for a describe and a stop paced this long.
pub const BUDGET: Duration = Duration::from_secs(10);

/// The first pause after a throttled answer: about the time the API's bucket takes to refill
/// one request (20/s, 5/s, 10/s), never less than 50 ms.
pub fn first_pause(operation: &str) -> Duration {
    match operation {
        "DescribeInstances" => Duration::from_millis(50),
        "StopInstances" | "TerminateInstances" => Duration::from_millis(200),
        _ => Duration::from_millis(100),
    }
}

/// The pauses of one call: `first`, doubling to [`MAX_PAUSE`], while they add up to at most
/// [`BUDGET`]. Deterministic: callers spread themselves by when their batches arrive.
pub fn pauses(first: Duration) -> impl Iterator<Item = Duration> {
    let mut next = first;
    let mut spent = Duration::ZERO;
    std::iter::from_fn(move || {
        if spent + next > BUDGET {
            return None;
        }
        let pause = next;
        spent += pause;
        next = (next * 2).min(MAX_PAUSE);
        Some(pause)
    })
}

/// An [`Ec2`] whose throttled calls are retried at EC2's pace (see the module's doc).
#[derive(Debug, Clone)]
pub struct Paced<E>(pub E);

/// Runs `call` until it is not throttled or the pauses run out.
async fn paced<T, F, Fut>(operation: &'static str, mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let mut pauses = pauses(first_pause(operation));
    loop {
        match call().await {
            Err(e) if e.throttled => match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    warn!(operation, "still throttled after the pacing budget");
                    return Err(e);
                }
            },
            other => return other,
        }
    }
}

/// As [`paced`], for the calls whose error is a [`StopError`].
async fn paced_stop<F, Fut>(operation: &'static str, mut call: F) -> Result<(), StopError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StopError>>,
{
    let mut pauses = pauses(first_pause(operation));
    loop {
        match call().await {
            Err(StopError::Failed(e)) if e.throttled => match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(StopError::Failed(e)),
            },
            other => return other,
        }
    }
}

impl<E: Ec2> Ec2 for Paced<E> {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceFacts>, AwsError> {
        paced("DescribeInstances", || self.0.describe(id)).await
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), StopError> {
        paced_stop("StopInstances", || self.0.stop(id)).await
    }

    async fn terminate(&self, id: &InstanceId) -> Result<(), StopError> {
        paced_stop("TerminateInstances", || self.0.terminate(id)).await
    }

    async fn clear_stop_protection(&self, id: &InstanceId) -> Result<(), AwsError> {
        paced("ModifyInstanceAttribute", || {
            self.0.clear_stop_protection(id)
        })
        .await
    }

    async fn clear_termination_protection(&self, id: &InstanceId) -> Result<(), AwsError> {
        paced("ModifyInstanceAttribute", || {
            self.0.clear_termination_protection(id)
        })
        .await
    }

    async fn delete_tag(&self, id: &InstanceId, key: &str, value: &str) -> Result<(), AwsError> {
        paced("DeleteTags", || self.0.delete_tag(id, key, value)).await
    }

    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        paced("DescribeInstances", || self.0.active_instances()).await
    }

    async fn describe_many(&self, ids: &[InstanceId]) -> Result<Vec<InstanceFacts>, AwsError> {
        paced("DescribeInstances", || self.0.describe_many(ids)).await
    }

    async fn stop_many(&self, ids: &[InstanceId]) -> Vec<(InstanceId, Result<(), StopError>)> {
        let mut answers = Vec::with_capacity(ids.len());
        let mut ask: Vec<InstanceId> = ids.to_vec();
        let mut pauses = pauses(first_pause("StopInstances"));
        loop {
            let mut throttled = Vec::new();
            for (id, answer) in self.0.stop_many(&ask).await {
                match answer {
                    Err(StopError::Failed(e)) if e.throttled => throttled.push((id, e)),
                    other => answers.push((id, other)),
                }
            }
            if throttled.is_empty() {
                return answers;
            }
            match pauses.next() {
                Some(pause) => {
                    tokio::time::sleep(pause).await;
                    ask = throttled.into_iter().map(|(id, _)| id).collect();
                }
                None => {
                    warn!(
                        operation = "StopInstances",
                        "still throttled after the pacing budget"
                    );
                    answers.extend(
                        throttled
                            .into_iter()
                            .map(|(id, e)| (id, Err(StopError::Failed(e)))),
                    );
                    return answers;
                }
            }
        }
    }

    async fn delete_tag_many(
        &self,
        ids: &[InstanceId],
        key: &str,
        value: &str,
    ) -> Result<(), AwsError> {
        paced("DeleteTags", || self.0.delete_tag_many(ids, key, value)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_start_at_the_refill_of_one_request_double_and_stay_within_the_budget() {
        let p: Vec<Duration> = pauses(first_pause("StopInstances")).collect();
        assert_eq!(p[0], Duration::from_millis(200));
        assert_eq!(p[1], Duration::from_millis(400));
        assert!(p.iter().all(|d| *d <= MAX_PAUSE));
        assert!(p.iter().sum::<Duration>() <= BUDGET);
        // The budget is nearly used: another pause would pass it.
        assert!(p.iter().sum::<Duration>() + MAX_PAUSE > BUDGET);
        assert_eq!(
            pauses(first_pause("DescribeInstances")).next(),
            Some(Duration::from_millis(50))
        );
    }
}
