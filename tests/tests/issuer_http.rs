//! The real `issuer` binary under `cargo lambda watch`, against moto, over HTTP, signed as
//! Slack signs.

use ec2pass_shared::password::Password;
use ec2pass_tests::{Local, Slack, SlashCommand, item_text, launch_instance, scan_all, unique};

struct World {
    local: Local,
    slack: Slack,
    ec2: aws_sdk_ec2::Client,
    ddb: aws_sdk_dynamodb::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

async fn world() -> World {
    let local = Local::load();
    let aws = local.aws().await;
    World {
        slack: Slack::local(&local),
        ec2: aws_sdk_ec2::Client::new(&aws),
        ddb: aws_sdk_dynamodb::Client::new(&aws),
        secrets: aws_sdk_secretsmanager::Client::new(&aws),
        local,
    }
}

/// The environment of every running process whose executable is `target/debug/<name>`.
fn environments_of(name: &str) -> Vec<String> {
    let exe = ec2pass_tests::root().join("target/debug").join(name);
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter(|p| std::fs::read_link(p.path().join("exe")).is_ok_and(|e| e == exe))
        .filter_map(|p| std::fs::read(p.path().join("environ")).ok())
        .map(|env| String::from_utf8_lossy(&env).replace('\0', "\n"))
        .collect()
}

#[tokio::test]
async fn the_issuer_gets_its_signing_secret_only_from_secrets_manager() {
    // Given the local stack: the development secret is in moto's Secrets Manager
    let w = world().await;
    let dev_secret = w.local.get("EC2PASS_DEV_SIGNING_SECRET");
    let stored = w
        .secrets
        .get_secret_value()
        .secret_id(w.local.signing_secret_id())
        .send()
        .await
        .expect("GetSecretValue of the local signing secret (dev/aws_local.py create-secret)");
    assert_eq!(stored.secret_string(), Some(dev_secret));
    // When Slack posts a command signed with it
    let id = launch_instance(&w.ec2, "secret-source").await;
    let answer = w
        .slack
        .send(&SlashCommand::new("T0HTTP", &unique("U"), id.as_str()))
        .await;
    // Then the issuer verifies it and mints
    assert!(
        answer.is_ephemeral() && answer.password().is_some(),
        "{answer:?}"
    );
    // And the issuer could only have had the secret from Secrets Manager: neither the env file
    // cargo lambda watch passes nor the running issuer's own environment holds it
    let env_file = ec2pass_tests::root().join(".dev/functions.env");
    let passed = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run via dev/stack.sh",
            env_file.display()
        )
    });
    assert!(
        passed.contains("EC2PASS_SLACK_SIGNING_SECRET_ARN="),
        "{passed}"
    );
    assert!(
        !passed.contains(dev_secret),
        "the functions' env file holds the secret"
    );
    let running = environments_of("issuer");
    assert!(!running.is_empty(), "no running target/debug/issuer found");
    for env in &running {
        assert!(env.contains("EC2PASS_SLACK_SIGNING_SECRET_ARN="));
        assert!(
            !env.contains(dev_secret),
            "a running issuer's environment holds the secret"
        );
    }
}

#[tokio::test]
async fn a_signed_slash_command_mints_once_and_its_replay_is_refused() {
    // Given an instance named web-prod
    let w = world().await;
    let id = launch_instance(&w.ec2, "web-prod").await;
    // When Slack posts `/ec2pass <id>` for a user
    let cmd = SlashCommand::new("T0HTTP", &unique("U"), id.as_str());
    let answer = w.slack.send(&cmd).await;
    // Then the answer is a 200 ephemeral JSON message with a password of the documented format,
    // naming the instance, its Name tag and state, and the tag to set
    assert!(answer.is_ephemeral(), "{answer:?}");
    let password = answer.password().expect("a password in the answer");
    assert_eq!(password.len(), 24);
    assert!(password.split('-').all(|g| {
        g.len() == 4
            && g.bytes()
                .all(|b| ec2pass_shared::password::ALPHABET.contains(&b))
    }));
    for needle in [id.as_str(), "web-prod", "running", "Auth"] {
        assert!(
            answer.raw.contains(needle),
            "{needle} missing from {}",
            answer.raw
        );
    }
    // And the same request again (same trigger_id, freshly signed or not) gets no password
    let replay = w.slack.send(&cmd).await;
    assert!(replay.is_ephemeral(), "{replay:?}");
    assert_eq!(replay.password(), None);
    assert!(
        replay.text().contains("already answered"),
        "{}",
        replay.text()
    );
}

