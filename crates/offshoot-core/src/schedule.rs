//! Schedules: a cron pattern in a time zone that runs a selection in production. This module is
//! the pure part: parsing a pattern and a zone, and deciding which tick is due between the last
//! one handled and now. Recording ticks and starting runs is the server's.
//!
//! Patterns have five fields (minute, hour, day of month, month, day of week), as Dagster's
//! `cron_schedule` and crontab; `@hourly`, `@daily` and friends are accepted. Time zones are IANA
//! names from the database compiled into the binary, so no file is read and every machine
//! agrees. A tick falls on local wall-clock time: `0 2 * * *` in `Europe/Berlin` is 02:00 in
//! Berlin in winter and in summer; on the day a daylight-saving change skips 02:00 it runs at the
//! first instant after the gap, and a repeated hour runs once.

use std::fmt;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::deployment::UnixMillis;

/// Why a schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid schedule name `{0}`: use letters, digits, `_`, `-` and `.` (at most 100)")]
    Name(String),
    #[error("invalid cron pattern `{pattern}`: {reason}")]
    Cron { pattern: String, reason: String },
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
}

/// Where a schedule is defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleOrigin {
    /// `[[schedules]]` in `offshoot.toml`.
    Manifest { line: u32 },
    /// A Dagster `ScheduleDefinition` of the code location, for the named job.
    Dagster { job: String },
}

/// One schedule of a project: what runs, and when.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron: CronSchedule,
    /// A selection in Offshoot's syntax (`crate::selection`).
    pub selection: String,
    pub origin: ScheduleOrigin,
    /// Why Offshoot cannot run it (a Dagster job of ops, not assets): listed, never ticked.
    pub problem: Option<String>,
}

impl Schedule {
    /// Whether `name` may name a schedule (it appears in URLs and CLI arguments).
    pub fn valid_name(name: &str) -> Result<(), ScheduleError> {
        let valid = !name.is_empty()
            && name.len() <= 100
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !name.starts_with('.');
        if valid {
            Ok(())
        } else {
            Err(ScheduleError::Name(name.to_owned()))
        }
    }
}

/// A parsed cron pattern in a time zone.
#[derive(Clone)]
pub struct CronSchedule {
    pattern: String,
    timezone: String,
    cron: Cron,
    zone: TimeZone,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?} in {})", self.pattern, self.timezone)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &CronSchedule) -> bool {
        self.pattern == other.pattern && self.timezone == other.timezone
    }
}

impl Eq for CronSchedule {}

/// The tick a schedule owes: the latest one not yet handled, and how many before it were missed
/// (they are not run: a schedule catches up once, not once per missed tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub tick_at: UnixMillis,
    pub missed: u64,
}

/// Counting missed ticks stops here (a per-minute schedule down for a week has 10,080).
pub const MISSED_COUNT_LIMIT: u64 = 100_000;

