//! Support for ec2pass's integration and end-to-end tests, and for the demo.
//!
//! Everything here talks to the local stack that `make test` / `make up` start: the moto
//! emulator and the functions under `cargo lambda watch`, configured by `dev/local.env`. A test
//! that needs them and cannot reach them fails with a message saying how to start them; none
//! skips.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use ec2pass_shared::config::SigningSecret;
use ec2pass_shared::ids::InstanceId;
use issuer::verify::sign;

/// A chat stand-in on loopback that records what ec2pass posts to it.
pub mod calls;
pub mod chat;
/// EventBridge → SQS → the guard, locally: the event source mapping played against moto.
pub mod esm;
/// A throttle-faithful EC2 and the guard's two designs in virtual time (the burst figures).
pub mod model;
pub mod org;
pub mod secrets;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The local settings from `dev/local.env`.
#[derive(Debug, Clone)]
pub struct Local {
    vars: HashMap<String, String>,
}

impl Local {
    /// Reads `dev/local.env`.
    pub fn load() -> Self {
        secrets::capture_logs();
        let path = root().join("dev/local.env");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let vars = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Self { vars }
    }

    /// One setting; panics naming it when it is missing.
    pub fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("dev/local.env does not set {key}"))
    }

    /// The settings as a lookup, for `Env::from_fn`.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |k| self.vars.get(k).cloned()
    }

    /// The emulator's endpoint.
    pub fn endpoint(&self) -> &str {
        self.get("AWS_ENDPOINT_URL")
    }

    /// The table's name.
    pub fn table(&self) -> String {
        self.get("EC2PASS_TABLE").to_owned()
    }

    /// The development signing secret (`EC2PASS_DEV_SIGNING_SECRET`), which the local set-up puts
    /// in moto's Secrets Manager for the issuer, and with which the tests sign as Slack.
    pub fn signing_secret(&self) -> SigningSecret {
        SigningSecret::new(self.get("EC2PASS_DEV_SIGNING_SECRET"))
    }

    /// The development key that seals reply URLs (`EC2PASS_DEV_REPLY_KEY`), which the local
    /// set-up puts in moto's Secrets Manager for the issuer and the follow-up function.
    pub fn reply_key(&self) -> Option<ec2pass_shared::reply::ReplyKey> {
        ec2pass_shared::reply::ReplyKey::from_secret(self.get("EC2PASS_DEV_REPLY_KEY"))
    }

    /// The development Mattermost token (`EC2PASS_DEV_MATTERMOST_TOKEN`), which the tests present
    /// as Mattermost does.
    pub fn mattermost_token(&self) -> &str {
        self.get("EC2PASS_DEV_MATTERMOST_TOKEN")
    }

    /// The Secrets Manager secret the issuer reads its signing secret from
    /// (`EC2PASS_SLACK_SIGNING_SECRET_ARN`).
    pub fn signing_secret_id(&self) -> &str {
        self.get("EC2PASS_SLACK_SIGNING_SECRET_ARN")
    }

    /// The issuer's function URL under `cargo lambda watch`.
    pub fn issuer_url(&self) -> String {
        format!(
            "http://{}:{}/lambda-url/issuer/",
            self.get("EC2PASS_LAMBDA_ADDRESS"),
            self.get("EC2PASS_LAMBDA_PORT")
        )
    }

    /// Fails loudly unless moto answers.
    pub fn require_emulator(&self) {
        let hostport = self.endpoint().trim_start_matches("http://");
        require(hostport, "the moto emulator", "AWS_ENDPOINT_URL");
    }

    /// Fails loudly unless `cargo lambda watch` answers.
    pub fn require_lambda(&self) {
        let hostport = format!(
            "{}:{}",
            self.get("EC2PASS_LAMBDA_ADDRESS"),
            self.get("EC2PASS_LAMBDA_PORT")
        );
        require(&hostport, "cargo lambda watch", "EC2PASS_LAMBDA_PORT");
    }

    /// SDK configuration for the emulator, built explicitly (no process environment needed).
    pub async fn aws(&self) -> SdkConfig {
        self.require_emulator();
        let credentials = aws_sdk_dynamodb::config::Credentials::new(
            self.get("AWS_ACCESS_KEY_ID"),
            self.get("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "dev/local.env",
        );
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new(self.get("AWS_REGION").to_owned()))
            .credentials_provider(credentials)
            .load()
            .await
    }
}

