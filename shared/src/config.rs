//! Configuration, read from the environment once at cold start and validated there.
//!
//! A missing or bad value fails the init with a message that names the variable, so a broken
//! deployment is visible on its first invocation instead of misbehaving later. Every variable is
//! documented in `docs/configuration.md`; the defaults are what an operator would pick for a
//! small team.
//!
//! Readers take a lookup function rather than touching the process environment, so tests can
//! pass a map.

use std::fmt;
use std::time::Duration;

use crate::org::Hub;
use crate::reply::Origin;
use crate::time::{format_duration, parse_duration};
use url::Url;

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {var}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// A lookup of a variable's value by name.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Where a setting comes from: a lookup by variable name.
pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl<'a> Env<'a> {
    /// The process environment.
    pub fn process() -> Env<'static> {
        Env {
            lookup: Box::new(|name| std::env::var(name).ok()),
        }
    }

    /// Any lookup, e.g. a map in a test.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self {
            lookup: Box::new(lookup),
        }
    }

    /// The trimmed value, treating empty as unset.
    pub fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A value that must be set.
    pub fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.get(var).ok_or_else(|| ConfigError {
            var,
            problem: "is required but not set".into(),
        })
    }

    /// A boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`), or the default when unset.
    pub fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError {
                var,
                problem: format!("{other:?} is not a boolean (use true or false)"),
            }),
        }
    }

    /// A duration such as `15m` or `2h`, or the default when unset.
    pub fn duration(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(v) => parse_duration(&v).ok_or_else(|| ConfigError {
                var,
                problem: format!("{v:?} is not a duration (write e.g. 90s, 15m or 2h)"),
            }),
        }
    }

    /// A whole number within `range`, or the default when unset.
    pub fn number(
        &self,
        var: &'static str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let Some(v) = self.get(var) else {
            return Ok(default);
        };
        v.parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| ConfigError {
                var,
                problem: format!(
                    "{v:?} is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            })
    }

    /// A comma-separated list of Slack ids (upper-case letters and digits); empty when unset.
    pub fn slack_ids(&self, var: &'static str) -> Result<Vec<String>, ConfigError> {
        let Some(v) = self.get(var) else {
            return Ok(Vec::new());
        };
        v.split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|id| {
                // A Slack id (`T0123ABCD`), or a Mattermost one: 26 lower-case letters and digits.
                let slack = id.len() <= 32
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                let mattermost = id.len() == 26
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                let ok = slack || mattermost;
                if ok {
                    Ok(id.to_owned())
                } else {
                    Err(ConfigError {
                        var,
                        problem: format!(
                            "{id:?} is not a Slack or Mattermost id (ids look like T0123ABCD, or 26 lower-case letters and digits; names are not accepted)"
                        ),
                    })
                }
            })
            .collect()
    }
}

/// The Slack signing secret. Its `Debug` is redacted so it cannot reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret's bytes, for the HMAC key.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// Where the issuer gets the Slack signing secret: a Secrets Manager secret (ARN or name), read
/// once at cold start. The stack encrypts it under a key whose policy lets only the issuer's
/// role and the admin decrypt, so neither `lambda:GetFunctionConfiguration` nor AWS's
/// `ReadOnlyAccess` reveals it (there is deliberately no way to pass the secret itself in an
/// environment variable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSource {
    /// `EC2PASS_SLACK_SIGNING_SECRET_ARN`.
    pub secret_id: String,
}

/// Password lifetimes: the default and the bounds a requester may choose within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// Used when the command names none.
    pub default: Duration,
    /// Shortest a requester may ask for.
    pub min: Duration,
    /// Longest a requester may ask for.
    pub max: Duration,
}

/// Optional allow-lists on Slack ids. An empty list allows everyone; a set list allows only the
/// ids in it. All set lists must allow a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowLists {
    /// `team_id`s (workspaces).
    pub teams: Vec<String>,
    /// `enterprise_id`s (Enterprise Grid organisations).
    pub enterprises: Vec<String>,
    /// `api_app_id`s (the Slack app sending the command).
    pub apps: Vec<String>,
    /// `user_id`s.
    pub users: Vec<String>,
    /// `channel_id`s.
    pub channels: Vec<String>,
}

