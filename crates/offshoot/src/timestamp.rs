//! `--timestamp` as dagster-cloud takes it (a Unix number) or as git prints it (`%cI`, RFC 3339).
//! RFC 3339 is one fixed grammar; a date library for this one conversion would cost more build
//! time than the thirty lines here.

/// Seconds since the Unix epoch, from `1767225600`, `1767225600.5` or an RFC 3339 time such as
/// `2026-01-01T00:00:00Z` or `2026-01-01T01:00:00.25+01:00`.
pub fn parse_unix_or_rfc3339(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() {
            return Ok(seconds);
        }
    }
    rfc3339(text).ok_or_else(|| format!("`{text}` is neither a Unix time in seconds (1767225600) nor an RFC 3339 time (2026-01-01T00:00:00Z)"))
}

fn rfc3339(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let length = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if length == 0 {
            return None;
        }
        fraction = format!("0.{}", &after_dot[..length]).parse().ok()?;
        rest = &after_dot[length..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (hours, minutes) = (digits_of(&rest[1..3])?, digits_of(&rest[4..6])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds as f64 + fraction)
}

fn digits_of(text: &str) -> Option<i64> {
    text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse().ok())?
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_unix_or_rfc3339;

    fn check(text: &str, expected: Option<f64>) {
        assert_eq!(parse_unix_or_rfc3339(text).ok(), expected, "{text}");
    }

    #[test]
    fn unix_numbers_and_rfc3339_times() {
        check("1767225600", Some(1_767_225_600.0));
        check("1767225600.5", Some(1_767_225_600.5));
        check("2026-01-01T00:00:00Z", Some(1_767_225_600.0));
        check("2026-01-01T01:00:00+01:00", Some(1_767_225_600.0));
        check("2025-12-31T19:00:00.25-05:00", Some(1_767_225_600.25));
        check("1970-01-01T00:00:00Z", Some(0.0));
        check("2024-02-29T12:00:00Z", Some(1_709_208_000.0));
        check("2000-03-01 00:00:00z", Some(951_868_800.0));
        check("2023-02-29T00:00:00Z", None);
        check("2026-01-01T00:00:00", None);
        check("2026-01-01T24:00:00Z", None);
        check("2026-01-01T00:00:00+0100", None);
        check("yesterday", None);
        check("NaN", None);
    }
}
