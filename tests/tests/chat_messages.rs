//! Every kind of message ec2pass sends to a chat, written to `.dev/chat-messages/` for
//! `dev/check_chat_messages.py`, which `make test` runs next: each Slack message must validate
//! with Slack's own SDK models (`slack_sdk.models.blocks`), each Mattermost one must be a
//! slash-command response Mattermost knows. A message kind added to the code and not here is
//! not checked, so each answer and follow-up of `issuer::answer` and `issuer::followup` is
//! listed; the test also checks that none holds a password other than the minted answer.

use std::path::PathBuf;
use std::time::Duration;

use ec2pass_shared::config::IssuerConfig;
use ec2pass_shared::config::{Env, Lifetimes};
use ec2pass_shared::ids::{InstanceId, Owner, ShortId};
use ec2pass_shared::org::Place;
use ec2pass_shared::password::{Password, new_short_id};
use ec2pass_shared::reply::Front;
use ec2pass_shared::store::{Outstanding, Reply};
use ec2pass_shared::time::UnixTime;
use ec2pass_shared::verdict::{Cycle, DenyReason, Verdict, VerdictRecord};
use issuer::answer;
use issuer::command::Mistake;
use issuer::followup::{Outcome, direct, message};
use issuer::front::render;
use issuer::instances::InstanceInfo;
use serde_json::Value;

const NOW: UnixTime = UnixTime(1_795_255_200);

fn config() -> IssuerConfig {
    let vars = [
        ("EC2PASS_TABLE", "ec2pass-messages"),
        ("EC2PASS_SLACK_SIGNING_SECRET_ARN", "s"),
    ];
    let mut config = IssuerConfig::from_env(&Env::from_fn(move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }))
    .expect("a minimal configuration");
    config.lifetimes = Lifetimes {
        default: Duration::from_secs(900),
        min: Duration::from_secs(300),
        max: Duration::from_secs(7200),
    };
    config
}

fn instance() -> InstanceId {
    InstanceId::parse("i-0123456789abcdef0").expect("an instance id")
}

fn outstanding(n: usize) -> Vec<Outstanding> {
    (0..n)
        .map(|i| Outstanding {
            short_id: new_short_id(),
            scope: (i % 2 == 0).then(instance),
            expires_at: NOW.plus(Duration::from_secs(600)),
        })
        .collect()
}

fn reply(id: &ShortId, scope: Option<InstanceId>) -> Reply {
    Reply {
        short_id: id.clone(),
        digest: Password::generate().digest(),
        owner: Owner {
            team_id: "T1".into(),
            user_id: "U1".into(),
        },
        scope,
        expires_at: NOW.plus(Duration::from_secs(900)),
        url: "https://hooks.slack.com/commands/T1/1/x".into(),
        until: NOW.plus(Duration::from_secs(1800)),
        posts: 0,
        due: true,
        front: Front::Slack,
    }
}

fn verdicts() -> Vec<VerdictRecord> {
    let of = |verdict, short: Option<&str>, who: &str| VerdictRecord {
        cycle: Cycle {
            instance: instance(),
            launch_time: NOW,
        },
        verdict,
        short_id: short.and_then(ShortId::parse),
        issuer: short.map(|_| Owner {
            team_id: who.into(),
            user_id: "U1".into(),
        }),
        password_key: None,
        decided_at: NOW,
        event_id: "e".into(),
        place: Some(Place::new("111111111111", "eu-west-1")),
        retain_until: NOW,
        alert: None,
    };
    vec![
        of(Verdict::Allow, Some("ab12cd34"), "T1"),
        of(
            Verdict::Deny(DenyReason::Reused),
            Some("ab12cd34"),
            "mattermost:t1",
        ),
        of(Verdict::Exempt, None, "T1"),
    ]
}

