//! The issuer Lambda: wires the real AWS clients into the handler, once, at cold start.

use std::convert::Infallible;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use ec2pass_shared::config::Env;
use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    // Bounded AWS calls: Slack waits 3 s in all: an answer that says "try again" beats none.
    let timeouts = TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(2))
        .build();
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await;
    let issuer = issuer::cold_start::issuer(&Env::process(), &aws).await?;
    let issuer = &issuer;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Infallible>(issuer.handle_http(request).await)
    }))
    .await
}
