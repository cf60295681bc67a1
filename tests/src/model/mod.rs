//! A throttle-faithful model of EC2 and of the guard's two ways of taking events, in virtual
//! time, for the burst figures (issue 11, SPEC §8): `tests/tests/burst.rs` (a bounded run in
//! `make test`) and the bench's "Bursts" table (`make bench`, docs/performance.md).
//!
//! - [`ec2`]: EC2 at the HTTP level. The real AWS SDK client talks to it, so the guard's
//!   production `Ec2Client` (filters, chunking, the StopInstances refusal handling), the SDK's
//!   standard retries and retry quota, and `Paced` all run as deployed. The fleet moves from
//!   `pending` to `running` after 5–20 s (drawn per instance from a seeded sequence).
//! - [`bucket`]: a token bucket per API at EC2's published default rates, shared by the guard
//!   and the attacker, with their source.
//! - [`aws`]: the rest of AWS: the real `MemoryStore` behind a DynamoDB latency, a counting SNS,
//!   a clock on tokio's virtual time.
//! - [`lambda`]: today's design (one asynchronous invocation per event, reserved concurrency
//!   20, Lambda's two retries, the failure queue) and the batched one (EventBridge → SQS → the
//!   event source mapping: 5 at once, batches of 100, a 1 s window, partial batch responses,
//!   the guard's rechecks, the dead-letter queue after 10 receives).
//! - [`scenario`]: the scenarios (1,000 launches; the same with the attacker; 50 legitimate
//!   among 1,000; a 10,000-instance sweep, all decided or with 1,000 lost events) and their
//!   figures.
//!
//! Everything runs on one thread under `tokio::time::pause`: virtual time moves only when every
//! task waits, so minutes of a burst take seconds, and latencies are explicit sleeps. What the
//! model assumes (latencies, delivery delays, the attacker's rates) is stated where it is
//! defined and in docs/performance.md, *Bursts*. The guard's code is the real thing:
//! `Guard::handle` and `Guard::handle_batch`, never re-implemented.

pub mod aws;
pub mod bucket;
pub mod ec2;
pub mod lambda;
pub mod scenario;

pub use scenario::{Design, Figures, Scenario, run};
