//! The chat's HTTP edge: posting a message to a reply URL (a follow-up, or a message replaced in
//! place after a button). The URL has been checked against the chat's origins before it gets
//! here ([`ec2pass_shared::reply::allowed`]); this module only carries the post, follows no
//! redirect, and never puts the URL in an error (it is a capability).

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use url::Url;

/// How long a post may take before it counts as failed.
pub const POST_TIMEOUT: Duration = Duration::from_secs(3);

/// A chat post that failed.
#[derive(Debug, thiserror::Error)]
#[error("the post failed: {0}")]
pub struct ChatError(pub String);

/// Posts a follow-up to a reply URL, or a direct message through the Slack app's bot.
pub trait Chat: Send + Sync {
    /// Posts `body` (JSON) to `url`.
    fn post(&self, url: &Url, body: &Value) -> impl Future<Output = Result<(), ChatError>> + Send;

    /// Calls a Slack Web API method (`chat.postMessage`) at `url` as the bot: `body` (JSON)
    /// with the bot token as bearer; Slack's answer must say `"ok": true`.
    fn post_as_bot(
        &self,
        url: &Url,
        token: &BotToken,
        body: &Value,
    ) -> impl Future<Output = Result<(), ChatError>> + Send;
}

/// The Slack app's bot token (`xoxb-…`), read from Secrets Manager at cold start by the
/// follow-up function alone: redacted in `Debug`, never logged.
#[derive(Clone)]
pub struct BotToken(String);

impl BotToken {
    /// The token (trimmed); `None` when empty.
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (!token.is_empty()).then(|| Self(token.to_owned()))
    }
}

impl std::fmt::Debug for BotToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BotToken(<redacted>)")
    }
}

/// The chat over HTTPS: no redirects followed (a reply URL that redirects elsewhere goes no
/// further), [`POST_TIMEOUT`] per post.
#[derive(Clone, Debug)]
pub struct HttpChat {
    client: reqwest::Client,
}

impl HttpChat {
    /// A client built once at cold start.
    pub fn new() -> Result<Self, ChatError> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(POST_TIMEOUT)
            .build()
            .map(|client| Self { client })
            .map_err(|e| ChatError(e.to_string()))
    }
}

impl Chat for HttpChat {
    async fn post(&self, url: &Url, body: &Value) -> Result<(), ChatError> {
        // Never the URL in an error: it is the capability. Its host is enough.
        let host = url.host_str().unwrap_or_default().to_owned();
        let response = self
            .client
            .post(url.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| ChatError(format!("{host}: {}", e.without_url())))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(ChatError(format!("{host} answered {}", response.status())))
        }
    }

    async fn post_as_bot(
        &self,
        url: &Url,
        token: &BotToken,
        body: &Value,
    ) -> Result<(), ChatError> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let response = self
            .client
            .post(url.clone())
            .bearer_auth(&token.0)
            .json(body)
            .send()
            .await
            .map_err(|e| ChatError(format!("{host}: {}", e.without_url())))?;
        let status = response.status();
        // Slack's Web API answers 200 with `"ok": false` and an error code when it refuses.
        let answer: Value = response.json().await.unwrap_or_default();
        if status.is_success() && answer["ok"] == Value::Bool(true) {
            Ok(())
        } else {
            let error = answer["error"].as_str().unwrap_or("no answer");
            Err(ChatError(format!("{host} answered {status}: {error}")))
        }
    }
}
