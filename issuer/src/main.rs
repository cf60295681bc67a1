//! The issuer Lambda: wires the real AWS clients into the handler, once, at cold start.

use std::convert::Infallible;

use aws_config::BehaviorVersion;
use ec2pass_shared::config::Env;
use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(issuer::cold_start::request_timeouts())
        .load()
        .await;
    let issuer = issuer::cold_start::issuer(&Env::process(), &aws).await?;
    let issuer = &issuer;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Infallible>(issuer.handle_http(request).await)
    }))
    .await
}
