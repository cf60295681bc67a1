//! The opt-in response to an attributed deny (SPEC §11): cut the caller off.
//!
//! - An IAM user's long-term access key (`AKIA…`) is deactivated (`UpdateAccessKey`, status
//!   `Inactive`): the key stops working at once, and it can be made active again.
//! - A role session's role gets the inline policy the IAM console's "Revoke active sessions"
//!   writes (`AWSRevokeOlderSessions`): every action denied to sessions whose
//!   `aws:TokenIssueTime` is before now ("Revoking IAM role temporary security credentials",
//!   IAM User Guide). Sessions issued later (the role's rightful users signing in again) work.
//!
//! Never acted on, whatever the configuration (the rails, each its own test): the root user;
//! the admin principal; ec2pass's own roles; a service-linked role (AWS refuses to change one,
//! and the service acted for someone else: that someone is who to find); an IAM Identity Center
//! role (AWS protects those too: the user's sessions are revoked in Identity Center); principals
//! in the allow-list; a principal of another account than the one the responder runs in; an AWS
//! service; a federated user or an IAM user's temporary credentials (no API ends those without
//! touching the user who issued them: the alert says what to do by hand). Deciding is a plain
//! function, [`plan`]; [`Iam`] does it.

use std::future::Future;
use std::time::Duration;

use ec2pass_shared::caller::Caller;
use ec2pass_shared::config::{ConfigError, Env};
use ec2pass_shared::time::UnixTime;
use serde_json::json;

/// The name of the revocation policy: the one the IAM console writes, so either undoes the other.
pub const REVOKE_POLICY: &str = "AWSRevokeOlderSessions";

/// What may be acted on, and whether anything is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rails {
    /// Whether to act at all (`EC2PASS_RESPONSE`: `off`, the default, or `on`).
    pub enabled: bool,
    /// The account the responder acts in (its own).
    pub account: String,
    /// The admin principal's ARN (`EC2PASS_ADMIN_ARN`): never acted on.
    pub admin: String,
    /// ec2pass's own roles, by name (`EC2PASS_OWN_ROLES`; a trailing `*` matches a prefix).
    pub own_roles: Vec<String>,
    /// Principals never acted on (`EC2PASS_RESPONSE_ALLOW`: user or role ARNs, a trailing `*`
    /// matches a prefix).
    pub allow: Vec<String>,
}

impl Rails {
    /// Reads the rails; `account` is the responder's own.
    pub fn from_env(env: &Env<'_>, account: &str) -> Result<Self, ConfigError> {
        let enabled = match env.get("EC2PASS_RESPONSE").as_deref().map(str::trim) {
            None | Some("" | "off") => false,
            Some("on") => true,
            Some(other) => {
                return Err(ConfigError {
                    var: "EC2PASS_RESPONSE",
                    problem: format!("{other:?} is neither off nor on"),
                });
            }
        };
        let list = |var: &'static str| -> Result<Vec<String>, ConfigError> {
            let items: Vec<String> = env
                .get(var)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            match items.iter().find(|s| {
                s.len() > 2048 || s == &"*" || s.strip_suffix('*').unwrap_or(s).contains('*')
            }) {
                Some(bad) => Err(ConfigError {
                    var,
                    problem: format!("{bad:?}: a name or ARN, with at most a trailing *"),
                }),
                None => Ok(items),
            }
        };
        let admin = env
            .get("EC2PASS_ADMIN_ARN")
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| format!("arn:aws:iam::{account}:role/ec2pass-admin"));
        Ok(Self {
            enabled,
            account: account.to_owned(),
            admin,
            own_roles: list("EC2PASS_OWN_ROLES")?,
            allow: list("EC2PASS_RESPONSE_ALLOW")?,
        })
    }
}

