//! The loop in chat, against moto and a chat stand-in on 127.0.0.1 (SPEC §10, issue 13): a
//! password minted with a reply URL, started, burned and left to expire, and what its requester
//! hears. The guard runs as deployed (DynamoDB, EC2, SNS through the SDK); its alerts reach the
//! follow-up as the follow-up queue holds them (the SNS notification around the alert's JSON,
//! received from a queue subscribed to the topic); the follow-up posts over HTTP to the
//! stand-in, which records what it receives.

use std::time::Duration;

use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::password::Password;
use ec2pass_shared::reply::{ReplyUrl, origins};
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::store::{MintOutcome, MintStore, ReplyStore};
use ec2pass_shared::time::{SystemClock, UnixTime};
use ec2pass_tests::chat::{ChatStandIn, Mode};
use ec2pass_tests::{
    AlertQueue, Local, inspect, invocation, launch_instance, local_guard, now, state_change, tag,
    unique,
};
use issuer::channel::{MaybeChannel, SnsChannel};
use issuer::chat::HttpChat;
use issuer::followup::{Followup, Told};
use issuer::request::SlashCommand;

/// The follow-up's schedule reads every untold reply of the shared table: one test at a time,
/// so one's run does not tell (or refuse) the other's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Mints a password for `scope` as the issuer does, with `reply_url` as the command's
/// `response_url` (kept only if it points at `chat`'s origin).
async fn mint(
    store: &DynamoStore,
    scope: &InstanceId,
    reply_url: &str,
    chat: &ChatStandIn,
) -> (Password, ec2pass_shared::ids::ShortId, bool) {
    let cmd = SlashCommand {
        team_id: "T0LOOP".into(),
        enterprise_id: None,
        api_app_id: None,
        user_id: unique("U"),
        channel_id: "C0LOOP".into(),
        command: "/ec2pass".into(),
        text: String::new(),
        trigger_id: unique("trigger."),
        response_url: Some(ReplyUrl::new(reply_url)),
        front: Default::default(),
    };
    let (password, mut plan) = issuer::mint::plan(
        &cmd,
        Some(scope.clone()),
        Duration::from_secs(900),
        UnixTime(now()),
        1000,
    );
    let allowed = origins(&chat.origin).expect("the stand-in's origin");
    let key = Local::load().reply_key();
    plan.reply = issuer::mint::reply(&cmd, &plan.record, &allowed, key.as_ref());
    let kept = plan.reply.is_some();
    assert_eq!(store.mint(&plan).await.ok(), Some(MintOutcome::Minted));
    ec2pass_tests::secrets::remember(&password.display());
    (password, plan.record.short_id, kept)
}

/// The follow-up function against moto, posting over HTTP to the stand-in.
fn followup(
    store: DynamoStore,
    chat: &ChatStandIn,
) -> Followup<DynamoStore, HttpChat, SystemClock, MaybeChannel<SnsChannel>> {
    Followup {
        store,
        chat: HttpChat::new().expect("an HTTP client"),
        clock: SystemClock,
        origins: origins(&chat.origin).expect("the stand-in's origin"),
        key: Local::load()
            .reply_key()
            .expect("the development reply key"),
        channel: MaybeChannel(None),
        bot: None,
    }
}

