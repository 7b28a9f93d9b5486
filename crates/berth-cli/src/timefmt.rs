//! Time handling as the Go CLI does it: Go duration strings, `--since`/`--until` values
//! converted client-side (`GetTimestamp`), and local-time rendering of `time.Time.String()`
//! and RFC 3339 with fixed nanoseconds.

use anyhow::{Result, anyhow};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Parses a Go duration (`300ms`, `1h30m`, `-2.5s`) into nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let ns = total.round() as i64;
    Some(if neg { -ns } else { ns })
}

/// The local zone at a unix time: offset in seconds east of UTC and its abbreviation.
pub fn local_zone(unix: i64) -> (i32, String) {
    let t = unix as libc::time_t;
    // SAFETY: `tm` is plain old data that localtime_r fully initialises on success; `t`
    // outlives the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return (0, "UTC".into());
    }
    let abbrev = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone points at a NUL-terminated string owned by libc's tz data.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    (tm.tm_gmtoff as i32, abbrev)
}

fn local_datetime(unix: i64, nanos: u32) -> DateTime<FixedOffset> {
    let (off, _) = local_zone(unix);
    let utc = DateTime::<Utc>::from_timestamp(unix, nanos).unwrap_or_default();
    match FixedOffset::east_opt(off) {
        Some(o) => utc.with_timezone(&o),
        None => utc.fixed_offset(),
    }
}

/// Go's `time.Unix(secs, 0).String()`: `2006-01-02 15:04:05 -0700 MST` in local time.
pub fn go_time_string(unix: i64) -> String {
    let (_, abbrev) = local_zone(unix);
    let dt = local_datetime(unix, 0);
    format!("{} {}", dt.format("%Y-%m-%d %H:%M:%S %z"), abbrev)
}

/// Go's `time.Unix(secs, 0).Format(time.RFC3339)` in local time.
pub fn rfc3339_local(unix: i64) -> String {
    let dt = local_datetime(unix, 0);
    if dt.offset().local_minus_utc() == 0 {
        format!("{}Z", dt.format("%Y-%m-%dT%H:%M:%S"))
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// Go's `Format("2006-01-02T15:04:05.000000000Z07:00")` of a unix-nanosecond time, local.
pub fn rfc3339_nano_fixed(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000) as u32;
    let dt = local_datetime(secs, nanos);
    let base = dt.format("%Y-%m-%dT%H:%M:%S%.9f").to_string();
    let off = dt.offset().local_minus_utc();
    if off == 0 {
        format!("{base}Z")
    } else {
        format!("{base}{}", dt.format("%:z"))
    }
}

/// Converts a `--since`/`--until` value to what the API takes (`GetTimestamp` in moby's
/// `api/types/time`): durations count back from `now`; RFC 3339 dates and times (local time
/// when no zone is given) become `secs.nanos`; unix timestamps pass through.
pub fn get_timestamp(value: &str, now_unix: i64) -> Result<String> {
    if value != "0"
        && let Some(ns) = parse_go_duration(value)
    {
        return Ok((now_unix - ns.div_euclid(1_000_000_000)).to_string());
    }
    let in_local = !value.contains(['z', 'Z', '+']) && value.matches('-').count() != 3;
    let parsed = if in_local {
        parse_local(value, now_unix)
    } else {
        parse_zoned(value)
    };
    match parsed {
        Some(dt) => Ok(format!(
            "{}.{:09}",
            dt.timestamp(),
            dt.timestamp_subsec_nanos()
        )),
        None => {
            if value.contains('-') {
                return Err(anyhow!(
                    "parsing time {value:?}: cannot parse as RFC 3339 time"
                ));
            }
            if parse_unix(value).is_none() {
                return Err(anyhow!(
                    "failed to parse value as time or duration: {value:?}"
                ));
            }
            Ok(value.to_string())
        }
    }
}

fn parse_unix(value: &str) -> Option<(i64, i64)> {
    let (s, n) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = s.parse().ok()?;
    if n.is_empty() {
        return Some((secs, 0));
    }
    let nanos: i64 = n.parse().ok()?;
    Some((secs, nanos))
}

fn parse_local(value: &str, now_unix: i64) -> Option<DateTime<FixedOffset>> {
    let formats = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H",
    ];
    let naive = formats
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    let (off, _) = local_zone(now_unix);
    FixedOffset::east_opt(off)?
        .from_local_datetime(&naive)
        .single()
}

fn parse_zoned(value: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(value) {
        return Some(dt);
    }
    let normalized = value.replace(['z'], "Z").replace('Z', "+00:00");
    let formats = ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H%:z"];
    if let Some(dt) = formats
        .iter()
        .find_map(|f| DateTime::parse_from_str(&normalized, f).ok())
    {
        return Some(dt);
    }
    // `2006-01-02Z07:00`: a date with a zone, at midnight.
    let (date, zone) = normalized.split_at(normalized.find('+').or_else(|| normalized.rfind('-'))?);
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    DateTime::parse_from_str(&format!("{d}T00:00:00{zone}"), "%Y-%m-%dT%H:%M:%S%:z").ok()
}

/// The current unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10m"), Some(600_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("-2s"), Some(-2_000_000_000));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn timestamps_convert_like_moby() {
        let now = 1_700_000_000;
        assert_eq!(get_timestamp("10m", now).unwrap(), "1699999400");
        assert_eq!(get_timestamp("1700000000", now).unwrap(), "1700000000");
        assert_eq!(get_timestamp("1700000000.5", now).unwrap(), "1700000000.5");
        assert_eq!(
            get_timestamp("2023-11-14T22:13:20Z", now).unwrap(),
            "1700000000.000000000"
        );
        assert_eq!(
            get_timestamp("2023-11-14T22:13:20.25+00:00", now).unwrap(),
            "1700000000.250000000"
        );
        assert_eq!(
            get_timestamp("2023-11-14T22:13Z", now).unwrap(),
            "1699999980.000000000"
        );
        assert!(get_timestamp("2023-13-45", now).is_err());
        assert!(get_timestamp("yesterday", now).is_err());
    }

    #[test]
    fn local_rendering_has_go_shape() {
        let s = go_time_string(1_700_000_000);
        assert_eq!(
            s.len(),
            "2023-11-14 22:13:20 +0000 UTC".len() - 3 + local_zone(1_700_000_000).1.len()
        );
        let r = rfc3339_nano_fixed(1_700_000_000_123_456_789);
        assert!(r.contains(".123456789"), "{r}");
    }
}
