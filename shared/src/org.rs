//! The Organization a hub serves: its member accounts (with the aliases people use in chat), the
//! regions it guards, and where an instance lives.
//!
//! A stack without a member role is a single account in a single region: everything happens
//! with the function's own credentials, exactly as before there were hubs. With one
//! (`EC2PASS_MEMBER_ROLE` for the guard, `EC2PASS_LOOKUP_ROLE` for the issuer), the stack is the
//! hub of an Organization: it acts in each member account through that account's role, in each
//! region of `EC2PASS_REGIONS`, for each account of `EC2PASS_ACCOUNTS`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;

use crate::config::{ConfigError, Env};

/// Where an instance lives: an account and a region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Place {
    /// The twelve-digit account id (empty when an event did not say).
    pub account: String,
    /// The region, e.g. `eu-west-1` (empty when an event did not say).
    pub region: String,
}

impl Place {
    /// A place.
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            region: region.into(),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

/// A member account: its id and the alias people use for it in chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The alias (`prod`), lower-case letters, digits and dashes.
    pub alias: String,
    /// The twelve-digit account id.
    pub id: String,
}

/// A hub's Organization: the role it assumes in each member, the members and the regions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hub {
    /// The role's name in every member account (`ec2pass-member` for the guard,
    /// `ec2pass-lookup` for the issuer).
    pub role: String,
    /// The ARN partition the roles live in (`aws`, `aws-us-gov`, `aws-cn`).
    pub partition: String,
    /// The member accounts (`EC2PASS_ACCOUNTS`), in the order configured.
    pub members: Vec<Member>,
    /// The guarded regions (`EC2PASS_REGIONS`), in the order configured.
    pub regions: Vec<String>,
}

impl Hub {
    /// Every account and region the hub guards: members × regions.
    pub fn places(&self) -> Vec<Place> {
        self.members
            .iter()
            .flat_map(|m| self.regions.iter().map(|r| Place::new(&m.id, r)))
            .collect()
    }

    /// Whether the hub guards this place.
    pub fn guards(&self, place: &Place) -> bool {
        self.regions.contains(&place.region) && self.members.iter().any(|m| m.id == place.account)
    }

    /// The member an alias or an account id names.
    pub fn member(&self, alias_or_id: &str) -> Option<&Member> {
        let wanted = alias_or_id.trim().to_ascii_lowercase();
        self.members
            .iter()
            .find(|m| m.alias == wanted || m.id == wanted)
    }

    /// The alias of an account, if it is a member.
    pub fn alias_of(&self, account: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == account)
            .map(|m| m.alias.as_str())
    }

    /// The role's ARN in an account.
    pub fn role_arn(&self, account: &str) -> String {
        format!("arn:{}:iam::{account}:role/{}", self.partition, self.role)
    }

    /// Reads a hub from `role_var` (the role's name; unset: no hub), `EC2PASS_ACCOUNTS` and
    /// `EC2PASS_REGIONS`. The partition is the one of `arn_in_partition`, an ARN the stack owns.
    pub fn from_env(
        env: &Env<'_>,
        role_var: &'static str,
        arn_in_partition: Option<&str>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(role) = env.get(role_var).filter(|r| !r.trim().is_empty()) else {
            for var in ["EC2PASS_ACCOUNTS", "EC2PASS_REGIONS"] {
                if env.get(var).is_some_and(|v| !v.trim().is_empty()) {
                    return Err(ConfigError {
                        var,
                        problem: format!(
                            "set, but {role_var} is not: a hub needs the role it assumes in \
                             each member account"
                        ),
                    });
                }
            }
            return Ok(None);
        };
        let role = role.trim().to_owned();
        let role_ok = (1..=64).contains(&role.len())
            && role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
        if !role_ok {
            return Err(ConfigError {
                var: role_var,
                problem: format!("{role:?} is not an IAM role name"),
            });
        }
        let members = members(&env.required("EC2PASS_ACCOUNTS")?)?;
        let regions = regions(&env.required("EC2PASS_REGIONS")?)?;
        let partition = arn_in_partition
            .and_then(|arn| arn.split(':').nth(1))
            .filter(|p| !p.is_empty())
            .unwrap_or("aws")
            .to_owned();
        Ok(Some(Self {
            role,
            partition,
            members,
            regions,
        }))
    }
}

/// How long before its credentials expire a member session is renewed: longer than an
/// invocation (the functions time out after 30 s), so no call starts with credentials that die
/// under it.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// A session whose renewal fails is still acted with while its credentials live longer than
/// this (an invocation and its calls: the functions time out after 30 s).
pub const STILL_USABLE: Duration = Duration::from_secs(60);

