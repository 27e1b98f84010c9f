//! Timestamps in machine-readable output (`list --json`, `status --json`,
//! the `--run-now` JSON report and webhook events): RFC 3339 in UTC, whole
//! seconds, `Z` (`2026-12-04T17:53:26Z`), the same everywhere.

use chrono::{DateTime, SecondsFormat, Utc};

/// `t` as RFC 3339, whole seconds, `Z`.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// For `#[serde(serialize_with = "crate::json_time::serialize")]`.
pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*t))
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
}
