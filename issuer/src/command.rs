//! The command grammar: what may follow `/ec2pass`.
//!
//! | text | command |
//! | --- | --- |
//! | `i-0123456789abcdef0` | mint a password only that instance may use |
//! | `i-… 30m`, `i-… 2h` | the same, with a lifetime |
//! | `i-… in prod`, `i-… in prod/eu-west-1`, `i-… 2h in prod` | the same, where a hub looks (an account's alias or id, and a region) |
//! | *(empty)*, or a lifetime alone | mint an unscoped password (only where configuration allows) |
//! | `help` | usage |
//! | `list` | the requester's outstanding passwords |
//! | `revoke ID`, `revoke all` | withdraw the requester's own outstanding passwords |
//! | `status i-…` | the instance's latest verdicts (for anyone who may mint for it) |
//!
//! Keywords are case-insensitive; instance ids must be written as EC2 writes them (lowercase).

use std::time::Duration;

use ec2pass_shared::config::Lifetimes;
use ec2pass_shared::ids::{InstanceId, ShortId};
use ec2pass_shared::org::is_region;
use ec2pass_shared::time::parse_duration;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Mint a password, for one instance or (`None`) any.
    Mint {
        /// The instance it is for.
        scope: Option<InstanceId>,
        /// The requested lifetime, if any.
        lifetime: Option<Duration>,
        /// Where to look for it (`in …`), if the requester said.
        near: Option<Near>,
    },
    /// Show usage.
    Help,
    /// List the requester's outstanding passwords.
    List,
    /// Withdraw outstanding passwords.
    Revoke(RevokeTarget),
    /// Show an instance's latest verdicts.
    Status(InstanceId),
}

/// Where the requester says an instance lives: `in prod` or `in prod/eu-west-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Near {
    /// An account's alias or id, lower-cased (resolved against the hub's accounts).
    pub account: String,
    /// A region, if named.
    pub region: Option<String>,
}

impl Near {
    /// Reads `alias`, `alias/region`, `123456789012` or `123456789012/region`.
    pub fn parse(word: &str) -> Option<Self> {
        let (account, region) = match word.split_once('/') {
            Some((a, r)) => (a, Some(r)),
            None => (word, None),
        };
        let account = account.to_ascii_lowercase();
        let account_ok = (1..=32).contains(&account.len())
            && account
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let region = match region {
            Some(r) if is_region(r) => Some(r.to_owned()),
            Some(_) => return None,
            None => None,
        };
        account_ok.then_some(Self { account, region })
    }
}

/// Which passwords `revoke` withdraws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// The one with this short id.
    One(ShortId),
    /// All of the requester's.
    All,
}

/// Something the requester typed that is not a command; answered with an explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mistake {
    /// Not a command at all.
    Unknown(String),
    /// Looks like an instance id but is not a valid one.
    BadInstanceId(String),
    /// A lifetime that does not parse.
    BadLifetime(String),
    /// A lifetime outside the configured bounds.
    LifetimeOutOfBounds(Duration),
    /// `revoke` without a valid id or `all`.
    BadRevoke(String),
    /// `status` without one valid instance id.
    BadStatus(String),
    /// An unscoped password was asked for but configuration does not allow them.
    UnscopedNotAllowed,
    /// `in` followed by nothing, or by something that is not `alias` or `alias/region`.
    BadPlace(String),
    /// A place this ec2pass does not guard (an unknown alias, a region not guarded, or any
    /// place at all on a single-account stack).
    UnknownPlace(String),
}

