//! The password table, behind one small trait per capability.
//!
//! Handlers take only the trait they use: the issuer's mint path needs [`MintStore`], its `list`
//! and `revoke` commands need [`OutstandingStore`] and [`TriggerStore`]; the guard needs
//! [`ConsumeStore`], [`VerdictStore`] and [`AlertStore`]. [`dynamo::DynamoStore`]
//! implements them all against DynamoDB; [`memory::MemoryStore`] implements them in memory with
//! the same semantics, for unit tests.

pub mod dynamo;
pub mod memory;

use std::collections::HashMap;
use std::future::Future;

use crate::caller::Caller;
use crate::digest::Digest;
use crate::ids::{InstanceId, Owner, ShortId};
use crate::time::UnixTime;
use crate::verdict::{Cycle, VerdictRecord};

/// A password as stored: everything but the plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordRecord {
    /// Public short id.
    pub short_id: ShortId,
    /// SHA-256 of the canonical password.
    pub digest: Digest,
    /// Who asked for it.
    pub owner: Owner,
    /// Slack channel the command was typed in.
    pub channel_id: String,
    /// The only instance that may use it, or `None` for an unscoped password.
    pub scope: Option<InstanceId>,
    /// When it was issued.
    pub issued_at: UnixTime,
    /// When it stops working.
    pub expires_at: UnixTime,
    /// The start cycle that consumed it, once the guard has.
    pub consumed_by: Option<String>,
}

impl PasswordRecord {
    /// Whether the password has expired at `now` (expiry is exclusive: at `expires_at` it is dead).
    pub fn is_expired(&self, now: UnixTime) -> bool {
        now >= self.expires_at
    }

    /// Whether the password can still be used at `now`: not expired and not consumed.
    pub fn is_outstanding(&self, now: UnixTime) -> bool {
        !self.is_expired(now) && self.consumed_by.is_none()
    }
}

/// Where the requester of a password hears what became of it (SPEC §10): the chat's reply URL
/// (Slack's `response_url`), a capability kept only with its password, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// The password's short id.
    pub short_id: ShortId,
    /// The password's digest (its state is read at expiry).
    pub digest: Digest,
    /// Who asked.
    pub owner: Owner,
    /// The instance it is for, if any.
    pub scope: Option<InstanceId>,
    /// When the password expires.
    pub expires_at: UnixTime,
    /// The reply URL.
    pub url: String,
    /// Until when it may be posted to (Slack: 30 minutes after the command).
    pub until: UnixTime,
    /// Follow-ups it has carried.
    pub posts: u32,
    /// Whether the outcome is still untold.
    pub due: bool,
    /// The chat the URL belongs to (how the follow-up is written).
    pub front: crate::reply::Front,
}

impl std::fmt::Debug for Reply {
    /// The URL is a capability: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("short_id", &self.short_id)
            .field("owner", &self.owner)
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .field("url", &"<redacted>")
            .field("until", &self.until)
            .field("posts", &self.posts)
            .field("due", &self.due)
            .field("front", &self.front)
            .finish_non_exhaustive()
    }
}

/// Most follow-ups one reply URL carries (Slack: "up to 5 times within 30 minutes").
pub const REPLY_POSTS: u32 = 5;

/// How long a reply URL may be posted to after the command (Slack: 30 minutes).
pub const REPLY_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The follow-ups' store: the reply of each password.
pub trait ReplyStore: Send + Sync {
    /// The reply of the password with this short id, if it has one.
    fn reply(
        &self,
        short_id: &ShortId,
    ) -> impl Future<Output = Result<Option<Reply>, StoreError>> + Send;