/// One action on one principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Deactivate an IAM user's access key.
    DeactivateKey {
        /// The user.
        user: String,
        /// The key (`AKIA…`).
        key: String,
    },
    /// Revoke a role's sessions issued before the action.
    RevokeSessions {
        /// The role's name (its path is not part of it).
        role: String,
        /// The role's ARN.
        arn: String,
    },
}

impl Action {
    /// The principal it acts on, as the claim for "one action per principal per burst" names it.
    pub fn principal(&self) -> String {
        match self {
            Action::DeactivateKey { user, key } => format!("key#{user}#{key}"),
            Action::RevokeSessions { arn, .. } => format!("role#{arn}"),
        }
    }

    /// The alert's reason for it.
    pub fn reason(&self) -> &'static str {
        match self {
            Action::DeactivateKey { .. } => "deactivated-key",
            Action::RevokeSessions { .. } => "revoked-sessions",
        }
    }

    /// What was done, and the command that undoes it.
    pub fn told(&self, at: UnixTime) -> String {
        match self {
            Action::DeactivateKey { user, key } => format!(
                "Access key {key} of IAM user {user} was deactivated. To undo: aws iam \
                 update-access-key --user-name {user} --access-key-id {key} --status Active"
            ),
            Action::RevokeSessions { role, .. } => format!(
                "Sessions of role {role} issued before {} were revoked (inline policy \
                 {REVOKE_POLICY}). To undo: aws iam delete-role-policy --role-name {role} \
                 --policy-name {REVOKE_POLICY}",
                at.rfc3339()
            ),
        }
    }
}

/// What to do about the caller of a denied start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The response is off: alert only.
    Off,
    /// A rail holds: nothing is done, and the alert says why.
    Refused(String),
    /// Act, unless an action taken after the call covers it (see
    /// [`ec2pass_shared::store::ResponseStore`]).
    Act(Action),
}

/// What to do about `caller` (a pure decision: every rail is here).
pub fn plan(caller: &Caller, rails: &Rails) -> Plan {
    if !rails.enabled {
        return Plan::Off;
    }
    let refuse = |why: &str| Plan::Refused(why.to_owned());
    let kind = caller.principal_type.as_str();
    if kind == "Root" {
        return refuse("the root user is never cut off automatically");
    }
    let (target_arn, action) = match kind {
        "IAMUser" => {
            let (Some(arn), Some(user), Some(key)) = (
                caller.principal_arn.as_deref(),
                caller.user_name.as_deref(),
                caller.access_key_id.as_deref(),
            ) else {
                return refuse("the IAM user or its access key is not in the record");
            };
            if !key.starts_with("AKIA") {
                return refuse(
                    "the call was made with an IAM user's temporary credentials \
                     (GetSessionToken): deactivate the user's access keys by hand",
                );
            }
            (
                arn.to_owned(),
                Action::DeactivateKey {
                    user: user.to_owned(),
                    key: key.to_owned(),
                },
            )
        }
        "AssumedRole" => {
            let Some(arn) = caller
                .session_issuer
                .as_deref()
                .filter(|a| a.contains(":role/"))
            else {
                return refuse("the session's role is not in the record");
            };
            let Some(role) = arn.rsplit('/').next().filter(|r| !r.is_empty()) else {
                return refuse("the session's role is not in the record");
            };
            if arn.contains(":role/aws-service-role/") {
                return refuse(
                    "a service-linked role: AWS does not let it be changed; find who \
                     configured the service",
                );
            }
            if arn.contains(":role/aws-reserved/") {
                return refuse(
                    "an IAM Identity Center role (AWS protects it): revoke the user's sessions in \
                     IAM Identity Center",
                );
            }
            if arn == rails.admin {
                return refuse("the admin is never cut off");
            }
            if rails.own_roles.iter().any(|p| matches(p, role)) {
                return refuse("one of ec2pass's own roles is never cut off");
            }
            (
                arn.to_owned(),
                Action::RevokeSessions {
                    role: role.to_owned(),
                    arn: arn.to_owned(),
                },
            )
        }
        "FederatedUser" => {
            return refuse(
                "a federated user (GetFederationToken): its session cannot be revoked alone; \
                 deactivate the issuing user's keys by hand",
            );
        }
        "AWSService" => return refuse("an AWS service made the call"),
        _ => return refuse(&format!("a {kind:?} principal is not acted on")),
    };
    if caller.account.as_deref() != Some(rails.account.as_str())
        || arn_account(&target_arn) != Some(rails.account.as_str())
    {
        return refuse("the principal is of another account than the responder's");
    }
    if target_arn == rails.admin || caller.principal_arn.as_deref() == Some(rails.admin.as_str()) {
        return refuse("the admin is never cut off");
    }
    let listed = |arn: &str| rails.allow.iter().any(|p| matches(p, arn));
    if listed(&target_arn) || caller.principal_arn.as_deref().is_some_and(listed) {
        return refuse("the principal is in the response allow-list");
    }
    Plan::Act(action)
}

