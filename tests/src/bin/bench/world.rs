//! The bench's corner of the emulator: its own table (same schema as the local one), its own
//! alert topic, the instances it launches, and the events it sends.
//!
//! Everything the bench creates is its own, so its thousands of items and instances neither slow
//! nor disturb tests sharing the emulator, and [`World::clean_up`] removes them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{BillingMode, GlobalSecondaryIndex};
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use base64::Engine;
use ec2pass_shared::config::SigningSecret;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::password::Password;
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::store::{MintOutcome, MintStore};
use ec2pass_shared::time::UnixTime;
use ec2pass_tests::{Local, SlashCommand, now, root, unique};
use serde_json::json;

/// The emulator, with the bench's table and topic.
pub struct World {
    /// `dev/local.env`.
    pub local: Local,
    /// SDK configuration for the emulator.
    pub aws: SdkConfig,
    /// EC2, for arranging (never recorded).
    pub ec2: aws_sdk_ec2::Client,
    /// The bench's table.
    pub table: String,
    /// The bench's alert topic.
    pub topic_arn: String,
    /// The emulator's endpoint.
    pub endpoint: String,
    store: DynamoStore,
    launched: Mutex<Vec<String>>,
}

/// A failure arranging the world, as text.
pub type Fallible<T> = Result<T, String>;

fn sdk<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what} against the emulator: {e:?}")
}

impl World {
    /// Creates the bench's table (the local table's schema) and topic, in the emulator at
    /// `endpoint` (default: `dev/local.env`'s).
    pub async fn create(endpoint: Option<String>) -> Fallible<Self> {
        let local = Local::load();
        let aws = match &endpoint {
            None => local.aws().await,
            Some(url) => {
                let credentials = aws_sdk_dynamodb::config::Credentials::new(
                    local.get("AWS_ACCESS_KEY_ID"),
                    local.get("AWS_SECRET_ACCESS_KEY"),
                    None,
                    None,
                    "dev/local.env",
                );
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .endpoint_url(url)
                    .region(aws_config::Region::new(local.get("AWS_REGION").to_owned()))
                    .credentials_provider(credentials)
                    .load()
                    .await
            }
        };
        let endpoint = endpoint.unwrap_or_else(|| local.endpoint().to_owned());
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let table = unique("ec2pass-bench-");
        clone_table(&ddb, &local.table(), &table).await?;
        after_the_tables_second(&ddb, &table).await?;
        let topic_arn = aws_sdk_sns::Client::new(&aws)
            .create_topic()
            .name(unique("ec2pass-bench-alerts-"))
            .send()
            .await
            .map_err(sdk("CreateTopic"))?
            .topic_arn
            .ok_or("CreateTopic returned no ARN")?;
        Ok(Self {
            ec2: aws_sdk_ec2::Client::new(&aws),
            store: DynamoStore::new(ddb, table.clone()),
            table,
            topic_arn,
            endpoint,
            aws,
            local,
            launched: Mutex::new(Vec::new()),
        })
    }

    /// Removes what [`World::create`] and the launches made (best effort; says what failed).
    pub async fn clean_up(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let ids = std::mem::take(&mut *self.launched.lock().unwrap_or_else(|p| p.into_inner()));
        for batch in ids.chunks(500) {
            if let Err(e) = self
                .ec2
                .terminate_instances()
                .set_instance_ids(Some(batch.to_vec()))
                .send()
                .await
            {
                problems.push(format!("TerminateInstances: {e:?}"));
            }
        }
        let ddb = aws_sdk_dynamodb::Client::new(&self.aws);
        if let Err(e) = ddb.delete_table().table_name(&self.table).send().await {
            problems.push(format!("DeleteTable {}: {e:?}", self.table));
        }
        let sns = aws_sdk_sns::Client::new(&self.aws);
        if let Err(e) = sns.delete_topic().topic_arn(&self.topic_arn).send().await {
            problems.push(format!("DeleteTopic {}: {e:?}", self.topic_arn));
        }
        problems
    }

