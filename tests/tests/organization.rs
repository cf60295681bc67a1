//! A hub over an Organization, against moto: three member accounts in two regions, each start
//! acted on through its account's member role, and the issuer finding an instance in whichever
//! member it lives (see `ec2pass_tests::org`).
//!
//! The state changes are handed to the hub's guard as the hub's queue holds them on AWS: with the
//! member's account and region, and the instance's ARN. moto's own bus-to-bus forwarding cannot
//! deliver that: it rewrites a forwarded event's `region` to the hub's, drops its `account` and
//! empties its `resources` (the second test shows it, and fails if moto stops doing so, so the
//! workaround is looked at again). On AWS a forwarded event keeps the values EC2 wrote
//! (EventBridge, "Sending and receiving events between AWS accounts"); what the routing itself
//! needs (patterns, targets, the bus policy) is checked offline by `infra/check.py`.

use std::time::Duration;

use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::org::Place;
use ec2pass_shared::password::Password;
use ec2pass_shared::store::dynamo::{DynamoStore, verdict_from_item};
use ec2pass_shared::store::{MintOutcome, MintStore};
use ec2pass_shared::time::UnixTime;
use ec2pass_tests::org::{REGIONS, hub_guard, member_ec2, member_state_change, messages, places};
use ec2pass_tests::{
    AlertQueue, Local, inspect, invocation, launch_instance, now, scan_all, tag, unique,
};
use issuer::request::SlashCommand;

