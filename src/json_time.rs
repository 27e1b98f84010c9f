//! Timestamps in machine-readable output (`list --json`, `status --json`,
//! the `--run-now` JSON report and webhook events): RFC 3339 in UTC, whole
//! seconds, `Z` (`2026-12-04T17:53:26Z`), the same everywhere.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// `t` as RFC 3339, whole seconds, `Z`.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// [`format`]'s text, written where it goes without a `String` of its own:
/// the json sink writes one per credential, and building them was the
/// largest source of allocations in a 30,000-credential pass.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub DateTime<Utc>);

impl Rfc3339 {
    /// Calls `write` with the text, from a buffer on the stack for years of
    /// four digits (all but chrono's far past and future).
    fn with_text<R>(self, write: impl FnOnce(&str) -> R) -> R {
        let t = self.0;
        if !(0..=9999).contains(&t.year()) {
            return write(&format(t));
        }
        // Digits into a fixed buffer: formatting six padded numbers through
        // `write!` took longer than the `String` this saves.
        let mut text = *b"0000-00-00T00:00:00Z";
        let fields = [
            (0, 4, t.year().unsigned_abs()),
            (5, 2, t.month()),
            (8, 2, t.day()),
            (11, 2, t.hour()),
            (14, 2, t.minute()),
            (17, 2, t.second()),
        ];
        for (at, width, mut n) in fields {
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        write(std::str::from_utf8(&text).expect("ASCII digits"))
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_text(|text| f.write_str(text))
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_text(|text| s.serialize_str(text))
    }
}

/// For `#[serde(serialize_with = "crate::json_time::serialize")]`.
pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&Rfc3339(*t), s)
}

/// [`format`] of an optional time (`null` when absent), as a JSON value.
pub fn value(t: Option<DateTime<Utc>>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| format(t).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn whole_seconds_in_utc_with_z() {
        let t = Utc.with_ymd_and_hms(2026, 12, 4, 17, 53, 26).unwrap()
            + chrono::Duration::microseconds(909_298);
        assert_eq!(format(t), "2026-12-04T17:53:26Z");
        assert_eq!(value(None), serde_json::Value::Null);
    }

    #[test]
    fn written_in_place_as_formatted() {
        let mut at = Utc.with_ymd_and_hms(-3, 1, 1, 0, 0, 0).unwrap().timestamp();
        let last = Utc
            .with_ymd_and_hms(10_002, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp();
        // Steps that are prime in seconds, so every field takes many values.
        while at < last {
            let t = DateTime::from_timestamp(at, 0).unwrap();
            assert_eq!(Rfc3339(t).to_string(), format(t));
            let json = serde_json::to_string(&Rfc3339(t)).unwrap();
            assert_eq!(json, format!("\"{}\"", format(t)));
            at += 7_919_993;
        }
        let t = Utc.with_ymd_and_hms(2026, 12, 4, 17, 53, 26).unwrap()
            + chrono::Duration::milliseconds(999);
        assert_eq!(Rfc3339(t).to_string(), "2026-12-04T17:53:26Z");
    }
}
