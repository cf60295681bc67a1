//! The layout of the one DynamoDB table, in one place.
//!
//! The table's key schema, index and TTL setting are defined once, in `infra/template.yaml`;
//! the local setup (`dev/aws_local.py`) creates the emulator's table from that same definition.
//! This module names the attributes the code reads and writes.
//!
//! | item | `pk` | other attributes |
//! | --- | --- | --- |
//! | password | `pw#<first 16 digest bytes, hex>` | `digest` (B, full), `short_id`, `owner` (`team#user`), `team_id`, `user_id`, `channel_id`, `scope` (absent when unscoped), `issued_at`, `expires_at`, `ttl`, later `consumed_by` |
//! | Slack trigger | `trigger#<trigger_id>` | `ttl` |
//! | rate counter | `rate#<team>#<user>#<hour>` | `n`, `ttl` |
//! | verdict | `verdict#<instance>@<launch time>` | `verdict`, `reason`, `instance_id`, `launch_time`, `short_id`, `team_id`, `user_id`, `password_key`, `decided_at`, `event_id`, `alert_owner`, `ttl` |
//! | activation | `meta#activation` | `at` |
//!
//! Passwords are indexed by owner in the sparse global secondary index [`OWNER_INDEX`]
//! (hash `owner`, range `expires_at`), which `list` and `revoke` query.

/// Partition key of every item.
pub const PK: &str = "pk";
/// DynamoDB TTL attribute (epoch seconds). Only clean-up: expiry is checked on every read.
pub const TTL: &str = "ttl";
/// Item kind, for people reading the table (`password`, `trigger`, `rate`).
pub const KIND: &str = "kind";

/// Key prefix of password items.
pub const PASSWORD_PREFIX: &str = "pw#";
/// Key prefix of Slack trigger-id records (replay refusal).
pub const TRIGGER_PREFIX: &str = "trigger#";
/// Key prefix of per-user rate counters.
pub const RATE_PREFIX: &str = "rate#";
/// Key prefix of verdicts (one per start cycle).
pub const VERDICT_PREFIX: &str = "verdict#";
/// Key of the guard's activation marker (for the sweep).
pub const ACTIVATION_KEY: &str = "meta#activation";

/// Verdict: `allow`, `deny` or `exempt`.
pub const VERDICT: &str = "verdict";
/// Deny reason.
pub const REASON: &str = "reason";
/// Instance id of a verdict.
pub const INSTANCE_ID: &str = "instance_id";
/// LaunchTime of a verdict's cycle (epoch seconds).
pub const LAUNCH_TIME: &str = "launch_time";
/// Key of the password a verdict involved.
pub const PASSWORD_KEY: &str = "password_key";
/// When a verdict was decided (epoch seconds).
pub const DECIDED_AT: &str = "decided_at";
/// EventBridge event id that decided a verdict.
pub const EVENT_ID: &str = "event_id";
/// The invocation publishing a verdict's alert.
pub const ALERT_OWNER: &str = "alert_owner";
/// When a password was consumed (epoch seconds).
pub const CONSUMED_AT: &str = "consumed_at";
/// Activation time of the guard (epoch seconds).
pub const AT: &str = "at";

/// Full SHA-256 digest of the password (binary).
pub const DIGEST: &str = "digest";
/// Public short id of the password.
pub const SHORT_ID: &str = "short_id";
/// `team#user` of the requester; hash key of [`OWNER_INDEX`].
pub const OWNER: &str = "owner";
/// Slack workspace of the requester.
pub const TEAM_ID: &str = "team_id";
/// Slack user id of the requester.
pub const USER_ID: &str = "user_id";
/// Slack channel the command was typed in.
pub const CHANNEL_ID: &str = "channel_id";
/// Instance the password is for; absent for an unscoped password.
pub const SCOPE: &str = "scope";
/// When the password was issued (epoch seconds).
pub const ISSUED_AT: &str = "issued_at";
/// When the password stops working (epoch seconds); range key of [`OWNER_INDEX`].
pub const EXPIRES_AT: &str = "expires_at";
/// The start cycle that consumed the password (set by the guard).
pub const CONSUMED_BY: &str = "consumed_by";
/// Counter of a rate-limit window.
pub const COUNT: &str = "n";

/// Global secondary index of passwords by owner.
pub const OWNER_INDEX: &str = "by-owner";

/// How long after expiry DynamoDB may delete a password item. Kept a while so a late retry of
/// the guard still finds its own consumption, and so `reused` can be told from `unknown`.
pub const PASSWORD_TTL_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
