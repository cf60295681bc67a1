//! EC2's throttling: a token bucket per API, at the published default sizes and refill rates.
//!
//! Source: "Request throttling for the Amazon EC2 API", Amazon EC2 Developer Guide
//! (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>), the tables
//! "Request token bucket sizes and refill rates" and "Resource token bucket sizes and refill
//! rates":
//!
//! | bucket | category on that page | maximum | refill / s |
//! | --- | --- | --- | --- |
//! | DescribeInstances, filtered or paginated | Non-mutating actions | 100 | 20 |
//! | DescribeInstances, unfiltered and unpaginated | Unfiltered and unpaginated non-mutating actions | 50 | 10 |
//! | StopInstances (requests) | Mutating actions | 50 | 5 |
//! | StopInstances (resources: one per instance named) | Resource token bucket | 1,000 | 20 |
//! | ModifyInstanceAttribute | Mutating actions | 50 | 5 |
//! | DeleteTags | Uncategorized actions | 100 | 10 |
//! | TerminateInstances (requests) | Uncategorized actions | 100 | 5 |
//! | TerminateInstances (resources) | Resource token bucket | 1,000 | 20 |
//!
//! The page says limits apply "to individual API actions, not API action categories", so each
//! API has its own bucket; and "each request that you make removes one token from the API's
//! bucket", whatever its outcome: a request EC2 refuses (`IncorrectInstanceState`, an unknown
//! id, a dry run) spends its request token like any other. A throttled request
//! (`RequestLimitExceeded`) spends nothing. Resource buckets "deplete based on the number of
//! resources that are impacted by the request": a call naming more instances than the resource
//! bucket holds is throttled whole, and (our reading) a call EC2 refuses impacts no instance, so
//! it gets its resource tokens back.
//!
//! The page adds tokens "every second"; the model refills continuously (a fraction of a token
//! every moment), which is the same rate without the once-a-second steps. Every bucket is full
//! when a scenario begins.

use serde::Serialize;
use tokio::time::Instant;

/// A bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Bucket maximum capacity (tokens).
    pub capacity: f64,
    /// Bucket refill rate (tokens a second).
    pub refill: f64,
}

/// The buckets the guard's calls draw on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Key {
    /// DescribeInstances with a filter or pagination (`MaxResults`, `NextToken`).
    DescribeInstances,
    /// DescribeInstances with neither (e.g. only `InstanceId.N`): the smaller bucket.
    DescribeInstancesUnfiltered,
    /// StopInstances requests.
    StopInstances,
    /// StopInstances resources (instances).
    StopInstancesResources,
    /// ModifyInstanceAttribute requests.
    ModifyInstanceAttribute,
    /// DeleteTags requests.
    DeleteTags,
    /// TerminateInstances requests.
    TerminateInstances,
    /// TerminateInstances resources (instances).
    TerminateInstancesResources,
}

impl Key {
    /// Every bucket.
    pub const ALL: [Key; 8] = [
        Key::DescribeInstances,
        Key::DescribeInstancesUnfiltered,
        Key::StopInstances,
        Key::StopInstancesResources,
        Key::ModifyInstanceAttribute,
        Key::DeleteTags,
        Key::TerminateInstances,
        Key::TerminateInstancesResources,
    ];

    /// The published default (see the module's doc).
    pub fn rate(self) -> Rate {
        let (capacity, refill) = match self {
            Key::DescribeInstances => (100.0, 20.0),
            Key::DescribeInstancesUnfiltered => (50.0, 10.0),
            Key::StopInstances | Key::ModifyInstanceAttribute => (50.0, 5.0),
            Key::StopInstancesResources | Key::TerminateInstancesResources => (1000.0, 20.0),
            Key::DeleteTags => (100.0, 10.0),
            Key::TerminateInstances => (100.0, 5.0),
        };
        Rate { capacity, refill }
    }
}

/// One token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate.capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.refill).min(self.rate.capacity);
        self.at = now;
    }

    /// Whether `n` tokens are there now.
    pub fn has(&mut self, now: Instant, n: f64) -> bool {
        self.refill(now);
        self.tokens >= n
    }

    /// Takes `n` tokens (call [`Bucket::has`] first).
    pub fn take(&mut self, n: f64) {
        self.tokens -= n;
    }

    /// Gives `n` tokens back (a refused call's resource tokens).
    pub fn give(&mut self, n: f64) {
        self.tokens = (self.tokens + n).min(self.rate.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_empties_and_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(Key::StopInstances.rate(), t0);
        for _ in 0..50 {
            assert!(b.has(t0, 1.0));
            b.take(1.0);
        }
        assert!(!b.has(t0, 1.0), "50 requests empty it");
        assert!(!b.has(t0 + Duration::from_millis(150), 1.0));
        assert!(b.has(t0 + Duration::from_millis(200), 1.0), "5 a second");
        assert!(b.has(t0 + Duration::from_secs(3600), 50.0));
        assert!(
            !b.has(t0 + Duration::from_secs(3600), 50.5),
            "never above its size"
        );
    }
}