    /// The functions' settings: `dev/local.env`, pointed at the bench's table and topic, with
    /// the deployed defaults for logging (INFO, JSON) instead of the local debug level.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut vars = local_env();
        for (k, v) in [
            ("EC2PASS_TABLE", self.table.as_str()),
            ("EC2PASS_ALERT_TOPIC_ARN", self.topic_arn.as_str()),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ] {
            vars.insert(k.to_owned(), v.to_owned());
        }
        vars
    }

    /// The settings as a lookup, for configurations built in-process.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let vars = self.settings();
        move |k| vars.get(k).cloned()
    }

    /// The signing secret the functions are configured with.
    pub fn signing_secret(&self) -> SigningSecret {
        self.local.signing_secret()
    }

    /// Launches `count` instances in one call, with these tags (none at all when empty).
    pub async fn launch(&self, count: usize, tags: &[(&str, &str)]) -> Fallible<Vec<InstanceId>> {
        let count = i32::try_from(count).map_err(|_| "too many instances")?;
        let mut run = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(count)
            .max_count(count);
        if !tags.is_empty() {
            let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
            for (k, v) in tags {
                spec = spec.tags(Tag::builder().key(*k).value(*v).build());
            }
            run = run.tag_specifications(spec.build());
        }
        let out = run.send().await.map_err(sdk("RunInstances"))?;
        let ids: Vec<InstanceId> = out
            .instances()
            .iter()
            .filter_map(|i| i.instance_id())
            .filter_map(InstanceId::parse)
            .collect();
        if ids.len() != usize::try_from(count).unwrap_or_default() {
            return Err(format!("RunInstances launched {} of {count}", ids.len()));
        }
        self.launched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ids.iter().map(|i| i.as_str().to_owned()));
        Ok(ids)
    }

    /// Sets the `Auth` tag; the value goes in the secrets ledger, so `secrets-scan` looks for
    /// it in the bench's logs too.
    pub async fn tag_auth(&self, id: &InstanceId, value: &str) -> Fallible<()> {
        ec2pass_tests::secrets::remember(value);
        self.ec2
            .create_tags()
            .resources(id.as_str())
            .tags(Tag::builder().key("Auth").value(value).build())
            .send()
            .await
            .map(|_| ())
            .map_err(sdk("CreateTags"))
    }

    /// Mints a password for `scope` straight into the table, as the issuer does.
    pub async fn mint(&self, scope: &InstanceId) -> Fallible<Password> {
        let cmd = issuer::request::SlashCommand {
            team_id: "T0BENCH".into(),
            enterprise_id: None,
            api_app_id: None,
            user_id: unique("U"),
            channel_id: "C0BENCH".into(),
            command: "/ec2pass".into(),
            text: scope.as_str().to_owned(),
            trigger_id: unique("trigger."),
            response_url: None,
            front: Default::default(),
        };
        let (password, mint) = issuer::mint::plan(
            &cmd,
            Some(scope.clone()),
            Duration::from_secs(3600),
            UnixTime(now()),
            10,
        );
        match self.store.mint(&mint).await {
            Ok(MintOutcome::Minted) => Ok(password),
            other => Err(format!("minting a password for {scope}: {other:?}")),
        }
    }
}

