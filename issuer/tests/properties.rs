//! Adversarial input for everything the issuer reads from outside (issue #5): the Slack
//! signature check, the HTTP shape check, the form parser, the command grammar, the mrkdwn
//! escaping, and the whole request path behind `handle_http`.
//!
//! Every property states the documented outcome for its input, not merely "no panic": each
//! rejection must be exactly the one SPEC §3.1–§3.2 and the modules' docs name. A product panic
//! is caught by proptest and reported as a failure with the minimal input that causes it.
//!
//! Each property runs a bounded number of cases by default (`make test`); set
//! `EC2PASS_FUZZ_CASES` for the long run (`make fuzz`). Each prints one summary line, shown with
//! `--nocapture`. A failing input's seed is saved in `properties.proptest-regressions` next to
//! this file and replayed first on every later run; commit it with the fix.

use std::fmt::Debug;
use std::time::Duration;

use ec2pass_shared::config::{AllowLists, IssuerConfig, Lifetimes, SecretSource, SigningSecret};
use ec2pass_shared::ids::{InstanceId, ShortId};
use ec2pass_shared::password::ALPHABET;
use ec2pass_shared::store::memory::MemoryStore;
use ec2pass_shared::time::{FixedClock, UnixTime};
use hmac::{Hmac, KeyInit, Mac};
use issuer::answer::escape;
use issuer::command::{self, Command, Mistake, Near, RevokeTarget, choose_lifetime};
use issuer::handler::Issuer;
use issuer::instances::{DirectoryError, InstanceDirectory, InstanceInfo};
use issuer::request::{
    Form, FormError, Incoming, MAX_BODY_BYTES, Shape, SlashCommand, check_shape, parse_form,
};
use issuer::verify::{HeaderValue, MAX_SKEW_SECS, VerifyError, sign, verify};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::Value;
use sha2::Sha256;

// ---------------------------------------------------------------------------------------------
// Running properties
// ---------------------------------------------------------------------------------------------

/// The variant name of an enum value (what its `Debug` shows before any fields).
fn variant(v: &impl Debug) -> String {
    let s = format!("{v:?}");
    s.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `ok` or `ok:Variant`, or `err:Variant`.
fn label<T: Debug, E: Debug>(r: &Result<T, E>) -> String {
    match r {
        Ok(v) => match variant(v).as_str() {
            "" => "ok".to_owned(),
            v => format!("ok:{v}"),
        },
        Err(e) => format!("err:{}", variant(e)),
    }
}

#[path = "../../shared/tests/support/harness.rs"]
mod harness;
use harness::outcome;

/// Runs one property with the shared runner, keeping its failing seeds beside this file.
fn check<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: Debug,
{
    harness::check(file!(), name, strategy, test);
}

// ---------------------------------------------------------------------------------------------
// The signature check (SPEC §3.1)
// ---------------------------------------------------------------------------------------------

const TS_HEADER: &str = "X-Slack-Request-Timestamp";
const SIG_HEADER: &str = "X-Slack-Signature";

/// A header as a request may carry it, owning its value.
#[derive(Debug, Clone)]
enum Header {
    Absent,
    Repeated,
    Once(String),
}

impl Header {
    fn as_value(&self) -> HeaderValue<'_> {
        match self {
            Header::Absent => HeaderValue::Absent,
            Header::Repeated => HeaderValue::Repeated,
            Header::Once(v) => HeaderValue::Once(v),
        }
    }
}

/// The signature a request carries: the right one (as sent, or in upper-case hex), or anything.
#[derive(Debug, Clone)]
enum Sig {
    Right,
    RightUpper,
    Raw(Header),
}