fn require(hostport: &str, what: &str, var: &str) {
    let reachable = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "{what} is not reachable at {hostport} ({var} in dev/local.env). \
         This test needs the local stack: run `make test` (which starts and stops it), \
         or `make up` before `cargo test` and `make down` after."
    );
}

/// A name no other test run uses, for users, teams and triggers.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:X}{seq:X}", nanos % 0xFFFF_FFFF_FFFF)
}

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Launches an instance in the emulator with a `Name` tag.
pub async fn launch_instance(ec2: &aws_sdk_ec2::Client, name: &str) -> InstanceId {
    let out = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Name").value(name).build())
                .build(),
        )
        .send()
        .await
        .expect("RunInstances against moto");
    let id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .expect("RunInstances returned no instance");
    InstanceId::parse(id).expect("moto returned a malformed instance id")
}

/// Every item of a table, every page.
pub async fn scan_all(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("Scan against moto");
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return items,
        }
    }
}

/// Every string and byte string in an item, for searching.
pub fn item_text(item: &HashMap<String, AttributeValue>) -> String {
    fn walk(v: &AttributeValue, out: &mut String) {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => out.push_str(s),
            AttributeValue::B(b) => out.push_str(&String::from_utf8_lossy(b.as_ref())),
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().for_each(|s| out.push_str(s)),
            AttributeValue::L(l) => l.iter().for_each(|v| walk(v, out)),
            AttributeValue::M(m) => m.iter().for_each(|(k, v)| {
                out.push_str(k);
                walk(v, out);
            }),
            _ => {}
        }
        out.push('\n');
    }
    let mut out = String::new();
    for (k, v) in item {
        out.push_str(k);
        out.push('=');
        walk(v, &mut out);
    }
    out
}

/// A slash command as Slack would post it.
#[derive(Debug, Clone)]
pub struct SlashCommand {
    /// Workspace.
    pub team_id: String,
    /// User.
    pub user_id: String,
    /// Channel.
    pub channel_id: String,
    /// The text after `/ec2pass`.
    pub text: String,
    /// Slack's unique id of the invocation.
    pub trigger_id: String,
    /// Where follow-ups may be posted (Slack-shaped, on Slack's host: never kept locally, where
    /// only the chat stand-in's origin is allowed).
    pub response_url: String,
}

impl SlashCommand {
    /// A command from `user` with a fresh trigger id.
    pub fn new(team_id: &str, user_id: &str, text: &str) -> Self {
        Self {
            team_id: team_id.to_owned(),
            user_id: user_id.to_owned(),
            channel_id: "C0DEMO".to_owned(),
            text: text.to_owned(),
            trigger_id: unique("trigger."),
            response_url: "https://hooks.slack.com/commands/T0/1/x".to_owned(),
        }
    }

    /// The same command, with its reply URL on `url` (a chat stand-in's).
    pub fn replying_to(mut self, url: &str) -> Self {
        url.clone_into(&mut self.response_url);
        self
    }

    /// The form body, encoded as Slack encodes it (spaces as `+`).
    pub fn body(&self) -> String {
        serde_urlencoded::to_string([
            ("token", "legacy-verification-token"),
            ("team_id", &self.team_id),
            ("team_domain", "demo"),
            ("channel_id", &self.channel_id),
            ("channel_name", "ops"),
            ("user_id", &self.user_id),
            ("user_name", "someone"),
            ("command", "/ec2pass"),
            ("text", &self.text),
            ("api_app_id", "A0DEMO"),
            ("response_url", &self.response_url),
            ("trigger_id", &self.trigger_id),
        ])
        .unwrap_or_default()
    }
}

/// What the issuer answered over HTTP.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The body, raw.
    pub raw: String,
    /// The body as JSON, when it is.
    pub json: Option<serde_json::Value>,
}

impl Answer {
    /// The fallback text of an ephemeral answer.
    pub fn text(&self) -> &str {
        self.json
            .as_ref()
            .and_then(|j| j["text"].as_str())
            .unwrap_or_default()
    }

