//! The pure decisions: is the instance guarded, what does its tag hold, and why did a password
//! not work. No I/O here; every outcome has a unit test.

use ec2pass_shared::config::{GuardConfig, GuardMode};
use ec2pass_shared::digest::Digest;
use ec2pass_shared::password::Password;
use ec2pass_shared::store::PasswordRecord;
use ec2pass_shared::time::UnixTime;
use ec2pass_shared::verdict::{Cycle, DenyReason};

use crate::ec2::InstanceFacts;

/// The Auto Scaling group tag AWS puts on group members.
pub const ASG_TAG: &str = "aws:autoscaling:groupName";

/// Why an instance is not guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exemption {
    /// Opt-out mode and the exemption tag is `true`.
    Tagged,
    /// Opt-in mode and the guard tag is not `true`.
    NotOptedIn,
    /// An Auto Scaling member (stopping it makes the group replace it).
    AutoScaling,
}

/// What the instance presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// Not guarded.
    Exempt(Exemption),
    /// Guarded, and there is no password to check: deny for this reason (`missing`, or
    /// `unknown` for a tag that cannot be a password ec2pass issued).
    NoPassword(DenyReason),
    /// Guarded, with a password to consume (its digest).
    Password(Digest),
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Decides whether the instance is guarded and reads its `Auth` tag.
pub fn assess(facts: &InstanceFacts, config: &GuardConfig) -> Assessment {
    match &config.mode {
        GuardMode::OptOut { exempt_tag } if is_true(facts.tags.get(exempt_tag)) => {
            return Assessment::Exempt(Exemption::Tagged);
        }
        GuardMode::OptIn { guard_tag } if !is_true(facts.tags.get(guard_tag)) => {
            return Assessment::Exempt(Exemption::NotOptedIn);
        }
        _ => {}
    }
    if config.exempt_autoscaling && facts.tags.contains_key(ASG_TAG) {
        return Assessment::Exempt(Exemption::AutoScaling);
    }
    match facts.tags.get(&config.auth_tag).map(|v| v.trim()) {
        None | Some("") => Assessment::NoPassword(DenyReason::Missing),
        Some(value) => match Password::from_tag(value) {
            Some(p) => Assessment::Password(p.digest()),
            None => Assessment::NoPassword(DenyReason::Unknown),
        },
    }
}

/// Whether a tagless pending instance should be described once more before a `missing` deny
/// (tags given at launch can lag behind the `pending` event).
pub fn worth_a_second_look(facts: &InstanceFacts) -> bool {
    facts.state == "pending" && facts.tags.is_empty()
}

