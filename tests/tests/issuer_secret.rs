//! The issuer's cold start against moto's Secrets Manager: the signing secret is read from the
//! secret `EC2PASS_SLACK_SIGNING_SECRET_ARN` names, and anything unusable there fails the start
//! with a message that names the secret and never shows its value.

use ec2pass_shared::config::{Env, SigningSecret};
use ec2pass_tests::{Local, SlashCommand, launch_instance, now, unique};
use issuer::cold_start::ColdStartError;
use issuer::handler::Reply;
use issuer::request::Incoming;
use issuer::secret::{PLACEHOLDER, Problem, SecretError};
use issuer::verify::{HeaderValue, sign};

/// `dev/local.env`, with the signing secret's id replaced.
fn env_with_secret_id<'a>(local: &'a Local, secret_id: &'a str) -> Env<'a> {
    let lookup = local.lookup();
    Env::from_fn(move |name| match name {
        "EC2PASS_SLACK_SIGNING_SECRET_ARN" => Some(secret_id.to_owned()),
        other => lookup(other),
    })
}

async fn post(issuer: &issuer::cold_start::LambdaIssuer, secret: &str, body: &str) -> Reply {
    let ts = now().to_string();
    let sig = sign(&SigningSecret::new(secret), &ts, body.as_bytes());
    issuer
        .handle(&Incoming {
            method: "POST",
            path: "/",
            content_type: HeaderValue::Once("application/x-www-form-urlencoded"),
            timestamp: HeaderValue::Once(&ts),
            signature: HeaderValue::Once(&sig),
            body: body.as_bytes(),
        })
        .await
}

#[tokio::test]
async fn the_cold_start_verifies_with_the_secret_in_secrets_manager() {
    // Given a secret in Secrets Manager whose value nothing else knows
    let local = Local::load();
    let aws = local.aws().await;
    let name = unique("ec2pass-test-secret-");
    let value = unique("only-in-secrets-manager-");
    aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(&name)
        .secret_string(&value)
        .send()
        .await
        .expect("CreateSecret against moto");
    // When the issuer starts with its id (and the development secret elsewhere in the settings)
    let issuer = issuer::cold_start::issuer(&env_with_secret_id(&local, &name), &aws)
        .await
        .expect("a cold start with a usable secret");
    let id = launch_instance(&aws_sdk_ec2::Client::new(&aws), "secret-cold-start").await;
    let body = SlashCommand::new("T0SECRET", &unique("U"), id.as_str()).body();
    // Then a request signed with the stored value mints
    let minted = post(&issuer, &value, &body).await;
    let text = minted
        .body
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert_eq!(minted.status, 200);
    let password = ec2pass_tests::password_in(&text);
    assert!(password.is_some(), "{text}");
    password
        .iter()
        .for_each(|p| ec2pass_tests::secrets::remember(p));
    // And one signed with the development secret is refused
    let other = SlashCommand::new("T0SECRET", &unique("U"), id.as_str()).body();
    let refused = post(&issuer, local.get("EC2PASS_DEV_SIGNING_SECRET"), &other).await;
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn a_missing_empty_binary_or_placeholder_secret_fails_the_cold_start_naming_it() {
    let local = Local::load();
    let aws = local.aws().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let placeholder = unique("ec2pass-test-placeholder-");
    sm.create_secret()
        .name(&placeholder)
        .secret_string(PLACEHOLDER)
        .send()
        .await
        .expect("CreateSecret");
    let blank = unique("ec2pass-test-blank-");
    sm.create_secret()
        .name(&blank)
        .secret_string(" \n")
        .send()
        .await
        .expect("CreateSecret");
    let binary = unique("ec2pass-test-binary-");
    sm.create_secret()
        .name(&binary)
        .secret_binary(aws_smithy_types::Blob::new(b"not text".to_vec()))
        .send()
        .await
        .expect("CreateSecret");
    let missing = unique("ec2pass-test-missing-");

    for (id, expected) in [
        (&placeholder, Some(Problem::Placeholder)),
        (&blank, Some(Problem::Empty)),
        (&binary, Some(Problem::NoText)),
        (&missing, None),
    ] {
        let result = issuer::cold_start::issuer(&env_with_secret_id(&local, id), &aws).await;
        let Err(ColdStartError::Secret(err)) = result else {
            panic!("{id}: the cold start did not fail on the secret");
        };
        let SecretError { secret_id, problem } = &err;
        assert_eq!(secret_id, id);
        match &expected {
            Some(p) => assert_eq!(problem, p, "{id}"),
            None => assert!(
                matches!(problem, Problem::Unreadable(m) if m.contains("ResourceNotFound")),
                "{id}: {problem:?}"
            ),
        }
        let message = err.to_string();
        assert!(message.contains(id.as_str()), "{message}");
        assert!(!message.contains(PLACEHOLDER) && !message.contains("not text"));
    }
}

/// A Secrets Manager stand-in on loopback that answers every `GetSecretValue` after `delay`.
fn slow_secrets_manager(value: &'static str, delay: std::time::Duration) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut length = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    if let Some((name, v)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                std::thread::sleep(delay);
                let answer = format!(
                    r#"{{"ARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:slow","Name":"slow","SecretString":"{value}","VersionId":"v1"}}"#
                );
                let _ = write!(
                    &stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    url
}

#[tokio::test]
async fn a_slow_secrets_manager_slows_the_cold_start_but_does_not_fail_it() {
    // Given Secrets Manager answering after 1.5 s: longer than a request-path attempt may take
    let (attempt, _) = issuer::cold_start::REQUEST_TIMEOUTS;
    let delay = attempt + std::time::Duration::from_millis(500);
    let url = slow_secrets_manager("slow-but-sure", delay);
    let local = Local::load();
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(issuer::cold_start::request_timeouts())
        .endpoint_url(&url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    // When the issuer starts, then it waits for the secret (the init has 10 s) and verifies
    // with it
    let started = std::time::Instant::now();
    let issuer = issuer::cold_start::issuer(&env_with_secret_id(&local, "slow"), &aws)
        .await
        .expect("a cold start that waited for the secret");
    assert!(started.elapsed() >= delay);
    let body = SlashCommand::new("T0SECRET", &unique("U"), "help").body();
    assert_eq!(post(&issuer, "slow-but-sure", &body).await.status, 200);
    assert_eq!(post(&issuer, "another", &body).await.status, 401);
}