    /// Takes one of the reply URL's posts at `now` (fewer than [`REPLY_POSTS`] taken, `now`
    /// before its `until`, and the outcome untold when `settles`), and with `settles` marks the
    /// outcome told, in one conditional write. `Ok(false)`: no post to take.
    fn take_post(
        &self,
        short_id: &ShortId,
        now: UnixTime,
        settles: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives back a post taken with [`ReplyStore::take_post`] whose post failed (and, with
    /// `settled`, marks the outcome untold again).
    fn release_post(
        &self,
        short_id: &ShortId,
        settled: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks the outcome told without a post (the URL can no longer carry one).
    fn settle(&self, short_id: &ShortId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes on forwarding one alert to the channel (`key`: its event and instance), kept until
    /// `forget_after`: `Ok(false)` when it is forwarded already (a redelivered alert is forwarded
    /// once).
    fn claim_forward(
        &self,
        key: &str,
        forget_after: UnixTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives a forward back after the channel failed, so the redelivery forwards it.
    fn release_forward(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replies whose outcome is untold, soonest expiry first, at most `limit` (`now` for a store
    /// that has to know it).
    fn due_replies(
        &self,
        now: UnixTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Reply>, StoreError>> + Send;
}

/// What `list` shows of a password: never the password or its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// Public short id.
    pub short_id: ShortId,
    /// The instance it is for, if any.
    pub scope: Option<InstanceId>,
    /// When it expires.
    pub expires_at: UnixTime,
}

impl From<&PasswordRecord> for Outstanding {
    fn from(r: &PasswordRecord) -> Self {
        Self {
            short_id: r.short_id.clone(),
            scope: r.scope.clone(),
            expires_at: r.expires_at,
        }
    }
}

/// A claim on a Slack `trigger_id`: the first request with it wins, later ones are replays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerClaim {
    /// Slack's `trigger_id` of the request.
    pub trigger_id: String,
    /// When the record may be cleaned up (after Slack's signature window has passed).
    pub forget_after: UnixTime,
}

/// One requester's rate-limit window: at most `limit` mints per window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateWindow {
    /// Whose window.
    pub owner: Owner,
    /// Window number (e.g. hours since the epoch).
    pub window: i64,
    /// Mints allowed in the window.
    pub limit: u32,
    /// When the counter may be cleaned up.
    pub forget_after: UnixTime,
}

/// Everything a mint writes, all or nothing.
#[derive(Clone, Debug)]
pub struct Mint {
    /// The request's trigger claim.
    pub trigger: TriggerClaim,
    /// Whether the caller has claimed [`Mint::trigger`] already, with
    /// [`TriggerStore::claim_trigger`] (the issuer does so concurrently with the instance lookup,
    /// so a request that fails there cannot be replayed). When it has, the mint does not claim
    /// it again; otherwise the mint claims it in the same all-or-nothing write.
    pub trigger_claimed: bool,
    /// The requester's rate window.
    pub rate: RateWindow,
    /// The password to store.
    pub record: PasswordRecord,
    /// Where its requester hears back, if the chat gave a reply URL.
    pub reply: Option<Reply>,
}

/// How a mint ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MintOutcome {
    /// The password is stored; its plaintext may now be shown.
    Minted,
    /// The trigger id was already used: a replayed request. Nothing was written.
    Replayed,
    /// The requester reached the window's limit. Nothing was stored.
    RateLimited,
}

/// A failure to reach or use the table (after the SDK's own retries).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The call to DynamoDB failed.
    #[error("DynamoDB {operation} failed: {message}")]
    Unavailable {
        /// Which operation.
        operation: &'static str,
        /// The SDK's error, rendered (contains no secrets: only digests' keys reach the SDK).
        message: String,
    },
    /// An item in the table does not have the shape this code writes.
    #[error("malformed item {key}: {problem}")]
    Malformed {
        /// The item's key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// Stores a new password, atomically with its trigger claim (unless already claimed), its rate
/// counter and its entry in the owner's ledger.
pub trait MintStore: Send + Sync {
    /// Writes the trigger claim (unless [`Mint::trigger_claimed`]), bumps the rate counter,
    /// stores the password and adds it to the owner's ledger, in one all-or-nothing step.
    fn mint(&self, mint: &Mint) -> impl Future<Output = Result<MintOutcome, StoreError>> + Send;
}

/// Refuses replayed Slack requests.
pub trait TriggerStore: Send + Sync {
    /// Records the trigger id; `Ok(false)` when it was already recorded (a replay).
    fn claim_trigger(
        &self,
        claim: &TriggerClaim,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// A requester's outstanding passwords: `list` and `revoke`. Reads are strongly consistent: a
/// password minted a moment before is listed, and revoked by `revoke all`.
pub trait OutstandingStore: Send + Sync {
    /// The owner's passwords that are neither expired nor consumed at `now`, soonest expiry first.
    fn outstanding(
        &self,
        owner: &Owner,
        now: UnixTime,
    ) -> impl Future<Output = Result<Vec<Outstanding>, StoreError>> + Send;

    /// Withdraws one of the owner's outstanding passwords; `Ok(false)` when there is none with
    /// that id (or it is not theirs, or already used).
    fn revoke(
        &self,
        owner: &Owner,
        id: &ShortId,
        now: UnixTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Withdraws all of the owner's outstanding passwords; returns how many.
    fn revoke_all(
        &self,
        owner: &Owner,
        now: UnixTime,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// Reads a password by digest (the guard's failure path and the tests use it).
pub trait PasswordLookup: Send + Sync {
    /// The stored record for this digest, whatever its state; `None` when unknown.
    fn find(
        &self,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<PasswordRecord>, StoreError>> + Send;
}

/// A consumption attempt: the password with `digest`, for `cycle`, recording `allow` with it.
#[derive(Clone, Debug)]
pub struct Consume {
    /// Digest of the presented password.
    pub digest: Digest,
    /// The start cycle presenting it.
    pub cycle: Cycle,
    /// Now, for the expiry check.
    pub now: UnixTime,
    /// The allow verdict to record if the password is good.
    pub allow: VerdictRecord,
}

/// How a consumption attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// The password is consumed by this cycle and the allow verdict is recorded (by us).
    Allowed,
    /// A verdict for this cycle already existed: enforce it.
    Decided(VerdictRecord),
    /// The password cannot serve this cycle; the item as it was (`None`: no such password).
    Refused(Option<PasswordRecord>),
}

/// Whether a create-once verdict write was ours.
// `Ours` is a bare marker and `Theirs` is read at once: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// We recorded it.
    Ours,
    /// Another invocation recorded this one first: enforce theirs.
    Theirs(VerdictRecord),
}

/// The guard's one-time consumption of passwords.
pub trait ConsumeStore: Send + Sync {
    /// In one conditional transaction: mark the password consumed by the cycle (allowed when it
    /// is unconsumed, unexpired and in scope, or already consumed by this very cycle) and create
    /// the allow verdict.
    fn consume(
        &self,
        consume: &Consume,
    ) -> impl Future<Output = Result<ConsumeOutcome, StoreError>> + Send;

    /// Burns a password so it can never be used (it leaked onto another instance).
    fn burn(
        &self,
        digest: &Digest,
        cycle: &Cycle,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The guard's verdicts, one per start cycle.
pub trait VerdictStore: Send + Sync {
    /// Creates the verdict unless the cycle has one.
    fn record(
        &self,
        verdict: &VerdictRecord,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send;

    /// The cycle's verdict, if any (strongly consistent).
    fn verdict(
        &self,
        cycle: &Cycle,
    ) -> impl Future<Output = Result<Option<VerdictRecord>, StoreError>> + Send;

    /// The verdicts of many cycles at once, by [`Cycle::verdict_key`] (for the sweep: one
    /// request per 100 cycles instead of one per cycle).
    fn verdicts(
        &self,
        cycles: &[Cycle],
    ) -> impl Future<Output = Result<HashMap<String, VerdictRecord>, StoreError>> + Send;

    /// Adds what the verdict shows of its password (short id and issuer) after the fact: the
    /// allow is recorded in the consuming transaction, before the password item is read.
    fn annotate(
        &self,
        cycle: &Cycle,
        short_id: &ShortId,
        issuer: &Owner,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Withdraws an `exempt` verdict whose reason went away, so the cycle can be decided anew;
    /// `Ok(false)` when the cycle's verdict is not (or no longer) `exempt`.
    fn withdraw_exemption(
        &self,
        cycle: &Cycle,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The guard's activation time: starts at or before it are never touched. In DynamoDB, the
    /// table's creation time: the stack creates the table when it deploys the guard.
    fn activation(&self) -> impl Future<Output = Result<UnixTime, StoreError>> + Send;
}

/// A cycle's verdict as the attribution path found it, with the caller recorded on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributed {
    /// The verdict (its `alert` says whether its alert is still owed).
    pub verdict: VerdictRecord,
    /// Until when telling the caller is taken: [`TOLD`] once told (in the deny alert, or a
    /// confirmed attribution alert); an earlier time while an attribution alert is being sent
    /// (free again once it passes: its sender died); `None` when untold.
    pub told: Option<UnixTime>,
}

/// [`Attributed::told`] once the caller is told for good.
pub const TOLD: UnixTime = UnixTime(i64::MAX);

/// How telling a verdict's caller is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TellClaim {
    /// In the verdict's own alert (the guard): for good; the alert's own lease carries a publish
    /// that fails to a retry, which reads the caller again.
    InAlert,
    /// In an attribution alert, once the verdict's alert is out: held until `until`, then free
    /// again unless confirmed ([`CallerStore::confirm_tell`]), so a sender that dies does not
    /// leave it untold.
    After {
        /// Now.
        now: UnixTime,
        /// Until when the claim holds.
        until: UnixTime,
    },
}

/// What the guard's deny path reads of who started an instance (SPEC §11): the latest
/// CloudTrail call that started it, and telling its caller at most once per deny.
pub trait CallerLookup: Send + Sync {
    /// The latest call that started `instance`, and when it was made (strongly consistent).
    fn call_for(
        &self,
        instance: &InstanceId,
    ) -> impl Future<Output = Result<Option<(Caller, UnixTime)>, StoreError>> + Send;

    /// Takes telling the cycle's caller, recording it with the verdict. `Ok(false)`: it is told
    /// (or being told), or, for an attribution alert, the verdict's alert is still owed.
    fn claim_tell(
        &self,
        cycle: &Cycle,
        caller: &Caller,
        claim: TellClaim,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Who started each instance, as the attribution path keeps it: the latest call by instance,
/// for a verdict not decided yet, and the caller recorded with each cycle's verdict.
pub trait CallerStore: CallerLookup {
    /// Keeps `caller` (its call made `at`) as the latest call that started `instance`; an older
    /// call never replaces a newer one.
    fn put_call(
        &self,
        instance: &InstanceId,
        caller: &Caller,
        at: UnixTime,
        retain_until: UnixTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records `caller` with the cycle's verdict (a caller recorded first stays), and returns the
    /// verdict and whether its caller was told; `None` when the cycle has no verdict yet.
    fn attribute(
        &self,
        cycle: &Cycle,
        caller: &Caller,
    ) -> impl Future<Output = Result<Option<Attributed>, StoreError>> + Send;

    /// Marks the caller told, once its attribution alert is published.
    fn confirm_tell(&self, cycle: &Cycle) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives telling back after an attribution alert that could not be published.
    fn release_tell(&self, cycle: &Cycle) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// At most one response per principal and burst (SPEC §11): a claim per principal, recording
/// when it was last acted on. A call made after that action was not stopped by it (the key was
/// made active again, or the role assumed anew after its sessions were revoked): it is acted on
/// again. Calls made before it, however many and however late they arrive, are covered.
pub trait ResponseStore: Send + Sync {
    /// Takes acting on `principal` at `now` for a call made at `call_at`: nobody acted on it
    /// yet, or only before the call's second, or a claim's holder died (its `pending` lapsed). Held as
    /// pending until `pending_until` unless confirmed.
    fn claim_response(
        &self,
        principal: &str,
        call_at: UnixTime,
        now: UnixTime,
        pending_until: UnixTime,
        retain_until: UnixTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Confirms the claim taken at `at`: the action is done and alerted.
    fn confirm_response(
        &self,
        principal: &str,
        at: UnixTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives the claim taken at `at` back (an action that failed for now, or whose alert could
    /// not be published), so the call's next delivery acts again.
    fn release_response(
        &self,
        principal: &str,
        at: UnixTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How many of an instance's verdicts `status` shows, latest first.
pub const STATUS_VERDICTS: usize = 10;

/// An instance's latest verdicts, for `status i-…`. Read from an index, so only eventually
/// consistent: a verdict recorded a second ago may not be shown yet (the answer says "latest").
pub trait VerdictHistory: Send + Sync {
    /// The instance's verdicts, latest decision first, at most `limit`.
    fn recent_verdicts(
        &self,
        instance: &InstanceId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<VerdictRecord>, StoreError>> + Send;
}

/// Who announces a verdict. Every verdict that alerts is recorded with its alert owed and
/// claimed by the recording invocation for [`crate::verdict::ALERT_LEASE`]; publishing marks it
/// sent. A retry, a later event or the sweep takes an owed alert over once it is given back, once
/// the owner's lease lapses, or when it is the owner's own retry.
pub trait AlertStore: Send + Sync {
    /// Takes on publishing the verdict's alert; `Ok(false)` when it is not owed or another live
    /// invocation holds it.
    fn claim_alert(
        &self,
        cycle: &Cycle,
        owner: &str,
        now: UnixTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the alert back after a failed publish or stop, so a retry publishes it.
    fn release_alert(
        &self,
        cycle: &Cycle,
        owner: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks the alert published: nobody announces it again.
    fn alert_sent(
        &self,
        cycle: &Cycle,
        now: UnixTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Verdicts whose alert is owed and free to take at `now` (given back, or the lease
    /// lapsed), at most `limit`: the sweep announces them even when their instance is stopped.
    fn due_alerts(
        &self,
        now: UnixTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<VerdictRecord>, StoreError>> + Send;
}