/// Parses the text after `/ec2pass`.
pub fn parse(text: &str) -> Result<Command, Mistake> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let keyword = words.first().map(|w| w.to_ascii_lowercase());
    match (keyword.as_deref(), words.as_slice()) {
        (None, _) => Ok(Command::Mint {
            scope: None,
            lifetime: None,
            near: None,
        }),
        (Some("help"), [_]) => Ok(Command::Help),
        (Some("list"), [_]) => Ok(Command::List),
        (Some("revoke"), [_, target]) if target.eq_ignore_ascii_case("all") => {
            Ok(Command::Revoke(RevokeTarget::All))
        }
        (Some("revoke"), [_, target]) => ShortId::parse(target)
            .map(|id| Command::Revoke(RevokeTarget::One(id)))
            .ok_or_else(|| Mistake::BadRevoke(shorten(target))),
        (Some("revoke"), _) => Err(Mistake::BadRevoke(shorten(&words[1..].join(" ")))),
        (Some("status"), [_, id]) => InstanceId::parse(id)
            .map(Command::Status)
            .ok_or_else(|| Mistake::BadStatus(shorten(id))),
        (Some("status"), _) => Err(Mistake::BadStatus(shorten(&words[1..].join(" ")))),
        (Some(first), [id, rest @ ..]) if first.starts_with("i-") => {
            let scope = InstanceId::parse(id).ok_or_else(|| Mistake::BadInstanceId(shorten(id)))?;
            let lifetime_of =
                |l: &str| parse_duration(l).ok_or_else(|| Mistake::BadLifetime(shorten(l)));
            let near_of = |w: &str| Near::parse(w).ok_or_else(|| Mistake::BadPlace(shorten(w)));
            let is_in = |w: &str| w.eq_ignore_ascii_case("in");
            let (lifetime, near) = match rest {
                [] => (None, None),
                [w] if is_in(w) => return Err(Mistake::BadPlace(String::new())),
                [l] => (Some(lifetime_of(l)?), None),
                [w, place] if is_in(w) => (None, Some(near_of(place)?)),
                [l, w, place] if is_in(w) => (Some(lifetime_of(l)?), Some(near_of(place)?)),
                [w, place, l] if is_in(w) => (Some(lifetime_of(l)?), Some(near_of(place)?)),
                _ => return Err(Mistake::Unknown(shorten(text.trim()))),
            };
            Ok(Command::Mint {
                scope: Some(scope),
                lifetime,
                near,
            })
        }
        (Some(_), [l]) if parse_duration(l).is_some() => Ok(Command::Mint {
            scope: None,
            lifetime: parse_duration(l),
            near: None,
        }),
        (Some(_), _) => Err(Mistake::Unknown(shorten(text.trim()))),
    }
}

/// The lifetime a mint gets: the requested one within bounds, or the default.
pub fn choose_lifetime(
    requested: Option<Duration>,
    bounds: &Lifetimes,
) -> Result<Duration, Mistake> {
    match requested {
        None => Ok(bounds.default),
        Some(d) if (bounds.min..=bounds.max).contains(&d) => Ok(d),
        Some(d) => Err(Mistake::LifetimeOutOfBounds(d)),
    }
}

