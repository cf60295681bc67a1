//! The request path end to end, with the in-memory store, a fake EC2 and a fixed clock.

use std::collections::HashMap;
use std::sync::Mutex;

use ec2pass_shared::config::{AllowLists, Lifetimes, SecretSource};
use ec2pass_shared::ids::{Owner, ShortId};
use ec2pass_shared::password::Password;
use ec2pass_shared::store::VerdictStore;
use ec2pass_shared::store::memory::MemoryStore;
use ec2pass_shared::store::{Mint, Outstanding, StoreError, TriggerClaim};
use ec2pass_shared::time::FixedClock;
use ec2pass_shared::verdict::{Cycle, DenyReason, Verdict, VerdictRecord};
use serde_json::json;

use super::*;
use crate::instances::{DirectoryError, InstanceInfo};
use crate::verify::sign;

const SECRET: &str = "unit-test-secret";
const MM_TOKEN: &str = "mmtoken0000000000000000000";
const REPLY_KEY: &str = "unit-test-reply-key";

/// The chat, recording each post: the URL and the message.
#[derive(Clone, Default)]
struct Posts(std::sync::Arc<Mutex<Vec<(String, Value)>>>);

impl Posts {
    fn taken(&self) -> Vec<(String, Value)> {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Chat for Posts {
    async fn post(&self, url: &url::Url, body: &Value) -> Result<(), crate::chat::ChatError> {
        if let Ok(mut posts) = self.0.lock() {
            posts.push((url.to_string(), body.clone()));
        }
        Ok(())
    }

    async fn post_as_bot(
        &self,
        _: &url::Url,
        _: &crate::chat::BotToken,
        _: &Value,
    ) -> Result<(), crate::chat::ChatError> {
        Err(crate::chat::ChatError("the issuer has no bot".into()))
    }
}
const NOW: UnixTime = UnixTime(1_795_255_200);
const INSTANCE: &str = "i-0123456789abcdef0";

/// EC2 with a fixed set of instances; an id mapped to `None` fails like a throttled API.
#[derive(Default)]
struct FakeEc2(HashMap<String, Option<InstanceInfo>>);

impl InstanceDirectory for FakeEc2 {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceInfo>, DirectoryError> {
        match self.0.get(id.as_str()) {
            None => Ok(None),
            Some(None) => Err(DirectoryError("RequestLimitExceeded".into())),
            Some(Some(info)) => Ok(Some(info.clone())),
        }
    }
}

fn ec2() -> FakeEc2 {
    let mut map = HashMap::new();
    map.insert(
        INSTANCE.to_owned(),
        Some(InstanceInfo {
            name: Some("web-prod".into()),
            state: "stopped".into(),
            place: None,
        }),
    );
    map.insert(
        "i-0000000000000dead".to_owned(),
        Some(InstanceInfo {
            name: None,
            state: "terminated".into(),
            place: None,
        }),
    );
    map.insert("i-00000000000000bad".to_owned(), None);
    FakeEc2(map)
}

fn config() -> IssuerConfig {
    IssuerConfig {
        table: "t".into(),
        signing_secret: SecretSource {
            secret_id: "ec2pass-slack-signing-secret".into(),
        },
        mattermost_token: None,
        reply_key: None,
        lifetimes: Lifetimes {
            default: std::time::Duration::from_secs(900),
            min: std::time::Duration::from_secs(300),
            max: std::time::Duration::from_secs(7200),
        },
        allow: AllowLists::default(),
        allow_unscoped: false,
        rate_limit_per_hour: 3,
        hub: None,
        account_users: Vec::new(),
        reply_origins: ec2pass_shared::reply::origins(ec2pass_shared::reply::DEFAULT_ORIGINS)
            .unwrap_or_default(),
    }
}

fn issuer_with<S>(store: S, config: IssuerConfig) -> Issuer<S, FakeEc2, FixedClock, Posts> {
    Issuer {
        config,
        secret: SigningSecret::new(SECRET),
        mattermost: MattermostToken::new(MM_TOKEN),
        replies: ReplyKey::from_secret(REPLY_KEY),
        chat: Posts::default(),
        store,
        directory: ec2(),
        clock: FixedClock(NOW),
    }
}

fn issuer() -> Issuer<MemoryStore, FakeEc2, FixedClock, Posts> {
    issuer_with(MemoryStore::new(), config())
}

static TRIGGERS: Mutex<u64> = Mutex::new(0);

/// A form body as Slack posts it, with a fresh trigger id.
fn form(user: &str, text: &str) -> String {
    let mut n = TRIGGERS.lock().unwrap_or_else(|p| p.into_inner());
    *n += 1;
    let text: String = text
        .bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b if b.is_ascii_alphanumeric() || b == b'-' => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    format!(
        "token=legacy&team_id=T1&team_domain=acme&channel_id=C1&channel_name=ops&user_id={user}\
         &user_name=someone&command=%2Fec2pass&text={text}&api_app_id=A1\
         &response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2Fx&trigger_id=1.2.{n}"
    )
}

async fn send<S, D>(issuer: &Issuer<S, D, FixedClock, Posts>, body: &str) -> Reply
where
    S: MintStore + TriggerStore + OutstandingStore + VerdictHistory,
    D: InstanceDirectory,
{
    let ts = NOW.0.to_string();
    let sig = sign(&SigningSecret::new(SECRET), &ts, body.as_bytes());
    issuer.handle(&signed(&ts, &sig, body)).await
}

fn signed<'a>(ts: &'a str, sig: &'a str, body: &'a str) -> Incoming<'a> {
    Incoming {
        method: "POST",
        path: "/",
        content_type: HeaderValue::Once("application/x-www-form-urlencoded"),
        timestamp: HeaderValue::Once(ts),
        signature: HeaderValue::Once(sig),
        body: body.as_bytes(),
    }
}

fn text_of(reply: &Reply) -> String {
    reply
        .body
        .as_ref()
        .map(Value::to_string)
        .unwrap_or_default()
}

fn ephemeral(reply: &Reply) -> bool {
    reply.status == 200
        && reply
            .body
            .as_ref()
            .is_some_and(|b| b["response_type"] == "ephemeral" && b["text"].is_string())
}

/// The password in a minted answer, as shown.
fn password_in(reply: &Reply) -> Option<Password> {
    let text = reply.body.as_ref()?["text"].as_str()?.to_owned();
    text.split_whitespace().find_map(Password::from_tag)
}