/// HMAC-SHA256 over `v0:{ts}:{body}`, computed here independently of the issuer.
fn hmac_v0(secret: &str, ts: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The documented outcome of verifying, derived from SPEC §3.1 and `VerifyError`'s docs:
/// headers present, then not duplicated (repeated or comma-joined), then well-formed (plain
/// decimal timestamp; `v0=` and 64 hex digits), then fresh (±300 s), then the MAC.
fn expected_verify(
    secret: &str,
    ts: &Header,
    sig: &Header,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let ts = match ts {
        Header::Absent => return Err(VerifyError::MissingTimestamp),
        Header::Repeated => return Err(VerifyError::Duplicated(TS_HEADER)),
        Header::Once(t) => t,
    };
    let sig = match sig {
        Header::Absent => return Err(VerifyError::MissingSignature),
        Header::Repeated => return Err(VerifyError::Duplicated(SIG_HEADER)),
        Header::Once(s) => s,
    };
    if ts.contains(',') {
        return Err(VerifyError::Duplicated(TS_HEADER));
    }
    if sig.contains(',') {
        return Err(VerifyError::Duplicated(SIG_HEADER));
    }
    // Plain decimal digits; more than 12 (past the year 33000, or zero-padded) is refused too.
    let plain = !ts.is_empty() && ts.len() <= 12 && ts.bytes().all(|b| b.is_ascii_digit());
    let Some(sent) = plain.then(|| ts.parse::<i64>().ok()).flatten() else {
        return Err(VerifyError::MalformedTimestamp);
    };
    let hex = sig
        .strip_prefix("v0=")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let Some(hex) = hex else {
        return Err(VerifyError::MalformedSignature);
    };
    let skew_secs = now.abs_diff(sent);
    if skew_secs > MAX_SKEW_SECS {
        return Err(VerifyError::Stale { skew_secs });
    }
    if hex.to_ascii_lowercase() == hex_lower(&hmac_v0(secret, ts, body)) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run_verify(
    secret: &str,
    ts: &Header,
    sig: &Header,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    verify(
        &SigningSecret::new(secret),
        ts.as_value(),
        sig.as_value(),
        body,
        UnixTime(now),
    )
}

/// Timestamp header values around `now`: right, skewed, signed, spaced, exponent, huge,
/// negative, comma-joined, non-ASCII digits, and anything at all.
fn timestamp_text(now: i64) -> impl Strategy<Value = String> {
    prop_oneof![
        10 => (-400i64..=400).prop_map(move |skew| now.saturating_add(skew).to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "[0-9]{13,25}",
        1 => "0{1,12}[0-9]{10}",
        1 => "[+-][0-9]{1,12}",
        1 => " ?[0-9]{1,11} ?\t?",
        1 => "[0-9]{1,6}[.eE_][0-9]{1,4}",
        1 => "[0-9]{1,12},[0-9]{0,12}",
        1 => "[0-9\u{660}-\u{669}\u{ff10}-\u{ff19}]{1,12}",
        1 => any::<String>(),
    ]
}

/// Signature header values: right-looking and wrong in every documented way.
fn signature_text() -> BoxedStrategy<String> {
    prop_oneof![
        "v0=[0-9a-f]{64}",
        "v0=[0-9a-fA-F]{64}",
        "[vV][0-9]=[0-9a-f]{64}",
        "v0[:=-][0-9a-f]{64}",
        "v0=[0-9a-f]{0,63}",
        "v0=[0-9a-f]{65,100}",
        "v0=[0-9a-z]{64}",
        "v0=[0-9a-f\u{e9}\u{20ac}\u{1f600}\u{ff10}]{58,64}",
        " ?v0=[0-9a-f]{64} ?",
        "[0-9a-f]{64}",
        "v0=[0-9a-f]{64},v0=[0-9a-f]{64}",
        any::<String>(),
    ]
    .boxed()
}

fn header(value: impl Strategy<Value = String>) -> impl Strategy<Value = Header> {
    prop_oneof![
        1 => Just(Header::Absent),
        1 => Just(Header::Repeated),
        12 => value.prop_map(Header::Once),
    ]
}

fn secret() -> impl Strategy<Value = String> {
    prop_oneof!["[ -~]{1,40}", any::<String>()]
}

#[test]
fn verify_names_exactly_the_documented_problem_for_any_headers() {
    let strategy = (
        0i64..=999_999_999_999,
        secret(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_flat_map(|(now, secret, body)| {
            let sig = prop_oneof![
                3 => Just(Sig::Right),
                1 => Just(Sig::RightUpper),
                6 => header(signature_text()).prop_map(Sig::Raw),
            ];
            (
                Just(now),
                Just(secret),
                Just(body),
                header(timestamp_text(now)),
                sig,
                prop_oneof![3 => Just(now), 1 => any::<i64>()],
            )
        });
    check(
        "verify: any headers give the documented outcome",
        strategy,
        |(_, secret, body, ts, sig, now)| {
            let sig = match (&sig, &ts) {
                (Sig::Raw(h), _) => h.clone(),
                (right, Header::Once(t)) => {
                    let hex = hex_lower(&hmac_v0(&secret, t, &body));
                    let hex = match right {
                        Sig::RightUpper => hex.to_ascii_uppercase(),
                        _ => hex,
                    };
                    Header::Once(format!("v0={hex}"))
                }
                (_, _) => Header::Once(format!("v0={}", "0".repeat(64))),
            };
            let got = run_verify(&secret, &ts, &sig, &body, now);
            outcome(label(&got));
            prop_assert_eq!(got, expected_verify(&secret, &ts, &sig, &body, now));
            Ok(())
        },
    );
}

/// A request signed as Slack signs it, at `now + skew`.
fn signed_request() -> impl Strategy<Value = (String, Vec<u8>, i64, i64)> {
    (
        secret(),
        proptest::collection::vec(any::<u8>(), 0..600),
        300i64..=999_999_999_000,
        -(MAX_SKEW_SECS as i64)..=(MAX_SKEW_SECS as i64),
    )
}

#[test]
fn a_correctly_signed_body_always_verifies_within_the_window_and_never_outside() {
    let strategy = (signed_request(), 1i64..=1_000_000_000, any::<bool>());
    check(
        "verify: right signatures pass within ±300 s, fail Stale outside",
        strategy,
        |((secret, body, now, skew), beyond, later)| {
            let ts = (now + skew).to_string();
            let signature = sign(&SigningSecret::new(secret.as_str()), &ts, &body);
            // The issuer's signer agrees with an independent HMAC.
            prop_assert_eq!(
                &signature,
                &format!("v0={}", hex_lower(&hmac_v0(&secret, &ts, &body)))
            );
            let ts_h = Header::Once(ts.clone());
            prop_assert_eq!(
                run_verify(&secret, &ts_h, &Header::Once(signature.clone()), &body, now),
                Ok(())
            );
            let upper = format!("v0={}", signature[3..].to_ascii_uppercase());
            prop_assert_eq!(
                run_verify(&secret, &ts_h, &Header::Once(upper), &body, now),
                Ok(())
            );
            // The same request, checked too late or too early, is stale by exactly that much.
            let distance = MAX_SKEW_SECS as i64 + beyond;
            let sent = now + skew;
            let then = if later {
                sent + distance
            } else {
                sent - distance
            };
            prop_assert_eq!(
                run_verify(&secret, &ts_h, &Header::Once(signature), &body, then),
                Err(VerifyError::Stale {
                    skew_secs: distance.unsigned_abs()
                })
            );
            Ok(())
        },
    );
}

/// One change to a signed request.
#[derive(Debug, Clone)]
enum Tamper {
    /// XOR one body byte with a non-zero value.
    BodyFlip(usize, u8),
    /// Insert a byte into the body.
    BodyInsert(usize, u8),
    /// Delete a body byte.
    BodyDelete(usize),
    /// Replace one character of the signature header.
    SigChar(usize, char),
    /// Replace one character of the timestamp header.
    TsChar(usize, char),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    let replacement = prop_oneof![
        4 => proptest::char::range('0', '9'),
        4 => proptest::char::range('a', 'f'),
        2 => proptest::char::range('A', 'F'),
        2 => any::<char>(),
        1 => Just(','),
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Tamper::BodyFlip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Tamper::BodyInsert(i, b)),
        any::<usize>().prop_map(Tamper::BodyDelete),
        (any::<usize>(), replacement.clone()).prop_map(|(i, c)| Tamper::SigChar(i, c)),
        (any::<usize>(), replacement).prop_map(|(i, c)| Tamper::TsChar(i, c)),
    ]
}

fn replace_char(s: &str, index: usize, c: char) -> String {
    let n = s.chars().count();
    let at = index % n.max(1);
    s.chars()
        .enumerate()
        .map(|(i, old)| if i == at { c } else { old })
        .collect()
}

#[test]
fn any_single_change_to_a_signed_request_is_rejected_as_documented() {
    check(
        "verify: one changed byte or character is rejected",
        (signed_request(), tamper()),
        |((secret, mut body, now, skew), tamper)| {
            let mut ts = (now + skew).to_string();
            let mut signature = sign(&SigningSecret::new(secret.as_str()), &ts, &body);
            let original = signature.clone();
            let mut body_changed = false;
            match tamper {
                Tamper::BodyFlip(i, x) if !body.is_empty() => {
                    let i = i % body.len();
                    body[i] ^= x;
                    body_changed = true;
                }
                Tamper::BodyInsert(i, b) => {
                    body.insert(i % (body.len() + 1), b);
                    body_changed = true;
                }
                Tamper::BodyDelete(i) if !body.is_empty() => {
                    body.remove(i % body.len());
                    body_changed = true;
                }
                Tamper::BodyFlip(..) | Tamper::BodyDelete(_) => return Ok(()),
                Tamper::SigChar(i, c) => signature = replace_char(&signature, i, c),
                Tamper::TsChar(i, c) => ts = replace_char(&ts, i, c),
            }
            let (ts_h, sig_h) = (Header::Once(ts.clone()), Header::Once(signature.clone()));
            let got = run_verify(&secret, &ts_h, &sig_h, &body, now);
            outcome(label(&got));
            if body_changed {
                prop_assert_eq!(got, Err(VerifyError::Mismatch));
                return Ok(());
            }
            prop_assert_eq!(&got, &expected_verify(&secret, &ts_h, &sig_h, &body, now));
            // Only a change of letter case in the hex digits leaves the same signature.
            let same = signature.get(..3) == Some("v0=")
                && signature.to_ascii_lowercase() == original
                && ts == (now + skew).to_string();
            prop_assert_eq!(got.is_ok(), same, "{} / {}", ts, signature);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The HTTP shape (SPEC §3.1: only POST, form-encoded, at most 8 KiB)
// ---------------------------------------------------------------------------------------------

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[pP][oO][sS][tT]",
        1 => Just("GET".to_owned()),
        1 => Just("PUT".to_owned()),
        1 => "[A-Za-z]{1,8}",
        1 => " ?POST ?",
        1 => any::<String>(),
    ]
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ \t]{0,2}[aA]pplication/[xX]-[wW][wW][wW]-[fF]orm-[uU]rlencoded[ \t]{0,2}(; ?charset=[a-zA-Z0-9-]{1,10})?",
        1 => Just("application/json".to_owned()),
        1 => Just("multipart/form-data; boundary=x".to_owned()),
        1 => Just("application/x-www-form-urlencoded, text/plain".to_owned()),
        1 => Just("application/x-www-form-urlencodedx".to_owned()),
        1 => "[a-z/;= -]{0,40}",
        1 => any::<String>(),
    ]
}

/// What `check_shape` must say, from SPEC §3.1 and `Shape`'s docs.
fn expected_shape(method: &str, ct: &Header, len: usize) -> Result<(), Shape> {
    if !method.eq_ignore_ascii_case("POST") {
        return Err(Shape::WrongMethod);
    }
    let form = match ct {
        Header::Once(v) => {
            let media = v.split(';').next().unwrap_or_default();
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        }
        Header::Absent | Header::Repeated => false,
    };
    if !form {
        return Err(Shape::WrongContentType);
    }
    if len > MAX_BODY_BYTES {
        return Err(Shape::TooLarge);
    }
    Ok(())
}

fn body_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..=2 * MAX_BODY_BYTES,
        (MAX_BODY_BYTES - 2)..=(MAX_BODY_BYTES + 2),
    ]
}

#[test]
fn the_shape_check_refuses_exactly_what_the_spec_refuses_with_its_status() {
    check(
        "check_shape: method, content type and size",
        (method(), header(content_type()), body_len()),
        |(method, ct, len)| {
            let body = vec![b'a'; len];
            let req = Incoming {
                method: &method,
                path: "/",
                content_type: ct.as_value(),
                timestamp: HeaderValue::Absent,
                signature: HeaderValue::Absent,
                body: &body,
            };
            let got = check_shape(&req);
            outcome(label(&got));
            prop_assert_eq!(got, expected_shape(&method, &ct, len));
            if let Err(shape) = got {
                let status = match shape {
                    Shape::WrongMethod => 405,
                    Shape::WrongContentType => 415,
                    Shape::TooLarge => 413,
                };
                prop_assert_eq!(shape.status(), status);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The form parser
// ---------------------------------------------------------------------------------------------

/// Fields `parse_form` reads, in the order it reads them.
const FORM_FIELDS: [&str; 9] = [
    "ssl_check",
    "team_id",
    "enterprise_id",
    "api_app_id",
    "user_id",
    "channel_id",
    "command",
    "text",
    "trigger_id",
];

/// Fields a slash command must carry, non-empty.
const REQUIRED: [&str; 5] = ["team_id", "user_id", "channel_id", "command", "trigger_id"];

/// How one key or value is written in the body.
#[derive(Debug, Clone, Copy)]
enum Style {
    /// Space as `+`, reserved and non-ASCII bytes as `%XX` (what Slack and browsers send).
    Plus,
    /// Space as `%20`.
    Pct20,
    /// Every byte as `%xx`, lower-case hex.
    AllLower,
    /// Only `&`, `=`, `+`, `%` and space escaped; every other byte, even non-ASCII, raw.
    Raw,
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        Just(Style::Plus),
        Just(Style::Pct20),
        Just(Style::AllLower),
        Just(Style::Raw)
    ]
}

fn encode(bytes: &[u8], style: Style) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        let unreserved = b.is_ascii_alphanumeric() || b"-._*".contains(&b);
        match (style, b) {
            (Style::AllLower, b) => out.extend(format!("%{b:02x}").bytes()),
            (Style::Plus | Style::Raw, b' ') => out.push(b'+'),
            (_, b'&' | b'=' | b'+' | b'%' | b' ') => out.extend(format!("%{b:02X}").bytes()),
            (Style::Raw, b) => out.push(b),
            (_, b) if unreserved => out.push(b),
            (_, b) => out.extend(format!("%{b:02X}").bytes()),
        }
    }
    out
}

/// One key/value pair as raw bytes, with how each half is written.
#[derive(Debug, Clone)]
struct Pair {
    key: Vec<u8>,
    value: Vec<u8>,
    styles: (Style, Style),
}

impl Pair {
    fn new(key: &str, value: impl Into<Vec<u8>>, styles: (Style, Style)) -> Self {
        Self {
            key: key.as_bytes().to_vec(),
            value: value.into(),
            styles,
        }
    }

    /// What the parser should read back: the bytes, undecodable sequences as U+FFFD.
    fn decoded(&self) -> (String, String) {
        (
            String::from_utf8_lossy(&self.key).into_owned(),
            String::from_utf8_lossy(&self.value).into_owned(),
        )
    }
}

fn body_of(pairs: &[Pair]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        if i > 0 {
            body.push(b'&');
        }
        body.extend(encode(&p.key, p.styles.0));
        body.push(b'=');
        body.extend(encode(&p.value, p.styles.1));
    }
    body
}

/// The documented reading of a list of fields: each field ec2pass relies on at most once,
/// required ones non-empty, `ssl_check=1` without a command is Slack's certificate check.
fn expected_form(pairs: &[(String, String)]) -> Result<Form, FormError> {
    let field = |name: &'static str| -> Result<Option<String>, FormError> {
        let values: Vec<&String> = pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect();
        match values.as_slice() {
            [] => Ok(None),
            [v] => Ok(Some((*v).clone()).filter(|v| !v.is_empty())),
            _ => Err(FormError::Duplicated(name)),
        }
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
        response_url: field("response_url")?.map(ec2pass_shared::reply::ReplyUrl::new),
        front: Default::default(),
    }))
}

