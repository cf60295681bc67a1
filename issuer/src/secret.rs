//! The Slack signing secret, read from Secrets Manager once at cold start.
//!
//! The stack keeps the secret in a Secrets Manager secret encrypted under a key that only the
//! issuer's role and the admin may use, and passes the secret's ARN (never its value) in
//! `EC2PASS_SLACK_SIGNING_SECRET_ARN`. Anything but a usable value fails the cold start with a
//! message naming the secret and saying what to fix; no message ever holds the value.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use ec2pass_shared::config::{SecretSource, SigningSecret};

use ec2pass_shared::reply::ReplyKey;

use crate::chat::BotToken;
use crate::front::MattermostToken;

/// What the stack puts in the secret before the operator sets the Slack app's signing secret.
/// Any value starting with [`PLACEHOLDER_PREFIX`] counts as a placeholder.
pub const PLACEHOLDER: &str = "REPLACE-WITH-THE-SLACK-APP-SIGNING-SECRET";

/// How every placeholder starts (the deploy files use `REPLACE-WITH-…` for what the operator
/// must fill in). No Slack signing secret does: they are hexadecimal.
pub const PLACEHOLDER_PREFIX: &str = "REPLACE-WITH-";

/// Why the secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `GetSecretValue` failed (not found, access denied, KMS, network, ...).
    #[error("GetSecretValue failed: {0}")]
    Unreadable(String),
    /// The secret has no text value (only a binary one, or no version yet).
    #[error("the secret has no text value: put the Slack app's signing secret in it as text")]
    NoText,
    /// The text value is empty or only whitespace.
    #[error("the secret's value is empty: put the Slack app's signing secret in it")]
    Empty,
    /// The value is still the stack's placeholder.
    #[error(
        "the secret still holds the placeholder the stack created: put the Slack app's signing \
         secret in it (Basic Information → App Credentials → Signing Secret), e.g. with \
         `aws secretsmanager put-secret-value`, then let the function start again"
    )]
    Placeholder,
    /// The value is a JSON document, not the signing secret itself.
    #[error(
        "the secret's value is a JSON document: store the signing secret itself as the plain \
         text value, not a key/value pair"
    )]
    Json,
}

/// The signing secret could not be obtained; names the secret, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot use the Slack signing secret in Secrets Manager secret {secret_id}: {problem}")]
pub struct SecretError {
    /// The secret's ARN or name, as configured.
    pub secret_id: String,
    /// What is wrong.
    pub problem: Problem,
}

/// Reads the signing secret (`GetSecretValue`, the current version's `SecretString`).
pub async fn resolve(source: &SecretSource, client: &Client) -> Result<SigningSecret, SecretError> {
    let secret_id = &source.secret_id;
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| SecretError {
            secret_id: secret_id.clone(),
            problem: Problem::Unreadable(DisplayErrorContext(&e).to_string()),
        })?;
    check(secret_id, out.secret_string())
}

/// Judges a secret's text value. Surrounding whitespace (a trailing newline from a file, say) is
/// dropped: Slack's signing secrets are hexadecimal, so it can only be a copy-paste accident, and
/// kept it would make every signature fail.
pub fn check(secret_id: &str, value: Option<&str>) -> Result<SigningSecret, SecretError> {
    let refuse = |problem| SecretError {
        secret_id: secret_id.to_owned(),
        problem,
    };
    let value = value.ok_or_else(|| refuse(Problem::NoText))?.trim();
    if value.is_empty() {
        Err(refuse(Problem::Empty))
    } else if value.starts_with(PLACEHOLDER_PREFIX) {
        Err(refuse(Problem::Placeholder))
    } else if value.starts_with('{') {
        Err(refuse(Problem::Json))
    } else {
        Ok(SigningSecret::new(value))
    }
}

/// Another secret of the stack could not be obtained (the Mattermost token, the reply key, the
/// Slack bot token); names the secret, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot use the {what} in Secrets Manager secret {secret_id}: {problem}")]
pub struct TokenError {
    /// Which secret it is, in words.
    pub what: &'static str,
    /// The secret's ARN or name, as configured.
    pub secret_id: String,
    /// What is wrong, in that secret's words.
    pub problem: String,
}

/// Reads another secret's text under the signing secret's rules (a text value, not empty, not
/// the stack's placeholder, not JSON); `put` says what belongs in it.
async fn resolve_text(
    source: &SecretSource,
    client: &Client,
    what: &'static str,
    put: &str,
) -> Result<String, TokenError> {
    let refuse = |problem: String| TokenError {
        what,
        secret_id: source.secret_id.clone(),
        problem,
    };
    let secret = resolve(source, client)
        .await
        .map_err(|e| refuse(problem_in_words(&e.problem, put)))?;
    Ok(std::str::from_utf8(secret.expose())
        .unwrap_or_default()
        .to_owned())
}

/// Reads the Mattermost slash command's token.
pub async fn resolve_mattermost(
    source: &SecretSource,
    client: &Client,
) -> Result<MattermostToken, TokenError> {
    const PUT: &str = "put the token Mattermost shows for the slash command (Integrations → Slash Commands) in it";
    let text = resolve_text(source, client, "Mattermost slash command token", PUT).await?;
    MattermostToken::new(&text).ok_or_else(|| TokenError {
        what: "Mattermost slash command token",
        secret_id: source.secret_id.clone(),
        problem: problem_in_words(&Problem::Empty, PUT),
    })
}