/// Mints a password for `scope` as the issuer does (digest only, 15 minutes).
async fn mint(store: &DynamoStore, scope: &InstanceId) -> Password {
    let cmd = SlashCommand {
        team_id: "T0ORG".into(),
        enterprise_id: None,
        api_app_id: None,
        user_id: unique("U"),
        channel_id: "C0ORG".into(),
        command: "/ec2pass".into(),
        text: String::new(),
        trigger_id: unique("trigger."),
        response_url: None,
        front: Default::default(),
    };
    let (password, mint) = issuer::mint::plan(
        &cmd,
        Some(scope.clone()),
        Duration::from_secs(900),
        UnixTime(now()),
        10,
    );
    assert_eq!(store.mint(&mint).await.ok(), Some(MintOutcome::Minted));
    password
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_stops_denied_starts_in_every_member_account_and_region_through_its_member_role() {
    let local = Local::load();
    let aws = local.aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let store = DynamoStore::new(ddb.clone(), local.table());
    let alerts = AlertQueue::subscribe(&aws, local.get("EC2PASS_ALERT_TOPIC_ARN"), None).await;
    let places = places();
    let mut ec2 = Vec::new();
    for p in &places {
        ec2.push(member_ec2(&aws, p).await);
    }

    // Given in each of three accounts × two regions a start with a password nobody minted
    let mut rogues = Vec::new();
    for client in &ec2 {
        let rogue = launch_instance(client, "org-rogue").await;
        tag(client, &rogue, "Auth", &Password::generate().display()).await;
        rogues.push(rogue);
    }
    // And in alpha/us-east-1 a start with its own password
    let (alpha, alpha_ec2) = (&places[0], &ec2[0]);
    let web = launch_instance(alpha_ec2, "org-web").await;
    tag(alpha_ec2, &web, "Auth", &mint(&store, &web).await.display()).await;
    // And a password minted for an instance of charlie/eu-west-1, presented on one of bravo's
    let (charlie, charlie_ec2) = (&places[5], &ec2[5]);
    let (bravo, bravo_ec2) = (&places[2], &ec2[2]);
    let owner = launch_instance(charlie_ec2, "org-owner").await;
    let thief = launch_instance(bravo_ec2, "org-thief").await;
    let leaked = mint(&store, &owner).await;
    tag(bravo_ec2, &thief, "Auth", &leaked.display()).await;
    // And the hub's own credentials cannot see any of them (they live in the members)
    let hub_ec2 = aws_sdk_ec2::Client::new(&aws);
    assert!(
        hub_ec2
            .describe_instances()
            .instance_ids(web.as_str())
            .send()
            .await
            .map(|o| o.reservations().is_empty())
            .unwrap_or(true),
        "the hub account must not hold the members' instances"
    );

    // When the hub's guard gets every start's pending and running events in one batch
    let guard = hub_guard(&local, &aws);
    let mut events = Vec::new();
    let mut starts: Vec<(&InstanceId, &Place)> = rogues.iter().zip(&places).collect();
    starts.push((&web, alpha));
    starts.push((&thief, bravo));
    for (id, p) in &starts {
        for state in ["pending", "running"] {
            events.push(member_state_change(id, state, p));
        }
    }
    let outcome = guard.handle_batch(&messages(&events), &invocation()).await;
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);

    // Then each rogue is stopped, in its own account and region, through its member role
    for ((rogue, p), client) in rogues.iter().zip(&places).zip(&ec2) {
        assert_eq!(inspect(client, rogue).await.0, "stopped", "{p}");
    }
    // And the allowed start runs, its password consumed and its tag gone
    let (state, tags) = inspect(alpha_ec2, &web).await;
    assert_eq!(state, "running");
    assert!(!tags.contains_key("Auth"));
    // And the password of charlie's instance is refused on bravo's
    assert_eq!(inspect(bravo_ec2, &thief).await.0, "stopped");
    let items = scan_all(&ddb, &local.table()).await;
    let verdict_of = |id: &InstanceId| {
        items
            .iter()
            .filter(|i| {
                i.get("pk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|pk| pk.starts_with(&format!("verdict#{id}@")))
            })
            .map(|i| verdict_from_item(i).expect("a verdict"))
            .collect::<Vec<_>>()
    };
    let theirs = verdict_of(&thief);
    assert_eq!(theirs.len(), 1, "one verdict per start");
    assert_eq!(theirs[0].verdict.kind(), "deny");
    assert_eq!(
        theirs[0].place.as_ref(),
        Some(bravo),
        "the verdict says where"
    );
    assert_eq!(verdict_of(&web)[0].verdict.kind(), "allow");

    // And the alerts name the member account and region of each deny
    let received = alerts.drain().await;
    for (id, p) in starts.iter().filter(|(id, _)| **id != web) {
        let mine: Vec<_> = received
            .iter()
            .filter(|a| a.message["instance_id"] == id.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "one alert for {id}: {mine:?}");
        assert_eq!(mine[0].message["account"], p.account.as_str());
        assert_eq!(mine[0].message["region"], p.region.as_str());
    }
    let wrong = received
        .iter()
        .find(|a| a.message["instance_id"] == thief.as_str())
        .map(|a| a.message["reason"].clone());
    assert_eq!(wrong, Some(serde_json::json!("wrong-instance")));

    // And the leaked password was burned: on its own instance in charlie, it no longer works
    tag(charlie_ec2, &owner, "Auth", &leaked.display()).await;
    let again = guard
        .handle_batch(
            &messages(&[member_state_change(&owner, "running", charlie)]),
            &invocation(),
        )
        .await;
    assert_eq!(
        again.reports.first().and_then(|r| r.reason.as_deref()),
        Some("reused"),
        "the leaked password was burned"
    );
    assert_eq!(inspect(charlie_ec2, &owner).await.0, "stopped");
}

#[tokio::test]
async fn a_members_state_change_reaches_the_hub_queue_through_the_hub_bus_and_moto_rewrites_it() {
    let local = Local::load();
    let aws = local.aws().await;
    let pattern = serde_json::json!({
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["pending", "running"]}
    })
    .to_string();
    // Given a hub bus whose rule sends state changes to a queue (as infra/template.yaml's hub)
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue = sqs
        .create_queue()
        .queue_name(unique("hub-q-"))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .expect("a queue url")
        .to_owned();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .expect("the queue's ARN");
    let hub_events = aws_sdk_eventbridge::Client::new(&aws);
    let bus_name = unique("ec2pass-hub-");
    let bus = hub_events
        .create_event_bus()
        .name(&bus_name)
        .send()
        .await
        .expect("CreateEventBus")
        .event_bus_arn()
        .expect("the bus's ARN")
        .to_owned();
    hub_events
        .put_rule()
        .name("hub-state-changes")
        .event_bus_name(&bus_name)
        .event_pattern(&pattern)
        .send()
        .await
        .expect("PutRule on the hub bus");
    hub_events
        .put_targets()
        .rule("hub-state-changes")
        .event_bus_name(&bus_name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .expect("a target"),
        )
        .send()
        .await
        .expect("PutTargets on the hub bus");
    // And in bravo/eu-west-1, a forwarding rule to the hub bus (as infra/member.yaml's)
    let bravo = Place::new("222222222222", REGIONS[1]);
    let role = format!("arn:aws:iam::{}:role/ec2pass-member", bravo.account);
    let provider = aws_config::sts::AssumeRoleProvider::builder(role)
        .session_name("ec2pass-test")
        .configure(&aws)
        .build()
        .await;
    let member_events = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&aws)
            .region(aws_sdk_eventbridge::config::Region::new(
                bravo.region.clone(),
            ))
            .credentials_provider(provider)
            .build(),
    );
    let rule = unique("ec2pass-forward-");
    member_events
        .put_rule()
        .name(&rule)
        .event_pattern(&pattern)
        .send()
        .await
        .expect("PutRule in the member");
    member_events
        .put_targets()
        .rule(&rule)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("hub")
                .arn(&bus)
                .role_arn(format!(
                    "arn:aws:iam::{}:role/ec2pass-member-forward-{}",
                    bravo.account, bravo.region
                ))
                .build()
                .expect("a target"),
        )
        .send()
        .await
        .expect("PutTargets in the member");

    // When EC2 in bravo/eu-west-1 reports a start (played by PutEvents on its default bus)
    let id = InstanceId::parse("i-0123456789abcdef0").expect("an id");
    let event = member_state_change(&id, "pending", &bravo);
    member_events
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .source("aws.ec2")
                .detail_type("EC2 Instance State-change Notification")
                .resources(event["resources"][0].as_str().unwrap_or_default())
                .detail(event["detail"].to_string())
                .build(),
        )
        .send()
        .await
        .expect("PutEvents in the member");

    // Then it reaches the hub's queue
    let mut body = None;
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .send()
            .await
            .expect("ReceiveMessage");
        if let Some(m) = out.messages().first() {
            body = m.body().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body: serde_json::Value =
        serde_json::from_str(&body.expect("the forwarded event reached the hub's queue"))
            .expect("an event");
    assert_eq!(body["detail"]["instance-id"], id.as_str());
    // And moto has rewritten where it happened (AWS does not): the region is the hub's, the
    // account and the instance's ARN are gone. The hub test above hands the guard the event as
    // AWS delivers it; if this starts to fail, moto forwards faithfully and that test can route
    // through moto instead.
    assert_ne!(body["region"], bravo.region.as_str(), "{body}");
    assert_ne!(body["account"], bravo.account.as_str(), "{body}");
    assert!(
        body["resources"].as_array().is_none_or(Vec::is_empty),
        "{body}"
    );
}

