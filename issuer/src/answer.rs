//! What the requester sees: ephemeral Block Kit messages with a plain-text fallback.
//!
//! Every answer is `"response_type": "ephemeral"` (only the requester sees it). Anything that
//! came from outside (a `Name` tag, echoed input) is escaped for Slack's mrkdwn, so a tag such as
//! `<!channel>` is shown, not acted on.

use ec2pass_shared::config::IssuerConfig;
use ec2pass_shared::ids::{InstanceId, Owner, ShortId};
use ec2pass_shared::password::Password;
use ec2pass_shared::store::Outstanding;
use ec2pass_shared::time::{UnixTime, format_duration};
use ec2pass_shared::verdict::{Verdict, VerdictRecord};
use serde_json::{Value, json};

use crate::command::Mistake;
use crate::instances::InstanceInfo;
use crate::request::{REVOKE, REVOKE_LISTED};

/// The tag key the operator sets to the password.
pub const AUTH_TAG: &str = "Auth";

/// An ephemeral message from a fallback text and blocks.
fn ephemeral(text: &str, blocks: Vec<Value>) -> Value {
    json!({ "response_type": "ephemeral", "text": text, "blocks": blocks })
}

fn section(mrkdwn: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": mrkdwn } })
}

fn context(mrkdwn: &str) -> Value {
    json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": mrkdwn }] })
}

/// A Revoke button: `action_id` says which ([`REVOKE`] or [`REVOKE_LISTED`]), `value` is the
/// password's short id (never the password), and Slack asks before it sends the press.
fn revoke_button(action_id: &str, short_id: &ShortId) -> Value {
    json!({
        "type": "button",
        "action_id": action_id,
        "text": { "type": "plain_text", "text": "Revoke" },
        "style": "danger",
        "value": short_id.as_str(),
        "confirm": {
            "title": { "type": "plain_text", "text": "Revoke this password?" },
            "text": { "type": "mrkdwn", "text": format!("Password `{short_id}` will no longer start anything.") },
            "confirm": { "type": "plain_text", "text": "Revoke" },
            "deny": { "type": "plain_text", "text": "Keep it" },
            "style": "danger",
        },
    })
}

/// The message a press sends to replace the one pressed on.
pub fn replace_original(mut message: Value) -> Value {
    message["replace_original"] = json!(true);
    message
}

/// The message a press sends below the one pressed on, which stays (a refusal, "try again").
pub fn keep_original(mut message: Value) -> Value {
    message["replace_original"] = json!(false);
    message
}

/// A one-section ephemeral message whose fallback is the same text.
fn note(mrkdwn: &str) -> Value {
    ephemeral(mrkdwn, vec![section(mrkdwn)])
}

/// Escapes text for Slack mrkdwn (`&`, `<`, `>`), and keeps it on one line.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\n', '\r', '`'], " ")
}

/// A time in Slack's date formatting, shown in the reader's own time zone, with a UTC fallback.
pub fn slack_date(t: UnixTime) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        t.0,
        utc(t)
    )
}

/// `YYYY-MM-DD HH:MM UTC`, for fallbacks.
pub fn utc(t: UnixTime) -> String {
    t.utc_minutes()
}

fn describe_scope(scope: Option<(&InstanceId, &InstanceInfo)>) -> String {
    match scope {
        None => "*any* instance (unscoped)".to_owned(),
        Some((id, info)) => {
            // A `Name` tag is anyone's text: shown in a code span (`escape` drops backticks, so
            // it cannot close it), where neither Slack nor Mattermost makes a link, an image, a
            // mention or emphasis of it.
            let name = info
                .name
                .as_deref()
                .map(|n| format!(" (`{}`)", escape(n)))
                .unwrap_or_default();
            let place = info
                .place
                .as_ref()
                .map(|(alias, p)| format!(" in {}/{}", escape(alias), escape(&p.region)))
                .unwrap_or_default();
            format!("`{id}`{name}{place}, now {}", escape(&info.state))
        }
    }
}