/// Assumes a role.
pub trait Assume: Send + Sync {
    /// The role's temporary credentials, or why not.
    fn assume(&self, role_arn: &str) -> impl Future<Output = Result<Credentials, String>> + Send;
}

/// STS AssumeRole with the function's own credentials and the SDK's timeouts and retries, in
/// sessions named `session_name` (CloudTrail in the member account shows it).
#[derive(Debug, Clone)]
pub struct StsAssume {
    base: SdkConfig,
    session_name: &'static str,
}

impl StsAssume {
    /// Assumes with the configuration built once at cold start.
    pub fn new(base: SdkConfig, session_name: &'static str) -> Self {
        Self { base, session_name }
    }
}

impl Assume for StsAssume {
    async fn assume(&self, role_arn: &str) -> Result<Credentials, String> {
        let provider = AssumeRoleProvider::builder(role_arn)
            .session_name(self.session_name)
            .configure(&self.base)
            .build()
            .await;
        provider.provide_credentials().await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        })
    }
}

/// Why a place cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot act in account {} ({}): {message}", .place.account, .place.region)]
pub struct Unreachable {
    /// Where.
    pub place: Place,
    /// Why (the role that could not be assumed and STS's answer).
    pub message: String,
}

/// One member account's session: its credentials and a client per region.
struct Session<C> {
    credentials: Credentials,
    clients: HashMap<String, C>,
}

/// One account's session, behind its own lock (empty until first assumed).
type Slot<C> = Arc<tokio::sync::Mutex<Option<Session<C>>>>;

/// The hub's sessions in its member accounts: the hub's role assumed once per account, kept
/// until [`REFRESH_BEFORE`] its expiry, and one client (`C`) per account and region.
pub struct Sessions<A, C> {
    hub: Hub,
    assume: A,
    sessions: Mutex<HashMap<String, Slot<C>>>,
}

impl<A: Assume, C: Clone + Send> Sessions<A, C> {
    /// Sessions in `hub`'s members, assumed with `assume`.
    pub fn new(hub: Hub, assume: A) -> Self {
        Self {
            hub,
            assume,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The client of `place`, built by `build` from the account's credentials and the region
    /// the first time it is needed.
    pub async fn client(
        &self,
        place: &Place,
        build: impl FnOnce(&Credentials, &str) -> C,
    ) -> Result<C, Unreachable> {
        let refuse = |message: String| Unreachable {
            place: place.clone(),
            message,
        };
        if !is_account_id(&place.account) || !is_region(&place.region) {
            return Err(refuse(
                "no account and region that could be acted in".into(),
            ));
        }
        // One lock per account: the sessions of other accounts are not held up while this one
        // is assumed.
        let slot = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(place.account.clone())
            .or_default()
            .clone();
        let mut session = slot.lock().await;
        let now = SystemTime::now();
        let fresh = |s: &Session<C>| {
            s.credentials
                .expiry()
                .is_none_or(|expiry| expiry > now + REFRESH_BEFORE)
        };
        let usable = |s: &Session<C>| {
            s.credentials
                .expiry()
                .is_none_or(|expiry| expiry > now + STILL_USABLE)
        };
        let session = match session.take() {
            Some(s) if fresh(&s) => session.insert(s),
            old => {
                let arn = self.hub.role_arn(&place.account);
                match self.assume.assume(&arn).await {
                    Ok(credentials) => {
                        tracing::info!(account = %place.account, role = %self.hub.role, "assumed the member role");
                        session.insert(Session {
                            credentials,
                            clients: HashMap::new(),
                        })
                    }
                    Err(e) => match old {
                        // A renewal that fails while the session still outlives an invocation:
                        // act with it, and renew again next time.
                        Some(s) if usable(&s) => {
                            tracing::warn!(account = %place.account, error = %e, "could not renew the member session; its credentials still serve");
                            session.insert(s)
                        }
                        _ => return Err(refuse(format!("could not assume {arn}: {e}"))),
                    },
                }
            }
        };
        if let Some(client) = session.clients.get(&place.region) {
            return Ok(client.clone());
        }
        let client = build(&session.credentials, &place.region);
        session.clients.insert(place.region.clone(), client.clone());
        Ok(client)
    }
}

/// `EC2PASS_ACCOUNTS`: `alias=123456789012` pairs, comma-separated. Aliases and ids are unique.
pub fn members(value: &str) -> Result<Vec<Member>, ConfigError> {
    let bad = |problem: String| ConfigError {
        var: "EC2PASS_ACCOUNTS",
        problem,
    };
    let mut out: Vec<Member> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((alias, id)) = entry.split_once('=') else {
            return Err(bad(format!("{entry:?} is not alias=account-id")));
        };
        let (alias, id) = (alias.trim().to_ascii_lowercase(), id.trim().to_owned());
        let alias_ok = (1..=32).contains(&alias.len())
            && alias
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !alias.bytes().all(|b| b.is_ascii_digit());
        if !alias_ok {
            return Err(bad(format!(
                "{alias:?} is not an alias (letters, digits and dashes, not only digits)"
            )));
        }
        if !is_account_id(&id) {
            return Err(bad(format!("{id:?} is not a twelve-digit account id")));
        }
        if out.iter().any(|m| m.alias == alias || m.id == id) {
            return Err(bad(format!("{alias}={id} repeats an alias or an account")));
        }
        out.push(Member { alias, id });
    }
    if out.is_empty() {
        return Err(bad("names no account".into()));
    }
    Ok(out)
}

/// `EC2PASS_REGIONS`: region names, comma-separated, each once.
pub fn regions(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for region in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if !is_region(region) {
            return Err(ConfigError {
                var: "EC2PASS_REGIONS",
                problem: format!("{region:?} is not a region name (like eu-west-1)"),
            });
        }
        if !out.iter().any(|r| r == region) {
            out.push(region.to_owned());
        }
    }
    if out.is_empty() {
        return Err(ConfigError {
            var: "EC2PASS_REGIONS",
            problem: "names no region".into(),
        });
    }
    Ok(out)
}