/// `dev/local.env`, every setting (`Local` only answers for named ones).
pub fn local_env() -> BTreeMap<String, String> {
    let path = root().join("dev/local.env");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Waits until the second in which `table` was created has passed. The guard leaves alone every
/// start at or before its activation, the table's creation time in whole seconds, so an instance
/// the bench launched within that second would not be guarded at all.
async fn after_the_tables_second(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Fallible<()> {
    let created = ddb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(sdk("DescribeTable"))?
        .table
        .and_then(|t| t.creation_date_time)
        .ok_or("DescribeTable returned no creation time")?
        .secs();
    while now() <= created {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Creates `name` with the key schema, attributes and indexes of `source`.
async fn clone_table(ddb: &aws_sdk_dynamodb::Client, source: &str, name: &str) -> Fallible<()> {
    let described = ddb
        .describe_table()
        .table_name(source)
        .send()
        .await
        .map_err(sdk(
            "DescribeTable (is the local table created? `make up` does)",
        ))?
        .table
        .ok_or("DescribeTable returned no table")?;
    let mut create = ddb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(described.key_schema)
        .set_attribute_definitions(described.attribute_definitions);
    for index in described.global_secondary_indexes.unwrap_or_default() {
        let gsi = GlobalSecondaryIndex::builder()
            .set_index_name(index.index_name)
            .set_key_schema(index.key_schema)
            .set_projection(index.projection)
            .build()
            .map_err(|e| format!("index of {source}: {e}"))?;
        create = create.global_secondary_indexes(gsi);
    }
    create.send().await.map_err(sdk("CreateTable"))?;
    Ok(())
}

/// The issuer's payload: a function URL request (API Gateway v2 shape) carrying a slash command
/// signed now, its form body base64-encoded as function URLs deliver it.
pub fn issuer_event(secret: &SigningSecret, cmd: &SlashCommand) -> Vec<u8> {
    let body = cmd.body();
    let ts = now().to_string();
    let signature = issuer::verify::sign(secret, &ts, body.as_bytes());
    let host = "bench0000.lambda-url.us-east-1.on.aws";
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {
            "content-type": "application/x-www-form-urlencoded",
            "content-length": body.len().to_string(),
            "x-slack-request-timestamp": ts,
            "x-slack-signature": signature,
            "host": host,
            "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "accept": "application/json,*/*",
            "x-forwarded-proto": "https",
            "x-forwarded-for": "203.0.113.7",
            "x-amzn-trace-id": "Root=1-00000000-000000000000000000000000"
        },
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "bench0000",
            "domainName": host,
            "domainPrefix": "bench0000",
            "http": {
                "method": "POST",
                "path": "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "Slackbot 1.0 (+https://api.slack.com/robots)"
            },
            "requestId": unique("req-"),
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2026:10:00:00 +0000",
            "timeEpoch": now() * 1000
        },
        "body": base64::engine::general_purpose::STANDARD.encode(body.as_bytes()),
        "isBase64Encoded": true
    })
    .to_string()
    .into_bytes()
}

/// A scoped mint command from a user no other request uses (so no rate limit is reached).
pub fn mint_command(scope: &InstanceId) -> SlashCommand {
    SlashCommand::new("T0BENCH", &unique("U"), scope.as_str())
}

/// The guard's payload: an EventBridge state change.
pub fn guard_event(id: &InstanceId, state: &str) -> Vec<u8> {
    ec2pass_tests::state_change(id, state)
        .to_string()
        .into_bytes()
}

/// Checks the issuer's answer (a function URL response) holds a freshly minted password.
pub fn check_minted(body: &[u8]) -> Result<(), String> {
    let response: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("issuer answer is not JSON: {e}"))?;
    let raw = response["body"].as_str().unwrap_or_default().to_owned();
    let answer = ec2pass_tests::Answer {
        status: u16::try_from(response["statusCode"].as_u64().unwrap_or_default())
            .unwrap_or_default(),
        content_type: response["headers"]["content-type"]
            .as_str()
            .map(str::to_owned),
        json: serde_json::from_str(&raw).ok(),
        raw,
    };
    if answer.is_ephemeral() && answer.password().is_some() {
        Ok(())
    } else {
        Err(format!(
            "the issuer did not mint: {}",
            String::from_utf8_lossy(body)
        ))
    }
}

/// Checks the guard's answer reports `verdict` for its one instance.
pub fn check_verdict(body: &[u8], verdict: &str) -> Result<(), String> {
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("guard answer is not JSON: {e}"))?;
    let reports = answer["reports"].as_array().cloned().unwrap_or_default();
    match reports.as_slice() {
        [one] if one["verdict"] == verdict => Ok(()),
        _ => Err(format!(
            "expected one {verdict} report, the guard answered {answer}"
        )),
    }
}