/// Why the consumption condition failed, from the password item as it was (SPEC §4.3.5).
/// The stored digest is compared with the presented one in constant time.
pub fn why_refused(
    stored: Option<&PasswordRecord>,
    presented: &Digest,
    cycle: &Cycle,
    now: UnixTime,
) -> DenyReason {
    let Some(r) = stored.filter(|r| r.digest.ct_eq(presented)) else {
        return DenyReason::Unknown;
    };
    let cycle_id = cycle.id();
    match (&r.consumed_by, &r.scope) {
        (Some(by), _) if *by != cycle_id => DenyReason::Reused,
        _ if r.is_expired(now) => DenyReason::Expired,
        (_, Some(scope)) if *scope != cycle.instance => DenyReason::WrongInstance,
        // The condition failed, yet the item now looks usable: it changed in between (a
        // concurrent revoke and re-mint cannot produce this). Refuse rather than guess.
        _ => DenyReason::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ec2pass_shared::config::{Env, GuardConfig};
    use ec2pass_shared::ids::{InstanceId, Owner};
    use ec2pass_shared::password::new_short_id;

    use super::*;

    fn config(extra: &[(&str, &str)]) -> GuardConfig {
        let mut vars = vec![
            ("EC2PASS_TABLE", "ec2pass"),
            (
                "EC2PASS_ALERT_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:alerts",
            ),
        ];
        vars.extend_from_slice(extra);
        GuardConfig::from_env(&Env::from_fn(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn facts(tags: &[(&str, &str)]) -> InstanceFacts {
        InstanceFacts {
            id: InstanceId::parse("i-0123456789abcdef0").unwrap_or_else(|| unreachable!()),
            state: "pending".into(),
            launch_time: Some(UnixTime(1_000)),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            root_device_type: Some("ebs".into()),
            spot: false,
        }
    }

    #[test]
    fn a_valid_looking_tag_is_a_password_to_consume() {
        let p = Password::generate();
        let shown = p.display();
        assert_eq!(
            assess(&facts(&[("Auth", &shown)]), &config(&[])),
            Assessment::Password(p.digest())
        );
    }

    #[test]
    fn no_tag_or_an_empty_one_is_missing() {
        for tags in [
            &[][..],
            &[("Auth", "")],
            &[("Auth", "   ")],
            &[("auth", "x")],
        ] {
            assert_eq!(
                assess(&facts(tags), &config(&[])),
                Assessment::NoPassword(DenyReason::Missing),
                "{tags:?}"
            );
        }
    }

    #[test]
    fn a_tag_that_cannot_be_a_password_is_unknown() {
        for value in ["letmein", "true", "k7qm-2x9f-h4tr-8wzn-c3p"] {
            assert_eq!(
                assess(&facts(&[("Auth", value)]), &config(&[])),
                Assessment::NoPassword(DenyReason::Unknown)
            );
        }
    }

    #[test]
    fn opt_out_mode_exempts_only_tagged_instances() {
        let c = config(&[]);
        assert_eq!(
            assess(&facts(&[("ec2pass:exempt", "true")]), &c),
            Assessment::Exempt(Exemption::Tagged)
        );
        assert_eq!(
            assess(&facts(&[("ec2pass:exempt", "TRUE ")]), &c),
            Assessment::Exempt(Exemption::Tagged)
        );
        assert_eq!(
            assess(&facts(&[("ec2pass:exempt", "false")]), &c),
            Assessment::NoPassword(DenyReason::Missing)
        );
    }

    #[test]
    fn opt_in_mode_guards_only_opted_in_instances() {
        let c = config(&[("EC2PASS_GUARD_MODE", "opt-in")]);
        assert_eq!(
            assess(&facts(&[]), &c),
            Assessment::Exempt(Exemption::NotOptedIn)
        );
        assert_eq!(
            assess(&facts(&[("ec2pass:guard", "true")]), &c),
            Assessment::NoPassword(DenyReason::Missing)
        );
        // The opt-out tag means nothing in opt-in mode.
        assert_eq!(
            assess(
                &facts(&[("ec2pass:guard", "true"), ("ec2pass:exempt", "true")]),
                &c
            ),
            Assessment::NoPassword(DenyReason::Missing)
        );
    }

    #[test]
    fn auto_scaling_members_are_exempt_by_default_only() {
        let asg = facts(&[(ASG_TAG, "web")]);
        assert_eq!(
            assess(&asg, &config(&[])),
            Assessment::Exempt(Exemption::AutoScaling)
        );
        let c = config(&[("EC2PASS_EXEMPT_AUTOSCALING", "false")]);
        assert_eq!(
            assess(&asg, &c),
            Assessment::NoPassword(DenyReason::Missing)
        );
    }

    #[test]
    fn only_a_tagless_pending_instance_gets_a_second_look() {
        assert!(worth_a_second_look(&facts(&[])));
        assert!(!worth_a_second_look(&facts(&[("Name", "x")])));
        let mut running = facts(&[]);
        running.state = "running".into();
        assert!(!worth_a_second_look(&running));
    }

    fn record(digest: Digest, scope: Option<&str>, consumed_by: Option<&str>) -> PasswordRecord {
        PasswordRecord {
            short_id: new_short_id(),
            digest,
            owner: Owner {
                team_id: "T".into(),
                user_id: "U".into(),
            },
            channel_id: "C".into(),
            scope: scope.and_then(InstanceId::parse),
            issued_at: UnixTime(0),
            expires_at: UnixTime(900),
            consumed_by: consumed_by.map(str::to_owned),
        }
    }

    #[test]
    fn each_failed_condition_has_its_reason() {
        let d = Password::generate().digest();
        let cycle = Cycle {
            instance: facts(&[]).id,
            launch_time: UnixTime(500),
        };
        let here = "i-0123456789abcdef0";
        let other = "i-0fedcba9876543210";
        let now = UnixTime(600);
        let later = UnixTime(900);
        let cases = [
            (None, now, DenyReason::Unknown),
            (
                Some(record(Password::generate().digest(), None, None)),
                now,
                DenyReason::Unknown,
            ),
            (
                Some(record(d, None, Some("i-0123456789abcdef0@1"))),
                now,
                DenyReason::Reused,
            ),
            (
                Some(record(d, Some(here), Some("burned:x"))),
                now,
                DenyReason::Reused,
            ),
            (
                Some(record(d, None, Some("i-0123456789abcdef0@1"))),
                later,
                DenyReason::Reused,
            ),
            (
                Some(record(d, Some(here), None)),
                later,
                DenyReason::Expired,
            ),
            (
                Some(record(d, Some(other), None)),
                now,
                DenyReason::WrongInstance,
            ),
            (
                Some(record(d, Some(other), None)),
                later,
                DenyReason::Expired,
            ),
            (Some(record(d, Some(here), None)), now, DenyReason::Unknown),
        ];
        for (stored, at, reason) in cases {
            assert_eq!(
                why_refused(stored.as_ref(), &d, &cycle, at),
                reason,
                "{stored:?} at {at:?}"
            );
        }
    }
}