    /// Whether this is a 200 ephemeral JSON answer.
    pub fn is_ephemeral(&self) -> bool {
        self.status == 200
            && self
                .content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json"))
            && self
                .json
                .as_ref()
                .is_some_and(|j| j["response_type"] == "ephemeral")
    }

    /// The password in the answer, as shown (`xxxx-xxxx-xxxx-xxxx-xxxx`), if there is one.
    /// Every password read here goes in the secrets ledger (see [`secrets`]).
    pub fn password(&self) -> Option<String> {
        let found = self
            .text()
            .split(|c: char| c.is_whitespace() || c == '`')
            .find(|w| ec2pass_shared::password::Password::from_tag(w).is_some() && w.len() == 24)
            .map(str::to_owned);
        if let Some(p) = &found {
            secrets::remember(p);
        }
        found
    }
}

/// Plays Slack: signs and posts slash commands to the issuer's URL.
#[derive(Debug, Clone)]
pub struct Slack {
    http: reqwest::Client,
    url: String,
    secret: SigningSecret,
}

impl Slack {
    /// A client for the local issuer.
    pub fn local(local: &Local) -> Self {
        local.require_lambda();
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("HTTP client"),
            url: local.issuer_url(),
            secret: local.signing_secret(),
        }
    }

    /// Sends a command, signed now.
    pub async fn send(&self, cmd: &SlashCommand) -> Answer {
        self.send_body(&cmd.body()).await
    }

    /// Sends a body, signed now.
    pub async fn send_body(&self, body: &str) -> Answer {
        let ts = now().to_string();
        let sig = sign(&self.secret, &ts, body.as_bytes());
        self.post(
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-slack-request-timestamp", &ts),
                ("x-slack-signature", &sig),
            ],
            body.as_bytes().to_vec(),
        )
        .await
    }

    /// Posts anything, with exactly these headers.
    pub async fn post(&self, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        self.request(reqwest::Method::POST, headers, body).await
    }

    /// Posts a body signed now to `path` on the function URL (`slack/actions` for a button).
    pub async fn send_to(&self, path: &str, body: &str) -> Answer {
        let ts = now().to_string();
        let sig = sign(&self.secret, &ts, body.as_bytes());
        self.post_to(
            path,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-slack-request-timestamp", &ts),
                ("x-slack-signature", &sig),
            ],
            body.as_bytes().to_vec(),
        )
        .await
    }

    /// Posts a body to `path` on the function URL with exactly these headers (Mattermost's
    /// requests carry no signature).
    pub async fn post_to(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let at = Self {
            http: self.http.clone(),
            url: format!("{}{path}", self.url),
            secret: self.secret.clone(),
        };
        at.request(reqwest::Method::POST, headers, body).await
    }

    /// Any method, with exactly these headers.
    pub async fn request(
        &self,
        method: reqwest::Method,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut req = self.http.request(method, &self.url).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request to cargo lambda watch");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let raw = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&raw).ok();
        Answer {
            status,
            content_type,
            raw,
            json,
        }
    }
}

/// An EventBridge `EC2 Instance State-change Notification`, in the documented shape.
pub fn state_change(instance: &InstanceId, state: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "0",
        "id": unique("evt-"),
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2026-11-21T10:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
        "detail": {"instance-id": instance.as_str(), "state": state}
    })
}

/// Sets one tag on an instance. An `Auth` value goes in the secrets ledger (see [`secrets`]).
pub async fn tag(ec2: &aws_sdk_ec2::Client, instance: &InstanceId, key: &str, value: &str) {
    if key == "Auth" {
        secrets::remember(value);
    }
    ec2.create_tags()
        .resources(instance.as_str())
        .tags(Tag::builder().key(key).value(value).build())
        .send()
        .await
        .expect("CreateTags against moto");
}

/// An instance's state and tags, as EC2 reports them now.
pub async fn inspect(
    ec2: &aws_sdk_ec2::Client,
    instance: &InstanceId,
) -> (String, HashMap<String, String>) {
    let out = ec2
        .describe_instances()
        .instance_ids(instance.as_str())
        .send()
        .await
        .expect("DescribeInstances against moto");
    let i = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .expect("the instance exists");
    let state = i
        .state()
        .and_then(|s| s.name())
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    let tags = i
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect();
    (state, tags)
}