#[tokio::test]
async fn a_scoped_mint_answers_with_a_password_and_stores_only_its_digest() {
    // Given an issuer and a known instance
    let issuer = issuer();
    // When the requester asks for a password for it
    let reply = send(&issuer, &form("U1", INSTANCE)).await;
    // Then the answer is ephemeral, carries a password, the instance's name and state
    assert!(ephemeral(&reply), "{reply:?}");
    let text = text_of(&reply);
    assert!(
        text.contains("web-prod") && text.contains("stopped"),
        "{text}"
    );
    let password = password_in(&reply);
    assert!(password.is_some(), "{text}");
    let password = password.unwrap_or_else(|| unreachable!());
    // And the store holds one record: the digest, scoped, expiring after the default lifetime
    let records = issuer.store.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert!(r.digest.ct_eq(&password.digest()));
    assert_eq!(r.scope.as_ref().map(InstanceId::as_str), Some(INSTANCE));
    assert_eq!(r.expires_at, UnixTime(NOW.0 + 900));
    assert_eq!(r.owner.key(), "T1#U1");
    assert!(!format!("{r:?}").contains(password.canonical()));
}

#[tokio::test]
async fn a_requested_lifetime_is_used_within_bounds_and_explained_outside() {
    let issuer = issuer();
    let reply = send(&issuer, &form("U1", &format!("{INSTANCE} 2h"))).await;
    assert!(password_in(&reply).is_some());
    assert_eq!(issuer.store.records()[0].expires_at, UnixTime(NOW.0 + 7200));

    for text in [
        format!("{INSTANCE} 3h"),
        format!("{INSTANCE} 1m"),
        format!("{INSTANCE} soon"),
    ] {
        let reply = send(&issuer, &form("U1", &text)).await;
        assert!(
            ephemeral(&reply) && password_in(&reply).is_none(),
            "{text}: {reply:?}"
        );
    }
    assert_eq!(
        issuer.store.records().len(),
        1,
        "no password for a bad lifetime"
    );
}

#[tokio::test]
async fn unknown_terminated_or_unreachable_instances_get_no_password() {
    let issuer = issuer();
    for (id, says) in [
        ("i-0aaaaaaaaaaaaaaa0", "can't find"),
        ("i-0000000000000dead", "terminated"),
        ("i-00000000000000bad", "try again"),
    ] {
        let reply = send(&issuer, &form("U1", id)).await;
        assert!(ephemeral(&reply), "{id}");
        assert!(password_in(&reply).is_none(), "{id}");
        assert!(text_of(&reply).contains(says), "{id}: {}", text_of(&reply));
    }
    assert!(issuer.store.records().is_empty());
}

#[tokio::test]
async fn unscoped_passwords_only_where_configuration_allows() {
    let issuer = issuer();
    let reply = send(&issuer, &form("U1", "")).await;
    assert!(ephemeral(&reply) && password_in(&reply).is_none());
    assert!(text_of(&reply).contains("must name an instance"));

    let issuer = issuer_with(
        MemoryStore::new(),
        IssuerConfig {
            allow_unscoped: true,
            ..config()
        },
    );
    let reply = send(&issuer, &form("U1", "")).await;
    assert!(password_in(&reply).is_some(), "{reply:?}");
    assert_eq!(issuer.store.records()[0].scope, None);
}

#[tokio::test]
async fn the_same_trigger_id_is_refused_the_second_time() {
    // Given a request that minted a password
    let issuer = issuer();
    let body = form("U1", INSTANCE);
    assert!(password_in(&send(&issuer, &body).await).is_some());
    // When the very same signed request arrives again
    let again = send(&issuer, &body).await;
    // Then it is refused, and nothing more is stored
    assert!(ephemeral(&again) && password_in(&again).is_none());
    assert!(text_of(&again).contains("already answered"));
    assert_eq!(issuer.store.records().len(), 1);
}

#[tokio::test]
async fn the_rate_limit_allows_exactly_its_number_per_hour() {
    let issuer = issuer(); // limit 3
    for _ in 0..3 {
        assert!(password_in(&send(&issuer, &form("U1", INSTANCE)).await).is_some());
    }
    let refused = send(&issuer, &form("U1", INSTANCE)).await;
    assert!(password_in(&refused).is_none());
    assert!(text_of(&refused).contains("limit"));
    // Another user is counted separately.
    assert!(password_in(&send(&issuer, &form("U2", INSTANCE)).await).is_some());
}

#[tokio::test]
async fn list_shows_short_ids_never_passwords_and_revoke_withdraws() {
    let issuer = issuer();
    let first = password_in(&send(&issuer, &form("U1", INSTANCE)).await);
    let _second = password_in(&send(&issuer, &form("U1", INSTANCE)).await);
    let _other = password_in(&send(&issuer, &form("U2", INSTANCE)).await);
    let owner = Owner {
        team_id: "T1".into(),
        user_id: "U1".into(),
    };
    let mine = issuer
        .store
        .outstanding(&owner, NOW)
        .await
        .unwrap_or_default();
    assert_eq!(mine.len(), 2);

    let listing = text_of(&send(&issuer, &form("U1", "list")).await);
    for o in &mine {
        assert!(listing.contains(o.short_id.as_str()));
    }
    if let Some(first) = &first {
        assert!(!listing.contains(first.canonical()) && !listing.contains(&first.display()));
    }

    let id = mine[0].short_id.clone();
    let reply = text_of(&send(&issuer, &form("U1", &format!("revoke {id}"))).await);
    assert!(reply.contains("Revoked"), "{reply}");
    let reply = text_of(
        &send(
            &issuer,
            &form("U2", &format!("revoke {}", mine[1].short_id)),
        )
        .await,
    );
    assert!(
        reply.contains("no outstanding password"),
        "U2 cannot revoke U1's: {reply}"
    );
    let reply = text_of(&send(&issuer, &form("U1", "revoke all")).await);
    assert!(reply.contains("Revoked your 1"), "{reply}");
    assert!(
        issuer
            .store
            .outstanding(&owner, NOW)
            .await
            .unwrap_or_default()
            .is_empty()
    );
    let u2 = Owner {
        team_id: "T1".into(),
        user_id: "U2".into(),
    };
    assert_eq!(
        issuer
            .store
            .outstanding(&u2, NOW)
            .await
            .map(|v| v.len())
            .ok(),
        Some(1)
    );
}

#[tokio::test]
async fn help_and_mistakes_get_ephemeral_explanations() {
    let issuer = issuer();
    for (text, says) in [
        ("help", "one-time passwords"),
        ("frobnicate", "don't understand"),
        ("i-XYZ", "not an instance id"),
        ("i-0123456789ABCDEF0", "not an instance id"),
        ("revoke", "needs a password id"),
        ("revoke !!", "not a password id"),
        ("<!channel>", "&lt;!channel&gt;"),
    ] {
        let reply = send(&issuer, &form("U1", text)).await;
        assert!(ephemeral(&reply), "{text}");
        assert!(
            text_of(&reply).contains(says),
            "{text}: {}",
            text_of(&reply)
        );
    }
    assert!(issuer.store.records().is_empty());
}

