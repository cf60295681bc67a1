//! Looking up the instance a scoped password is for.
//!
//! The issuer only reads: it shows the requester the instance's `Name` tag and state so a typo
//! in the id is caught before a password is handed out, and it refuses to mint for an instance
//! that does not exist or can never start again.

use std::future::Future;

use aws_config::SdkConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{Region, SharedCredentialsProvider};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::org::{Hub, OrgRoster, Place, Roster, Sessions, StsAssume};

/// The session name of the issuer's lookups in member accounts (CloudTrail shows it there).
pub const SESSION_NAME: &str = "ec2pass-issuer";

/// How long a lookup waits for the Organization's accounts to be read (a hub reading
/// `EC2PASS_ORG_UNITS`): Slack waits 3 s for the whole answer. A read that takes longer goes
/// on and serves the next requests; meanwhile the last list is searched.
pub const ROSTER_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// What the requester is shown about an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The `Name` tag, if any.
    pub name: Option<String>,
    /// The state name (`running`, `stopped`, …).
    pub state: String,
    /// Where a hub found it: the account's alias (or id) and the region. `None` for a
    /// single-account stack, where there is only one place.
    pub place: Option<(String, Place)>,
}

impl InstanceInfo {
    /// Whether the instance can never be started again.
    pub fn is_gone(&self) -> bool {
        matches!(self.state.as_str(), "terminated" | "shutting-down")
    }
}

/// A failure to look an instance up (after the SDK's own retries).
#[derive(Debug, thiserror::Error)]
#[error("DescribeInstances failed: {0}")]
pub struct DirectoryError(pub String);

/// Looks instances up.
pub trait InstanceDirectory: Send + Sync {
    /// The instance, or `None` when EC2 does not know it.
    fn describe(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<Option<InstanceInfo>, DirectoryError>> + Send;

    /// The instance, looked for only `within` these places when the requester named them (a
    /// hub's); this default looks where [`InstanceDirectory::describe`] does.
    fn describe_in(
        &self,
        id: &InstanceId,
        within: Option<&[Place]>,
    ) -> impl Future<Output = Result<Option<InstanceInfo>, DirectoryError>> + Send {
        let _ = within;
        self.describe(id)
    }
}

/// The EC2 API: this account's, or (a hub's issuer) every member account's in every guarded
/// region, through the read-only lookup role (`EC2PASS_LOOKUP_ROLE`).
pub struct Ec2Directory {
    client: Client,
    hub: Option<HubLookup>,
}

/// A hub's way to the member accounts: the lookup role's sessions, the base configuration, and
/// the members (configured, or read from the Organization).
struct HubLookup {
    sessions: Sessions<StsAssume, Client>,
    base: SdkConfig,
    roster: OrgRoster<aws_sdk_organizations::Client>,
}

impl Ec2Directory {
    /// Uses a client built once at cold start.
    pub fn new(client: Client) -> Self {
        Self { client, hub: None }
    }

    /// A hub's: looks in every account × region of `hub` at once (its members as the
    /// Organization lists them, with `EC2PASS_ORG_UNITS`), with `base`'s timeouts and retries
    /// and each member's lookup-role credentials.
    pub fn hub(client: Client, hub: Hub, base: SdkConfig) -> Self {
        let assume = StsAssume::new(base.clone(), SESSION_NAME);
        let roster = OrgRoster::new(hub.clone(), aws_sdk_organizations::Client::new(&base))
            .within(ROSTER_PATIENCE);
        Self {
            client,
            hub: Some(HubLookup {
                sessions: Sessions::new(hub, assume),
                base,
                roster,
            }),
        }
    }

    /// Reads what the first request would otherwise wait for (a hub's members from the
    /// Organization), at cold start.
    pub async fn warm(&self) {
        if let Some(lookup) = &self.hub {
            let _ = lookup.roster.current().await;
        }
    }

