//! The issuer as deployed, built once at cold start: configuration from the environment, the
//! signing secret (and the Mattermost token, when Mattermost is a front) from Secrets Manager,
//! and the AWS clients. `main.rs` only adds the Lambda
//! runtime; the tests build the issuer the same way against the emulator.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use ec2pass_shared::config::{ConfigError, Env, IssuerConfig};
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::SystemClock;

use crate::chat::{ChatError, HttpChat};
use crate::handler::Issuer;
use crate::instances::Ec2Directory;
use crate::secret::{self, SecretError, TokenError};

/// The issuer wired to AWS.
pub type LambdaIssuer = Issuer<DynamoStore, Ec2Directory, SystemClock, HttpChat>;

/// Why the issuer cannot start. Fails the Lambda init, so the message is what the operator sees
/// in the function's log.
#[derive(Debug, thiserror::Error)]
pub enum ColdStartError {
    /// A setting is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signing secret cannot be read or is not set yet.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The Mattermost token cannot be read or is not set yet.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The HTTP client for the chat could not be built.
    #[error(transparent)]
    Chat(#[from] ChatError),
}

/// How long each AWS call on the request path may take: per attempt, and in all (retries
/// included). Slack waits 3 s in all: an answer that says "try again" beats none.
pub const REQUEST_TIMEOUTS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(2));

/// [`REQUEST_TIMEOUTS`] as the SDK takes them, for the `SdkConfig` every client is built from.
pub fn request_timeouts() -> TimeoutConfig {
    let (attempt, operation) = REQUEST_TIMEOUTS;
    TimeoutConfig::builder()
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build()
}

/// How long the cold start's `GetSecretValue` may take: per attempt, and in all. Wider than
/// [`REQUEST_TIMEOUTS`], on purpose: Lambda allows 10 s for the init, and a slow
/// init costs at most the one request that waits for it, while a failed one costs that request
/// and another cold start for the next.
pub const SECRET_TIMEOUTS: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(8));

/// Reads the configuration, then the signing secret, and wires the clients.
pub async fn issuer(env: &Env<'_>, aws: &SdkConfig) -> Result<LambdaIssuer, ColdStartError> {
    let config = IssuerConfig::from_env(env)?;
    let (attempt, operation) = SECRET_TIMEOUTS;
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(aws)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt)
                    .operation_timeout(operation)
                    .build(),
            )
            .build(),
    );
    // A hub's issuer looks for the instance in every member account and region; the members
    // the Organization lists are read while the secret is.
    let directory = match config.hub.clone() {
        Some(hub) => Ec2Directory::hub(aws_sdk_ec2::Client::new(aws), hub, aws.clone()),
        None => Ec2Directory::new(aws_sdk_ec2::Client::new(aws)),
    };
    let mattermost = async {
        match &config.mattermost_token {
            Some(source) => secret::resolve_mattermost(source, &secrets).await.map(Some),
            None => Ok(None),
        }
    };
    let replies = async {
        match &config.reply_key {
            Some(source) => secret::resolve_reply_key(source, &secrets).await.map(Some),
            None => Ok(None),
        }
    };
    let (secret, mattermost, replies, ()) = tokio::join!(
        secret::resolve(&config.signing_secret, &secrets),
        mattermost,
        replies,
        directory.warm()
    );
    let (secret, mattermost, replies) = (secret?, mattermost?, replies?);
    Ok(Issuer {
        mattermost,
        replies,
        chat: HttpChat::new()?,
        store: DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), config.table.clone()),
        directory,
        clock: SystemClock,
        secret,
        config,
    })
}
