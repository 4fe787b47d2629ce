//! Calendar formatting of timestamps (UTC) for `%START_TIME%` and the application log,
//! without a date-time dependency: a strftime subset plus Envoy's `%f` / `%3f` / `%9f`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Civil date (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Formats `t` in UTC with a strftime-like pattern. Supported: `%Y %m %d %H %M %S %T %F
/// %z %Z %s %e %j %%` and `%f` (microseconds), `%Nf` (N fractional digits, 1-9).
pub fn format(t: SystemTime, pattern: &str) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let nanos = since.subsec_nanos();
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut digits = None;
        if let Some(n) = chars.peek().and_then(|c| c.to_digit(10)) {
            digits = Some(n as usize);
            chars.next();
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{y:04}")),
            Some('m') => out.push_str(&format!("{mo:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{mi:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('T') => out.push_str(&format!("{h:02}:{mi:02}:{s:02}")),
            Some('F') => out.push_str(&format!("{y:04}-{mo:02}-{d:02}")),
            Some('z') => out.push_str("+0000"),
            Some('Z') => out.push_str("UTC"),
            Some('s') => out.push_str(&secs.to_string()),
            Some('j') => {
                let (y0, _, _) = civil(secs.div_euclid(86_400));
                let jan1 = days_from_civil(y0);
                out.push_str(&format!("{:03}", secs.div_euclid(86_400) - jan1 + 1));
            }
            Some('f') => {
                let n = digits.unwrap_or(6).clamp(1, 9);
                let frac = format!("{nanos:09}");
                out.push_str(&frac[..n]);
            }
            Some('a') => out.push_str(
                ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
                    [secs.div_euclid(86_400).rem_euclid(7) as usize],
            ),
            Some('b') => out.push_str(
                [
                    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                    "Dec",
                ][mo as usize - 1],
            ),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn days_from_civil(y: i64) -> i64 {
    let y = y - 1;
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = 306; // March-based day of year of January 1st
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Envoy's default `%START_TIME%` rendering: `2024-05-01T12:34:56.789Z`.
pub fn iso8601_millis(t: SystemTime) -> String {
    format(t, "%Y-%m-%dT%H:%M:%S.%3fZ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(iso8601_millis(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            format(t, "%F %T.%f %s %j"),
            "2023-11-14 22:13:20.123456 1700000000 318"
        );
        assert_eq!(
            format(UNIX_EPOCH + Duration::from_secs(951_782_400), "%F"),
            "2000-02-29"
        );
        assert_eq!(
            format(t, "%a, %d %b %Y %H:%M:%S GMT"),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
    }
}
