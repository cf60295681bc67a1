//! The issuer as deployed, built once at cold start: configuration from the environment, the
//! signing secret from Secrets Manager, and the AWS clients. `main.rs` only adds the Lambda
//! runtime; the tests build the issuer the same way against the emulator.

use aws_config::SdkConfig;
use ec2pass_shared::config::{ConfigError, Env, IssuerConfig};
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::SystemClock;

use crate::handler::Issuer;
use crate::instances::Ec2Directory;
use crate::secret::{self, SecretError};

/// The issuer wired to AWS.
pub type LambdaIssuer = Issuer<DynamoStore, Ec2Directory, SystemClock>;

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
}

/// Reads the configuration, then the signing secret, and wires the clients.
pub async fn issuer(env: &Env<'_>, aws: &SdkConfig) -> Result<LambdaIssuer, ColdStartError> {
    let config = IssuerConfig::from_env(env)?;
    let secrets = aws_sdk_secretsmanager::Client::new(aws);
    let secret = secret::resolve(&config.signing_secret, &secrets).await?;
    Ok(Issuer {
        store: DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), config.table.clone()),
        directory: Ec2Directory::new(aws_sdk_ec2::Client::new(aws)),
        clock: SystemClock,
        secret,
        config,
    })
}
