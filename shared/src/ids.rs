//! Validated identifiers.
//!
//! Each type here can only be built from a string that has already been checked, so code that
//! holds one never has to check again.

use std::fmt;

/// An EC2 instance id: `i-` followed by 8 or 17 lowercase hexadecimal digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// Parses an instance id, accepting only the exact form EC2 uses.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("i-")?;
        let well_formed = (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Self(s.to_owned()))
    }

    /// The id as EC2 writes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The short, public id of a password: 8 Crockford base32 characters, random and unrelated to
/// the password. It names a password in `list`, `revoke`, verdicts and alerts.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortId(String);

impl ShortId {
    /// Length of a short id in characters.
    pub const LEN: usize = 8;

    /// Parses a short id as a user types it (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        let lower = s.to_ascii_lowercase();
        let ok = lower.len() == Self::LEN
            && lower
                .bytes()
                .all(|b| crate::password::ALPHABET.contains(&b));
        ok.then_some(Self(lower))
    }

    /// The id in its canonical lowercase form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asked for a password: a Slack user within a workspace. Authorization and ownership are
/// decided on these ids only, never on names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Slack workspace id (`T…`).
    pub team_id: String,
    /// Slack user id (`U…` or `W…`).
    pub user_id: String,
}

impl Owner {
    /// The single string under which the table indexes this owner's passwords.
    pub fn key(&self) -> String {
        format!("{}#{}", self.team_id, self.user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_of_both_lengths_are_accepted() {
        assert!(InstanceId::parse("i-0123abcd").is_some());
        assert!(InstanceId::parse("i-0123456789abcdef0").is_some());
    }

    #[test]
    fn malformed_instance_ids_are_rejected() {
        for bad in [
            "",
            "i-",
            "i-0123abc",
            "i-0123456789ABCDEF0",
            "i-0123456789abcdefg",
            "i-0123456789abcdef01",
            "x-0123abcd",
            " i-0123abcd",
            "i-0123abcd ",
            "i-0123456789",
            "i-0123abcé",
        ] {
            assert!(InstanceId::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn short_ids_are_case_insensitive_and_use_the_password_alphabet() {
        let id = ShortId::parse("AB12CD34").map(|id| id.to_string());
        assert_eq!(id.as_deref(), Some("ab12cd34"));
        assert!(ShortId::parse("ab12cd3").is_none());
        assert!(
            ShortId::parse("ab12cd3u").is_none(),
            "u is not in the alphabet"
        );
    }
}
