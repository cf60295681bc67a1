//! Adversarial input for what the shared core reads from outside (issue #5): a password read back
//! from an `Auth` tag, lifetimes, instance and short ids, the alert subject and message, times,
//! and configuration values.
//!
//! Every property states the documented outcome, not merely "no panic". A product panic is
//! caught by proptest and reported with the minimal input.
//!
//! Each property runs a bounded number of cases by default (`make test`); set
//! `EC2PASS_FUZZ_CASES` for the long run (`make fuzz`). Each prints one summary line, shown with
//! `--nocapture`. A failing input's seed is saved in `properties.proptest-regressions` next to
//! this file and replayed first on every later run; commit it with the fix.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use ec2pass_shared::alert::{Action, Alert, SCHEMA_VERSION};
use ec2pass_shared::caller::Caller;
use ec2pass_shared::config::{Env, GuardConfig, IssuerConfig};
use ec2pass_shared::digest::Digest;
use ec2pass_shared::ids::{InstanceId, ShortId};
use ec2pass_shared::password::{ALPHABET, LEN, Password};
use ec2pass_shared::time::{UnixTime, format_duration, parse_duration};
use ec2pass_shared::verdict::DenyReason;
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Running properties
// ---------------------------------------------------------------------------------------------

#[path = "support/harness.rs"]
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

fn some_or_none<T>(o: &Option<T>) -> &'static str {
    if o.is_some() { "some" } else { "none" }
}

// ---------------------------------------------------------------------------------------------
// A password read back from a tag
// ---------------------------------------------------------------------------------------------

/// The documented reading of a tag value: surrounding white space dropped, case ignored, dashes
/// ignored, `o` read as `0` and `i`/`l` as `1`; then exactly 20 characters of the alphabet.
fn expected_password(value: &str) -> Option<String> {
    let mut out = String::new();
    for c in value.trim().chars() {
        let c = match c.to_ascii_lowercase() {
            '-' => continue,
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == LEN).then_some(out)
}

/// Tag values: passwords as shown, as people mangle them, near misses, and anything.
fn tag_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(()).prop_map(|_| Password::generate().display()),
        2 => "[ \t\n]{0,2}[0-9a-zA-Z\\-]{16,28}[ \t\n]{0,2}",
        1 => "[0-9a-hjkmnp-tv-z]{20}",
        1 => "[0-9a-zA-Z\u{e9}\u{ff10}\u{3000}\u{a0}\u{1f680} -]{0,30}",
        2 => any::<String>(),
    ]
}

#[test]
fn any_tag_value_reads_as_the_documented_password_or_none() {
    check(
        "Password::from_tag: any value gives the documented password or None",
        tag_value(),
        |value| {
            let got = Password::from_tag(&value);
            outcome(some_or_none(&got));
            let want = expected_password(&value);
            prop_assert_eq!(got.as_ref().map(|p| p.canonical().to_owned()), want);
            if let Some(p) = got {
                prop_assert_eq!(p.canonical().len(), LEN);
                prop_assert!(p.canonical().bytes().all(|b| ALPHABET.contains(&b)));
                prop_assert_eq!(Password::from_tag(&p.display()), Some(p.clone()));
                prop_assert_eq!(Password::from_tag(p.canonical()), Some(p.clone()));
                prop_assert!(!format!("{p:?}").contains(p.canonical()), "Debug shows it");
            }
            Ok(())
        },
    );
}

/// How a person might paste a password back.
#[derive(Debug, Clone)]
struct Paste {
    upper: u64,
    lookalikes: u64,
    dashes: Vec<u8>,
    before: String,
    after: String,
}

fn paste() -> impl Strategy<Value = Paste> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(0u8..3, LEN + 1),
        "[ \t\n\r\u{a0}\u{3000}]{0,3}",
        "[ \t\n\r\u{a0}\u{3000}]{0,3}",
    )
        .prop_map(|(upper, lookalikes, dashes, before, after)| Paste {
            upper,
            lookalikes,
            dashes,
            before,
            after,
        })
}

