//! The chat fronts: one issuer, two chats. A front is three things, and only these differ:
//!
//! | | Slack | Mattermost |
//! | --- | --- | --- |
//! | where it posts (the function URL's path) | `/` (commands), `/slack/actions` (buttons) | `/mattermost` |
//! | how a request proves it is the chat's | the v0 signature ([`crate::verify`]) | the slash command's token, compared in constant time ([`token_matches`]) |
//! | how an answer or a follow-up is written | Block Kit, as [`crate::answer`] builds it | Markdown text ([`render`]: the same words, no buttons) |
//!
//! Everything else (the allow-lists, the grammar, the lookup, the mint, the store, the follow-up's
//! outcome) is the same code for both.

use ec2pass_shared::reply::Front;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::request::Token;

/// What a request is, by the path it was posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A Slack slash command (or Slack's `ssl_check`): `/` or `/slack`.
    SlackCommand,
    /// A button pressed on a Slack message: Slack's interactivity request, `/slack/actions`.
    SlackAction,
    /// A Mattermost slash command: `/mattermost`.
    MattermostCommand,
}

impl Route {
    /// The route of a path; `None` for any other path (answered 404). A trailing slash is
    /// allowed; nothing else (no query string is looked at: the function URL gives the path
    /// alone).
    pub fn of(path: &str) -> Option<Self> {
        let path = path.strip_suffix('/').unwrap_or(path);
        match path {
            "" | "/slack" => Some(Route::SlackCommand),
            "/slack/actions" => Some(Route::SlackAction),
            "/mattermost" => Some(Route::MattermostCommand),
            _ => None,
        }
    }
}

/// A Mattermost slash command's token, as configured (the secret store's value): redacted in
/// `Debug`.
#[derive(Clone)]
pub struct MattermostToken(String);

impl MattermostToken {
    /// The token (trimmed); `None` when empty.
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (!token.is_empty()).then(|| Self(token.to_owned()))
    }
}

impl std::fmt::Debug for MattermostToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MattermostToken(<redacted>)")
    }
}

