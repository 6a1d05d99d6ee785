//! Times: the RFC 3339 request time of a line, an event's `time_ns`, and what a person types
//! after `--since` / `--until` (an RFC 3339 time, a date, or a duration back from now: `1h`,
//! `90m`, `2days`). Everything inside is Unix nanoseconds, UTC.

use correlate_lib::fields;

use crate::object::Object;

/// What a `--since`/`--until` value could not be read as.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {value:?}: not an RFC 3339 time (2026-11-25T07:40:00Z), a date (2026-11-25) or a duration back from now (1h, 30m, 2days)")]
pub struct TimeArgError {
    pub flag: &'static str,
    pub value: String,
}

/// Unix nanoseconds of an RFC 3339 time (`2026-11-25T07:40:01.123456Z`, any offset).
pub fn parse_rfc3339_ns(text: &str) -> Option<i64> {
    let ts: jiff::Timestamp = text.parse().ok()?;
    i64::try_from(ts.as_nanosecond()).ok()
}

/// A `--since`/`--until` value, `now_ns` being the time the command started.
pub fn parse_time_arg(flag: &'static str, value: &str, now_ns: i64) -> Result<i64, TimeArgError> {
    let err = || TimeArgError {
        flag,
        value: value.to_owned(),
    };
    let v = value.trim();
    if let Some(ns) = parse_rfc3339_ns(v) {
        return Ok(ns);
    }
    if let Ok(date) = v.parse::<jiff::civil::Date>() {
        let ts = date
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .map_err(|_| err())?
            .timestamp();
        return i64::try_from(ts.as_nanosecond()).map_err(|_| err());
    }
    let back = humantime::parse_duration(v.strip_suffix(" ago").unwrap_or(v)).map_err(|_| err())?;
    let back = i64::try_from(back.as_nanos()).map_err(|_| err())?;
    Ok(now_ns.saturating_sub(back))
}

/// The wall clock now, Unix nanoseconds.
pub fn now_ns() -> i64 {
    i64::try_from(correlate_lib::unix_now_ns()).unwrap_or(i64::MAX)
}

/// RFC 3339 UTC with microseconds, the form of the lines' `time`.
pub fn format_ns(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        Err(_) => format!("@{ns}ns"),
    }
}

/// A log line's request time: `time` (RFC 3339, µs), else `timestamp`.
pub fn line_time_ns(o: &Object) -> Option<i64> {
    o.str(fields::TIME)
        .or_else(|| o.str(fields::TIMESTAMP))
        .and_then(|t| parse_rfc3339_ns(&t))
}

/// An event's time: `time_ns`, else its RFC 3339 `time`.
pub fn event_time_ns(o: &Object) -> Option<i64> {
    o.u64(fields::EVENT_TIME_NS)
        .and_then(|n| i64::try_from(n).ok())
        .or_else(|| o.str(fields::EVENT_TIME).and_then(|t| parse_rfc3339_ns(&t)))
}

/// A duration for people: `850 µs`, `12.3 ms`, `4.07 s`, `3 min 20 s`, `2 h 5 min`.
pub fn format_gap(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let a = ns.unsigned_abs();
    let body = if a < 1_000_000 {
        format!("{} µs", a / 1000)
    } else if a < 1_000_000_000 {
        format!("{:.1} ms", a as f64 / 1e6)
    } else if a < 60_000_000_000 {
        format!("{:.2} s", a as f64 / 1e9)
    } else if a < 3_600_000_000_000 {
        format!("{} min {} s", a / 60_000_000_000, (a / 1_000_000_000) % 60)
    } else {
        format!(
            "{} h {} min",
            a / 3_600_000_000_000,
            (a / 60_000_000_000) % 60
        )
    };
    format!("{sign}{body}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_and_durations_back_from_now() {
        let t = parse_rfc3339_ns("2026-11-25T07:40:01.123456Z").unwrap();
        assert_eq!(t, 1_795_592_401_123_456_000);
        assert_eq!(
            parse_rfc3339_ns("2026-11-25T08:40:01.123456+01:00").unwrap(),
            t
        );
        assert_eq!(format_ns(t), "2026-11-25T07:40:01.123456Z");
        let now = t;
        assert_eq!(
            parse_time_arg("--since", "1h", now).unwrap(),
            t - 3_600_000_000_000
        );
        assert_eq!(
            parse_time_arg("--since", "90m ago", now).unwrap(),
            t - 5_400_000_000_000
        );
        assert_eq!(
            parse_time_arg("--since", "2026-11-25", now).unwrap(),
            1_795_564_800_000_000_000
        );
        let e = parse_time_arg("--until", "yesterday-ish", now).unwrap_err();
        assert!(e.to_string().contains("--until \"yesterday-ish\""));
    }

    #[test]
    fn gaps_read_in_the_unit_that_fits() {
        assert_eq!(format_gap(850_000), "850 µs");
        assert_eq!(format_gap(12_340_000), "12.3 ms");
        assert_eq!(format_gap(4_070_000_000), "4.07 s");
        assert_eq!(format_gap(200_000_000_000), "3 min 20 s");
        assert_eq!(format_gap(-7_500_000_000_000), "-2 h 5 min");
    }
}
