//! The HTTP edge: what a request must look like before anything else is read, and the slash
//! command form inside it.
//!
//! Only `POST` with `application/x-www-form-urlencoded` and at most 8 KiB of body is accepted.
//! The form is parsed from the raw bytes (the same bytes the signature covers), strictly: every
//! field ec2pass relies on must be present exactly once.

use ec2pass_shared::reply::ReplyUrl;

use crate::verify::HeaderValue;

/// Largest body accepted. Slack's slash command posts are well under 4 KiB.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// The parts of an HTTP request the issuer looks at, borrowed from whatever carried it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// HTTP method.
    pub method: &'a str,
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
        }
    }
}

/// What a form body turned out to be.
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
}

/// Parses a form body. Never fails on odd bytes: undecodable sequences become U+FFFD.
pub fn parse_form(body: &[u8]) -> Result<Form, FormError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let field = |name: &'static str| -> Result<Option<String>, FormError> {
        let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next().cloned();
        if values.next().is_some() {
            return Err(FormError::Duplicated(name));
        }
        Ok(first.filter(|v| !v.is_empty()))
    };
    let required = |name: &'static str| field(name)?.ok_or(FormError::Missing(name));

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
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use HeaderValue::{Absent, Once, Repeated};

    fn req<'a>(method: &'a str, ct: HeaderValue<'a>, body: &'a [u8]) -> Incoming<'a> {
        Incoming {
            method,
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
