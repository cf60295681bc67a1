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

    /// Whether the instance is in a start (`pending` or `running`): any other state means the
    /// start an event was about is over.
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
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
    /// Whether EC2 throttled the call (`RequestLimitExceeded` and kin): a pace to keep, not a
    /// reason to fail closed (see [`crate::pace`]).
    pub throttled: bool,
}

impl AwsError {
    /// A failure that is not throttling.
    pub fn new(operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            operation,
            message: message.into(),
            throttled: false,
        }
    }
}

/// The error codes with which AWS APIs throttle (EC2 answers `RequestLimitExceeded`; the SDK's
/// own list of throttling codes has the rest).
pub const THROTTLING_CODES: [&str; 6] = [
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestThrottled",
];

/// Most values EC2 takes in one filter, and so the most instances one DescribeInstances by
/// `instance-id` filter (or one StopInstances or DeleteTags the guard sends) names.
pub const IDS_PER_CALL: usize = 200;

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

    /// TerminateInstances. `Protected` when termination protection is on; `Gone` when the
    /// instance no longer exists.
    fn terminate(&self, id: &InstanceId) -> impl Future<Output = Result<(), StopError>> + Send;

    /// Turns stop protection off (ModifyInstanceAttribute `DisableApiStop=false`).
    fn clear_stop_protection(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// Turns termination protection off (ModifyInstanceAttribute `DisableApiTermination=false`).
    fn clear_termination_protection(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// DeleteTags for exactly one key *with its value*: EC2 deletes the tag only while it still
    /// holds `value`, so a password tagged since (for the next start) stays. Never an empty tag
    /// list, which deletes every tag.
    fn delete_tag(
        &self,
        id: &InstanceId,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// Every `pending` or `running` instance, all pages (for the sweep).
    fn active_instances(&self)
    -> impl Future<Output = Result<Vec<InstanceFacts>, AwsError>> + Send;

    /// The facts of many instances; an id EC2 does not know (yet) is simply absent. The SDK
    /// client asks by `instance-id` filter, [`IDS_PER_CALL`] ids a call, so one unknown id fails
    /// nothing; this default asks one by one (for fakes).
    fn describe_many(
        &self,
        ids: &[InstanceId],
    ) -> impl Future<Output = Result<Vec<InstanceFacts>, AwsError>> + Send {
        async move {
            let mut all = Vec::new();
            for id in ids {
                all.extend(self.describe(id).await?);
            }
            Ok(all)
        }
    }

    /// StopInstances for many instances, each with its own answer. The SDK client sends as few
    /// calls as EC2 allows; this default stops one by one (for fakes).
    fn stop_many(
        &self,
        ids: &[InstanceId],
    ) -> impl Future<Output = Vec<(InstanceId, Result<(), StopError>)>> + Send {
        async move {
            let mut all = Vec::with_capacity(ids.len());
            for id in ids {
                all.push((id.clone(), self.stop(id).await));
            }
            all
        }
    }

    /// DeleteTags of one key with one value on many instances (see [`Ec2::delete_tag`]).
    fn delete_tag_many(
        &self,
        ids: &[InstanceId],
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send {
        async move {
            for id in ids {
                self.delete_tag(id, key, value).await?;
            }
            Ok(())
        }
    }
}

/// A borrowed EC2 is the EC2 it borrows (a single-account [`crate::fleet::Fleet`] lends its
/// own).
impl<T: Ec2 + ?Sized> Ec2 for &T {
    fn describe(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<Option<InstanceFacts>, AwsError>> + Send {
        (**self).describe(id)
    }

    fn stop(&self, id: &InstanceId) -> impl Future<Output = Result<(), StopError>> + Send {
        (**self).stop(id)
    }

    fn terminate(&self, id: &InstanceId) -> impl Future<Output = Result<(), StopError>> + Send {
        (**self).terminate(id)
    }

    fn clear_stop_protection(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<(), AwsError>> + Send {
        (**self).clear_stop_protection(id)
    }

    fn clear_termination_protection(
        &self,
        id: &InstanceId,
    ) -> impl Future<Output = Result<(), AwsError>> + Send {
        (**self).clear_termination_protection(id)
    }

    fn delete_tag(
        &self,
        id: &InstanceId,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send {
        (**self).delete_tag(id, key, value)
    }

    fn active_instances(
        &self,
    ) -> impl Future<Output = Result<Vec<InstanceFacts>, AwsError>> + Send {
        (**self).active_instances()
    }

    fn describe_many(
        &self,
        ids: &[InstanceId],
    ) -> impl Future<Output = Result<Vec<InstanceFacts>, AwsError>> + Send {
        (**self).describe_many(ids)
    }

    fn stop_many(
        &self,
        ids: &[InstanceId],
    ) -> impl Future<Output = Vec<(InstanceId, Result<(), StopError>)>> + Send {
        (**self).stop_many(ids)
    }

    fn delete_tag_many(
        &self,
        ids: &[InstanceId],
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send {
        (**self).delete_tag_many(ids, key, value)
    }
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
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    AwsError {
        operation,
        message: DisplayErrorContext(e).to_string(),
        throttled: e.code().is_some_and(|c| THROTTLING_CODES.contains(&c)),
    }
}

/// The instance ids an EC2 error message names (`The instance 'i-…' is not in a state from
/// which it can be stopped`, `The instance IDs 'i-…, i-…' do not exist`), among `asked`.
pub fn ids_named(message: &str, asked: &[InstanceId]) -> Vec<InstanceId> {
    asked
        .iter()
        .filter(|id| {
            message.match_indices(id.as_str()).any(|(at, m)| {
                // Whole ids only: `i-0abc` must not match inside `i-0abcdef…`.
                let next = message[at + m.len()..].chars().next();
                !next.is_some_and(|c| c.is_ascii_hexdigit())
            })
        })
        .cloned()
        .collect()
}

/// How EC2 answers a StopInstances for one instance.
fn stop_error<R>(
    e: &SdkError<aws_sdk_ec2::operation::stop_instances::StopInstancesError, R>,
) -> StopError
where
    R: std::fmt::Debug,
{
    match e.code() {
        Some("IncorrectInstanceState") => StopError::NotYet,
        Some("UnsupportedOperation") => StopError::Unstoppable,
        Some("OperationNotPermitted") => StopError::Protected,
        _ if not_found(e) => StopError::Gone,
        _ => StopError::Failed(failed("StopInstances", e)),
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

impl Ec2Client {
    /// The instances launched with `client_token` (EC2 keeps a `RunInstances` call's token on
    /// each instance it launched: the `client-token` filter of DescribeInstances), with their
    /// launch times.
    pub async fn launched_with(
        &self,
        client_token: &str,
    ) -> Result<Vec<(InstanceId, UnixTime)>, AwsError> {
        let filter = Filter::builder()
            .name("client-token")
            .values(client_token)
            .build();
        Ok(self
            .filtered(filter)
            .await?
            .into_iter()
            .filter_map(|f| Some((f.id, f.launch_time?)))
            .collect())
    }

    /// Every instance DescribeInstances lists for `filter`, over every page.
    async fn filtered(&self, filter: Filter) -> Result<Vec<InstanceFacts>, AwsError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_instances()
                .filters(filter.clone())
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
        result.map(|_| ()).map_err(|e| stop_error(&e))
    }

    async fn terminate(&self, id: &InstanceId) -> Result<(), StopError> {
        match self
            .client
            .terminate_instances()
            .instance_ids(id.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Err(StopError::Gone),
            Err(e) if e.code() == Some("OperationNotPermitted") => Err(StopError::Protected),
            Err(e) => Err(StopError::Failed(failed("TerminateInstances", &e))),
        }
    }

    async fn clear_termination_protection(&self, id: &InstanceId) -> Result<(), AwsError> {
        self.client
            .modify_instance_attribute()
            .instance_id(id.as_str())
            .disable_api_termination(AttributeBooleanValue::builder().value(false).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| failed("ModifyInstanceAttribute", &e))
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

    async fn delete_tag(&self, id: &InstanceId, key: &str, value: &str) -> Result<(), AwsError> {
        match self
            .client
            .delete_tags()
            .resources(id.as_str())
            .tags(Tag::builder().key(key).value(value).build())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(failed("DeleteTags", &e)),
        }
    }

    async fn active_instances(&self) -> Result<Vec<InstanceFacts>, AwsError> {
        self.filtered(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .await
    }

    async fn describe_many(&self, ids: &[InstanceId]) -> Result<Vec<InstanceFacts>, AwsError> {
        let mut all = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_CALL) {
            // A filter, not InstanceIds: an id EC2 does not know yet (eventual consistency right
            // after a launch) is left out of the answer instead of failing the whole call. A
            // filtered call is also throttled in the larger DescribeInstances bucket.
            let filter = Filter::builder()
                .name("instance-id")
                .set_values(Some(
                    chunk.iter().map(|id| id.as_str().to_owned()).collect(),
                ))
                .build();
            all.extend(self.filtered(filter).await?);
        }
        Ok(all)
    }

    async fn stop_many(&self, ids: &[InstanceId]) -> Vec<(InstanceId, Result<(), StopError>)> {
        let mut answers = Vec::with_capacity(ids.len());
        let mut work: Vec<Vec<InstanceId>> = ids
            .chunks(IDS_PER_CALL)
            .map(<[InstanceId]>::to_vec)
            .collect();
        // EC2 refuses a whole StopInstances for one instance it will not stop, and names it in
        // the message: those get the refusal, the rest are sent again. A refusal that names no
        // instance asked about is split in halves until it comes down to one.
        while let Some(chunk) = work.pop() {
            let result = self
                .client
                .stop_instances()
                .set_instance_ids(Some(
                    chunk.iter().map(|id| id.as_str().to_owned()).collect(),
                ))
                .send()
                .await;
            let e = match result {
                Ok(_) => {
                    answers.extend(chunk.into_iter().map(|id| (id, Ok(()))));
                    continue;
                }
                Err(e) => e,
            };
            let refusal = stop_error(&e);
            if let StopError::Failed(_) = refusal {
                answers.extend(chunk.into_iter().map(|id| (id, Err(refusal.clone()))));
                continue;
            }
            if let [one] = chunk.as_slice() {
                answers.push((one.clone(), Err(refusal)));
                continue;
            }
            let named = ids_named(e.message().unwrap_or_default(), &chunk);
            if named.is_empty() {
                let (a, b) = chunk.split_at(chunk.len() / 2);
                work.push(a.to_vec());
                work.push(b.to_vec());
            } else {
                let rest: Vec<InstanceId> =
                    chunk.into_iter().filter(|id| !named.contains(id)).collect();
                answers.extend(named.into_iter().map(|id| (id, Err(refusal.clone()))));
                if !rest.is_empty() {
                    work.push(rest);
                }
            }
        }
        answers
    }

    async fn delete_tag_many(
        &self,
        ids: &[InstanceId],
        key: &str,
        value: &str,
    ) -> Result<(), AwsError> {
        let mut work: Vec<Vec<InstanceId>> = ids
            .chunks(IDS_PER_CALL)
            .map(<[InstanceId]>::to_vec)
            .collect();
        while let Some(chunk) = work.pop() {
            let result = self
                .client
                .delete_tags()
                .set_resources(Some(
                    chunk.iter().map(|id| id.as_str().to_owned()).collect(),
                ))
                .tags(Tag::builder().key(key).value(value).build())
                .send()
                .await;
            match result {
                Ok(_) => {}
                // A terminated instance fails the call for all: untag the others.
                Err(e) if not_found(&e) => {
                    let named = ids_named(e.message().unwrap_or_default(), &chunk);
                    let rest: Vec<InstanceId> =
                        chunk.into_iter().filter(|id| !named.contains(id)).collect();
                    if !named.is_empty() && !rest.is_empty() {
                        work.push(rest);
                    }
                }
                Err(e) => return Err(failed("DeleteTags", &e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{DeviceType, InstanceState, InstanceStateName, Reservation};
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    fn id() -> InstanceId {
        InstanceId::parse("i-0123456789abcdef0").unwrap_or_else(|| unreachable!())
    }

    fn body(code: &str) -> String {
        format!(
            "<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors><RequestID>r</RequestID></Response>"
        )
    }

    fn response(status: u16, code: &str) -> Response {
        let status = StatusCode::try_from(status).unwrap_or_else(|_| unreachable!());
        Response::new(status, SdkBody::from(body(code)))
    }

    /// StopInstances answering with an EC2 error, every time (the SDK retries some).
    fn stop_error(code: &'static str, status: u16) -> Rule {
        mock!(Client::stop_instances)
            .sequence()
            .http_response(move || response(status, code))
            .repeatedly()
            .build()
    }

    #[tokio::test]
    async fn stop_errors_are_classified_by_code() {
        let cases = [
            ("IncorrectInstanceState", 400, StopError::NotYet),
            ("UnsupportedOperation", 400, StopError::Unstoppable),
            ("OperationNotPermitted", 400, StopError::Protected),
            ("InvalidInstanceID.NotFound", 400, StopError::Gone),
        ];
        for (code, status, expected) in cases {
            let rule = stop_error(code, status);
            let ec2 = Ec2Client::new(mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]));
            assert_eq!(ec2.stop(&id()).await, Err(expected), "{code}");
        }
    }

    #[tokio::test]
    async fn throttling_and_server_errors_on_stop_are_failures_after_the_sdks_retries() {
        for (code, status) in [
            ("RequestLimitExceeded", 503),
            ("InternalError", 500),
            ("Unavailable", 503),
        ] {
            let rule = stop_error(code, status);
            let ec2 = Ec2Client::new(mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]));
            let result = ec2.stop(&id()).await;
            assert!(
                matches!(&result, Err(StopError::Failed(e)) if e.message.contains(code)),
                "{code}: {result:?}"
            );
            assert!(
                rule.num_calls() > 1,
                "{code}: the SDK retried ({} calls)",
                rule.num_calls()
            );
        }
    }

    #[tokio::test]
    async fn a_pending_instance_refuses_then_stops() {
        let rule = mock!(Client::stop_instances)
            .sequence()
            .http_response(|| response(400, "IncorrectInstanceState"))
            .output(|| {
                aws_sdk_ec2::operation::stop_instances::StopInstancesOutput::builder().build()
            })
            .build();
        let ec2 = Ec2Client::new(mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&rule]));
        assert_eq!(ec2.stop(&id()).await, Err(StopError::NotYet));
        assert_eq!(ec2.stop(&id()).await, Ok(()));
    }

    #[tokio::test]
    async fn an_unknown_instance_is_none_and_its_untag_a_no_op() {
        let describe = mock!(Client::describe_instances)
            .then_http_response(|| response(400, "InvalidInstanceID.NotFound"));
        let untag = mock!(Client::delete_tags)
            .then_http_response(|| response(400, "InvalidInstanceID.NotFound"));
        let ec2 = Ec2Client::new(mock_client!(
            aws_sdk_ec2,
            RuleMode::MatchAny,
            [&describe, &untag]
        ));
        assert_eq!(ec2.describe(&id()).await, Ok(None));
        assert_eq!(ec2.delete_tag(&id(), "Auth", "x").await, Ok(()));
    }

    /// A launch of a thousand is found by its client token (the DescribeInstances filter
    /// `client-token`, EC2 API Reference), over as many pages as EC2 answers.
    #[tokio::test]
    async fn the_instances_of_a_client_token_are_read_over_every_page() {
        let page = |ids: std::ops::Range<u32>, next: Option<&'static str>| {
            let instances: Vec<_> = ids
                .map(|n| {
                    aws_sdk_ec2::types::Instance::builder()
                        .instance_id(format!("i-{n:017x}"))
                        .state(
                            InstanceState::builder()
                                .name(InstanceStateName::Pending)
                                .build(),
                        )
                        .launch_time(aws_smithy_types::DateTime::from_secs(1_795_255_200))
                        .build()
                })
                .collect();
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .set_instances(Some(instances))
                        .build(),
                )
                .set_next_token(next.map(str::to_owned))
                .build()
        };
        let first = mock!(Client::describe_instances)
            .match_requests(|r| {
                r.next_token().is_none()
                    && r.filters()
                        .iter()
                        .any(|f| f.name() == Some("client-token") && f.values() == ["burst-1000"])
            })
            .then_output(move || page(0..1000, Some("more")));
        let second = mock!(Client::describe_instances)
            .match_requests(|r| r.next_token() == Some("more"))
            .then_output(move || page(1000..1200, None));
        let ec2 = Ec2Client::new(mock_client!(
            aws_sdk_ec2,
            RuleMode::MatchAny,
            [&first, &second]
        ));
        let found = ec2.launched_with("burst-1000").await.expect("found");
        assert_eq!(found.len(), 1200);
        assert!(found.iter().all(|(_, t)| *t == UnixTime(1_795_255_200)));
    }

    #[tokio::test]
    async fn describe_reads_state_launch_time_tags_root_device_and_spot() {
        let rule = mock!(Client::describe_instances).then_output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(
                            aws_sdk_ec2::types::Instance::builder()
                                .instance_id("i-0123456789abcdef0")
                                .state(
                                    InstanceState::builder()
                                        .name(InstanceStateName::Pending)
                                        .build(),
                                )
                                .launch_time(aws_smithy_types::DateTime::from_secs(1_795_255_200))
                                .root_device_type(DeviceType::InstanceStore)
                                .instance_lifecycle(InstanceLifecycleType::Spot)
                                .tags(Tag::builder().key("Auth").value("x").build())
                                .tags(Tag::builder().key("Name").value("web").build())
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let ec2 = Ec2Client::new(mock_client!(aws_sdk_ec2, [&rule]));
        let facts = ec2
            .describe(&id())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| InstanceFacts::unknown(id()));
        assert_eq!(facts.state, "pending");
        assert_eq!(facts.launch_time, Some(UnixTime(1_795_255_200)));
        assert_eq!(facts.name(), Some("web"));
        assert!(facts.has_instance_store_root() && facts.spot);
        assert_eq!(
            facts.cycle().map(|c| c.id()),
            Some("i-0123456789abcdef0@1795255200".to_owned())
        );
    }

    fn other_id() -> InstanceId {
        InstanceId::parse("i-0fedcba9876543210").unwrap_or_else(|| unreachable!())
    }

    #[tokio::test]
    async fn a_stop_of_many_refused_for_one_named_instance_stops_the_others_in_one_more_call() {
        // EC2 refuses the whole call for the pending one, naming it (EC2 API Reference,
        // StopInstances; error codes: IncorrectInstanceState).
        let refused = mock!(Client::stop_instances)
            .match_requests(|r| r.instance_ids().len() == 2)
            .then_http_response(|| {
                let body = "<Response><Errors><Error><Code>IncorrectInstanceState</Code><Message>This instance 'i-0fedcba9876543210' is not in a state from which it can be stopped.</Message></Error></Errors><RequestID>r</RequestID></Response>";
                Response::new(
                    StatusCode::try_from(400).unwrap_or_else(|_| unreachable!()),
                    SdkBody::from(body),
                )
            });
        let rest = mock!(Client::stop_instances)
            .match_requests(|r| r.instance_ids() == ["i-0123456789abcdef0"])
            .then_output(|| {
                aws_sdk_ec2::operation::stop_instances::StopInstancesOutput::builder().build()
            });
        let ec2 = Ec2Client::new(mock_client!(
            aws_sdk_ec2,
            RuleMode::MatchAny,
            [&refused, &rest]
        ));
        let mut answers = ec2.stop_many(&[id(), other_id()]).await;
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            answers,
            vec![(id(), Ok(())), (other_id(), Err(StopError::NotYet))]
        );
        assert_eq!((refused.num_calls(), rest.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn a_refusal_naming_no_instance_is_split_until_each_half_answers() {
        let refused = mock!(Client::stop_instances)
            .match_requests(|r| r.instance_ids().len() == 2)
            .then_http_response(|| response(400, "UnsupportedOperation"));
        let alone = mock!(Client::stop_instances)
            .match_requests(|r| r.instance_ids() == ["i-0fedcba9876543210"])
            .then_http_response(|| response(400, "UnsupportedOperation"));
        let fine = mock!(Client::stop_instances)
            .match_requests(|r| r.instance_ids() == ["i-0123456789abcdef0"])
            .then_output(|| {
                aws_sdk_ec2::operation::stop_instances::StopInstancesOutput::builder().build()
            });
        let ec2 = Ec2Client::new(mock_client!(
            aws_sdk_ec2,
            RuleMode::MatchAny,
            [&refused, &alone, &fine]
        ));
        let mut answers = ec2.stop_many(&[id(), other_id()]).await;
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            answers,
            vec![(id(), Ok(())), (other_id(), Err(StopError::Unstoppable))]
        );
    }

    #[test]
    fn an_error_names_only_whole_ids_it_was_asked_about() {
        let asked = [id(), other_id()];
        let named = ids_named(
            "The instance IDs 'i-0123456789abcdef0, i-0aaaaaaaaaaaaaaa0' do not exist",
            &asked,
        );
        assert_eq!(named, vec![id()]);
        let short = InstanceId::parse("i-01234567").unwrap_or_else(|| unreachable!());
        assert!(ids_named("instance 'i-0123456789abcdef0'", &[short]).is_empty());
    }

    #[tokio::test]
    async fn a_throttled_call_is_marked_so_and_a_server_error_is_not() {
        for (code, status, throttled) in [
            ("RequestLimitExceeded", 503, true),
            ("InternalError", 500, false),
        ] {
            let rule = mock!(Client::describe_instances)
                .sequence()
                .http_response(move || response(status, code))
                .repeatedly()
                .build();
            let ec2 = Ec2Client::new(mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]));
            let e = ec2.describe_many(&[id()]).await.err();
            assert_eq!(e.map(|e| e.throttled), Some(throttled), "{code}");
        }
    }

    #[tokio::test]
    async fn describe_throttled_past_the_sdks_retries_is_an_error() {
        let rule = mock!(Client::describe_instances)
            .sequence()
            .http_response(|| response(503, "RequestLimitExceeded"))
            .repeatedly()
            .build();
        let ec2 = Ec2Client::new(mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]));
        assert!(matches!(
            ec2.describe(&id()).await,
            Err(AwsError {
                operation: "DescribeInstances",
                ..
            })
        ));
    }
}
