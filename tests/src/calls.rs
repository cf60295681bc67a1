//! CloudTrail's calls for the attribution path's tests and the demo: the samples in
//! `tests/fixtures/cloudtrail/` with a run's instance, principal and times written in, put on
//! the emulator's EventBridge and read from the call queue the template's rule routes them to;
//! and the attribution path wired to the emulator, as `guard`'s `bin/attribution.rs` wires it.

use std::time::Duration;

use aws_config::SdkConfig;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::{SystemClock, UnixTime};
use guard::alerts::SnsAlerts;
use guard::attribute::{Attributor, Settings};
use guard::batch::Message;
use guard::ec2::Ec2Client;
use guard::pace::Paced;
use guard::respond::{IamClient, Rails};
use serde_json::{Value, json};

use crate::{Local, root, unique};

/// The attribution path against the emulator.
pub type LocalAttributor =
    Attributor<DynamoStore, Paced<Ec2Client>, IamClient, SnsAlerts, SystemClock>;

/// The attribution path against the emulator, with the response on or off; ec2pass's own roles
/// are `ec2pass-*`, the admin `role/ec2pass-admin`.
pub fn local_attributor(local: &Local, aws: &SdkConfig, response: bool) -> LocalAttributor {
    let account = local.get("EC2PASS_ACCOUNT").to_owned();
    Attributor {
        store: DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), local.table()),
        launches: Paced(Ec2Client::new(aws_sdk_ec2::Client::new(aws))),
        iam: IamClient(aws_sdk_iam::Client::new(aws)),
        alerts: SnsAlerts::new(
            aws_sdk_sns::Client::new(aws),
            local.get("EC2PASS_ALERT_TOPIC_ARN").to_owned(),
        ),
        clock: SystemClock,
        rails: Rails {
            enabled: response,
            admin: format!("arn:aws:iam::{account}:role/ec2pass-admin"),
            own_roles: vec!["ec2pass-*".into()],
            allow: Vec::new(),
            account,
        },
        settings: Settings::default(),
    }
}

/// A sample record, as EventBridge delivers it.
pub fn fixture(name: &str) -> Value {
    let path = root().join(format!("tests/fixtures/cloudtrail/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An IAM user's RunInstances of `id`, launched at `launched`, signed with `key`.
pub fn users_run(id: &InstanceId, launched: UnixTime, user: &str, key: &str) -> Value {
    let mut call = fixture("run-instances-iam-user");
    let d = &mut call["detail"];
    d["eventID"] = json!(unique("ct-"));
    d["eventTime"] = json!(launched.rfc3339());
    d["userIdentity"]["userName"] = json!(user);
    d["userIdentity"]["arn"] = json!(format!("arn:aws:iam::123456789012:user/{user}"));
    d["userIdentity"]["accessKeyId"] = json!(key);
    d["responseElements"]["instancesSet"]["items"][0]["instanceId"] = json!(id.as_str());
    d["responseElements"]["instancesSet"]["items"][0]["launchTime"] = json!(launched.0 * 1000);
    call
}

/// A session of `role` (issued ten minutes before) starting `id` at `at`.
pub fn roles_start(id: &InstanceId, at: UnixTime, role: &str) -> Value {
    let mut call = fixture("start-instances-assumed-role");
    let d = &mut call["detail"];
    d["eventID"] = json!(unique("ct-"));
    d["eventTime"] = json!(at.rfc3339());
    d["userIdentity"]["arn"] = json!(format!("arn:aws:sts::123456789012:assumed-role/{role}/s"));
    d["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] =
        json!(format!("arn:aws:iam::123456789012:role/{role}"));
    d["userIdentity"]["sessionContext"]["attributes"]["creationDate"] =
        json!(at.minus(Duration::from_secs(600)).rfc3339());
    d["requestParameters"]["instancesSet"]["items"] = json!([{ "instanceId": id.as_str() }]);
    call
}

/// Puts CloudTrail's record of a call on EventBridge (as CloudTrail does: `aws.ec2`, `AWS API
/// Call via CloudTrail`), and takes what the template's rule routed to the call queue.
pub async fn route(local: &Local, aws: &SdkConfig, call: &Value) -> Vec<Message> {
    local.require_emulator();
    let events = aws_sdk_eventbridge::Client::new(aws);
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .source("aws.ec2")
        .detail_type("AWS API Call via CloudTrail")
        .detail(call["detail"].to_string())
        .build();
    let put = events
        .put_events()
        .entries(entry)
        .send()
        .await
        .expect("PutEvents");
    assert_eq!(put.failed_entry_count(), 0, "PutEvents refused the call");
    let sqs = aws_sdk_sqs::Client::new(aws);
    let url = local.get("EC2PASS_CALL_QUEUE_URL");
    let mut messages = Vec::new();
    for _ in 0..10 {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .expect("ReceiveMessage");
        for m in out.messages() {
            let receipt = m.receipt_handle().unwrap_or_default().to_owned();
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(&receipt)
                .send()
                .await
                .expect("DeleteMessage");
            messages.push(Message {
                id: m.message_id().unwrap_or_default().to_owned(),
                receipt,
                receive_count: 1,
                body: m.body().unwrap_or_default().to_owned(),
            });
        }
        if !messages.is_empty() {
            break;
        }
    }
    messages
}

/// An instance's LaunchTime, as EC2 reports it (what CloudTrail's `RunInstances` answer carries).
pub async fn launch_time(ec2: &aws_sdk_ec2::Client, id: &InstanceId) -> UnixTime {
    ec2.describe_instances()
        .instance_ids(id.as_str())
        .send()
        .await
        .expect("DescribeInstances")
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| i.launch_time())
        .map(|t| UnixTime(t.secs()))
        .expect("a launch time")
}