/// `pattern` (a trailing `*` matches a prefix) against `name`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The account of an IAM or STS ARN (`arn:aws:iam::<account>:…`).
fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// The revocation policy: deny everything to sessions issued before `at` (the document the IAM
/// console writes).
pub fn revoke_policy(at: UnixTime) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Action": ["*"],
            "Resource": ["*"],
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": at.rfc3339()}}
        }]
    })
    .to_string()
}

/// An action IAM did not carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamError {
    /// What IAM (or the network) said.
    pub message: String,
    /// Whether trying again may succeed (throttled, unavailable, timed out); `false` for a
    /// refusal that stays (access denied, no such entity, a protected role).
    pub retry: bool,
}

impl std::fmt::Display for IamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// IAM, for exactly the two actions.
pub trait Iam: Send + Sync {
    /// Carries out `action` at `at`.
    fn act(
        &self,
        action: &Action,
        at: UnixTime,
    ) -> impl Future<Output = Result<(), IamError>> + Send;
}

/// What an IAM error means for trying again: throttling, IAM's own failure or no answer may
/// pass; anything else (access denied, no such entity, a protected role) stays.
fn iam_error<E, R>(e: &aws_sdk_iam::error::SdkError<E, R>) -> IamError
where
    E: aws_sdk_iam::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_iam::error::SdkError;
    let retry = match e {
        SdkError::ServiceError(se) => matches!(
            se.err().code(),
            Some("Throttling" | "ThrottlingException" | "ServiceFailure" | "ServiceUnavailable")
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    };
    IamError {
        message: aws_sdk_iam::error::DisplayErrorContext(e).to_string(),
        retry,
    }
}

/// IAM through the SDK.
#[derive(Clone, Debug)]
pub struct IamClient(pub aws_sdk_iam::Client);

impl Iam for IamClient {
    async fn act(&self, action: &Action, at: UnixTime) -> Result<(), IamError> {
        match action {
            Action::DeactivateKey { user, key } => self
                .0
                .update_access_key()
                .user_name(user)
                .access_key_id(key)
                .status(aws_sdk_iam::types::StatusType::Inactive)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| iam_error(&e)),
            Action::RevokeSessions { role, .. } => self
                .0
                .put_role_policy()
                .role_name(role)
                .policy_name(REVOKE_POLICY)
                .policy_document(revoke_policy(at))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| iam_error(&e)),
        }
    }
}

