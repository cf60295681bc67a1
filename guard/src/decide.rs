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

/// Tags AWS puts on instances that a service launched on someone's behalf: an Auto Scaling group
/// (EKS node groups and Batch make groups too), an EC2 Fleet, a Spot Fleet. Users cannot write
/// `aws:` tags, so they are true. Such a launch is done by the service's own role, which SCPs do
/// not restrict, and its tags come from a launch template or a group's propagated tags that
/// anyone allowed to make a template or a group wrote: an exemption tag on such an instance
/// proves nothing about an admin, so it is not honoured (docs/policies.md, "Exemptions through a
/// service").
pub const LAUNCHED_BY_A_SERVICE: [&str; 3] =
    [ASG_TAG, "aws:ec2:fleet-id", "aws:ec2spot:fleet-request-id"];

/// Why an instance is not guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exemption {
    /// Opt-out mode and the exemption tag is `true`.
    Tagged,
    /// Opt-in mode and the guard tag is not `true`.
    NotOptedIn,
    /// A member of an Auto Scaling group an admin listed in `EC2PASS_EXEMPT_GROUPS`.
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

/// Whether a service launched the instance on someone's behalf (see [`LAUNCHED_BY_A_SERVICE`]).
pub fn launched_by_a_service(facts: &InstanceFacts) -> bool {
    LAUNCHED_BY_A_SERVICE
        .iter()
        .any(|t| facts.tags.contains_key(*t))
}

/// Decides whether the instance is guarded and reads its `Auth` tag.
pub fn assess(facts: &InstanceFacts, config: &GuardConfig) -> Assessment {
    match &config.mode {
        GuardMode::OptOut { exempt_tag }
            if is_true(facts.tags.get(exempt_tag)) && !launched_by_a_service(facts) =>
        {
            return Assessment::Exempt(Exemption::Tagged);
        }
        GuardMode::OptIn { guard_tag } if !is_true(facts.tags.get(guard_tag)) => {
            return Assessment::Exempt(Exemption::NotOptedIn);
        }
        _ => {}
    }
    // Anyone with `autoscaling:*` can make a group: only a group an admin listed exempts.
    if facts
        .tags
        .get(ASG_TAG)
        .is_some_and(|group| config.exempt_groups.exempts(group))
    {
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

/// Whether a pending instance should be described once more before it is denied `missing` (or,
/// in opt-in mode, passed over as not opted in): a tag set just before the start can lag behind
/// the others, and a pending instance cannot be stopped yet anyway, so the pause costs no
/// exposure.
pub fn worth_a_second_look(facts: &InstanceFacts, config: &GuardConfig) -> bool {
    facts.state == "pending"
        && matches!(
            assess(facts, config),
            Assessment::NoPassword(DenyReason::Missing) | Assessment::Exempt(Exemption::NotOptedIn)
        )
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
        // Burned by this very cycle: a retry of the leaked-password deny says so again.
        (Some(by), _) if *by == cycle.burn_mark() => DenyReason::WrongInstance,
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
    fn auto_scaling_members_are_exempt_only_when_an_admin_listed_their_group() {
        // Anyone with autoscaling:* (in AmazonEC2FullAccess) can make a group.
        let asg = facts(&[(ASG_TAG, "web")]);
        assert_eq!(
            assess(&asg, &config(&[])),
            Assessment::NoPassword(DenyReason::Missing)
        );
        let listed = config(&[("EC2PASS_EXEMPT_GROUPS", "batch,web")]);
        assert_eq!(
            assess(&asg, &listed),
            Assessment::Exempt(Exemption::AutoScaling)
        );
        let other = facts(&[(ASG_TAG, "miner")]);
        assert_eq!(
            assess(&other, &listed),
            Assessment::NoPassword(DenyReason::Missing)
        );
        let all = config(&[("EC2PASS_EXEMPT_GROUPS", "*")]);
        assert_eq!(
            assess(&other, &all),
            Assessment::Exempt(Exemption::AutoScaling)
        );
    }

    #[test]
    fn an_exemption_tag_that_a_service_applied_is_not_honoured() {
        // A launch template's or a group's tags reach the instance through the service's own
        // role, which no SCP restricts: the tag proves nothing about an admin.
        for service_tag in LAUNCHED_BY_A_SERVICE {
            let f = facts(&[(service_tag, "x"), ("ec2pass:exempt", "true")]);
            assert_eq!(
                assess(&f, &config(&[])),
                Assessment::NoPassword(DenyReason::Missing),
                "{service_tag}"
            );
        }
        // Launched by a person (RunInstances, where the SCP sees the tag): honoured.
        assert_eq!(
            assess(&facts(&[("ec2pass:exempt", "true")]), &config(&[])),
            Assessment::Exempt(Exemption::Tagged)
        );
    }

    #[test]
    fn a_pending_instance_without_a_password_gets_a_second_look_whatever_else_it_carries() {
        let c = config(&[]);
        assert!(worth_a_second_look(&facts(&[]), &c));
        // Other tags visible, the Auth tag not yet: the README's own "tag, then start".
        assert!(worth_a_second_look(&facts(&[("Name", "x")]), &c));
        assert!(!worth_a_second_look(&facts(&[("Auth", "junk")]), &c));
        assert!(!worth_a_second_look(
            &facts(&[("ec2pass:exempt", "true")]),
            &c
        ));
        let mut running = facts(&[]);
        running.state = "running".into();
        assert!(!worth_a_second_look(&running, &c));
        let opt_in = config(&[("EC2PASS_GUARD_MODE", "opt-in")]);
        assert!(worth_a_second_look(&facts(&[("Name", "x")]), &opt_in));
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
            // The retry of a leaked-password deny, after the burn: still wrong-instance.
            (
                Some(record(d, Some(other), Some(cycle.burn_mark().as_str()))),
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
