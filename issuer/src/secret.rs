//! Resolving the Slack signing secret at cold start.

use aws_config::SdkConfig;
use aws_sdk_ssm::error::DisplayErrorContext;
use ec2pass_shared::config::{SecretSource, SigningSecret};

/// The secret could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the Slack signing secret from SSM parameter {name}: {problem}")]
pub struct SecretError {
    /// The parameter's name.
    pub name: String,
    /// What went wrong (never the value).
    pub problem: String,
}

/// The signing secret, read from SSM (with decryption) when configured so.
pub async fn resolve(source: &SecretSource, aws: &SdkConfig) -> Result<SigningSecret, SecretError> {
    let name = match source {
        SecretSource::Value(secret) => return Ok(secret.clone()),
        SecretSource::SsmParameter(name) => name,
    };
    let out = aws_sdk_ssm::Client::new(aws)
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| SecretError {
            name: name.clone(),
            problem: DisplayErrorContext(&e).to_string(),
        })?;
    out.parameter
        .and_then(|p| p.value)
        .filter(|v| !v.is_empty())
        .map(SigningSecret::new)
        .ok_or_else(|| SecretError {
            name: name.clone(),
            problem: "the parameter has no value".into(),
        })
}