/// The minted password, with what to do next. The only message that carries a plaintext.
pub fn minted(
    password: &Password,
    short_id: &ShortId,
    scope: Option<(&InstanceId, &InstanceInfo)>,
    expires_at: UnixTime,
) -> Value {
    let shown = password.display();
    let target = scope.map_or_else(|| "the instance".to_owned(), |(id, _)| format!("`{id}`"));
    let text = format!(
        "ec2pass password for {}: {shown} (set tag {AUTH_TAG}, then start; expires {})",
        scope.map_or_else(|| "any instance".to_owned(), |(id, _)| id.to_string()),
        utc(expires_at)
    );
    ephemeral(
        &text,
        vec![
            section(&format!(
                "*Your one-time password* for {}\n`{shown}`",
                describe_scope(scope)
            )),
            section(&format!(
                "1. Set the tag *`{AUTH_TAG}`* on {target} to the password above.\n\
                 2. Start the instance.\n\
                 3. Done: ec2pass checks the tag, removes it, and lets the start stand. \
                 Without a valid password the instance is stopped again."
            )),
            context(&format!(
                "Works once, until {}. Id `{short_id}` (for `/ec2pass revoke {short_id}`). Only you can see this.",
                slack_date(expires_at)
            )),
            json!({ "type": "actions", "elements": [revoke_button(REVOKE, short_id)] }),
        ],
    )
}

/// Most lines `list` shows, each a block with its button (Slack allows 50 blocks a message).
pub const MOST_LISTED: usize = 40;

/// The requester's outstanding passwords (never the passwords themselves), each with its
/// Revoke button.
pub fn listing(items: &[Outstanding]) -> Value {
    if items.is_empty() {
        return note("You have no outstanding ec2pass passwords.");
    }
    let line = |o: &Outstanding| {
        let scope = o
            .scope
            .as_ref()
            .map_or_else(|| "any instance".to_owned(), |id| format!("`{id}`"));
        format!(
            "• `{}` for {scope}, expires {}",
            o.short_id,
            slack_date(o.expires_at)
        )
    };
    let lines: Vec<String> = items.iter().map(line).collect();
    let text = format!("Your outstanding ec2pass passwords:\n{}", lines.join("\n"));
    let mut blocks = vec![section("Your outstanding ec2pass passwords:")];
    for (o, line) in items.iter().zip(&lines).take(MOST_LISTED) {
        let mut block = section(line);
        block["accessory"] = revoke_button(REVOKE_LISTED, &o.short_id);
        blocks.push(block);
    }
    if items.len() > MOST_LISTED {
        blocks.push(context(&format!(
            "…and {} more (`/ec2pass revoke ID` works for any of them).",
            items.len() - MOST_LISTED
        )));
    }
    ephemeral(&text, blocks)
}

/// What a Revoke button on a line of `list` did, above the list as it is now.
pub fn revoked_listed(id: &ShortId, revoked: bool, items: &[Outstanding]) -> Value {
    let done = revoked_one(id, revoked);
    let mut list = listing(items);
    let (Some(head), Some(blocks)) = (done["blocks"].as_array(), list["blocks"].as_array_mut())
    else {
        return done;
    };
    for (i, block) in head.iter().enumerate() {
        blocks.insert(i, block.clone());
    }
    let text = format!(
        "{}\n{}",
        done["text"].as_str().unwrap_or_default(),
        list["text"].as_str().unwrap_or_default()
    );
    list["text"] = json!(text);
    list
}

/// The answer to `revoke ID`.
pub fn revoked_one(id: &ShortId, revoked: bool) -> Value {
    if revoked {
        note(&format!("Revoked `{id}`: it can no longer start anything."))
    } else {
        note(&format!(
            "You have no outstanding password `{id}` (it may be used, expired or already revoked). \
             `/ec2pass list` shows what you have."
        ))
    }
}