/// Text people type: ASCII with the characters forms must escape, multibyte, and anything.
fn typed_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ a-zA-Z0-9+%&=#;/?:@\\-._~]{0,40}",
        1 => "[ i\\-0-9a-f]{0,30}",
        1 => "(%[0-9a-fA-Fg-z]{0,2}){0,8}",
        2 => "[ a-z\u{e9}\u{df}\u{20ac}\u{3000}\u{1f680}\u{fffd}]{0,20}",
        2 => any::<String>(),
    ]
}

/// A slash command as Slack posts it: the fields ec2pass reads plus the ones it ignores, in
/// any order, each written in any style.
fn slack_pairs() -> impl Strategy<Value = Vec<Pair>> {
    let fields = (
        "T[A-Z0-9]{8,10}",
        proptest::option::of("E[A-Z0-9]{8,10}"),
        proptest::option::of("A[A-Z0-9]{8,10}"),
        "[UW][A-Z0-9]{8,10}",
        "[CDG][A-Z0-9]{8,10}",
        prop_oneof![Just("/ec2pass".to_owned()), "/[a-z0-9-]{1,20}"],
        typed_text(),
        "[0-9]{6,12}\\.[0-9]{6,12}\\.[0-9a-f]{32}",
    );
    (fields, proptest::collection::vec((style(), style()), 14))
        .prop_map(
            |((team, ent, app, user, channel, cmd, text, trigger), styles)| {
                let mut pairs = vec![
                    ("token", "legacy-token".as_bytes().to_vec()),
                    ("team_id", team.into_bytes()),
                    ("team_domain", b"acme".to_vec()),
                    ("channel_id", channel.into_bytes()),
                    ("channel_name", "ops \u{1f680}".as_bytes().to_vec()),
                    ("user_id", user.into_bytes()),
                    ("user_name", b"some one".to_vec()),
                    ("command", cmd.into_bytes()),
                    ("text", text.into_bytes()),
                    (
                        "response_url",
                        b"https://hooks.slack.com/commands/T1/2/x".to_vec(),
                    ),
                    ("trigger_id", trigger.into_bytes()),
                ];
                if let Some(e) = ent {
                    pairs.push(("enterprise_id", e.into_bytes()));
                }
                if let Some(a) = app {
                    pairs.push(("api_app_id", a.into_bytes()));
                }
                pairs
                    .into_iter()
                    .zip(styles)
                    .map(|((k, v), s)| Pair::new(k, v, s))
                    .collect::<Vec<_>>()
            },
        )
        .prop_shuffle()
}