/// The issuer's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    /// DynamoDB table (`EC2PASS_TABLE`).
    pub table: String,
    /// Slack signing secret source.
    pub signing_secret: SecretSource,
    /// Where the Mattermost slash command's token is kept, when Mattermost is a front
    /// (`EC2PASS_MATTERMOST_TOKEN_SECRET_ARN`; unset or empty: Slack only).
    pub mattermost_token: Option<SecretSource>,
    /// Where the key that seals reply URLs is kept (`EC2PASS_REPLY_KEY_SECRET_ARN`; unset or
    /// empty: no reply URL is kept, so no follow-ups).
    pub reply_key: Option<SecretSource>,
    /// Password lifetimes (`EC2PASS_LIFETIME_DEFAULT`, `_MIN`, `_MAX`).
    pub lifetimes: Lifetimes,
    /// Allow-lists (`EC2PASS_ALLOWED_TEAMS`, `_ENTERPRISES`, `_APPS`, `_USERS`, `_CHANNELS`).
    pub allow: AllowLists,
    /// Whether `/ec2pass` with no instance mints a password any instance may use
    /// (`EC2PASS_ALLOW_UNSCOPED`, default false).
    pub allow_unscoped: bool,
    /// Mints per requester per hour (`EC2PASS_RATE_LIMIT_PER_HOUR`, default 10).
    pub rate_limit_per_hour: u32,
    /// The Organization, when this is a hub's issuer (`EC2PASS_LOOKUP_ROLE`, the read-only role
    /// it assumes in each member account to find an instance; `EC2PASS_ACCOUNTS`;
    /// `EC2PASS_REGIONS`). `None`: this account and region only.
    pub hub: Option<Hub>,
    /// Who may mint for an instance of a given account, on top of the allow-lists
    /// (`EC2PASS_ACCOUNT_USERS`: `alias=U1,U2;alias=U3`): (account id, Slack user ids).
    /// An account not named here: the allow-lists alone.
    pub account_users: Vec<(String, Vec<String>)>,
    /// The origins a command's reply URL may point at for its password's follow-ups to be kept
    /// (`EC2PASS_REPLY_ORIGINS`, default `https://hooks.slack.com`; see [`crate::reply`]).
    pub reply_origins: Vec<Origin>,
}

impl IssuerConfig {
    /// Reads and validates the issuer's configuration.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let signing_secret = SecretSource {
            secret_id: env.required("EC2PASS_SLACK_SIGNING_SECRET_ARN")?,
        };
        let hub = Hub::from_env(env, "EC2PASS_LOOKUP_ROLE", Some(&signing_secret.secret_id))?;
        Ok(Self {
            table: table_name(env)?,
            signing_secret,
            reply_key: env
                .get("EC2PASS_REPLY_KEY_SECRET_ARN")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|secret_id| SecretSource { secret_id }),
            mattermost_token: env
                .get("EC2PASS_MATTERMOST_TOKEN_SECRET_ARN")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|secret_id| SecretSource { secret_id }),
            lifetimes: lifetimes(env)?,
            allow: AllowLists {
                teams: env.slack_ids("EC2PASS_ALLOWED_TEAMS")?,
                enterprises: env.slack_ids("EC2PASS_ALLOWED_ENTERPRISES")?,
                apps: env.slack_ids("EC2PASS_ALLOWED_APPS")?,
                users: env.slack_ids("EC2PASS_ALLOWED_USERS")?,
                channels: env.slack_ids("EC2PASS_ALLOWED_CHANNELS")?,
            },
            allow_unscoped: env.flag("EC2PASS_ALLOW_UNSCOPED", false)?,
            rate_limit_per_hour: env.number("EC2PASS_RATE_LIMIT_PER_HOUR", 10, 1..=1000)?,
            account_users: account_users(env, hub.as_ref())?,
            hub,
            reply_origins: reply_origins(env)?,
        })
    }
}

/// `EC2PASS_REPLY_ORIGINS`, or [`crate::reply::DEFAULT_ORIGINS`].
fn reply_origins(env: &Env<'_>) -> Result<Vec<Origin>, ConfigError> {
    crate::reply::origins(
        &env.get("EC2PASS_REPLY_ORIGINS")
            .unwrap_or_else(|| crate::reply::DEFAULT_ORIGINS.to_owned()),
    )
}

