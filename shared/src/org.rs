//! The Organization a hub serves: its member accounts (with the aliases people use in chat), the
//! regions it guards, and where an instance lives.
//!
//! A stack without a member role is a single account in a single region: everything happens
//! with the function's own credentials, exactly as before there were hubs. With one
//! (`EC2PASS_MEMBER_ROLE` for the guard, `EC2PASS_LOOKUP_ROLE` for the issuer), the stack is the
//! hub of an Organization: it acts in each member account through that account's role, in each
//! region of `EC2PASS_REGIONS`, for each account of `EC2PASS_ACCOUNTS`.
//!
//! With `EC2PASS_ORG_UNITS` (OU or root ids), the members are also read from AWS Organizations
//! ([`OrgRoster`]): every active account under those units, so that an account the StackSet's
//! automatic deployment guards is swept and searched too without anyone editing a list.
//! `EC2PASS_ACCOUNTS` then gives aliases (and accounts outside the units); any other account
//! is named after its Organizations name ([`alias_for`]).

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
    /// The OUs or roots whose accounts are members too (`EC2PASS_ORG_UNITS`; empty: only
    /// `members`), read by [`OrgRoster`].
    pub units: Vec<String>,
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
            for var in ["EC2PASS_ACCOUNTS", "EC2PASS_REGIONS", "EC2PASS_ORG_UNITS"] {
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
        let units = units(&env.get("EC2PASS_ORG_UNITS").unwrap_or_default())?;
        // Read from the Organization, the accounts need no list (it only gives aliases).
        let members = match env.get("EC2PASS_ACCOUNTS") {
            Some(v) if !units.is_empty() => members(&v)?,
            None if !units.is_empty() => Vec::new(),
            _ => members(&env.required("EC2PASS_ACCOUNTS")?)?,
        };
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
            units,
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

/// `EC2PASS_ORG_UNITS`: OU ids (`ou-ab12-cdef3456`) or root ids (`r-ab12`), comma-separated.
pub fn units(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for unit in value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        if !is_unit(unit) {
            return Err(ConfigError {
                var: "EC2PASS_ORG_UNITS",
                problem: format!("{unit:?} is not an OU id (ou-…) or a root id (r-…)"),
            });
        }
        if !out.iter().any(|u| u == unit) {
            out.push(unit.to_owned());
        }
    }
    Ok(out)
}

/// Whether `s` is an Organizations OU id (`ou-` 4–32 then `-` 8–32 lower-case letters or
/// digits) or root id (`r-` 4–32).
pub fn is_unit(s: &str) -> bool {
    let word = |w: &str, lo: usize| {
        (lo..=32).contains(&w.len())
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if let Some(rest) = s.strip_prefix("ou-") {
        return rest
            .split_once('-')
            .is_some_and(|(root, ou)| word(root, 4) && word(ou, 8));
    }
    s.strip_prefix("r-").is_some_and(|root| word(root, 4))
}

/// The alias an account the Organization lists goes by when `EC2PASS_ACCOUNTS` gives it none:
/// its name in lower case, each run of other characters than letters and digits one dash (`Prod
/// EU` → `prod-eu`), at most 32 long; its id when that leaves nothing.
pub fn alias_for(name: &str, id: &str) -> String {
    let mut alias = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            alias.push(c);
        } else if !alias.is_empty() && !alias.ends_with('-') {
            alias.push('-');
        }
    }
    alias.truncate(32);
    let alias = alias.trim_end_matches('-').to_owned();
    if alias.is_empty() {
        id.to_owned()
    } else {
        alias
    }
}

/// An account as AWS Organizations lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgAccount {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether it is active (not suspended, closing or closed).
    pub active: bool,
}

/// The Organization's tree, one parent at a time (`ListAccountsForParent`,
/// `ListOrganizationalUnitsForParent`): all a hub may read of it.
pub trait OrgTree: Send + Sync {
    /// The accounts directly under an OU or root.
    fn accounts_under(
        &self,
        parent: &str,
    ) -> impl Future<Output = Result<Vec<OrgAccount>, String>> + Send;

    /// The OUs directly under an OU or root.
    fn units_under(&self, parent: &str)
    -> impl Future<Output = Result<Vec<String>, String>> + Send;
}

/// An Organizations call that failed, with the SDK's whole error.
fn org_failed<E: std::error::Error>(operation: &str, parent: &str, e: &E) -> String {
    format!(
        "{operation} {parent}: {}",
        aws_sdk_organizations::error::DisplayErrorContext(e)
    )
}

