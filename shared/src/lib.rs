//! The core that the issuer and the guard share.
//!
//! Nothing in here talks to Slack or decides a verdict; it holds the vocabulary both functions
//! speak and the one place that touches the password table:
//!
//! - [`ids`]: validated identifiers (EC2 instance ids, password short ids, Slack owners).
//! - [`time`]: seconds since the epoch and a [`time::Clock`] that tests can fix.
//! - [`password`]: minting a one-time password from the OS CSPRNG, and reading one back from a tag.
//! - [`digest`]: SHA-256 digests of passwords, their table key, and constant-time comparison.
//! - [`store`]: the password table behind small traits, one per capability, with a DynamoDB
//!   implementation ([`store::dynamo`]) and an in-memory one for tests ([`store::memory`]).
//! - [`config`]: configuration read from the environment once, at cold start, and validated.
//! - [`table`]: the attribute names and key layout of the table, in one place.
//! - [`verdict`]: start cycles and the verdict the guard records for each.
//! - [`alert`]: the alert model published on SNS.
//! - [`caller`]: who started an instance, as CloudTrail recorded the call.
//! - [`org`]: the Organization a hub serves: member accounts, their aliases, guarded regions.
//! - [`reply`]: which chat reply URLs ec2pass may store and post to.

pub mod alert;
pub mod caller;
pub mod config;
pub mod digest;
pub mod ids;
pub mod org;
pub mod password;
pub mod reply;
pub mod store;
pub mod table;
pub mod time;
pub mod verdict;