/// The follow-up function's configuration: the table, the reply URLs' origins, and the two
/// optional ways out: the channel topic and the Slack bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowupConfig {
    /// DynamoDB table (`EC2PASS_TABLE`).
    pub table: String,
    /// The origins it posts to (`EC2PASS_REPLY_ORIGINS`, as the issuer's).
    pub reply_origins: Vec<Origin>,
    /// Where the key that opens the stored reply URLs is kept (`EC2PASS_REPLY_KEY_SECRET_ARN`,
    /// the issuer's).
    pub reply_key: SecretSource,
    /// The topic deny alerts are forwarded to as Amazon Q Developer custom notifications
    /// (`EC2PASS_CHAT_TOPIC_ARN`; unset or empty: none).
    pub chat_topic_arn: Option<String>,
    /// Where the Slack bot token is kept (`EC2PASS_SLACK_BOT_TOKEN_SECRET_ARN`; unset or empty:
    /// no direct messages).
    pub bot_token: Option<SecretSource>,
    /// Slack's Web API method for direct messages (`EC2PASS_SLACK_API`, default
    /// `https://slack.com`, followed by `/api/chat.postMessage`; `http://127.0.0.1:<port>` for
    /// a local stand-in only).
    pub post_message: Url,
}

/// Slack's Web API, where the bot's direct messages go.
pub const SLACK_API: &str = "https://slack.com";

impl FollowupConfig {
    /// Reads and validates the follow-up function's configuration.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let set = |var: &str| {
            env.get(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let api = set("EC2PASS_SLACK_API").unwrap_or_else(|| SLACK_API.to_owned());
        let origin = crate::reply::origins(&api)
            .ok()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| ConfigError {
                var: "EC2PASS_SLACK_API",
                problem: format!("{api:?} is not one https origin (or http://127.0.0.1:<port>)"),
            })?;
        let post_message =
            Url::parse(&format!("{api}/api/chat.postMessage")).map_err(|e| ConfigError {
                var: "EC2PASS_SLACK_API",
                problem: format!("{api:?}: {e}"),
            })?;
        debug_assert_eq!(origin.len(), 1);
        Ok(Self {
            table: table_name(env)?,
            reply_origins: reply_origins(env)?,
            reply_key: SecretSource {
                secret_id: env.required("EC2PASS_REPLY_KEY_SECRET_ARN")?,
            },
            chat_topic_arn: set("EC2PASS_CHAT_TOPIC_ARN"),
            bot_token: set("EC2PASS_SLACK_BOT_TOKEN_SECRET_ARN")
                .map(|secret_id| SecretSource { secret_id }),
            post_message,
        })
    }
}

/// `EC2PASS_ACCOUNT_USERS`: `alias=U1,U2;alias=U3`, each alias (or account id) a member of the
/// hub, each user a Slack id.
fn account_users(
    env: &Env<'_>,
    hub: Option<&Hub>,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    const VAR: &str = "EC2PASS_ACCOUNT_USERS";
    let Some(value) = env.get(VAR).filter(|v| !v.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let bad = |problem: String| ConfigError { var: VAR, problem };
    let Some(hub) = hub else {
        return Err(bad(
            "set, but EC2PASS_LOOKUP_ROLE is not: only a hub has accounts".into(),
        ));
    };
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, users)) = entry.split_once('=') else {
            return Err(bad(format!("{entry:?} is not alias=U0123,U0456")));
        };
        let Some(member) = hub.member(name) else {
            return Err(bad(format!(
                "{:?} is not an account of EC2PASS_ACCOUNTS",
                name.trim()
            )));
        };
        let lookup = users.to_owned();
        let users = Env::from_fn(move |_| Some(lookup.clone())).slack_ids(VAR)?;
        if users.is_empty() || out.iter().any(|(id, _)| *id == member.id) {
            return Err(bad(format!(
                "{entry:?} names no user, or its account twice"
            )));
        }
        out.push((member.id.clone(), users));
    }
    Ok(out)
}

/// Which instances the guard guards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardMode {
    /// Every instance except those tagged `<exempt tag>=true`.
    OptOut {
        /// The exemption tag key (`EC2PASS_EXEMPT_TAG`, default `ec2pass:exempt`).
        exempt_tag: String,
    },
    /// Only instances tagged `<guard tag>=true`.
    OptIn {
        /// The opt-in tag key (`EC2PASS_GUARD_TAG`, default `ec2pass:guard`).
        guard_tag: String,
    },
}

