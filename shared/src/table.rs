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
//! | requester's ledger | `owner#<team>#<user>` | `passwords` (string set of password keys), `ttl` |
//! | reply | `reply#<short id>` | `url` (the chat's reply URL: a capability), `chat` (absent for Slack), `reply_until`, `posts`, `digest`, `owner`, `team_id`, `user_id`, `scope`, `expires_at`, `ttl`; while the password's outcome is untold `reply_due`, `reply_due_at` |
//! | channel forward | `channel#<event id>#<instance>` | `forwarded`, `ttl` |
//! | verdict | `verdict#<instance>@<launch time>` | `verdict`, `reason`, `instance_id`, `launch_time`, `short_id`, `team_id`, `user_id`, `password_key`, `decided_at`, `event_id`, `ttl`; while its alert is owed `alert_due`, `alert_owner`, `alert_lease_until`; once published `alert_sent_at`; once attributed `caller` (JSON), once the caller is told `caller_told` |
//! | call | `call#<instance>` | the latest CloudTrail call that started it: `caller` (JSON), `call_time`, `ttl` |
//! | response | `response#<principal>` | `acted_at` (the last action on the principal), while in hand `pending_until`, `ttl` |
//!
//! `list` and `revoke` find a requester's passwords through the requester's ledger, read with
//! strong consistency (the global secondary index [`OWNER_INDEX`] by `owner`/`expires_at` is no
//! longer read: it is only eventually consistent). Verdicts whose alert is owed are indexed in
//! the sparse [`ALERTS_DUE_INDEX`], which the sweep queries.
//!
//! The guard's activation time is the table's creation time (`DescribeTable`): the stack
//! creates the table when it deploys the guard.

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
/// Key prefix of reply items: where the requester of a password hears what became of it.
pub const REPLY_PREFIX: &str = "reply#";
/// The chat's reply URL of a reply item (Slack's `response_url`).
pub const REPLY_URL: &str = "url";
/// Until when (epoch seconds) the reply URL may be posted to.
pub const REPLY_UNTIL: &str = "reply_until";
/// The chat a reply URL belongs to (`mattermost`; absent: `slack`).
pub const REPLY_FRONT: &str = "chat";
/// How many follow-ups the reply URL has carried.
pub const REPLY_POSTS: &str = "posts";
/// Present (always [`REPLY_DUE_VALUE`]) while the password's outcome is untold: hash key of the
/// sparse index [`REPLIES_DUE_INDEX`].
pub const REPLY_DUE: &str = "reply_due";
/// The one value of [`REPLY_DUE`].
pub const REPLY_DUE_VALUE: &str = "due";
/// When the untold outcome is due at the latest (the password's expiry); range key of
/// [`REPLIES_DUE_INDEX`].
pub const REPLY_DUE_AT: &str = "reply_due_at";
/// Key prefix of forward records: an alert forwarded to the channel once (`channel#<event
/// id>#<instance>`, `forwarded`, `ttl`).
pub const FORWARD_PREFIX: &str = "channel#";
/// Whether a forward record's alert is forwarded (false once given back).
pub const FORWARDED: &str = "forwarded";
/// Key prefix of call items: the latest CloudTrail call that started an instance.
pub const CALL_PREFIX: &str = "call#";
/// The caller of a call (JSON of [`crate::caller::Caller`]), on call and verdict items.
pub const CALLER: &str = "caller";
/// When a call item's call was made (epoch seconds).
pub const CALL_TIME: &str = "call_time";
/// Until when telling a verdict's caller is taken (epoch seconds): the largest number once told,
/// in its alert or an attribution alert; earlier while an attribution alert is being sent.
pub const CALLER_TOLD: &str = "caller_told";
/// Key prefix of response claims: one action per principal per burst.
pub const RESPONSE_PREFIX: &str = "response#";
/// When the principal of a response claim was last acted on (epoch seconds).
pub const ACTED_AT: &str = "acted_at";
/// Until when a response claim's action is in hand (epoch seconds); absent once confirmed.
pub const PENDING_UNTIL: &str = "pending_until";
/// Key prefix of verdicts (one per start cycle).
pub const VERDICT_PREFIX: &str = "verdict#";
/// Key prefix of per-requester ledgers: the keys of the requester's passwords, read with strong
/// consistency by `list` and `revoke all` (a global secondary index is only eventually
/// consistent, and could miss a password minted a moment before).
pub const OWNER_PREFIX: &str = "owner#";
/// String set of password keys in an owner's ledger.
pub const PASSWORDS: &str = "passwords";

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
/// The account a verdict's start happened in (a hub's verdicts; absent before hubs).
pub const ACCOUNT: &str = "account";
/// The region a verdict's start happened in (with [`ACCOUNT`]).
pub const REGION: &str = "region";
/// The invocation publishing a verdict's alert.
pub const ALERT_OWNER: &str = "alert_owner";
/// Present (always [`ALERT_DUE_VALUE`]) while a verdict's alert is owed and not yet published:
/// hash key of the sparse index [`ALERTS_DUE_INDEX`], so the sweep finds owed alerts of
/// instances it no longer lists. Removed once the alert is published.
pub const ALERT_DUE: &str = "alert_due";
/// The one value of [`ALERT_DUE`].
pub const ALERT_DUE_VALUE: &str = "due";
/// Until when (epoch seconds) the alert's owner may publish before anyone else may take the
/// alert over; range key of [`ALERTS_DUE_INDEX`].
pub const ALERT_LEASE_UNTIL: &str = "alert_lease_until";
/// When the verdict's alert was published (epoch seconds).
pub const ALERT_SENT_AT: &str = "alert_sent_at";
/// When a password was consumed (epoch seconds).
pub const CONSUMED_AT: &str = "consumed_at";

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

/// Global secondary index of passwords by owner (no longer read by the code: `list` and
/// `revoke` read the owner's ledger, [`OWNER_PREFIX`]).
pub const OWNER_INDEX: &str = "by-owner";
/// Sparse global secondary index of verdicts whose alert is still owed (hash [`ALERT_DUE`],
/// range [`ALERT_LEASE_UNTIL`]).
pub const ALERTS_DUE_INDEX: &str = "alerts-due";

/// Global secondary index of verdicts by instance (hash [`INSTANCE_ID`], range [`DECIDED_AT`]):
/// `status i-…` reads an instance's latest verdicts there. Only verdict items carry
/// `instance_id`, so only they are in it.
pub const INSTANCE_INDEX: &str = "by-instance";

/// Sparse global secondary index of reply items whose password's outcome is untold (hash
/// [`REPLY_DUE`], range [`REPLY_DUE_AT`]); the follow-up function queries it for expiries.
pub const REPLIES_DUE_INDEX: &str = "replies-due";

/// How long after expiry DynamoDB may delete a password item. Kept a while so a late retry of
/// the guard still finds its own consumption, and so `reused` can be told from `unknown`.
pub const PASSWORD_TTL_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