fn decoded(pairs: &[Pair]) -> Vec<(String, String)> {
    pairs.iter().map(Pair::decoded).collect()
}

#[test]
fn an_encoded_slash_command_parses_back_to_its_fields() {
    check(
        "parse_form: encode then parse is the identity, in any encoding style",
        slack_pairs(),
        |pairs| {
            let got = parse_form(&body_of(&pairs));
            let want = expected_form(&decoded(&pairs));
            prop_assert!(matches!(want, Ok(Form::Command(_))), "{:?}", want);
            prop_assert_eq!(got, want);
            Ok(())
        },
    );
}

#[test]
fn values_of_any_bytes_read_back_with_undecodable_sequences_as_replacement_characters() {
    check(
        "parse_form: non-UTF-8 values become U+FFFD, nothing else changes",
        (
            slack_pairs(),
            proptest::collection::vec(any::<u8>(), 0..60),
            (style(), style()),
        ),
        |(mut pairs, text, styles)| {
            pairs.retain(|p| p.key != b"text");
            pairs.push(Pair::new("text", text.clone(), styles));
            let Ok(Form::Command(c)) = parse_form(&body_of(&pairs)) else {
                return Err(TestCaseError::fail("a valid command was not read"));
            };
            prop_assert_eq!(c.text, String::from_utf8_lossy(&text).into_owned());
            Ok(())
        },
    );
}

/// One thing wrong with an otherwise valid command.
#[derive(Debug, Clone)]
enum FormFault {
    /// A field ec2pass reads appears twice (the second value may be empty or equal).
    Duplicate(usize, Vec<u8>),
    /// A required field is left out.
    Remove(usize),
    /// A required field is present but empty.
    Empty(usize),
}

fn form_fault() -> impl Strategy<Value = FormFault> {
    prop_oneof![
        (
            1..FORM_FIELDS.len(),
            proptest::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(i, v)| FormFault::Duplicate(i, v)),
        (0..REQUIRED.len()).prop_map(FormFault::Remove),
        (0..REQUIRED.len()).prop_map(FormFault::Empty),
    ]
}

#[test]
fn a_missing_empty_or_duplicated_field_is_named() {
    check(
        "parse_form: Missing(field) / Duplicated(field), exactly",
        (
            slack_pairs(),
            form_fault(),
            (style(), style()),
            any::<prop::sample::Index>(),
        ),
        |(mut pairs, fault, styles, at)| {
            outcome(variant(&fault));
            let want = match &fault {
                FormFault::Duplicate(i, v) => {
                    let name = FORM_FIELDS[*i];
                    let extra = Pair::new(name, v.clone(), styles);
                    pairs.insert(at.index(pairs.len() + 1), extra);
                    // An optional field that was absent is now present once: no error.
                    let count = pairs.iter().filter(|p| p.key == name.as_bytes()).count();
                    if count < 2 {
                        return Ok(());
                    }
                    FormError::Duplicated(name)
                }
                FormFault::Remove(i) => {
                    pairs.retain(|p| p.key != REQUIRED[*i].as_bytes());
                    FormError::Missing(REQUIRED[*i])
                }
                FormFault::Empty(i) => {
                    for p in pairs
                        .iter_mut()
                        .filter(|p| p.key == REQUIRED[*i].as_bytes())
                    {
                        p.value.clear();
                    }
                    FormError::Missing(REQUIRED[*i])
                }
            };
            prop_assert_eq!(parse_form(&body_of(&pairs)), Err(want));
            Ok(())
        },
    );
}

