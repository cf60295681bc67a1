//! End to end through the queue: an EC2 state change put on (moto's) EventBridge, routed by the
//! template's rule into the state-change queue, delivered in a batch by the local stand-in for
//! Lambda's event source mapping to the real `guard` binary under `cargo lambda watch`.

use std::time::Duration;

use ec2pass_shared::password::Password;
use ec2pass_tests::esm::{LocalMapping, put_state_change, recorded_verdict};
use ec2pass_tests::{
    AlertQueue, Local, Slack, SlashCommand, inspect, launch_instance, tag, unique,
};

#[tokio::test]
async fn state_changes_reach_the_guard_through_eventbridge_and_the_queue_in_batches() {
    let local = Local::load();
    local.require_lambda();
    let aws = local.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let mapping = LocalMapping::new(&local, &aws).await;
    mapping.drain(Duration::from_secs(30)).await;
    let dead_before = mapping.dead_letters().await;
    let alerts = AlertQueue::subscribe(&aws, local.get("EC2PASS_ALERT_TOPIC_ARN"), None).await;

    // Given one start with its password and three without, all at once
    let web = launch_instance(&ec2, "queue-web").await;
    let answer = Slack::local(&local)
        .send(&SlashCommand::new("T0QUEUE", &unique("U"), web.as_str()))
        .await;
    let password = answer
        .password()
        .unwrap_or_else(|| panic!("the issuer answered without a password: {}", answer.text()));
    tag(&ec2, &web, "Auth", &password).await;
    let mut rogues = Vec::new();
    for n in 0..3 {
        let rogue = launch_instance(&ec2, &format!("queue-rogue-{n}")).await;
        tag(&ec2, &rogue, "Auth", &Password::generate().display()).await;
        rogues.push(rogue);
    }
    for id in std::iter::once(&web).chain(&rogues) {
        put_state_change(&aws, id, "pending").await;
        put_state_change(&aws, id, "running").await;
    }

    // When the mapping delivers what the queue holds
    let deliveries = mapping.drain(Duration::from_secs(60)).await;

    // Then the eight events came in batches (fewer invocations than events), the password's
    // start is allowed and runs, the others are denied and stopped, one alert each
    let delivered: usize = deliveries
        .iter()
        .map(|d| d.event["Records"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(delivered >= 8, "every event was delivered: {delivered}");
    assert!(
        deliveries.len() < delivered,
        "batches, not one invocation an event: {} for {delivered}",
        deliveries.len()
    );
    assert_eq!(
        recorded_verdict(&local, &aws, &web).await.as_deref(),
        Some("allow")
    );
    let (state, tags) = inspect(&ec2, &web).await;
    assert_eq!(state, "running");
    assert!(
        !tags.contains_key("Auth"),
        "the consumed password's tag is gone"
    );
    for rogue in &rogues {
        assert_eq!(
            recorded_verdict(&local, &aws, rogue).await.as_deref(),
            Some("deny unknown")
        );
        assert_eq!(inspect(&ec2, rogue).await.0, "stopped");
    }
    let received = alerts.drain().await;
    for rogue in &rogues {
        let mine: Vec<_> = received
            .iter()
            .filter(|a| a.message["instance_id"] == rogue.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "one alert per deny: {mine:?}");
        assert_eq!(mine[0].message["action"], "stopped");
    }
    assert!(
        received
            .iter()
            .all(|a| a.message["instance_id"] != web.as_str()),
        "no alert for the allowed start"
    );

    // And nothing is left in the queue or went to the dead-letter queue
    assert_eq!(mapping.in_flight().await, 0);
    assert_eq!(mapping.dead_letters().await, dead_before);
}

#[tokio::test]
async fn a_malformed_message_in_the_queue_is_acknowledged_not_retried() {
    let local = Local::load();
    local.require_lambda();
    let aws = local.aws().await;
    let mapping = LocalMapping::new(&local, &aws).await;
    mapping.drain(Duration::from_secs(30)).await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    for body in [
        "{not json",
        "[1,2,3]",
        r#"{"source":"aws.s3","detail-type":"Object Created"}"#,
    ] {
        sqs.send_message()
            .queue_url(local.get("EC2PASS_STATE_CHANGE_QUEUE_URL"))
            .message_body(body)
            .send()
            .await
            .expect("SendMessage against moto");
    }
    let deliveries = mapping.drain(Duration::from_secs(30)).await;
    assert!(!deliveries.is_empty());
    assert!(
        deliveries.iter().all(|d| d.handed_back.is_empty()),
        "nothing handed back: {:?}",
        deliveries.iter().map(|d| &d.answer).collect::<Vec<_>>()
    );
    assert_eq!(mapping.in_flight().await, 0);
}
