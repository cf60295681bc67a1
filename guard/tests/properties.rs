//! Adversarial input for everything the guard reads from outside (issue #5): the EventBridge
//! payload, the instance's tags (its `Auth` tag and its `Name`), and the alert built from them.
//!
//! Every property states the documented outcome (SPEC §4.1, §4.5, `docs/alerts.md`), not merely
//! "no panic". A product panic is caught by proptest and reported with the minimal input.
//!
//! Each property runs a bounded number of cases by default (`make test`); set
//! `EC2PASS_FUZZ_CASES` for the long run (`make fuzz`). Each prints one summary line, shown with
//! `--nocapture`. A failing input's seed is saved in `properties.proptest-regressions` next to
//! this file and replayed first on every later run; commit it with the fix.

use std::collections::BTreeSet;
use std::fmt::Debug;

use ec2pass_shared::alert::{Action, Alert};
use ec2pass_shared::config::{Env, GuardConfig};
use ec2pass_shared::ids::{InstanceId, Owner, ShortId};
use ec2pass_shared::password::{ALPHABET, Password};
use ec2pass_shared::time::UnixTime;
use ec2pass_shared::verdict::{Cycle, DenyReason, Verdict, VerdictRecord};
use guard::alerts::{for_error, for_verdict};
use guard::decide::{Assessment, assess};
use guard::ec2::InstanceFacts;
use guard::event::{Origin, Trigger, parse};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Running properties
// ---------------------------------------------------------------------------------------------

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
// The EventBridge payload (SPEC §4.1)
// ---------------------------------------------------------------------------------------------

const STATE_CHANGE: &str = "EC2 Instance State-change Notification";
const SCHEDULED: &str = "Scheduled Event";

/// Keys an EventBridge event, or its EC2 detail, has.
const KEYS: [&str; 11] = [
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
    "instance-id",
    "state",
];

fn instance_id() -> impl Strategy<Value = String> {
    prop_oneof!["i-[0-9a-f]{8}", "i-[0-9a-f]{17}"]
}

/// `YYYY-MM-DDTHH:MM:SSZ`, always a real date.
fn rfc3339() -> impl Strategy<Value = String> {
    (
        1970u32..=2100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
    )
        .prop_map(|(y, mo, d, h, mi, s)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"))
}

/// Whether the event's `time` is one EventBridge's schema accepts, for the strings generated
/// here: the form [`rfc3339`] makes (anything else generated here is not a time).
fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(99);
    b.len() == 20
        && s.is_ascii()
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z'
        && (1..=12).contains(&num(5..7))
        && (1..=28).contains(&num(8..10))
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) < 60
}

/// Strings that matter to the parser, near misses, and anything.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "aws.ec2", "aws.events", "AWS.EC2", " aws.ec2", "aws.s3",
            STATE_CHANGE, SCHEDULED, "EC2 Instance State-change notification",
            "pending", "running", "stopping", "stopped", "Pending", "running ",
            "terminated", "shutting-down", "", "0", "us-east-1", "123456789012",
            "2026-11-21", "yesterday", "2026-13-01T00:00:00Z",
        ]).prop_map(str::to_owned),
        2 => instance_id(),
        1 => "[iI]-[0-9a-fA-Fz]{0,18}",
        1 => rfc3339(),
        2 => any::<String>(),
    ]
}

/// Any JSON value, biased toward the keys and strings an event has.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        4 => interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            3 => proptest::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
            1 => any::<String>(),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A state-change event as EventBridge sends it (SPEC §4.1), with generated values.
#[derive(Debug, Clone)]
struct Ec2Event {
    id: String,
    account: String,
    region: String,
    time: String,
    instance: String,
    state: String,
}

fn ec2_event() -> impl Strategy<Value = Ec2Event> {
    (
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[0-9]{12}",
        "[a-z]{2}(-gov)?-(east|west|north|south|central|southeast)-[1-4]",
        rfc3339(),
        instance_id(),
        prop_oneof![
            4 => proptest::sample::select(vec!["pending", "running"]).prop_map(str::to_owned),
            1 => proptest::sample::select(vec!["stopping", "stopped", "terminated", "shutting-down"])
                .prop_map(str::to_owned),
        ],
    )
        .prop_map(|(id, account, region, time, instance, state)| Ec2Event {
            id,
            account,
            region,
            time,
            instance,
            state,
        })
}