impl CronSchedule {
    /// `pattern` (five fields) in the IANA time zone `timezone` (`UTC` when empty).
    pub fn parse(pattern: &str, timezone: &str) -> Result<CronSchedule, ScheduleError> {
        let timezone = if timezone.is_empty() { "UTC" } else { timezone };
        let zone =
            TimeZone::get(timezone).map_err(|_| ScheduleError::TimeZone(timezone.to_owned()))?;
        let trimmed = pattern.trim();
        let cron_error =
            |reason: String| ScheduleError::Cron { pattern: pattern.to_owned(), reason };
        if !trimmed.starts_with('@') && trimmed.split_whitespace().count() != 5 {
            return Err(cron_error(format!(
                "{} fields; a pattern has five: minute hour day-of-month month day-of-week",
                trimmed.split_whitespace().count()
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| cron_error(e.to_string()))?;
        // A pattern that never matches (`0 0 31 2 *`) is refused now, not at its first tick.
        let probe = Timestamp::UNIX_EPOCH.to_zoned(zone.clone());
        if cron.find_next_occurrence(&probe, false).is_err() {
            return Err(cron_error("it never matches a date".to_owned()));
        }
        Ok(CronSchedule { pattern: trimmed.to_owned(), timezone: timezone.to_owned(), cron, zone })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    fn zoned(&self, at: UnixMillis) -> Option<jiff::Zoned> {
        Some(Timestamp::from_millisecond(at).ok()?.to_zoned(self.zone.clone()))
    }

    /// The first tick strictly after `at`.
    pub fn next_after(&self, at: UnixMillis) -> Option<UnixMillis> {
        let next = self.cron.find_next_occurrence(&self.zoned(at)?, false).ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The latest tick at or before `at`.
    pub fn latest_at_or_before(&self, at: UnixMillis) -> Option<UnixMillis> {
        let previous = self.cron.find_previous_occurrence(&self.zoned(at)?, true).ok()?;
        Some(previous.timestamp().as_millisecond())
    }

    /// The tick owed at `now` when every tick up to `handled` (inclusive) was handled: `None`
    /// when the next tick after `handled` is still to come.
    pub fn due(&self, handled: UnixMillis, now: UnixMillis) -> Option<Due> {
        let tick_at = self.latest_at_or_before(now)?;
        if tick_at <= handled {
            return None;
        }
        let mut missed = 0;
        let mut at = handled;
        while missed < MISSED_COUNT_LIMIT {
            match self.next_after(at) {
                Some(next) if next < tick_at => {
                    missed += 1;
                    at = next;
                }
                _ => break,
            }
        }
        Some(Due { tick_at, missed })
    }
}

/// `at` as RFC 3339 in UTC, to the second (`2026-01-10T13:00:00Z`), for messages and the CLI.
pub fn format_instant(at: UnixMillis) -> String {
    match Timestamp::from_millisecond(at) {
        Ok(timestamp) => timestamp
            .round(jiff::Unit::Second)
            .map_or_else(|_| timestamp.to_string(), |t| t.to_string()),
        Err(_) => format!("{at} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of an RFC 3339 instant.
    fn at(text: &str) -> UnixMillis {
        text.parse::<Timestamp>().expect("a valid instant").as_millisecond()
    }

    fn show(ms: UnixMillis) -> String {
        Timestamp::from_millisecond(ms).expect("in range").to_string()
    }

    #[test]
    fn next_ticks_follow_local_wall_clock_time() {
        let daily = CronSchedule::parse("0 2 * * *", "Europe/Berlin").expect("valid");
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            show(daily.next_after(at("2026-01-10T12:00:00Z")).unwrap()),
            "2026-01-11T01:00:00Z"
        );
        assert_eq!(
            show(daily.next_after(at("2026-07-10T12:00:00Z")).unwrap()),
            "2026-07-11T00:00:00Z"
        );
        // 29 March 2026 skips 02:00–03:00 in Berlin: the tick is the first instant after the gap.
        assert_eq!(
            show(daily.next_after(at("2026-03-28T12:00:00Z")).unwrap()),
            "2026-03-29T01:00:00Z"
        );
        let utc = CronSchedule::parse("*/15 * * * *", "").expect("valid");
        assert_eq!(utc.timezone(), "UTC");
        assert_eq!(
            show(utc.next_after(at("2026-01-10T12:00:00Z")).unwrap()),
            "2026-01-10T12:15:00Z"
        );
        assert_eq!(
            show(utc.latest_at_or_before(at("2026-01-10T12:14:59Z")).unwrap()),
            "2026-01-10T12:00:00Z"
        );
        assert_eq!(
            show(utc.latest_at_or_before(at("2026-01-10T12:15:00Z")).unwrap()),
            "2026-01-10T12:15:00Z"
        );
        let hourly = CronSchedule::parse("@hourly", "UTC").expect("valid");
        assert_eq!(
            show(hourly.next_after(at("2026-01-10T12:00:00Z")).unwrap()),
            "2026-01-10T13:00:00Z"
        );
    }

    #[test]
    fn due_is_the_latest_tick_once_with_the_missed_ones_counted() {
        let hourly = CronSchedule::parse("0 * * * *", "UTC").expect("valid");
        let handled = at("2026-01-10T12:00:00Z");
        assert_eq!(hourly.due(handled, at("2026-01-10T12:59:59Z")), None);
        assert_eq!(
            hourly.due(handled, at("2026-01-10T13:00:00Z")),
            Some(Due { tick_at: at("2026-01-10T13:00:00Z"), missed: 0 })
        );
        // Down from 12:00 until 17:30: 13, 14, 15 and 16 were missed, 17:00 is due.
        assert_eq!(
            hourly.due(handled, at("2026-01-10T17:30:00Z")),
            Some(Due { tick_at: at("2026-01-10T17:00:00Z"), missed: 4 })
        );
        // Handled up to a moment between ticks (a schedule switched on at 12:20).
        assert_eq!(
            hourly.due(at("2026-01-10T12:20:00Z"), at("2026-01-10T13:05:00Z")),
            Some(Due { tick_at: at("2026-01-10T13:00:00Z"), missed: 0 })
        );
    }

    #[test]
    fn bad_patterns_zones_and_names_say_what_is_wrong() {
        let check = |pattern: &str, zone: &str, expect: &str| {
            let error = CronSchedule::parse(pattern, zone).expect_err("invalid");
            assert_eq!(error.to_string(), expect, "{pattern} in {zone}");
        };
        check("* * * *", "UTC", "invalid cron pattern `* * * *`: 4 fields; a pattern has five: minute hour day-of-month month day-of-week");
        check("0 0 * * * *", "UTC", "invalid cron pattern `0 0 * * * *`: 6 fields; a pattern has five: minute hour day-of-month month day-of-week");
        check("0 0 31 2 *", "UTC", "invalid cron pattern `0 0 31 2 *`: it never matches a date");
        check("0 0 * * *", "Mars/Olympus", "unknown time zone `Mars/Olympus`");
        assert!(CronSchedule::parse("61 * * * *", "UTC").is_err());
        assert!(CronSchedule::parse("@sometimes", "UTC").is_err());
        assert!(Schedule::valid_name("nightly-refresh_2.0").is_ok());
        for bad in ["", "a b", ".hidden", "x/y", &"a".repeat(101)] {
            assert!(Schedule::valid_name(bad).is_err(), "{bad}");
        }
    }
}
