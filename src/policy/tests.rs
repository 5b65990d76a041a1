//! Unit tests for time helpers; policy behaviour is tested through the HTTP API in `tests/`.

use super::*;

#[test]
fn hour_and_weekday_of_known_dates() {
    // 1970-01-01 00:00 UTC was a Thursday.
    assert_eq!(hour_and_weekday(0), (0, 4));
    // 2026-11-23 16:42:17 UTC is a Monday.
    assert_eq!(hour_and_weekday(1_795_452_137), (16, 1));
    // A Sunday 23:59:59 (2026-11-22).
    assert_eq!(hour_and_weekday(1_795_391_999), (23, 7));
}