#[tokio::test]
async fn a_hubs_issuer_finds_an_instance_in_whichever_member_account_and_region_it_lives() {
    use ec2pass_tests::org::MEMBERS;
    use issuer::instances::{Ec2Directory, InstanceDirectory};
    let local = Local::load();
    let aws = local.aws().await;
    // Given an instance in bravo/eu-west-1, and the issuer of a hub over all three members
    let bravo = bravo_again();
    let id = launch_instance(&member_ec2(&aws, &bravo).await, "org-found").await;
    let accounts: Vec<String> = MEMBERS.iter().map(|(a, i)| format!("{a}={i}")).collect();
    let hub = ec2pass_shared::org::Hub {
        role: "ec2pass-lookup".into(),
        partition: "aws".into(),
        members: ec2pass_shared::org::members(&accounts.join(",")).expect("members"),
        regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
        units: Vec::new(),
    };
    let directory = Ec2Directory::hub(aws_sdk_ec2::Client::new(&aws), hub, aws.clone());

    // When it looks the instance up, it is found there, with the account's alias
    let found = directory.describe(&id).await.expect("looked up");
    let place = found.and_then(|i| i.place);
    assert_eq!(place, Some(("bravo".to_owned(), bravo)));
    // And looked for only where the requester said (`in alpha`), it is not found
    let alpha: Vec<Place> = REGIONS
        .iter()
        .map(|r| Place::new(MEMBERS[0].1, *r))
        .collect();
    assert!(matches!(
        directory.describe_in(&id, Some(&alpha)).await,
        Ok(None)
    ));
    assert!(
        directory
            .describe_in(&id, Some(std::slice::from_ref(&bravo_again())))
            .await
            .ok()
            .flatten()
            .is_some()
    );
    // And an instance no member has is unknown, not an error
    let nowhere = InstanceId::parse("i-0fedcba9876543210").expect("an id");
    assert!(matches!(directory.describe(&nowhere).await, Ok(None)));
}

/// bravo/eu-west-1.
fn bravo_again() -> Place {
    Place::new(ec2pass_tests::org::MEMBERS[1].1, REGIONS[1])
}

