//! Planning a mint: the password, and everything the store writes with it. Pure apart from the
//! CSPRNG draw; the handler does the I/O.

use std::time::Duration;

use ec2pass_shared::ids::{InstanceId, Owner};
use ec2pass_shared::password::{Password, new_short_id};
use ec2pass_shared::reply::{Front, Origin, ReplyKey, allowed, seal};
use ec2pass_shared::store::{Mint, PasswordRecord, REPLY_FOR, RateWindow, Reply, TriggerClaim};
use ec2pass_shared::time::UnixTime;

use crate::request::SlashCommand;
use crate::verify::MAX_SKEW_SECS;

/// Length of a rate-limit window.
pub const RATE_WINDOW: Duration = Duration::from_secs(3600);

/// The requester of a slash command. A Mattermost team's id is written `mattermost:<id>`, so a
/// requester of one chat never shares a ledger, a rate counter or a password with one of the
/// other.
pub fn owner(cmd: &SlashCommand) -> Owner {
    Owner {
        team_id: in_front(cmd, &cmd.team_id),
        user_id: cmd.user_id.clone(),
    }
}

/// An id of `cmd`'s chat, told apart from the same text from the other chat.
fn in_front(cmd: &SlashCommand, id: &str) -> String {
    match cmd.front {
        Front::Slack => id.to_owned(),
        Front::Mattermost => format!("mattermost:{id}"),
    }
}

/// The claim on a request's trigger id, kept until its signature could no longer verify.
pub fn trigger_claim(cmd: &SlashCommand, now: UnixTime) -> TriggerClaim {
    TriggerClaim {
        trigger_id: in_front(cmd, &cmd.trigger_id),
        forget_after: now.plus(Duration::from_secs(2 * MAX_SKEW_SECS + 60)),
    }
}

/// The rate window `now` falls in (fixed hourly windows).
pub fn rate_window(owner: Owner, now: UnixTime, limit: u32) -> RateWindow {
    let len = RATE_WINDOW.as_secs().cast_signed();
    let window = now.0.div_euclid(len);
    RateWindow {
        owner,
        window,
        limit,
        forget_after: UnixTime((window + 2) * len),
    }
}

/// A fresh password and the all-or-nothing write that stores it (claiming the trigger in the
/// same write: a caller that has claimed it already sets [`Mint::trigger_claimed`]).
pub fn plan(
    cmd: &SlashCommand,
    scope: Option<InstanceId>,
    lifetime: Duration,
    now: UnixTime,
    rate_limit: u32,
) -> (Password, Mint) {
    let password = Password::generate();
    let record = PasswordRecord {
        short_id: new_short_id(),
        digest: password.digest(),
        owner: owner(cmd),
        channel_id: cmd.channel_id.clone(),
        scope,
        issued_at: now,
        expires_at: now.plus(lifetime),
        consumed_by: None,
    };
    let mint = Mint {
        trigger: trigger_claim(cmd, now),
        trigger_claimed: false,
        rate: rate_window(owner(cmd), now, rate_limit),
        record,
        reply: None,
    };
    (password, mint)
}

/// Where the requester hears what became of the password (SPEC §10): the command's reply URL,
/// when it points at one of `origins`, for [`REPLY_FOR`] after the command. `None`: no
/// follow-ups (no URL, or one that points elsewhere, which is never kept).
pub fn reply(
    cmd: &SlashCommand,
    record: &PasswordRecord,
    origins: &[Origin],
    key: Option<&ReplyKey>,
) -> Option<Reply> {
    let url = allowed(cmd.response_url.as_ref()?.expose(), origins)?;
    // Stored sealed: the table is readable by more principals than the two roles that need it.
    let url = seal(key?, url.as_str(), record.short_id.as_str())?;
    Some(Reply {
        short_id: record.short_id.clone(),
        digest: record.digest,
        owner: record.owner.clone(),
        scope: record.scope.clone(),
        expires_at: record.expires_at,
        url,
        until: record.issued_at.plus(REPLY_FOR),
        posts: 0,
        due: true,
        front: cmd.front,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> SlashCommand {
        SlashCommand::example()
    }

    #[test]
    fn the_plan_stores_only_the_digest_with_expiry_and_scope() {
        let scope = InstanceId::parse("i-0123abcd");
        let (password, mint) = plan(
            &cmd(),
            scope.clone(),
            Duration::from_secs(900),
            UnixTime(7_200),
            10,
        );
        assert!(mint.record.digest.ct_eq(&password.digest()));
        assert_eq!(mint.record.scope, scope);
        assert_eq!(mint.record.issued_at, UnixTime(7_200));
        assert_eq!(mint.record.expires_at, UnixTime(8_100));
        assert_eq!(mint.record.owner.key(), "T1#U1");
        assert_eq!(mint.trigger.trigger_id, "trig");
        assert_eq!(mint.trigger.forget_after, UnixTime(7_200 + 660));
        assert!(!format!("{mint:?}").contains(password.canonical()));
    }

    #[test]
    fn rate_windows_are_whole_hours() {
        let w = |t| rate_window(owner(&cmd()), UnixTime(t), 10).window;
        assert_eq!(w(0), 0);
        assert_eq!(w(3_599), 0);
        assert_eq!(w(3_600), 1);
        assert_eq!(
            rate_window(owner(&cmd()), UnixTime(3_600), 10).forget_after,
            UnixTime(10_800)
        );
    }
}
