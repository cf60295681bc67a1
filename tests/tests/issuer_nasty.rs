//! A table of hand-written nasty requests against the real `issuer` binary under
//! `cargo lambda watch` (backed by moto): each with the status SPEC §3 documents, none a 5xx,
//! and the process still serving afterwards.
//!
//! Every case runs, whatever the others do; mismatches are collected and reported together,
//! and the whole table is printed with its outcomes (`cargo test --test issuer_nasty --
//! --nocapture`). Requests are signed correctly wherever the case is about something other than
//! the signature.
//!
//! Two things `cargo lambda watch` cannot carry to the function (it builds the function URL
//! event with `aws_lambda_events`, whose header serializer keeps only the first value of a
//! repeated header and fails on a value that is not UTF-8, answering 500 itself):
//! - repeated headers reach the product as their first value only. AWS function URLs join them
//!   with commas instead, so the table sends that joined form too (strictly 401); the raw
//!   repeats are in the table where the first value decides either way, and the product's own
//!   handling of a repeated header is checked in-process by the second test here;
//! - header values that are not UTF-8 never reach the product under the emulator, so they are
//!   checked in-process only.

use ec2pass_shared::config::SigningSecret;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::time::SystemClock;
use ec2pass_tests::{
    Answer, Local, Slack, SlashCommand, launch_instance, local_issuer, now, password_in, scan_all,
    unique,
};
use issuer::request::{Incoming, MAX_BODY_BYTES};
use issuer::verify::sign;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

const FORM: &str = "application/x-www-form-urlencoded";
const TS: &str = "x-slack-request-timestamp";
const SIG: &str = "x-slack-signature";
const CT: &str = "content-type";
/// One more character than an echo of the text may have (the issuer cuts it at 40).
const X41: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// `cargo lambda watch` answers every OPTIONS request itself, with permissive CORS headers and no
/// body; the deployed function URL configures no CORS, so there OPTIONS reaches the function.
const OPTIONS_UNDER_EMULATOR: &str =
    "the emulator answers OPTIONS itself (the deployed URL has no CORS, so AWS passes it on)";

/// What a case must get back.
#[derive(Clone, Copy, Debug)]
struct Expect {
    /// The documented status.
    status: u16,
    /// For the rows `cargo lambda watch` decides before the product sees them (see the module
    /// comment): the status it gives instead, and why.
    or_under_emulator: Option<(u16, &'static str)>,
    /// A fragment the answer's text must contain.
    says: Option<&'static str>,
    /// A fragment the answer must not contain.
    never: Option<&'static str>,
    /// Whether the answer carries a password (`false`: it must not).
    password: bool,
}

/// A bare refusal: this status, no body.
const fn bare(status: u16) -> Expect {
    Expect {
        status,
        or_under_emulator: None,
        says: None,
        never: None,
        password: false,
    }
}

/// A 200 ephemeral explanation containing `says`, no password.
const fn explains(says: &'static str) -> Expect {
    Expect {
        status: 200,
        or_under_emulator: None,
        says: Some(says),
        never: None,
        password: false,
    }
}

/// A 200 ephemeral answer with a password.
const MINTED: Expect = Expect {
    status: 200,
    or_under_emulator: None,
    says: Some("Auth"),
    never: None,
    password: true,
};

impl Expect {
    const fn never(mut self, fragment: &'static str) -> Self {
        self.never = Some(fragment);
        self
    }

    const fn or_under_emulator(mut self, status: u16, why: &'static str) -> Self {
        self.or_under_emulator = Some((status, why));
        self
    }
}

/// A request, as bytes and headers on the wire.
#[derive(Clone, Debug)]
struct Req {
    method: Method,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Req {
    /// A form POST signed correctly at `ts`.
    fn signed_at(ts: i64, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let ts = ts.to_string();
        let sig = sign(&Local::load().signing_secret(), &ts, &body);
        Self {
            method: Method::POST,
            headers: vec![(CT, FORM.to_owned()), (TS, ts), (SIG, sig)],
            body,
        }
    }

    /// A form POST signed correctly now.
    fn signed(body: impl Into<Vec<u8>>) -> Self {
        Self::signed_at(now(), body)
    }

    /// A POST with exactly these headers.
    fn raw(headers: &[(&'static str, &str)], body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: Method::POST,
            headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            body: body.into(),
        }
    }

    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }

    /// This request's value of a header (its first).
    fn get(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Without a header.
    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| *k != name);
        self
    }