/// Raw pieces of a form body: valid pairs, broken escapes, stray separators, raw bytes.
fn garbage_piece() -> impl Strategy<Value = Vec<u8>> {
    let name = proptest::sample::select(FORM_FIELDS.to_vec());
    prop_oneof![
        (name, typed_text(), (style(), style())).prop_map(|(k, v, s)| body_of(&[Pair::new(
            k,
            v.into_bytes(),
            s
        )])),
        prop_oneof![
            Just(&b"%"[..]),
            Just(&b"%z"[..]),
            Just(&b"%zz"[..]),
            Just(&b"%e2%82"[..]),
            Just(&b"%%25"[..]),
            Just(&b"="[..]),
            Just(&b"=="[..]),
            Just(&b"a=b=c"[..]),
            Just(&b"+"[..]),
            Just(&b"\xff\xfe"[..]),
            Just(&b"ssl_check=1"[..]),
            Just(&b"text=%ZZ%"[..]),
        ]
        .prop_map(<[u8]>::to_vec),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

#[test]
fn any_bytes_give_a_form_or_a_named_field_error() {
    let bodies = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2000),
        proptest::collection::vec(garbage_piece(), 0..30).prop_map(|pieces| pieces.join(&b'&')),
    ];
    check(
        "parse_form: arbitrary bytes never panic, errors name a field",
        bodies,
        |body| {
            let got = parse_form(&body);
            outcome(label(&got));
            match got {
                Ok(Form::SslCheck) => {}
                Ok(Form::Command(c)) => {
                    for (name, v) in [
                        ("team_id", &c.team_id),
                        ("user_id", &c.user_id),
                        ("channel_id", &c.channel_id),
                        ("command", &c.command),
                        ("trigger_id", &c.trigger_id),
                    ] {
                        prop_assert!(!v.is_empty(), "{} is empty", name);
                    }
                    prop_assert!(c.enterprise_id.as_deref() != Some(""));
                    prop_assert!(c.api_app_id.as_deref() != Some(""));
                }
                Err(FormError::Missing(name)) => prop_assert!(REQUIRED.contains(&name), "{}", name),
                Err(FormError::Duplicated(name)) => {
                    prop_assert!(FORM_FIELDS.contains(&name), "{}", name);
                }
                // Only the Mattermost form checks id shapes.
                Err(FormError::NotAnId(name)) => prop_assert!(false, "a Slack form said {}", name),
            }
            Ok(())
        },
    );
}

#[test]
fn unknown_fields_of_any_bytes_do_not_change_the_reading() {
    check(
        "parse_form: garbage in fields ec2pass does not read changes nothing",
        (
            slack_pairs(),
            proptest::collection::vec(
                proptest::collection::vec(any::<u8>().prop_filter("no &", |b| *b != b'&'), 0..30),
                1..5,
            ),
        ),
        |(pairs, junk)| {
            let clean = body_of(&pairs);
            let mut dirty = clean.clone();
            for j in junk {
                dirty.extend_from_slice(b"&junk_");
                dirty.extend(j);
            }
            prop_assert_eq!(parse_form(&dirty), parse_form(&clean));
            Ok(())
        },
    );
}