/// What to do with an instance that cannot be stopped (instance-store root, one-time Spot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unstoppable {
    /// Alert loudly, leave it running (an opt-in: a launch flag then beats the guard).
    AlertOnly,
    /// Terminate it, clearing termination protection first (default).
    Terminate,
}

/// Which Auto Scaling groups' members are exempt. Anyone with `autoscaling:*` (it is in
/// `AmazonEC2FullAccess`) can make a group, so membership alone proves nothing: only groups an
/// admin listed count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ExemptGroups {
    /// No group's members are exempt (default).
    #[default]
    None,
    /// Members of these groups (by name) are exempt.
    Named(Vec<String>),
    /// Every group's members are exempt (`*`): an opt-in whose risk docs/configuration.md states.
    All,
}

impl ExemptGroups {
    /// Whether members of the group `name` are exempt.
    pub fn exempts(&self, name: &str) -> bool {
        match self {
            ExemptGroups::None => false,
            ExemptGroups::Named(names) => names.iter().any(|n| n == name),
            ExemptGroups::All => true,
        }
    }
}

/// What to do when AWS cannot be reached after the SDK's retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Try to stop the instance anyway (default).
    Closed,
    /// Let the start stand; alert only.
    Open,
}

/// The guard's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// DynamoDB table (`EC2PASS_TABLE`).
    pub table: String,
    /// SNS topic for alerts (`EC2PASS_ALERT_TOPIC_ARN`).
    pub topic_arn: String,
    /// The tag that carries the password (`EC2PASS_AUTH_TAG`, default `Auth`).
    pub auth_tag: String,
    /// Opt-out or opt-in (`EC2PASS_GUARD_MODE`, default `opt-out`).
    pub mode: GuardMode,
    /// Auto Scaling groups whose members are exempt (`EC2PASS_EXEMPT_GROUPS`: comma-separated
    /// names, `*` for all; default none).
    pub exempt_groups: ExemptGroups,
    /// Unstoppable instances (`EC2PASS_UNSTOPPABLE_ACTION`: `terminate` (default) or `alert-only`).
    pub unstoppable: Unstoppable,
    /// Whether to clear stop protection to stop a denied instance
    /// (`EC2PASS_CLEAR_STOP_PROTECTION`, default true).
    pub clear_stop_protection: bool,
    /// Alerts for every exemption, auditing or not (`EC2PASS_ALERT_EXEMPTIONS`, default true):
    /// an exemption is a door.
    pub alert_exemptions: bool,
    /// `EC2PASS_FAIL_MODE`: `closed` (default) or `open`.
    pub fail_mode: FailMode,
    /// Alerts for allows and exemptions too (`EC2PASS_AUDIT_ALERTS`, default false).
    pub audit_alerts: bool,
    /// How long verdicts are kept (`EC2PASS_VERDICT_RETENTION`, default `90d`); longer than
    /// [`GuardConfig::sweep_window`].
    pub verdict_retention: Duration,
    /// How old a start may be and still be decided (`EC2PASS_SWEEP_WINDOW`, default `24h`).
    /// A start older than this with no verdict is left alone on every path: its verdict may
    /// simply have aged out of the table, and time must never stop an authorized server.
    pub sweep_window: Duration,
    /// Pause before describing a tagless pending instance again (`EC2PASS_TAG_RETRY_DELAY`,
    /// default 1s; tags can lag behind a launch).
    pub tag_retry_delay: Duration,
    /// Starts at or before this (epoch seconds) are never touched, on any path
    /// (`EC2PASS_ACTIVATION_TIME`; default: when the stack created the table).
    pub activation_time: Option<i64>,
    /// The state-change queue (`EC2PASS_STATE_CHANGE_QUEUE_URL`): a batch hands back the
    /// messages of starts it cannot finish yet (still `pending`) with this short visibility,
    /// instead of waiting for them. Unset: they come back after the queue's visibility timeout.
    pub state_change_queue_url: Option<String>,
    /// How soon a start handed back while `pending` comes back (`EC2PASS_RECHECK_DELAY`,
    /// default 5s, 1s to 60s); doubled on each return, up to a minute.
    pub recheck_delay: Duration,
    /// The Organization, when this is a hub's guard (`EC2PASS_MEMBER_ROLE`, the role it assumes
    /// in each member account to act there; `EC2PASS_ACCOUNTS`; `EC2PASS_REGIONS`). `None`:
    /// this account and region only, with the function's own credentials.
    pub hub: Option<Hub>,
}

