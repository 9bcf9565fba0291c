//! The clock Swarm's processes keep time by, and calendar dates and RFC 3339 timestamps
//! without a date-time dependency.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// µs since the Unix epoch, now, on a clock that does not step: the system's wall clock read
/// once (at the first call), advanced since by the monotonic clock. A step of the system clock
/// (an NTP correction, an operator's `date -s`, a VM restored from a snapshot) moves no timer,
/// deadline or duration of a running process: a coordinator whose clock jumped an hour ahead
/// would otherwise time out every running attempt at once, and one stepped back would hold every
/// retry backoff for an hour. The monotonic clock is slewed by NTP like the wall clock, so the
/// two agree up to the steps taken since the process started (start processes after the host's
/// time is synchronised; `systemd-time-wait-sync`, a Kubernetes node).
pub fn unix_now_us() -> u64 {
    static ANCHOR: OnceLock<(u64, Instant)> = OnceLock::new();
    let (wall_us, at) = ANCHOR.get_or_init(|| (wall_clock_us(), Instant::now()));
    wall_us.saturating_add(at.elapsed().as_micros() as u64)
}

/// µs since the Unix epoch by the system's wall clock as it reads now (steps and all): for
/// records a human reads against other clocks (the audit log), never for timers.
pub fn wall_clock_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The proleptic Gregorian date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `unix_ms` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-06T17:19:50.123Z`.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let (days, ms) = (unix_ms.div_euclid(86_400_000), unix_ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_starts_at_the_wall_clock_and_never_goes_back() {
        let (a, wall) = (unix_now_us(), wall_clock_us());
        assert!(a.abs_diff(wall) < 5_000_000, "anchored at the wall clock: {a} vs {wall}");
        let mut last = a;
        for _ in 0..1000 {
            let now = unix_now_us();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_704_067_199_999), "2023-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
