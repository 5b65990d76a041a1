//! Calendar times given by people (`log query --since`, admin `?since=`, policy test files):
//! RFC 3339 UTC text to Unix time, parsed by chrono (which Cedar already compiles in) so that
//! a date that does not exist, like `2023-02-31`, is refused rather than rolled over.

use chrono::DateTime;
use chrono::format::ParseErrorKind;

/// The form accepted with an optional fraction of a second.
const FORM_WITH_FRACTION: &str = "YYYY-MM-DDTHH:MM:SS[.fff]Z";
/// The form accepted in whole seconds.
const FORM_SECONDS: &str = "YYYY-MM-DDTHH:MM:SSZ";

/// A time text that is not an accepted RFC 3339 UTC time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not of the accepted form (offsets other than `Z` included).
    #[error("`{text}` is not of the form {form}")]
    Malformed {
        /// The text given.
        text: String,
        /// The accepted form.
        form: &'static str,
    },
    /// Of the form, but no such day in that month or no such time of day.
    #[error("`{0}` is not a date and time on the calendar")]
    NoSuchTime(String),
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` to Unix milliseconds (digits past milliseconds dropped).
pub fn parse_utc_ms(text: &str) -> Result<i64, TimeError> {
    parse(text, FORM_WITH_FRACTION)
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (whole seconds) to Unix seconds.
pub fn parse_utc_seconds(text: &str) -> Result<i64, TimeError> {
    if text.contains('.') {
        return Err(malformed(text, FORM_SECONDS));
    }
    parse(text, FORM_SECONDS).map(|ms| ms.div_euclid(1000))
}

fn parse(text: &str, form: &'static str) -> Result<i64, TimeError> {
    // chrono also takes `t`, a space, `z` and numeric offsets; toolgate's times are UTC, written
    // one way, so that the same instant has one spelling in commands, tests and docs.
    let b = text.as_bytes();
    if b.get(10) != Some(&b'T') || b.last() != Some(&b'Z') {
        return Err(malformed(text, form));
    }
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => Ok(t.timestamp_millis()),
        Err(e)
            if matches!(
                e.kind(),
                ParseErrorKind::OutOfRange | ParseErrorKind::Impossible
            ) =>
        {
            Err(TimeError::NoSuchTime(shown(text)))
        }
        Err(_) => Err(malformed(text, form)),
    }
}

fn malformed(text: &str, form: &'static str) -> TimeError {
    TimeError::Malformed {
        text: shown(text),
        form,
    }
}

/// The start of `text` to quote in an error: a time is short, and the text may come from a
/// request (the admin API's `?since=`).
fn shown(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_parse_to_unix_time() {
        assert_eq!(parse_utc_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_utc_ms("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_utc_ms("2023-11-14T22:13:20.5Z"),
            Ok(1_700_000_000_500)
        );
        assert_eq!(parse_utc_ms("1969-12-31T23:59:59.999Z"), Ok(-1));
        assert_eq!(parse_utc_seconds("2024-02-29T23:59:59Z"), Ok(1_709_251_199));
        assert_eq!(parse_utc_seconds("1969-12-31T23:59:59Z"), Ok(-1));
    }

    #[test]
    fn dates_not_on_the_calendar_are_refused_not_rolled_over() {
        for text in [
            "2023-02-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-05T24:00:00Z",
            "2026-01-05T10:60:00Z",
        ] {
            let error = parse_utc_ms(text).unwrap_err();
            assert_eq!(error, TimeError::NoSuchTime(text.to_owned()));
            assert_eq!(
                error.to_string(),
                format!("`{text}` is not a date and time on the calendar")
            );
            assert!(parse_utc_seconds(text).is_err(), "{text}");
        }
    }

    #[test]
    fn other_forms_are_refused_with_the_accepted_form() {
        for text in [
            "yesterday",
            "",
            "2026-01-05",
            "2026-01-05T10:00:00",
            "2026-01-05T10:00:00+01:00",
            "2026-01-05 10:00:00Z",
            "2026-01-05t10:00:00Z",
            "2026-01-05T10:00:00z",
            "+026-01-05T10:00:00Z",
            "2026-1-05T10:00:00Z",
        ] {
            assert_eq!(
                parse_utc_ms(text),
                Err(malformed(text, FORM_WITH_FRACTION)),
                "{text}"
            );
        }
        assert_eq!(
            parse_utc_seconds("2026-01-05T10:00:00.5Z")
                .unwrap_err()
                .to_string(),
            "`2026-01-05T10:00:00.5Z` is not of the form YYYY-MM-DDTHH:MM:SSZ"
        );
    }
}
