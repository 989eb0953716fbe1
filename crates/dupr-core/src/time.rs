//! Time handling: duplicity's file-name time strings (reference 1.1) and the
//! user-facing time syntax of `-t`, `remove-older-than`, ... (reference 6.5).
//!
//! All times are whole seconds since the Unix epoch, UTC. Calendar arithmetic
//! for UTC is done by hand (proleptic Gregorian) so that out-of-range days
//! (`day 31` of February, `second 60/61`) normalise the way C's `timegm`
//! does instead of being rejected; chrono is only used for the local zone.

use chrono::{Datelike, Local, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike};

use crate::error::Error;

/// Seconds since the Unix epoch, UTC.
pub type Timestamp = i64;

const DAY: i64 = 86_400;
/// chrono's day number (days from the common era) of 1970-01-01.
const UNIX_EPOCH_CE_DAY: i64 = 719_163;

static NOW_OVERRIDE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);

/// Current time, whole seconds (or the time set with [`set_now`]).
pub fn now() -> Timestamp {
    match NOW_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) {
        i64::MIN => chrono::Utc::now().timestamp(),
        t => t,
    }
}

/// Whether [`set_now`] fixed the clock.
pub fn is_overridden() -> bool {
    NOW_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) != i64::MIN
}

/// Pretend the current time is `t` (duplicity's `--current-time`, for tests).
pub fn set_now(t: Timestamp) {
    NOW_OVERRIDE.store(t, std::sync::atomic::Ordering::Relaxed);
}

/// `YYYYMMDDTHHMMSSZ` in UTC, the form used in every file name duplicity
/// writes. Sixteen characters for years 0..=9999.
pub fn to_filename(t: Timestamp) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(DAY));
    let secs = t.rem_euclid(DAY);
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parse the time token of a file name: the 16-character UTC form, or the
/// legacy `YYYY-MM-DDTHH:MM:SS` + `Z`/`±HH:MM` form in which `:` may be any
/// other single ASCII non-digit (duplicity's `--time-separator`), used
/// consistently. Like duplicity, the token is upper-cased first.
pub fn from_filename(s: &str) -> Option<Timestamp> {
    let s = s.to_ascii_uppercase();
    if s.len() == 16 {
        parse_compact(&s)
    } else {
        let sep = *s.as_bytes().get(13)?;
        if sep.is_ascii_digit() || !sep.is_ascii() {
            return None;
        }
        match parse_w3c(&s, sep)? {
            (t, Some(offset)) => Some(t - offset),
            (_, None) => None,
        }
    }
}

/// Parse a user time string (reference 6.5), trying in order: `now`; all
/// digits (epoch seconds); a W3C date-time or the 16-character form; an
/// interval before `now` such as `1h30m`; a date at local midnight.
pub fn parse_time_string(s: &str, now: Timestamp) -> Result<Timestamp, Error> {
    let bad = || Error::BadTime(s.to_string());
    if s == "now" {
        return Ok(now);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    if s.len() == 16 {
        if let Some(t) = parse_compact(s) {
            return Ok(t);
        }
    }
    if let Some((naive, offset)) = parse_w3c(s, b':') {
        // No zone: local standard time, i.e. the zone's offset without DST.
        let offset = offset.unwrap_or_else(|| local_standard_offset(naive));
        return Ok(naive - offset);
    }
    if let Some(secs) = parse_interval(s) {
        return now.checked_sub(secs).ok_or_else(bad);
    }
    if let Some((y, m, d)) = parse_date(s) {
        return local_midnight(y, m, d).ok_or_else(bad);
    }
    Err(bad())
}

/// Python's `time.asctime(time.localtime(t))`, e.g. `Wed Nov  4 06:36:54 2026`;
/// collection-status prints times this way.
pub fn pretty_local(t: Timestamp) -> String {
    match Local.timestamp_opt(t, 0) {
        LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _)
            if (0..=9999).contains(&dt.year()) =>
        {
            // `%a %b %e %H:%M:%S %Y` by hand: list-current-files formats one
            // per path, and parsing the strftime string each time was most
            // of the cost.
            const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            format!(
                "{} {} {:>2} {:02}:{:02}:{:02} {:04}",
                DAYS[dt.weekday().num_days_from_monday() as usize],
                MONTHS[dt.month0() as usize],
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.year()
            )
        }
        LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _) => {
            dt.format("%a %b %e %H:%M:%S %Y").to_string()
        }
        LocalResult::None => t.to_string(),
    }
}