#[tokio::test]
async fn an_account_that_joins_an_organization_unit_is_swept_and_searched_without_anyone_listing_it()
 {
    use ec2pass_shared::org::{Hub, OrgRoster, Roster, alias_for};
    use issuer::instances::{Ec2Directory, InstanceDirectory};
    let local = Local::load();
    let aws = local.aws().await;
    let alerts = AlertQueue::subscribe(&aws, local.get("EC2PASS_ALERT_TOPIC_ARN"), None).await;
    // Given an account that has just joined an OU under the hub's unit, and in it an instance
    // started while the hub received nothing (its events lost, or its forwarding not yet there)
    let (unit, account, name) = ec2pass_tests::org::joined_account(&aws).await;
    let place = Place::new(&account, REGIONS[1]);
    let client = member_ec2(&aws, &place).await;
    let lost = launch_instance(&client, "org-joined").await;

    // When the hub reads its members from the Organization
    let hub = Hub {
        role: "ec2pass-lookup".into(),
        partition: "aws".into(),
        members: Vec::new(),
        regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
        units: vec![unit.clone()],
    };
    let roster = OrgRoster::new(hub.clone(), aws_sdk_organizations::Client::new(&aws));
    let now = roster.current().await;
    // Then the new account is a member, under its Organizations name, found in the sub-OU
    assert_eq!(now.problem, None);
    let alias = alias_for(&name, &account);
    assert_eq!(
        now.hub
            .members
            .iter()
            .map(|m| (m.alias.as_str(), m.id.as_str()))
            .collect::<Vec<_>>(),
        [(alias.as_str(), account.as_str())]
    );

    // And the hub's issuer finds the instance there, named by that alias
    // (warmed first, as the issuer's cold start warms it: a first request otherwise waits at most
    // 500 ms for the Organization, and a loaded emulator can take longer)
    let directory = Ec2Directory::hub(aws_sdk_ec2::Client::new(&aws), hub.clone(), aws.clone());
    directory.warm().await;
    let found = directory.describe(&lost).await.expect("looked up");
    assert_eq!(found.and_then(|i| i.place), Some((alias, place.clone())));
    // And a hub that cannot read its Organization (an OU that does not exist) answers "try
    // again" for an instance its short list does not have, never "unknown"
    let unreadable = Hub {
        units: vec!["ou-zzzz-zzzzzzzz".into()],
        ..hub.clone()
    };
    let blind = Ec2Directory::hub(aws_sdk_ec2::Client::new(&aws), unreadable, aws.clone());
    assert!(blind.describe(&lost).await.is_err());
    // And a hub whose list does not hold the account does not look there, even when the
    // requester names it (`in <id>`): only members are searched
    let outside = Hub {
        units: Vec::new(),
        members: ec2pass_shared::org::members("alpha=111111111111").expect("members"),
        ..hub.clone()
    };
    let narrow = Ec2Directory::hub(aws_sdk_ec2::Client::new(&aws), outside, aws.clone());
    assert!(matches!(
        narrow
            .describe_in(&lost, Some(std::slice::from_ref(&place)))
            .await,
        Ok(None)
    ));

    // And the hub's sweep stops the instance through the new account's member role
    let guard = ec2pass_tests::org::hub_guard_reading(&local, &aws, &[unit]);
    let sweep = serde_json::json!({"version":"0","id":unique("sweep-"),"detail-type":"Scheduled Event",
        "source":"aws.events","account":"123456789012","time":"2026-11-21T10:00:00Z",
        "region":"us-east-1","resources":["arn:aws:events:us-east-1:123456789012:rule/ec2pass-sweep"],
        "detail":{}});
    let reports = guard
        .handle(&sweep, &invocation())
        .await
        .expect("the sweep");
    assert!(
        reports.iter().any(|r| r.instance_id == lost.as_str()),
        "{reports:?}"
    );
    assert_eq!(inspect(&client, &lost).await.0, "stopped");
    let received = alerts.drain().await;
    let deny: Vec<_> = received
        .iter()
        .map(|a| &a.message)
        .filter(|a| a["instance_id"] == lost.as_str() && a["verdict"] == "deny")
        .collect();
    assert_eq!(deny.len(), 1, "{received:?}");
    assert_eq!(deny[0]["account"], account.as_str());
    assert_eq!(deny[0]["region"], REGIONS[1]);
}