/// An alert as a subscriber receives it through SNS → SQS.
#[derive(Debug, Clone)]
pub struct Received {
    /// The SNS subject.
    pub subject: String,
    /// The JSON message.
    pub message: serde_json::Value,
    /// The message attributes (name → string value).
    pub attributes: HashMap<String, String>,
}

/// An SQS queue subscribed to the alert topic, optionally with a filter policy.
pub struct AlertQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl AlertQueue {
    /// Creates a queue and subscribes it to the topic.
    pub async fn subscribe(aws: &SdkConfig, topic_arn: &str, filter_policy: Option<&str>) -> Self {
        let sqs = aws_sdk_sqs::Client::new(aws);
        let sns = aws_sdk_sns::Client::new(aws);
        let url = sqs
            .create_queue()
            .queue_name(unique("alerts-"))
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("a queue url");
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .expect("a queue arn");
        let mut subscribe = sns
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(arn);
        if let Some(policy) = filter_policy {
            subscribe = subscribe.attributes("FilterPolicy", policy);
        }
        subscribe.send().await.expect("Subscribe");
        Self { sqs, url }
    }

    /// Everything delivered so far (the queue is emptied), as the follow-up queue holds it:
    /// `(message id, body)`, the body the SNS notification around the alert's JSON.
    pub async fn drain_as_queued(&self) -> Vec<(String, String)> {
        self.drain()
            .await
            .into_iter()
            .map(|a| {
                let body =
                    serde_json::json!({"Type": "Notification", "Message": a.message.to_string()});
                (unique("msg-"), body.to_string())
            })
            .collect()
    }

    /// Everything delivered so far (the queue is emptied).
    pub async fn drain(&self) -> Vec<Received> {
        let mut out = Vec::new();
        loop {
            let batch = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .expect("ReceiveMessage");
            let messages = batch.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                let envelope: serde_json::Value =
                    serde_json::from_str(m.body().unwrap_or_default()).expect("an SNS envelope");
                let attributes = envelope["MessageAttributes"]
                    .as_object()
                    .map(|attrs| {
                        attrs
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    v["Value"].as_str().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Received {
                    subject: envelope["Subject"].as_str().unwrap_or_default().to_owned(),
                    message: serde_json::from_str(envelope["Message"].as_str().unwrap_or_default())
                        .expect("a JSON alert"),
                    attributes,
                });
                if let Some(handle) = m.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .expect("DeleteMessage");
                }
            }
        }
    }
}

/// The guard wired to the emulator in-process, as `guard`'s `main` wires it to AWS.
pub type LocalGuard = guard::guard::Guard<
    ec2pass_shared::store::dynamo::DynamoStore,
    guard::ec2::Ec2Client,
    guard::alerts::SnsAlerts,
    ec2pass_shared::time::SystemClock,
>;

/// Builds the guard against the emulator with `dev/local.env`'s settings.
pub fn local_guard(local: &Local, aws: &SdkConfig) -> LocalGuard {
    let config = ec2pass_shared::config::GuardConfig::from_env(
        &ec2pass_shared::config::Env::from_fn(local.lookup()),
    )
    .expect("guard configuration from dev/local.env");
    let store = ec2pass_shared::store::dynamo::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(aws),
        config.table.clone(),
    );
    let alerts =
        guard::alerts::SnsAlerts::new(aws_sdk_sns::Client::new(aws), config.topic_arn.clone());
    guard::guard::Guard::new(
        config,
        store,
        guard::ec2::Ec2Client::new(aws_sdk_ec2::Client::new(aws)),
        alerts,
        ec2pass_shared::time::SystemClock,
    )
}

/// An invocation with a comfortable deadline.
pub fn invocation() -> guard::guard::Invocation {
    guard::guard::Invocation {
        request_id: unique("req-"),
        deadline: tokio::time::Instant::now() + Duration::from_secs(20),
    }
}

/// Invokes a function under `cargo lambda watch` with a JSON payload; its JSON answer.
pub async fn invoke(
    local: &Local,
    function: &str,
    payload: &serde_json::Value,
) -> serde_json::Value {
    local.require_lambda();
    let url = format!(
        "http://{}:{}/2015-03-31/functions/{function}/invocations",
        local.get("EC2PASS_LAMBDA_ADDRESS"),
        local.get("EC2PASS_LAMBDA_PORT")
    );
    reqwest::Client::new()
        .post(url)
        .json(payload)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("invoke through cargo lambda watch")
        .json()
        .await
        .expect("a JSON answer")
}

