//! Which chat reply URLs ec2pass may keep and post to (SPEC §10).
//!
//! A slash command's `response_url` is a capability: whoever holds it may post into the
//! requester's conversation for 30 minutes. The issuer keeps one only with its password, and
//! only when it points at one of the chat's own origins (`EC2PASS_REPLY_ORIGINS`, default
//! `https://hooks.slack.com`); the follow-up function checks again before each post, so a
//! reply item written by anyone else cannot make it call another host. The check compares the
//! parsed scheme, host and port exactly: no prefix match (`hooks.slack.com.example.net`), no
//! user info (`https://hooks.slack.com@example.net/`), no other port.

use url::Url;

use crate::config::ConfigError;

/// Longest reply URL kept (Slack's are about 90 characters).
pub const MOST_URL_BYTES: usize = 512;

/// The origins reply URLs may point at when `EC2PASS_REPLY_ORIGINS` is unset.
pub const DEFAULT_ORIGINS: &str = "https://hooks.slack.com";

/// Which chat a request came from, and where its answers and follow-ups go back to: one issuer
/// serves both, and only request auth, answer rendering and the follow-up's shape differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Front {
    /// A Slack app: signed requests, Block Kit answers.
    #[default]
    Slack,
    /// A Mattermost slash command: its token, Markdown answers.
    Mattermost,
}

impl Front {
    /// The name stored with a reply (`slack`, `mattermost`).
    pub fn as_str(self) -> &'static str {
        match self {
            Front::Slack => "slack",
            Front::Mattermost => "mattermost",
        }
    }

    /// Reads [`Front::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "slack" => Some(Front::Slack),
            "mattermost" => Some(Front::Mattermost),
            _ => None,
        }
    }
}

/// A reply URL as the chat sent it, not yet checked: a capability, so its `Debug` never shows
/// it (a request logged whole does not leak it).
#[derive(Clone, PartialEq, Eq)]
pub struct ReplyUrl(String);

impl ReplyUrl {
    /// The URL as received.
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The URL itself, for [`allowed`] and for storing with its password.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ReplyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyUrl(<redacted>)")
    }
}

/// A scheme, host and port a reply URL may point at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `https` (or `http`, for a stand-in on 127.0.0.1 only).
    pub scheme: String,
    /// The host, lower case.
    pub host: String,
    /// The port (443 for `https` when none is written).
    pub port: u16,
}

/// `EC2PASS_REPLY_ORIGINS`: origins, comma-separated (`https://hooks.slack.com`). Only `https`,
/// except `http://127.0.0.1:<port>` (the local stand-ins of the tests and the demo).
pub fn origins(value: &str) -> Result<Vec<Origin>, ConfigError> {
    let bad = |problem: String| ConfigError {
        var: "EC2PASS_REPLY_ORIGINS",
        problem,
    };
    let mut out = Vec::new();
    for text in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let url = Url::parse(text).map_err(|e| bad(format!("{text:?} is not a URL: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let local = url.scheme() == "http" && host == "127.0.0.1";
        if !(url.scheme() == "https" || local) {
            return Err(bad(format!(
                "{text:?}: only https (or http://127.0.0.1 for a local stand-in)"
            )));
        }
        if host.is_empty() || !url.username().is_empty() || url.password().is_some() {
            return Err(bad(format!("{text:?} is not an origin")));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad(format!("{text:?}: an origin has no path")));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        out.push(Origin {
            scheme: url.scheme().to_owned(),
            host,
            port,
        });
    }
    Ok(out)
}

/// The reply URL itself when it points at one of `origins` (see the module's doc), else
/// `None`.
pub fn allowed(raw: &str, origins: &[Origin]) -> Option<Url> {
    if raw.len() > MOST_URL_BYTES {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    origins
        .iter()
        .any(|o| o.scheme == url.scheme() && o.host == host && o.port == port)
        .then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack() -> Vec<Origin> {
        origins(DEFAULT_ORIGINS).unwrap_or_default()
    }

    #[test]
    fn a_reply_url_must_point_at_the_chats_own_origin() {
        let ok = "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN";
        assert!(allowed(ok, &slack()).is_some());
        assert!(allowed("https://HOOKS.slack.com/commands/T1/1/x", &slack()).is_some());
        assert!(allowed("https://hooks.slack.com:443/commands/T1/1/x", &slack()).is_some());
        for bad in [
            "http://hooks.slack.com/commands/T1/1/x",
            "https://hooks.slack.com.example.net/commands/T1/1/x",
            "https://example.net/https://hooks.slack.com/commands",
            "https://hooks.slack.com@example.net/commands/T1/1/x",
            "https://user:pw@hooks.slack.com/commands/T1/1/x",
            "https://hooks.slack.com:8443/commands/T1/1/x",
            "https://evil-hooks.slack.com/commands/T1/1/x",
            "https://hooks.slack.com/commands/T1/1/x#frag",
            "//hooks.slack.com/commands",
            "hooks.slack.com/commands",
            "javascript:alert(1)",
            "",
        ] {
            assert!(allowed(bad, &slack()).is_none(), "{bad:?}");
        }
        let long = format!("https://hooks.slack.com/{}", "a".repeat(MOST_URL_BYTES));
        assert!(allowed(&long, &slack()).is_none());
    }

    #[test]
    fn origins_are_https_or_a_local_stand_in() {
        let local = origins("http://127.0.0.1:4010, https://mattermost.example.com");
        assert_eq!(local.as_ref().map(Vec::len), Ok(2));
        let local = local.unwrap_or_default();
        assert!(allowed("http://127.0.0.1:4010/hooks/x", &local).is_some());
        assert!(allowed("http://127.0.0.1:4011/hooks/x", &local).is_none());
        assert!(allowed("http://localhost:4010/hooks/x", &local).is_none());
        for bad in [
            "http://hooks.slack.com",
            "http://localhost:4010",
            "https://hooks.slack.com/commands",
            "https://u@hooks.slack.com",
            "ftp://hooks.slack.com",
            "not a url",
        ] {
            assert!(origins(bad).is_err(), "{bad:?}");
        }
        assert_eq!(origins(""), Ok(Vec::new()));
    }
}