/// Reads the key that seals reply URLs (the stack generates its value).
pub async fn resolve_reply_key(
    source: &SecretSource,
    client: &Client,
) -> Result<ReplyKey, TokenError> {
    const PUT: &str = "the stack generates it: deploy again, or put 64 random characters in it";
    let text = resolve_text(source, client, "reply URL key", PUT).await?;
    ReplyKey::from_secret(&text).ok_or_else(|| TokenError {
        what: "reply URL key",
        secret_id: source.secret_id.clone(),
        problem: problem_in_words(&Problem::Empty, PUT),
    })
}

/// Reads the Slack app's bot token.
pub async fn resolve_bot_token(
    source: &SecretSource,
    client: &Client,
) -> Result<BotToken, TokenError> {
    const PUT: &str = "put the Slack app's Bot User OAuth Token (xoxb-…) in it";
    let text = resolve_text(source, client, "Slack bot token", PUT).await?;
    BotToken::new(&text).ok_or_else(|| TokenError {
        what: "Slack bot token",
        secret_id: source.secret_id.clone(),
        problem: problem_in_words(&Problem::Empty, PUT),
    })
}

/// A [`Problem`] told of another secret than Slack's signing secret.
fn problem_in_words(problem: &Problem, put: &str) -> String {
    match problem {
        Problem::Unreadable(e) => format!("GetSecretValue failed: {e}"),
        Problem::NoText => format!("the secret has no text value: {put}, as text"),
        Problem::Empty => format!("the secret's value is empty: {put}"),
        Problem::Placeholder => {
            format!("the secret still holds the placeholder the stack created: {put}")
        }
        Problem::Json => format!("the secret's value is a JSON document: {put}, as plain text"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::operation::get_secret_value::{
        GetSecretValueError, GetSecretValueOutput,
    };
    use aws_sdk_secretsmanager::types::error::{DecryptionFailure, ResourceNotFoundException};
    use aws_smithy_mocks::{mock, mock_client};

    type MakeError = fn() -> GetSecretValueError;

    const ID: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ec2pass-slack-AbCdEf";

    fn source() -> SecretSource {
        SecretSource {
            secret_id: ID.into(),
        }
    }

    async fn resolve_with(rule: aws_smithy_mocks::Rule) -> Result<SigningSecret, SecretError> {
        let client = mock_client!(aws_sdk_secretsmanager, [&rule]);
        resolve(&source(), &client).await
    }

    #[tokio::test]
    async fn the_secret_string_is_the_signing_secret() {
        let rule = mock!(Client::get_secret_value)
            .match_requests(|r| r.secret_id() == Some(ID))
            .then_output(|| {
                GetSecretValueOutput::builder()
                    .secret_string("8f742231b10e8888abcd99yyyzzz85a5\n")
                    .build()
            });
        assert_eq!(
            resolve_with(rule).await,
            Ok(SigningSecret::new("8f742231b10e8888abcd99yyyzzz85a5"))
        );
    }

    #[tokio::test]
    async fn an_unreadable_secret_names_the_secret_and_the_aws_error() {
        let not_found = || {
            GetSecretValueError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("Secrets Manager can't find the specified secret.")
                    .build(),
            )
        };
        let no_kms = || {
            GetSecretValueError::DecryptionFailure(
                DecryptionFailure::builder()
                    .message("Access to KMS is not allowed")
                    .build(),
            )
        };
        let cases: [(MakeError, &str); 2] = [(not_found, "can't find"), (no_kms, "KMS")];
        for (error, says) in cases {
            let rule = mock!(Client::get_secret_value).then_error(error);
            let err = resolve_with(rule).await.err();
            let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
            assert!(
                matches!(&err, Some(SecretError { problem: Problem::Unreadable(m), .. }) if m.contains(says)),
                "{err:?}"
            );
            assert!(text.contains(ID), "{text}");
        }
    }

    #[tokio::test]
    async fn a_binary_only_secret_has_no_text() {
        let rule = mock!(Client::get_secret_value).then_output(|| {
            GetSecretValueOutput::builder()
                .secret_binary(aws_smithy_types::Blob::new(b"s3cr3t".to_vec()))
                .build()
        });
        assert_eq!(
            resolve_with(rule).await.err().map(|e| e.problem),
            Some(Problem::NoText)
        );
    }

    #[test]
    fn empty_placeholder_and_json_values_are_refused_without_showing_them() {
        for (value, problem) in [
            ("", Problem::Empty),
            (" \n\t", Problem::Empty),
            (PLACEHOLDER, Problem::Placeholder),
            ("REPLACE-WITH-your-secret", Problem::Placeholder),
            (r#"{"signing_secret":"abc123"}"#, Problem::Json),
        ] {
            let err = check(ID, Some(value)).err();
            assert_eq!(
                err.as_ref().map(|e| &e.problem),
                Some(&problem),
                "{value:?}"
            );
            let text = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(text.contains(ID), "{text}");
            assert!(value.trim().is_empty() || !text.contains(value), "{text}");
        }
        assert_eq!(
            check(ID, None).err().map(|e| e.problem),
            Some(Problem::NoText)
        );
    }
}
