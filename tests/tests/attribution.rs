//! Who started it, and cutting them off (SPEC §11), against the moto emulator through the real
//! SDK: CloudTrail's call put on EventBridge and routed by the template's rule to the call queue,
//! the guard's verdicts in DynamoDB, the alerts through SNS → SQS, and the response in IAM
//! (`UpdateAccessKey`, `PutRolePolicy`). The calls are `tests/fixtures/cloudtrail/`'s samples
//! (shaped like the CloudTrail User Guide's `userIdentity` examples) with this run's instance,
//! user, key and times written in.

use aws_config::SdkConfig;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::time::UnixTime;
use ec2pass_tests::calls::{LocalAttributor, local_attributor, roles_start, users_run};
use ec2pass_tests::{
    AlertQueue, Local, Received, invocation, launch_instance, local_guard, state_change, unique,
};
use guard::batch::Message;
use guard::respond::REVOKE_POLICY;
use serde_json::{Value, json};

struct World {
    local: Local,
    aws: SdkConfig,
    iam: aws_sdk_iam::Client,
    ec2: aws_sdk_ec2::Client,
    alerts: AlertQueue,
}

async fn world() -> World {
    let local = Local::load();
    local.require_emulator();
    let aws = local.aws().await;
    let alerts = AlertQueue::subscribe(&aws, local.get("EC2PASS_ALERT_TOPIC_ARN"), None).await;
    World {
        iam: aws_sdk_iam::Client::new(&aws),
        ec2: aws_sdk_ec2::Client::new(&aws),
        alerts,
        aws,
        local,
    }
}

impl World {
    fn attributor(&self, response: bool) -> LocalAttributor {
        local_attributor(&self.local, &self.aws, response)
    }

    /// An instance launched in moto, and its LaunchTime.
    async fn launch(&self, name: &str) -> (InstanceId, UnixTime) {
        let id = launch_instance(&self.ec2, name).await;
        let launched = ec2pass_tests::calls::launch_time(&self.ec2, &id).await;
        (id, launched)
    }

    /// The guard denies the instance's start (no password): its deny alert goes out.
    async fn deny(&self, id: &InstanceId) {
        let reports = local_guard(&self.local, &self.aws)
            .handle(&state_change(id, "running"), &invocation())
            .await
            .expect("handled");
        assert_eq!(reports[0].verdict, "deny");
    }

    async fn route(&self, call: &Value) -> Vec<Message> {
        ec2pass_tests::calls::route(&self.local, &self.aws, call).await
    }

    /// The alerts about `id` that arrived.
    async fn alerts_about(&self, id: &InstanceId) -> Vec<Received> {
        self.alerts
            .drain()
            .await
            .into_iter()
            .filter(|a| a.message["instance_id"] == id.as_str())
            .collect()
    }

    /// An IAM user with an active access key: (user, key id).
    async fn user_with_key(&self) -> (String, String) {
        let user = unique("mallory-");
        self.iam
            .create_user()
            .user_name(&user)
            .send()
            .await
            .expect("CreateUser");
        let key = self
            .iam
            .create_access_key()
            .user_name(&user)
            .send()
            .await
            .expect("CreateAccessKey")
            .access_key
            .expect("a key")
            .access_key_id;
        (user, key)
    }

    async fn key_status(&self, user: &str) -> Vec<String> {
        self.iam
            .list_access_keys()
            .user_name(user)
            .send()
            .await
            .expect("ListAccessKeys")
            .access_key_metadata()
            .iter()
            .filter_map(|k| k.status().map(|s| s.as_str().to_owned()))
            .collect()
    }

    async fn role(&self, name: &str) {
        self.iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(
                json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow",
                    "Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]})
                .to_string(),
            )
            .send()
            .await
            .expect("CreateRole");
    }

