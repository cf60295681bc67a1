//! End to end: a password minted by the real `issuer` binary, checked by the real `guard`
//! binary, both under `cargo lambda watch`, against moto. EventBridge is played by invoking the
//! guard with event JSON of the documented shape.

use ec2pass_shared::password::Password;
use ec2pass_tests::{
    AlertQueue, Local, Slack, SlashCommand, inspect, invoke, launch_instance, state_change, tag,
    unique,
};

#[tokio::test]
async fn the_guard_binary_allows_what_the_issuer_binary_minted_and_stops_the_rest() {
    let local = Local::load();
    let aws = local.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let slack = Slack::local(&local);
    let alerts = AlertQueue::subscribe(&aws, local.get("EC2PASS_ALERT_TOPIC_ARN"), None).await;

    // Given a password minted over HTTP by the issuer, set as the instance's Auth tag
    let web = launch_instance(&ec2, "e2e-web").await;
    let answer = slack
        .send(&SlashCommand::new("T0E2E", &unique("U"), web.as_str()))
        .await;
    let password = answer
        .password()
        .unwrap_or_else(|| panic!("the issuer answered without a password: {}", answer.text()));
    tag(&ec2, &web, "Auth", &password).await;

    // When the guard gets the pending event, then the running event of the same start
    let pending = invoke(&local, "guard", &state_change(&web, "pending")).await;
    let running = invoke(&local, "guard", &state_change(&web, "running")).await;

    // Then the start is allowed once and enforced once more, the tag is gone, nothing is stopped
    assert_eq!(pending["reports"][0]["verdict"], "allow", "{pending}");
    assert_eq!(pending["reports"][0]["decided_here"], true, "{pending}");
    assert_eq!(running["reports"][0]["verdict"], "allow", "{running}");
    assert_eq!(running["reports"][0]["decided_here"], false, "{running}");
    let (state, tags) = inspect(&ec2, &web).await;
    assert_eq!(state, "running");
    assert!(!tags.contains_key("Auth"));

    // And an instance started with a made-up password is stopped and announced
    let rogue = launch_instance(&ec2, "e2e-rogue").await;
    tag(&ec2, &rogue, "Auth", &Password::generate().display()).await;
    let denied = invoke(&local, "guard", &state_change(&rogue, "pending")).await;
    assert_eq!(denied["reports"][0]["verdict"], "deny", "{denied}");
    assert_eq!(denied["reports"][0]["reason"], "unknown", "{denied}");
    assert_eq!(inspect(&ec2, &rogue).await.0, "stopped");
    let received: Vec<_> = alerts
        .drain()
        .await
        .into_iter()
        .filter(|a| {
            a.message["instance_id"] == rogue.as_str() || a.message["instance_id"] == web.as_str()
        })
        .collect();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].message["instance_id"], rogue.as_str());

    // And the functions' log never held the password
    let log = std::fs::read_to_string(ec2pass_tests::root().join(".dev/logs/lambda.log"))
        .unwrap_or_default();
    assert!(log.contains("allow"), "the guard's log lines are there");
    let canonical = Password::from_tag(&password)
        .map(|p| p.canonical().to_owned())
        .unwrap_or_default();
    assert!(!log.contains(&password) && !log.contains(&canonical));
}