#[test]
fn ssl_check_without_a_command_is_the_certificate_check() {
    check(
        "parse_form: ssl_check=1 without command is SslCheck",
        (
            proptest::collection::vec(
                (
                    "(token|team_id|user_id|text|[a-z]{1,8})",
                    typed_text(),
                    (style(), style()),
                ),
                0..6,
            ),
            (style(), style()),
            any::<prop::sample::Index>(),
        ),
        |(others, styles, at)| {
            let mut pairs: Vec<Pair> = others
                .into_iter()
                .filter(|(k, _, _)| !["ssl_check", "command"].contains(&k.as_str()))
                .map(|(k, v, s)| Pair::new(&k, v.into_bytes(), s))
                .collect();
            pairs.insert(
                at.index(pairs.len() + 1),
                Pair::new("ssl_check", "1", styles),
            );
            // Whatever else is there (even duplicated fields), it is the certificate check.
            prop_assert_eq!(expected_form(&decoded(&pairs)), Ok(Form::SslCheck));
            prop_assert_eq!(parse_form(&body_of(&pairs)), Ok(Form::SslCheck));
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The command grammar (SPEC §3.2)
// ---------------------------------------------------------------------------------------------

/// User text echoed in a mistake: at most 40 characters, then `…`.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}

/// `i-` and 8 or 17 lowercase hex digits.
fn is_instance_id(w: &str) -> bool {
    w.strip_prefix("i-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A whole positive number of at most six digits and a unit `s`, `m`, `h` or `d`, any case.
fn lifetime_of(w: &str) -> Option<Duration> {
    let unit = w.chars().last()?;
    let digits = &w[..w.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs = match unit.to_ascii_lowercase() {
        's' => n,
        'm' => n * 60,
        'h' => n * 3600,
        'd' => n * 86_400,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Eight characters of the password alphabet, any case.
fn is_short_id(w: &str) -> bool {
    w.len() == 8
        && w.bytes()
            .all(|b| ALPHABET.contains(&b.to_ascii_lowercase()))
}

/// `alias` or `alias/region` (issue 12), written out from the documented rules: an alias or
/// account id of lower-case letters, digits and dashes (any case typed), a region of dash-joined
/// lower-case words ending in a number.
fn near_of(w: &str) -> Option<Near> {
    let (a, r) = match w.find('/') {
        Some(i) => (&w[..i], Some(&w[i + 1..])),
        None => (w, None),
    };
    let a = a.to_ascii_lowercase();
    if a.is_empty()
        || a.len() > 32
        || !a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return None;
    }
    let region = match r {
        None => None,
        Some(r) => {
            let parts: Vec<&str> = r.split('-').collect();
            let (last, words) = parts.split_last()?;
            let ok = r.len() <= 25
                && words.len() >= 2
                && !last.is_empty()
                && last.len() <= 2
                && last.chars().all(|c| c.is_ascii_digit())
                && words
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()));
            if !ok {
                return None;
            }
            Some(r.to_owned())
        }
    };
    Some(Near { account: a, region })
}

/// The grammar of SPEC §3.2 over whitespace-separated words; `core` is the text without its
/// surrounding whitespace (what a mistake echoes).
fn expected_command(words: &[&str], core: &str) -> Result<Command, Mistake> {
    let first = words.first().map(|w| w.to_ascii_lowercase());
    let unknown = || Err(Mistake::Unknown(shorten(core)));
    match (first.as_deref(), words) {
        (None, _) => Ok(Command::Mint {
            scope: None,
            lifetime: None,
            near: None,
        }),
        (Some("help"), [_]) => Ok(Command::Help),
        (Some("list"), [_]) => Ok(Command::List),
        (Some("revoke"), [_, t]) if t.eq_ignore_ascii_case("all") => {
            Ok(Command::Revoke(RevokeTarget::All))
        }
        (Some("revoke"), [_, t]) if is_short_id(t) => Ok(Command::Revoke(RevokeTarget::One(
            ShortId::parse(t).ok_or_else(|| Mistake::BadRevoke("model".into()))?,
        ))),
        (Some("revoke"), [_, t]) => Err(Mistake::BadRevoke(shorten(t))),
        (Some("revoke"), [_, rest @ ..]) => Err(Mistake::BadRevoke(shorten(&rest.join(" ")))),
        (Some(f), [id, rest @ ..]) if f.starts_with("i-") => {
            if !is_instance_id(id) {
                return Err(Mistake::BadInstanceId(shorten(id)));
            }
            let life = |l: &str| lifetime_of(l).ok_or_else(|| Mistake::BadLifetime(shorten(l)));
            let place = |w: &str| near_of(w).ok_or_else(|| Mistake::BadPlace(shorten(w)));
            let is_in = |w: &str| w.eq_ignore_ascii_case("in");
            let (lifetime, near) = match rest {
                [] => (None, None),
                [w] if is_in(w) => return Err(Mistake::BadPlace(String::new())),
                [l] => (Some(life(l)?), None),
                [w, p] if is_in(w) => (None, Some(place(p)?)),
                [l, w, p] | [w, p, l] if is_in(w) => (Some(life(l)?), Some(place(p)?)),
                _ => return unknown(),
            };
            Ok(Command::Mint {
                scope: InstanceId::parse(id),
                lifetime,
                near,
            })
        }
        (Some(_), [l]) if lifetime_of(l).is_some() => Ok(Command::Mint {
            scope: None,
            lifetime: lifetime_of(l),
            near: None,
        }),
        (Some(_), _) => unknown(),
    }
}

/// Changes the case of ASCII letters where the mask says so.
fn recase(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn instance_id() -> impl Strategy<Value = String> {
    prop_oneof!["i-[0-9a-f]{8}", "i-[0-9a-f]{17}"]
}

fn short_id() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(ALPHABET.to_vec()), 8)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A valid lifetime, sometimes zero-padded (still at most six digits).
fn lifetime_word() -> impl Strategy<Value = String> {
    (1u64..=999_999, "[smhdSMHD]", 0usize..3).prop_map(|(n, u, zeros)| {
        let n = n.to_string();
        let zeros = zeros.min(6 - n.len());
        format!("{}{n}{u}", "0".repeat(zeros))
    })
}

/// One word of a command: keywords in any case, ids right and wrong, lifetimes right and wrong,
/// and anything without white space.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (proptest::sample::select(vec!["help", "list", "revoke", "all"]), any::<u64>())
            .prop_map(|(k, mask)| recase(k, mask)),
        3 => instance_id(),
        1 => "[iI]-[0-9a-fA-Fg-z\u{e9}]{0,20}",
        2 => lifetime_word(),
        1 => "[0-9]{0,8}[smhdwSMHDyé5]{1,2}",
        2 => (short_id(), any::<u64>()).prop_map(|(s, mask)| recase(&s, mask)),
        1 => "[0-9a-zA-Z!<>&@`*_~]{1,12}",
        1 => any::<String>().prop_map(|s| s.chars().filter(|c| !c.is_whitespace()).collect::<String>())
            .prop_filter("a word", |w| !w.is_empty()),
    ]
}

/// White space as Slack may pass it: spaces, tabs, newlines, and Unicode spaces.
fn gap() -> impl Strategy<Value = String> {
    "[ \t\n\r\u{a0}\u{2003}\u{3000}]{1,3}"
}

/// Words joined by white space, with optional white space around them.
fn command_text() -> impl Strategy<Value = (Vec<String>, String, String)> {
    proptest::collection::vec(word(), 0..5).prop_flat_map(|words| {
        let n = words.len();
        (
            Just(words),
            proptest::collection::vec(gap(), n.saturating_sub(1)),
            "[ \t\n]{0,2}",
            "[ \t\n\u{3000}]{0,2}",
        )
            .prop_map(|(words, gaps, lead, trail)| {
                let mut core = String::new();
                for (i, w) in words.iter().enumerate() {
                    if i > 0 {
                        core.push_str(&gaps[i - 1]);
                    }
                    core.push_str(w);
                }
                let text = format!("{lead}{core}{trail}");
                (words, core, text)
            })
    })
}

#[test]
fn generated_command_texts_parse_as_the_grammar_says() {
    check(
        "command::parse: word sequences follow the SPEC §3.2 grammar",
        command_text(),
        |(words, core, text)| {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let got = command::parse(&text);
            outcome(label(&got));
            prop_assert_eq!(got, expected_command(&words, &core));
            Ok(())
        },
    );
}

#[test]
fn any_text_parses_to_a_command_or_a_usage_mistake() {
    let texts = prop_oneof![
        any::<String>(),
        "[ i\\-0-9a-fA-FsmhdSMHD\t\n\u{a0}\u{3000}\u{e9}\u{1f600}revokalstp]{0,60}",
        proptest::collection::vec(any::<char>(), 0..400).prop_map(String::from_iter),
    ];
    check(
        "command::parse: arbitrary text never panics; mistakes are the documented ones",
        texts,
        |text| {
            let got = command::parse(&text);
            outcome(label(&got));
            let words: Vec<&str> = text.split_whitespace().collect();
            prop_assert_eq!(&got, &expected_command(&words, text.trim()));
            match got {
                Ok(_) => {}
                Err(
                    Mistake::Unknown(echo)
                    | Mistake::BadInstanceId(echo)
                    | Mistake::BadLifetime(echo)
                    | Mistake::BadRevoke(echo),
                ) => prop_assert!(echo.chars().count() <= 41, "echo too long: {}", echo),
                Err(other) => {
                    return Err(TestCaseError::fail(format!(
                        "parse never decides {other:?}: configuration does"
                    )));
                }
            }
            Ok(())
        },
    );
}

/// A command to type, with how to type it.
#[derive(Debug, Clone)]
enum Typed {
    Mint(Option<String>, Option<(u64, char)>),
    Help(u64),
    List(u64),
    RevokeAll(u64, u64),
    RevokeOne(u64, String, u64),
}

fn typed_command() -> impl Strategy<Value = Typed> {
    let unit = proptest::sample::select(vec!['s', 'm', 'h', 'd', 'S', 'M', 'H', 'D']);
    prop_oneof![
        4 => (proptest::option::of(instance_id()), proptest::option::of((1u64..=999_999, unit)))
            .prop_map(|(id, l)| Typed::Mint(id, l)),
        1 => any::<u64>().prop_map(Typed::Help),
        1 => any::<u64>().prop_map(Typed::List),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Typed::RevokeAll(a, b)),
        2 => (any::<u64>(), short_id(), any::<u64>()).prop_map(|(a, s, b)| Typed::RevokeOne(a, s, b)),
    ]
}

#[test]
fn valid_commands_in_any_case_and_spacing_parse_to_what_was_typed() {
    check(
        "command::parse: valid commands round-trip through any case and white space",
        (typed_command(), gap(), "[ \t\n]{0,2}", "[ \t\n]{0,2}"),
        |(typed, gap, lead, trail)| {
            let (words, want) = match typed {
                Typed::Mint(id, l) => {
                    let lifetime = l.map(|(n, u)| {
                        let unit = match u.to_ascii_lowercase() {
                            's' => 1,
                            'm' => 60,
                            'h' => 3600,
                            _ => 86_400,
                        };
                        Duration::from_secs(n * unit)
                    });
                    let words: Vec<String> = id
                        .iter()
                        .cloned()
                        .chain(l.map(|(n, u)| format!("{n}{u}")))
                        .collect();
                    let scope = id.as_deref().and_then(InstanceId::parse);
                    (
                        words,
                        Command::Mint {
                            scope,
                            lifetime,
                            near: None,
                        },
                    )
                }
                Typed::Help(m) => (vec![recase("help", m)], Command::Help),
                Typed::List(m) => (vec![recase("list", m)], Command::List),
                Typed::RevokeAll(a, b) => (
                    vec![recase("revoke", a), recase("all", b)],
                    Command::Revoke(RevokeTarget::All),
                ),
                Typed::RevokeOne(a, s, b) => {
                    let id = ShortId::parse(&s)
                        .ok_or_else(|| TestCaseError::fail(format!("{s} is a short id")))?;
                    (
                        vec![recase("revoke", a), recase(&s, b)],
                        Command::Revoke(RevokeTarget::One(id)),
                    )
                }
            };
            let text = format!("{lead}{}{trail}", words.join(&gap));
            outcome(variant(&want));
            prop_assert_eq!(command::parse(&text), Ok(want));
            Ok(())
        },
    );
}

#[test]
fn a_requested_lifetime_is_granted_exactly_within_the_configured_bounds() {
    let bounds = (1u64..=100_000, 0u64..=100_000, 0u64..=100_000).prop_map(|(min, a, b)| {
        let (d, max) = (min + a.min(b), min + a.max(b));
        Lifetimes {
            default: Duration::from_secs(d),
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
        }
    });
    check(
        "command::choose_lifetime: inside [min, max] granted, outside named",
        (bounds, proptest::option::of(0u64..=300_000)),
        |(bounds, requested)| {
            let requested = requested.map(Duration::from_secs);
            let want = match requested {
                None => Ok(bounds.default),
                Some(d) if bounds.min <= d && d <= bounds.max => Ok(d),
                Some(d) => Err(Mistake::LifetimeOutOfBounds(d)),
            };
            outcome(match (&want, requested) {
                (Ok(_), None) => "default",
                (Ok(_), Some(_)) => "granted",
                (Err(_), _) => "out of bounds",
            });
            prop_assert_eq!(choose_lifetime(requested, &bounds), want);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// mrkdwn escaping of echoed text and tags
// ---------------------------------------------------------------------------------------------

#[test]
fn escaped_text_cannot_mention_link_or_break_out_of_a_code_span() {
    let texts = prop_oneof![
        "[<>&!@#`\n\r a-z|^]{0,40}",
        Just("<!channel> &amp; <@U123|x> `code`\nline".to_owned()),
        any::<String>(),
    ];
    check(
        "answer::escape: no <, >, backtick or line break survives; & is an entity",
        texts,
        |s| {
            let e = escape(&s);
            prop_assert!(!e.contains(['<', '>', '`', '\n', '\r']), "{}", e);
            for (i, _) in e.match_indices('&') {
                let rest = &e[i..];
                prop_assert!(
                    ["&amp;", "&lt;", "&gt;"]
                        .iter()
                        .any(|ent| rest.starts_with(ent)),
                    "bare & in {}",
                    e
                );
            }
            let back = e
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            prop_assert_eq!(back, s.replace(['\n', '\r', '`'], " "));
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The whole request path (`Issuer::handle_http`)
// ---------------------------------------------------------------------------------------------

const SECRET: &str = "property-test-secret";
const NOW: i64 = 1_795_255_200;

/// EC2 that knows every instance, under any name.
struct AnyInstance(String);

impl InstanceDirectory for AnyInstance {
    async fn describe(&self, _: &InstanceId) -> Result<Option<InstanceInfo>, DirectoryError> {
        Ok(Some(InstanceInfo {
            name: Some(self.0.clone()),
            state: "stopped".into(),
            place: None,
        }))
    }
}

fn issuer(
    name: String,
    allow_unscoped: bool,
) -> Issuer<MemoryStore, AnyInstance, FixedClock, issuer::chat::HttpChat> {
    Issuer {
        config: IssuerConfig {
            table: "t".into(),
            signing_secret: SecretSource {
                secret_id: "ec2pass-slack-signing-secret".into(),
            },
            mattermost_token: None,
            reply_key: None,
            lifetimes: Lifetimes {
                default: Duration::from_secs(900),
                min: Duration::from_secs(300),
                max: Duration::from_secs(7200),
            },
            allow: AllowLists::default(),
            allow_unscoped,
            rate_limit_per_hour: 1000,
            hub: None,
            account_users: Vec::new(),
            reply_origins: Vec::new(),
        },
        secret: SigningSecret::new(SECRET),
        mattermost: None,
        replies: None,
        chat: issuer::chat::HttpChat::new().expect("an HTTP client"),
        store: MemoryStore::new(),
        directory: AnyInstance(name),
        clock: FixedClock(UnixTime(NOW)),
    }
}

/// How a header is sent over HTTP: not at all, once, twice, or once with bytes that are not
/// visible ASCII.
#[derive(Debug, Clone)]
enum Wire {
    Absent,
    Once(String),
    Twice(String, String),
    Opaque(Vec<u8>),
}

/// The request body: a slash command (with text people type), the certificate check, or bytes.
#[derive(Debug, Clone)]
enum Payload {
    Command(Vec<Pair>),
    SslCheck,
    Bytes(Vec<u8>),
    Huge(usize),
}

/// The signature header: right for the body, or given.
#[derive(Debug, Clone)]
enum WireSig {
    Right,
    Given(Wire),
}

fn wire(value: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Wire> {
    prop_oneof![
        1 => Just(Wire::Absent),
        8 => value.clone().prop_map(Wire::Once),
        1 => (value.clone(), value).prop_map(|(a, b)| Wire::Twice(a, b)),
        1 => proptest::collection::vec(
            prop_oneof![0x80u8..=0xff, Just(b'\t'), 0x20u8..0x7f], 1..20
        ).prop_map(Wire::Opaque),
    ]
}

fn http_request() -> impl Strategy<Value = (String, Wire, Wire, WireSig, Payload, String, bool)> {
    let methods = prop_oneof![
        6 => Just("POST".to_owned()),
        1 => Just("post".to_owned()),
        1 => Just("GET".to_owned()),
        1 => "[A-Z]{1,7}",
    ];
    let content_types = prop_oneof![
        6 => Just("application/x-www-form-urlencoded".to_owned()),
        1 => Just("Application/X-WWW-Form-Urlencoded; charset=utf-8".to_owned()),
        1 => Just("application/json".to_owned()),
        1 => "[a-z/;= -]{0,30}",
    ];
    let timestamps = prop_oneof![
        6 => Just(NOW.to_string()),
        1 => (-400i64..=400).prop_map(|s| (NOW + s).to_string()),
        1 => "[ -~]{0,16}",
    ];
    let signatures = prop_oneof![
        6 => Just(WireSig::Right),
        1 => wire(signature_text()).prop_map(WireSig::Given),
    ];
    let bodies = prop_oneof![
        8 => slack_pairs().prop_map(Payload::Command),
        1 => Just(Payload::SslCheck),
        1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Payload::Bytes),
        1 => (MAX_BODY_BYTES + 1..=MAX_BODY_BYTES + 100).prop_map(Payload::Huge),
    ];
    let names = prop_oneof![
        Just("web-prod".to_owned()),
        Just("<!channel> & `x`\n*bold*".to_owned()),
        any::<String>(),
    ];
    (
        methods,
        wire(content_types),
        wire(timestamps),
        signatures,
        bodies,
        names,
        any::<bool>(),
    )
}

/// Every string in a JSON value.
fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::Object(o) => o.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

fn header_values(w: &Wire) -> Vec<lambda_http::http::HeaderValue> {
    use lambda_http::http::HeaderValue as Hv;
    let text = |s: &str| Hv::from_bytes(s.as_bytes()).ok();
    match w {
        Wire::Absent => Vec::new(),
        Wire::Once(a) => text(a).into_iter().collect(),
        Wire::Twice(a, b) => text(a).into_iter().chain(text(b)).collect(),
        Wire::Opaque(bytes) => Hv::from_bytes(bytes).ok().into_iter().collect(),
    }
}

/// The header as the issuer reads it: absent, once (text, or U+FFFD for other bytes), repeated.
fn as_header(values: &[lambda_http::http::HeaderValue]) -> Header {
    match values {
        [] => Header::Absent,
        [v] => Header::Once(v.to_str().unwrap_or("\u{fffd}").to_owned()),
        _ => Header::Repeated,
    }
}

#[test]
fn every_http_request_gets_the_documented_status_and_nothing_leaks_or_is_minted_by_a_refusal() {
    // With timers, as in the Lambda: every request is answered within the handler's deadline.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("a tokio runtime: {e}"));
    check(
        "handle_http: status is 405/415/413/200-empty/401/200-ephemeral as documented",
        http_request(),
        |(method, ct, ts, sig, body, name, allow_unscoped)| {
            let body = match body {
                Payload::Command(pairs) => body_of(&pairs),
                Payload::SslCheck => b"ssl_check=1&token=legacy".to_vec(),
                Payload::Bytes(b) => b,
                Payload::Huge(n) => vec![b'a'; n],
            };
            let ct_values = header_values(&ct);
            let ts_values = header_values(&ts);
            let sig_values = match &sig {
                WireSig::Right => {
                    let t = ts_values
                        .first()
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    header_values(&Wire::Once(sign(&SigningSecret::new(SECRET), t, &body)))
                }
                WireSig::Given(w) => header_values(w),
            };
            let mut builder = lambda_http::http::Request::builder()
                .method(method.as_str())
                .uri("/");
            for (name, values) in [
                ("content-type", &ct_values),
                ("x-slack-request-timestamp", &ts_values),
                ("x-slack-signature", &sig_values),
            ] {
                for v in values {
                    builder = builder.header(name, v.clone());
                }
            }
            let request = builder
                .body(lambda_http::Body::Binary(body.clone()))
                .map_err(|e| TestCaseError::fail(format!("request: {e}")))?;

            // What the documented path says: shape (405/415/413), then the certificate check
            // (200, empty), then the signature (401, empty), then an ephemeral answer (200).
            let (ct_h, ts_h, sig_h) = (
                as_header(&ct_values),
                as_header(&ts_values),
                as_header(&sig_values),
            );
            let shape = expected_shape(&method, &ct_h, body.len());
            let signed = expected_verify(SECRET, &ts_h, &sig_h, &body, NOW).is_ok();
            let want: (u16, bool) = match shape {
                Err(s) => (s.status(), false),
                Ok(()) if parse_form(&body) == Ok(Form::SslCheck) => (200, false),
                Ok(()) if !signed => (401, false),
                Ok(()) => (200, true),
            };

            let issuer = issuer(name, allow_unscoped);
            let response = runtime.block_on(issuer.handle_http(request));
            let status = response.status().as_u16();
            let answer: Option<Value> = match response.body() {
                lambda_http::Body::Empty => None,
                lambda_http::Body::Text(t) => serde_json::from_str(t).ok(),
                lambda_http::Body::Binary(b) => serde_json::from_slice(b).ok(),
                _ => None,
            };
            outcome(format!(
                "{status}{}",
                if answer.is_some() { " json" } else { " empty" }
            ));
            prop_assert_eq!((status, answer.is_some()), want, "{:?}", answer);
            if let Some(answer) = &answer {
                prop_assert!(answer["response_type"] == "ephemeral");
                prop_assert!(answer["text"].is_string());
                // Nothing from outside can mention, link or format: every `<` is ours
                // (Slack's date formatting of the expiry).
                for s in strings(answer) {
                    for (i, _) in s.match_indices('<') {
                        prop_assert!(s[i..].starts_with("<!date^"), "unescaped < in {}", s);
                    }
                }
            } else {
                prop_assert!(issuer.store.records().is_empty(), "a refusal minted");
            }
            Ok(())
        },
    );
}