#[tokio::test]
async fn the_plaintext_is_nowhere_but_the_answer() {
    // Given a password minted over HTTP
    let w = world().await;
    let id = launch_instance(&w.ec2, "secret-check").await;
    let answer = w
        .slack
        .send(&SlashCommand::new("T0HTTP", &unique("U"), id.as_str()))
        .await;
    let shown = answer.password().expect("a password in the answer");
    let canonical = Password::from_tag(&shown)
        .expect("a valid password")
        .canonical()
        .to_owned();

    // When the whole table is scanned
    let table: String = scan_all(&w.ddb, &w.local.table())
        .await
        .iter()
        .map(item_text)
        .collect();
    // Then the password's digest key is there but the password is not, in any form
    let key = Password::from_tag(&shown)
        .map(|p| p.digest().table_key())
        .unwrap_or_default();
    assert!(table.contains(&key), "the minted item is in the scan");
    assert!(!table.contains(&shown) && !table.contains(&canonical));

    // And the functions' log (debug level, see dev/local.env) has neither the password nor the
    // signing secret. Give the log writer a moment to flush the mint's lines.
    let log_path = ec2pass_tests::root().join(".dev/logs/lambda.log");
    let mut log = String::new();
    for _ in 0..20 {
        log = std::fs::read_to_string(&log_path).unwrap_or_else(|e| {
            panic!(
                "cannot read the functions' log {}: {e}; run the tests with `make test`",
                log_path.display()
            )
        });
        if log.contains("minted") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(log.contains("minted"), "the log holds the mint's line");
    assert!(
        !log.contains(&shown) && !log.contains(&canonical),
        "password in the log"
    );
    assert!(
        !log.contains(w.local.get("EC2PASS_DEV_SIGNING_SECRET")),
        "signing secret in the log"
    );
}

#[tokio::test]
async fn list_and_revoke_over_http() {
    let w = world().await;
    let id = launch_instance(&w.ec2, "list-me").await;
    let user = unique("U");
    let minted = w
        .slack
        .send(&SlashCommand::new("T0HTTP", &user, &format!("{} 30m", id)))
        .await;
    let password = minted.password().expect("a password");

    let list = w
        .slack
        .send(&SlashCommand::new("T0HTTP", &user, "list"))
        .await;
    assert!(list.is_ephemeral());
    assert!(list.raw.contains(id.as_str()), "{}", list.raw);
    assert!(!list.raw.contains(&password));
    let short_id = list
        .text()
        .split('`')
        .find(|w| ec2pass_shared::ids::ShortId::parse(w).is_some())
        .expect("a short id in the listing")
        .to_owned();

    let revoke = w
        .slack
        .send(&SlashCommand::new(
            "T0HTTP",
            &user,
            &format!("revoke {short_id}"),
        ))
        .await;
    assert!(revoke.text().contains("Revoked"), "{}", revoke.text());
    let list = w
        .slack
        .send(&SlashCommand::new("T0HTTP", &user, "list"))
        .await;
    assert!(list.text().contains("no outstanding"), "{}", list.text());
}

#[tokio::test]
async fn bad_requests_get_clear_answers_and_no_5xx() {
    let w = world().await;
    let user = unique("U");
    let body = SlashCommand::new("T0HTTP", &user, "i-0123456789abcdef0").body();
    let ts = ec2pass_tests::now().to_string();
    let form = ("content-type", "application/x-www-form-urlencoded");

    // Unsigned, forged, stale: 401 with no body
    let forged = issuer::verify::sign(
        &ec2pass_shared::config::SigningSecret::new("guess"),
        &ts,
        body.as_bytes(),
    );
    let stale_ts = (ec2pass_tests::now() - 400).to_string();
    let stale = issuer::verify::sign(&w.local.signing_secret(), &stale_ts, body.as_bytes());
    for headers in [
        vec![form],
        vec![
            form,
            ("x-slack-request-timestamp", ts.as_str()),
            ("x-slack-signature", forged.as_str()),
        ],
        vec![
            form,
            ("x-slack-request-timestamp", stale_ts.as_str()),
            ("x-slack-signature", stale.as_str()),
        ],
    ] {
        let a = w.slack.post(&headers, body.clone().into_bytes()).await;
        assert_eq!((a.status, a.raw.as_str()), (401, ""), "{headers:?}");
    }
    // Wrong method, type, size
    let a = w.slack.request(reqwest::Method::GET, &[], Vec::new()).await;
    assert_eq!(a.status, 405);
    let a = w
        .slack
        .post(&[("content-type", "application/json")], b"{}".to_vec())
        .await;
    assert_eq!(a.status, 415);
    let a = w.slack.post(&[form], vec![b'a'; 9 * 1024]).await;
    assert_eq!(a.status, 413);
    // User mistakes: ephemeral explanations
    for text in [
        "frobnicate",
        "i-XYZ",
        "i-0123456789abcdef0 9d",
        "revoke",
        "",
    ] {
        let a = w
            .slack
            .send(&SlashCommand::new("T0HTTP", &user, text))
            .await;
        assert!(
            a.is_ephemeral() && a.password().is_none(),
            "{text:?}: {a:?}"
        );
    }
    // An unknown instance: explained, nothing minted
    let a = w
        .slack
        .send(&SlashCommand::new("T0HTTP", &user, "i-0fffffffffffffff0"))
        .await;
    assert!(
        a.is_ephemeral() && a.password().is_none() && a.text().contains("can't find"),
        "{a:?}"
    );
    // A signed body that is not a slash command
    let a = w.slack.send_body("hello=world").await;
    assert!(
        a.is_ephemeral() && a.text().contains("could not read"),
        "{a:?}"
    );
}
