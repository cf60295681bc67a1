//! Which chat reply URLs ec2pass may keep and post to (SPEC §10).
//!
//! A slash command's `response_url` is a capability: whoever holds it may post into the
//! requester's conversation for 30 minutes. The issuer keeps one only with its password, and
//! only when it points at one of the chat's own origins (`EC2PASS_REPLY_ORIGINS`, default
//! `https://hooks.slack.com`); the follow-up function checks again before each post, so a
//! reply item written by anyone else cannot make it call another host. The check compares the
//! parsed scheme, host and port exactly: no prefix match (`hooks.slack.com.example.net`), no
//! user info (`https://hooks.slack.com@example.net/`), no other port.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest as _, Sha256};
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

/// The key reply URLs are sealed with before they are stored: a reply URL is a capability, and
/// the table is readable by more principals than the two roles that need the URL (AWS's
/// `ReadOnlyAccess` reads DynamoDB items). Derived (SHA-256) from the text of the stack's reply
/// key secret, which only the issuer's and the follow-up's roles may read; read once at cold
/// start. Redacted in `Debug`.
#[derive(Clone)]
pub struct ReplyKey([u8; 32]);

impl ReplyKey {
    /// The key for a secret's text (surrounding whitespace ignored); `None` when it is empty.
    pub fn from_secret(text: &str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty()).then(|| Self(Sha256::digest(text.as_bytes()).into()))
    }

    fn aead(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .ok()
            .map(LessSafeKey::new)
    }
}

impl std::fmt::Debug for ReplyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyKey(<redacted>)")
    }
}

/// How a sealed reply URL starts (the version of the sealing).
pub const SEALED_PREFIX: &str = "v1:";

/// Seals a reply URL for storing with the password `bound_to` (its short id, authenticated with
/// it: a sealed URL moved to another password's item does not open). `v1:` and the hex of a
/// random 96-bit nonce, the ciphertext and the tag.
pub fn seal(key: &ReplyKey, url: &str, bound_to: &str) -> Option<String> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).ok()?;
    let mut sealed = url.as_bytes().to_vec();
    key.aead()?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(bound_to.as_bytes()),
            &mut sealed,
        )
        .ok()?;
    Some(format!(
        "{SEALED_PREFIX}{}{}",
        hex::encode(nonce),
        hex::encode(sealed)
    ))
}

/// Opens what [`seal`] made for the same password; `None` for anything else (another key,
/// another password, a change of any byte, a URL stored in the clear).
pub fn open(key: &ReplyKey, sealed: &str, bound_to: &str) -> Option<String> {
    let raw = hex::decode(sealed.strip_prefix(SEALED_PREFIX)?).ok()?;
    if raw.len() < NONCE_LEN {
        return None;
    }
    let (nonce, body) = raw.split_at(NONCE_LEN);
    let mut body = body.to_vec();
    let opened = key
        .aead()?
        .open_in_place(
            Nonce::try_assume_unique_for_key(nonce).ok()?,
            Aad::from(bound_to.as_bytes()),
            &mut body,
        )
        .ok()?;
    String::from_utf8(opened.to_vec()).ok()
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
    fn a_sealed_reply_url_opens_only_with_its_key_for_its_password() {
        let (Some(key), Some(other)) = (
            ReplyKey::from_secret("the stack's generated reply key"),
            ReplyKey::from_secret("another key"),
        ) else {
            panic!("keys");
        };
        let url = "https://hooks.slack.com/commands/T1/1/secret-part";
        let sealed = seal(&key, url, "ab12cd34").unwrap_or_default();
        assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
        assert!(!sealed.contains("hooks") && !sealed.contains("secret-part"));
        assert_eq!(open(&key, &sealed, "ab12cd34").as_deref(), Some(url));
        assert_ne!(
            seal(&key, url, "ab12cd34"),
            Some(sealed.clone()),
            "a fresh nonce each time"
        );
        assert_eq!(open(&other, &sealed, "ab12cd34"), None, "another key");
        assert_eq!(
            open(&key, &sealed, "zz99yy88"),
            None,
            "moved to another password"
        );
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        assert_eq!(open(&key, &flipped, "ab12cd34"), None, "one byte changed");
        for junk in [url, "", "v1:", "v1:zz", "v1:00", "v2:00"] {
            assert_eq!(open(&key, junk, "ab12cd34"), None, "{junk:?}");
        }
        assert!(ReplyKey::from_secret(" \n").is_none());
        assert_eq!(format!("{key:?}"), "ReplyKey(<redacted>)");
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