#[tokio::test]
async fn requests_not_from_slack_get_a_bare_401() {
    let issuer = issuer();
    let body = form("U1", INSTANCE);
    let ts = NOW.0.to_string();
    let good = sign(&SigningSecret::new(SECRET), &ts, body.as_bytes());
    let stale_ts = (NOW.0 - 301).to_string();
    let stale = sign(&SigningSecret::new(SECRET), &stale_ts, body.as_bytes());
    let forged = sign(&SigningSecret::new("guess"), &ts, body.as_bytes());
    let tampered = body.replace("U1", "U9");
    let cases: Vec<Incoming<'_>> = vec![
        signed(&ts, &forged, &body),
        signed(&ts, &good, &tampered),
        signed(&stale_ts, &stale, &body),
        Incoming {
            timestamp: HeaderValue::Absent,
            ..signed(&ts, &good, &body)
        },
        Incoming {
            signature: HeaderValue::Absent,
            ..signed(&ts, &good, &body)
        },
        Incoming {
            signature: HeaderValue::Repeated,
            ..signed(&ts, &good, &body)
        },
        Incoming {
            timestamp: HeaderValue::Repeated,
            ..signed(&ts, &good, &body)
        },
        Incoming {
            signature: HeaderValue::Once("v0=nothex"),
            ..signed(&ts, &good, &body)
        },
    ];
    for req in &cases {
        assert_eq!(
            issuer.handle(req).await,
            Reply {
                status: 401,
                body: None
            },
            "{req:?}"
        );
    }
    assert!(issuer.store.records().is_empty());
}

#[tokio::test]
async fn wrong_method_type_or_size_are_refused_before_anything_else() {
    let issuer = issuer();
    let body = form("U1", INSTANCE);
    let ts = NOW.0.to_string();
    let sig = sign(&SigningSecret::new(SECRET), &ts, body.as_bytes());
    let big = "a".repeat(9000);
    let cases = [
        (
            Incoming {
                method: "GET",
                path: "/",
                ..signed(&ts, &sig, &body)
            },
            405,
        ),
        (
            Incoming {
                content_type: HeaderValue::Once("application/json"),
                ..signed(&ts, &sig, &body)
            },
            415,
        ),
        (signed(&ts, &sig, &big), 413),
    ];
    for (req, status) in &cases {
        assert_eq!(issuer.handle(req).await.status, *status);
    }
}

#[tokio::test]
async fn ssl_checks_get_an_empty_200_and_mint_nothing() {
    let issuer = issuer();
    let reply = issuer
        .handle(&signed("", "", "ssl_check=1&token=legacy"))
        .await;
    assert_eq!(
        reply,
        Reply {
            status: 200,
            body: None
        }
    );
    assert!(issuer.store.records().is_empty());
}

#[tokio::test]
async fn a_signed_but_unreadable_form_gets_an_explanation() {
    let issuer = issuer();
    let reply = send(&issuer, "team_id=T1&text=hello").await;
    assert!(ephemeral(&reply));
    assert!(text_of(&reply).contains("could not read"));
}

#[tokio::test]
async fn allow_lists_refuse_politely() {
    let allow = AllowLists {
        channels: vec!["C9".into()],
        ..AllowLists::default()
    };
    let issuer = issuer_with(MemoryStore::new(), IssuerConfig { allow, ..config() });
    let reply = send(&issuer, &form("U1", INSTANCE)).await;
    assert!(ephemeral(&reply) && password_in(&reply).is_none());
    assert!(text_of(&reply).contains("not enabled for you"));
}

/// A store that is down.
struct DownStore;

impl MintStore for DownStore {
    async fn mint(&self, _: &Mint) -> Result<MintOutcome, StoreError> {
        Err(StoreError::Unavailable {
            operation: "TransactWriteItems",
            message: "throttled".into(),
        })
    }
}
impl TriggerStore for DownStore {
    async fn claim_trigger(&self, _: &TriggerClaim) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable {
            operation: "PutItem",
            message: "500".into(),
        })
    }
}
impl VerdictHistory for DownStore {
    async fn recent_verdicts(
        &self,
        _: &InstanceId,
        _: usize,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        Err(StoreError::Unavailable {
            operation: "Query",
            message: "timeout".into(),
        })
    }
}
impl OutstandingStore for DownStore {
    async fn outstanding(&self, _: &Owner, _: UnixTime) -> Result<Vec<Outstanding>, StoreError> {
        Err(StoreError::Unavailable {
            operation: "Query",
            message: "timeout".into(),
        })
    }
    async fn revoke(&self, _: &Owner, _: &ShortId, _: UnixTime) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable {
            operation: "DeleteItem",
            message: "timeout".into(),
        })
    }
    async fn revoke_all(&self, _: &Owner, _: UnixTime) -> Result<usize, StoreError> {
        Err(StoreError::Unavailable {
            operation: "Query",
            message: "timeout".into(),
        })
    }
}

#[tokio::test]
async fn a_store_outage_says_try_again_and_shows_no_password() {
    let issuer = issuer_with(DownStore, config());
    for text in [INSTANCE, "list", "revoke all", "revoke ab12cd34"] {
        let reply = send(&issuer, &form("U1", text)).await;
        assert!(ephemeral(&reply), "{text}");
        assert!(password_in(&reply).is_none(), "{text}");
        assert!(
            text_of(&reply).contains("try again"),
            "{text}: {}",
            text_of(&reply)
        );
    }
}

#[tokio::test]
async fn random_signed_input_never_panics_and_never_gets_a_5xx() {
    use rand::{Rng, RngExt};
    // Given an issuer that even allows unscoped passwords (the widest grammar)
    let issuer = issuer_with(
        MemoryStore::new(),
        IssuerConfig {
            allow_unscoped: true,
            ..config()
        },
    );
    let mut rng = rand::rng();
    let words = [
        "i-0123456789abcdef0",
        "i-0123abcd",
        "revoke",
        "all",
        "list",
        "help",
        "30m",
        "2h",
        "0m",
        "i-",
        "+",
        "%",
        "&",
        "=",
        "é",
        "\u{0}",
    ];
    for round in 0..3_000 {
        // When the body is random bytes, or a form whose text is random words and bytes
        let body: Vec<u8> = if round % 2 == 0 {
            let len = rng.random_range(0..300);
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            bytes
        } else {
            let mut text = String::new();
            for _ in 0..rng.random_range(0..4) {
                text.push_str(words[rng.random_range(0..words.len())]);
                text.push(if rng.random_bool(0.8) {
                    ' '
                } else {
                    char::from(rng.random_range(0u8..128))
                });
            }
            form("U1", &text).into_bytes()
        };
        let ts = NOW.0.to_string();
        let body_text = String::from_utf8_lossy(&body).into_owned();
        let sig = sign(&SigningSecret::new(SECRET), &ts, &body);
        let req = Incoming {
            method: "POST",
            path: "/",
            content_type: HeaderValue::Once("application/x-www-form-urlencoded"),
            timestamp: HeaderValue::Once(&ts),
            signature: HeaderValue::Once(&sig),
            body: &body,
        };
        let reply = issuer.handle(&req).await;
        // Then the answer is a 200 (ephemeral, or the empty ssl_check answer), never an error
        assert!(reply.status == 200, "{body_text:?} -> {reply:?}");
        assert!(
            reply.body.is_none() || ephemeral(&reply),
            "{body_text:?} -> {reply:?}"
        );
    }
}

