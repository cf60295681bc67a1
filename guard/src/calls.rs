//! CloudTrail's record of the calls that start instances: `RunInstances` and `StartInstances`,
//! as EventBridge delivers them (`AWS API Call via CloudTrail`, source `aws.ec2`).
//!
//! The EC2 state change says what started, never who started it; the call's record says who
//! (SPEC §11). Only a call that succeeded starts anything: one with an `errorCode` (refused,
//! a dry run) is ignored. Which instances a call started:
//!
//! - `StartInstances`: the ids it was asked to start (`requestParameters.instancesSet`).
//! - `RunInstances`: the ids it answered (`responseElements.instancesSet`) with their launch
//!   times. CloudTrail truncates a field larger than its maximum size and marks it `omitted`
//!   (a launch of hundreds of instances exceeds it); then the call's `clientToken`, which every
//!   AWS SDK and the CLI send, finds them: EC2 keeps it on each instance it launched.
//!
//! Record fields follow "CloudTrail record contents" and "CloudTrail userIdentity element" in
//! the AWS CloudTrail User Guide; the tests read the samples in `tests/fixtures/cloudtrail/`,
//! shaped like that guide's examples.

use ec2pass_shared::caller::Caller;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::org::{Place, is_account_id, is_region};
use ec2pass_shared::time::UnixTime;
use ec2pass_shared::verdict::Cycle;
use serde_json::Value;
use std::time::Duration;

/// How much earlier than its call's `eventTime` a start's LaunchTime may be (the two clocks'
/// seconds, and CloudTrail stamping the call when it completed).
pub const CALL_SKEW: Duration = Duration::from_secs(5);

/// How much later than its call a start's LaunchTime may be: EC2 sets it when the instance
/// enters `pending`, which a successful `StartInstances` answers (and `RunInstances` says the
/// launch time itself). Short, so a later start of the same instance (by someone else, after
/// a stop that takes tens of seconds) is not taken for this call's.
pub const START_WINDOW: Duration = Duration::from_secs(60);

/// The EventBridge detail type of CloudTrail's management events.
pub const DETAIL_TYPE: &str = "AWS API Call via CloudTrail";

/// Which instances a call started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// These instances, each with its launch time when the call said it.
    Instances(Vec<(InstanceId, Option<UnixTime>)>),
    /// The instances launched with this client token (the response was truncated).
    ClientToken(String),
}

/// One call that started instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Who made it.
    pub caller: Caller,
    /// When it was made.
    pub at: UnixTime,
    /// The account and region it was made in.
    pub place: Place,
    /// What it started.
    pub started: Started,
}

/// An EventBridge payload: a call that started instances, or why it is not one.
pub fn parse(payload: &Value) -> Result<Call, String> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    if text(payload, "source").as_deref() != Some("aws.ec2")
        || text(payload, "detail-type").as_deref() != Some(DETAIL_TYPE)
    {
        return Err("not a CloudTrail record of an EC2 call".into());
    }
    let detail = payload
        .get("detail")
        .filter(|d| d.is_object())
        .ok_or("a CloudTrail event whose detail is not an object")?;
    let event_name = text(detail, "eventName").unwrap_or_default();
    if event_name != "RunInstances" && event_name != "StartInstances" {
        return Err(format!("call {event_name:?} starts no instance"));
    }
    // Any errorCode, whatever its shape, is a call that failed: never read one as a success.
    if let Some(code) = detail.get("errorCode").filter(|c| !c.is_null()) {
        return Err(format!("{event_name} failed ({code}): it started nothing"));
    }
    let event_time = text(detail, "eventTime").unwrap_or_default();
    let at = UnixTime::parse_rfc3339(&event_time)
        .ok_or_else(|| format!("eventTime {event_time:?} is not a time"))?;
    let account = text(detail, "recipientAccountId")
        .or_else(|| text(payload, "account"))
        .filter(|a| is_account_id(a))
        .ok_or("no account the call was made in")?;
    let region = text(detail, "awsRegion")
        .or_else(|| text(payload, "region"))
        .filter(|r| is_region(r))
        .ok_or("no region the call was made in")?;
    let started = if event_name == "StartInstances" {
        Started::Instances(instances(
            detail.pointer("/requestParameters/instancesSet/items"),
        ))
    } else {
        run_instances(detail)?
    };
    if matches!(&started, Started::Instances(ids) if ids.is_empty()) {
        return Err(format!("{event_name} names no instance"));
    }
    let caller = caller(detail, event_name, event_time);
    if caller.event_id.is_empty() {
        return Err("a call without an eventID".into());
    }
    Ok(Call {
        caller,
        at,
        place: Place::new(account, region),
        started,
    })
}

