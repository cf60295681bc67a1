//! Start cycles and verdicts: what the guard decides, once per start.
//!
//! A **start cycle** is one (instance id, LaunchTime) pair; LaunchTime changes on every start.
//! The guard records exactly one [`VerdictRecord`] per cycle with a create-once write, and every
//! later invocation for the same cycle enforces that record instead of deciding anew.

use std::fmt;

use crate::ids::{InstanceId, Owner, ShortId};
use crate::org::Place;
use crate::time::UnixTime;

/// One start of one instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cycle {
    /// The instance.
    pub instance: InstanceId,
    /// Its LaunchTime for this start.
    pub launch_time: UnixTime,
}

impl Cycle {
    /// The cycle's id, as written into a consumed password's `consumed_by`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.instance, self.launch_time.0)
    }

    /// What a password burned by this cycle says in its `consumed_by` (it was presented here,
    /// but was issued for another instance).
    pub fn burn_mark(&self) -> String {
        format!("burned:{}", self.id())
    }

    /// The table key of the cycle's verdict.
    pub fn verdict_key(&self) -> String {
        format!("{}{}", crate::table::VERDICT_PREFIX, self.id())
    }
}

/// Why a start was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No `Auth` tag, or an empty one.
    Missing,
    /// The tag is not a password ec2pass issued (or it was revoked).
    Unknown,
    /// The password expired before the start.
    Expired,
    /// The password was already used by another start.
    Reused,
    /// The password was issued for another instance (and is burned: it leaked).
    WrongInstance,
}

impl DenyReason {
    /// The reason as written in the table and in alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Missing => "missing",
            DenyReason::Unknown => "unknown",
            DenyReason::Expired => "expired",
            DenyReason::Reused => "reused",
            DenyReason::WrongInstance => "wrong-instance",
        }
    }

    /// Reads a reason back.
    pub fn parse(s: &str) -> Option<Self> {
        [
            DenyReason::Missing,
            DenyReason::Unknown,
            DenyReason::Expired,
            DenyReason::Reused,
            DenyReason::WrongInstance,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// What the guard decided for a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A valid password for this instance was presented: the start stands.
    Allow,
    /// The start was not authorized: the instance is stopped.
    Deny(DenyReason),
    /// The instance is not guarded (configuration or Auto Scaling).
    Exempt,
}

impl Verdict {
    /// `allow`, `deny` or `exempt`.
    pub fn kind(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny(_) => "deny",
            Verdict::Exempt => "exempt",
        }
    }

    /// The deny reason, if any.
    pub fn reason(self) -> Option<DenyReason> {
        match self {
            Verdict::Deny(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Deny(r) => write!(f, "deny ({})", r.as_str()),
            v => f.write_str(v.kind()),
        }
    }
}

/// A recorded verdict, kept for audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictRecord {
    /// The cycle it is for.
    pub cycle: Cycle,
    /// The decision.
    pub verdict: Verdict,
    /// The password's short id, when one was involved and known.
    pub short_id: Option<ShortId>,
    /// Who was issued that password, when known.
    pub issuer: Option<Owner>,
    /// The table key of the password involved, when a password was presented.
    pub password_key: Option<String>,
    /// When it was decided.
    pub decided_at: UnixTime,
    /// The EventBridge event (or sweep run) that decided it.
    pub event_id: String,
    /// Where the start happened, when the event said (the sweep announces an owed alert
    /// there); `None` in records written before hubs.
    pub place: Option<Place>,
    /// Until when the record is kept (DynamoDB TTL).
    pub retain_until: UnixTime,
    /// The verdict's alert while it is owed (not yet published); `None` when no alert is owed.
    pub alert: Option<AlertClaim>,
}

/// How long an invocation may hold a verdict's alert before anyone else may take it over. Longer
/// than the guard's Lambda timeout (30 s), so a live owner is never overtaken; short enough that
/// a retry or the next sweep announces the verdict of an owner that died.
pub const ALERT_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// An owed alert: who is publishing it, and until when their claim holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertClaim {
    /// The invocation (Lambda request id) publishing it; `None` once given back.
    pub owner: Option<String>,
    /// When the owner's lease lapses (epoch seconds).
    pub lease_until: UnixTime,
}

impl AlertClaim {
    /// A fresh claim by `owner`, from `now`.
    pub fn by(owner: &str, now: UnixTime) -> Self {
        Self {
            owner: Some(owner.to_owned()),
            lease_until: now.plus(ALERT_LEASE),
        }
    }

    /// Whether `me` may publish the alert at `now`: nobody holds it, or `me` does (a Lambda
    /// retry reuses the request id, and runs only after the earlier attempt ended), or the
    /// holder's lease has lapsed (it died between recording and publishing).
    pub fn claimable_by(&self, me: &str, now: UnixTime) -> bool {
        match &self.owner {
            None => true,
            Some(owner) => owner == me || self.lease_until <= now,
        }
    }
}

impl VerdictRecord {
    /// Whether the verdict's alert is owed and `me` may publish it at `now`.
    pub fn alert_claimable_by(&self, me: &str, now: UnixTime) -> bool {
        self.alert.as_ref().is_some_and(|c| c.claimable_by(me, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_is_claimable_when_free_ours_or_its_lease_lapsed() {
        let now = UnixTime(1_000);
        let held = AlertClaim::by("req-1", now);
        assert!(held.claimable_by("req-1", now), "a retry of the owner");
        assert!(!held.claimable_by("req-2", now), "a live owner elsewhere");
        assert!(!held.claimable_by("req-2", UnixTime(now.plus(ALERT_LEASE).0 - 1)));
        assert!(held.claimable_by("req-2", now.plus(ALERT_LEASE)), "lapsed");
        let given_back = AlertClaim {
            owner: None,
            ..held
        };
        assert!(given_back.claimable_by("req-2", now));
    }
}
