//! Time as whole seconds since the Unix epoch, which is what DynamoDB's TTL and Slack's
//! signatures use, and a clock that tests can hold still.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// This instant plus a duration (saturating).
    pub fn plus(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(secs))
    }

    /// This instant minus a duration (saturating).
    pub fn minus(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(secs))
    }

    /// Whole seconds between two instants, ignoring order.
    pub fn abs_diff(self, other: Self) -> u64 {
        self.0.abs_diff(other.0)
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now, in seconds since the epoch.
    fn now(&self) -> UnixTime;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}

/// A clock that always says the same time: for deterministic tests.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub UnixTime);

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        self.0
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> UnixTime {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_overflowing() {
        assert_eq!(
            UnixTime(i64::MAX).plus(Duration::from_secs(5)),
            UnixTime(i64::MAX)
        );
        assert_eq!(
            UnixTime(i64::MIN).minus(Duration::from_secs(5)),
            UnixTime(i64::MIN)
        );
        assert_eq!(UnixTime(10).abs_diff(UnixTime(4)), 6);
        assert_eq!(UnixTime(4).abs_diff(UnixTime(10)), 6);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now() > UnixTime(1_577_836_800));
    }
}

/// Parses a lifetime as people write it: a whole number and a unit, `s`, `m` or `h`
/// (`90s`, `30m`, `2h`). Returns `None` for anything else, including zero and overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    let secs = match unit.to_ascii_lowercase() {
        's' => value,
        'm' => value.checked_mul(60)?,
        'h' => value.checked_mul(3600)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest whole unit.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn durations_parse_in_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn nonsense_durations_are_refused() {
        for bad in [
            "", "m", "0m", "-5m", "5", "5d", "1.5h", "5 m", "9999999h", "5mm", "５m", "é",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