impl Ec2Event {
    fn json(&self) -> Value {
        json!({
            "version": "0",
            "id": self.id,
            "detail-type": STATE_CHANGE,
            "source": "aws.ec2",
            "account": self.account,
            "time": self.time,
            "region": self.region,
            "resources": [format!("arn:aws:ec2:{}:{}:instance/{}", self.region, self.account, self.instance)],
            "detail": { "instance-id": self.instance, "state": self.state },
        })
    }
}

/// What the parser must make of a payload, from SPEC §4.1 and `guard::event`'s docs.
#[derive(Debug, PartialEq)]
enum Expected {
    /// This trigger, exactly.
    Trigger(Trigger),
    /// Logged and acknowledged.
    Ignore,
}

/// The documented reading. An EventBridge event is an object with string `source` and
/// `detail-type`, a `detail`, and (when present) string-or-null `version`, `id`, `account`,
/// `region`, an RFC 3339 `time` and a list of string `resources`. The EC2 state change's detail is
/// an object with a string `instance-id` (a valid id) and a string `state` (`pending` or
/// `running` is guarded); the sweep is `aws.events` / `Scheduled Event`. Anything else: Ignore.
fn expected_trigger(payload: &Value) -> Expected {
    let Some(event) = payload.as_object() else {
        return Expected::Ignore;
    };
    let text = |key: &str| -> Option<Option<String>> {
        match event.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(_) => None,
        }
    };
    let (Some(Value::String(source)), Some(Value::String(detail_type))) =
        (event.get("source"), event.get("detail-type"))
    else {
        return Expected::Ignore;
    };
    let (Some(id), Some(account), Some(region), Some(_)) =
        (text("id"), text("account"), text("region"), text("version"))
    else {
        return Expected::Ignore;
    };
    let time = match event.get("time") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(t)) if is_time(t) => t.clone(),
        Some(_) => return Expected::Ignore,
    };
    let resources_ok = match event.get("resources") {
        None | Some(Value::Null) => true,
        Some(Value::Array(r)) => r.iter().all(Value::is_string),
        Some(_) => false,
    };
    let Some(detail) = event.get("detail").filter(|_| resources_ok) else {
        return Expected::Ignore;
    };
    let origin = Origin {
        event_id: id.unwrap_or_default(),
        event_time: time,
        account: account.unwrap_or_default(),
        region: region.unwrap_or_default(),
    };
    match (source.as_str(), detail_type.as_str()) {
        ("aws.ec2", STATE_CHANGE) => {
            let Some(detail) = detail.as_object() else {
                return Expected::Ignore;
            };
            let (Some(Value::String(id)), Some(Value::String(state))) =
                (detail.get("instance-id"), detail.get("state"))
            else {
                return Expected::Ignore;
            };
            match (InstanceId::parse(id), state.as_str()) {
                (Some(instance), "pending" | "running") => {
                    // Issue 12: the place is the instance's ARN among the resources, when one
                    // reads as a place.
                    let origin = match arn_place(event.get("resources"), id) {
                        Some((account, region)) => Origin {
                            account,
                            region,
                            ..origin
                        },
                        None => origin,
                    };
                    Expected::Trigger(Trigger::StateChange {
                        instance,
                        state: state.clone(),
                        origin,
                    })
                }
                _ => Expected::Ignore,
            }
        }
        ("aws.events", SCHEDULED) => Expected::Trigger(Trigger::Sweep {
            origin: Origin {
                event_id: format!("sweep:{}", origin.event_id),
                ..origin
            },
        }),
        _ => Expected::Ignore,
    }
}

/// The account and region of the first `arn:*:ec2:<region>:<account>:instance/<id>` among the
/// resources, as documented: twelve digits, and a region of dash-joined lower-case words ending
/// in a number of one or two digits.
fn arn_place(resources: Option<&Value>, id: &str) -> Option<(String, String)> {
    let list = resources?.as_array()?;
    list.iter().filter_map(Value::as_str).find_map(|arn| {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [first, _, service, region, account, resource] = parts.as_slice() else {
            return None;
        };
        let words: Vec<&str> = region.split('-').collect();
        let (number, names) = words.split_last()?;
        let region_ok = region.len() <= 25
            && names.len() >= 2
            && names
                .iter()
                .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
            && (1..=2).contains(&number.len())
            && number.chars().all(|c| c.is_ascii_digit());
        let ok = *first == "arn"
            && *service == "ec2"
            && account.len() == 12
            && account.chars().all(|c| c.is_ascii_digit())
            && region_ok
            && *resource == format!("instance/{id}");
        ok.then(|| ((*account).to_owned(), (*region).to_owned()))
    })
}