impl OrgTree for aws_sdk_organizations::Client {
    async fn accounts_under(&self, parent: &str) -> Result<Vec<OrgAccount>, String> {
        let mut pages = self
            .list_accounts_for_parent()
            .parent_id(parent)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| org_failed("ListAccountsForParent", parent, &e))?;
            for a in page.accounts() {
                // `State` replaces the deprecated `Status`; either says whether it is active.
                #[allow(deprecated)]
                let active = match (a.state(), a.status()) {
                    (Some(state), _) => state.as_str() == "ACTIVE",
                    (None, Some(status)) => status.as_str() == "ACTIVE",
                    (None, None) => true,
                };
                out.push(OrgAccount {
                    id: a.id().unwrap_or_default().to_owned(),
                    name: a.name().unwrap_or_default().to_owned(),
                    active,
                });
            }
        }
        Ok(out)
    }

    async fn units_under(&self, parent: &str) -> Result<Vec<String>, String> {
        let mut pages = self
            .list_organizational_units_for_parent()
            .parent_id(parent)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| org_failed("ListOrganizationalUnitsForParent", parent, &e))?;
            out.extend(
                page.organizational_units()
                    .iter()
                    .filter_map(|u| u.id().map(str::to_owned)),
            );
        }
        Ok(out)
    }
}

/// The hub as it stands now, and why its members may be out of date.
#[derive(Clone, Debug)]
pub struct Current {
    /// The hub, its members as last read.
    pub hub: Hub,
    /// The Organization could not be read: the members are the last read (or the configured
    /// ones), and this says why.
    pub problem: Option<String>,
}

/// Where a hub's members come from now.
pub trait Roster: Send + Sync {
    /// The hub with its current members.
    fn current(&self) -> impl Future<Output = Current> + Send;
}

/// A hub whose members are the configured ones.
impl Roster for Hub {
    fn current(&self) -> impl Future<Output = Current> + Send {
        std::future::ready(Current {
            hub: self.clone(),
            problem: None,
        })
    }
}

/// How long the members read from the Organization are used before they are read again.
pub const ROSTER_TTL: Duration = Duration::from_secs(10 * 60);

/// After a failed read, how long the last members are used before the next try.
pub const ROSTER_RETRY: Duration = Duration::from_secs(60);

/// Most OUs one read walks (an Organization holds at most 1,000 OUs… and a tree that claims
/// more is not walked for ever).
pub const MOST_UNITS: usize = 2000;

/// The last read: when, the members, and the problem if it failed.
type Read = (tokio::time::Instant, Vec<Member>, Option<String>);

/// How many OUs are read at once.
pub const UNITS_AT_ONCE: usize = 8;

/// A hub whose members are read from the Organization (`EC2PASS_ORG_UNITS`): every active
/// account under the units, with the configured accounts; kept for [`ROSTER_TTL`]. A read that
/// fails keeps the last members (the configured ones at first) and is tried again after
/// [`ROSTER_RETRY`]; [`Current::problem`] says why meanwhile.
///
/// A read runs as a task of its own, so a caller in a hurry ([`OrgRoster::within`]: the
/// issuer, inside Slack's 3 s) waits for it only so long and goes on with the last members: the
/// read goes on (in Lambda, during the next invocations) and serves the calls after it.
pub struct OrgRoster<T> {
    hub: Hub,
    tree: Arc<T>,
    patience: Option<Duration>,
    state: tokio::sync::Mutex<RosterState>,
}

/// The last read, and the read under way.
#[derive(Default)]
struct RosterState {
    last: Option<Read>,
    reading: Option<tokio::task::JoinHandle<Result<Vec<Member>, String>>>,
}

impl<T: OrgTree + 'static> OrgRoster<T> {
    /// Reads `hub.units` with `tree`, each caller waiting for a read to end.
    pub fn new(hub: Hub, tree: T) -> Self {
        Self {
            hub,
            tree: Arc::new(tree),
            patience: None,
            state: tokio::sync::Mutex::new(RosterState::default()),
        }
    }

    /// Waits at most `patience` for a read; meanwhile the last members serve (and, before the
    /// first read ends, the configured ones, with [`Current::problem`] saying the list is not
    /// read yet).
    pub fn within(mut self, patience: Duration) -> Self {
        self.patience = Some(patience);
        self
    }
}

