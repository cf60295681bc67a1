//! The alert model: what subscribers of the SNS topic receive.
//!
//! One alert per recorded verdict that warrants one (every deny; allows and exemptions only when
//! audit alerts are on) and one per guard error. The `Message` is JSON with a `schema_version`;
//! the subject is a one-line summary of at most 100 characters; five String message attributes
//! let subscribers filter (for example, e-mail only denials). The schema is documented, with an
//! example, in `docs/alerts.md`. An alert never carries a password or a full digest.

use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::verdict::Verdict;

/// Version of the `Message` schema. Bumped when fields change: 2 added `caller`, and the
/// `attribution` and `response` alerts (docs/alerts.md).
pub const SCHEMA_VERSION: u32 = 2;

/// What the guard did about the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// StopInstances succeeded (or the instance was already stopping, stopped or terminated).
    Stopped,
    /// The instance could not be stopped yet (still `pending`); the `running` event stops it.
    StopPending,
    /// The instance cannot be stopped and configuration says terminate: it was terminated.
    Terminated,
    /// Nothing could be or was configured to be done: only this alert.
    AlertOnly,
    /// Nothing to do (allow, exempt, or fail-open).
    None,
}

/// An alert, as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `allow`, `deny`, `exempt`, `guard-error`, `summary` (one per batch that decided more
    /// than one start: counts and instances in `detail`, `instance_id` is `batch`),
    /// `attribution` (who started a denied start, once the deny alert went out without it) or
    /// `response` (what was done about the caller behind a deny).
    pub verdict: String,
    /// For denials the reason (`missing`, `unknown`, `expired`, `reused`, `wrong-instance`); for
    /// guard errors what failed; otherwise `none`.
    pub reason: String,
    /// The instance.
    pub instance_id: String,
    /// Its `Name` tag, if any.
    pub instance_name: Option<String>,
    /// AWS account.
    pub account: String,
    /// AWS region.
    pub region: String,
    /// The EventBridge event id (or `sweep:<id>` for the scheduled sweep).
    pub event_id: String,
    /// When the event happened (RFC 3339).
    pub event_time: String,
    /// The instance's LaunchTime for this start (RFC 3339), when known.
    pub launch_time: Option<String>,
    /// What the guard did.
    pub action: Action,
    /// The presented password's short id, when known.
    pub password_short_id: Option<String>,
    /// The Slack user the password was issued to, when known.
    pub issuer_user_id: Option<String>,
    /// Free text for people, e.g. what failed.
    pub detail: Option<String>,
    /// Who made the call that started the instance (CloudTrail), when known.
    #[serde(default)]
    pub caller: Option<Caller>,
}

impl Alert {
    /// The verdict label of a verdict.
    pub fn verdict_label(v: Verdict) -> String {
        v.kind().to_owned()
    }

    /// The SNS subject: `[ec2pass] DENIED start of i-0abc (web-prod) in 123456789012/us-east-1: expired`,
    /// at most 100 characters (SNS's limit). When it is too long the instance's name gives way
    /// first, so the verdict, the instance id and the reason always show.
    pub fn subject(&self) -> String {
        const MAX: usize = 100;
        let what = match self.verdict.as_str() {
            "deny" => "DENIED start of",
            "allow" => "allowed start of",
            "exempt" => "exempt start of",
            "summary" => "SUMMARY of a",
            "attribution" => "WHO STARTED denied",
            "response" => "RESPONSE to the start of",
            _ => "GUARD ERROR on",
        };
        let head = format!("[ec2pass] {what} {}", self.instance_id);
        let tail = format!(" in {}/{}: {}", self.account, self.region, self.reason);
        let room = MAX.saturating_sub(head.chars().count() + tail.chars().count());
        let blank = |n: &str| n.chars().all(|c| c.is_whitespace() || c.is_control());
        let name = match self.instance_name.as_deref().filter(|n| !blank(n)) {
            // " (" + name + ")" needs 3 characters besides the name: the whole name when it
            // fits, else at least 4 characters of it, else none.
            Some(n) if n.chars().count() + 3 <= room || room >= 7 => {
                format!(" ({})", truncate(n, room - 3))
            }
            _ => String::new(),
        };
        // Every part can come from outside (the Name tag; account and region from the event),
        // so the whole line is cleaned. Character for character: the count above still holds.
        one_line(&truncate(&format!("{head}{name}{tail}"), MAX))
    }

