//! The `Date` header, formatted at most once per second per core.

use super::response::{CONTENT_LENGTH, DEFAULT_CONTENT_TYPE, OK_START};
use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What is formatted once per second: the `Date` line, and the head of the usual
/// answer (200, no headers of the handler's own) up to its Content-Length value.
struct Cache {
    /// The loop time until which the lines are right (`None`: never formatted).
    until: Option<Instant>,
    date_line: String,
    ok_head: Vec<u8>,
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache { until: None, date_line: String::new(), ok_head: Vec::new() })
    };
}

/// Runs `f` on this second's cache. `now` is the loop's cached time, so most calls cost
/// a comparison: the wall clock is read and the lines formatted once per second per
/// core.
fn with_cache<R>(now: Instant, f: impl FnOnce(&Cache) -> R) -> R {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.until.is_none_or(|until| now >= until) {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let left =
                Duration::from_secs(1) - Duration::from_nanos(u64::from(wall.subsec_nanos()));
            c.until = Some(now + left);
            c.date_line = format!("Date: {}\r\n", http_date(wall.as_secs()));
            // The same pieces, in the same order, as Response's general head.
            c.ok_head = [
                OK_START,
                c.date_line.as_bytes(),
                DEFAULT_CONTENT_TYPE,
                CONTENT_LENGTH,
            ]
            .concat();
        }
        f(&c)
    })
}

/// Appends this second's `Date: ...\r\n` line to `out`.
pub(crate) fn append_date_line(out: &mut Vec<u8>, now: Instant) {
    with_cache(now, |c| out.extend_from_slice(c.date_line.as_bytes()));
}

/// Appends the head of a 200 answer with the default headers (`Server`, `Date`,
/// `Content-Type: text/html; charset=UTF-8`), up to the value of its `Content-Length`,
/// which the caller writes.
pub(crate) fn append_ok_head(out: &mut Vec<u8>, now: Instant) {
    with_cache(now, |c| out.extend_from_slice(&c.ok_head));
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110's IMF-fixdate) for seconds since 1970.
pub(crate) fn http_date(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {mon} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_the_rfc_examples() {
        let cases = [
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
        ];
        for (secs, want) in cases {
            assert_eq!(super::http_date(secs), want);
        }
    }

    #[test]
    fn date_line_is_cached_and_well_formed() {
        let mut a = Vec::new();
        super::append_date_line(&mut a, std::time::Instant::now());
        let s = String::from_utf8(a).unwrap();
        assert!(s.starts_with("Date: ") && s.ends_with(" GMT\r\n"), "{s:?}");
    }
}