    /// With a header replaced.
    fn set(self, name: &'static str, value: &str) -> Self {
        let mut r = self.without(name);
        r.headers.push((name, value.to_owned()));
        r
    }

    /// With a header sent twice: `first`, then `second`.
    fn twice(self, name: &'static str, first: &str, second: &str) -> Self {
        let mut r = self.without(name);
        r.headers.push((name, first.to_owned()));
        r.headers.push((name, second.to_owned()));
        r
    }

    /// With the body changed after signing.
    fn tampered(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// One row of the table.
struct Case {
    name: &'static str,
    req: Req,
    expect: Expect,
}

fn case(name: &'static str, req: Req, expect: Expect) -> Case {
    Case { name, req, expect }
}

/// A form body from a fresh user of this run's team (so no case meets the rate limit).
fn form(team: &str, text: &str) -> String {
    SlashCommand::new(team, &unique("U"), text).body()
}

/// A form body without one field.
fn without_field(body: &str, field: &str) -> String {
    body.split('&')
        .filter(|pair| pair.split('=').next() != Some(field))
        .collect::<Vec<_>>()
        .join("&")
}

/// Standard base64 (RFC 4648, padded), for the double-encoding case.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The table. `id` is a running instance in moto, `team` this run's workspace.
fn table(id: &InstanceId, team: &str) -> Vec<Case> {
    let secret = Local::load().signing_secret();
    let mint = || form(team, id.as_str());
    let mint_30m = || form(team, &format!("{id} 30m"));
    let t = now();

    // A body of exactly the limit: a valid command padded with an extra field.
    let mut at_limit = mint();
    at_limit.push_str("&pad=");
    let pad = MAX_BODY_BYTES.saturating_sub(at_limit.len());
    at_limit.push_str(&"a".repeat(pad));
    assert_eq!(at_limit.len(), MAX_BODY_BYTES);
    let over_limit = format!("{at_limit}a");
    let mebibyte = format!("{}&pad={}", mint(), "a".repeat(1024 * 1024));

    // Two signed variants of the same request: one right, one for a different body.
    let dup_body = mint();
    let good = Req::signed(dup_body.clone());
    let right = good.get(SIG);
    let wrong = sign(&secret, &good.get(TS), b"something else");

    // A request used once, then replayed.
    let used = Req::signed(mint());
    let used_text = String::from_utf8_lossy(&used.body).into_owned();
    let trigger = used_text
        .split('&')
        .find_map(|p| p.strip_prefix("trigger_id="))
        .unwrap_or_default()
        .to_owned();
    let replay_other_text = format!(
        "{}&trigger_id={trigger}",
        without_field(&mint_30m(), "trigger_id")
    );

    let upper_hex = {
        let r = Req::signed(mint());
        let sig = r.get(SIG);
        let upper = format!("v0={}", sig.trim_start_matches("v0=").to_uppercase());
        r.set(SIG, &upper)
    };
    let non_utf8_text = {
        let mut b = without_field(&mint(), "text").into_bytes();
        b.extend_from_slice(b"&text=\xff\xfe\xc3\x28");
        b
    };
    let binary: Vec<u8> = (0..=255u8).rev().collect();

    vec![
        // Encodings of the text: what Slack sends, and what people type
        case(
            "text, spaces as `+` (as Slack encodes)",
            Req::signed(mint_30m()),
            MINTED,
        ),
        case(
            "text, spaces as `%20`",
            Req::signed(mint_30m().replace('+', "%20")),
            MINTED,
        ),
        case(
            "text, a literal `+` (`%2B`) between id and lifetime",
            Req::signed(form(team, &format!("{id}+30m"))),
            explains("is not an instance id"),
        ),
        case(
            "text, id then NBSP then lifetime",
            Req::signed(form(team, &format!("{id}\u{a0}30m"))),
            MINTED,
        ),
        case(
            "text, id then newline then lifetime",
            Req::signed(form(team, &format!("{id}\n30m"))),
            MINTED,
        ),
        case(
            "text, id with an ellipsis character",
            Req::signed(form(team, "i-0abc\u{2026}")),
            explains("is not an instance id"),
        ),
        case(
            "text, id in full-width digits",
            Req::signed(form(
                team,
                "i-\u{ff10}\u{ff11}\u{ff12}\u{ff13}\u{ff14}\u{ff15}\u{ff16}\u{ff17}",
            )),
            explains("is not an instance id"),
        ),
        case(
            "text, id with a zero-width space",
            Req::signed(form(
                team,
                &format!("{}\u{200b}{}", &id.as_str()[..6], &id.as_str()[6..]),
            )),
            explains("is not an instance id"),
        ),
        case(
            "text, upper-case id",
            Req::signed(form(team, &id.as_str().to_uppercase())),
            explains("is not an instance id"),
        ),
        case(
            "text, emoji",
            Req::signed(form(team, "\u{1f680} please")),
            explains("I don't understand"),
        ),
        case(
            "text, NUL byte",
            Req::signed(form(team, "\0")),
            explains("I don't understand"),
        ),
        case(
            "text, 6000 characters (echo is cut)",
            Req::signed(form(team, &"x".repeat(6000))),
            explains("\u{2026}").never(X41),
        ),
        case(
            "text, Slack mention markup is escaped",
            Req::signed(form(team, "<!channel> hi")),
            explains("&lt;!channel&gt;").never("<!channel>"),
        ),
        case(
            "text, smuggled `&user_id=` inside the value",
            Req::signed(form(team, &format!("{id} 30m&user_id=U0ADMIN"))),
            explains("is not a lifetime"),
        ),
        case(
            "text, lifetime out of bounds",
            Req::signed(form(team, &format!("{id} 99h"))),
            explains("is not allowed here"),
        ),
        // Fields
        case(
            "missing `command`",
            Req::signed(without_field(&mint(), "command")),
            explains("could not read"),
        ),
        case(
            "missing `text` (unscoped, not allowed here)",
            Req::signed(without_field(&mint(), "text")),
            explains("must name an instance"),
        ),
        case(
            "missing `user_id`",
            Req::signed(without_field(&mint(), "user_id")),
            explains("could not read"),
        ),
        case(
            "missing `team_id`",
            Req::signed(without_field(&mint(), "team_id")),
            explains("could not read"),
        ),
        case(
            "missing `trigger_id`",
            Req::signed(without_field(&mint(), "trigger_id")),
            explains("could not read"),
        ),
        case(
            "missing `channel_id`",
            Req::signed(without_field(&mint(), "channel_id")),
            explains("could not read"),
        ),
        case(
            "empty `user_id`",
            Req::signed(mint().replace("user_id=U", "user_id=&x=U")),
            explains("could not read"),
        ),
        case(
            "`user_id` twice",
            Req::signed(format!("{}&user_id=U0OTHER", mint())),
            explains("could not read"),
        ),
        case(
            "`trigger_id` twice",
            Req::signed(format!("{}&trigger_id=again", mint())),
            explains("could not read"),
        ),
        // Signature headers
        case(
            "no signature headers at all",
            Req::signed(mint()).without(TS).without(SIG),
            bare(401),
        ),
        case(
            "missing timestamp header",
            Req::signed(mint()).without(TS),
            bare(401),
        ),
        case(
            "missing signature header",
            Req::signed(mint()).without(SIG),
            bare(401),
        ),
        case(
            "empty signature header",
            Req::signed(mint()).set(SIG, ""),
            bare(401),
        ),
        case(
            "timestamp skewed +6 min (signed)",
            Req::signed_at(t + 360, mint()),
            bare(401),
        ),
        case(
            "timestamp skewed -6 min (signed)",
            Req::signed_at(t - 360, mint()),
            bare(401),
        ),
        case(
            "timestamp skewed -4 min (signed, inside the window)",
            Req::signed_at(t - 240, mint()),
            MINTED,
        ),
        case(
            "timestamp in milliseconds (signed)",
            Req::signed_at(t * 1000, mint()),
            bare(401),
        ),
        case(
            "timestamp with a fraction (signed)",
            {
                let b = mint();
                let ts = format!("{t}.0");
                let sig = sign(&secret, &ts, b.as_bytes());
                Req::signed(b).set(TS, &ts).set(SIG, &sig)
            },
            bare(401),
        ),
        case(
            "signature `v1=`",
            {
                let r = Req::signed(mint());
                let s = r.get(SIG).replace("v0=", "v1=");
                r.set(SIG, &s)
            },
            bare(401),
        ),
        case(
            "signature with another secret",
            {
                let b = mint();
                let s = sign(&SigningSecret::new("guess"), &t.to_string(), b.as_bytes());
                Req::signed(b).set(TS, &t.to_string()).set(SIG, &s)
            },
            bare(401),
        ),
        case("signature in upper-case hex", upper_hex, MINTED),
        case(
            "body changed after signing",
            Req::signed(mint()).tampered(mint()),
            bare(401),
        ),
        case(
            "signature header twice, right then wrong (AWS joins: `right,wrong`)",
            good.clone().set(SIG, &format!("{right},{wrong}")),
            bare(401),
        ),
        case(
            "signature header twice, wrong then right (AWS joins: `wrong,right`)",
            good.clone().set(SIG, &format!("{wrong},{right}")),
            bare(401),
        ),
        case(
            "signature header twice, raw, wrong first",
            good.clone().twice(SIG, &wrong, &right),
            bare(401),
        ),
        case(
            "signature header twice, raw, right first",
            good.clone().twice(SIG, &right, &wrong),
            bare(401).or_under_emulator(200, "the emulator passes on the first header only"),
        ),
        case(
            "timestamp header twice (AWS joins: `t,t`)",
            good.clone().set(TS, &format!("{t},{t}", t = good.get(TS))),
            bare(401),
        ),
        case(
            "timestamp header twice, raw, stale first",
            good.clone()
                .twice(TS, &(t - 600).to_string(), &good.get(TS)),
            bare(401),
        ),
        // Replays
        case("a fresh request (replayed below)", used.clone(), MINTED),
        case(
            "replay: identical bytes and headers",
            used.clone(),
            explains("already answered"),
        ),
        case(
            "replay: same trigger_id, re-signed later",
            Req::signed(used.body.clone()),
            explains("already answered"),
        ),
        case(
            "replay: same trigger_id, other text",
            Req::signed(replay_other_text),
            explains("already answered"),
        ),
        // Sizes
        case(
            "body of exactly the limit (8 KiB, signed)",
            Req::signed(at_limit),
            MINTED,
        ),
        case(
            "body one byte over the limit (signed)",
            Req::signed(over_limit),
            bare(413),
        ),
        case("body of 1 MiB (signed)", Req::signed(mebibyte), bare(413)),
        // Content types
        case(
            "content type application/json (signed form)",
            Req::signed(mint()).set(CT, "application/json"),
            bare(415),
        ),
        case(
            "content type text/plain (signed form)",
            Req::signed(mint()).set(CT, "text/plain"),
            bare(415),
        ),
        case(
            "content type multipart/form-data (signed form)",
            Req::signed(mint()).set(CT, "multipart/form-data; boundary=x"),
            bare(415),
        ),
        case(
            "content type missing (signed form)",
            Req::signed(mint()).without(CT),
            bare(415),
        ),
        case(
            "content type with a suffix (signed form)",
            Req::signed(mint()).set(CT, "application/x-www-form-urlencoded-evil"),
            bare(415),
        ),
        case(
            "content type joined with another (AWS joins repeats)",
            Req::signed(mint()).set(CT, &format!("application/json,{FORM}")),
            bare(415),
        ),
        case(
            "content type repeated, raw, JSON first",
            Req::signed(mint()).twice(CT, "application/json", FORM),
            bare(415),
        ),
        case(
            "content type with charset",
            Req::signed(mint()).set(CT, "application/x-www-form-urlencoded; charset=utf-8"),
            MINTED,
        ),
        case(
            "content type in upper case",
            Req::signed(mint()).set(CT, "APPLICATION/X-WWW-FORM-URLENCODED"),
            MINTED,
        ),
        // Methods
        case(
            "GET, no body",
            Req::raw(&[], Vec::new()).method(Method::GET),
            bare(405),
        ),
        case(
            "GET with a signed form body",
            Req::signed(mint()).method(Method::GET),
            bare(405),
        ),
        case(
            "PUT with a signed form body",
            Req::signed(mint()).method(Method::PUT),
            bare(405),
        ),
        case(
            "DELETE",
            Req::signed(mint()).method(Method::DELETE),
            bare(405),
        ),
        case(
            "PATCH with a signed form body",
            Req::signed(mint()).method(Method::PATCH),
            bare(405),
        ),
        case(
            "HEAD",
            Req::raw(&[], Vec::new()).method(Method::HEAD),
            bare(405),
        ),
        case(
            "OPTIONS (a CORS preflight)",
            Req::raw(
                &[
                    ("origin", "https://evil.example"),
                    ("access-control-request-method", "POST"),
                ],
                Vec::new(),
            )
            .method(Method::OPTIONS),
            bare(405).or_under_emulator(200, OPTIONS_UNDER_EMULATOR),
        ),
        case(
            "OPTIONS, plain",
            Req::raw(&[], Vec::new()).method(Method::OPTIONS),
            bare(405).or_under_emulator(200, OPTIONS_UNDER_EMULATOR),
        ),
        // Bodies
        case(
            "empty body, signed",
            Req::signed(Vec::new()),
            explains("could not read"),
        ),
        case(
            "empty body, unsigned",
            Req::raw(&[(CT, FORM)], Vec::new()),
            bare(401),
        ),
        case(
            "non-UTF-8 bytes in the text, signed",
            Req::signed(non_utf8_text),
            explains("I don't understand"),
        ),
        case(
            "invalid percent escapes in the text, signed",
            Req::signed(format!(
                "{}&text=%ff%E2%82%zz%",
                without_field(&mint(), "text")
            )),
            explains("I don't understand"),
        ),
        case(
            "binary garbage, signed",
            Req::signed(binary),
            explains("could not read"),
        ),
        case(
            "base64 of a valid form, signed as is",
            Req::signed(base64(mint().as_bytes())),
            explains("could not read"),
        ),
        case(
            "ssl_check, unsigned",
            Req::raw(&[(CT, FORM)], "ssl_check=1&token=legacy"),
            bare(200),
        ),
        case(
            "ssl_check with a command, unsigned",
            Req::raw(&[(CT, FORM)], format!("ssl_check=1&{}", mint())),
            bare(401),
        ),
    ]
}

/// The answer's words: its fallback text, or the raw body.
fn words(a: &Answer) -> String {
    if a.json.is_some() {
        a.text().to_owned()
    } else {
        a.raw.clone()
    }
}

/// What is wrong with an answer, if anything.
fn judge(expect: &Expect, a: &Answer) -> Vec<String> {
    let mut wrong = Vec::new();
    let alternative = expect.or_under_emulator.map(|(status, _)| status);
    if a.status != expect.status && alternative != Some(a.status) {
        wrong.push(format!("status {} (expected {})", a.status, expect.status));
    }
    if a.status >= 500 {
        wrong.push("a 5xx".to_owned());
    }
    if a.status != expect.status {
        // An emulator-decided row: only the status is judged.
        return wrong;
    }
    let text = words(a);
    if expect.status == 200 && expect.says.is_some() && !a.is_ephemeral() {
        wrong.push(format!(
            "not an ephemeral JSON answer: {:?}",
            a.content_type
        ));
    }
    if (expect.status != 200 || expect.says.is_none()) && !a.raw.is_empty() {
        wrong.push(format!("a body on a bare answer: {:.80}", a.raw));
    }
    if let Some(says) = expect.says
        && !text.contains(says)
    {
        wrong.push(format!("does not say {says:?}: {:.120}", text));
    }
    if let Some(never) = expect.never
        && a.raw.contains(never)
    {
        wrong.push(format!("says {:.40}…, which it must not", never));
    }
    match (expect.password, a.password()) {
        (true, None) => wrong.push("no password".into()),
        (false, Some(_)) => wrong.push("a password".into()),
        _ => {}
    }
    wrong
}

#[tokio::test]
async fn nasty_requests_get_their_documented_status_never_a_5xx_and_the_issuer_keeps_serving() {
    let started = std::time::Instant::now();
    let local = Local::load();
    let aws = local.aws().await;
    let slack = Slack::local(&local);
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let id = launch_instance(&ec2, "nasty").await;
    let team = unique("T");

    // Given the table of nasty requests; when each is sent in turn
    let cases = table(&id, &team);
    let mut failures = Vec::new();
    let mut minted = 0;
    let mut five_xx = 0;
    let mut emulated = 0;
    let mut printed = format!(
        "\n{:>3}  {:<70} {:<7} {:>6} {:>8}  {:<26} outcome\n",
        "#", "case", "method", "status", "expected", "answer says"
    );
    for (n, c) in cases.iter().enumerate() {
        let headers: Vec<(&str, &str)> = c
            .req
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let a = slack
            .request(c.req.method.clone(), &headers, c.req.body.clone())
            .await;
        minted += usize::from(a.password().is_some());
        five_xx += usize::from(a.status >= 500);
        let wrong = judge(&c.expect, &a);
        let expected = match c.expect.or_under_emulator {
            Some((alt, _)) => format!("{}|{alt}", c.expect.status),
            None => c.expect.status.to_string(),
        };
        let outcome = if wrong.is_empty() {
            let mut note = String::from("ok");
            if let Some((alt, why)) = c.expect.or_under_emulator
                && alt == a.status
                && a.status != c.expect.status
            {
                note = format!("ok under the emulator: {why}");
                emulated += 1;
            }
            note
        } else {
            format!("FAIL: {}", wrong.join("; "))
        };
        let says: String = match (c.expect.password, c.expect.says) {
            (true, _) => "a password".to_owned(),
            (false, Some(says)) => format!("{:?}", says.chars().take(24).collect::<String>()),
            (false, None) => "(no body)".to_owned(),
        };
        printed.push_str(&format!(
            "{:>3}  {:<70} {:<7} {:>6} {:>8}  {says:<26} {outcome}\n",
            n + 1,
            c.name,
            c.req.method.as_str(),
            a.status,
            expected
        ));
        if !wrong.is_empty() {
            failures.push(format!("#{} {}: {}", n + 1, c.name, wrong.join("; ")));
        }
    }

    let failed_cases = failures.len();

    // Then, afterwards, a plain request still mints: the process is still serving
    let after = slack
        .send(&SlashCommand::new(&team, &unique("U"), id.as_str()))
        .await;
    let still_serving = after.is_ephemeral() && after.password().is_some();
    if still_serving {
        minted += 1;
    } else {
        failures.push(format!("after the table, a valid request got {after:?}"));
    }

    // And nothing was stored but what was shown: one password item per password answered
    let stored = scan_all(&ddb, &local.table())
        .await
        .iter()
        .filter(|item| {
            item.get("pk")
                .and_then(|v| v.as_s().ok())
                .is_some_and(|pk| pk.starts_with("pw#"))
                && item.get("team_id").and_then(|v| v.as_s().ok()) == Some(&team)
        })
        .count();
    if stored != minted {
        failures.push(format!(
            "{stored} password items stored for {minted} passwords shown"
        ));
    }

    println!("{printed}");
    println!(
        "issuer-nasty: {} cases, {} as documented, {failed_cases} not, {emulated} decided by the \
         emulator, {five_xx} 5xx, {minted} passwords shown and {stored} stored, still serving: \
         {still_serving}; took {:.1}s",
        cases.len(),
        cases.len() - failed_cases,
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} nasty requests were not answered as documented:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn headers_the_emulator_cannot_carry_are_refused_by_the_product_in_process() {
    // Given the issuer in-process against moto, and a correctly signed mint request
    let local = Local::load();
    let aws = local.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let id = launch_instance(&ec2, "nasty-in-process").await;
    let issuer = local_issuer(&local, &aws, SystemClock);
    let team = unique("T");
    let secret = local.signing_secret();

    // When its headers arrive repeated or as bytes that are not UTF-8 (as `lambda_http` would
    // hand them over from an event that carried them)
    let cases: [HeaderCase; 9] = [
        (
            "control: each header once",
            &[(CT, V::Form), (TS, V::Ts), (SIG, V::Sig)],
            200,
        ),
        (
            "signature repeated, right then wrong",
            &[(CT, V::Form), (TS, V::Ts), (SIG, V::Sig), (SIG, V::Wrong)],
            401,
        ),
        (
            "signature repeated, wrong then right",
            &[(CT, V::Form), (TS, V::Ts), (SIG, V::Wrong), (SIG, V::Sig)],
            401,
        ),
        (
            "signature repeated, right twice",
            &[(CT, V::Form), (TS, V::Ts), (SIG, V::Sig), (SIG, V::Sig)],
            401,
        ),
        (
            "timestamp repeated, same value",
            &[(CT, V::Form), (TS, V::Ts), (TS, V::Ts), (SIG, V::Sig)],
            401,
        ),
        (
            "content type repeated, same value",
            &[(CT, V::Form), (CT, V::Form), (TS, V::Ts), (SIG, V::Sig)],
            415,
        ),
        (
            "timestamp not UTF-8",
            &[(CT, V::Form), (TS, V::TsNotUtf8), (SIG, V::Sig)],
            401,
        ),
        (
            "signature not UTF-8",
            &[(CT, V::Form), (TS, V::Ts), (SIG, V::SigNotUtf8)],
            401,
        ),
        (
            "content type not UTF-8",
            &[(CT, V::FormNotUtf8), (TS, V::Ts), (SIG, V::Sig)],
            415,
        ),
    ];
    let mut failures = Vec::new();
    let mut printed = String::new();
    for (name, headers, expected) in &cases {
        let body = SlashCommand::new(&team, &unique("U"), id.as_str()).body();
        let ts = now().to_string();
        let sig = sign(&secret, &ts, body.as_bytes());
        let wrong = sign(&secret, &ts, b"another body");
        let mut map = HeaderMap::new();
        for (k, v) in *headers {
            let value = match v {
                V::Form => HeaderValue::from_static(FORM),
                V::Ts => HeaderValue::from_str(&ts).expect("a header value"),
                V::Sig => HeaderValue::from_str(&sig).expect("a header value"),
                V::Wrong => HeaderValue::from_str(&wrong).expect("a header value"),
                V::TsNotUtf8 => not_utf8(&ts),
                V::SigNotUtf8 => not_utf8(&sig),
                V::FormNotUtf8 => not_utf8(FORM),
            };
            map.append(HeaderName::from_static(k), value);
        }
        let reply = issuer
            .handle(&Incoming {
                method: "POST",
                path: "/",
                content_type: issuer::handler::single(&map, CT),
                timestamp: issuer::handler::single(&map, TS),
                signature: issuer::handler::single(&map, SIG),
                body: body.as_bytes(),
            })
            .await;
        let text = reply
            .body
            .as_ref()
            .and_then(|b| b["text"].as_str())
            .unwrap_or_default();
        let password = password_in(text);
        if let Some(p) = &password {
            ec2pass_tests::secrets::remember(p);
        }
        let ok = reply.status == *expected
            && (*expected == 200) == password.is_some()
            && (*expected == 200 || reply.body.is_none());
        printed.push_str(&format!(
            "in-process  {name:<40} {:>3} (expected {expected})  {}\n",
            reply.status,
            if ok { "ok" } else { "FAIL" }
        ));
        if !ok {
            failures.push(format!("{name}: {reply:?}"));
        }
    }
    println!("{printed}");
    // Then each is refused with the documented bare status, and only the control mints
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An in-process case: its name, its headers in order, the status it must get.
type HeaderCase = (&'static str, &'static [(&'static str, V)], u16);

/// A header value of the in-process cases.
#[derive(Clone, Copy, Debug)]
enum V {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// The request's timestamp.
    Ts,
    /// The request's right signature.
    Sig,
    /// A signature of another body.
    Wrong,
    /// The timestamp, its last byte replaced by a lone `0xE9` (see [`not_utf8`]).
    TsNotUtf8,
    /// The right signature, its last byte replaced by a lone `0xE9`.
    SigNotUtf8,
    /// The form content type, its last byte replaced by a lone `0xE9`.
    FormNotUtf8,
}

/// `value` with its last byte replaced by a lone Latin-1 `é` (`0xE9`): valid in HTTP (obs-text),
/// not UTF-8.
fn not_utf8(value: &str) -> HeaderValue {
    let mut b = value.as_bytes().to_vec();
    b.pop();
    b.push(0xE9);
    HeaderValue::from_bytes(&b).expect("obs-text is a valid header value")
}
