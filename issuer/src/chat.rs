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

/// Posts a follow-up to a reply URL.
pub trait Chat: Send + Sync {
    /// Posts `body` (JSON) to `url`.
    fn post(&self, url: &Url, body: &Value) -> impl Future<Output = Result<(), ChatError>> + Send;
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
}
