//! `make demo`: the product's main job, narrated, against the local emulator.
//!
//! Plays Slack (signed slash commands to the issuer under `cargo lambda watch`) and checks every
//! step; the first step that does not happen as it should ends the demo with exit code 1.

use std::process::ExitCode;
use std::time::Duration;

use aws_config::SdkConfig;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::password::Password;
use ec2pass_tests::esm::{LocalMapping, put_state_change, recorded_verdict};
use ec2pass_tests::{
    AlertQueue, Local, Slack, SlashCommand, inspect, launch_instance, tag, unique,
};

/// A step that did not happen.
struct Failed(String);

fn step(n: u32, what: &str) {
    println!("\n{n}. {what}");
}

fn show(line: &str) {
    println!("   {line}");
}

fn check(ok: bool, what: &str) -> Result<(), Failed> {
    if ok {
        println!("   ✔ {what}");
        Ok(())
    } else {
        Err(Failed(what.to_owned()))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    println!(
        "ec2pass demo: the local AWS emulator (moto) and both Lambdas under cargo lambda watch"
    );
    match story().await {
        Ok(()) => {
            println!("\nAll steps happened as they should.");
            ExitCode::SUCCESS
        }
        Err(Failed(what)) => {
            eprintln!("\n✘ DEMO FAILED: expected that {what}");
            ExitCode::FAILURE
        }
    }
}

async fn story() -> Result<(), Failed> {
    let local = Local::load();
    let aws = local.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let slack = Slack::local(&local);
    let alice = unique("U0ALICE");

    step(1, "An operator has an instance called demo-web.");
    let id = launch_instance(&ec2, "demo-web").await;
    show(&format!("instance {id}"));

    step(2, &format!("Alice types `/ec2pass {id}` in Slack."));
    let mint = SlashCommand::new("T0DEMO", &alice, id.as_str());
    let answer = slack.send(&mint).await;
    check(
        answer.is_ephemeral(),
        "the issuer answers 200 with an ephemeral message",
    )?;
    let password = answer.password();
    check(password.is_some(), "the answer carries a one-time password")?;
    show(&format!("Slack shows only Alice: {}", answer.text()));
    check(
        answer.raw.contains("demo-web"),
        "the answer names the instance (Name tag and state)",
    )?;

    step(3, "Alice types `/ec2pass list`.");
    let list = slack
        .send(&SlashCommand::new("T0DEMO", &alice, "list"))
        .await;
    show(list.text());
    let short_id = list
        .text()
        .split('`')
        .find(|w| ec2pass_shared::ids::ShortId::parse(w).is_some())
        .map(str::to_owned);
    check(
        list.raw.contains(id.as_str()),
        "the list shows the outstanding password for the instance",
    )?;
    check(
        password
            .as_ref()
            .is_some_and(|p| !list.raw.contains(p.as_str())),
        "the list never shows the password itself",
    )?;

    step(4, "Mallory captured Alice's signed request and replays it.");
    let replay = slack.send(&mint).await;
    show(replay.text());
    check(replay.password().is_none(), "the replay gets no password")?;

    step(5, "Mallory forges a request without the signing secret.");
    let forged = slack
        .post(
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                (
                    "x-slack-request-timestamp",
                    &ec2pass_tests::now().to_string(),
                ),
                (
                    "x-slack-signature",
                    "v0=0000000000000000000000000000000000000000000000000000000000000000",
                ),
            ],
            SlashCommand::new("T0DEMO", "U0MALLORY", id.as_str())
                .body()
                .into_bytes(),
        )
        .await;
    show(&format!("HTTP {}", forged.status));
    check(
        forged.status == 401,
        "a forged request gets 401 and nothing else",
    )?;

    step(6, "Alice changes her mind: `/ec2pass revoke <id>`.");
    let short_id = short_id.ok_or_else(|| Failed("the list shows a short id".into()))?;
    let revoke = slack
        .send(&SlashCommand::new(
            "T0DEMO",
            &alice,
            &format!("revoke {short_id}"),
        ))
        .await;
    show(revoke.text());
    check(revoke.text().contains("Revoked"), "the password is revoked")?;
    let list = slack
        .send(&SlashCommand::new("T0DEMO", &alice, "list"))
        .await;
    check(
        list.text().contains("no outstanding"),
        "nothing is outstanding any more",
    )?;

    step(7, "Alice types `/ec2pass start my box` (a typo).");
    let typo = slack
        .send(&SlashCommand::new("T0DEMO", &alice, "start my box"))
        .await;
    check(
        typo.is_ephemeral() && typo.text().contains("don't understand"),
        "she gets a usage message, not an error",
    )?;

    println!(
        "\n— The guard. The demo puts the state changes EC2 would send on EventBridge (moto's);"
    );
    println!(
        "  the template's rule routes them into the state-change queue, and the demo plays Lambda's"
    );
    println!("  event source mapping: it delivers the queue's messages to the guard in batches. —");
    let mapping = LocalMapping::new(&local, &aws).await;
    mapping.drain(Duration::from_secs(30)).await;
    let guard = |id: InstanceId, state: &'static str| {
        let (local, aws, mapping) = (&local, &aws, &mapping);
        async move { through_the_queue(local, aws, mapping, &id, state).await }
    };
    let alerts = AlertQueue::subscribe(&aws, local.get("EC2PASS_ALERT_TOPIC_ARN"), None).await;

    step(
        8,
        &format!("Alice asks again, sets the Auth tag on {id} and starts it."),
    );
    let answer = slack
        .send(&SlashCommand::new("T0DEMO", &alice, id.as_str()))
        .await;
    let password = answer
        .password()
        .ok_or_else(|| Failed("the issuer answers with a password".into()))?;
    tag(&ec2, &id, "Auth", &password).await;
    let verdict = guard(id.clone(), "pending").await?;
    show(&verdict);
    check(verdict.starts_with("allow"), "the guard allows the start")?;
    let (state, tags) = inspect(&ec2, &id).await;
    check(
        state == "running" && !tags.contains_key("Auth"),
        "the instance keeps running and the Auth tag is gone",
    )?;
    let verdict = guard(id.clone(), "running").await?;
    check(
        verdict.starts_with("allow"),
        "the running event of the same start changes nothing",
    )?;

    step(
        9,
        "Someone with stolen credentials launches crypto-miner, with no password.",
    );
    let miner = launch_instance(&ec2, "crypto-miner").await;
    let verdict = guard(miner.clone(), "pending").await?;
    show(&verdict);
    expect_stopped(&ec2, &alerts, &miner, &verdict, "missing").await?;

    step(
        10,
        "They try again with a made-up password in the Auth tag.",
    );
    let guess = launch_instance(&ec2, "crypto-miner-2").await;
    tag(&ec2, &guess, "Auth", &Password::generate().display()).await;
    let verdict = guard(guess.clone(), "pending").await?;
    show(&verdict);
    expect_stopped(&ec2, &alerts, &guess, &verdict, "unknown").await?;

    step(
        11,
        "Bob's password for build-box leaks; Mallory puts it on her own instance first.",
    );
    let build = launch_instance(&ec2, "build-box").await;
    let bob = slack
        .send(&SlashCommand::new(
            "T0DEMO",
            &unique("U0BOB"),
            build.as_str(),
        ))
        .await;
    let leaked = bob
        .password()
        .ok_or_else(|| Failed("Bob gets a password".into()))?;
    let mallory = launch_instance(&ec2, "mallory-box").await;
    tag(&ec2, &mallory, "Auth", &leaked).await;
    let verdict = guard(mallory.clone(), "pending").await?;
    show(&verdict);
    expect_stopped(&ec2, &alerts, &mallory, &verdict, "wrong-instance").await?;

    step(
        12,
        "Bob then uses the same password on build-box: it was burned when it leaked.",
    );
    tag(&ec2, &build, "Auth", &leaked).await;
    let verdict = guard(build.clone(), "pending").await?;
    show(&verdict);
    expect_stopped(&ec2, &alerts, &build, &verdict, "reused").await?;
    organization(&local, &aws, &alerts).await
}

