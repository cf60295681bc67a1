//! `make demo`: the product's main job, narrated, against the local emulator.
//!
//! Plays Slack and Mattermost (slash commands and a button press to the issuer under `cargo lambda
//! watch`), stands in for their reply URLs, and checks every
//! step; the first step that does not happen as it should ends the demo with exit code 1.

use std::process::ExitCode;
use std::time::Duration;

use aws_config::SdkConfig;
use ec2pass_shared::ids::InstanceId;
use ec2pass_shared::password::Password;
use ec2pass_shared::reply::origins;
use ec2pass_shared::store::dynamo::DynamoStore;
use ec2pass_shared::time::{FixedClock, UnixTime};
use ec2pass_tests::chat::{ChatStandIn, Mode};
use ec2pass_tests::esm::{LocalMapping, put_state_change, recorded_verdict};
use ec2pass_tests::{
    AlertQueue, Local, Slack, SlashCommand, inspect, launch_instance, now, tag, unique,
};
use issuer::channel::NoChannel;
use issuer::chat::HttpChat;
use issuer::followup::Followup;

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
        "ec2pass demo: the local AWS emulator (moto), the issuer and the guard under cargo lambda watch, the follow-up in-process"
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
    chat_loop(&local, &aws, &slack, &mapping).await?;
    organization(&local, &aws, &alerts).await?;
    attribution(&local, &aws, &mapping, &alerts).await
}

