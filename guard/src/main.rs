//! The guard Lambda: wires the real AWS clients into the guard, once, at cold start.

use aws_lambda_events::sqs::SqsEvent;
use ec2pass_shared::config::{Env, GuardConfig};
use ec2pass_shared::org::{OrgRoster, StsAssume};
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::SystemClock;
use guard::alerts::SnsAlerts;
use guard::ec2::Ec2Client;
use guard::fleet::{Fleet, MemberRoles, SESSION_NAME};
use guard::guard::{Guard, Invocation};
use guard::pace::Paced;
use guard::queue::{self, Recheck, SqsRecheck};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = GuardConfig::from_env(&Env::process())?;
    let aws = guard::sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), config.table.clone());
    let alerts = SnsAlerts::new(aws_sdk_sns::Client::new(&aws), config.topic_arn.clone());
    let recheck = SqsRecheck::new(
        aws_sdk_sqs::Client::new(&aws),
        config.state_change_queue_url.clone(),
    );
    // A hub acts in each member account through its member role, and sweeps the members the
    // Organization lists (`EC2PASS_ORG_UNITS`) or those configured; one account with its own role.
    match config.hub.clone() {
        Some(hub) => {
            let roster = OrgRoster::new(hub.clone(), aws_sdk_organizations::Client::new(&aws));
            let fleet =
                MemberRoles::new(hub, StsAssume::new(aws.clone(), SESSION_NAME), aws.clone())
                    .with_roster(roster);
            serve(
                Guard::new(config, store, fleet, alerts, SystemClock),
                recheck,
            )
            .await
        }
        None => {
            let ec2 = Paced(Ec2Client::new(aws_sdk_ec2::Client::new(&aws)));
            serve(Guard::new(config, store, ec2, alerts, SystemClock), recheck).await
        }
    }
}

/// Answers invocations until the runtime stops.
async fn serve<F: Fleet>(
    guard: Guard<DynamoStore, F, SnsAlerts, SystemClock>,
    recheck: SqsRecheck,
) -> Result<(), Error> {
    let (guard, recheck) = (&guard, &recheck);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let inv = Invocation {
            request_id: event.context.request_id.clone(),
            deadline: guard::deadline_from_epoch_ms(event.context.deadline),
        };
        // State changes arrive from the queue, in batches; the sweep (and a state change sent
        // straight to the function) as the bare EventBridge event.
        if event.payload.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(event.payload)
                .map_err(|e| format!("an SQS event that does not parse: {e}"))?;
            let outcome = guard.handle_batch(&queue::messages(&batch), &inv).await;
            recheck.recheck(&outcome.recheck).await;
            return Ok(serde_json::to_value(queue::response(&outcome))?);
        }
        let reports = guard.handle(&event.payload, &inv).await?;
        Ok::<_, Error>(json!({ "reports": reports }))
    }))
    .await
}