/// User text echoed back is cut to a readable length.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Option<InstanceId> {
        InstanceId::parse(s)
    }

    #[test]
    fn an_instance_id_mints_a_scoped_password() {
        assert_eq!(
            parse("i-0123456789abcdef0"),
            Ok(Command::Mint {
                scope: id("i-0123456789abcdef0"),
                lifetime: None,
                near: None
            })
        );
        assert_eq!(
            parse("  i-0123abcd   2h "),
            Ok(Command::Mint {
                scope: id("i-0123abcd"),
                lifetime: Some(Duration::from_secs(7200)),
                near: None
            })
        );
    }

    #[test]
    fn empty_text_or_a_lone_lifetime_asks_for_an_unscoped_password() {
        assert_eq!(
            parse(""),
            Ok(Command::Mint {
                scope: None,
                lifetime: None,
                near: None
            })
        );
        assert_eq!(
            parse("   "),
            Ok(Command::Mint {
                scope: None,
                lifetime: None,
                near: None
            })
        );
        assert_eq!(
            parse("30m"),
            Ok(Command::Mint {
                scope: None,
                lifetime: Some(Duration::from_secs(1800)),
                near: None
            })
        );
    }

    #[test]
    fn in_names_where_a_hub_should_look() {
        let near = |account: &str, region: Option<&str>| Near {
            account: account.into(),
            region: region.map(str::to_owned),
        };
        let mint = |text: &str| match parse(text) {
            Ok(Command::Mint { near, lifetime, .. }) => Ok((near, lifetime)),
            other => Err(other),
        };
        let two_hours = Some(Duration::from_secs(7200));
        assert_eq!(
            mint("i-0123abcd in Prod/eu-west-1"),
            Ok((Some(near("prod", Some("eu-west-1"))), None))
        );
        assert_eq!(
            mint("i-0123abcd IN prod"),
            Ok((Some(near("prod", None)), None))
        );
        assert_eq!(
            mint("i-0123abcd 2h in 111111111111"),
            Ok((Some(near("111111111111", None)), two_hours))
        );
        assert_eq!(
            mint("i-0123abcd in dev/us-west-2 2h"),
            Ok((Some(near("dev", Some("us-west-2"))), two_hours))
        );
        assert_eq!(
            parse("i-0123abcd in"),
            Err(Mistake::BadPlace(String::new()))
        );
        assert_eq!(
            parse("i-0123abcd in prod/Mars"),
            Err(Mistake::BadPlace("prod/Mars".into()))
        );
        assert_eq!(
            parse("i-0123abcd in pr*d"),
            Err(Mistake::BadPlace("pr*d".into()))
        );
        assert!(matches!(
            parse("i-0123abcd in prod in dev"),
            Err(Mistake::Unknown(_))
        ));
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(parse("HELP"), Ok(Command::Help));
        assert_eq!(parse("List"), Ok(Command::List));
        assert_eq!(parse("revoke ALL"), Ok(Command::Revoke(RevokeTarget::All)));
        let short = ShortId::parse("ab12cd34")
            .map(RevokeTarget::One)
            .map(Command::Revoke);
        assert_eq!(parse("revoke AB12CD34").ok(), short);
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(parse("i-XYZ"), Err(Mistake::BadInstanceId("i-XYZ".into())));
        assert_eq!(
            parse("i-0123abcd soon"),
            Err(Mistake::BadLifetime("soon".into()))
        );
        assert_eq!(
            parse("i-0123abcd 0m"),
            Err(Mistake::BadLifetime("0m".into()))
        );
        assert_eq!(
            parse("i-0123abcd 5m extra"),
            Err(Mistake::Unknown("i-0123abcd 5m extra".into()))
        );
        assert_eq!(parse("revoke"), Err(Mistake::BadRevoke(String::new())));
        assert_eq!(
            parse("revoke nope!"),
            Err(Mistake::BadRevoke("nope!".into()))
        );
        assert_eq!(parse("revoke a b"), Err(Mistake::BadRevoke("a b".into())));
        assert_eq!(parse("help me"), Err(Mistake::Unknown("help me".into())));
        assert_eq!(
            parse("start my box"),
            Err(Mistake::Unknown("start my box".into()))
        );
        let long = "x".repeat(100);
        assert_eq!(
            parse(&long),
            Err(Mistake::Unknown(format!("{}…", "x".repeat(40))))
        );
    }

    #[test]
    fn lifetimes_are_bounded_by_configuration() {
        let bounds = Lifetimes {
            default: Duration::from_secs(900),
            min: Duration::from_secs(300),
            max: Duration::from_secs(7200),
        };
        assert_eq!(choose_lifetime(None, &bounds), Ok(Duration::from_secs(900)));
        assert_eq!(
            choose_lifetime(Some(Duration::from_secs(300)), &bounds),
            Ok(Duration::from_secs(300))
        );
        assert_eq!(
            choose_lifetime(Some(Duration::from_secs(7200)), &bounds),
            Ok(Duration::from_secs(7200))
        );
        for d in [299, 7201] {
            let d = Duration::from_secs(d);
            assert_eq!(
                choose_lifetime(Some(d), &bounds),
                Err(Mistake::LifetimeOutOfBounds(d))
            );
        }
    }

    #[test]
    fn status_names_one_instance() {
        assert_eq!(
            parse("status i-0123456789abcdef0"),
            Ok(Command::Status(
                InstanceId::parse("i-0123456789abcdef0").unwrap_or_else(|| unreachable!())
            ))
        );
        assert_eq!(
            parse("STATUS i-0123abcd"),
            Ok(Command::Status(
                InstanceId::parse("i-0123abcd").unwrap_or_else(|| unreachable!())
            ))
        );
        for bad in [
            "status",
            "status i-xyz",
            "status i-0123abcd i-0123abce",
            "status all",
        ] {
            assert!(matches!(parse(bad), Err(Mistake::BadStatus(_))), "{bad}");
        }
    }

    #[test]
    fn no_text_panics_the_parser() {
        for text in [
            "\u{0}",
            "i-",
            "i- 5m",
            "revoke \u{fffd}",
            "🚀 2h",
            "i-0123abcd 🚀",
            "\t\n",
            "i-0123abcd 5é",
        ] {
            let _ = parse(text);
        }
    }
}