#[tokio::test]
async fn a_burned_password_is_told_once_the_chat_is_back_and_the_outage_changed_nothing_the_guard_does()
 {
    let _turn = ONE_AT_A_TIME.lock().await;
    let local = Local::load();
    let aws = local.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), local.table());
    let alerts = AlertQueue::subscribe(&aws, local.get("EC2PASS_ALERT_TOPIC_ARN"), None).await;
    let chat = ChatStandIn::start(Mode::Up);
    let guard = local_guard(&local, &aws);
    let follow = followup(store.clone(), &chat);

    // Given a password minted for `web` with a reply URL on the chat, and one whose reply URL
    // points elsewhere (never kept)
    let web = launch_instance(&ec2, "loop-web").await;
    let (password, id, kept) = mint(&store, &web, &chat.reply_url(), &chat).await;
    assert!(kept);
    // The table holds the reply URL sealed: whoever may read the table (ReadOnlyAccess) cannot
    // post with it
    let item = aws_sdk_dynamodb::Client::new(&aws)
        .get_item()
        .table_name(local.table())
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("reply#{id}")),
        )
        .send()
        .await
        .expect("GetItem")
        .item
        .expect("the reply item");
    let stored = format!("{item:?}");
    assert!(
        stored.contains("v1:") && !stored.contains(&chat.origin) && !stored.contains("/commands/"),
        "{stored}"
    );
    let elsewhere = mint(&store, &web, "https://example.net/commands/T0/1/x", &chat).await;
    assert!(!elsewhere.2, "a reply URL elsewhere is not kept");
    assert!(store.reply(&elsewhere.1).await.ok().flatten().is_none());

    // When the password leaks and is set on `miner`, which starts, while the chat is down
    let miner = launch_instance(&ec2, "loop-miner").await;
    tag(&ec2, &miner, "Auth", &password.display()).await;
    chat.set(Mode::Down);
    guard
        .handle(&state_change(&miner, "running"), &invocation())
        .await
        .expect("the guard decides");
    // Then the guard did all it does, chat or no chat: miner is stopped and its deny alert
    // (wrong-instance: the password is burned) is out
    assert_eq!(inspect(&ec2, &miner).await.0, "stopped");
    let queued = alerts.drain_as_queued().await;
    assert!(
        queued
            .iter()
            .any(|(_, b)| b.contains("wrong-instance") && b.contains(miner.as_str())),
        "{queued:?}"
    );
    assert!(chat.received().is_empty(), "the guard never calls the chat");

    // And the follow-up of the burn, tried while the chat is down, goes back to the queue
    let again = follow.on_batch(&queued).await;
    assert!(!again.is_empty(), "delivered again later");
    let reply = store.reply(&id).await.ok().flatten().expect("the reply");
    assert_eq!(reply.posts, 0, "the failed post is given back");

    // When the chat is back, the retry tells the burn, and the schedule the use
    chat.set(Mode::Up);
    let retried: Vec<_> = queued
        .into_iter()
        .filter(|(m, _)| again.contains(m))
        .collect();
    assert!(follow.on_batch(&retried).await.is_empty());
    let caught_up = follow.catch_up().await.expect("the schedule's run");
    assert!(
        caught_up
            .iter()
            .any(|(s, t)| *s == id && *t == Told::NoPostLeft)
            || !chat.received().is_empty(),
        "{caught_up:?}"
    );
    let received = chat.received();
    let texts: Vec<String> = received
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("burned") && t.contains(miner.as_str())),
        "{texts:?}"
    );
    // Only the chat's own host was called, at the reply URL's path, and no post holds the
    // password
    let host = chat.origin.trim_start_matches("http://");
    for r in &received {
        assert_eq!(r.host, host);
        assert!(r.path.starts_with("/commands/T0/"), "{}", r.path);
        assert!(!r.body.to_string().contains(&password.display()));
        assert_eq!(r.body["response_type"], "ephemeral");
    }
    assert_eq!(texts.len(), 1, "told once: {texts:?}");
    // The burn settled the password's outcome: the schedule tells nothing more
    let caught_up = follow.catch_up().await.expect("the schedule's run");
    assert!(!caught_up.iter().any(|(s, _)| *s == id), "{caught_up:?}");
    assert_eq!(chat.received().len(), received.len());
}

#[tokio::test]
async fn a_password_used_without_an_allow_alert_is_told_by_the_schedule() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let local = Local::load();
    let aws = local.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), local.table());
    let chat = ChatStandIn::start(Mode::Up);
    let guard = local_guard(&local, &aws);
    let follow = followup(store.clone(), &chat);
    // Given a password used by a start (the guard publishes allow alerts only when told to)
    let web = launch_instance(&ec2, "loop-used").await;
    let (password, id, _) = mint(&store, &web, &chat.reply_url(), &chat).await;
    tag(&ec2, &web, "Auth", &password.display()).await;
    guard
        .handle(&state_change(&web, "running"), &invocation())
        .await
        .expect("the guard decides");
    assert_eq!(inspect(&ec2, &web).await.0, "running");
    // When the schedule's run comes
    let told = follow.catch_up().await.expect("the schedule's run");
    // Then the requester hears it was used, for which instance, once
    assert!(told.contains(&(id.clone(), Told::Posted)), "{told:?}");
    let mine: Vec<_> = chat
        .received()
        .into_iter()
        .filter(|r| {
            r.body["text"]
                .as_str()
                .is_some_and(|t| t.contains(id.as_str()))
        })
        .collect();
    assert_eq!(mine.len(), 1);
    let text = mine[0].body["text"].as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("was used") && text.contains(web.as_str()),
        "{text}"
    );
    let told_again = follow.catch_up().await.expect("the next run");
    assert!(!told_again.iter().any(|(s, _)| *s == id), "told once");
}

