//! Who may use ec2pass: the optional allow-lists, on the chat's ids only.
//!
//! Teams, users and channels are checked for both chats (a Mattermost team, user or channel id
//! must be listed like a Slack one). Enterprises and apps are Slack's own: for Mattermost the
//! slash command's token already says which integration sent the request, so those two lists do
//! not apply to it.

use ec2pass_shared::config::AllowLists;
use ec2pass_shared::reply::Front;

use crate::request::Who;

/// Which allow-list refused a request (logged; the requester only gets a polite refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `team_id` not in `EC2PASS_ALLOWED_TEAMS`.
    Team,
    /// `enterprise_id` absent or not in `EC2PASS_ALLOWED_ENTERPRISES`.
    Enterprise,
    /// `api_app_id` absent or not in `EC2PASS_ALLOWED_APPS`.
    App,
    /// `user_id` not in `EC2PASS_ALLOWED_USERS`.
    User,
    /// `channel_id` not in `EC2PASS_ALLOWED_CHANNELS`.
    Channel,
}

/// Checks a command against every configured list; an empty list allows everyone.
pub fn authorize(allow: &AllowLists, who: Who<'_>) -> Result<(), Refusal> {
    fn permits(list: &[String], id: Option<&str>) -> bool {
        list.is_empty() || id.is_some_and(|id| list.iter().any(|allowed| allowed == id))
    }
    let slack = who.front == Front::Slack;
    let checks = [
        (permits(&allow.teams, Some(who.team_id)), Refusal::Team),
        (
            !slack || permits(&allow.enterprises, who.enterprise_id),
            Refusal::Enterprise,
        ),
        (!slack || permits(&allow.apps, who.api_app_id), Refusal::App),
        (permits(&allow.users, Some(who.user_id)), Refusal::User),
        (
            permits(&allow.channels, Some(who.channel_id)),
            Refusal::Channel,
        ),
    ];
    match checks.into_iter().find(|(ok, _)| !ok) {
        Some((_, refusal)) => Err(refusal),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::SlashCommand;

    fn cmd() -> SlashCommand {
        SlashCommand::example()
    }

    fn list(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn empty_lists_allow_everyone() {
        assert_eq!(authorize(&AllowLists::default(), cmd().who()), Ok(()));
    }

    #[test]
    fn each_list_allows_only_its_ids() {
        let cases = [
            (
                AllowLists {
                    teams: list(&["T2"]),
                    ..Default::default()
                },
                Refusal::Team,
            ),
            (
                AllowLists {
                    enterprises: list(&["E1"]),
                    ..Default::default()
                },
                Refusal::Enterprise,
            ),
            (
                AllowLists {
                    apps: list(&["A2"]),
                    ..Default::default()
                },
                Refusal::App,
            ),
            (
                AllowLists {
                    users: list(&["U2", "U3"]),
                    ..Default::default()
                },
                Refusal::User,
            ),
            (
                AllowLists {
                    channels: list(&["C2"]),
                    ..Default::default()
                },
                Refusal::Channel,
            ),
        ];
        for (allow, refusal) in cases {
            assert_eq!(authorize(&allow, cmd().who()), Err(refusal));
        }
        let allow = AllowLists {
            teams: list(&["T1"]),
            apps: list(&["A1"]),
            users: list(&["U9", "U1"]),
            channels: list(&["C1"]),
            enterprises: Vec::new(),
        };
        assert_eq!(authorize(&allow, cmd().who()), Ok(()));
    }

    #[test]
    fn names_are_never_ids() {
        // A user named like an allowed id is still refused: only user_id counts.
        let allow = AllowLists {
            users: list(&["U2"]),
            ..Default::default()
        };
        let mut c = cmd();
        c.text = "U2".into();
        assert_eq!(authorize(&allow, c.who()), Err(Refusal::User));
    }

    #[test]
    fn a_mattermost_command_meets_the_team_user_and_channel_lists_not_slacks_own() {
        let mut c = cmd();
        c.front = Front::Mattermost;
        c.api_app_id = None;
        c.enterprise_id = None;
        let slack_only = AllowLists {
            apps: list(&["A1"]),
            enterprises: list(&["E1"]),
            ..Default::default()
        };
        assert_eq!(authorize(&slack_only, c.who()), Ok(()));
        let mut slack = cmd();
        slack.enterprise_id = Some("E1".into());
        slack.api_app_id = None;
        assert_eq!(authorize(&slack_only, slack.who()), Err(Refusal::App));
        let users = AllowLists {
            users: list(&["U2"]),
            ..Default::default()
        };
        assert_eq!(authorize(&users, c.who()), Err(Refusal::User));
        let channels = AllowLists {
            channels: list(&["C2"]),
            ..Default::default()
        };
        assert_eq!(authorize(&channels, c.who()), Err(Refusal::Channel));
    }
}