/// Everything the code under test logs, at TRACE, while it is in scope.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// The process-wide subscriber, installed once. A thread-scoped one (`set_default`) misses events
/// whose callsites other test threads met first with no subscriber: tracing caches that nobody
/// is interested. Installing a global one re-asks every callsite. Other tests' lines land here
/// too, which only widens what is searched.
fn capture_every_log_line() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            panic!("another global subscriber is installed in this test process");
        }
        captured
    })
}

#[tokio::test]
async fn no_log_line_of_any_request_path_holds_a_password_a_digest_or_the_secret() {
    // Given every log line of this test process captured at TRACE while requests take every path
    let captured = capture_every_log_line();
    let issuer = issuer();
    let pasted = Password::generate();
    let mut shown = Vec::new();
    // When a requester mints, lists, revokes, pastes a password as the command text, exceeds
    // the rate limit, and a forger sends the same body with a wrong signature
    for text in [
        INSTANCE,
        INSTANCE,
        "list",
        "revoke all",
        INSTANCE,
        INSTANCE,
        INSTANCE,
    ] {
        let reply = send(&issuer, &form("U1", text)).await;
        shown.extend(password_in(&reply));
    }
    for text in [
        pasted.display(),
        format!("{INSTANCE} {}", pasted.canonical()),
    ] {
        let reply = send(&issuer, &form("U2", &text)).await;
        assert!(password_in(&reply).is_none());
    }
    let body = form("U3", INSTANCE);
    let forged = issuer
        .handle(&signed(&NOW.0.to_string(), "v0=00", &body))
        .await;
    assert_eq!(forged.status, 401);
    let outage = send(&issuer_with(DownStore, config()), &form("U1", INSTANCE)).await;
    assert!(password_in(&outage).is_none());
    // Then the logs say something, and none of it is a secret
    let logs = captured.text();
    assert!(shown.len() >= 3, "minted {}", shown.len());
    assert!(
        logs.lines().count() >= 10,
        "too few log lines to prove anything:\n{logs}"
    );
    for p in shown.iter().chain([&pasted]) {
        for needle in [
            p.display(),
            p.canonical().to_owned(),
            p.canonical().to_uppercase(),
            hex::encode(p.digest().as_bytes()),
        ] {
            assert!(
                !logs.contains(&needle),
                "a password or digest reached a log line"
            );
        }
    }
    assert!(
        !logs.contains(SECRET),
        "the signing secret reached a log line"
    );
}

/// EC2 that fails the first lookup (throttled) and answers every later one.
#[derive(Default)]
struct FlakyEc2(std::sync::atomic::AtomicBool);

impl InstanceDirectory for FlakyEc2 {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceInfo>, DirectoryError> {
        if self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            ec2().describe(id).await
        } else {
            Err(DirectoryError("RequestLimitExceeded".into()))
        }
    }
}

fn issuer_on<S, D>(store: S, directory: D) -> Issuer<S, D, FixedClock, Posts> {
    Issuer {
        config: config(),
        secret: SigningSecret::new(SECRET),
        mattermost: MattermostToken::new(MM_TOKEN),
        replies: ReplyKey::from_secret(REPLY_KEY),
        chat: Posts::default(),
        store,
        directory,
        clock: FixedClock(NOW),
    }
}

#[tokio::test]
async fn a_request_that_failed_at_the_lookup_cannot_be_replayed_for_a_password() {
    // Given EC2 throttling the lookup of a signed mint request
    let issuer = issuer_on(MemoryStore::new(), FlakyEc2::default());
    let body = form("U1", INSTANCE);
    let first = send(&issuer, &body).await;
    // Then the requester is told to try again, and nothing is stored
    assert!(ephemeral(&first) && password_in(&first).is_none());
    assert!(text_of(&first).contains("try again"), "{}", text_of(&first));
    // When someone replays the very same signed request once EC2 answers again (within Slack's
    // five-minute signature window)
    let replay = send(&issuer, &body).await;
    // Then it is refused as a replay: its trigger was claimed before the lookup failed
    assert!(
        ephemeral(&replay) && password_in(&replay).is_none(),
        "{replay:?}"
    );
    assert!(
        text_of(&replay).contains("already answered"),
        "{}",
        text_of(&replay)
    );
    assert!(issuer.store.records().is_empty());
    // And a fresh request (a new trigger id) mints
    assert!(password_in(&send(&issuer, &form("U1", INSTANCE)).await).is_some());
}

/// A store and EC2 that each wait for the other to be called: they only get on if the trigger
/// claim and the instance lookup are in flight at the same time.
struct Rendezvous<T>(T, std::sync::Arc<tokio::sync::Barrier>);

impl MintStore for Rendezvous<MemoryStore> {
    async fn mint(&self, mint: &Mint) -> Result<MintOutcome, StoreError> {
        self.0.mint(mint).await
    }
}
impl TriggerStore for Rendezvous<MemoryStore> {
    async fn claim_trigger(&self, claim: &TriggerClaim) -> Result<bool, StoreError> {
        self.1.wait().await;
        self.0.claim_trigger(claim).await
    }
}
impl VerdictHistory for Rendezvous<MemoryStore> {
    async fn recent_verdicts(
        &self,
        id: &InstanceId,
        n: usize,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        self.0.recent_verdicts(id, n).await
    }
}
impl OutstandingStore for Rendezvous<MemoryStore> {
    async fn outstanding(&self, o: &Owner, now: UnixTime) -> Result<Vec<Outstanding>, StoreError> {
        self.0.outstanding(o, now).await
    }
    async fn revoke(&self, o: &Owner, id: &ShortId, now: UnixTime) -> Result<bool, StoreError> {
        self.0.revoke(o, id, now).await
    }
    async fn revoke_all(&self, o: &Owner, now: UnixTime) -> Result<usize, StoreError> {
        self.0.revoke_all(o, now).await
    }
}
impl InstanceDirectory for Rendezvous<FakeEc2> {
    async fn describe(&self, id: &InstanceId) -> Result<Option<InstanceInfo>, DirectoryError> {
        self.1.wait().await;
        self.0.describe(id).await
    }
}

#[tokio::test]
async fn the_trigger_claim_adds_no_sequential_round_trip_to_a_scoped_mint() {
    // Given a claim and a lookup that can only finish together
    let meet = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let issuer = issuer_on(
        Rendezvous(MemoryStore::new(), meet.clone()),
        Rendezvous(ec2(), meet),
    );
    // When a scoped mint is requested (with a deadline well short of the real one)
    let body = form("U1", INSTANCE);
    let ts = NOW.0.to_string();
    let sig = sign(&SigningSecret::new(SECRET), &ts, body.as_bytes());
    let reply = issuer
        .handle_within(&signed(&ts, &sig, &body), std::time::Duration::from_secs(1))
        .await;
    // Then it mints: the claim ran concurrently with the lookup, not before or after it
    assert!(password_in(&reply).is_some(), "{reply:?}");
}

