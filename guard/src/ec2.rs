//! EC2, as the guard sees it: the facts about an instance, and the few actions it takes.
//!
//! [`Ec2`] is the seam: [`Ec2Client`] is the AWS SDK, and tests use fakes for what the local
//! emulator cannot show (a `pending` instance refusing to stop, stop protection, Spot, outages).
//! Every EC2 error the guard must tell apart is classified here, by its error code.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, Instance, InstanceLifecycleType, Tag};
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::time::UnixTime;
use ec2pass_shared::verdict::Cycle;

/// What the guard knows about an instance after one DescribeInstances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    /// The instance.
    pub id: InstanceId,
    /// State name (`pending`, `running`, `stopping`, …).
    pub state: String,
    /// LaunchTime of the current start.
    pub launch_time: Option<UnixTime>,
    /// All tags.
    pub tags: BTreeMap<String, String>,
    /// `ebs` or `instance-store`.
    pub root_device_type: Option<String>,
    /// Whether it is a Spot instance.
    pub spot: bool,
}

impl InstanceFacts {
    /// An instance known only by id (when describing it failed).
    pub fn unknown(id: InstanceId) -> Self {
        Self {
            id,
            state: "unknown".into(),
            launch_time: None,
            tags: BTreeMap::new(),
            root_device_type: None,
            spot: false,
        }
    }

    /// The `Name` tag.
    pub fn name(&self) -> Option<&str> {
        self.tags.get("Name").map(String::as_str)
    }

    /// The current start cycle.
    pub fn cycle(&self) -> Option<Cycle> {
        self.launch_time.map(|launch_time| Cycle {
            instance: self.id.clone(),
            launch_time,
        })
    }

    /// Whether the instance is already on its way down (a stop counts as enforced).
    pub fn is_down(&self) -> bool {
        matches!(
            self.state.as_str(),
            "stopping" | "stopped" | "shutting-down" | "terminated"
        )
    }

    /// Whether its root volume is instance store (it cannot be stopped).
    pub fn has_instance_store_root(&self) -> bool {
        self.root_device_type.as_deref() == Some("instance-store")
    }
}

/// An EC2 call that failed after the SDK's own retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EC2 {operation} failed: {message}")]
pub struct AwsError {
    /// The API operation.
    pub operation: &'static str,
    /// What the SDK said.
    pub message: String,
}

/// Why StopInstances did not stop the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopError {
    /// `IncorrectInstanceState`: a fresh instance in `pending` cannot be stopped yet.
    NotYet,
    /// `UnsupportedOperation`: instance-store root or one-time Spot; it can never be stopped.
    Unstoppable,
    /// `OperationNotPermitted`: stop protection (`DisableApiStop`) is on.
    Protected,
    /// The instance no longer exists.
    Gone,
    /// Anything else (throttling, 5xx, timeouts after retries).
    Failed(AwsError),
}

/// The EC2 calls the guard makes.
pub trait Ec2: Send + Sync {
    /// DescribeInstances for one instance; `None` when it does not exist.
    fn describe(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<Option<InstanceFacts>, AwsError>> + Send;

    /// StopInstances.
    fn stop(&self, id: &InstanceId) -> impl Future<Output = Result<(), StopError>> + Send;

    /// TerminateInstances.
    fn terminate(&self, id: &InstanceId) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// Turns stop protection off (ModifyInstanceAttribute `DisableApiStop=false`).
    fn clear_stop_protection(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// DeleteTags for exactly one key (never an empty tag list, which deletes every tag).
    fn delete_tag(
        &self,
        id: &InstanceId,
        key: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// Every `pending` or `running` instance, all pages (for the sweep).
    fn active_instances(&self)
    -> impl Future<Output = Result<Vec<InstanceFacts>, AwsError>> + Send;
}

/// The AWS SDK's EC2 client.
#[derive(Clone, Debug)]
pub struct Ec2Client {
    client: Client,
}

impl Ec2Client {
    /// Uses a client built once at cold start.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn failed<E, R>(operation: &'static str, e: &SdkError<E, R>) -> AwsError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    AwsError {
        operation,
        message: DisplayErrorContext(e).to_string(),
    }
}

fn not_found<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code()
        .is_some_and(|c| c.starts_with("InvalidInstanceID."))
}

/// The guard's view of an SDK instance.
pub fn facts_of(i: &Instance) -> Option<InstanceFacts> {
    let id = InstanceId::parse(i.instance_id()?)?;
    Some(InstanceFacts {
        id,
        state: i
            .state()
            .and_then(|s| s.name())
            .map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()),
        launch_time: i.launch_time().map(|t| UnixTime(t.secs())),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect(),
        root_device_type: i.root_device_type().map(|r| r.as_str().to_owned()),
        spot: i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
    })
}

impl Ec2 for Ec2Client {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceFacts>, AwsError> {
        let result = self
            .client
            .describe_instances()
            .instance_ids(id.as_str())
            .send()
            .await;
        match result {
            Ok(out) => Ok(out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(facts_of)
                .find(|f| &f.id == id)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(failed("DescribeInstances", &e)),
        }
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), StopError> {
        let result = self
            .client
            .stop_instances()
            .instance_ids(id.as_str())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.code() {
                Some("IncorrectInstanceState") => StopError::NotYet,
                Some("UnsupportedOperation") => StopError::Unstoppable,
                Some("OperationNotPermitted") => StopError::Protected,
                _ if not_found(&e) => StopError::Gone,
                _ => StopError::Failed(failed("StopInstances", &e)),
            }),
        }
    }

    async fn terminate(&self, id: &InstanceId) -> Result<(), AwsError> {
        match self
            .client
            .terminate_instances()
            .instance_ids(id.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(failed("TerminateInstances", &e)),
        }
    }

    async fn clear_stop_protection(&self, id: &InstanceId) -> Result<(), AwsError> {
        self.client
            .modify_instance_attribute()
            .instance_id(id.as_str())
            .disable_api_stop(AttributeBooleanValue::builder().value(false).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| failed("ModifyInstanceAttribute", &e))
    }

    async fn delete_tag(&self, id: &InstanceId, key: &str) -> Result<(), AwsError> {
        match self
            .client
            .delete_tags()
            .resources(id.as_str())
            .tags(Tag::builder().key(key).build())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(failed("DeleteTags", &e)),
        }
    }

    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("instance-state-name")
                        .values("pending")
                        .values("running")
                        .build(),
                )
                .set_next_token(token.take())
                .max_results(1000)
                .send()
                .await
                .map_err(|e| failed("DescribeInstances", &e))?;
            all.extend(
                out.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(facts_of),
            );
            match out.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(all),
            }
        }
    }
}