#[test]
fn a_password_reads_back_however_it_was_pasted() {
    check(
        "Password::from_tag: case, dashes, white space and look-alikes are forgiven",
        paste(),
        |paste| {
            let p = Password::generate();
            let mut typed = paste.before.clone();
            for (i, c) in p.canonical().chars().enumerate() {
                typed.push_str(&"-".repeat(usize::from(paste.dashes[i])));
                let c = match c {
                    '0' if paste.lookalikes >> i & 1 == 1 => 'o',
                    '1' if paste.lookalikes >> i & 1 == 1 => {
                        if paste.lookalikes >> (i + 32) & 1 == 1 {
                            'l'
                        } else {
                            'i'
                        }
                    }
                    c => c,
                };
                typed.push(if paste.upper >> i & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                });
            }
            typed.push_str(&"-".repeat(usize::from(paste.dashes[LEN])));
            typed.push_str(&paste.after);
            prop_assert_eq!(Password::from_tag(&typed), Some(p), "{:?}", typed);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Lifetimes
// ---------------------------------------------------------------------------------------------

/// The documented reading: a whole positive number of at most six digits and a unit `s`, `m`,
/// `h` or `d` (either case), surrounding white space ignored.
fn expected_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let per = match unit {
        's' | 'S' => 1,
        'm' | 'M' => 60,
        'h' | 'H' => 3600,
        'd' | 'D' => 86_400,
        _ => return None,
    };
    (n > 0).then(|| Duration::from_secs(n * per))
}

#[test]
fn any_text_reads_as_the_documented_lifetime_or_none() {
    let texts = prop_oneof![
        3 => " ?[0-9]{0,8}[smhdSMHDwyé\u{3a9}\u{212a}]? ?",
        1 => "[+-]?[0-9]{1,3}[.,_ ][0-9]{1,2}[smhd]",
        1 => "[0-9\u{ff10}-\u{ff19}\u{660}-\u{669}]{1,4}[mh\u{ff4d}]",
        2 => any::<String>(),
    ];
    check(
        "parse_duration: any text gives the documented lifetime or None",
        texts,
        |text| {
            let got = parse_duration(&text);
            outcome(some_or_none(&got));
            prop_assert_eq!(got, expected_duration(&text));
            Ok(())
        },
    );
}

#[test]
fn a_lifetime_written_by_format_duration_reads_back_as_itself() {
    let durations = prop_oneof![
        (1u64..=999_999).prop_map(Duration::from_secs),
        (1u64..=999_999).prop_map(|m| Duration::from_secs(m * 60)),
        (1u64..=999_999).prop_map(|h| Duration::from_secs(h * 3600)),
        (1u64..=999_999).prop_map(|d| Duration::from_secs(d * 86_400)),
    ];
    check(
        "format_duration then parse_duration is the identity",
        durations,
        |d| {
            let text = format_duration(d);
            outcome(text.chars().last().map(String::from).unwrap_or_default());
            prop_assert_eq!(parse_duration(&text), Some(d), "{}", text);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------------------------

#[test]
fn any_text_is_an_instance_id_exactly_when_ec2_would_write_it() {
    let texts = prop_oneof![
        2 => "i-[0-9a-f]{8}",
        2 => "i-[0-9a-f]{17}",
        2 => "[iI ]?[-_]?[0-9a-fA-Fg\u{e9}]{0,20} ?",
        1 => any::<String>(),
    ];
    check(
        "InstanceId::parse: `i-` and 8 or 17 lowercase hex digits, nothing else",
        texts,
        |text| {
            let got = InstanceId::parse(&text);
            outcome(some_or_none(&got));
            let want = text.strip_prefix("i-").is_some_and(|h| {
                (h.len() == 8 || h.len() == 17)
                    && h.chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            });
            prop_assert_eq!(got.is_some(), want);
            if let Some(id) = got {
                prop_assert_eq!(id.as_str(), text.as_str());
                prop_assert_eq!(id.to_string(), text);
            }
            Ok(())
        },
    );
}

#[test]
fn any_text_is_a_short_id_exactly_when_it_is_eight_alphabet_characters_in_any_case() {
    let texts = prop_oneof![
        2 => "[0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{8}",
        2 => "[0-9a-zA-Z\u{e9}\u{212a}]{6,9}",
        1 => any::<String>(),
    ];
    check(
        "ShortId::parse: eight alphabet characters, any case, read as lowercase",
        texts,
        |text| {
            let got = ShortId::parse(&text);
            outcome(some_or_none(&got));
            let lower = text.to_ascii_lowercase();
            let want = lower.len() == 8 && lower.bytes().all(|b| ALPHABET.contains(&b));
            prop_assert_eq!(got.is_some(), want);
            if let Some(id) = got {
                prop_assert_eq!(id.as_str(), lower.as_str());
                prop_assert_eq!(ShortId::parse(id.as_str()), Some(id.clone()));
            }
            Ok(())
        },
    );
}

#[test]
fn stored_bytes_are_a_digest_exactly_when_there_are_32_and_reasons_only_when_documented() {
    check(
        "Digest::from_slice and DenyReason::parse accept exactly what they wrote",
        (
            proptest::collection::vec(any::<u8>(), 0..70),
            prop_oneof![
                proptest::sample::select(vec![
                    "missing",
                    "unknown",
                    "expired",
                    "reused",
                    "wrong-instance",
                    "Missing",
                    "wrong_instance",
                    " expired",
                    "",
                ])
                .prop_map(str::to_owned),
                any::<String>(),
            ],
        ),
        |(bytes, reason)| {
            let digest = Digest::from_slice(&bytes);
            outcome(format!("digest {}", some_or_none(&digest)));
            prop_assert_eq!(digest.is_some(), bytes.len() == 32);
            if let Some(d) = digest {
                prop_assert_eq!(&d.as_bytes()[..], &bytes[..]);
            }
            let documented = ["missing", "unknown", "expired", "reused", "wrong-instance"];
            let parsed = DenyReason::parse(&reason);
            outcome(format!("reason {}", some_or_none(&parsed)));
            prop_assert_eq!(parsed.is_some(), documented.contains(&reason.as_str()));
            if let Some(r) = parsed {
                prop_assert_eq!(r.as_str(), reason.as_str());
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------

/// Days from 1970-01-01 to a civil date, by counting whole years and months (not Hinnant's
/// algorithm, which the product uses).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = 0;
    if y >= 1970 {
        days += (1970..y)
            .map(|y| if leap(y) { 366 } else { 365 })
            .sum::<i64>();
    } else {
        days -= (y..1970)
            .map(|y| if leap(y) { 366 } else { 365 })
            .sum::<i64>();
    }
    let month_days = [
        31,
        if leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += month_days[..(m - 1) as usize].iter().sum::<i64>();
    days + d - 1
}

#[test]
fn any_time_formats_without_panic_and_dates_in_range_read_back_exactly() {
    let times = prop_oneof![
        4 => -62_135_596_800i64..=253_402_300_799,
        1 => any::<i64>(),
    ];
    check(
        "UnixTime::rfc3339 / utc_minutes: any i64 formats; years 1–9999 round-trip",
        times,
        |t| {
            let text = UnixTime(t).rfc3339();
            let people = UnixTime(t).utc_minutes();
            if !(-62_135_596_800..=253_402_300_799).contains(&t) {
                outcome("outside years 1-9999");
                return Ok(());
            }
            outcome("years 1-9999");
            let b = text.as_bytes();
            prop_assert_eq!(b.len(), 20, "{}", text);
            prop_assert!(
                b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[19] == b'Z',
                "{}",
                text
            );
            let num = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap_or(-1);
            let (y, mo, d, h, mi, s) = (
                num(0..4),
                num(5..7),
                num(8..10),
                num(11..13),
                num(14..16),
                num(17..19),
            );
            prop_assert!((1..=12).contains(&mo) && (1..=31).contains(&d), "{}", text);
            prop_assert!(h < 24 && mi < 60 && s < 60, "{}", text);
            let back = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
            prop_assert_eq!(back, t, "{}", text);
            prop_assert_eq!(people, format!("{} UTC", text[..16].replace('T', " ")));
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The alert, whatever it is built from
// ---------------------------------------------------------------------------------------------

/// Text of any kind and length: ordinary, multibyte, control characters and line breaks, huge.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9-]{0,20}",
        2 => "[a-z\u{e9}\u{4e2d}\u{1f680}\u{301} \n\r\t\u{0}\u{1b}\u{7f}\u{85}\u{2028}\u{2029}]{0,80}",
        2 => any::<String>(),
        1 => proptest::collection::vec(any::<char>(), 100..500).prop_map(String::from_iter),
    ]
}

fn alert() -> impl Strategy<Value = Alert> {
    let action = prop_oneof![
        Just(Action::Stopped),
        Just(Action::StopPending),
        Just(Action::Terminated),
        Just(Action::AlertOnly),
        Just(Action::None),
    ];
    (
        (
            prop_oneof![
                proptest::sample::select(vec![
                    "deny",
                    "allow",
                    "exempt",
                    "guard-error",
                    "summary",
                    "attribution",
                    "response"
                ])
                .prop_map(str::to_owned),
                any_text(),
            ],
            any_text(),
            prop_oneof!["i-[0-9a-f]{17}", any_text()],
            proptest::option::of(any_text()),
            any_text(),
            any_text(),
        ),
        (
            any_text(),
            any_text(),
            proptest::option::of(any_text()),
            action,
            proptest::option::of(any_text()),
            proptest::option::of(any_text()),
            proptest::option::of(any_text()),
        ),
        proptest::option::of(caller()),
    )
        .prop_map(
            |(
                (verdict, reason, instance_id, instance_name, account, region),
                (event_id, event_time, launch_time, action, short_id, issuer, detail),
                caller,
            )| Alert {
                schema_version: SCHEMA_VERSION,
                verdict,
                reason,
                instance_id,
                instance_name,
                account,
                region,
                event_id,
                event_time,
                launch_time,
                action,
                password_short_id: short_id,
                issuer_user_id: issuer,
                detail,
                caller,
            },
        )
}

/// Any caller: every field as CloudTrail could write it, or anything at all.
fn caller() -> impl Strategy<Value = Caller> {
    let text = || proptest::option::of(any_text());
    (
        (any_text(), text(), text(), text(), text(), text(), text()),
        (
            proptest::option::of(any::<bool>()),
            text(),
            text(),
            text(),
            any_text(),
            any_text(),
            any_text(),
        ),
    )
        .prop_map(
            |(
                (
                    principal_type,
                    principal_arn,
                    account,
                    user_name,
                    access_key_id,
                    session_issuer,
                    session_created,
                ),
                (mfa, invoked_by, source_ip, user_agent, event_name, event_id, event_time),
            )| Caller {
                principal_type,
                principal_arn,
                account,
                user_name,
                access_key_id,
                session_issuer,
                session_created,
                mfa,
                invoked_by,
                source_ip,
                user_agent,
                event_name,
                event_id,
                event_time,
            },
        )
}

#[test]
fn any_alert_has_a_one_line_subject_of_at_most_100_characters_and_a_json_message() {
    check(
        "Alert: subject ≤ 100 chars on one line, message JSON, attributes copied, for any fields",
        alert(),
        |a| {
            let subject = a.subject();
            let n = subject.chars().count();
            outcome(if n == 100 {
                "subject cut"
            } else {
                "subject whole"
            });
            prop_assert!(n <= 100, "{} characters: {}", n, subject);
            prop_assert!(
                !subject
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
                "{:?}",
                subject
            );
            prop_assert!(subject.starts_with("[ec2pass] "));
            let message: Value = serde_json::from_str(&a.message())
                .map_err(|e| TestCaseError::fail(format!("message is not JSON: {e}")))?;
            prop_assert_eq!(message.as_object().map(|o| o.len()), Some(15));
            let caller: Option<Caller> = serde_json::from_value(message["caller"].clone())
                .map_err(|e| TestCaseError::fail(format!("caller does not read back: {e}")))?;
            prop_assert_eq!(&caller, &a.caller);
            // The mail: whatever the caller holds, each of its facts stays on its own line.
            let bare = Alert {
                caller: None,
                ..a.clone()
            };
            let extra = a.caller.as_ref().map_or(0, |c| c.lines().len());
            prop_assert_eq!(
                a.readable().lines().count(),
                bare.readable().lines().count() + extra
            );
            prop_assert_eq!(&message["schema_version"], &Value::from(SCHEMA_VERSION));
            prop_assert_eq!(&message["reason"], &Value::from(a.reason.clone()));
            prop_assert_eq!(
                &message["instance_name"],
                &a.instance_name.clone().map_or(Value::Null, Value::from)
            );
            prop_assert_eq!(
                &message["detail"],
                &a.detail.clone().map_or(Value::Null, Value::from)
            );
            for (name, value) in a.attributes() {
                prop_assert_eq!(&message[name], &Value::from(value), "attribute {}", name);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration values
// ---------------------------------------------------------------------------------------------

/// Every variable docs/configuration.md documents.
const VARIABLES: [&str; 23] = [
    "EC2PASS_TABLE",
    "EC2PASS_SLACK_SIGNING_SECRET_ARN",
    "EC2PASS_LIFETIME_DEFAULT",
    "EC2PASS_LIFETIME_MIN",
    "EC2PASS_LIFETIME_MAX",
    "EC2PASS_ALLOW_UNSCOPED",
    "EC2PASS_RATE_LIMIT_PER_HOUR",
    "EC2PASS_ALLOWED_TEAMS",
    "EC2PASS_ALLOWED_ENTERPRISES",
    "EC2PASS_ALLOWED_APPS",
    "EC2PASS_ALLOWED_USERS",
    "EC2PASS_ALLOWED_CHANNELS",
    "EC2PASS_ALERT_TOPIC_ARN",
    "EC2PASS_AUTH_TAG",
    "EC2PASS_GUARD_MODE",
    "EC2PASS_EXEMPT_TAG",
    "EC2PASS_GUARD_TAG",
    "EC2PASS_EXEMPT_AUTOSCALING",
    "EC2PASS_UNSTOPPABLE_ACTION",
    "EC2PASS_CLEAR_STOP_PROTECTION",
    "EC2PASS_FAIL_MODE",
    "EC2PASS_AUDIT_ALERTS",
    "EC2PASS_VERDICT_RETENTION",
];

/// Values an operator might set: sensible, nearly sensible, and anything.
fn setting() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(vec![
            "true", "FALSE", " yes ", "off", "1", "0", "maybe", "", "  ",
            "15m", "2h", "90d", "30s", "0m", "25h", "1m", "10s", "11s",
            "opt-in", "opt-out", "terminate", "alert-only", "open", "closed",
            "ec2pass", "a", "arn:aws:sns:us-east-1:123456789012:alerts", "arn:aws:sns",
            "T0123ABCD,U9", "T01, ,C2", "t0123", "aws:mine", "Auth", "1700000000", "-5",
            "4294967296", "+7", "1000", "1001",
        ])
        .prop_map(str::to_owned),
        1 => "[A-Z0-9, ]{0,40}",
        1 => "[a-z0-9:._-]{0,140}",
        1 => any::<String>(),
    ]
}

#[test]
fn any_environment_gives_a_configuration_or_an_error_naming_a_variable_it_read() {
    check(
        "IssuerConfig/GuardConfig::from_env: any values; errors name a documented variable",
        proptest::collection::btree_map(
            proptest::sample::select(VARIABLES.to_vec()),
            setting(),
            0..4,
        ),
        |changed| {
            // A working configuration, with some variables set to other values.
            let mut vars: BTreeMap<&str, String> = [
                ("EC2PASS_TABLE", "ec2pass"),
                (
                    "EC2PASS_SLACK_SIGNING_SECRET_ARN",
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:ec2pass-slack-AbCdEf",
                ),
                (
                    "EC2PASS_ALERT_TOPIC_ARN",
                    "arn:aws:sns:us-east-1:123456789012:alerts",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect();
            vars.extend(changed);
            let read = RefCell::new(BTreeSet::new());
            let env = Env::from_fn(|name| {
                read.borrow_mut().insert(name.to_owned());
                vars.get(name).cloned()
            });
            let issuer = IssuerConfig::from_env(&env).map(|_| ());
            let guard = GuardConfig::from_env(&env).map(|_| ());
            for (which, result) in [("issuer", issuer), ("guard", guard)] {
                match result {
                    Ok(()) => outcome(format!("{which} ok")),
                    Err(e) => {
                        outcome(format!("{which} error"));
                        prop_assert!(VARIABLES.contains(&e.var), "{} is not documented", e.var);
                        prop_assert!(read.borrow().contains(e.var), "{} was never read", e.var);
                        prop_assert!(e.to_string().contains(e.var));
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn each_kind_of_setting_reads_as_documented() {
    check(
        "Env::flag/number/duration/slack_ids: documented reading or an error naming the variable",
        proptest::option::of(setting()),
        |value| {
            let env = Env::from_fn(|_| value.clone());
            let set = value.as_deref().map(str::trim).filter(|v| !v.is_empty());
            const VAR: &str = "EC2PASS_X";

            let flag = env.flag(VAR, true);
            outcome(format!(
                "flag {}",
                if flag.is_ok() { "ok" } else { "error" }
            ));
            let want = match set.map(str::to_ascii_lowercase).as_deref() {
                None => Some(true),
                Some("true" | "1" | "yes" | "on") => Some(true),
                Some("false" | "0" | "no" | "off") => Some(false),
                Some(_) => None,
            };
            prop_assert_eq!(flag.as_ref().ok().copied(), want);

            let number = env.number(VAR, 10, 1..=1000);
            let want = match set {
                None => Some(10),
                Some(v) => v.parse::<u32>().ok().filter(|n| (1..=1000).contains(n)),
            };
            prop_assert_eq!(number.as_ref().ok().copied(), want);

            let duration = env.duration(VAR, Duration::from_secs(60));
            let want = match set {
                None => Some(Duration::from_secs(60)),
                Some(v) => expected_duration(v),
            };
            prop_assert_eq!(duration.as_ref().ok().copied(), want);

            let ids = env.slack_ids(VAR);
            let want: Option<Vec<String>> = match set {
                None => Some(Vec::new()),
                Some(v) => v
                    .split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(|id| {
                        (id.len() <= 32
                            && id
                                .chars()
                                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
                        .then(|| id.to_owned())
                    })
                    .collect(),
            };
            prop_assert_eq!(ids.as_ref().ok().cloned(), want);

            for e in [flag.err(), number.err(), duration.err(), ids.err()]
                .into_iter()
                .flatten()
            {
                prop_assert_eq!(e.var, VAR);
            }
            Ok(())
        },
    );
}