/// A store whose mint waits until the test opens the gate, then really mints.
struct GatedMint(MemoryStore, std::sync::Arc<tokio::sync::Notify>);

impl MintStore for GatedMint {
    async fn mint(&self, mint: &Mint) -> Result<MintOutcome, StoreError> {
        self.1.notified().await;
        self.0.mint(mint).await
    }
}
impl TriggerStore for GatedMint {
    async fn claim_trigger(&self, claim: &TriggerClaim) -> Result<bool, StoreError> {
        self.0.claim_trigger(claim).await
    }
}
impl VerdictHistory for GatedMint {
    async fn recent_verdicts(
        &self,
        id: &InstanceId,
        n: usize,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        self.0.recent_verdicts(id, n).await
    }
}
impl OutstandingStore for GatedMint {
    async fn outstanding(&self, o: &Owner, now: UnixTime) -> Result<Vec<Outstanding>, StoreError> {
        self.0.outstanding(o, now).await
    }
    async fn revoke(&self, o: &Owner, id: &ShortId, now: UnixTime) -> Result<bool, StoreError> {
        self.0.revoke(o, id, now).await
    }
    async fn revoke_all(&self, o: &Owner, now: UnixTime) -> Result<usize, StoreError> {
        self.0.revoke_all(o, now).await
    }
}

/// EC2 that never answers.
struct HangingEc2;

impl InstanceDirectory for HangingEc2 {
    async fn describe(&self, _: &InstanceId) -> Result<Option<InstanceInfo>, DirectoryError> {
        std::future::pending().await
    }
}

async fn timed_mint<S, D>(issuer: &Issuer<S, D, FixedClock, Posts>) -> (Reply, std::time::Duration)
where
    S: MintStore + TriggerStore + OutstandingStore + VerdictHistory,
    D: InstanceDirectory,
{
    let started = std::time::Instant::now();
    let reply = send(issuer, &form("U1", INSTANCE)).await;
    (reply, started.elapsed())
}

#[tokio::test]
async fn slow_aws_gets_an_answer_before_slack_gives_up_and_nothing_is_minted_after_it() {
    // Given EC2 that never answers, and a store whose mint hangs until the test lets it go
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let slow_store = issuer_on(GatedMint(MemoryStore::new(), gate.clone()), ec2());
    let slow_ec2 = issuer_on(MemoryStore::new(), HangingEc2);
    // When a mint is requested of each (bounded here too, so the test fails instead of hanging)
    let both = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        tokio::join!(timed_mint(&slow_store), timed_mint(&slow_ec2))
    })
    .await;
    let Ok(((store_reply, store_took), (ec2_reply, ec2_took))) = both else {
        panic!("no answer within 5 s: Slack gives up after 3 s");
    };
    // Then each gets, after the deadline and within Slack's 3 s, an ephemeral 200 saying that
    // nothing was minted
    for (reply, took) in [(&store_reply, store_took), (&ec2_reply, ec2_took)] {
        assert!(
            ephemeral(reply) && password_in(reply).is_none(),
            "{reply:?}"
        );
        assert!(
            text_of(reply).contains("took too long and showed nothing"),
            "{}",
            text_of(reply)
        );
        assert!(
            took >= DEADLINE && took < std::time::Duration::from_secs(3),
            "{took:?}"
        );
    }
    // And when the store would go on to mint, nothing does: the work was dropped with the answer
    gate.notify_one();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(slow_store.store.0.records().is_empty());
    assert!(slow_ec2.store.records().is_empty());
}

#[tokio::test]
async fn a_hub_shows_where_it_found_the_instance_and_keeps_each_accounts_allow_list() {
    // Given a hub's issuer that found the instance in prod/eu-west-1, whose allow-list is U1
    let prod = ec2pass_shared::org::Place::new("111111111111", "eu-west-1");
    let mut fleet = ec2();
    fleet.0.insert(
        INSTANCE.to_owned(),
        Some(InstanceInfo {
            name: Some("web-prod".into()),
            state: "stopped".into(),
            place: Some(("prod".into(), prod)),
        }),
    );
    let issuer = Issuer {
        directory: fleet,
        ..issuer_with(
            MemoryStore::new(),
            IssuerConfig {
                account_users: vec![("111111111111".into(), vec!["U1".into()])],
                ..config()
            },
        )
    };
    // When U1 asks, the answer names the account's alias and the region
    let reply = send(&issuer, &form("U1", INSTANCE)).await;
    assert!(password_in(&reply).is_some(), "{reply:?}");
    assert!(
        text_of(&reply).contains("in prod/eu-west-1"),
        "{}",
        text_of(&reply)
    );
    // And U2, whom the global allow-lists let in, gets no password for that account
    let refused = send(&issuer, &form("U2", INSTANCE)).await;
    assert!(password_in(&refused).is_none(), "{refused:?}");
    assert!(text_of(&refused).contains("not"), "{}", text_of(&refused));
}

#[tokio::test]
async fn in_names_a_place_a_hub_guards_and_anything_else_is_explained() {
    use ec2pass_shared::org::{Hub, members};
    let hub = Hub {
        role: "ec2pass-lookup".into(),
        partition: "aws".into(),
        members: members("prod=111111111111,dev=222222222222").unwrap_or_default(),
        regions: vec!["eu-west-1".into()],
        units: Vec::new(),
    };
    let config_hub = IssuerConfig {
        hub: Some(hub),
        ..config()
    };
    // A hub: a guarded account and region is looked in (the fake finds the instance anywhere)
    let hub_issuer = issuer_with(MemoryStore::new(), config_hub.clone());
    let reply = send(
        &hub_issuer,
        &form("U1", &format!("{INSTANCE} in PROD/eu-west-1")),
    )
    .await;
    assert!(password_in(&reply).is_some(), "{reply:?}");
    // An alias it does not know, or a region it does not guard, is explained, with the choices
    for place in ["staging", "prod/us-east-1"] {
        let reply = send(&hub_issuer, &form("U1", &format!("{INSTANCE} in {place}"))).await;
        assert!(password_in(&reply).is_none());
        let text = text_of(&reply);
        assert!(
            text.contains(&format!("does not guard `{place}`")) && text.contains("`prod`, `dev`"),
            "{text}"
        );
    }
    // An account id the configuration does not list: explained, unless the hub reads its
    // accounts from the Organization (which may list it), where it is looked in
    let joined = format!("{INSTANCE} in 333333333333/eu-west-1");
    let reply = send(&hub_issuer, &form("U1", &joined)).await;
    assert!(password_in(&reply).is_none(), "{reply:?}");
    let mut reading = config_hub.clone();
    if let Some(h) = reading.hub.as_mut() {
        h.units = vec!["ou-ab12-cdef3456".into()];
    }
    let reading = issuer_with(MemoryStore::new(), reading);
    assert!(password_in(&send(&reading, &form("U1", &joined)).await).is_some());
    let reply = send(&reading, &form("U1", &format!("{INSTANCE} in staging"))).await;
    assert!(
        password_in(&reply).is_none(),
        "an alias it does not know is still a mistake"
    );
    // A single account has nothing to choose
    let single = issuer();
    let reply = send(&single, &form("U1", &format!("{INSTANCE} in prod"))).await;
    assert!(password_in(&reply).is_none());
    assert!(
        text_of(&reply).contains("one account"),
        "{}",
        text_of(&reply)
    );
}