/// `YYYYMMDDTHHMMSSZ`, exactly 16 bytes.
fn parse_compact(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    to_utc_checked(
        num(&b[0..4])?,
        num(&b[4..6])?,
        num(&b[6..8])?,
        num(&b[9..11])?,
        num(&b[11..13])?,
        num(&b[13..15])?,
    )
}

/// `YYYY-MM-DDTHH<sep>MM<sep>SS` then nothing, `Z` or `±HH<sep>MM`.
/// Returns the date-time read as if UTC and the zone offset in seconds east.
fn parse_w3c(s: &str, sep: u8) -> Option<(Timestamp, Option<i64>)> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != sep || b[16] != sep
    {
        return None;
    }
    let naive = to_utc_checked(
        num(&b[0..4])?,
        num(&b[5..7])?,
        num(&b[8..10])?,
        num(&b[11..13])?,
        num(&b[14..16])?,
        num(&b[17..19])?,
    )?;
    let offset = match &b[19..] {
        [] => None,
        [b'Z'] => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, s, m1, m2] if *s == sep => {
            let secs = num(&[*h1, *h2])? * 3600 + num(&[*m1, *m2])? * 60;
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => return None,
    };
    Some((naive, offset))
}

/// One or more `<digits><unit>` pairs; the total length in seconds.
fn parse_interval(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 2 {
        return None;
    }
    let mut total: i64 = 0;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i == b.len() {
            return None;
        }
        let unit = match b[i] {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            b'D' => DAY,
            b'W' => 7 * DAY,
            b'M' => 30 * DAY,
            b'Y' => 365 * DAY,
            _ => return None,
        };
        let n: i64 = s[start..i].parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        i += 1;
    }
    Some(total)
}

/// `YYYY/MM/DD`, `YYYY-MM-DD`, `MM/DD/YYYY`, `MM-DD-YYYY` (1- or 2-digit
/// month and day, one separator throughout) and `YYYYMMDDZ`.
fn parse_date(s: &str) -> Option<(i64, i64, i64)> {
    let b = s.as_bytes();
    if b.len() == 9 && b[8] == b'Z' {
        return Some((num(&b[0..4])?, num(&b[4..6])?, num(&b[6..8])?));
    }
    let sep = if s.contains('/') { '/' } else { '-' };
    let parts: Vec<&str> = s.split(sep).collect();
    let [a, m, c] = parts.as_slice() else {
        return None;
    };
    let short = |p: &str| {
        (1..=2)
            .contains(&p.len())
            .then(|| num(p.as_bytes()))
            .flatten()
    };
    let long = |p: &str| (p.len() == 4).then(|| num(p.as_bytes())).flatten();
    match (long(a), long(c)) {
        (Some(y), None) => Some((y, short(m)?, short(c)?)),
        (None, Some(y)) => Some((y, short(a)?, short(m)?)),
        _ => None,
    }
}