impl GuardConfig {
    /// Reads and validates the guard's configuration.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let topic_arn = env.required("EC2PASS_ALERT_TOPIC_ARN")?;
        if !topic_arn.starts_with("arn:") || topic_arn.split(':').count() != 6 {
            return Err(ConfigError {
                var: "EC2PASS_ALERT_TOPIC_ARN",
                problem: format!("{topic_arn:?} is not an SNS topic ARN"),
            });
        }
        let tag = |var: &'static str, default: &str| -> Result<String, ConfigError> {
            let key = env.get(var).unwrap_or_else(|| default.to_owned());
            if key.len() > 128 || key.to_ascii_lowercase().starts_with("aws:") {
                return Err(ConfigError {
                    var,
                    problem: format!("{key:?} is not a usable tag key"),
                });
            }
            Ok(key)
        };
        let mode = match env.get("EC2PASS_GUARD_MODE").as_deref() {
            None | Some("opt-out") => GuardMode::OptOut {
                exempt_tag: tag("EC2PASS_EXEMPT_TAG", "ec2pass:exempt")?,
            },
            Some("opt-in") => GuardMode::OptIn {
                guard_tag: tag("EC2PASS_GUARD_TAG", "ec2pass:guard")?,
            },
            Some(other) => {
                return Err(ConfigError {
                    var: "EC2PASS_GUARD_MODE",
                    problem: format!("{other:?} is neither opt-out nor opt-in"),
                });
            }
        };
        let unstoppable = match env.get("EC2PASS_UNSTOPPABLE_ACTION").as_deref() {
            Some("alert-only") => Unstoppable::AlertOnly,
            None | Some("terminate") => Unstoppable::Terminate,
            Some(other) => {
                return Err(ConfigError {
                    var: "EC2PASS_UNSTOPPABLE_ACTION",
                    problem: format!("{other:?} is neither alert-only nor terminate"),
                });
            }
        };
        let fail_mode = match env.get("EC2PASS_FAIL_MODE").as_deref() {
            None | Some("closed") => FailMode::Closed,
            Some("open") => FailMode::Open,
            Some(other) => {
                return Err(ConfigError {
                    var: "EC2PASS_FAIL_MODE",
                    problem: format!("{other:?} is neither closed nor open"),
                });
            }
        };
        let activation_time = match env.get("EC2PASS_ACTIVATION_TIME") {
            None => None,
            Some(v) => {
                Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|t| *t > 0)
                        .ok_or_else(|| ConfigError {
                            var: "EC2PASS_ACTIVATION_TIME",
                            problem: format!("{v:?} is not a time in seconds since the epoch"),
                        })?,
                )
            }
        };
        let tag_retry_delay = env.duration("EC2PASS_TAG_RETRY_DELAY", Duration::from_secs(1))?;
        if tag_retry_delay > Duration::from_secs(10) {
            return Err(ConfigError {
                var: "EC2PASS_TAG_RETRY_DELAY",
                problem: "at most 10s: an unauthorized instance runs meanwhile".into(),
            });
        }
        let recheck_delay = env.duration("EC2PASS_RECHECK_DELAY", Duration::from_secs(5))?;
        if recheck_delay < Duration::from_secs(1) || recheck_delay > Duration::from_secs(60) {
            return Err(ConfigError {
                var: "EC2PASS_RECHECK_DELAY",
                problem: "from 1s to 60s: a pending start is looked at again this soon".into(),
            });
        }
        let state_change_queue_url = env.get("EC2PASS_STATE_CHANGE_QUEUE_URL");
        if let Some(url) = &state_change_queue_url
            && !(url.starts_with("https://") || url.starts_with("http://127.0.0.1"))
        {
            return Err(ConfigError {
                var: "EC2PASS_STATE_CHANGE_QUEUE_URL",
                problem: format!("{url:?} is not an SQS queue URL"),
            });
        }
        let sweep_window = env.duration("EC2PASS_SWEEP_WINDOW", Duration::from_secs(86_400))?;
        if sweep_window < Duration::from_secs(3600) {
            return Err(ConfigError {
                var: "EC2PASS_SWEEP_WINDOW",
                problem: "at least 1h: a lost event must still be caught by a sweep".into(),
            });
        }
        let verdict_retention = env.duration(
            "EC2PASS_VERDICT_RETENTION",
            Duration::from_secs(90 * 86_400),
        )?;
        if verdict_retention < sweep_window + Duration::from_secs(86_400) {
            return Err(ConfigError {
                var: "EC2PASS_VERDICT_RETENTION",
                problem: format!(
                    "must be at least a day longer than EC2PASS_SWEEP_WINDOW ({}): a start the \
                     guard may still decide must keep its verdict",
                    format_duration(sweep_window)
                ),
            });
        }
        let hub = Hub::from_env(env, "EC2PASS_MEMBER_ROLE", Some(&topic_arn))?;
        Ok(Self {
            table: table_name(env)?,
            topic_arn,
            auth_tag: tag("EC2PASS_AUTH_TAG", "Auth")?,
            mode,
            exempt_groups: exempt_groups(env)?,
            unstoppable,
            clear_stop_protection: env.flag("EC2PASS_CLEAR_STOP_PROTECTION", true)?,
            alert_exemptions: env.flag("EC2PASS_ALERT_EXEMPTIONS", true)?,
            fail_mode,
            audit_alerts: env.flag("EC2PASS_AUDIT_ALERTS", false)?,
            verdict_retention,
            sweep_window,
            tag_retry_delay,
            activation_time,
            state_change_queue_url,
            recheck_delay,
            hub,
        })
    }
}