#[tokio::test]
async fn an_unscoped_password_is_no_way_around_an_accounts_allow_list() {
    // Given a hub's issuer that allows unscoped passwords, where prod lets only U1 mint
    let issuer = issuer_with(
        MemoryStore::new(),
        IssuerConfig {
            allow_unscoped: true,
            account_users: vec![("111111111111".into(), vec!["U1".into()])],
            ..config()
        },
    );
    // When U2, whom prod's list does not name, asks for a password any instance may use
    let refused = send(&issuer, &form("U2", "")).await;
    // Then none is minted (it would open prod's instances too); U1 still gets one
    assert!(password_in(&refused).is_none(), "{refused:?}");
    assert!(password_in(&send(&issuer, &form("U1", "")).await).is_some());
}

#[tokio::test]
async fn a_mint_keeps_the_reply_url_only_when_it_points_at_the_chat() {
    use ec2pass_shared::store::ReplyStore;
    // Given the issuer, whose chat is Slack (the default origins)
    let issuer = issuer();
    // When a command with Slack's reply URL mints
    let reply = send(&issuer, &form("U1", INSTANCE)).await;
    assert!(password_in(&reply).is_some(), "{reply:?}");
    // Then the password's reply is kept with it, due for the outcome, for 30 minutes
    let record = issuer.store.records()[0].clone();
    let kept = issuer.store.reply(&record.short_id).await.ok().flatten();
    let kept = kept.unwrap_or_else(|| panic!("a reply for {}", record.short_id));
    // sealed: the table never holds the URL itself, only what the reply key opens
    assert!(!kept.url.contains("hooks.slack.com"), "{}", kept.url);
    let key = ReplyKey::from_secret(REPLY_KEY).unwrap_or_else(|| unreachable!());
    assert_eq!(
        ec2pass_shared::reply::open(&key, &kept.url, record.short_id.as_str()).as_deref(),
        Some("https://hooks.slack.com/commands/x")
    );
    assert_eq!(
        kept.until,
        record.issued_at.plus(ec2pass_shared::store::REPLY_FOR)
    );
    assert!(kept.due && kept.posts == 0);
    // And a command whose reply URL points anywhere else mints, but keeps no reply
    let elsewhere = issuer_with(MemoryStore::new(), config());
    let body = form("U1", INSTANCE).replace(
        "hooks.slack.com%2Fcommands",
        "hooks.slack.com.example.net%2Fcommands",
    );
    assert!(password_in(&send(&elsewhere, &body).await).is_some());
    let record = elsewhere.store.records()[0].clone();
    assert!(
        elsewhere
            .store
            .reply(&record.short_id)
            .await
            .ok()
            .flatten()
            .is_none()
    );
    // And without a reply key, no reply URL is kept at all
    let keyless = Issuer {
        replies: None,
        ..issuer_with(MemoryStore::new(), config())
    };
    assert!(password_in(&send(&keyless, &form("U1", INSTANCE)).await).is_some());
    let record = keyless.store.records()[0].clone();
    assert!(
        keyless
            .store
            .reply(&record.short_id)
            .await
            .ok()
            .flatten()
            .is_none()
    );
}

// --- Buttons: Slack's interactivity request on `/slack/actions` -------------------------------

/// Slack's `block_actions` payload as its documentation shows it (tests/fixtures), pressed by
/// `user` on the button `action_id` of password `short_id`, replying to `response_url`.
fn press(user: &str, action_id: &str, short_id: &str, response_url: &str) -> String {
    let mut payload: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/slack/block_actions.json"
    ))
    .unwrap_or_default();
    payload["user"]["id"] = json!(user);
    payload["user"]["team_id"] = json!("T1");
    payload["team"]["id"] = json!("T1");
    payload["api_app_id"] = json!("A1");
    payload["channel"]["id"] = json!("C1");
    payload["response_url"] = json!(response_url);
    payload["actions"][0]["action_id"] = json!(action_id);
    payload["actions"][0]["value"] = json!(short_id);
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default()
}

const ACTION_URL: &str = "https://hooks.slack.com/actions/T1/1234/abcd";

async fn send_to<S, D>(issuer: &Issuer<S, D, FixedClock, Posts>, path: &str, body: &str) -> Reply
where
    S: MintStore + TriggerStore + OutstandingStore + VerdictHistory,
    D: InstanceDirectory,
{
    let ts = NOW.0.to_string();
    let sig = sign(&SigningSecret::new(SECRET), &ts, body.as_bytes());
    let mut req = signed(&ts, &sig, body);
    req.path = path;
    issuer.handle(&req).await
}

/// The short id on a minted answer's Revoke button.
fn button_id(reply: &Reply) -> Option<String> {
    let blocks = reply.body.as_ref()?["blocks"].as_array()?.clone();
    blocks
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == "revoke")
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

fn u1() -> Owner {
    Owner {
        team_id: "T1".into(),
        user_id: "U1".into(),
    }
}

#[tokio::test]
async fn revoke_on_a_minted_password_withdraws_it_and_replaces_the_message() {
    let issuer = issuer();
    let minted = send(&issuer, &form("U1", INSTANCE)).await;
    let Some(id) = button_id(&minted) else {
        panic!("no Revoke button: {}", text_of(&minted));
    };
    let answer = send_to(
        &issuer,
        "/slack/actions",
        &press("U1", "revoke", &id, ACTION_URL),
    )
    .await;
    assert_eq!(answer, Reply::empty(200));
    let posts = issuer.chat.taken();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let (url, message) = &posts[0];
    assert_eq!(url, ACTION_URL);
    assert_eq!(message["replace_original"], json!(true));
    assert!(
        message["text"]
            .as_str()
            .is_some_and(|t| t.contains("Revoked")),
        "{message}"
    );
    let left = issuer
        .store
        .outstanding(&u1(), NOW)
        .await
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let password = password_in(&minted)
        .map(|p| p.display())
        .unwrap_or_default();
    assert!(!password.is_empty() && !message.to_string().contains(&password));
}