/// The answer to `revoke all`.
pub fn revoked_all(count: usize) -> Value {
    match count {
        0 => note("You had no outstanding passwords; nothing to revoke."),
        1 => note("Revoked your 1 outstanding password."),
        n => note(&format!("Revoked your {n} outstanding passwords.")),
    }
}

/// Usage, optionally preceded by what was wrong with the input.
pub fn usage(config: &IssuerConfig, mistake: Option<&Mistake>) -> Value {
    let l = &config.lifetimes;
    let problem = mistake.map(|m| match m {
        Mistake::Unknown(text) => format!("I don't understand `{}`.", escape(text)),
        Mistake::BadInstanceId(id) => format!(
            "`{}` is not an instance id. Instance ids look like `i-0123456789abcdef0` \
             (`i-` and 8 or 17 lowercase hex digits).",
            escape(id)
        ),
        Mistake::BadLifetime(l) => format!(
            "`{}` is not a lifetime. Write minutes or hours, like `30m` or `2h`.",
            escape(l)
        ),
        Mistake::LifetimeOutOfBounds(d) => format!(
            "A lifetime of {} is not allowed here: choose between {} and {}.",
            format_duration(*d),
            format_duration(l.min),
            format_duration(l.max)
        ),
        Mistake::BadStatus(what) if what.is_empty() => {
            "`status` needs an instance id: `/ec2pass status i-0123456789abcdef0`.".to_owned()
        }
        Mistake::BadStatus(what) => format!(
            "`{}` is not an instance id: `/ec2pass status i-0123456789abcdef0` shows one instance's latest verdicts.",
            escape(what)
        ),
        Mistake::BadRevoke(what) if what.is_empty() => {
            "`revoke` needs a password id (from `/ec2pass list`) or `all`.".to_owned()
        }
        Mistake::BadRevoke(what) => format!(
            "`{}` is not a password id. Ids are 8 characters, as shown by `/ec2pass list`.",
            escape(what)
        ),
        Mistake::UnscopedNotAllowed => {
            "Passwords must name an instance here: `/ec2pass i-0123456789abcdef0`.".to_owned()
        }
        Mistake::BadPlace(what) if what.is_empty() => {
            "`in` needs an account, and maybe a region: `in prod` or `in prod/eu-west-1`."
                .to_owned()
        }
        Mistake::BadPlace(what) => format!(
            "`{}` is not a place. Write an account's alias or id, and maybe a region: `prod` or `prod/eu-west-1`.",
            escape(what)
        ),
        Mistake::UnknownPlace(what) => match &config.hub {
            None => format!(
                "This ec2pass guards one account and region, so there is nothing to choose: leave out `in {}`.",
                escape(what)
            ),
            Some(hub) => format!(
                "ec2pass does not guard `{}`. Accounts: {}. Regions: {}.",
                escape(what),
                hub.members
                    .iter()
                    .map(|m| format!("`{}`", m.alias))
                    .collect::<Vec<_>>()
                    .join(", "),
                hub.regions
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    });
    let unscoped = if config.allow_unscoped {
        "\n• `/ec2pass` alone: a password any one instance may use"
    } else {
        ""
    };
    let near = if config.hub.is_some() {
        "\n• `/ec2pass i-0123456789abcdef0 in prod/eu-west-1`: the same, looking only there (ec2pass otherwise finds the account and region itself)"
    } else {
        ""
    };
    let help = format!(
        "*ec2pass* hands out one-time passwords for starting EC2 instances.\n\
         • `/ec2pass i-0123456789abcdef0`: a password for that instance, valid {}\n\
         • `/ec2pass i-0123456789abcdef0 2h`: the same, valid 2h (from {} to {}){near}{unscoped}\n\
         • `/ec2pass list`: your outstanding passwords\n\
         • `/ec2pass revoke ID` or `/ec2pass revoke all`: withdraw them\n\
         • `/ec2pass status i-0123456789abcdef0`: that instance's latest starts, and what ec2pass decided\n\
         • `/ec2pass help`: this message",
        format_duration(l.default),
        format_duration(l.min),
        format_duration(l.max),
    );
    let text = match problem {
        Some(p) => format!("{p}\n\n{help}"),
        None => help,
    };
    note(&text)
}

/// Who a verdict's password was issued to: a Slack user as a mention (Slack shows the name), a
/// Mattermost user by id.
fn whose(owner: &Owner) -> String {
    match owner.team_id.strip_prefix("mattermost:") {
        Some(_) => format!("Mattermost user `{}`", escape(&owner.user_id)),
        None => format!("<@{}>", escape(&owner.user_id)),
    }
}

/// `status i-…`: the instance's latest verdicts, latest first: what was decided, why, when,
/// with which password (its short id) and whose.
pub fn status(id: &InstanceId, info: &InstanceInfo, verdicts: &[VerdictRecord]) -> Value {
    let head = format!("*Latest starts of* {}", describe_scope(Some((id, info))));
    if verdicts.is_empty() {
        return note(&format!(
            "{head}\nNo start of it has been decided while its verdicts are kept."
        ));
    }
    let lines: Vec<String> = verdicts
        .iter()
        .map(|v| {
            let what = match v.verdict {
                Verdict::Allow => ":white_check_mark: allowed".to_owned(),
                Verdict::Deny(reason) => {
                    format!(":no_entry: denied ({}), stopped", reason.as_str())
                }
                Verdict::Exempt => ":white_circle: exempt".to_owned(),
            };
            let password = match (&v.short_id, &v.issuer) {
                (Some(short), Some(owner)) => format!(", password `{short}` of {}", whose(owner)),
                (Some(short), None) => format!(", password `{short}`"),
                _ => String::new(),
            };
            let place = v
                .place
                .as_ref()
                .map(|p| format!(" in {}/{}", escape(&p.account), escape(&p.region)))
                .unwrap_or_default();
            format!("• {what}, {}{place}{password}", slack_date(v.decided_at))
        })
        .collect();
    note(&format!("{head}\n{}", lines.join("\n")))
}

/// The requester is not on an allow-list.
pub fn not_allowed() -> Value {
    note("Sorry, ec2pass is not enabled for you here. Ask your AWS administrators if you need it.")
}

/// The rate limit is reached.
pub fn rate_limited(limit: u32) -> Value {
    note(&format!(
        "You have asked for {limit} passwords this hour, which is the limit. \
         Try again next hour, or reuse one from `/ec2pass list` if it is still valid."
    ))
}

/// The same Slack request arrived twice.
pub fn replayed() -> Value {
    note(
        "This request was already answered; nothing more was issued. Run the command again if you need to.",
    )
}

/// The scoped instance does not exist.
pub fn unknown_instance(id: &InstanceId) -> Value {
    note(&format!(
        "I can't find instance `{id}` in this account and region, so no password was issued. \
         Check the id (and that the instance is in the region ec2pass guards)."
    ))
}

/// The scoped instance is terminated or terminating.
pub fn instance_gone(id: &InstanceId, info: &InstanceInfo) -> Value {
    note(&format!(
        "Instance `{id}` is {}, so it can never start again; no password was issued.",
        escape(&info.state)
    ))
}

/// Slack posted something ec2pass cannot read.
pub fn malformed() -> Value {
    note("ec2pass could not read this request from Slack; nothing was issued. Please try again.")
}

/// The answer could not be ready within the deadline; the work was dropped.
pub fn too_slow() -> Value {
    note(
        "ec2pass took too long and showed nothing. A command cut short may be partly done: run `/ec2pass list` to see where things stand, then try again.",
    )
}

/// AWS could not be reached; nothing happened.
pub fn try_again() -> Value {
    note(
        "ec2pass could not reach AWS just now, so nothing was issued or changed. Please try again in a moment.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_formatted_in_utc_for_fallbacks() {
        assert_eq!(utc(UnixTime(0)), "1970-01-01 00:00 UTC");
        assert_eq!(utc(UnixTime(1_795_255_200)), "2026-11-21 10:00 UTC");
        assert_eq!(utc(UnixTime(951_782_400)), "2000-02-29 00:00 UTC");
        assert_eq!(
            slack_date(UnixTime(1_795_255_200)),
            "<!date^1795255200^{date_short_pretty} at {time}|2026-11-21 10:00 UTC>"
        );
    }

    #[test]
    fn outside_text_cannot_inject_mentions_or_break_code_spans() {
        assert_eq!(
            escape("<!channel> & `x`\nhi"),
            "&lt;!channel&gt; &amp;  x  hi"
        );
        let info = InstanceInfo {
            name: Some("<!here>".into()),
            state: "stopped".into(),
            place: None,
        };
        let id = InstanceId::parse("i-0123abcd").unwrap_or_else(|| unreachable!());
        let shown = describe_scope(Some((&id, &info)));
        assert!(!shown.contains("<!here>"), "{shown}");
    }

    #[test]
    fn the_minted_answer_is_ephemeral_and_carries_password_tag_scope_and_expiry() {
        let p = Password::generate();
        let id = InstanceId::parse("i-0123abcd").unwrap_or_else(|| unreachable!());
        let info = InstanceInfo {
            name: Some("web-prod".into()),
            state: "stopped".into(),
            place: None,
        };
        let short = ec2pass_shared::password::new_short_id();
        let v = minted(&p, &short, Some((&id, &info)), UnixTime(1_795_255_200));
        assert_eq!(v["response_type"], "ephemeral");
        let all = v.to_string();
        assert!(all.contains(&format!("`{}`", p.display())));
        for needle in [
            "Auth",
            "i-0123abcd",
            "web-prod",
            "stopped",
            "<!date^1795255200^",
            short.as_str(),
        ] {
            assert!(all.contains(needle), "{needle} missing");
        }
        assert!(v["text"].as_str().is_some_and(|t| t.contains(&p.display())));
        assert_eq!(v["blocks"].as_array().map(Vec::len), Some(4));
        // The Revoke button carries the short id, never the password.
        let button = &v["blocks"][3]["elements"][0];
        assert_eq!(
            (&button["action_id"], &button["value"]),
            (&json!("revoke"), &json!(short.as_str()))
        );
        assert!(!button.to_string().contains(&p.display()));
    }

    #[test]
    fn a_name_tag_is_shown_in_code_in_both_chats_never_as_markup() {
        let p = Password::generate();
        let id = InstanceId::parse("i-0123abcd").unwrap_or_else(|| unreachable!());
        let info = InstanceInfo {
            name: Some(
                "[Re-verify](https://evil.example) ![](https://evil.example/p.png) *b* _i_ @all"
                    .into(),
            ),
            state: "stopped".into(),
            place: None,
        };
        let slack = minted(
            &p,
            &ec2pass_shared::password::new_short_id(),
            Some((&id, &info)),
            UnixTime(1_795_255_200),
        );
        let mattermost =
            crate::front::render(ec2pass_shared::reply::Front::Mattermost, slack.clone());
        for text in [
            slack["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap_or_default(),
            mattermost["text"].as_str().unwrap_or_default(),
        ] {
            // Outside every code span, nothing of the tag is left to render
            let outside: String = text.split('`').step_by(2).collect();
            for markup in ["](", "![", "evil.example", "@all", "_i_"] {
                assert!(!outside.contains(markup), "{markup} outside code in {text}");
            }
            assert!(text.contains("Re-verify"), "{text}");
        }
    }
}