/// ASCII digits only (no sign, no whitespace), at most 4 of them.
fn num(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Apply the range checks of reference 1.1, then read the fields as UTC.
fn to_utc_checked(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<Timestamp> {
    let ok = 1900 < y
        && y < 2100
        && (1..=12).contains(&mo)
        && (1..=31).contains(&d)
        && (0..=23).contains(&h)
        && (0..=59).contains(&mi)
        && (0..=61).contains(&s);
    ok.then(|| days_from_civil(y, mo, 1) + d - 1)
        .map(|days| days * DAY + h * 3600 + mi * 60 + s)
}

/// The local zone's standard (non-DST) offset, seconds east, for the year of
/// `t`: DST only ever moves clocks forward, so it is the smaller of the
/// January and July offsets.
fn local_standard_offset(t: Timestamp) -> i64 {
    let (year, _, _) = civil_from_days(t.div_euclid(DAY));
    let offset_at = |month| {
        NaiveDate::from_ymd_opt(year as i32, month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(0, |dt| {
                i64::from(Local.offset_from_utc_datetime(&dt).fix().local_minus_utc())
            })
    };
    offset_at(1).min(offset_at(7))
}

/// Midnight local time (DST-aware) on the given date; days past the end of a
/// month roll over like C's `mktime`. If midnight falls in a DST gap, the
/// first valid minute after it is used.
fn local_midnight(y: i64, mo: i64, d: i64) -> Option<Timestamp> {
    let days = to_utc_checked(y, mo, d, 0, 0, 0)?.div_euclid(DAY);
    let date = NaiveDate::from_num_days_from_ce_opt(i32::try_from(days + UNIX_EPOCH_CE_DAY).ok()?)?;
    let mut naive: NaiveDateTime = date.and_hms_opt(0, 0, 0)?;
    for _ in 0..24 * 60 {
        match Local.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return Some(t.timestamp()),
            LocalResult::None => naive += chrono::TimeDelta::minutes(1),
        }
    }
    None
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's method).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};
    use proptest::prelude::*;

    /// 2026-11-24T06:36:06Z, the full backup in the reference's listing.
    const T_FULL: Timestamp = 1_795_502_166;
    /// 1901-01-01T00:00:00Z and 2099-12-31T23:59:59Z: the accepted range.
    const MIN_OK: Timestamp = -2_177_452_800;
    const MAX_OK: Timestamp = 4_102_444_799;
    const NOW: Timestamp = 1_800_000_000;

    fn pts(s: &str) -> Result<Timestamp, Error> {
        parse_time_string(s, NOW)
    }

    /// `None` if midnight falls in a DST gap in the machine's zone.
    fn try_local_midnight(y: i32, m: u32, d: u32) -> Option<Timestamp> {
        Some(
            Local
                .with_ymd_and_hms(y, m, d, 0, 0, 0)
                .earliest()?
                .timestamp(),
        )
    }

    fn local_midnight_expected(y: i32, m: u32, d: u32) -> Timestamp {
        try_local_midnight(y, m, d).expect("midnight exists in this zone")
    }

    fn std_offset_expected(y: i32) -> i64 {
        let off = |m| {
            let dt = NaiveDate::from_ymd_opt(y, m, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap();
            i64::from(Local.offset_from_utc_datetime(&dt).local_minus_utc())
        };
        off(1).min(off(7))
    }

    #[test]
    fn to_filename_examples() {
        assert_eq!(to_filename(0), "19700101T000000Z");
        assert_eq!(to_filename(T_FULL), "20261124T063606Z");
        assert_eq!(to_filename(T_FULL + 49), "20261124T063655Z");
        assert_eq!(to_filename(-1), "19691231T235959Z");
        assert_eq!(to_filename(MIN_OK), "19010101T000000Z");
        assert_eq!(to_filename(MAX_OK), "20991231T235959Z");
        assert_eq!(to_filename(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn from_filename_new_form() {
        assert_eq!(from_filename("20261124T063606Z"), Some(T_FULL));
        assert_eq!(from_filename("20140610T045757Z"), Some(1_402_376_277));
        // Upper-cased before parsing, as duplicity does.
        assert_eq!(from_filename("20261124t063606z"), Some(T_FULL));
        // Out-of-range days and leap seconds roll over like timegm.
        assert_eq!(from_filename("20260231T000000Z"), Some(1_772_496_000));
        assert_eq!(from_filename("20261124T063560Z"), Some(T_FULL - 6));
        assert_eq!(from_filename("20261124T063561Z"), Some(T_FULL - 5));
    }

    #[test]
    fn from_filename_legacy_form() {
        let t = 1_029_626_221; // 2002-08-17T23:17:01Z
        assert_eq!(from_filename("2002-08-17T16:17:01-07:00"), Some(t));
        assert_eq!(from_filename("2002-08-17T23:17:01Z"), Some(t));
        assert_eq!(from_filename("2002-08-18T01:17:01+02:00"), Some(t));
        assert_eq!(from_filename("2002-08-18T01:47:01+02:30"), Some(t));
        // Alternative separators (--time-separator), used consistently.
        assert_eq!(from_filename("2002-08-17T16_17_01-07_00"), Some(t));
        assert_eq!(from_filename("2002-08-17T16.17.01-07.00"), Some(t));
        assert_eq!(from_filename("2002-08-17T16-17-01-07-00"), Some(t));
        assert_eq!(from_filename("2002-08-17t23.17.01z"), Some(t));
    }

    #[test]
    fn from_filename_rejects() {
        for bad in [
            "",
            "lockfile",
            "20261124T063606",
            "20261124T063606ZZ",
            "2026112T0636066Z",
            "20261124X063606Z",
            "20261124T063606X",
            "2026+124T063606Z",
            "20261124T06 606Z",
            "19000101T000000Z",
            "21000101T000000Z",
            "20261324T063606Z",
            "20260024T063606Z",
            "20261100T063606Z",
            "20261132T063606Z",
            "20261124T243606Z",
            "20261124T066006Z",
            "20261124T063662Z",
            // Legacy needs a zone in file names, and consistent separators.
            "2002-08-17T16:17:01",
            "2002-08-17T16:17.01Z",
            "2002-08-17T16:17:01-07.00",
            "2002-08-17T16:17:01-0700",
            "2002-08-17T16:17:01*07:00",
            "2002-08-17T16:17:01-07:00Z",
            "2002-08-17T16717701Z",
            "2002/08/17T16:17:01Z",
            "2002-08-17 16:17:01Z",
            "1900-08-17T16:17:01Z",
            "2002-08-17T16é17é01Z",
        ] {
            assert_eq!(from_filename(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn time_string_now_and_digits() {
        assert_eq!(pts("now").unwrap(), NOW);
        assert_eq!(pts("0").unwrap(), 0);
        assert_eq!(pts("1234567890").unwrap(), 1_234_567_890);
        // 8 digits are epoch seconds, not a date: digits come first.
        assert_eq!(pts("20261124").unwrap(), 20_261_124);
        assert!(pts("99999999999999999999").is_err());
    }

    #[test]
    fn time_string_datetimes() {
        assert_eq!(pts("20261124T063606Z").unwrap(), T_FULL);
        assert_eq!(pts("2026-11-24T06:36:06Z").unwrap(), T_FULL);
        assert_eq!(pts("2026-11-24T07:36:06+01:00").unwrap(), T_FULL);
        assert_eq!(pts("2026-11-23T20:36:06-10:00").unwrap(), T_FULL);
        // No zone: local standard time.
        let naive = T_FULL;
        assert_eq!(
            pts("2026-11-24T06:36:06").unwrap(),
            naive - std_offset_expected(2026)
        );
        let july = 1_783_838_166; // 2026-07-12T06:36:06 read as UTC
        assert_eq!(to_filename(july), "20260712T063606Z");
        assert_eq!(
            pts("2026-07-12T06:36:06").unwrap(),
            july - std_offset_expected(2026)
        );
    }

    #[test]
    fn time_string_intervals() {
        assert_eq!(pts("10s").unwrap(), NOW - 10);
        assert_eq!(pts("1m").unwrap(), NOW - 60);
        assert_eq!(pts("1h78m").unwrap(), NOW - 3600 - 78 * 60);
        assert_eq!(pts("3D64s").unwrap(), NOW - 3 * DAY - 64);
        assert_eq!(pts("60D").unwrap(), NOW - 60 * DAY);
        assert_eq!(pts("2W").unwrap(), NOW - 14 * DAY);
        assert_eq!(pts("1M").unwrap(), NOW - 30 * DAY);
        assert_eq!(pts("1Y").unwrap(), NOW - 365 * DAY);
        assert_eq!(pts("0s").unwrap(), NOW);
        assert_eq!(pts("1Y1M1W1D1h1m1s").unwrap(), NOW - 403 * DAY - 3661);
        assert_eq!(pts("007D").unwrap(), NOW - 7 * DAY);
        // Units may repeat and come in any order.
        assert_eq!(pts("1s1D1s").unwrap(), NOW - DAY - 2);
    }

    #[test]
    fn time_string_dates() {
        let want = local_midnight_expected(2026, 11, 4);
        for s in [
            "2026/11/04",
            "2026/11/4",
            "2026-11-04",
            "2026-11-4",
            "11/04/2026",
            "11/4/2026",
            "11-04-2026",
            "11-4-2026",
            "20261104Z",
        ] {
            assert_eq!(pts(s).unwrap(), want, "{s}");
        }
        assert_eq!(
            pts("2026/1/2").unwrap(),
            local_midnight_expected(2026, 1, 2)
        );
        assert_eq!(
            pts("7/9/1999").unwrap(),
            local_midnight_expected(1999, 7, 9)
        );
        // Day 31 of a short month rolls over, as with the date-times.
        assert_eq!(
            pts("2026-02-31").unwrap(),
            local_midnight_expected(2026, 3, 3)
        );
    }

    #[test]
    fn time_string_rejects_with_original_text() {
        for bad in [
            "",
            "NOW",
            " now",
            "now ",
            "1 h",
            "h",
            "s",
            "1x",
            "1hh",
            "1h1",
            "-1h",
            "+1h",
            "1d",
            "1w",
            "1y",
            "9999999999999999999Y",
            "99999999999999999999s",
            "2026/11-04",
            "2026/111/04",
            "26/11/04",
            "2026/11/04/01",
            "11/04/26",
            "2026//04",
            "2026/13/01",
            "2026/00/01",
            "2026/01/00",
            "2026/01/32",
            "2100-01-01",
            "1900-12-31",
            "2026110Z",
            "20261104z",
            "2026-11-24T06:36:06+0100",
            "2026-11-24T06-36-06Z",
            "2026-11-24 06:36:06Z",
            "2026-11-24T06:36",
            "20261124T063606z",
            "yesterday",
        ] {
            match pts(bad) {
                Err(Error::BadTime(s)) => assert_eq!(s, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert_eq!(Error::BadTime("x".into()).exit_code(), 2);
    }

    #[test]
    fn interval_overflow_against_now() {
        assert!(parse_time_string("1s", i64::MIN).is_err());
        assert_eq!(parse_time_string("1s", 0).unwrap(), -1);
    }

    #[test]
    fn pretty_local_asctime_style() {
        // 2026-11-04T12:00:00Z is Nov 4 or 5 in every zone (offsets within ±14 h).
        let t = 1_793_793_600;
        let s = pretty_local(t);
        let local = Local.timestamp_opt(t, 0).unwrap();
        assert_eq!(s.len(), 24, "{s:?}");
        let want = format!(
            "{} Nov {:>2} {:02}:{:02}:{:02} 2026",
            local.format("%a"),
            local.day(),
            local.hour(),
            local.minute(),
            local.second()
        );
        assert_eq!(s, want);
        assert!(s[7..10] == *"  4" || s[7..10] == *"  5", "{s:?}");
        // Two-digit days are not padded.
        let s = pretty_local(T_FULL);
        assert!(s.contains(" Nov 23 ") || s.contains(" Nov 24 "), "{s:?}");
    }

    /// The hand-made format is chrono's `%a %b %e %H:%M:%S %Y`.
    #[test]
    fn pretty_local_equals_strftime() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = (x % 300_000_000_000) as i64 - 62_000_000_000;
            let want = match Local.timestamp_opt(t, 0) {
                LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _) => {
                    dt.format("%a %b %e %H:%M:%S %Y").to_string()
                }
                LocalResult::None => t.to_string(),
            };
            assert_eq!(pretty_local(t), want, "{t}");
        }
    }

    #[test]
    fn now_is_recent() {
        let t = now();
        assert!(t > 1_700_000_000 && t < MAX_OK, "{t}");
    }

    #[test]
    fn civil_conversion_edges() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (1900, 3, 1),
            (1600, 1, 1),
            (-1, 12, 31),
            (9999, 12, 31),
        ] {
            assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    proptest! {
        #[test]
        fn to_filename_matches_chrono(t in -62_135_596_800i64..253_402_300_800) {
            let want = Utc.timestamp_opt(t, 0).unwrap().format("%Y%m%dT%H%M%SZ").to_string();
            prop_assert_eq!(to_filename(t), want);
        }

        #[test]
        fn filename_round_trip(t in MIN_OK..=MAX_OK) {
            let s = to_filename(t);
            prop_assert_eq!(s.len(), 16);
            prop_assert_eq!(from_filename(&s), Some(t));
            prop_assert_eq!(parse_time_string(&s, NOW).unwrap(), t);
        }

        #[test]
        fn legacy_round_trip(
            t in MIN_OK + DAY..MAX_OK - DAY,
            off_min in -14 * 60i32..=14 * 60,
            sep in prop::sample::select(vec![':', '.', '_', '-', ';', 'x']),
        ) {
            let local = Utc.timestamp_opt(t, 0).unwrap().with_timezone(&FixedOffset::east_opt(off_min * 60).unwrap());
            let zone = format!("{}{:02}{sep}{:02}", if off_min < 0 { '-' } else { '+' }, off_min.abs() / 60, off_min.abs() % 60);
            let s = format!("{}{zone}", local.format(&format!("%Y-%m-%dT%H{sep}%M{sep}%S")));
            prop_assert_eq!(from_filename(&s), Some(t), "{}", s);
            if sep == ':' {
                prop_assert_eq!(parse_time_string(&s, NOW).unwrap(), t);
                let z = Utc.timestamp_opt(t, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string();
                prop_assert_eq!(parse_time_string(&z, NOW).unwrap(), t);
            }
        }

        #[test]
        fn digits_are_epoch_seconds(t in 0i64..i64::MAX) {
            prop_assert_eq!(parse_time_string(&t.to_string(), NOW).unwrap(), t);
        }

        #[test]
        fn intervals_sum(parts in prop::collection::vec((0i64..100_000, 0usize..7), 1..6)) {
            const UNITS: [(char, i64); 7] = [('s', 1), ('m', 60), ('h', 3600), ('D', DAY), ('W', 7 * DAY), ('M', 30 * DAY), ('Y', 365 * DAY)];
            let s: String = parts.iter().map(|&(n, u)| format!("{n}{}", UNITS[u].0)).collect();
            let secs: i64 = parts.iter().map(|&(n, u)| n * UNITS[u].1).sum();
            prop_assert_eq!(parse_time_string(&s, NOW).unwrap(), NOW - secs);
        }

        #[test]
        fn date_forms_agree(y in 1901i32..2100, m in 1u32..=12, d in 1u32..=28) {
            let want = try_local_midnight(y, m, d);
            prop_assume!(want.is_some());
            let want = want.unwrap();
            for s in [
                format!("{y}/{m}/{d}"),
                format!("{y}-{m:02}-{d:02}"),
                format!("{m}/{d:02}/{y}"),
                format!("{m:02}-{d}-{y}"),
                format!("{y}{m:02}{d:02}Z"),
            ] {
                prop_assert_eq!(parse_time_string(&s, NOW).unwrap(), want, "{}", s);
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = parse_time_string(&s, NOW);
            let _ = from_filename(&s);
        }

        #[test]
        fn never_panics_on_near_misses(s in "[0-9TZ:/+-]{0,26}|[0-9smhDWMY]{0,12}") {
            let _ = parse_time_string(&s, NOW);
            let _ = from_filename(&s);
        }
    }
}
