//! Time as whole seconds since the Unix epoch, which is what DynamoDB's TTL and Slack's
//! signatures use, and a clock that tests can hold still.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    /// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC).
    pub fn rfc3339(self) -> String {
        let (y, m, d, hh, mm, ss) = self.civil();
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }

    /// `YYYY-MM-DD HH:MM UTC`, for people.
    pub fn utc_minutes(self) -> String {
        let (y, m, d, hh, mm, _) = self.civil();
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
    }

    /// Year, month, day, hour, minute, second (proleptic Gregorian, UTC), by Howard Hinnant's
    /// days-to-civil algorithm.
    fn civil(self) -> (i64, i64, i64, i64, i64, i64) {
        let secs = self.0.rem_euclid(86_400);
        let z = self.0.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
    }

    /// Reads `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the UTC form CloudTrail and EventBridge write;
    /// the fraction is dropped. `None` for anything else.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let s = s.strip_suffix('Z')?;
        let (date, time) = s.split_once('T')?;
        let time = time.split_once('.').map_or(time, |(whole, frac)| {
            if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) {
                whole
            } else {
                "invalid"
            }
        });
        let num = |part: &str, len: usize| -> Option<i64> {
            (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse().ok())
                .flatten()
        };
        let mut d = date.split('-');
        let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
        let mut t = time.split(':');
        let (hh, mm, ss) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
        if d.next().is_some() || t.next().is_some() {
            return None;
        }
        if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        // Howard Hinnant's days-from-civil, the inverse of `civil`.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let parsed = Self(days * 86_400 + hh * 3600 + mm * 60 + ss);
        // A day the month does not have (February 30th) does not come back as itself.
        (parsed.civil().2 == day || ss == 60).then_some(parsed)
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
    fn times_format_as_rfc3339_and_for_people() {
        assert_eq!(UnixTime(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(UnixTime(1_795_255_201).rfc3339(), "2026-11-21T10:00:01Z");
        assert_eq!(UnixTime(951_782_400).utc_minutes(), "2000-02-29 00:00 UTC");
        assert_eq!(UnixTime(-1).rfc3339(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_reads_back_what_it_writes_and_nothing_else() {
        for t in [0, 1_795_255_201, 951_782_400, -1, 4_102_444_799] {
            assert_eq!(
                UnixTime::parse_rfc3339(&UnixTime(t).rfc3339()),
                Some(UnixTime(t))
            );
        }
        assert_eq!(
            UnixTime::parse_rfc3339("2026-11-21T10:00:01.123Z"),
            Some(UnixTime(1_795_255_201))
        );
        for bad in [
            "",
            "2026-11-21T10:00:01",
            "2026-11-21 10:00:01Z",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T10:00:01.Z",
            "2026-11-21T10:00:01+01:00",
            "26-11-21T10:00:01Z",
            "2026-11-21T10:00Z",
        ] {
            assert_eq!(UnixTime::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now() > UnixTime(1_577_836_800));
    }
}

/// Parses a lifetime as people write it: a whole number and a unit, `s`, `m`, `h` or `d`
/// (`90s`, `30m`, `2h`, `90d`). Returns `None` for anything else, including zero and overflow.
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
        'd' => value.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest whole unit.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
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
        assert_eq!(
            parse_duration("90d"),
            Some(Duration::from_secs(90 * 86_400))
        );
        assert_eq!(format_duration(Duration::from_secs(2 * 86_400)), "2d");
    }

    #[test]
    fn nonsense_durations_are_refused() {
        for bad in [
            "", "m", "0m", "-5m", "5", "5w", "1.5h", "5 m", "9999999h", "5mm", "５m", "é",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