/// The instances a `RunInstances` answered, or its client token when the answer was omitted.
fn run_instances(detail: &Value) -> Result<Started, String> {
    let answered = detail.pointer("/responseElements/instancesSet/items");
    if answered.is_some_and(Value::is_array) {
        return Ok(Started::Instances(instances(answered)));
    }
    detail
        .pointer("/requestParameters/clientToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 64)
        .map(|t| Started::ClientToken(t.to_owned()))
        .ok_or_else(|| {
            "RunInstances without its instances (the response was omitted) and without a client \
             token: it cannot be tied to its instances"
                .into()
        })
}

/// `items[].instanceId` (and `launchTime`, epoch milliseconds, when given).
fn instances(items: Option<&Value>) -> Vec<(InstanceId, Option<UnixTime>)> {
    items
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let id = InstanceId::parse(item.get("instanceId")?.as_str()?)?;
            let launched = item
                .get("launchTime")
                .and_then(Value::as_i64)
                .map(|ms| UnixTime(ms.div_euclid(1000)));
            Some((id, launched))
        })
        .collect()
}

fn caller(detail: &Value, event_name: String, event_time: String) -> Caller {
    let text = |pointer: &str| {
        detail
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Caller {
        principal_type: text("/userIdentity/type").unwrap_or_else(|| "Unknown".into()),
        principal_arn: text("/userIdentity/arn"),
        account: text("/userIdentity/accountId"),
        user_name: text("/userIdentity/userName"),
        access_key_id: text("/userIdentity/accessKeyId"),
        session_issuer: text("/userIdentity/sessionContext/sessionIssuer/arn"),
        session_created: text("/userIdentity/sessionContext/attributes/creationDate"),
        mfa: text("/userIdentity/sessionContext/attributes/mfaAuthenticated").map(|m| m == "true"),
        invoked_by: text("/userIdentity/invokedBy"),
        source_ip: text("/sourceIPAddress"),
        user_agent: text("/userAgent"),
        event_name,
        event_id: text("/eventID").unwrap_or_default(),
        event_time,
    }
}

/// Whether a start launched at `launched` can be the one a call made at `at` started.
pub fn started_by(at: UnixTime, launched: UnixTime) -> bool {
    launched >= at.minus(CALL_SKEW) && launched <= at.plus(START_WINDOW)
}

/// The caller a deny alert carries: the latest call that started the instance, when it
/// started this very cycle.
pub fn caller_of(call: Option<(Caller, UnixTime)>, cycle: &Cycle) -> Option<Caller> {
    call.filter(|(_, at)| started_by(*at, cycle.launch_time))
        .map(|(caller, _)| caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../tests/fixtures/cloudtrail/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
    }

    fn id(s: &str) -> InstanceId {
        InstanceId::parse(s).unwrap()
    }

    #[test]
    fn an_iam_users_run_instances_names_its_instances_and_key() {
        let call = parse(&fixture("run-instances-iam-user")).unwrap();
        assert_eq!(call.caller.principal_type, "IAMUser");
        assert_eq!(
            call.caller.principal_arn.as_deref(),
            Some("arn:aws:iam::123456789012:user/Mateo")
        );
        assert_eq!(call.caller.user_name.as_deref(), Some("Mateo"));
        assert_eq!(
            call.caller.access_key_id.as_deref(),
            Some("AKIAIOSFODNN7EXAMPLE")
        );
        assert_eq!(call.caller.source_ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(call.caller.mfa, Some(false));
        assert_eq!(call.place, Place::new("123456789012", "us-east-1"));
        assert_eq!(
            call.at,
            UnixTime::parse_rfc3339("2026-12-02T10:00:00Z").unwrap()
        );
        assert_eq!(
            call.started,
            Started::Instances(vec![(
                id("i-0abcdef1234567890"),
                Some(UnixTime::parse_rfc3339("2026-12-02T10:00:00Z").unwrap())
            )])
        );
    }

    #[test]
    fn an_assumed_roles_start_instances_names_the_role_and_its_session() {
        let call = parse(&fixture("start-instances-assumed-role")).unwrap();
        assert_eq!(call.caller.principal_type, "AssumedRole");
        assert_eq!(
            call.caller.session_issuer.as_deref(),
            Some("arn:aws:iam::123456789012:role/developer")
        );
        assert_eq!(
            call.caller.session_created.as_deref(),
            Some("2026-12-02T09:30:00Z")
        );
        assert_eq!(call.caller.mfa, Some(true));
        assert_eq!(
            call.started,
            Started::Instances(vec![
                (id("i-0abcdef1234567890"), None),
                (id("i-0fedcba0987654321"), None)
            ])
        );
    }

    #[test]
    fn federated_users_and_services_are_read_too() {
        let federated = parse(&fixture("start-instances-federated-user")).unwrap();
        assert_eq!(federated.caller.principal_type, "FederatedUser");
        assert_eq!(
            federated.caller.session_issuer.as_deref(),
            Some("arn:aws:iam::123456789012:user/Alice")
        );
        let service = parse(&fixture("run-instances-aws-service")).unwrap();
        assert_eq!(service.caller.principal_type, "AWSService");
        assert_eq!(service.caller.principal_arn, None);
        assert_eq!(
            service.caller.invoked_by.as_deref(),
            Some("autoscaling.amazonaws.com")
        );
        assert_eq!(service.caller.who(), "AWSService autoscaling.amazonaws.com");
    }

    #[test]
    fn a_launch_of_a_thousand_is_found_by_its_client_token() {
        let call = parse(&fixture("run-instances-omitted")).unwrap();
        assert_eq!(
            call.started,
            Started::ClientToken("burst-1000-4e1c2a".into())
        );
        let mut no_token = fixture("run-instances-omitted");
        no_token["detail"]["requestParameters"]
            .as_object_mut()
            .unwrap()
            .remove("clientToken");
        assert!(parse(&no_token).unwrap_err().contains("client token"));
    }

    #[test]
    fn failed_calls_other_calls_and_junk_are_not_calls() {
        let mut failed = fixture("run-instances-iam-user");
        failed["detail"]["errorCode"] = json!("Client.DryRunOperation");
        assert!(parse(&failed).unwrap_err().contains("started nothing"));
        // Found by guard/tests/properties.rs: an errorCode that is not a string was read as
        // no error at all.
        failed["detail"]["errorCode"] = json!([]);
        assert!(parse(&failed).unwrap_err().contains("started nothing"));
        let mut other = fixture("run-instances-iam-user");
        other["detail"]["eventName"] = json!("StopInstances");
        assert!(parse(&other).is_err());
        let mut bad_time = fixture("run-instances-iam-user");
        bad_time["detail"]["eventTime"] = json!("yesterday");
        assert!(parse(&bad_time).is_err());
        let mut bad_region = fixture("run-instances-iam-user");
        bad_region["detail"]["awsRegion"] = json!("../etc");
        bad_region["region"] = json!("x");
        assert!(parse(&bad_region).is_err());
        let mut no_id = fixture("run-instances-iam-user");
        no_id["detail"]["eventID"] = json!("");
        assert!(parse(&no_id).is_err());
        let mut bad_ids = fixture("start-instances-assumed-role");
        bad_ids["detail"]["requestParameters"]["instancesSet"]["items"] =
            json!([{"instanceId": "i-NOPE"}, 5]);
        assert!(parse(&bad_ids).is_err());
        for junk in [
            json!(null),
            json!([]),
            json!({"source": "aws.ec2"}),
            json!("x"),
        ] {
            assert!(parse(&junk).is_err(), "{junk}");
        }
    }
}