/// The same product for an Organization: this account as the hub, three member accounts in two
/// regions (see `ec2pass_tests::org`). The hub's guard and the hub issuer's search run in-process
/// here (the functions under `cargo lambda watch` are the single-account stack), with the code
/// and settings a hub deploys.
async fn organization(local: &Local, aws: &SdkConfig, alerts: &AlertQueue) -> Result<(), Failed> {
    use ec2pass_shared::org::{Hub, Place, members};
    use ec2pass_tests::org::{
        MEMBERS, REGIONS, hub_guard, member_ec2, member_state_change, messages,
    };
    use issuer::instances::{Ec2Directory, InstanceDirectory};

    let hub = hub_guard(local, aws);
    let (bravo, charlie) = (
        Place::new(MEMBERS[1].1, REGIONS[1]),
        Place::new(MEMBERS[2].1, REGIONS[0]),
    );
    step(
        13,
        &format!(
            "ec2pass now serves an Organization: this account is the hub of {} member accounts in {}. Eve, with keys stolen in bravo, launches a miner in {}.",
            MEMBERS.len(),
            REGIONS.join(" and "),
            bravo.region
        ),
    );
    let bravo_ec2 = member_ec2(aws, &bravo).await;
    let miner = launch_instance(&bravo_ec2, "bravo-miner").await;
    let outcome = hub
        .handle_batch(
            &messages(&[
                member_state_change(&miner, "pending", &bravo),
                member_state_change(&miner, "running", &bravo),
            ]),
            &ec2pass_tests::invocation(),
        )
        .await;
    show(&format!(
        "hub guard: {}",
        outcome
            .reports
            .iter()
            .map(|r| format!("{} ({})", r.verdict, r.reason.as_deref().unwrap_or("-")))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    check(
        inspect(&bravo_ec2, &miner).await.0 == "stopped",
        "the hub's guard stops it in bravo, through bravo's member role",
    )?;
    let about: Vec<_> = alerts
        .drain()
        .await
        .into_iter()
        .filter(|a| a.message["instance_id"] == miner.as_str())
        .collect();
    check(
        about.len() == 1
            && about[0].message["account"] == bravo.account.as_str()
            && about[0].message["region"] == bravo.region.as_str(),
        "one alert, naming bravo's account and eu-west-1",
    )?;

    step(
        14,
        "Alice's server runs in charlie, in us-east-1; she does not need to know where.",
    );
    let charlie_ec2 = member_ec2(aws, &charlie).await;
    let server = launch_instance(&charlie_ec2, "charlie-api").await;
    let accounts: Vec<String> = MEMBERS.iter().map(|(a, i)| format!("{a}={i}")).collect();
    let lookup = Ec2Directory::hub(
        aws_sdk_ec2::Client::new(aws),
        Hub {
            role: "ec2pass-lookup".into(),
            partition: "aws".into(),
            members: members(&accounts.join(",")).map_err(|e| Failed(e.to_string()))?,
            regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
            units: Vec::new(),
        },
        aws.clone(),
    );
    let found = lookup
        .describe(&server)
        .await
        .ok()
        .flatten()
        .and_then(|i| i.place);
    show(&format!(
        "hub issuer: found {server} in {}",
        found.as_ref().map_or_else(
            || "no account".to_owned(),
            |(alias, p)| format!("{alias}/{}", p.region)
        )
    ));
    check(
        found == Some(("charlie".to_owned(), charlie.clone())),
        "the hub's issuer finds it in charlie/us-east-1, through the read-only lookup role",
    )?;
    Ok(())
}

/// Puts a state change on EventBridge, delivers what reaches the queue to the guard, and reads
/// the verdict it recorded; the verdict, as a line.
async fn through_the_queue(
    local: &Local,
    aws: &SdkConfig,
    mapping: &LocalMapping,
    id: &InstanceId,
    state: &str,
) -> Result<String, Failed> {
    put_state_change(aws, id, state).await;
    let deliveries = mapping.drain(Duration::from_secs(30)).await;
    check(
        !deliveries.is_empty() && mapping.in_flight().await == 0,
        "the event reaches the guard through the queue, and the queue is empty after",
    )?;
    Ok(match recorded_verdict(local, aws, id).await {
        Some(v) => match v.split_once(' ') {
            Some((kind, reason)) => format!(
                "guard: {kind} ({reason}), in {} batch(es) from the queue",
                deliveries.len()
            ),
            None => format!(
                "{v} (guard verdict, in {} batch(es) from the queue)",
                deliveries.len()
            ),
        },
        None => "no verdict".to_owned(),
    })
}

/// Checks that a denied instance is stopped and that exactly one alert about it arrived.
async fn expect_stopped(
    ec2: &aws_sdk_ec2::Client,
    alerts: &AlertQueue,
    id: &InstanceId,
    verdict: &str,
    reason: &str,
) -> Result<(), Failed> {
    check(
        verdict.contains(&format!("deny ({reason})")),
        &format!("the guard denies it: {reason}"),
    )?;
    check(
        inspect(ec2, id).await.0 == "stopped",
        "the instance is stopped",
    )?;
    let received: Vec<_> = alerts
        .drain()
        .await
        .into_iter()
        .filter(|a| a.message["instance_id"] == id.as_str())
        .collect();
    if let Some(alert) = received.first() {
        show(&format!("alert: {}", alert.subject));
    }
    check(
        received.len() == 1 && received[0].message["reason"] == reason,
        "exactly one alert arrives on the SNS topic (read from a subscribed SQS queue)",
    )
}