/// `EC2PASS_EXEMPT_GROUPS`: Auto Scaling group names (1 to 255 characters, no commas), or `*`.
fn exempt_groups(env: &Env<'_>) -> Result<ExemptGroups, ConfigError> {
    let var = "EC2PASS_EXEMPT_GROUPS";
    let Some(v) = env.get(var) else {
        return Ok(ExemptGroups::None);
    };
    if v == "*" {
        return Ok(ExemptGroups::All);
    }
    let names: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = names
        .iter()
        .find(|n| n.len() > 255 || n.contains('*') || n.chars().any(char::is_control))
    {
        return Err(ConfigError {
            var,
            problem: format!("{bad:?} is not an Auto Scaling group name (or use * alone)"),
        });
    }
    Ok(if names.is_empty() {
        ExemptGroups::None
    } else {
        ExemptGroups::Named(names)
    })
}

/// `EC2PASS_TABLE`, checked against DynamoDB's naming rules.
pub fn table_name(env: &Env<'_>) -> Result<String, ConfigError> {
    let table = env.required("EC2PASS_TABLE")?;
    let ok = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(table)
    } else {
        Err(ConfigError {
            var: "EC2PASS_TABLE",
            problem: format!("{table:?} is not a valid DynamoDB table name"),
        })
    }
}

