//! The follow-up Lambda: wires the table and the chat into [`issuer::followup`], once, at cold
//! start. Alerts arrive from its SQS queue (subscribed to the alert topic), in batches with
//! partial failures; the schedule's event runs the catch-up.

use aws_config::BehaviorVersion;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use ec2pass_shared::config::{Env, FollowupConfig};
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::SystemClock;
use issuer::channel::MaybeChannel;
use issuer::channel::SnsChannel;
use issuer::chat::HttpChat;
use issuer::followup::{Bot, Followup};
use issuer::secret::{resolve_bot_token, resolve_reply_key};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = FollowupConfig::from_env(&Env::process())?;
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(issuer::cold_start::request_timeouts())
        .load()
        .await;
    // The bot token, like the issuer's signing secret, is read once, here; only this
    // function's role may read it.
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let bot = async {
        match &config.bot_token {
            None => Ok(None),
            Some(source) => resolve_bot_token(source, &secrets).await.map(|token| {
                Some(Bot {
                    token,
                    api: config.post_message.clone(),
                })
            }),
        }
    };
    let (key, bot) = tokio::join!(resolve_reply_key(&config.reply_key, &secrets), bot);
    let (key, bot) = (key?, bot?);
    let channel = config
        .chat_topic_arn
        .as_ref()
        .map(|arn| SnsChannel::new(aws_sdk_sns::Client::new(&aws), arn));
    let followup = Followup {
        store: DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), config.table),
        chat: HttpChat::new()?,
        clock: SystemClock,
        origins: config.reply_origins,
        key,
        channel: MaybeChannel(channel),
        bot,
    };
    let followup = &followup;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        if event.payload.get("Records").is_none() {
            // The schedule: every password whose outcome is untold.
            let told = followup.catch_up().await?;
            return Ok::<_, Error>(json!({ "told": told.len() }));
        }
        let batch: SqsEvent = serde_json::from_value(event.payload)
            .map_err(|e| format!("an SQS event that does not parse: {e}"))?;
        let messages: Vec<(String, String)> = batch
            .records
            .into_iter()
            .map(|r| (r.message_id.unwrap_or_default(), r.body.unwrap_or_default()))
            .collect();
        let mut response = SqsBatchResponse::default();
        for id in followup.on_batch(&messages).await {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
        Ok(serde_json::to_value(response)?)
    }))
    .await
}