    async fn revocation_of(&self, role: &str) -> Option<Value> {
        let out = self
            .iam
            .get_role_policy()
            .role_name(role)
            .policy_name(REVOKE_POLICY)
            .send()
            .await
            .ok()?;
        // IAM returns the document URL-encoded.
        let doc = out.policy_document();
        let decoded = percent_decode(doc);
        serde_json::from_str(&decoded).ok()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_call_after_the_deny_is_told_once_and_the_users_key_deactivated() {
    // Given a deny whose alert went out without a caller, and the response on
    let w = world().await;
    let (user, key) = w.user_with_key().await;
    let (id, launched) = w.launch("attr-user").await;
    w.deny(&id).await;
    let deny = w.alerts_about(&id).await;
    assert_eq!(deny.len(), 1);
    assert_eq!(deny[0].message["caller"], Value::Null);
    assert_eq!(deny[0].message["schema_version"], 2);
    // When CloudTrail's call arrives, routed by the template's rule, and is delivered twice
    let messages = w.route(&users_run(&id, launched, &user, &key)).await;
    assert_eq!(
        messages.len(),
        1,
        "the rule routes the call to the call queue"
    );
    let attributor = w.attributor(true);
    let first = attributor.handle_batch(&messages).await;
    let again = attributor.handle_batch(&messages).await;
    assert!(first.failed.is_empty() && again.failed.is_empty());
    // Then one attribution alert names the user and the key
    let after = w.alerts_about(&id).await;
    let told: Vec<_> = after
        .iter()
        .filter(|a| a.message["verdict"] == "attribution")
        .collect();
    assert_eq!(told.len(), 1, "{after:?}");
    assert_eq!(told[0].message["caller"]["access_key_id"], key.as_str());
    assert_eq!(
        told[0].attributes.get("verdict").map(String::as_str),
        Some("attribution")
    );
    // And the key is deactivated, once, with the command that undoes it in the alert
    assert_eq!(w.key_status(&user).await, ["Inactive"]);
    let response: Vec<_> = after
        .iter()
        .filter(|a| a.message["verdict"] == "response")
        .collect();
    assert_eq!(response.len(), 1, "{after:?}");
    assert_eq!(response[0].message["reason"], "deactivated-key");
    let detail = response[0].message["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!(
        "aws iam update-access-key --user-name {user} --access-key-id {key} --status Active"
    )));
    // And the undo works
    w.iam
        .update_access_key()
        .user_name(&user)
        .access_key_id(&key)
        .status(aws_sdk_iam::types::StatusType::Active)
        .send()
        .await
        .expect("the documented undo");
    assert_eq!(w.key_status(&user).await, ["Active"]);
}

#[tokio::test]
async fn a_call_before_the_deny_puts_the_caller_in_the_deny_alert_and_revokes_the_role() {
    let w = world().await;
    let role = unique("developer-");
    w.role(&role).await;
    let (id, launched) = w.launch("attr-role").await;
    let call = roles_start(&id, launched, &role);
    let attributor = w.attributor(true);
    // When the call arrives first: it waits for its start
    let messages = w.route(&call).await;
    let early = attributor.handle_batch(&messages).await;
    assert_eq!(
        early.failed.len(),
        1,
        "handed back while the start is undecided"
    );
    // And then the guard denies the start: its alert names the caller
    w.deny(&id).await;
    let deny = w.alerts_about(&id).await;
    assert_eq!(deny.len(), 1);
    assert_eq!(
        deny[0].message["caller"]["session_issuer"],
        format!("arn:aws:iam::123456789012:role/{role}")
    );
    assert!(deny[0].message["caller"]["event_id"].is_string());
    // When the call comes back: no attribution alert repeats it, and the role's older
    // sessions are revoked with the console's policy
    let late = attributor.handle_batch(&messages).await;
    assert!(late.failed.is_empty());
    let after = w.alerts_about(&id).await;
    assert!(
        after.iter().all(|a| a.message["verdict"] != "attribution"),
        "{after:?}"
    );
    assert_eq!(
        after
            .iter()
            .filter(|a| a.message["verdict"] == "response")
            .count(),
        1
    );
    let policy = w
        .revocation_of(&role)
        .await
        .expect("AWSRevokeOlderSessions");
    assert_eq!(policy["Statement"][0]["Effect"], "Deny");
    let cutoff = policy["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .and_then(UnixTime::parse_rfc3339)
        .expect("a TokenIssueTime cut-off");
    assert!(cutoff >= launched, "sessions issued before now are cut off");
}

#[tokio::test]
async fn with_the_response_off_nothing_in_iam_changes() {
    let w = world().await;
    let (user, key) = w.user_with_key().await;
    let role = unique("developer-");
    w.role(&role).await;
    let (by_user, launched_u) = w.launch("attr-off-user").await;
    let (by_role, launched_r) = w.launch("attr-off-role").await;
    w.deny(&by_user).await;
    w.deny(&by_role).await;
    let attributor = w.attributor(false);
    for call in [
        users_run(&by_user, launched_u, &user, &key),
        roles_start(&by_role, launched_r, &role),
    ] {
        let messages = w.route(&call).await;
        assert!(attributor.handle_batch(&messages).await.failed.is_empty());
    }
    assert_eq!(w.key_status(&user).await, ["Active"]);
    assert_eq!(w.revocation_of(&role).await, None);
    let heard = w.alerts.drain().await;
    for id in [&by_user, &by_role] {
        let about: Vec<_> = heard
            .iter()
            .filter(|a| a.message["instance_id"] == id.as_str())
            .collect();
        assert!(about.iter().any(|a| a.message["verdict"] == "attribution"));
        assert!(about.iter().all(|a| a.message["verdict"] != "response"));
    }
}

#[tokio::test]
async fn ec2passs_own_role_is_never_given_the_revocation() {
    let w = world().await;
    let role = unique("ec2pass-guard-");
    w.role(&role).await;
    let (id, launched) = w.launch("attr-own").await;
    w.deny(&id).await;
    let messages = w.route(&roles_start(&id, launched, &role)).await;
    w.attributor(true).handle_batch(&messages).await;
    assert_eq!(w.revocation_of(&role).await, None);
    let refused: Vec<_> = w
        .alerts_about(&id)
        .await
        .into_iter()
        .filter(|a| a.message["verdict"] == "response")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].message["reason"], "refused");
}