    /// Every member place at once; the instance where it is first found. An instance found nowhere
    /// while some place could not be asked is an error (it may be there), not "unknown".
    async fn find(
        &self,
        lookup: &HubLookup,
        id: &InstanceId,
        within: Option<&[Place]>,
    ) -> Result<Option<InstanceInfo>, DirectoryError> {
        let HubLookup { sessions, base, .. } = lookup;
        let current = lookup.roster.current().await;
        let hub = &current.hub;
        // Only members are looked in: a place the requester named must be one of this list's
        // (an account id typed for a hub that reads the Organization, but not in it, is not).
        let places = match within {
            None => hub.places(),
            Some(named) => named.iter().filter(|p| hub.guards(p)).cloned().collect(),
        };
        let asks = places.into_iter().map(|place| async move {
            let client = sessions
                .client(&place, |credentials, region| {
                    let conf = aws_sdk_ec2::config::Builder::from(base)
                        .region(Region::new(region.to_owned()))
                        .credentials_provider(SharedCredentialsProvider::new(credentials.clone()))
                        .build();
                    Client::from_conf(conf)
                })
                .await
                .map_err(|e| DirectoryError(e.to_string()))?;
            let found = describe_with(&client, id).await?;
            Ok::<_, DirectoryError>(found.map(|info| {
                InstanceInfo {
                    place: Some((
                        hub.alias_of(&place.account)
                            .unwrap_or(&place.account)
                            .to_owned(),
                        place,
                    )),
                    ..info
                }
            }))
        });
        // The first place that has it answers: a slow or failing account elsewhere must not
        // hold the answer Slack waits for.
        let mut pending: futures_util::stream::FuturesUnordered<_> = asks.collect();
        let mut failed = None;
        while let Some(answer) = futures_util::StreamExt::next(&mut pending).await {
            match answer {
                Ok(Some(info)) => return Ok(Some(info)),
                Ok(None) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        // Found nowhere while the list of members may be short (the Organization not read yet,
        // or not readable): it may be in an account not on it; try again, not "unknown".
        if failed.is_none()
            && let Some(problem) = current.problem
        {
            return Err(DirectoryError(format!(
                "not found in the accounts known so far: {problem}"
            )));
        }
        failed.map_or(Ok(None), Err)
    }
}

impl InstanceDirectory for Ec2Directory {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceInfo>, DirectoryError> {
        match &self.hub {
            None => describe_with(&self.client, id).await,
            Some(lookup) => self.find(lookup, id, None).await,
        }
    }

    async fn describe_in(
        &self,
        id: &InstanceId,
        within: Option<&[Place]>,
    ) -> Result<Option<InstanceInfo>, DirectoryError> {
        match &self.hub {
            None => describe_with(&self.client, id).await,
            Some(lookup) => self.find(lookup, id, within).await,
        }
    }
}

/// DescribeInstances for one id with one client.
async fn describe_with(
    client: &Client,
    id: &InstanceId,
) -> Result<Option<InstanceInfo>, DirectoryError> {
    let result = client
        .describe_instances()
        .instance_ids(id.as_str())
        .send()
        .await;
    let out = match result {
        Ok(out) => out,
        Err(e)
            if e.code()
                .is_some_and(|c| c.starts_with("InvalidInstanceID.")) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(DirectoryError(DisplayErrorContext(&e).to_string())),
    };
    let instance = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(id.as_str()));
    Ok(instance.map(|i| InstanceInfo {
        name: i
            .tags()
            .iter()
            .find(|t| t.key() == Some("Name"))
            .and_then(|t| t.value())
            .map(str::to_owned),
        state: i
            .state()
            .and_then(|s| s.name())
            .map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()),
        place: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{Instance, InstanceState, InstanceStateName, Reservation, Tag};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn id() -> InstanceId {
        InstanceId::parse("i-0123456789abcdef0").unwrap_or_else(|| unreachable!())
    }

    fn ec2_error(code: &str, status: u16) -> aws_smithy_mocks::Rule {
        let body = format!(
            "<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors><RequestID>r</RequestID></Response>"
        );
        // Repeated, so the SDK's own retries of throttling and 5xx see the same answer.
        mock!(Client::describe_instances)
            .sequence()
            .http_response(move || {
                aws_smithy_runtime_api::http::Response::new(
                    aws_smithy_runtime_api::http::StatusCode::try_from(status)
                        .unwrap_or_else(|_| unreachable!()),
                    aws_smithy_types::body::SdkBody::from(body.clone()),
                )
            })
            .repeatedly()
            .build()
    }

    #[tokio::test]
    async fn a_known_instance_shows_its_name_and_state() {
        let found = mock!(Client::describe_instances).then_output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(
                            Instance::builder()
                                .instance_id("i-0123456789abcdef0")
                                .state(
                                    InstanceState::builder()
                                        .name(InstanceStateName::Stopped)
                                        .build(),
                                )
                                .tags(Tag::builder().key("Name").value("web-prod").build())
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let dir = Ec2Directory::new(mock_client!(aws_sdk_ec2, [&found]));
        let info = dir.describe(&id()).await.ok().flatten();
        assert_eq!(
            info,
            Some(InstanceInfo {
                name: Some("web-prod".into()),
                state: "stopped".into(),
                place: None,
            })
        );
    }

    #[tokio::test]
    async fn an_unknown_instance_is_none_not_an_error() {
        let rule = ec2_error("InvalidInstanceID.NotFound", 400);
        let dir = Ec2Directory::new(mock_client!(aws_sdk_ec2, [&rule]));
        assert!(matches!(dir.describe(&id()).await, Ok(None)));
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_errors() {
        for (code, status) in [("RequestLimitExceeded", 503), ("InternalError", 500)] {
            let rule = ec2_error(code, status);
            let dir = Ec2Directory::new(mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]));
            let result = dir.describe(&id()).await;
            assert!(
                matches!(&result, Err(DirectoryError(m)) if m.contains(code)),
                "{code}: {result:?}"
            );
        }
    }

    #[test]
    fn terminated_instances_are_gone() {
        let gone = |state: &str| {
            InstanceInfo {
                name: None,
                state: state.into(),
                place: None,
            }
            .is_gone()
        };
        assert!(gone("terminated") && gone("shutting-down"));
        assert!(!gone("stopped") && !gone("running") && !gone("pending"));
    }
}