#[tokio::test]
async fn a_deny_reaches_the_channel_topic_once_as_a_custom_notification_and_a_slow_chat_delays_no_stop()
 {
    let _turn = ONE_AT_A_TIME.lock().await;
    let local = Local::load();
    let aws = local.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let sns = aws_sdk_sns::Client::new(&aws);
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), local.table());
    let alerts = AlertQueue::subscribe(&aws, local.get("EC2PASS_ALERT_TOPIC_ARN"), None).await;
    // Given a channel topic, with a queue standing in for Amazon Q Developer's subscription
    let channel_topic = sns
        .create_topic()
        .name(unique("ec2pass-channel-"))
        .send()
        .await
        .expect("CreateTopic")
        .topic_arn
        .expect("a topic ARN");
    let channel = AlertQueue::subscribe(&aws, &channel_topic, None).await;
    // And a chat that answers only after 5 s (the follow-up gives up after 3)
    let chat = ChatStandIn::start(Mode::Slow(Duration::from_secs(5)));
    let guard = local_guard(&local, &aws);
    let follow = Followup {
        channel: MaybeChannel(Some(SnsChannel::new(sns.clone(), &channel_topic))),
        ..followup(store.clone(), &chat)
    };
    let web = launch_instance(&ec2, "loop-channel").await;
    let (password, id, _) = mint(&store, &web, &chat.reply_url(), &chat).await;

    // When the password leaks onto `miner`, which starts
    let miner = launch_instance(&ec2, "loop-channel-miner").await;
    tag(&ec2, &miner, "Auth", &password.display()).await;
    guard
        .handle(&state_change(&miner, "running"), &invocation())
        .await
        .expect("the guard decides");
    // Then the guard stopped it, the chat being slow or not (it never calls the chat)
    assert_eq!(inspect(&ec2, &miner).await.0, "stopped");
    assert!(chat.received().is_empty());
    let queued = alerts.drain_as_queued().await;
    assert!(
        queued.iter().any(|(_, b)| b.contains("wrong-instance")),
        "{queued:?}"
    );

    // And the follow-up forwards the deny to the channel once, even when delivered twice; the
    // slow chat's post times out and goes back to the queue with its post given back
    let again = follow.on_batch(&queued).await;
    assert!(!again.is_empty(), "the slow post is tried again later");
    assert_eq!(
        store.reply(&id).await.ok().flatten().map(|r| r.posts),
        Some(0)
    );
    let redelivered: Vec<_> = queued
        .iter()
        .filter(|(m, _)| again.contains(m))
        .cloned()
        .collect();
    chat.set(Mode::Up);
    assert!(follow.on_batch(&redelivered).await.is_empty());
    let notifications = channel.drain().await;
    let denies: Vec<_> = notifications
        .iter()
        .filter(|n| n.message["metadata"]["threadId"] == miner.as_str())
        .collect();
    assert_eq!(denies.len(), 1, "{notifications:?}");
    let n = &denies[0].message;
    assert_eq!(
        (n["version"].as_str(), n["source"].as_str()),
        (Some("1.0"), Some("custom"))
    );
    assert_eq!(n["content"]["textType"], "client-markdown");
    assert!(
        !n.to_string().contains(&password.display()),
        "no password in the channel"
    );
    // And the requester heard of the burn once the chat answered
    assert!(
        chat.received().iter().any(|r| r.status == 200
            && r.body["text"]
                .as_str()
                .is_some_and(|t| t.contains("burned"))),
        "{:?}",
        chat.received()
    );
}
