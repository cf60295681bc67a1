//! Who may use ec2pass: the optional allow-lists, on Slack ids only.

use ec2pass_shared::config::AllowLists;

use crate::request::SlashCommand;

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
pub fn authorize(allow: &AllowLists, cmd: &SlashCommand) -> Result<(), Refusal> {
    fn permits(list: &[String], id: Option<&str>) -> bool {
        list.is_empty() || id.is_some_and(|id| list.iter().any(|allowed| allowed == id))
    }
    let checks = [
        (permits(&allow.teams, Some(&cmd.team_id)), Refusal::Team),
        (
            permits(&allow.enterprises, cmd.enterprise_id.as_deref()),
            Refusal::Enterprise,
        ),
        (
            permits(&allow.apps, cmd.api_app_id.as_deref()),
            Refusal::App,
        ),
        (permits(&allow.users, Some(&cmd.user_id)), Refusal::User),
        (
            permits(&allow.channels, Some(&cmd.channel_id)),
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

    fn cmd() -> SlashCommand {
        SlashCommand::example()
    }

    fn list(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn empty_lists_allow_everyone() {
        assert_eq!(authorize(&AllowLists::default(), &cmd()), Ok(()));
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
            assert_eq!(authorize(&allow, &cmd()), Err(refusal));
        }
        let allow = AllowLists {
            teams: list(&["T1"]),
            apps: list(&["A1"]),
            users: list(&["U9", "U1"]),
            channels: list(&["C1"]),
            enterprises: Vec::new(),
        };
        assert_eq!(authorize(&allow, &cmd()), Ok(()));
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
        assert_eq!(authorize(&allow, &c), Err(Refusal::User));
    }
}
