//! The issuer Lambda: wires the real AWS clients into the handler, once, at cold start.

use std::convert::Infallible;

use aws_config::BehaviorVersion;
use ec2pass_shared::config::{Env, IssuerConfig};
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::SystemClock;
use issuer::handler::Issuer;
use issuer::instances::Ec2Directory;
use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = IssuerConfig::from_env(&Env::process())?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let secret = issuer::secret::resolve(&config.signing_secret, &aws).await?;
    let issuer = Issuer {
        store: DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), config.table.clone()),
        directory: Ec2Directory::new(aws_sdk_ec2::Client::new(&aws)),
        clock: SystemClock,
        secret,
        config,
    };
    let issuer = &issuer;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Infallible>(issuer.handle_http(request).await)
    }))
    .await
}