/// Walks the units: every active account under them (sub-OUs included, [`UNITS_AT_ONCE`] at a
/// time), each once, with its configured alias or [`alias_for`] its name; then the configured
/// accounts not found (outside the units), unless the Organization says they are not active.
///
/// An alias from a name two accounts share is neither's (both go by their ids): otherwise
/// whichever the walk met first would have it, and an administrator of a member account who
/// renames it after another could take that account's alias.
async fn read_tree<T: OrgTree>(hub: &Hub, tree: &T) -> Result<Vec<Member>, String> {
    use futures_util::{StreamExt, TryStreamExt};
    let mut level: Vec<String> = hub.units.clone();
    let mut walked = 0;
    let mut found: Vec<OrgAccount> = Vec::new();
    while !level.is_empty() {
        walked += level.len();
        if walked > MOST_UNITS {
            return Err(format!("more than {MOST_UNITS} OUs under {:?}", hub.units));
        }
        let read: Vec<(Vec<OrgAccount>, Vec<String>)> = futures_util::stream::iter(level)
            .map(|unit| async move {
                tokio::try_join!(tree.accounts_under(&unit), tree.units_under(&unit))
            })
            .buffer_unordered(UNITS_AT_ONCE)
            .try_collect()
            .await?;
        level = Vec::new();
        for (accounts, units) in read {
            found.extend(accounts.into_iter().filter(|a| is_account_id(&a.id)));
            level.extend(units);
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found.dedup_by(|a, b| a.id == b.id);
    // Suspended, closing or closed: not a member, even if configured.
    let inactive: Vec<&str> = found
        .iter()
        .filter(|a| !a.active)
        .map(|a| a.id.as_str())
        .collect();
    let active: Vec<&OrgAccount> = found.iter().filter(|a| a.active).collect();
    let configured = |id: &str| hub.members.iter().find(|m| m.id == id);
    let named: Vec<String> = active.iter().map(|a| alias_for(&a.name, &a.id)).collect();
    let mut members: Vec<Member> = Vec::new();
    for (a, from_name) in active.iter().zip(&named) {
        let alias = match configured(&a.id) {
            Some(m) => m.alias.clone(),
            None => {
                let shared = named.iter().filter(|n| *n == from_name).count() > 1;
                let taken = hub.members.iter().any(|m| m.alias == *from_name);
                if shared || taken {
                    a.id.clone()
                } else {
                    from_name.clone()
                }
            }
        };
        members.push(Member {
            alias,
            id: a.id.clone(),
        });
    }
    for m in &hub.members {
        if !members.iter().any(|x| x.id == m.id) && !inactive.contains(&m.id.as_str()) {
            members.push(m.clone());
        }
    }
    Ok(members)
}

impl<T: OrgTree + 'static> Roster for OrgRoster<T> {
    async fn current(&self) -> Current {
        let with = |members: Vec<Member>, problem: Option<String>| Current {
            hub: Hub {
                members,
                ..self.hub.clone()
            },
            problem,
        };
        if self.hub.units.is_empty() {
            return with(self.hub.members.clone(), None);
        }
        let mut state = self.state.lock().await;
        let now = tokio::time::Instant::now();
        if let Some((at, members, problem)) = state.last.as_ref() {
            let keep = if problem.is_some() {
                ROSTER_RETRY
            } else {
                ROSTER_TTL
            };
            if state.reading.is_none() && now.saturating_duration_since(*at) < keep {
                return with(members.clone(), problem.clone());
            }
        }
        let reading = state.reading.get_or_insert_with(|| {
            let (hub, tree) = (self.hub.clone(), self.tree.clone());
            tokio::spawn(async move { read_tree(&hub, &*tree).await })
        });
        let ended = match self.patience {
            None => Some(reading.await),
            Some(patience) => tokio::time::timeout(patience, reading).await.ok(),
        };
        let Some(ended) = ended else {
            // Still reading: the last members meanwhile.
            return match state.last.as_ref() {
                Some((_, members, problem)) => with(members.clone(), problem.clone()),
                None => with(
                    self.hub.members.clone(),
                    Some("the Organization's accounts are still being read".into()),
                ),
            };
        };
        state.reading = None;
        let read =
            ended.unwrap_or_else(|e| Err(format!("the read of the Organization failed: {e}")));
        match read {
            Ok(members) => {
                tracing::info!(members = members.len(), units = ?self.hub.units, "read the Organization's accounts");
                state.last = Some((now, members.clone(), None));
                with(members, None)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the Organization's accounts; the last ones serve");
                let members = state
                    .last
                    .as_ref()
                    .map_or_else(|| self.hub.members.clone(), |(_, m, _)| m.clone());
                state.last = Some((now, members.clone(), Some(e.clone())));
                with(members, Some(e))
            }
        }
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

    #[test]
    fn a_hub_may_read_its_accounts_from_organization_units() {
        let h = hub(&[
            ("EC2PASS_MEMBER_ROLE", "ec2pass-member"),
            ("EC2PASS_REGIONS", "eu-west-1"),
            (
                "EC2PASS_ORG_UNITS",
                "ou-ab12-cdef3456, r-ab12,ou-ab12-cdef3456",
            ),
        ]);
        let h = h.ok().flatten().unwrap_or_else(|| panic!("a hub"));
        assert_eq!(h.units, ["ou-ab12-cdef3456", "r-ab12"]);
        assert!(
            h.members.is_empty(),
            "with units, the list only gives aliases"
        );
        // Without units the list is required; units without a role are half a hub
        let no_list = hub(&[
            ("EC2PASS_MEMBER_ROLE", "ec2pass-member"),
            ("EC2PASS_REGIONS", "eu-west-1"),
        ]);
        assert_eq!(no_list.map_err(|e| e.var), Err("EC2PASS_ACCOUNTS"));
        let half = hub(&[("EC2PASS_ORG_UNITS", "r-ab12")]);
        assert_eq!(half.map_err(|e| e.var), Err("EC2PASS_ORG_UNITS"));
        for bad in [
            "ou-ab12",
            "ou-AB12-cdef3456",
            "r-",
            "o-ab12cdef34",
            "ou-ab12-cdef",
            "arn:aws:organizations::1:ou/o-1/ou-ab12-cdef3456",
        ] {
            assert!(units(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_account_the_configuration_does_not_name_goes_by_its_name() {
        assert_eq!(alias_for("Prod EU", "111111111111"), "prod-eu");
        assert_eq!(alias_for("  Data/Lake (prod) ", "1"), "data-lake-prod");
        assert_eq!(alias_for("☃☃", "111111111111"), "111111111111");
        assert_eq!(alias_for(&"x".repeat(40), "1").len(), 32);
        // What it gives is an alias EC2PASS_ACCOUNTS would accept
        let alias = alias_for("Team A: sandbox #3", "111111111111");
        assert!(members(&format!("{alias}=111111111111")).is_ok(), "{alias}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_in_a_hurry_goes_on_with_the_last_members_while_the_read_goes_on() {
        // Given an Organization that takes 5 s to answer, and a roster that waits 1 s at most
        let org = FakeOrg::new();
        *org.delay.lock().unwrap_or_else(PoisonError::into_inner) = Duration::from_secs(5);
        let roster = OrgRoster::new(org_hub(), org).within(Duration::from_secs(1));
        // When the first call comes, it goes on after 1 s with the configured members, saying
        // the list is not read yet
        let first = roster.current().await;
        assert_eq!(first.hub.members, org_hub().members);
        assert!(
            first
                .problem
                .is_some_and(|p| p.contains("still being read"))
        );
        // And the read went on meanwhile: a call once it is done has the Organization's
        tokio::time::sleep(Duration::from_secs(10)).await;
        let later = roster.current().await;
        assert_eq!(later.problem, None);
        assert!(later.hub.member("111111111111").is_some());
        // One read, not one per call
        assert_eq!(
            roster.tree.calls(),
            2,
            "one ListAccountsForParent per OU walked, once"
        );
    }

    /// An Organization: root `r-root` → OU `ou-root-workload` (accounts) → OU `ou-root-nested`
    /// (one more), and `ou-root-elsewhere` outside the hub's units. Counts its calls; fails
    /// while `failing`.
    #[derive(Default)]
    struct FakeOrg {
        calls: Mutex<usize>,
        failing: Mutex<bool>,
        delay: Mutex<Duration>,
        accounts: Mutex<Vec<(&'static str, OrgAccount)>>,
    }

    fn account(id: &str, name: &str, active: bool) -> OrgAccount {
        OrgAccount {
            id: id.into(),
            name: name.into(),
            active,
        }
    }

    impl FakeOrg {
        fn new() -> Self {
            let org = Self::default();
            *org.accounts.lock().unwrap_or_else(PoisonError::into_inner) = vec![
                ("ou-root-workload", account("111111111111", "Prod EU", true)),
                ("ou-root-workload", account("222222222222", "Sandbox", true)),
                (
                    "ou-root-workload",
                    account("444444444444", "Closed one", false),
                ),
                ("ou-root-nested", account("333333333333", "prod eu", true)),
                (
                    "ou-root-elsewhere",
                    account("555555555555", "Not ours", true),
                ),
            ];
            org
        }

        fn calls(&self) -> usize {
            *self.calls.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    impl OrgTree for FakeOrg {
        async fn accounts_under(&self, parent: &str) -> Result<Vec<OrgAccount>, String> {
            *self.calls.lock().unwrap_or_else(PoisonError::into_inner) += 1;
            let delay = *self.delay.lock().unwrap_or_else(PoisonError::into_inner);
            tokio::time::sleep(delay).await;
            if *self.failing.lock().unwrap_or_else(PoisonError::into_inner) {
                return Err("AccessDeniedException: not delegated".into());
            }
            Ok(self
                .accounts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|(p, _)| *p == parent)
                .map(|(_, a)| a.clone())
                .collect())
        }

        async fn units_under(&self, parent: &str) -> Result<Vec<String>, String> {
            Ok(match parent {
                "r-root" => vec!["ou-root-workload".into(), "ou-root-elsewhere".into()],
                "ou-root-workload" => vec!["ou-root-nested".into()],
                _ => Vec::new(),
            })
        }
    }

    fn org_hub() -> Hub {
        Hub {
            role: "ec2pass-member".into(),
            partition: "aws".into(),
            // A configured alias, and a configured account outside the units
            members: vec![
                Member {
                    alias: "sandbox".into(),
                    id: "222222222222".into(),
                },
                Member {
                    alias: "legacy".into(),
                    id: "999999999999".into(),
                },
                Member {
                    alias: "closed".into(),
                    id: "444444444444".into(),
                },
            ],
            regions: vec!["eu-west-1".into()],
            units: vec!["ou-root-workload".into()],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_roster_is_every_active_account_under_the_units_and_the_configured_ones() {
        let roster = OrgRoster::new(org_hub(), FakeOrg::new());
        let now = roster.current().await;
        assert_eq!(now.problem, None);
        let got: Vec<(&str, &str)> = now
            .hub
            .members
            .iter()
            .map(|m| (m.alias.as_str(), m.id.as_str()))
            .collect();
        // Sub-OUs included, the inactive account (configured or not) and the OU outside the
        // units left out; the configured alias wins; two accounts whose names give the same
        // alias (`Prod EU`, `prod eu`) both go by their ids, whichever the walk meets first;
        // the configured account outside the units stays
        let mut want = vec![
            ("111111111111", "111111111111"),
            ("sandbox", "222222222222"),
            ("333333333333", "333333333333"),
            ("legacy", "999999999999"),
        ];
        let mut got_sorted = got.clone();
        got_sorted.sort_unstable();
        want.sort_unstable();
        assert_eq!(got_sorted, want);
        assert_eq!(now.hub.places().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_roster_is_read_again_after_its_ttl_and_a_failed_read_keeps_the_last() {
        let roster = OrgRoster::new(org_hub(), FakeOrg::new());
        let first = roster.current().await;
        let reads = roster.tree.calls();
        // Within the TTL nothing is read
        tokio::time::advance(ROSTER_TTL / 2).await;
        assert_eq!(roster.current().await.hub, first.hub);
        assert_eq!(roster.tree.calls(), reads);
        // After it, a new account is found
        roster
            .tree
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(("ou-root-nested", account("666666666666", "Joined", true)));
        tokio::time::advance(ROSTER_TTL).await;
        let second = roster.current().await;
        assert!(second.hub.member("666666666666").is_some());
        // A read that fails keeps the last members and says why …
        *roster
            .tree
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        tokio::time::advance(ROSTER_TTL).await;
        let failed = roster.current().await;
        assert_eq!(failed.hub.members, second.hub.members);
        assert!(
            failed
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("AccessDenied")),
            "{failed:?}"
        );
        // … is not tried again at every call, but after ROSTER_RETRY
        let calls = roster.tree.calls();
        assert!(roster.current().await.problem.is_some());
        assert_eq!(roster.tree.calls(), calls);
        *roster
            .tree
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = false;
        tokio::time::advance(ROSTER_RETRY).await;
        assert_eq!(roster.current().await.problem, None);
    }

    #[tokio::test]
    async fn without_units_the_roster_is_the_configured_members_and_reads_nothing() {
        let hub = Hub {
            units: Vec::new(),
            ..org_hub()
        };
        let roster = OrgRoster::new(hub.clone(), FakeOrg::new());
        assert_eq!(roster.current().await.hub, hub);
        assert_eq!(roster.tree.calls(), 0);
        // And the first read that fails falls back to them
        let roster = OrgRoster::new(org_hub(), FakeOrg::new());
        *roster
            .tree
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        let now = roster.current().await;
        assert_eq!(now.hub.members, org_hub().members);
        assert!(now.problem.is_some());
    }
}
