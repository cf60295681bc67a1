//! The HTTP edge: what a request must look like before anything else is read, and the slash
//! command form inside it.
//!
//! Only `POST` with `application/x-www-form-urlencoded` and at most 8 KiB of body is accepted.
//! The form is parsed from the raw bytes (the same bytes the signature covers), strictly: every
//! field ec2pass relies on must be present exactly once.

use ec2pass_shared::ids::ShortId;
use ec2pass_shared::reply::{Front, ReplyUrl};
use serde::Deserialize;

use crate::verify::HeaderValue;

/// Largest body accepted. Slack's slash command posts are well under 4 KiB.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// The parts of an HTTP request the issuer looks at, borrowed from whatever carried it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The path on the function URL (`/`, `/slack/actions`, `/mattermost`).
    pub path: &'a str,
    /// `Content-Type`.
    pub content_type: HeaderValue<'a>,
    /// `X-Slack-Request-Timestamp`.
    pub timestamp: HeaderValue<'a>,
    /// `X-Slack-Signature`.
    pub signature: HeaderValue<'a>,
    /// The raw body, after Lambda's base64 decoding.
    pub body: &'a [u8],
}

/// Why a request was refused before its signature was even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Not a `POST`: 405.
    WrongMethod,
    /// Not form-encoded: 415.
    WrongContentType,
    /// Over [`MAX_BODY_BYTES`]: 413.
    TooLarge,
}

impl Shape {
    /// The HTTP status that answers it.
    pub fn status(self) -> u16 {
        match self {
            Shape::WrongMethod => 405,
            Shape::WrongContentType => 415,
            Shape::TooLarge => 413,
        }
    }
}

/// Checks method, content type and size.
pub fn check_shape(req: &Incoming<'_>) -> Result<(), Shape> {
    if !req.method.eq_ignore_ascii_case("POST") {
        return Err(Shape::WrongMethod);
    }
    let form = match req.content_type {
        HeaderValue::Once(ct) => ct.split(';').next().is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        }),
        HeaderValue::Absent | HeaderValue::Repeated => false,
    };
    if !form {
        return Err(Shape::WrongContentType);
    }
    if req.body.len() > MAX_BODY_BYTES {
        return Err(Shape::TooLarge);
    }
    Ok(())
}

/// A slash command, as Slack posts it. Identity fields are ids, never names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlashCommand {
    /// Workspace id.
    pub team_id: String,
    /// Enterprise Grid organisation id, when there is one.
    pub enterprise_id: Option<String>,
    /// The Slack app's id.
    pub api_app_id: Option<String>,
    /// Requesting user's id.
    pub user_id: String,
    /// Channel the command was typed in.
    pub channel_id: String,
    /// The command itself (`/ec2pass`).
    pub command: String,
    /// Everything typed after the command.
    pub text: String,
    /// Slack's unique id of this invocation.
    pub trigger_id: String,
    /// Where follow-ups about this command's password may be posted for 30 minutes (a
    /// capability, redacted in `Debug`; checked against `EC2PASS_REPLY_ORIGINS` before it is
    /// kept).
    pub response_url: Option<ReplyUrl>,
    /// The chat it came from.
    pub front: Front,
}

impl SlashCommand {
    /// Who sent it, for the allow-lists.
    pub fn who(&self) -> Who<'_> {
        Who {
            team_id: &self.team_id,
            enterprise_id: self.enterprise_id.as_deref(),
            api_app_id: self.api_app_id.as_deref(),
            user_id: &self.user_id,
            channel_id: &self.channel_id,
            front: self.front,
        }
    }
}

/// Who sent a request, as the allow-lists see it: ids only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who<'a> {
    /// Workspace (Slack) or team (Mattermost) id.
    pub team_id: &'a str,
    /// Slack Enterprise Grid organisation id.
    pub enterprise_id: Option<&'a str>,
    /// The Slack app's id.
    pub api_app_id: Option<&'a str>,
    /// User id.
    pub user_id: &'a str,
    /// Channel id.
    pub channel_id: &'a str,
    /// The chat.
    pub front: Front,
}