/// How long a response claim is kept: longer than any burst, so the burst acts once.
pub const RESPONSE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a response claim is held while its action and alert are in hand: a holder that
/// died is taken over on the call's next delivery.
pub const RESPONSE_LEASE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn rails() -> Rails {
        Rails {
            enabled: true,
            account: "123456789012".into(),
            admin: "arn:aws:iam::123456789012:role/ec2pass-admin".into(),
            own_roles: vec!["ec2pass-*".into(), "ec2pass-member".into()],
            allow: vec!["arn:aws:iam::123456789012:role/break-glass".into()],
        }
    }

    fn user(key: &str) -> Caller {
        Caller {
            principal_type: "IAMUser".into(),
            principal_arn: Some("arn:aws:iam::123456789012:user/Mateo".into()),
            account: Some("123456789012".into()),
            user_name: Some("Mateo".into()),
            access_key_id: Some(key.into()),
            session_issuer: None,
            session_created: None,
            mfa: None,
            invoked_by: None,
            source_ip: None,
            user_agent: None,
            event_name: "RunInstances".into(),
            event_id: "e".into(),
            event_time: "2026-12-02T10:00:00Z".into(),
        }
    }

    fn role(name: &str) -> Caller {
        Caller {
            principal_type: "AssumedRole".into(),
            principal_arn: Some(format!("arn:aws:sts::123456789012:assumed-role/{name}/s")),
            user_name: None,
            access_key_id: Some("ASIAIOSFODNN7EXAMPLE".into()),
            session_issuer: Some(format!("arn:aws:iam::123456789012:role/{name}")),
            session_created: Some("2026-12-02T09:30:00Z".into()),
            ..user("x")
        }
    }

    fn refused(p: Plan) -> String {
        match p {
            Plan::Refused(why) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_users_key_is_deactivated_and_a_roles_sessions_revoked() {
        assert_eq!(
            plan(&user("AKIAIOSFODNN7EXAMPLE"), &rails()),
            Plan::Act(Action::DeactivateKey {
                user: "Mateo".into(),
                key: "AKIAIOSFODNN7EXAMPLE".into()
            })
        );
        assert_eq!(
            plan(&role("developer"), &rails()),
            Plan::Act(Action::RevokeSessions {
                role: "developer".into(),
                arn: "arn:aws:iam::123456789012:role/developer".into()
            })
        );
    }

    #[test]
    fn with_the_response_off_nothing_is_planned() {
        let off = Rails {
            enabled: false,
            ..rails()
        };
        assert_eq!(plan(&user("AKIAIOSFODNN7EXAMPLE"), &off), Plan::Off);
        assert_eq!(plan(&role("developer"), &off), Plan::Off);
    }

    #[test]
    fn the_admin_is_never_cut_off() {
        assert!(refused(plan(&role("ec2pass-admin"), &rails())).contains("admin"));
        let custom = Rails {
            admin: "arn:aws:iam::123456789012:user/Mateo".into(),
            ..rails()
        };
        assert!(refused(plan(&user("AKIAIOSFODNN7EXAMPLE"), &custom)).contains("admin"));
    }

    #[test]
    fn ec2passs_own_roles_are_never_cut_off() {
        for own in ["ec2pass-guard", "ec2pass-issuer", "ec2pass-member"] {
            assert!(
                refused(plan(&role(own), &rails())).contains("own roles"),
                "{own}"
            );
        }
    }

    #[test]
    fn the_allow_list_holds() {
        assert!(refused(plan(&role("break-glass"), &rails())).contains("allow-list"));
        let users = Rails {
            allow: vec!["arn:aws:iam::123456789012:user/*".into()],
            ..rails()
        };
        assert!(refused(plan(&user("AKIAIOSFODNN7EXAMPLE"), &users)).contains("allow-list"));
    }

    #[test]
    fn root_services_federation_temporary_keys_and_other_accounts_are_never_acted_on() {
        let root = Caller {
            principal_type: "Root".into(),
            principal_arn: Some("arn:aws:iam::123456789012:root".into()),
            ..user("AKIAIOSFODNN7EXAMPLE")
        };
        assert!(refused(plan(&root, &rails())).contains("root"));
        let service = Caller {
            principal_type: "AWSService".into(),
            principal_arn: None,
            invoked_by: Some("autoscaling.amazonaws.com".into()),
            ..user("x")
        };
        assert!(refused(plan(&service, &rails())).contains("service"));
        let linked = Caller {
            session_issuer: Some(
                "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
                    .into(),
            ),
            ..role("AWSServiceRoleForAutoScaling")
        };
        assert!(refused(plan(&linked, &rails())).contains("service-linked"));
        let sso = Caller {
            session_issuer: Some(
                "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123456789abcdef"
                    .into(),
            ),
            ..role("AWSReservedSSO_Admin_0123456789abcdef")
        };
        assert!(refused(plan(&sso, &rails())).contains("Identity Center"));
        let federated = Caller {
            principal_type: "FederatedUser".into(),
            ..role("x")
        };
        assert!(refused(plan(&federated, &rails())).contains("federated"));
        assert!(refused(plan(&user("ASIAIOSFODNN7EXAMPLE"), &rails())).contains("temporary"));
        let elsewhere = Caller {
            account: Some("210987654321".into()),
            session_issuer: Some("arn:aws:iam::210987654321:role/developer".into()),
            ..role("developer")
        };
        assert!(refused(plan(&elsewhere, &rails())).contains("another account"));
    }

    #[test]
    fn the_revocation_is_the_consoles_policy_and_each_action_says_how_to_undo_it() {
        let at = UnixTime::parse_rfc3339("2026-12-02T10:00:05Z").unwrap();
        let policy: serde_json::Value = serde_json::from_str(&revoke_policy(at)).unwrap();
        assert_eq!(
            policy["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
            "2026-12-02T10:00:05Z"
        );
        assert_eq!(policy["Statement"][0]["Effect"], "Deny");
        let revoke = Action::RevokeSessions {
            role: "developer".into(),
            arn: "arn:aws:iam::123456789012:role/developer".into(),
        };
        assert!(revoke.told(at).contains(
            "aws iam delete-role-policy --role-name developer --policy-name AWSRevokeOlderSessions"
        ));
        let key = Action::DeactivateKey {
            user: "Mateo".into(),
            key: "AKIAIOSFODNN7EXAMPLE".into(),
        };
        assert!(key.told(at).contains(
            "aws iam update-access-key --user-name Mateo --access-key-id AKIAIOSFODNN7EXAMPLE --status Active"
        ));
    }

    #[test]
    fn the_rails_read_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            Env::from_fn(move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        let r = Rails::from_env(&env(&[]), "123456789012").unwrap();
        let accented = Rails::from_env(
            &env(&[(
                "EC2PASS_RESPONSE_ALLOW",
                "arn:aws:iam::123456789012:role/café",
            )]),
            "123456789012",
        )
        .expect("a name that ends in a multi-byte character is read, not cut inside it");
        assert_eq!(accented.allow, ["arn:aws:iam::123456789012:role/café"]);
        assert!(!r.enabled, "off unless asked for");
        assert_eq!(r.admin, "arn:aws:iam::123456789012:role/ec2pass-admin");
        let r = Rails::from_env(
            &env(&[
                ("EC2PASS_RESPONSE", "on"),
                ("EC2PASS_OWN_ROLES", "ec2pass-*, ec2pass-member"),
                (
                    "EC2PASS_RESPONSE_ALLOW",
                    "arn:aws:iam::123456789012:role/ops*",
                ),
            ]),
            "123456789012",
        )
        .unwrap();
        assert!(r.enabled);
        assert_eq!(r.own_roles, ["ec2pass-*", "ec2pass-member"]);
        for (var, bad) in [
            ("EC2PASS_RESPONSE", "yes please"),
            ("EC2PASS_RESPONSE_ALLOW", "*"),
            ("EC2PASS_OWN_ROLES", "ec2*pass"),
            // Found in review: a list ending in a multi-byte character was cut inside it.
            (
                "EC2PASS_RESPONSE_ALLOW",
                "arn:aws:iam::123456789012:role/é*x",
            ),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([(var, bad)]));
            assert!(
                Rails::from_env(&env(pairs), "123456789012").is_err(),
                "{var}={bad}"
            );
        }
    }
}