#[tokio::test]
async fn only_the_user_who_minted_can_revoke_with_the_button() {
    let issuer = issuer();
    let minted = send(&issuer, &form("U1", INSTANCE)).await;
    let id = button_id(&minted).unwrap_or_default();
    send_to(
        &issuer,
        "/slack/actions",
        &press("U2", "revoke", &id, ACTION_URL),
    )
    .await;
    let posts = issuer.chat.taken();
    assert_eq!(posts.len(), 1);
    assert!(
        posts[0].1["text"]
            .as_str()
            .is_some_and(|t| t.contains("no outstanding password")),
        "{posts:?}"
    );
    let left = issuer
        .store
        .outstanding(&u1(), NOW)
        .await
        .unwrap_or_default();
    assert_eq!(left.len(), 1, "U2's press revoked U1's password");
}

#[tokio::test]
async fn a_forged_or_unknown_press_revokes_nothing() {
    let issuer = issuer();
    let minted = send(&issuer, &form("U1", INSTANCE)).await;
    let id = button_id(&minted).unwrap_or_default();
    let body = press("U1", "revoke", &id, ACTION_URL);
    let ts = NOW.0.to_string();
    let forged = sign(&SigningSecret::new("not-the-secret"), &ts, body.as_bytes());
    let mut req = signed(&ts, &forged, &body);
    req.path = "/slack/actions";
    assert_eq!(issuer.handle(&req).await, Reply::empty(401));
    for body in [
        press("U1", "delete-everything", &id, ACTION_URL),
        press("U1", "revoke", "not a short id", ACTION_URL),
        "payload=%7B%22type%22%3A%22view_submission%22%7D".to_owned(),
        "payload=not-json".to_owned(),
        "token=x".to_owned(),
    ] {
        let answer = send_to(&issuer, "/slack/actions", &body).await;
        assert_eq!(answer, Reply::empty(200), "{body}");
    }
    assert!(issuer.chat.taken().is_empty());
    let left = issuer
        .store
        .outstanding(&u1(), NOW)
        .await
        .unwrap_or_default();
    assert_eq!(left.len(), 1);
}

#[tokio::test]
async fn a_press_posts_only_to_the_chats_own_host() {
    let issuer = issuer();
    let minted = send(&issuer, &form("U1", INSTANCE)).await;
    let id = button_id(&minted).unwrap_or_default();
    for elsewhere in [
        "https://example.net/actions/T1/1/x",
        "https://hooks.slack.com.example.net/actions/T1/1/x",
        "http://hooks.slack.com/actions/T1/1/x",
    ] {
        send_to(
            &issuer,
            "/slack/actions",
            &press("U1", "revoke", &id, elsewhere),
        )
        .await;
    }
    assert!(issuer.chat.taken().is_empty(), "{:?}", issuer.chat.taken());
}

#[tokio::test]
async fn revoke_on_a_line_of_list_shows_the_list_again_without_it() {
    let issuer = issuer();
    send(&issuer, &form("U1", INSTANCE)).await;
    send(&issuer, &form("U1", INSTANCE)).await;
    let listing = send(&issuer, &form("U1", "list")).await;
    let blocks = listing
        .body
        .as_ref()
        .map(|b| b["blocks"].clone())
        .unwrap_or_default();
    let ids: Vec<String> = blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["accessory"]["action_id"] == "revoke-listed")
        .filter_map(|b| b["accessory"]["value"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2, "{blocks}");
    send_to(
        &issuer,
        "/slack/actions",
        &press("U1", "revoke-listed", &ids[0], ACTION_URL),
    )
    .await;
    let posts = issuer.chat.taken();
    let message = posts.first().map(|p| p.1.to_string()).unwrap_or_default();
    assert!(message.contains("Revoked"), "{message}");
    assert!(message.contains(&ids[1]), "the list again: {message}");
    assert_eq!(
        message.matches(&ids[0]).count(),
        2,
        "named in the note, in no line and no button: {message}"
    );
}

#[tokio::test]
async fn other_paths_get_a_bare_404() {
    let issuer = issuer();
    for path in ["/admin", "/slack/actions/x", "/mattermost/x"] {
        let answer = send_to(&issuer, path, &form("U1", INSTANCE)).await;
        assert_eq!(answer, Reply::empty(404), "{path}");
    }
}

// --- Mattermost: `/mattermost`, its token, Markdown answers ------------------------------------

/// Mattermost's slash command body as its documentation shows it (tests/fixtures), with `text`.
fn mattermost_form(text: &str) -> String {
    let body = include_str!("../../tests/fixtures/mattermost/slash_command.form").trim();
    let mut n = TRIGGERS.lock().unwrap_or_else(|p| p.into_inner());
    *n += 1;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap_or_default();
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "text" => (k, text.to_owned()),
            "trigger_id" => (k, format!("{v}{n}")),
            _ => (k, v),
        })
        .collect();
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

async fn from_mattermost<S, D>(issuer: &Issuer<S, D, FixedClock, Posts>, body: &str) -> Reply
where
    S: MintStore + TriggerStore + OutstandingStore + VerdictHistory,
    D: InstanceDirectory,
{
    issuer
        .handle(&Incoming {
            method: "POST",
            path: "/mattermost",
            content_type: HeaderValue::Once("application/x-www-form-urlencoded"),
            timestamp: HeaderValue::Absent,
            signature: HeaderValue::Absent,
            body: body.as_bytes(),
        })
        .await
}

#[tokio::test]
async fn a_mattermost_command_with_its_token_gets_the_same_answer_in_markdown() {
    let issuer = issuer();
    let answer = from_mattermost(&issuer, &mattermost_form(INSTANCE)).await;
    let body = answer.body.clone().unwrap_or_default();
    assert_eq!(answer.status, 200);
    assert_eq!(body["response_type"], "ephemeral");
    assert!(body.get("blocks").is_none(), "{body}");
    let text = body["text"].as_str().unwrap_or_default();
    assert!(text.contains("**Your one-time password**"), "{text}");
    let shown = text
        .split(|c: char| c.is_whitespace() || c == '`')
        .find_map(Password::from_tag);
    assert!(shown.is_some(), "{text}");
    // Its requester is a Mattermost one: a Slack user with the same ids has other passwords.
    let mattermost_owner = Owner {
        team_id: "mattermost:t0001team00000000000000000".into(),
        user_id: "u0001user00000000000000000".into(),
    };
    let theirs = issuer
        .store
        .outstanding(&mattermost_owner, NOW)
        .await
        .unwrap_or_default();
    assert_eq!(theirs.len(), 1);
    let list = from_mattermost(&issuer, &mattermost_form("list")).await;
    let list = list.body.unwrap_or_default()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        list.contains(theirs[0].short_id.as_str()) && !list.contains("Revoke"),
        "{list}"
    );
}