#[cfg(test)]
impl SlashCommand {
    /// A well-formed command from user U1 in workspace T1, channel C1, app A1 (for unit tests).
    pub(crate) fn example() -> Self {
        Self {
            team_id: "T1".into(),
            enterprise_id: None,
            api_app_id: Some("A1".into()),
            user_id: "U1".into(),
            channel_id: "C1".into(),
            command: "/ec2pass".into(),
            text: String::new(),
            trigger_id: "trig".into(),
            response_url: Some(ReplyUrl::new("https://hooks.slack.com/commands/T1/1/x")),
            front: Front::Slack,
        }
    }
}

/// What a form body turned out to be.
// `SslCheck` is a bare marker and the command is read at once: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// Slack checking the certificate (`ssl_check=1`): answer 200, do nothing.
    SslCheck,
    /// A slash command.
    Command(SlashCommand),
}

/// Why a form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A required field is missing or empty.
    #[error("field {0} is missing")]
    Missing(&'static str),
    /// A field appears more than once.
    #[error("field {0} appears more than once")]
    Duplicated(&'static str),
    /// An id field that is not an id of the chat the request came from.
    #[error("field {0} is not a Mattermost id")]
    NotAnId(&'static str),
}

/// Whether `id` is a Mattermost id: 26 lower-case letters and digits. A Slack id (`U0123ABC`) is
/// never one, so a request on the Mattermost path cannot borrow a Slack identity (nor match the
/// allow-lists' Slack entries).
pub fn is_mattermost_id(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A form body's fields, each read at most once.
struct Fields(Vec<(String, String)>);

impl Fields {
    /// Never fails on odd bytes: undecodable sequences become U+FFFD.
    fn of(body: &[u8]) -> Self {
        Self(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }

    /// A field present at most once; empty counts as absent.
    fn field(&self, name: &'static str) -> Result<Option<String>, FormError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next().cloned();
        if values.next().is_some() {
            return Err(FormError::Duplicated(name));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    /// A field present exactly once, not empty.
    fn required(&self, name: &'static str) -> Result<String, FormError> {
        self.field(name)?.ok_or(FormError::Missing(name))
    }
}

/// Parses a Slack form body (a slash command, or Slack's `ssl_check`).
pub fn parse_form(body: &[u8]) -> Result<Form, FormError> {
    let fields = Fields::of(body);
    let field = |name| fields.field(name);
    let required = |name| fields.required(name);

    if field("ssl_check")?.as_deref() == Some("1") && field("command")?.is_none() {
        return Ok(Form::SslCheck);
    }
    Ok(Form::Command(SlashCommand {
        team_id: required("team_id")?,
        enterprise_id: field("enterprise_id")?,
        api_app_id: field("api_app_id")?,
        user_id: required("user_id")?,
        channel_id: required("channel_id")?,
        command: required("command")?,
        text: field("text")?.unwrap_or_default(),
        trigger_id: required("trigger_id")?,
        response_url: field("response_url")?.map(ReplyUrl::new),
        front: Front::Slack,
    }))
}

/// A Mattermost slash command: the command, and the token it carries (compared with the
/// configured one before anything else is read from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MattermostCommand {
    /// The command, in the same shape as Slack's (`front` is [`Front::Mattermost`]).
    pub command: SlashCommand,
    /// The slash command's token.
    pub token: Token,
}

/// A Mattermost slash command token, as presented: redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Parses the form a Mattermost slash command posts (`token`, `team_id`, `user_id`,
/// `channel_id`, `command`, `text`, `trigger_id`, `response_url`, and names ec2pass ignores).
pub fn parse_mattermost(body: &[u8]) -> Result<MattermostCommand, FormError> {
    let fields = Fields::of(body);
    let token = Token(fields.required("token")?);
    let id = |name: &'static str| -> Result<String, FormError> {
        let value = fields.required(name)?;
        if is_mattermost_id(&value) {
            Ok(value)
        } else {
            Err(FormError::NotAnId(name))
        }
    };
    Ok(MattermostCommand {
        command: SlashCommand {
            team_id: id("team_id")?,
            enterprise_id: None,
            api_app_id: None,
            user_id: id("user_id")?,
            channel_id: id("channel_id")?,
            command: fields.required("command")?,
            text: fields.field("text")?.unwrap_or_default(),
            trigger_id: fields.required("trigger_id")?,
            response_url: fields.field("response_url")?.map(ReplyUrl::new),
            front: Front::Mattermost,
        },
        token,
    })
}

/// The token of a Mattermost form, alone (for a form whose other fields do not read).
pub fn parse_token(body: &[u8]) -> Option<Token> {
    Fields::of(body).field("token").ok().flatten().map(Token)
}

/// A button pressed on one of ec2pass's messages, from Slack's interactivity request
/// (`payload`, a `block_actions` JSON document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Press {
    /// Workspace id.
    pub team_id: String,
    /// Enterprise Grid organisation id, when there is one.
    pub enterprise_id: Option<String>,
    /// The Slack app's id.
    pub api_app_id: Option<String>,
    /// Who pressed.
    pub user_id: String,
    /// Channel of the message.
    pub channel_id: String,
    /// What the button does.
    pub action: Action,
    /// Where the message is replaced with the result (30 minutes, five posts).
    pub response_url: Option<ReplyUrl>,
}

impl Press {
    /// Who pressed, for the allow-lists.
    pub fn who(&self) -> Who<'_> {
        Who {
            team_id: &self.team_id,
            enterprise_id: self.enterprise_id.as_deref(),
            api_app_id: self.api_app_id.as_deref(),
            user_id: &self.user_id,
            channel_id: &self.channel_id,
            front: Front::Slack,
        }
    }
}

/// The buttons ec2pass puts on its messages: `action_id` and what it carries in `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `revoke`, on a minted password: withdraw it, and replace the message with the result.
    Revoke(ShortId),
    /// `revoke-listed`, on a line of `list`: withdraw it, and show the list again.
    RevokeListed(ShortId),
}

/// Action id of the Revoke button on a minted password.
pub const REVOKE: &str = "revoke";
/// Action id of the Revoke button on a line of `list`.
pub const REVOKE_LISTED: &str = "revoke-listed";

/// Why a button press could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PressError {
    /// The form has no single `payload`.
    #[error(transparent)]
    Form(#[from] FormError),
    /// The payload is not a `block_actions` document ec2pass can read.
    #[error("the payload is not a block_actions press: {0}")]
    Payload(String),
    /// A button ec2pass did not make (or a value that is no short id).
    #[error("an action ec2pass does not know")]
    UnknownAction,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    team: Option<IdOnly>,
    user: PayloadUser,
    api_app_id: Option<String>,
    enterprise: Option<IdOnly>,
    channel: Option<IdOnly>,
    container: Option<Container>,
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<PayloadAction>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct PayloadUser {
    id: String,
    team_id: Option<String>,
}

#[derive(Deserialize)]
struct Container {
    channel_id: Option<String>,
}

#[derive(Deserialize)]
struct PayloadAction {
    action_id: String,
    value: Option<String>,
}

/// Parses Slack's interactivity request: a form with one `payload` field holding the
/// `block_actions` JSON. Exactly one action, one of [`Action`]'s.
pub fn parse_press(body: &[u8]) -> Result<Press, PressError> {
    let fields = Fields::of(body);
    let raw = fields.required("payload")?;
    let payload: Payload =
        serde_json::from_str(&raw).map_err(|e| PressError::Payload(e.to_string()))?;
    if payload.kind != "block_actions" {
        return Err(PressError::Payload(format!(
            "type {:?}",
            shorten(&payload.kind)
        )));
    }
    let [action] = payload.actions.as_slice() else {
        return Err(PressError::Payload("not exactly one action".into()));
    };
    let id = action
        .value
        .as_deref()
        .and_then(ShortId::parse)
        .ok_or(PressError::UnknownAction)?;
    let action = match action.action_id.as_str() {
        REVOKE => Action::Revoke(id),
        REVOKE_LISTED => Action::RevokeListed(id),
        _ => return Err(PressError::UnknownAction),
    };
    let team_id = payload
        .team
        .map(|t| t.id)
        .or(payload.user.team_id)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| PressError::Payload("no team".into()))?;
    let channel_id = payload
        .channel
        .map(|c| c.id)
        .or(payload.container.and_then(|c| c.channel_id))
        .unwrap_or_default();
    if payload.user.id.is_empty() {
        return Err(PressError::Payload("no user".into()));
    }
    Ok(Press {
        team_id,
        enterprise_id: payload.enterprise.map(|e| e.id),
        api_app_id: payload.api_app_id,
        user_id: payload.user.id,
        channel_id,
        action,
        response_url: payload.response_url.map(ReplyUrl::new),
    })
}

/// At most 40 characters of something echoed in a log line.
fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use HeaderValue::{Absent, Once, Repeated};

    fn req<'a>(method: &'a str, ct: HeaderValue<'a>, body: &'a [u8]) -> Incoming<'a> {
        Incoming {
            method,
            path: "/",
            content_type: ct,
            timestamp: Absent,
            signature: Absent,
            body,
        }
    }

    #[test]
    fn only_form_posts_of_reasonable_size_pass() {
        let form = Once("application/x-www-form-urlencoded");
        assert_eq!(check_shape(&req("POST", form, b"a=b")), Ok(()));
        assert_eq!(
            check_shape(&req(
                "post",
                Once("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
                b""
            )),
            Ok(())
        );
        assert_eq!(check_shape(&req("GET", form, b"")), Err(Shape::WrongMethod));
        assert_eq!(check_shape(&req("PUT", form, b"")), Err(Shape::WrongMethod));
        assert_eq!(
            check_shape(&req("POST", Once("application/json"), b"{}")),
            Err(Shape::WrongContentType)
        );
        assert_eq!(
            check_shape(&req("POST", Absent, b"a=b")),
            Err(Shape::WrongContentType)
        );
        assert_eq!(
            check_shape(&req("POST", Repeated, b"a=b")),
            Err(Shape::WrongContentType)
        );
        let big = vec![b'a'; MAX_BODY_BYTES + 1];
        assert_eq!(check_shape(&req("POST", form, &big)), Err(Shape::TooLarge));
        let max = vec![b'a'; MAX_BODY_BYTES];
        assert_eq!(check_shape(&req("POST", form, &max)), Ok(()));
        assert_eq!(Shape::TooLarge.status(), 413);
    }

    const GOOD: &str = "token=x&team_id=T1&user_id=U1&user_name=bob&channel_id=C1&command=%2Fec2pass&text=i-0123456789abcdef0+30m&trigger_id=1.2.abc&api_app_id=A1";

    #[test]
    fn a_slash_command_form_is_read_with_plus_and_percent_decoding() {
        let Ok(Form::Command(c)) = parse_form(GOOD.as_bytes()) else {
            panic!("form not parsed");
        };
        assert_eq!(c.text, "i-0123456789abcdef0 30m");
        assert_eq!(c.command, "/ec2pass");
        assert_eq!(
            (
                c.team_id.as_str(),
                c.user_id.as_str(),
                c.channel_id.as_str()
            ),
            ("T1", "U1", "C1")
        );
        assert_eq!(c.api_app_id.as_deref(), Some("A1"));
        assert_eq!(c.enterprise_id, None);
        let Ok(Form::Command(c)) = parse_form(GOOD.replace('+', "%20").as_bytes()) else {
            panic!("form not parsed");
        };
        assert_eq!(c.text, "i-0123456789abcdef0 30m");
    }

    #[test]
    fn ssl_checks_are_recognised() {
        assert_eq!(parse_form(b"ssl_check=1&token=legacy"), Ok(Form::SslCheck));
    }

    #[test]
    fn missing_and_duplicated_fields_are_reported() {
        assert_eq!(
            parse_form(GOOD.replace("user_id=U1&", "").as_bytes()),
            Err(FormError::Missing("user_id"))
        );
        assert_eq!(
            parse_form(GOOD.replace("user_id=U1", "user_id=").as_bytes()),
            Err(FormError::Missing("user_id"))
        );
        assert_eq!(
            parse_form(format!("{GOOD}&user_id=U2").as_bytes()),
            Err(FormError::Duplicated("user_id"))
        );
        assert_eq!(parse_form(b""), Err(FormError::Missing("team_id")));
    }

    #[test]
    fn odd_bytes_never_panic() {
        for body in [
            &b"\xff\xfe=\x00&%zz=%"[..],
            b"&&&===",
            b"%",
            b"text=%E2%82",
            b"\xc3\x28",
        ] {
            let _ = parse_form(body);
        }
        let Ok(Form::Command(c)) = parse_form(
            format!("{GOOD}&x=%ff")
                .replace("text=i-0123456789abcdef0+30m", "text=%ff%fe")
                .as_bytes(),
        ) else {
            panic!("form not parsed");
        };
        assert_eq!(c.text, "\u{fffd}\u{fffd}");
    }
}