fn lifetimes(env: &Env<'_>) -> Result<Lifetimes, ConfigError> {
    let l = Lifetimes {
        default: env.duration("EC2PASS_LIFETIME_DEFAULT", Duration::from_secs(15 * 60))?,
        min: env.duration("EC2PASS_LIFETIME_MIN", Duration::from_secs(5 * 60))?,
        max: env.duration("EC2PASS_LIFETIME_MAX", Duration::from_secs(4 * 3600))?,
    };
    if l.min < Duration::from_secs(60) {
        return Err(ConfigError {
            var: "EC2PASS_LIFETIME_MIN",
            problem: "must be at least 1m: a password needs time to be pasted".into(),
        });
    }
    if l.max > Duration::from_secs(24 * 3600) || l.max < l.min {
        return Err(ConfigError {
            var: "EC2PASS_LIFETIME_MAX",
            problem: format!(
                "must be between EC2PASS_LIFETIME_MIN ({}) and 24h",
                format_duration(l.min)
            ),
        });
    }
    if !(l.min..=l.max).contains(&l.default) {
        return Err(ConfigError {
            var: "EC2PASS_LIFETIME_DEFAULT",
            problem: format!(
                "must be between {} and {}",
                format_duration(l.min),
                format_duration(l.max)
            ),
        });
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn read(pairs: &[(&str, &str)]) -> Result<IssuerConfig, ConfigError> {
        let map = env(pairs);
        IssuerConfig::from_env(&Env::from_fn(|k| map.get(k).cloned()))
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("EC2PASS_TABLE", "ec2pass"),
        (
            "EC2PASS_SLACK_SIGNING_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:ec2pass-slack-AbCdEf",
        ),
    ];

    #[test]
    fn defaults_fill_in_everything_optional() {
        let c = read(MINIMAL).map_err(|e| e.to_string());
        let c = c
            .as_ref()
            .map(|c| (c.lifetimes, c.rate_limit_per_hour, c.allow_unscoped));
        assert_eq!(
            c,
            Ok((
                Lifetimes {
                    default: Duration::from_secs(900),
                    min: Duration::from_secs(300),
                    max: Duration::from_secs(14_400)
                },
                10,
                false
            ))
        );
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        // (variable to set, or to unset with None; the variable the error must name)
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("EC2PASS_TABLE", None, "EC2PASS_TABLE"),
            ("EC2PASS_TABLE", Some("t t t"), "EC2PASS_TABLE"),
            (
                "EC2PASS_SLACK_SIGNING_SECRET_ARN",
                None,
                "EC2PASS_SLACK_SIGNING_SECRET_ARN",
            ),
            (
                "EC2PASS_LIFETIME_DEFAULT",
                Some("forever"),
                "EC2PASS_LIFETIME_DEFAULT",
            ),
            (
                "EC2PASS_LIFETIME_DEFAULT",
                Some("5h"),
                "EC2PASS_LIFETIME_DEFAULT",
            ),
            ("EC2PASS_LIFETIME_MIN", Some("30s"), "EC2PASS_LIFETIME_MIN"),
            ("EC2PASS_LIFETIME_MAX", Some("2m"), "EC2PASS_LIFETIME_MAX"),
            (
                "EC2PASS_RATE_LIMIT_PER_HOUR",
                Some("0"),
                "EC2PASS_RATE_LIMIT_PER_HOUR",
            ),
            (
                "EC2PASS_RATE_LIMIT_PER_HOUR",
                Some("ten"),
                "EC2PASS_RATE_LIMIT_PER_HOUR",
            ),
            (
                "EC2PASS_ALLOW_UNSCOPED",
                Some("maybe"),
                "EC2PASS_ALLOW_UNSCOPED",
            ),
            (
                "EC2PASS_ALLOWED_CHANNELS",
                Some("#general"),
                "EC2PASS_ALLOWED_CHANNELS",
            ),
        ];
        for &(var, value, named) in cases {
            let mut pairs: Vec<(&str, &str)> =
                MINIMAL.iter().copied().filter(|(k, _)| *k != var).collect();
            if let Some(value) = value {
                pairs.push((var, value));
            }
            let err = read(&pairs).err().map(|e| e.var);
            assert_eq!(err, Some(named), "{var}={value:?}");
        }
    }

    fn read_guard(pairs: &[(&str, &str)]) -> Result<GuardConfig, ConfigError> {
        let map = env(pairs);
        GuardConfig::from_env(&Env::from_fn(|k| map.get(k).cloned()))
    }

    const GUARD: &[(&str, &str)] = &[
        ("EC2PASS_TABLE", "ec2pass"),
        (
            "EC2PASS_ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:ec2pass-alerts",
        ),
    ];

    #[test]
    fn the_guard_defaults_leave_no_launch_flag_a_way_past_it() {
        let c = read_guard(GUARD).map_err(|e| e.to_string());
        let c = c.as_ref().map(|c| {
            (
                c.mode.clone(),
                c.fail_mode,
                c.unstoppable,
                c.clear_stop_protection,
                c.exempt_groups.clone(),
                c.alert_exemptions,
                c.audit_alerts,
                c.auth_tag.as_str(),
                c.sweep_window,
            )
        });
        assert_eq!(
            c,
            Ok((
                GuardMode::OptOut {
                    exempt_tag: "ec2pass:exempt".into()
                },
                FailMode::Closed,
                Unstoppable::Terminate,
                true,
                ExemptGroups::None,
                true,
                false,
                "Auth",
                Duration::from_secs(86_400),
            ))
        );
    }

    #[test]
    fn exempt_groups_are_named_or_all() {
        let named = [GUARD, &[("EC2PASS_EXEMPT_GROUPS", " web , batch,")]].concat();
        let groups = read_guard(&named).map(|c| c.exempt_groups);
        assert_eq!(
            groups,
            Ok(ExemptGroups::Named(vec!["web".into(), "batch".into()]))
        );
        let g = groups.unwrap_or_default();
        assert!(g.exempts("web") && !g.exempts("we") && !g.exempts("attacker"));
        let all = [GUARD, &[("EC2PASS_EXEMPT_GROUPS", "*")]].concat();
        assert!(read_guard(&all).is_ok_and(|c| c.exempt_groups.exempts("anything")));
        assert!(!ExemptGroups::None.exempts("web"));
    }

    #[test]
    fn verdicts_outlive_the_window_in_which_starts_are_decided() {
        let short = [GUARD, &[("EC2PASS_VERDICT_RETENTION", "24h")]].concat();
        assert_eq!(
            read_guard(&short).err().map(|e| e.var),
            Some("EC2PASS_VERDICT_RETENTION")
        );
        let fits = [
            GUARD,
            &[
                ("EC2PASS_VERDICT_RETENTION", "3d"),
                ("EC2PASS_SWEEP_WINDOW", "2d"),
            ],
        ]
        .concat();
        assert!(read_guard(&fits).is_ok());
        let too_wide = [GUARD, &[("EC2PASS_SWEEP_WINDOW", "90d")]].concat();
        assert_eq!(
            read_guard(&too_wide).err().map(|e| e.var),
            Some("EC2PASS_VERDICT_RETENTION")
        );
    }

    #[test]
    fn bad_guard_settings_name_their_variable() {
        for (var, value) in [
            ("EC2PASS_ALERT_TOPIC_ARN", "my-topic"),
            ("EC2PASS_GUARD_MODE", "sometimes"),
            ("EC2PASS_UNSTOPPABLE_ACTION", "explode"),
            ("EC2PASS_FAIL_MODE", "ajar"),
            ("EC2PASS_AUDIT_ALERTS", "loud"),
            ("EC2PASS_AUTH_TAG", "aws:auth"),
            ("EC2PASS_ACTIVATION_TIME", "yesterday"),
            ("EC2PASS_TAG_RETRY_DELAY", "1h"),
            ("EC2PASS_VERDICT_RETENTION", "forever"),
            ("EC2PASS_SWEEP_WINDOW", "10m"),
            ("EC2PASS_EXEMPT_GROUPS", "web*"),
            ("EC2PASS_ALERT_EXEMPTIONS", "hush"),
            ("EC2PASS_CLEAR_STOP_PROTECTION", "nah"),
        ] {
            let mut pairs: Vec<(&str, &str)> =
                GUARD.iter().copied().filter(|(k, _)| *k != var).collect();
            pairs.push((var, value));
            assert_eq!(
                read_guard(&pairs).err().map(|e| e.var),
                Some(var),
                "{var}={value}"
            );
        }
        let opt_in = [GUARD, &[("EC2PASS_GUARD_MODE", "opt-in")]].concat();
        assert_eq!(
            read_guard(&opt_in).map(|c| c.mode).ok(),
            Some(GuardMode::OptIn {
                guard_tag: "ec2pass:guard".into()
            })
        );
    }

    #[test]
    fn allow_lists_are_split_and_trimmed() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("EC2PASS_ALLOWED_USERS", " U1, U2 ,,"));
        let users = read(&pairs).map(|c| c.allow.users);
        assert_eq!(users, Ok(vec!["U1".to_owned(), "U2".to_owned()]));
    }

    #[test]
    fn the_signing_secret_never_shows_in_debug_output() {
        let secret = SigningSecret::new("s3cr3t");
        assert_eq!(format!("{secret:?}"), "SigningSecret(<redacted>)");
    }

    #[test]
    fn the_signing_secret_cannot_come_from_the_environment() {
        // `lambda:GetFunctionConfiguration` shows a function's environment to read-only users:
        // a secret set there is read, so the issuer reads only the Secrets Manager secret.
        let mut pairs = vec![("EC2PASS_TABLE", "ec2pass")];
        pairs.push(("EC2PASS_SLACK_SIGNING_SECRET", "s3cr3t"));
        assert_eq!(
            read(&pairs).err().map(|e| e.var),
            Some("EC2PASS_SLACK_SIGNING_SECRET_ARN")
        );
        let c = read(MINIMAL).map(|c| c.signing_secret.secret_id);
        assert!(c.is_ok_and(|id| id.starts_with("arn:aws:secretsmanager:")));
    }
}