/// What the parser made of it, for comparison (an Ignore's reason is free text, but never empty).
fn actual_trigger(payload: &Value) -> Result<Expected, TestCaseError> {
    match parse(payload) {
        Trigger::Ignore(why) if why.is_empty() => {
            Err(TestCaseError::fail("an ignored event must say why"))
        }
        Trigger::Ignore(_) => Ok(Expected::Ignore),
        t => Ok(Expected::Trigger(t)),
    }
}

fn kind(e: &Expected) -> &'static str {
    match e {
        Expected::Trigger(Trigger::StateChange { .. }) => "state-change",
        Expected::Trigger(Trigger::Sweep { .. }) => "sweep",
        Expected::Trigger(Trigger::Ignore(_)) | Expected::Ignore => "ignore",
    }
}

#[test]
fn a_state_change_event_reads_as_exactly_its_instance_state_and_origin() {
    check(
        "event::parse: generated EC2 state changes give their trigger",
        ec2_event(),
        |e| {
            let got = actual_trigger(&e.json())?;
            outcome(kind(&got));
            let want = match e.state.as_str() {
                "pending" | "running" => Expected::Trigger(Trigger::StateChange {
                    instance: InstanceId::parse(&e.instance)
                        .ok_or_else(|| TestCaseError::fail("generated a bad id"))?,
                    state: e.state.clone(),
                    origin: Origin {
                        event_id: e.id.clone(),
                        event_time: e.time.clone(),
                        account: e.account.clone(),
                        region: e.region.clone(),
                    },
                }),
                _ => Expected::Ignore,
            };
            prop_assert_eq!(got, want);
            Ok(())
        },
    );
}

#[test]
fn any_json_payload_is_read_as_documented_and_never_panics() {
    // Whole values, and objects shaped like events whose fields hold anything.
    let event_like = (
        proptest::collection::btree_map(
            proptest::sample::select(KEYS[..9].to_vec()),
            prop_oneof![3 => interesting_string().prop_map(Value::String), 1 => json()],
            0..10,
        ),
        proptest::collection::btree_map(
            proptest::sample::select(KEYS.to_vec()),
            prop_oneof![3 => interesting_string().prop_map(Value::String), 1 => json()],
            0..4,
        ),
        any::<bool>(),
        proptest::option::of(proptest::sample::select(vec![
            ("aws.ec2", STATE_CHANGE),
            ("aws.events", SCHEDULED),
        ])),
        instance_id(),
        proptest::sample::select(vec!["pending", "running", "stopped"]),
    )
        .prop_map(|(top, detail, with_detail, kind, id, state)| {
            let mut event: Map<String, Value> =
                top.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some((source, detail_type)) = kind {
                event.insert("source".into(), json!(source));
                event.insert("detail-type".into(), json!(detail_type));
            }
            if with_detail {
                let mut detail: Map<String, Value> =
                    detail.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                detail.entry("instance-id").or_insert(json!(id));
                detail.entry("state").or_insert(json!(state));
                event.insert("detail".into(), Value::Object(detail));
            }
            Value::Object(event)
        });
    check(
        "event::parse: any JSON gives the documented trigger or Ignore",
        prop_oneof![json(), event_like],
        |payload| {
            let got = actual_trigger(&payload)?;
            outcome(kind(&got));
            prop_assert_eq!(got, expected_trigger(&payload));
            Ok(())
        },
    );
}

