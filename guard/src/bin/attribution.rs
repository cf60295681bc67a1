//! The attribution Lambda: CloudTrail's `RunInstances`/`StartInstances` calls from their queue,
//! tied to their starts' verdicts, told, and (opt-in) answered. Wires the real AWS clients into
//! [`guard::attribute::Attributor`], once, at cold start.

#![recursion_limit = "256"]

use aws_lambda_events::sqs::SqsEvent;
use ec2pass_shared::config::{Env, GuardConfig};
use ec2pass_shared::org::StsAssume;
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::SystemClock;
use guard::alerts::SnsAlerts;
use guard::attribute::{Attributor, Launches, Settings};
use guard::ec2::Ec2Client;
use guard::fleet::{MemberRoles, SESSION_NAME};
use guard::pace::Paced;
use guard::queue::{self, Recheck, SqsRecheck};
use guard::respond::{IamClient, Rails};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::process();
    let config = GuardConfig::from_env(&env)?;
    let account = env.required("EC2PASS_ACCOUNT")?;
    let rails = Rails::from_env(&env, &account)?;
    let settings = Settings {
        give_up: env.duration("EC2PASS_ATTRIBUTION_WAIT", Settings::default().give_up)?,
        ..Settings::default()
    };
    let aws = guard::sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), config.table.clone());
    let alerts = SnsAlerts::new(aws_sdk_sns::Client::new(&aws), config.topic_arn.clone());
    let iam = IamClient(aws_sdk_iam::Client::new(&aws));
    let recheck = SqsRecheck::new(
        aws_sdk_sqs::Client::new(&aws),
        env.get("EC2PASS_CALL_QUEUE_URL"),
    );
    let parts = Parts {
        store,
        iam,
        alerts,
        rails,
        settings,
    };
    match config.hub.clone() {
        // A hub finds a member's launches through its lookup role (`EC2PASS_MEMBER_ROLE`).
        Some(hub) => {
            let roles =
                MemberRoles::new(hub, StsAssume::new(aws.clone(), SESSION_NAME), aws.clone());
            serve(parts.with(roles), recheck).await
        }
        None => {
            let ec2 = Paced(Ec2Client::new(aws_sdk_ec2::Client::new(&aws)));
            serve(parts.with(ec2), recheck).await
        }
    }
}

/// Everything but where launches are found, which depends on hub or single account.
struct Parts {
    store: DynamoStore,
    iam: IamClient,
    alerts: SnsAlerts,
    rails: Rails,
    settings: Settings,
}

impl Parts {
    fn with<L: Launches>(
        self,
        launches: L,
    ) -> Attributor<DynamoStore, L, IamClient, SnsAlerts, SystemClock> {
        Attributor {
            store: self.store,
            launches,
            iam: self.iam,
            alerts: self.alerts,
            clock: SystemClock,
            rails: self.rails,
            settings: self.settings,
        }
    }
}

/// Answers invocations until the runtime stops.
async fn serve<L: Launches>(
    attributor: Attributor<DynamoStore, L, IamClient, SnsAlerts, SystemClock>,
    recheck: SqsRecheck,
) -> Result<(), Error> {
    let (attributor, recheck) = (&attributor, &recheck);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let outcome = attributor
            .handle_batch(&queue::messages(&event.payload))
            .await;
        recheck.recheck(&outcome.recheck).await;
        Ok::<_, Error>(serde_json::to_value(queue::response(&outcome))?)
    }))
    .await
}