/// Whether the presented token is the configured one, compared in constant time (a length
/// mismatch answers at once: the length of a Mattermost token is no secret, 26 characters).
pub fn token_matches(expected: &MattermostToken, presented: &Token) -> bool {
    let (a, b) = (expected.0.as_bytes(), presented.0.as_bytes());
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An answer or follow-up, built as a Slack message, for the chat it goes to. Slack gets it as
/// it is; Mattermost gets its words as Markdown (`response_type` and nothing Mattermost does
/// not know: no blocks, no buttons, no `replace_original`).
pub fn render(front: Front, message: Value) -> Value {
    match front {
        Front::Slack => message,
        Front::Mattermost => mattermost(&message),
    }
}

/// The Mattermost form of a Slack message: each section's and context's text, in order, as
/// Markdown paragraphs; the fallback `text` when there are no blocks.
pub fn mattermost(message: &Value) -> Value {
    let mut paragraphs = Vec::new();
    for block in message["blocks"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("section") => paragraphs.extend(block["text"]["text"].as_str().map(markdown)),
            Some("context") => {
                let texts: Vec<String> = block["elements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["text"].as_str())
                    .map(markdown)
                    .collect();
                if !texts.is_empty() {
                    paragraphs.push(texts.join(" "));
                }
            }
            _ => {}
        }
    }
    if paragraphs.is_empty() {
        paragraphs.extend(message["text"].as_str().map(markdown));
    }
    let response_type = message["response_type"].as_str().unwrap_or("ephemeral");
    json!({ "response_type": response_type, "text": paragraphs.join("\n\n") })
}

/// Slack mrkdwn as Markdown: `*bold*` → `**bold**`, `~strike~` → `~~strike~~`, `<url|text>` →
/// `[text](url)`, a date `<!date^…|fallback>` → its fallback, a user `<@U1>` → `` `U1` ``.
/// Inside backticks nothing changes (a password or an id is shown as it is). The entities
/// `&lt;` `&gt;` `&amp;` stay (Mattermost shows them as the characters), and an `@` is followed
/// by a word joiner, so a name such as `@channel` in a tag is shown, not acted on.
pub fn markdown(mrkdwn: &str) -> String {
    let mut out = String::with_capacity(mrkdwn.len() + 16);
    let mut rest = mrkdwn;
    let mut code = false;
    while let Some(c) = rest.chars().next() {
        let mut step = c.len_utf8();
        match c {
            '`' => {
                code = !code;
                out.push('`');
            }
            _ if code => out.push(c),
            '*' => out.push_str("**"),
            '~' => out.push_str("~~"),
            '@' => out.push_str("@\u{2060}"),
            '<' => match rest.find('>') {
                Some(end) => {
                    out.push_str(&link(&rest[1..end]));
                    step = end + 1;
                }
                None => out.push_str("&lt;"),
            },
            _ => out.push(c),
        }
        rest = &rest[step..];
    }
    out
}

/// The inside of a mrkdwn `<…>`.
fn link(inner: &str) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t, Some(l)),
        None => (inner, None),
    };
    if target.starts_with("!date^") {
        return label.unwrap_or_default().to_owned();
    }
    if let Some(user) = target.strip_prefix('@') {
        return format!("`{user}`");
    }
    if target.starts_with('!') || target.starts_with('#') {
        // A special mention or a channel: shown as its label, never acted on.
        return label.unwrap_or(target).replace('@', "@\u{2060}");
    }
    match label {
        Some(label) => format!("[{label}]({target})"),
        None => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_choose_the_front() {
        assert_eq!(Route::of("/"), Some(Route::SlackCommand));
        assert_eq!(Route::of(""), Some(Route::SlackCommand));
        assert_eq!(Route::of("/slack"), Some(Route::SlackCommand));
        assert_eq!(Route::of("/slack/actions"), Some(Route::SlackAction));
        assert_eq!(Route::of("/slack/actions/"), Some(Route::SlackAction));
        assert_eq!(Route::of("/mattermost"), Some(Route::MattermostCommand));
        for other in [
            "/x",
            "/mattermost/x",
            "//",
            "/Slack",
            "/slack/actions/x",
            "/..",
        ] {
            assert_eq!(Route::of(other), None, "{other}");
        }
    }

    #[test]
    fn only_the_configured_token_matches() {
        let Some(expected) = MattermostToken::new(" abcdefghijklmnopqrstuvwxyz\n") else {
            panic!("a token");
        };
        assert!(token_matches(
            &expected,
            &Token("abcdefghijklmnopqrstuvwxyz".into())
        ));
        for wrong in [
            "abcdefghijklmnopqrstuvwxyZ",
            "abcdefghijklmnopqrstuvwxy",
            "",
            " ",
        ] {
            assert!(!token_matches(&expected, &Token(wrong.into())), "{wrong:?}");
        }
        assert!(MattermostToken::new("  ").is_none());
        assert_eq!(format!("{expected:?}"), "MattermostToken(<redacted>)");
    }

    #[test]
    fn mrkdwn_becomes_markdown_and_code_is_left_alone() {
        assert_eq!(
            markdown("*Your one-time password* for `i-0abc*1`"),
            "**Your one-time password** for `i-0abc*1`"
        );
        assert_eq!(
            markdown(
                "until <!date^1700000000^{date_short_pretty} at {time}|2023-11-14 22:13 UTC>."
            ),
            "until 2023-11-14 22:13 UTC."
        );
        assert_eq!(
            markdown("see <https://example.com/x|the docs> or <https://e.com>"),
            "see [the docs](https://example.com/x) or https://e.com"
        );
        assert_eq!(markdown("by <@U0123>"), "by `U0123`");
        assert_eq!(markdown("~gone~"), "~~gone~~");
        assert_eq!(markdown("a &lt;!channel&gt; tag"), "a &lt;!channel&gt; tag");
        assert_eq!(markdown("name @channel"), "name @\u{2060}channel");
        assert_eq!(markdown("<!here>"), "!here");
        assert_eq!(markdown("a < b"), "a &lt; b");
    }

    #[test]
    fn a_mattermost_answer_has_the_words_and_nothing_slack_only() {
        let slack = json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": "fallback",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "*one*"},
                 "accessory": {"type": "button", "action_id": "revoke-listed", "value": "x",
                               "text": {"type": "plain_text", "text": "Revoke"}}},
                {"type": "actions", "elements": []},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "two"}, {"type": "mrkdwn", "text": "three"}]},
            ],
        });
        assert_eq!(
            render(Front::Mattermost, slack.clone()),
            json!({"response_type": "ephemeral", "text": "**one**\n\ntwo three"})
        );
        assert_eq!(render(Front::Slack, slack.clone()), slack);
        assert_eq!(
            mattermost(&json!({"text": "only *text*"})),
            json!({"response_type": "ephemeral", "text": "only **text**"})
        );
    }
}