/// A change to one field of a valid event.
#[derive(Debug, Clone)]
enum Mutation {
    /// Remove a top-level key.
    Remove(&'static str),
    /// Remove a key of the detail.
    RemoveDetail(&'static str),
    /// Set a top-level key to a value.
    Set(&'static str, Value),
    /// Set a key of the detail to a value.
    SetDetail(&'static str, Value),
    /// Add a key nobody reads.
    Extra(String, Value),
    /// Replace the whole detail.
    Detail(Value),
    /// Write the detail as the list of its values (`["i-…", "pending"]`).
    DetailAsList,
    /// Write the whole event as the list of its values, in the schema's order.
    EventAsList,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let top = proptest::sample::select(KEYS[..9].to_vec());
    let inner = proptest::sample::select(vec!["instance-id", "state"]);
    let value = prop_oneof![
        3 => interesting_string().prop_map(Value::String),
        1 => json(),
    ];
    prop_oneof![
        top.clone().prop_map(Mutation::Remove),
        inner.clone().prop_map(Mutation::RemoveDetail),
        (top, value.clone()).prop_map(|(k, v)| Mutation::Set(k, v)),
        (inner, value.clone()).prop_map(|(k, v)| Mutation::SetDetail(k, v)),
        ("[a-z-]{1,12}|.{0,8}", value.clone()).prop_map(|(k, v)| Mutation::Extra(k, v)),
        value.prop_map(Mutation::Detail),
        Just(Mutation::DetailAsList),
        Just(Mutation::EventAsList),
    ]
}

fn mutate(event: &mut Value, m: &Mutation) {
    if let Mutation::EventAsList = m {
        let order = &KEYS[..9];
        let values: Vec<Value> = order
            .iter()
            .map(|k| event.get(*k).cloned().unwrap_or(Value::Null))
            .collect();
        *event = Value::Array(values);
        return;
    }
    let Some(top) = event.as_object_mut() else {
        return;
    };
    match m {
        Mutation::Remove(k) => {
            top.remove(*k);
        }
        Mutation::Set(k, v) => {
            top.insert((*k).to_owned(), v.clone());
        }
        Mutation::Extra(k, v) => {
            top.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Mutation::Detail(v) => {
            top.insert("detail".into(), v.clone());
        }
        Mutation::DetailAsList => {
            if let Some(d) = top.get_mut("detail") {
                let values =
                    ["instance-id", "state"].map(|k| d.get(k).cloned().unwrap_or(Value::Null));
                *d = Value::Array(values.to_vec());
            }
        }
        Mutation::EventAsList => {}
        Mutation::RemoveDetail(k) => {
            if let Some(d) = top.get_mut("detail").and_then(Value::as_object_mut) {
                d.remove(*k);
            }
        }
        Mutation::SetDetail(k, v) => {
            if let Some(d) = top.get_mut("detail").and_then(Value::as_object_mut) {
                d.insert((*k).to_owned(), v.clone());
            }
        }
    }
}

#[test]
fn a_valid_event_with_changed_fields_is_read_as_documented() {
    check(
        "event::parse: mutated valid events give the documented trigger or Ignore",
        (ec2_event(), proptest::collection::vec(mutation(), 1..4)),
        |(e, mutations)| {
            let mut payload = e.json();
            for m in &mutations {
                mutate(&mut payload, m);
            }
            let got = actual_trigger(&payload)?;
            outcome(kind(&got));
            prop_assert_eq!(got, expected_trigger(&payload));
            Ok(())
        },
    );
}

#[test]
fn a_scheduled_event_is_the_sweep_under_its_own_event_id() {
    check(
        "event::parse: scheduled events are the sweep",
        (".{0,40}", "[0-9]{12}", "[a-z]{2}-[a-z]+-[1-4]", rfc3339()),
        |(id, account, region, time)| {
            let payload = json!({
                "version": "0", "id": id, "detail-type": SCHEDULED, "source": "aws.events",
                "account": account, "time": time, "region": region,
                "resources": ["arn:aws:events:us-east-1:123456789012:rule/ec2pass-sweep"],
                "detail": {},
            });
            let want = Trigger::Sweep {
                origin: Origin {
                    event_id: format!("sweep:{id}"),
                    event_time: time,
                    account,
                    region,
                },
            };
            prop_assert_eq!(parse(&payload), want);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The `Auth` tag
// ---------------------------------------------------------------------------------------------

fn guard_config() -> GuardConfig {
    let vars = [
        ("EC2PASS_TABLE", "ec2pass"),
        (
            "EC2PASS_ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:alerts",
        ),
    ];
    GuardConfig::from_env(&Env::from_fn(|k| {
        vars.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| (*v).to_owned())
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// What people put in a tag: passwords as shown, mangled as people mangle them, near misses,
/// and anything.
fn auth_value() -> impl Strategy<Value = String> {
    let password = Just(()).prop_map(|_| Password::generate().display());
    prop_oneof![
        2 => password.clone(),
        2 => (password, any::<u64>(), "[ \t\n]{0,2}", "[ \t\n]{0,2}").prop_map(|(p, mask, a, b)| {
            let mangled: String = p
                .chars()
                .enumerate()
                .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect();
            format!("{a}{}{b}", mangled.replace('-', if mask & 1 == 1 { "" } else { "--" }))
        }),
        1 => "[0-9a-zA-Z-]{18,26}",
        1 => "[ \t]{0,3}",
        2 => any::<String>(),
    ]
}

#[test]
fn any_auth_tag_is_missing_unknown_or_the_digest_of_the_password_it_spells() {
    let config = guard_config();
    check(
        "decide::assess: Auth tag values give Missing / Unknown / the password's digest",
        (instance_id(), proptest::option::of(auth_value())),
        |(id, auth)| {
            let id = InstanceId::parse(&id).ok_or_else(|| TestCaseError::fail("bad id"))?;
            let mut facts = InstanceFacts::unknown(id);
            facts.state = "pending".into();
            if let Some(v) = &auth {
                facts.tags.insert(config.auth_tag.clone(), v.clone());
            }
            let got = assess(&facts, &config);
            let want = match auth.as_deref().map(str::trim) {
                None | Some("") => Assessment::NoPassword(DenyReason::Missing),
                Some(v) => match Password::from_tag(v) {
                    Some(p) => Assessment::Password(p.digest()),
                    None => Assessment::NoPassword(DenyReason::Unknown),
                },
            };
            outcome(match &want {
                Assessment::NoPassword(r) => r.as_str(),
                Assessment::Password(_) => "password",
                Assessment::Exempt(_) => "exempt",
            });
            prop_assert_eq!(got, want);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The alert (SPEC §4.5, docs/alerts.md)
// ---------------------------------------------------------------------------------------------

/// The `Message` fields documented in docs/alerts.md.
const MESSAGE_FIELDS: [&str; 15] = [
    "schema_version",
    "verdict",
    "reason",
    "instance_id",
    "instance_name",
    "account",
    "region",
    "event_id",
    "event_time",
    "launch_time",
    "action",
    "password_short_id",
    "issuer_user_id",
    "detail",
    "caller",
];

const ACTIONS: [&str; 5] = [
    "stopped",
    "stop-pending",
    "terminated",
    "alert-only",
    "none",
];

/// Names people give instances: ordinary, long, multibyte, with line breaks and control
/// characters, mention syntax, and anything (EC2 allows 256 characters; more is tried too).
fn instance_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[a-z0-9-]{1,20}",
        2 => "[a-zA-Z0-9 ._:/=+@-]{0,256}",
        2 => "[a-z\u{e9}\u{4e2d}\u{1f680}\u{200d}\u{301} ]{0,120}",
        1 => "[a-z\n\r\t\u{0}\u{1b}\u{7f}\u{85}\u{2028}\u{2029}]{0,60}",
        1 => Just("<!channel> [ec2pass] DENIED".to_owned()),
        2 => any::<String>(),
        1 => proptest::collection::vec(any::<char>(), 200..600).prop_map(String::from_iter),
    ]
}

/// Where an event came from: as EventBridge writes it, or (a forged invocation) anything.
fn origin(realistic: bool) -> BoxedStrategy<Origin> {
    if realistic {
        (
            prop_oneof!["[0-9a-f-]{36}", "sweep:[0-9a-f-]{36}"],
            rfc3339(),
            "[0-9]{12}",
            "[a-z]{2}(-gov)?-(east|west|north|south|central|southeast)-[1-4]",
        )
            .prop_map(|(event_id, event_time, account, region)| Origin {
                event_id,
                event_time,
                account,
                region,
            })
            .boxed()
    } else {
        (
            any::<String>(),
            any::<String>(),
            instance_name(),
            instance_name(),
        )
            .prop_map(|(event_id, event_time, account, region)| Origin {
                event_id,
                event_time,
                account,
                region,
            })
            .boxed()
    }
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Stopped),
        Just(Action::StopPending),
        Just(Action::Terminated),
        Just(Action::AlertOnly),
        Just(Action::None),
    ]
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Allow),
        Just(Verdict::Exempt),
        proptest::sample::select(vec![
            DenyReason::Missing,
            DenyReason::Unknown,
            DenyReason::Expired,
            DenyReason::Reused,
            DenyReason::WrongInstance,
        ])
        .prop_map(Verdict::Deny),
    ]
}

fn short_id() -> impl Strategy<Value = ShortId> {
    proptest::collection::vec(proptest::sample::select(ALPHABET.to_vec()), 8).prop_map(|b| {
        ShortId::parse(&String::from_utf8_lossy(&b))
            .unwrap_or_else(|| unreachable!("eight alphabet characters are a short id"))
    })
}

/// An instance as DescribeInstances shows it: a `Name` (maybe), an `Auth` password (maybe),
/// and other tags.
fn facts() -> impl Strategy<Value = (InstanceFacts, Option<Password>)> {
    (
        instance_id(),
        proptest::option::of(instance_name()),
        any::<bool>(),
        proptest::collection::btree_map("[a-zA-Z:]{1,12}", ".{0,20}", 0..4),
        proptest::option::of(0i64..=4_102_444_800),
    )
        .prop_map(|(id, name, with_password, tags, launch)| {
            let mut facts = InstanceFacts::unknown(
                InstanceId::parse(&id).unwrap_or_else(|| unreachable!("generated ids are valid")),
            );
            facts.state = "pending".into();
            facts.launch_time = launch.map(UnixTime);
            facts.tags = tags;
            let password = with_password.then(Password::generate);
            if let Some(p) = &password {
                facts.tags.insert("Auth".into(), p.display());
            }
            match name {
                Some(n) => facts.tags.insert("Name".into(), n),
                None => facts.tags.remove("Name"),
            };
            (facts, password)
        })
}

/// What the subject starts with for a verdict label.
fn phrase(verdict: &str) -> &'static str {
    match verdict {
        "deny" => "DENIED start of",
        "allow" => "allowed start of",
        "exempt" => "exempt start of",
        _ => "GUARD ERROR on",
    }
}

/// Characters a subject may not carry: SNS subjects are one line without control characters.
fn unfit_for_a_subject(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The documented subject and message of an alert, checked against what it was built from.
fn check_alert(
    alert: &Alert,
    name: Option<&str>,
    origin: &Origin,
    realistic: bool,
    password: Option<&Password>,
) -> TestCaseResult {
    // Subject: one line, at most 100 characters (SNS counts characters, not bytes).
    let subject = alert.subject();
    prop_assert!(
        subject.chars().count() <= 100,
        "{} chars: {}",
        subject.chars().count(),
        subject
    );
    prop_assert!(
        !subject.chars().any(unfit_for_a_subject),
        "subject has a line break or control character: {:?}",
        subject
    );
    let head = format!("[ec2pass] {} {}", phrase(&alert.verdict), alert.instance_id);
    let tail = format!(" in {}/{}: {}", origin.account, origin.region, alert.reason);
    if realistic {
        // The verdict, the instance and the reason always show; only the name gives way.
        prop_assert!(subject.starts_with(&head), "{}", subject);
        prop_assert!(subject.ends_with(&tail), "{}", subject);
        let middle = &subject[head.len()..subject.len() - tail.len()];
        let blank = |n: &str| n.chars().all(|c| c.is_whitespace() || c.is_control());
        match name.filter(|n| !blank(n)) {
            None => prop_assert_eq!(middle, "", "no name, or a blank one, shows nothing"),
            Some(n) => {
                let one_line: String = n
                    .chars()
                    .map(|c| if unfit_for_a_subject(c) { ' ' } else { c })
                    .collect();
                let full = format!("{head} ({one_line}){tail}");
                if full.chars().count() <= 100 {
                    prop_assert_eq!(&subject, &full, "a name that fits is shown whole");
                    outcome("name whole");
                } else if let Some(shown) =
                    middle.strip_prefix(" (").and_then(|m| m.strip_suffix("…)"))
                {
                    prop_assert!(
                        one_line.starts_with(shown),
                        "{:?} is not the name's start",
                        shown
                    );
                    prop_assert_eq!(subject.chars().count(), 100);
                    outcome("name shortened");
                } else {
                    prop_assert_eq!(middle, "", "a name is shortened or dropped, not mangled");
                    outcome("name dropped");
                }
            }
        }
    } else {
        outcome("forged origin");
    }

    // Message: JSON with exactly the documented fields, carrying the inputs unchanged.
    let message: Value = serde_json::from_str(&alert.message())
        .map_err(|e| TestCaseError::fail(format!("message is not JSON: {e}")))?;
    let Some(fields) = message.as_object() else {
        return Err(TestCaseError::fail("message is not an object"));
    };
    let keys: BTreeSet<&str> = fields.keys().map(String::as_str).collect();
    prop_assert_eq!(keys, MESSAGE_FIELDS.into_iter().collect::<BTreeSet<_>>());
    prop_assert_eq!(&message["schema_version"], &json!(2));
    // The guard's own alerts never guess a caller: only the kept CloudTrail call gives one.
    prop_assert_eq!(&message["caller"], &Value::Null);
    prop_assert!(["deny", "allow", "exempt", "guard-error"].contains(&alert.verdict.as_str()));
    prop_assert!(
        message["action"]
            .as_str()
            .is_some_and(|a| ACTIONS.contains(&a))
    );
    prop_assert_eq!(&message["instance_name"], &json!(name));
    prop_assert_eq!(&message["account"], &json!(origin.account));
    prop_assert_eq!(&message["region"], &json!(origin.region));
    prop_assert_eq!(&message["event_id"], &json!(origin.event_id));
    prop_assert_eq!(&message["event_time"], &json!(origin.event_time));
    for (k, v) in fields {
        let nullable = [
            "instance_name",
            "launch_time",
            "password_short_id",
            "issuer_user_id",
            "detail",
            "caller",
        ];
        let ok = match v {
            Value::String(_) => k != "schema_version",
            Value::Null => nullable.contains(&k.as_str()),
            Value::Number(_) => k == "schema_version",
            _ => false,
        };
        prop_assert!(ok, "{} has the wrong type: {}", k, v);
    }
    // Attributes: the five filterable fields, copied from the message.
    for (name, value) in alert.attributes() {
        prop_assert_eq!(&message[name], &json!(value), "attribute {}", name);
    }
    // Never the password, nor its digest.
    if let Some(p) = password {
        let everything = format!("{}\n{}", subject, alert.message());
        let digest: String = p
            .digest()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for secret in [p.display(), p.canonical().to_owned(), digest] {
            prop_assert!(!everything.contains(&secret), "the alert carries a secret");
        }
    }
    Ok(())
}

#[test]
fn a_verdict_alert_is_one_short_line_and_documented_json_for_any_instance() {
    let strategy = (
        facts(),
        verdict(),
        action(),
        proptest::option::of(short_id()),
        proptest::option::of("[UW][A-Z0-9]{8,10}"),
        prop_oneof![4 => Just(true), 1 => Just(false)],
    )
        .prop_flat_map(|(facts, verdict, action, short_id, issuer, realistic)| {
            (
                Just((facts, verdict, action, short_id, issuer, realistic)),
                origin(realistic),
                any::<i64>(),
            )
        });
    check(
        "alerts::for_verdict: subject ≤ 100 chars, one line, reason shown; message as documented",
        strategy,
        |(((facts, password), verdict, action, short_id, issuer, realistic), origin, launch)| {
            let record = VerdictRecord {
                cycle: Cycle {
                    instance: facts.id.clone(),
                    launch_time: facts.launch_time.unwrap_or(UnixTime(launch)),
                },
                verdict,
                short_id: short_id.clone(),
                issuer: issuer.clone().map(|user_id| Owner {
                    team_id: "T1".into(),
                    user_id,
                }),
                password_key: password.as_ref().map(|p| p.digest().table_key()),
                decided_at: UnixTime(launch),
                event_id: origin.event_id.clone(),
                place: None,
                retain_until: UnixTime(launch),
                alert: None,
            };
            let alert = for_verdict(&record, &facts, &origin, action);
            let name = facts.name();
            check_alert(&alert, name, &origin, realistic, password.as_ref())?;
            let message: Value = serde_json::from_str(&alert.message())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&message["verdict"], &json!(verdict.kind()));
            prop_assert_eq!(
                &message["reason"],
                &json!(verdict.reason().map_or("none", DenyReason::as_str))
            );
            prop_assert_eq!(&message["instance_id"], &json!(facts.id.as_str()));
            prop_assert_eq!(
                &message["password_short_id"],
                &json!(short_id.map(|s| s.to_string()))
            );
            prop_assert_eq!(&message["issuer_user_id"], &json!(issuer));
            prop_assert_eq!(
                &message["launch_time"],
                &json!(record.cycle.launch_time.rfc3339())
            );
            prop_assert_eq!(&message["detail"], &Value::Null);
            Ok(())
        },
    );
}

#[test]
fn a_guard_error_alert_is_one_short_line_and_documented_json_for_any_detail() {
    let strategy = (
        facts(),
        any::<bool>(),
        proptest::sample::select(vec!["describe", "consume", "record-verdict", "stop"]),
        prop_oneof![".{0,200}", any::<String>(), "[a-z \n]{2000,10000}"],
        action(),
        prop_oneof![4 => Just(true), 1 => Just(false)],
    )
        .prop_flat_map(|(facts, known, failed, detail, action, realistic)| {
            (
                Just((facts, known, failed, detail, action, realistic)),
                origin(realistic),
            )
        });
    check(
        "alerts::for_error: subject ≤ 100 chars, one line, what failed shown; message as documented",
        strategy,
        |(((facts, password), known, failed, detail, action, realistic), origin)| {
            let alert = for_error(
                &facts.id,
                known.then_some(&facts),
                &origin,
                failed,
                detail.clone(),
                action,
            );
            let name = if known { facts.name() } else { None };
            check_alert(&alert, name, &origin, realistic, password.as_ref())?;
            let message: Value = serde_json::from_str(&alert.message())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&message["verdict"], &json!("guard-error"));
            prop_assert_eq!(&message["reason"], &json!(failed));
            prop_assert_eq!(&message["detail"], &json!(detail));
            prop_assert_eq!(&message["password_short_id"], &Value::Null);
            let launch = facts.launch_time.filter(|_| known).map(UnixTime::rfc3339);
            prop_assert_eq!(&message["launch_time"], &json!(launch));
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// CloudTrail's calls (SPEC §11)
// ---------------------------------------------------------------------------------------------

/// The samples in `tests/fixtures/cloudtrail/`.
fn cloudtrail_samples() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cloudtrail");
    let mut samples: Vec<Value> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(Result::ok)
        .filter(|f| f.path().extension().is_some_and(|x| x == "json"))
        .map(|f| {
            serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{}: {e}", f.path().display()))
        })
        .collect();
    samples.sort_by_key(Value::to_string);
    samples
}

/// A path into a record: a key at each level, from the keys the samples use.
fn record_path() -> impl Strategy<Value = Vec<String>> {
    let key = proptest::sample::select(vec![
        "detail",
        "source",
        "detail-type",
        "eventName",
        "eventTime",
        "eventID",
        "errorCode",
        "awsRegion",
        "recipientAccountId",
        "userIdentity",
        "type",
        "arn",
        "accessKeyId",
        "sessionContext",
        "sessionIssuer",
        "attributes",
        "creationDate",
        "mfaAuthenticated",
        "requestParameters",
        "responseElements",
        "instancesSet",
        "items",
        "instanceId",
        "launchTime",
        "clientToken",
    ])
    .prop_map(str::to_owned);
    proptest::collection::vec(key, 1..6)
}

/// Sets (or with `None` removes) the value at `path`, making objects on the way.
fn set_at(record: &mut Value, path: &[String], value: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = record;
    for key in parents {
        if !node.is_object() {
            *node = json!({});
        }
        node = node
            .as_object_mut()
            .map(|o| o.entry(key.clone()).or_insert(Value::Null))
            .unwrap_or_else(|| unreachable!("an object"));
    }
    if let Some(o) = node.as_object_mut() {
        match value {
            Some(v) => {
                o.insert(last.clone(), v);
            }
            None => {
                o.remove(last);
            }
        }
    }
}

#[test]
fn any_changed_cloudtrail_record_is_a_well_formed_call_or_refused_never_a_panic() {
    let samples = cloudtrail_samples();
    assert_eq!(samples.len(), 5, "the five samples");
    check(
        "calls::parse: mutated CloudTrail records give a well-formed call or a reason",
        (
            0..samples.len(),
            proptest::collection::vec((record_path(), proptest::option::of(json())), 1..4),
        ),
        |(n, edits)| {
            let mut record = samples[n].clone();
            for (path, value) in &edits {
                set_at(&mut record, path, value.clone());
            }
            match guard::calls::parse(&record) {
                Err(why) => {
                    outcome("refused");
                    prop_assert!(!why.is_empty());
                }
                Ok(call) => {
                    outcome("a call");
                    prop_assert!(!call.caller.event_id.is_empty());
                    prop_assert!(
                        call.caller.event_name == "RunInstances"
                            || call.caller.event_name == "StartInstances"
                    );
                    prop_assert!(record["detail"].get("errorCode").is_none_or(Value::is_null));
                    match &call.started {
                        guard::calls::Started::Instances(ids) => prop_assert!(!ids.is_empty()),
                        guard::calls::Started::ClientToken(t) => {
                            prop_assert!(!t.is_empty() && t.len() <= 64);
                        }
                    }
                }
            }
            Ok(())
        },
    );
}