    /// The SNS message attributes (all Strings), for subscription filter policies.
    pub fn attributes(&self) -> [(&'static str, String); 5] {
        [
            ("verdict", self.verdict.clone()),
            ("reason", self.reason.clone()),
            ("instance_id", self.instance_id.clone()),
            ("account", self.account.clone()),
            ("region", self.region.clone()),
        ]
    }

    /// The JSON message body.
    pub fn message(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// The message as published (`MessageStructure` `json`, one message per protocol): e-mail
    /// subscribers get [`Alert::readable`]; every other protocol (SQS, HTTPS, Lambda,
    /// `email-json`, Firehose) gets `default`, the versioned JSON of [`Alert::message`].
    pub fn per_protocol(&self) -> String {
        serde_json::json!({ "default": self.message(), "email": self.readable() }).to_string()
    }

    /// The alert for people: what happened, to what, why, and what the guard did, one fact a
    /// line. Every part that came from outside (the `Name` tag, the detail) is one line.
    pub fn readable(&self) -> String {
        let name = self
            .instance_name
            .as_deref()
            .map(|n| format!(" ({})", one_line(n)))
            .unwrap_or_default();
        let what = match self.verdict.as_str() {
            "deny" => "ec2pass DENIED a start",
            "allow" => "ec2pass allowed a start",
            "exempt" => "ec2pass let an exempt start stand",
            "summary" => "ec2pass decided several starts at once",
            "attribution" => "ec2pass found who made a denied start",
            "response" => "ec2pass acted on the caller behind a denied start",
            _ => "ec2pass could not decide a start",
        };
        let mut lines = vec![
            format!("{what}."),
            String::new(),
            format!("Instance:  {}{name}", self.instance_id),
            format!(
                "Where:     account {}, region {}",
                self.account, self.region
            ),
            format!("Why:       {}", why(&self.verdict, &self.reason)),
            match self.verdict.as_str() {
                // About the caller: the deny alert said what was done to the instance.
                "attribution" | "response" => {
                    "Done:      to the instance, what its deny alert said".to_owned()
                }
                _ => format!("Done:      {}", done(self.action)),
            },
            format!("When:      {}", self.event_time),
        ];
        if let Some(launch) = &self.launch_time {
            lines.push(format!("Launched:  {launch}"));
        }
        if let Some(id) = &self.password_short_id {
            let whose = self
                .issuer_user_id
                .as_deref()
                .map(|u| format!(", issued to chat user {}", one_line(u)))
                .unwrap_or_default();
            lines.push(format!("Password:  short id {id}{whose}"));
        }
        if let Some(detail) = &self.detail {
            lines.push(format!("Detail:    {}", one_line(detail)));
        }
        if let Some(caller) = &self.caller {
            lines.extend(caller.lines().iter().map(|l| one_line(l)));
        }
        lines.push(format!("Event:     {}", self.event_id));
        lines.push(String::new());
        lines.push(format!(
            "Every other subscriber gets this alert as JSON (schema_version {}, docs/alerts.md).",
            self.schema_version
        ));
        lines.join("\n")
    }
}

/// A verdict's reason in words.
fn why(verdict: &str, reason: &str) -> String {
    let words = match (verdict, reason) {
        ("deny", "missing") => "no Auth tag on the instance (or an empty one)",
        ("deny", "unknown") => "the Auth tag holds no password ec2pass issued",
        ("deny", "expired") => "the password had expired",
        ("deny", "reused") => "the password had already been used",
        ("deny", "wrong-instance") => {
            "the password was for another instance: it has leaked, and is burned"
        }
        ("allow", _) => "a valid one-time password, now used up",
        ("exempt", _) => "the instance is exempt",
        ("attribution", _) => "the CloudTrail call that started it arrived after the deny alert",
        ("response", "deactivated-key") => "the caller's access key was deactivated",
        ("response", "revoked-sessions") => "the caller's role sessions were revoked",
        ("response", "refused") => "the caller was not cut off (see the detail)",
        ("response", "failed") => "cutting the caller off failed (see the detail)",
        _ => return one_line(reason),
    };
    format!("{words} ({})", one_line(reason))
}

/// What the guard did, in words.
fn done(action: Action) -> &'static str {
    match action {
        Action::Stopped => "the instance was stopped",
        Action::StopPending => "the instance is stopped as soon as EC2 lets it (it was pending)",
        Action::Terminated => "the instance could not be stopped, and was terminated",
        Action::AlertOnly => "nothing but this alert (the instance could not be stopped)",
        Action::None => "nothing",
    }
}

/// SNS subjects must be one line without control characters: those and Unicode's line and
/// paragraph separators become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            schema_version: SCHEMA_VERSION,
            verdict: "deny".into(),
            reason: "expired".into(),
            instance_id: "i-0abc1234".into(),
            instance_name: Some("web-prod".into()),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            event_id: "e".into(),
            event_time: "2026-11-21T10:00:00Z".into(),
            launch_time: Some("2026-11-21T10:00:00Z".into()),
            action: Action::Stopped,
            password_short_id: Some("ab12cd34".into()),
            issuer_user_id: Some("U1".into()),
            detail: None,
            caller: None,
        }
    }

    #[test]
    fn a_batch_summary_says_so_in_its_subject() {
        let mut a = alert();
        a.verdict = "summary".into();
        a.instance_id = "batch".into();
        a.instance_name = None;
        a.reason = "97 denied of 100".into();
        assert_eq!(
            a.subject(),
            "[ec2pass] SUMMARY of a batch in 123456789012/us-east-1: 97 denied of 100"
        );
        assert_eq!(a.attributes()[0], ("verdict", "summary".to_owned()));
    }

    #[test]
    fn the_subject_reads_like_the_spec() {
        assert_eq!(
            alert().subject(),
            "[ec2pass] DENIED start of i-0abc1234 (web-prod) in 123456789012/us-east-1: expired"
        );
    }

    #[test]
    fn a_long_or_multiline_name_gives_way_so_the_reason_always_shows() {
        let mut a = alert();
        a.instance_id = "i-0123456789abcdef0".into();
        a.reason = "wrong-instance".into();
        a.instance_name = Some(format!("line\nbreak {}", "x".repeat(200)));
        let s = a.subject();
        assert_eq!(s.chars().count(), 100);
        assert!(!s.contains('\n'));
        assert!(s.ends_with("123456789012/us-east-1: wrong-instance"), "{s}");
        assert!(
            s.contains(" (line brea…) in "),
            "the name is shortened, not dropped: {s}"
        );
    }

    /// Found by `guard/tests/properties.rs`: control characters in the account or region (which
    /// come from the invocation payload) reached the subject, which SNS documents it refuses.
    #[test]
    fn no_part_of_the_subject_can_break_its_line() {
        let mut a = alert();
        a.account = "1234\u{0}5678\r\n9012".into();
        a.region = "us-east-1\u{2028}x\u{1b}".into();
        a.instance_name = Some("web\u{2029}prod\u{85}".into());
        a.reason = "expired\t".into();
        let s = a.subject();
        assert_eq!(
            s,
            "[ec2pass] DENIED start of i-0abc1234 (web prod ) in 1234 5678  9012/us-east-1 x : expired "
        );
    }

    /// Found by `guard/tests/properties.rs`: a short name that fitted was dropped when there was
    /// room for it but not for four characters and an ellipsis; and an empty name showed `()`.
    #[test]
    fn a_short_name_that_fits_is_shown_and_a_blank_one_is_not() {
        let mut a = alert();
        a.instance_id = "i-0123456789abcdef0".into();
        a.region = "us-gov-central-1".into();
        a.reason = "wrong-instance".into();
        // head 45 + tail 49 characters leave room for 6: " (web)" fits, nothing longer does.
        a.instance_name = Some("web".into());
        assert_eq!(
            a.subject(),
            "[ec2pass] DENIED start of i-0123456789abcdef0 (web) in 123456789012/us-gov-central-1: wrong-instance"
        );
        a.instance_name = Some("web-prod".into());
        assert_eq!(
            a.subject(),
            "[ec2pass] DENIED start of i-0123456789abcdef0 in 123456789012/us-gov-central-1: wrong-instance"
        );
        for blank in ["", " ", "\n\t"] {
            let mut a = alert();
            a.instance_name = Some(blank.into());
            assert_eq!(
                a.subject(),
                "[ec2pass] DENIED start of i-0abc1234 in 123456789012/us-east-1: expired"
            );
        }
    }

    #[test]
    fn the_message_is_versioned_json_with_kebab_case_actions() {
        let v: serde_json::Value = serde_json::from_str(&alert().message()).unwrap_or_default();
        assert_eq!(v["schema_version"], 2);
        assert_eq!(v["caller"], serde_json::Value::Null);
        assert_eq!(v["action"], "stopped");
        assert_eq!(v["password_short_id"], "ab12cd34");
        let mut a = alert();
        a.action = Action::StopPending;
        assert!(a.message().contains("\"stop-pending\""));
    }

    /// Schema 2 (SPEC §11): who made the call, in the JSON and in the e-mail, every part of it
    /// from the CloudTrail record cleaned to one line; a version-1 message still reads.
    #[test]
    fn the_caller_is_in_the_json_and_on_one_line_each_in_the_mail() {
        let mut a = alert();
        a.caller = Some(Caller {
            principal_type: "AssumedRole".into(),
            principal_arn: Some("arn:aws:sts::123456789012:assumed-role/dev/s".into()),
            account: Some("123456789012".into()),
            user_name: None,
            access_key_id: Some("ASIAIOSFODNN7EXAMPLE".into()),
            session_issuer: Some("arn:aws:iam::123456789012:role/dev".into()),
            session_created: Some("2026-12-02T09:30:00Z".into()),
            mfa: Some(true),
            invoked_by: None,
            source_ip: Some("198.51.100.7".into()),
            user_agent: Some("evil\nDone:      nothing".into()),
            event_name: "StartInstances".into(),
            event_id: "ct-1".into(),
            event_time: "2026-12-02T10:00:00Z".into(),
        });
        let v: serde_json::Value = serde_json::from_str(&a.message()).unwrap_or_default();
        assert_eq!(v["caller"]["access_key_id"], "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(v["caller"]["mfa"], true);
        let mail = a.readable();
        assert!(mail.contains("Session of: arn:aws:iam::123456789012:role/dev"));
        assert!(mail.contains("From: 198.51.100.7, evil Done:      nothing"));
        assert_eq!(
            mail.matches("Done:").count(),
            2,
            "one real Done: line, one inside From:"
        );
        let mut old = v.clone();
        old.as_object_mut().map(|o| o.remove("caller"));
        old["schema_version"] = 1.into();
        let read: Alert = serde_json::from_value(old).expect("a version-1 message still reads");
        assert_eq!(read.caller, None);
    }

    #[test]
    fn attributes_carry_the_filterable_fields() {
        let attrs = alert().attributes();
        let names: Vec<&str> = attrs.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            ["verdict", "reason", "instance_id", "account", "region"]
        );
        assert_eq!(attrs[0].1, "deny");
    }

    #[test]
    fn e_mail_gets_readable_text_and_every_other_protocol_the_json() {
        let mut alert = alert();
        alert.instance_name = Some("web\nprod".into());
        alert.event_id = "0f1e2d3c-event".into();
        let published: serde_json::Value =
            serde_json::from_str(&alert.per_protocol()).unwrap_or_default();
        let default = published["default"].as_str().unwrap_or_default();
        let back: Result<Alert, _> = serde_json::from_str(default);
        assert_eq!(
            back.ok(),
            Some(alert.clone()),
            "default is the versioned JSON"
        );
        let email = published["email"].as_str().unwrap_or_default();
        assert!(!email.contains('{'), "{email}");
        for needed in [
            "DENIED",
            alert.instance_id.as_str(),
            "web prod",
            alert.account.as_str(),
            alert.region.as_str(),
            "the password had expired (expired)",
            "the instance was stopped",
            alert.event_id.as_str(),
        ] {
            assert!(email.contains(needed), "{needed} missing from {email}");
        }
        let mut keys: Vec<&String> = published
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(keys, ["default", "email"]);
    }
}