#[test]
fn every_chat_message_is_written_for_the_sdk_check() {
    let config = config();
    let password = Password::generate();
    let id = new_short_id();
    let info = InstanceInfo {
        name: Some("web <!channel> & @here".into()),
        state: "stopped".into(),
        place: None,
    };
    let scoped = (&instance(), &info);
    let expires = NOW.plus(Duration::from_secs(900));
    let mut messages: Vec<(String, Value)> = vec![
        (
            "minted-scoped".into(),
            answer::minted(&password, &id, Some(scoped), expires),
        ),
        (
            "minted-unscoped".into(),
            answer::minted(&password, &id, None, expires),
        ),
        ("listing-empty".into(), answer::listing(&[])),
        ("listing-three".into(), answer::listing(&outstanding(3))),
        (
            "listing-most".into(),
            answer::listing(&outstanding(answer::MOST_LISTED + 5)),
        ),
        ("revoked-one".into(), answer::revoked_one(&id, true)),
        ("revoked-none".into(), answer::revoked_one(&id, false)),
        ("revoked-all-0".into(), answer::revoked_all(0)),
        ("revoked-all-1".into(), answer::revoked_all(1)),
        ("revoked-all-7".into(), answer::revoked_all(7)),
        (
            "press-revoked".into(),
            answer::replace_original(answer::revoked_one(&id, true)),
        ),
        (
            "press-revoked-listed".into(),
            answer::replace_original(answer::revoked_listed(&id, true, &outstanding(2))),
        ),
        (
            "press-revoked-listed-last".into(),
            answer::replace_original(answer::revoked_listed(&id, true, &[])),
        ),
        (
            "press-refused".into(),
            answer::keep_original(answer::not_allowed()),
        ),
        (
            "press-try-again".into(),
            answer::keep_original(answer::try_again()),
        ),
        ("help".into(), answer::usage(&config, None)),
        ("not-allowed".into(), answer::not_allowed()),
        ("rate-limited".into(), answer::rate_limited(10)),
        ("replayed".into(), answer::replayed()),
        (
            "unknown-instance".into(),
            answer::unknown_instance(&instance()),
        ),
        (
            "instance-gone".into(),
            answer::instance_gone(&instance(), &info),
        ),
        ("malformed".into(), answer::malformed()),
        ("too-slow".into(), answer::too_slow()),
        ("try-again".into(), answer::try_again()),
        (
            "status-none".into(),
            answer::status(&instance(), &info, &[]),
        ),
        (
            "status-three".into(),
            answer::status(&instance(), &info, &verdicts()),
        ),
    ];
    let mistakes = [
        Mistake::Unknown("<!channel> `x`".into()),
        Mistake::BadInstanceId("i-xyz".into()),
        Mistake::BadLifetime("9q".into()),
        Mistake::LifetimeOutOfBounds(Duration::from_secs(99_999)),
        Mistake::BadRevoke("zz".into()),
        Mistake::UnscopedNotAllowed,
        Mistake::BadPlace("in".into()),
        Mistake::UnknownPlace("prod/mars-1".into()),
        Mistake::BadStatus(String::new()),
        Mistake::BadStatus("i-nope".into()),
    ];
    for (i, mistake) in mistakes.iter().enumerate() {
        messages.push((format!("usage-{i}"), answer::usage(&config, Some(mistake))));
    }
    let outcomes = [
        (
            "used",
            Outcome::Used {
                instance: instance().to_string(),
                at: "2026-12-02T10:00:00Z".into(),
            },
        ),
        (
            "burned",
            Outcome::Burned {
                instance: "i-0fedcba9876543210".into(),
                at: "2026-12-02T10:00:00Z".into(),
            },
        ),
        (
            "reused",
            Outcome::PresentedAgain {
                instance: instance().to_string(),
                reason: "reused".into(),
                at: "2026-12-02T10:00:00Z".into(),
            },
        ),
        ("expired", Outcome::Expired),
    ];
    for (name, outcome) in &outcomes {
        messages.push((
            format!("followup-{name}"),
            message(outcome, &reply(&id, Some(instance()))),
        ));
        messages.push((
            format!("followup-{name}-unscoped"),
            message(outcome, &reply(&id, None)),
        ));
        messages.push((
            format!("direct-{name}"),
            direct(outcome, &reply(&id, Some(instance()))),
        ));
    }
    // Each of them as Mattermost gets it (direct messages are the Slack bot's only).
    let mattermost: Vec<(String, Value)> = messages
        .iter()
        .filter(|(name, _)| !name.starts_with("direct-"))
        .map(|(name, m)| {
            (
                format!("mattermost-{name}"),
                render(Front::Mattermost, m.clone()),
            )
        })
        .collect();
    messages.extend(mattermost);

    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.dev/chat-messages"
    ));
    std::fs::create_dir_all(&dir).expect("the messages' directory");
    for (name, m) in &messages {
        let text = serde_json::to_string_pretty(m).expect("JSON");
        let holds_password =
            text.contains(&password.display()) || text.contains(password.canonical());
        assert_eq!(
            holds_password,
            name.contains("minted"),
            "{name}: only the minted answer holds the password"
        );
        // The file is checked for its shape only: the password is masked, same length.
        let masked = text.replace(&password.display(), &"x".repeat(password.display().len()));
        std::fs::write(dir.join(format!("{name}.json")), masked).expect("a message file");
    }
    assert!(messages.len() >= 88, "{} messages", messages.len());
}