/// The loop in chat (docs/chat.md): what each requester hears back, the Revoke button, `status`,
/// and the same command from Mattermost. A stand-in for Slack's and Mattermost's reply URLs
/// listens on 127.0.0.1:4010 and records what it receives; the follow-up function runs
/// in-process, fed from its own queue on the alert topic as the stack subscribes it.
async fn chat_loop(
    local: &Local,
    aws: &SdkConfig,
    slack: &Slack,
    mapping: &LocalMapping,
) -> Result<(), Failed> {
    println!(
        "\n— The loop in chat: a stand-in for the chat's reply URLs listens on 127.0.0.1:4010. —"
    );
    let ec2 = aws_sdk_ec2::Client::new(aws);
    let chat = ChatStandIn::start_on(4010, Mode::Up);
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), local.table());
    let followups = AlertQueue::subscribe(
        aws,
        local.get("EC2PASS_ALERT_TOPIC_ARN"),
        Some(r#"{"verdict": ["allow", "deny"]}"#),
    )
    .await;
    let follow = |clock: FixedClock| Followup {
        store: store.clone(),
        chat: HttpChat::new().unwrap_or_else(|e| panic!("an HTTP client: {e}")),
        clock,
        origins: origins(local.get("EC2PASS_REPLY_ORIGINS")).unwrap_or_default(),
        key: local
            .reply_key()
            .unwrap_or_else(|| panic!("EC2PASS_DEV_REPLY_KEY in dev/local.env")),
        channel: NoChannel,
        bot: None,
    };
    let heard = |chat: &ChatStandIn, since: usize| -> Vec<String> {
        chat.received()
            .iter()
            .skip(since)
            .map(|r| r.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let carol = unique("U0CAROL");

    step(
        13,
        "Carol asks for a password for demo-api; her answer has a Revoke button.",
    );
    let api = launch_instance(&ec2, "demo-api").await;
    let answer = slack
        .send(&SlashCommand::new("T0DEMO", &carol, api.as_str()).replying_to(&chat.reply_url()))
        .await;
    let button = answer.json.as_ref().and_then(|j| {
        j["blocks"].as_array()?.iter().find_map(|b| {
            let e = b["elements"]
                .as_array()?
                .iter()
                .find(|e| e["action_id"] == "revoke")?;
            e["value"].as_str().map(str::to_owned)
        })
    });
    let short_id = button.ok_or_else(|| Failed("the answer has a Revoke button".into()))?;
    show(&format!("button: Revoke (password {short_id})"));
    let password = answer
        .password()
        .ok_or_else(|| Failed("Carol gets a password".into()))?;

    step(
        14,
        "Carol presses Revoke; Slack posts the press to the interactivity URL.",
    );
    let before = chat.received().len();
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": carol, "username": "carol", "name": "carol", "team_id": "T0DEMO"},
        "api_app_id": "A0DEMO",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0DEMO", "is_ephemeral": true},
        "trigger_id": unique("trigger."),
        "team": {"id": "T0DEMO", "domain": "demo"},
        "channel": {"id": "C0DEMO", "name": "ops"},
        "response_url": format!("{}/actions/T0DEMO/1/x", chat.origin),
        "actions": [{"action_id": "revoke", "block_id": "b", "type": "button", "value": short_id,
                     "text": {"type": "plain_text", "text": "Revoke"}, "action_ts": "1700000010.000200"}],
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default();
    let pressed = slack.send_to("slack/actions", &body).await;
    show(&format!("HTTP {}", pressed.status));
    let replaced = chat
        .received()
        .into_iter()
        .skip(before)
        .find(|r| r.path.starts_with("/actions/"));
    if let Some(r) = &replaced {
        show(&format!(
            "the message is replaced: {}",
            r.body["text"].as_str().unwrap_or_default()
        ));
    }
    check(
        pressed.status == 200
            && replaced.as_ref().is_some_and(|r| {
                r.body["replace_original"] == true
                    && r.body["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("Revoked"))
            }),
        "the press revokes the password and the message is replaced in place",
    )?;
    tag(&ec2, &api, "Auth", &password).await;
    let verdict = through_the_queue(local, aws, mapping, &api, "pending").await?;
    expect_denied(&verdict, "the revoked password no longer starts demo-api")?;
    let _ = followups.drain().await;

    step(
        15,
        "Carol asks for demo-app and starts it; the schedule tells her it was used.",
    );
    let app = launch_instance(&ec2, "demo-app").await;
    let answer = slack
        .send(&SlashCommand::new("T0DEMO", &carol, app.as_str()).replying_to(&chat.reply_url()))
        .await;
    let password = answer
        .password()
        .ok_or_else(|| Failed("Carol gets a password".into()))?;
    tag(&ec2, &app, "Auth", &password).await;
    let verdict = through_the_queue(local, aws, mapping, &app, "pending").await?;
    show(&verdict);
    check(verdict.starts_with("allow"), "the guard allows the start")?;
    let before = chat.received().len();
    follow(FixedClock(UnixTime(now())))
        .catch_up()
        .await
        .map_err(|e| Failed(format!("the schedule's run works: {e}")))?;
    let told = heard(&chat, before);
    for t in &told {
        show(&format!("Carol hears: {t}"));
    }
    check(
        told.iter()
            .any(|t| t.contains("was used") && t.contains(app.as_str())),
        "Carol hears that her password was used, on which instance and when",
    )?;

    step(
        16,
        "Dan's password leaks; Mallory sets it on her own instance first.",
    );
    let dan = unique("U0DAN");
    let db = launch_instance(&ec2, "demo-db").await;
    let answer = slack
        .send(&SlashCommand::new("T0DEMO", &dan, db.as_str()).replying_to(&chat.reply_url()))
        .await;
    let leaked = answer
        .password()
        .ok_or_else(|| Failed("Dan gets a password".into()))?;
    let box2 = launch_instance(&ec2, "mallory-box-2").await;
    tag(&ec2, &box2, "Auth", &leaked).await;
    let verdict = through_the_queue(local, aws, mapping, &box2, "pending").await?;
    expect_denied(&verdict, "the guard stops Mallory's instance")?;
    let before = chat.received().len();
    let queued = followups.drain_as_queued().await;
    let again = follow(FixedClock(UnixTime(now()))).on_batch(&queued).await;
    let told = heard(&chat, before);
    for t in &told {
        show(&format!("Dan hears: {t}"));
    }
    check(
        again.is_empty()
            && told
                .iter()
                .any(|t| t.contains("presented on another instance") && t.contains("leaked")),
        "Dan hears at once that his password leaked and is burned",
    )?;
    check(
        chat.received().iter().all(|r| {
            !r.body.to_string().contains(&leaked) && !r.body.to_string().contains(&password)
        }),
        "no follow-up ever holds a password",
    )?;

    step(
        17,
        "Erin's password is left unused until it expires (the schedule runs 6 minutes on).",
    );
    let erin = unique("U0ERIN");
    let answer = slack
        .send(
            &SlashCommand::new("T0DEMO", &erin, &format!("{} 5m", api.as_str()))
                .replying_to(&chat.reply_url()),
        )
        .await;
    check(
        answer.password().is_some(),
        "Erin gets a password for 5 minutes",
    )?;
    let before = chat.received().len();
    follow(FixedClock(UnixTime(now() + 6 * 60)))
        .catch_up()
        .await
        .map_err(|e| Failed(format!("the schedule's run works: {e}")))?;
    let told = heard(&chat, before);
    for t in told.iter().filter(|t| t.contains("expired")) {
        show(&format!("Erin hears: {t}"));
    }
    check(
        told.iter().any(|t| t.contains("expired unused")),
        "Erin hears that her password expired unused",
    )?;

    step(
        18,
        &format!("Carol types `/ec2pass status {api}`, then `status {app}`."),
    );
    for (id, what) in [(&api, "denied (unknown)"), (&app, "allowed")] {
        let status = slack
            .send(&SlashCommand::new(
                "T0DEMO",
                &carol,
                &format!("status {id}"),
            ))
            .await;
        show(&status.text().replace('\n', " "));
        check(
            status.text().contains(what),
            &format!("she sees {id}'s latest verdict: {what}, and when"),
        )?;
    }

    step(19, "Frank types `/ec2pass <demo-api's id>` in Mattermost.");
    let mattermost = serde_urlencoded::to_string([
        ("channel_id", "c0demochannel000000000000a"),
        ("channel_name", "town-square"),
        ("command", "/ec2pass"),
        (
            "response_url",
            &format!("{}/hooks/commands/{}", chat.origin, unique("mm")),
        ),
        ("team_domain", "demo"),
        ("team_id", "t0demoteam0000000000000000"),
        ("text", api.as_str()),
        ("token", local.mattermost_token()),
        ("trigger_id", &unique("mmtrigger")),
        ("user_id", "u0frank0000000000000000000"),
        ("user_name", "frank"),
    ])
    .unwrap_or_default();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let answer = slack
        .post_to("mattermost", &form, mattermost.clone().into_bytes())
        .await;
    let text = answer
        .json
        .as_ref()
        .and_then(|j| j["text"].as_str())
        .unwrap_or_default()
        .to_owned();
    show(&text.replace('\n', " "));
    check(
        answer.status == 200
            && text.contains("**Your one-time password**")
            && answer.password().is_some(),
        "Mattermost gets the same answer, in Markdown",
    )?;
    let forged = mattermost.replace(local.mattermost_token(), "mmtokenguessed000000000000");
    let refused = slack
        .post_to("mattermost", &form, forged.into_bytes())
        .await;
    check(
        refused.status == 401,
        "a request without the command's token gets 401",
    )?;
    let before = chat.received().len();
    follow(FixedClock(UnixTime(now() + 16 * 60)))
        .catch_up()
        .await
        .map_err(|e| Failed(format!("the schedule's run works: {e}")))?;
    let to_mattermost: Vec<_> = chat
        .received()
        .into_iter()
        .skip(before)
        .filter(|r| r.path.starts_with("/hooks/commands/"))
        .collect();
    for r in &to_mattermost {
        show(&format!(
            "Frank hears, in Mattermost: {}",
            r.body["text"].as_str().unwrap_or_default()
        ));
    }
    check(
        to_mattermost.len() == 1
            && to_mattermost[0].body.get("blocks").is_none()
            && to_mattermost[0].body["text"]
                .as_str()
                .is_some_and(|t| t.contains("expired unused")),
        "Frank's follow-up reaches Mattermost's own reply URL, as Markdown",
    )?;
    Ok(())
}

/// A verdict that is a deny (any reason).
fn expect_denied(verdict: &str, what: &str) -> Result<(), Failed> {
    show(verdict);
    check(verdict.contains("deny ("), what)
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
        20,
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
        21,
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

/// Who started it, and cutting them off (docs/operations.md, "After an attributed deny"):
/// CloudTrail's record of the call, put on EventBridge as CloudTrail does and routed by the
/// template's rule to the call queue; the attribution path in-process with the response on; IAM
/// in the emulator.
async fn attribution(
    local: &Local,
    aws: &SdkConfig,
    mapping: &LocalMapping,
    alerts: &AlertQueue,
) -> Result<(), Failed> {
    use ec2pass_tests::calls::{launch_time, local_attributor, roles_start, route, users_run};
    println!(
        "\n— Who started it: CloudTrail's calls reach the attribution path; the response is on. —"
    );
    let ec2 = aws_sdk_ec2::Client::new(aws);
    let iam = aws_sdk_iam::Client::new(aws);
    let attributor = local_attributor(local, aws, true);
    let about =
        |all: Vec<ec2pass_tests::Received>, id: &InstanceId| -> Vec<ec2pass_tests::Received> {
            all.into_iter()
                .filter(|a| a.message["instance_id"] == id.as_str())
                .collect()
        };

    let user = unique("ci-bot-");
    step(
        22,
        &format!(
            "Mallory has the stolen access key of IAM user {user}; she starts crypto-miner-3 with it."
        ),
    );
    iam.create_user()
        .user_name(&user)
        .send()
        .await
        .map_err(|e| Failed(format!("IAM creates the user: {e}")))?;
    let key = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .ok()
        .and_then(|k| k.access_key)
        .map(|k| k.access_key_id)
        .ok_or_else(|| Failed("IAM gives the user an access key".into()))?;
    let miner = launch_instance(&ec2, "crypto-miner-3").await;
    let launched = launch_time(&ec2, &miner).await;
    let verdict = through_the_queue(local, aws, mapping, &miner, "pending").await?;
    expect_stopped(&ec2, alerts, &miner, &verdict, "missing").await?;
    let calls = route(local, aws, &users_run(&miner, launched, &user, &key)).await;
    check(
        calls.len() == 1,
        "CloudTrail's RunInstances reaches the call queue through the template's rule",
    )?;
    attributor.handle_batch(&calls).await;
    let heard = about(alerts.drain().await, &miner);
    let told = heard.iter().find(|a| a.message["verdict"] == "attribution");
    if let Some(a) = told {
        show(&format!("alert: {}", a.subject));
        show(&format!(
            "  started by {} with key {}, from {}",
            a.message["caller"]["principal_arn"].as_str().unwrap_or("?"),
            a.message["caller"]["access_key_id"].as_str().unwrap_or("?"),
            a.message["caller"]["source_ip"].as_str().unwrap_or("?")
        ));
    }
    check(
        told.is_some_and(|a| a.message["caller"]["access_key_id"] == key.as_str()),
        "an attribution alert follows the deny: who made the call, with which key, from where",
    )?;
    let response = heard.iter().find(|a| a.message["verdict"] == "response");
    if let Some(r) = response {
        show(&format!("alert: {}", r.subject));
        show(&format!(
            "  {}",
            r.message["detail"].as_str().unwrap_or_default()
        ));
    }
    let status: Vec<String> = iam
        .list_access_keys()
        .user_name(&user)
        .send()
        .await
        .map(|o| {
            o.access_key_metadata()
                .iter()
                .filter_map(|k| k.status().map(|s| s.as_str().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    check(
        status == ["Inactive"]
            && response.is_some_and(|r| r.message["reason"] == "deactivated-key"),
        "the key is deactivated, and the alert says how to undo it",
    )?;

    let role = unique("deploy-");
    step(
        23,
        &format!(
            "She assumes role {role} and starts crypto-miner-4; this time CloudTrail's record comes first."
        ),
    );
    iam.create_role()
        .role_name(&role)
        .assume_role_policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]})
            .to_string(),
        )
        .send()
        .await
        .map_err(|e| Failed(format!("IAM creates the role: {e}")))?;
    let miner = launch_instance(&ec2, "crypto-miner-4").await;
    let started = launch_time(&ec2, &miner).await;
    let calls = route(local, aws, &roles_start(&miner, started, &role)).await;
    let early = attributor.handle_batch(&calls).await;
    check(
        early.failed.len() == 1,
        "the call waits for its start to be decided (its message comes back)",
    )?;
    let verdict = through_the_queue(local, aws, mapping, &miner, "pending").await?;
    show(&verdict);
    let heard = about(alerts.drain().await, &miner);
    let deny = heard.iter().find(|a| a.message["verdict"] == "deny");
    if let Some(d) = deny {
        show(&format!("alert: {}", d.subject));
        show(&format!(
            "  started by {}",
            d.message["caller"]["principal_arn"].as_str().unwrap_or("?")
        ));
    }
    check(
        deny.is_some_and(|d| {
            d.message["caller"]["session_issuer"]
                == format!("arn:aws:iam::123456789012:role/{role}").as_str()
        }),
        "the deny alert itself names the caller",
    )?;
    attributor.handle_batch(&calls).await;
    let heard = about(alerts.drain().await, &miner);
    if let Some(r) = heard.iter().find(|a| a.message["verdict"] == "response") {
        show(&format!(
            "  {}",
            r.message["detail"].as_str().unwrap_or_default()
        ));
    }
    let revoked = iam
        .get_role_policy()
        .role_name(&role)
        .policy_name(guard::respond::REVOKE_POLICY)
        .send()
        .await
        .is_ok();
    check(
        revoked && heard.iter().all(|a| a.message["verdict"] != "attribution"),
        "the role's older sessions are revoked (AWSRevokeOlderSessions), and nothing repeats the caller",
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