#[tokio::test]
async fn a_mattermost_command_without_the_token_is_refused_before_it_is_read() {
    let issuer = issuer();
    let good = mattermost_form(INSTANCE);
    for bad in [
        good.replace(
            "token=mmtoken0000000000000000000",
            "token=mmtoken0000000000000000001",
        ),
        good.replace("token=mmtoken0000000000000000000", "token=mmtoken"),
        good.replace("token=mmtoken0000000000000000000", "token="),
        good.replace("token=mmtoken0000000000000000000&", ""),
        format!("{good}&token=mmtoken0000000000000000000"),
        good.replace("token=mmtoken0000000000000000000", "token=x")
            .replace("team_id=", "team="),
    ] {
        assert_eq!(
            from_mattermost(&issuer, &bad).await,
            Reply::empty(401),
            "{bad}"
        );
    }
    // A good token with a field missing: an explanation, in Markdown.
    let answer = from_mattermost(&issuer, &good.replace("user_id=", "user=")).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.is_some_and(|b| b.get("blocks").is_none()));
    // Slack's signature on the Mattermost path proves nothing there.
    assert_eq!(
        send_to(&issuer, "/mattermost", &form("U1", INSTANCE)).await,
        Reply::empty(401)
    );
    let left = issuer
        .store
        .outstanding(&u1(), NOW)
        .await
        .unwrap_or_default();
    assert!(left.is_empty());
    // Without a token configured, there is no Mattermost front at all.
    let slack_only = Issuer {
        mattermost: None,
        ..issuer_with(MemoryStore::new(), config())
    };
    assert_eq!(from_mattermost(&slack_only, &good).await, Reply::empty(404));
}

// --- `status i-…` --------------------------------------------------------------------------

fn verdict_of(instance: &str, verdict: Verdict, at: i64, short: Option<&str>) -> VerdictRecord {
    VerdictRecord {
        cycle: Cycle {
            instance: InstanceId::parse(instance).unwrap_or_else(|| unreachable!()),
            launch_time: UnixTime(at - 1),
        },
        verdict,
        short_id: short.and_then(ShortId::parse),
        issuer: short.map(|_| Owner {
            team_id: "T1".into(),
            user_id: "U9".into(),
        }),
        password_key: None,
        decided_at: UnixTime(at),
        event_id: format!("event-{at}"),
        place: None,
        retain_until: UnixTime(at + 86_400),
        alert: None,
    }
}

#[tokio::test]
async fn status_shows_an_instances_latest_verdicts_latest_first() {
    let store = MemoryStore::new();
    let records = [
        verdict_of(INSTANCE, Verdict::Allow, NOW.0 - 300, Some("ab12cd34")),
        verdict_of(
            INSTANCE,
            Verdict::Deny(DenyReason::Reused),
            NOW.0 - 200,
            Some("ab12cd34"),
        ),
        verdict_of(INSTANCE, Verdict::Exempt, NOW.0 - 100, None),
        verdict_of(
            "i-0fedcba9876543210",
            Verdict::Deny(DenyReason::Missing),
            NOW.0 - 50,
            Some("zz99yy88"),
        ),
    ];
    for r in &records {
        let _ = store.record(r).await;
    }
    let issuer = issuer_with(store, config());
    let text = text_of(&send(&issuer, &form("U1", &format!("status {INSTANCE}"))).await);
    let allowed = text.find("allowed").unwrap_or(usize::MAX);
    let denied = text.find("denied (reused)").unwrap_or(usize::MAX);
    let exempt = text.find("exempt").unwrap_or(usize::MAX);
    assert!(
        exempt < denied && denied < allowed && allowed < usize::MAX,
        "{text}"
    );
    assert!(
        text.contains("`ab12cd34`") && text.contains("<@U9>"),
        "{text}"
    );
    assert!(
        !text.contains("zz99yy88"),
        "another instance's verdict: {text}"
    );
    let unknown = text_of(&send(&issuer, &form("U1", "status i-0000000000000beef")).await);
    assert!(
        unknown.contains("i-0000000000000beef") && !unknown.contains("allowed"),
        "{unknown}"
    );
    let bad = text_of(&send(&issuer, &form("U1", "status now")).await);
    assert!(bad.contains("is not an instance id"), "{bad}");
}

#[tokio::test]
async fn status_is_only_for_those_who_may_mint_for_the_instance() {
    let prod = ec2pass_shared::org::Place::new("111111111111", "eu-west-1");
    let mut fleet = ec2();
    fleet.0.insert(
        INSTANCE.to_owned(),
        Some(InstanceInfo {
            name: Some("web-prod".into()),
            state: "running".into(),
            place: Some(("prod".into(), prod)),
        }),
    );
    let store = MemoryStore::new();
    let _ = store
        .record(&verdict_of(
            INSTANCE,
            Verdict::Allow,
            NOW.0 - 10,
            Some("ab12cd34"),
        ))
        .await;
    let issuer = Issuer {
        directory: fleet,
        ..issuer_with(
            store,
            IssuerConfig {
                account_users: vec![("111111111111".into(), vec!["U1".into()])],
                ..config()
            },
        )
    };
    let mine = text_of(&send(&issuer, &form("U1", &format!("status {INSTANCE}"))).await);
    assert!(
        mine.contains("ab12cd34") && mine.contains("in prod/eu-west-1"),
        "{mine}"
    );
    let theirs = text_of(&send(&issuer, &form("U2", &format!("status {INSTANCE}"))).await);
    assert!(
        !theirs.contains("ab12cd34") && theirs.contains("not enabled for you"),
        "{theirs}"
    );
}

#[tokio::test]
async fn the_mattermost_token_cannot_borrow_a_slack_identity() {
    // Given allow-lists that name a Slack workspace and user, and an account that only that
    // Slack user may mint for
    let allow = AllowLists {
        teams: vec!["T1".into(), "t0001team00000000000000000".into()],
        users: vec!["U1".into(), "u0001user00000000000000000".into()],
        ..Default::default()
    };
    let issuer = issuer_with(MemoryStore::new(), IssuerConfig { allow, ..config() });
    // When the Mattermost path is sent Slack's ids, with the right token
    let borrowed = mattermost_form(INSTANCE)
        .replace("team_id=t0001team00000000000000000", "team_id=T1")
        .replace("user_id=u0001user00000000000000000", "user_id=U1");
    let answer = from_mattermost(&issuer, &borrowed).await;
    // Then nothing is minted for anyone: the ids are not Mattermost's
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .body
            .as_ref()
            .is_some_and(|b| b.get("blocks").is_none())
    );
    let text = text_of(&answer);
    assert!(!text.contains("one-time password"), "{text}");
    assert!(
        issuer.store.records().is_empty(),
        "{:?}",
        issuer.store.records()
    );
    for bad in [
        "user_id=u0001USER00000000000000000",
        "channel_id=C1",
        "team_id=t0001",
    ] {
        let field = bad.split('=').next().unwrap_or_default();
        let body = mattermost_form(INSTANCE)
            .split('&')
            .map(|kv| {
                if kv.starts_with(&format!("{field}=")) {
                    bad.to_owned()
                } else {
                    kv.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        from_mattermost(&issuer, &body).await;
    }
    assert!(issuer.store.records().is_empty());
    // While Mattermost's own ids, on the lists, mint
    let own = from_mattermost(&issuer, &mattermost_form(INSTANCE)).await;
    assert!(
        text_of(&own).contains("one-time password"),
        "{}",
        text_of(&own)
    );
}