/// The issuer wired to the emulator in-process, as `issuer`'s `main` wires it to AWS, on a clock
/// of the caller's choosing (a `FixedClock` holds the rate-limit window still).
pub type LocalIssuer<C> = issuer::handler::Issuer<
    ec2pass_shared::store::dynamo::DynamoStore,
    issuer::instances::Ec2Directory,
    C,
    issuer::chat::HttpChat,
>;

/// Builds the issuer against the emulator with `dev/local.env`'s settings.
pub fn local_issuer<C: ec2pass_shared::time::Clock>(
    local: &Local,
    aws: &SdkConfig,
    clock: C,
) -> LocalIssuer<C> {
    let config = ec2pass_shared::config::IssuerConfig::from_env(
        &ec2pass_shared::config::Env::from_fn(local.lookup()),
    )
    .expect("issuer configuration from dev/local.env");
    issuer::handler::Issuer {
        store: ec2pass_shared::store::dynamo::DynamoStore::new(
            aws_sdk_dynamodb::Client::new(aws),
            config.table.clone(),
        ),
        directory: issuer::instances::Ec2Directory::new(aws_sdk_ec2::Client::new(aws)),
        secret: local.signing_secret(),
        mattermost: issuer::front::MattermostToken::new(local.mattermost_token()),
        replies: local.reply_key(),
        chat: issuer::chat::HttpChat::new().expect("an HTTP client"),
        clock,
        config,
    }
}

/// The password shown in an answer's text (`xxxx-xxxx-xxxx-xxxx-xxxx`), if there is one. Unlike
/// [`Answer::password`] it reads any text, such as an in-process [`issuer::handler::Reply`]'s.
pub fn password_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '`')
        .find(|w| ec2pass_shared::password::Password::from_tag(w).is_some() && w.len() == 24)
        .map(str::to_owned)
}

/// A small deterministic pseudo-random sequence (xorshift64*), so load tests shuffle and pick
/// the same way on every run and a failure can be replayed.
#[derive(Debug, Clone)]
pub struct Deterministic(u64);

impl Deterministic {
    /// A sequence from a seed (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        let span = u64::try_from(hi - lo + 1).unwrap_or(u64::MAX);
        lo + usize::try_from(self.next_u64() % span).unwrap_or(0)
    }

    /// Shuffles in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.between(0, i);
            items.swap(i, j);
        }
    }
}

/// Runs every job with at most `limit` in flight at once (tokio `JoinSet` + `Semaphore`); the
/// results in the jobs' order, and the most that were ever in flight together.
pub async fn run_bounded<T, F>(limit: usize, jobs: Vec<F>) -> (Vec<T>, usize)
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for (index, job) in jobs.into_iter().enumerate() {
        let (permits, in_flight, peak) = (permits.clone(), in_flight.clone(), peak.clone());
        set.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let out = job.await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            (index, out)
        });
    }
    let mut results: Vec<(usize, T)> = set.join_all().await.into_iter().collect();
    results.sort_by_key(|(i, _)| *i);
    (
        results.into_iter().map(|(_, t)| t).collect(),
        peak.load(Ordering::SeqCst),
    )
}

/// Deletes items by `pk` (BatchWriteItem, 25 at a time), so a test that writes hundreds of items
/// leaves the shared emulator's table as it found it. moto copies the whole table for every
/// transaction it runs (to roll back), so every item left behind slows every later transaction.
pub async fn delete_items(ddb: &aws_sdk_dynamodb::Client, table: &str, keys: &[String]) {
    use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
    // BatchWriteItem refuses a batch that names one key twice.
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    for chunk in keys.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|k| {
                WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .key("pk", AttributeValue::S(k.clone()))
                            .build()
                            .expect("a delete request with its key"),
                    )
                    .build()
            })
            .collect();
        for _ in 0..10 {
            if requests.is_empty() {
                break;
            }
            let out = ddb
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .expect("BatchWriteItem against moto");
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
        }
    }
}