/// Twelve ASCII digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A region name: lower-case words joined by dashes, the last a number (`us-gov-west-1`).
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    s.len() <= 25
        && parts.len() >= 3
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()))
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hub(pairs: &[(&str, &str)]) -> Result<Option<Hub>, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Hub::from_env(
            &Env::from_fn(move |k| map.get(k).cloned()),
            "EC2PASS_MEMBER_ROLE",
            Some("arn:aws-us-gov:sns:us-gov-west-1:111111111111:t"),
        )
    }

    #[test]
    fn no_role_is_a_single_account_and_half_a_hub_is_refused() {
        assert_eq!(hub(&[]), Ok(None));
        let half = hub(&[("EC2PASS_ACCOUNTS", "prod=111111111111")]);
        assert_eq!(half.map_err(|e| e.var), Err("EC2PASS_ACCOUNTS"));
        let no_regions = hub(&[
            ("EC2PASS_MEMBER_ROLE", "ec2pass-member"),
            ("EC2PASS_ACCOUNTS", "prod=111111111111"),
        ]);
        assert_eq!(no_regions.map_err(|e| e.var), Err("EC2PASS_REGIONS"));
    }

    #[test]
    fn a_hub_reads_members_regions_and_its_partition() {
        let Ok(Some(h)) = hub(&[
            ("EC2PASS_MEMBER_ROLE", "ec2pass-member"),
            ("EC2PASS_ACCOUNTS", " Prod=111111111111, dev=222222222222 "),
            (
                "EC2PASS_REGIONS",
                "us-gov-west-1,us-gov-east-1,us-gov-west-1",
            ),
        ]) else {
            panic!("a hub")
        };
        assert_eq!(h.regions, ["us-gov-west-1", "us-gov-east-1"]);
        assert_eq!(h.places().len(), 4);
        assert_eq!(
            h.member("PROD").map(|m| m.id.as_str()),
            Some("111111111111")
        );
        assert_eq!(
            h.member("222222222222").map(|m| m.alias.as_str()),
            Some("dev")
        );
        assert_eq!(h.alias_of("222222222222"), Some("dev"));
        assert_eq!(
            h.role_arn("222222222222"),
            "arn:aws-us-gov:iam::222222222222:role/ec2pass-member"
        );
        assert!(h.guards(&Place::new("111111111111", "us-gov-east-1")));
        assert!(!h.guards(&Place::new("111111111111", "eu-west-1")));
        assert!(!h.guards(&Place::new("333333333333", "us-gov-east-1")));
    }

    #[test]
    fn bad_members_and_regions_are_named() {
        for bad in [
            "",
            "prod",
            "prod=1234",
            "prod=11111111111a",
            "123=111111111111",
            "pr od=111111111111",
            "prod=111111111111,prod=222222222222",
            "prod=111111111111,dev=111111111111",
        ] {
            assert!(members(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            "eu-west",
            "EU-WEST-1",
            "eu--1",
            "eu-west-100",
            "eu west 1",
        ] {
            assert!(regions(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            regions("ap-southeast-2, us-gov-west-1").map(|r| r.len()),
            Ok(2)
        );
        assert!(
            Hub::from_env(
                &Env::from_fn(|k| (k == "EC2PASS_MEMBER_ROLE").then(|| "no/slash".to_owned())),
                "EC2PASS_MEMBER_ROLE",
                None
            )
            .is_err()
        );
    }
}
