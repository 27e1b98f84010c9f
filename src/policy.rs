//! Policy: which users and credentials are in scope. Pure functions, no I/O.
//!
//! Selection follows `[object_storage]`: `users` globs (all users when unset),
//! minus `exclude_users` globs, then `regions` and `object_storages` (id or
//! display name) when non-empty. Due-ness and run limits are added by the
//! rotation engine.

use crate::config::ObjectStorageSettings;

/// Whether a user's credentials are in scope, by e-mail.
pub fn user_selected(settings: &ObjectStorageSettings, email: &str) -> bool {
    let included = settings
        .users
        .as_ref()
        .is_none_or(|globs| globs.is_match(email));
    let excluded = settings
        .exclude_users
        .as_ref()
        .is_some_and(|globs| globs.is_match(email));
    included && !excluded
}

/// Whether a credential is in scope by its region and object storage.
pub fn storage_selected(
    settings: &ObjectStorageSettings,
    region: &str,
    object_storage_id: &str,
    object_storage_name: &str,
) -> bool {
    let region_ok = settings.regions.is_empty()
        || settings
            .regions
            .iter()
            .any(|r| r.eq_ignore_ascii_case(region.trim()));
    let storage_ok = settings.object_storages.is_empty()
        || settings
            .object_storages
            .iter()
            .any(|s| s == object_storage_id || s.eq_ignore_ascii_case(object_storage_name.trim()));
    region_ok && storage_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn settings(object_storage_toml: &str) -> ObjectStorageSettings {
        let text = format!(
            "[api]\nclient_id = \"INT-1\"\nclient_secret = \"s\"\nusername = \"u@example.com\"\npassword = \"p\"\n\
             [object_storage]\n{object_storage_toml}\n"
        );
        config::load_from_str(&text, Path::new("test.toml"))
            .expect("valid test config")
            .object_storage
    }

    #[test]
    fn user_selection_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "anyone@example.com", true),
            ("users = [\"*@example.com\"]", "app@example.com", true),
            ("users = [\"*@example.com\"]", "app@other.org", false),
            ("users = [\"*@example.com\"]", "APP@EXAMPLE.COM", true),
            ("exclude_users = [\"ci-*\"]", "ci-bot@example.com", false),
            ("exclude_users = [\"ci-*\"]", "app@example.com", true),
            (
                "users = [\"*@example.com\"]\nexclude_users = [\"admin@*\"]",
                "admin@example.com",
                false,
            ),
            ("users = [\"a@x.io\", \"b@x.io\"]", "b@x.io", true),
            ("users = [\"a@x.io\", \"b@x.io\"]", "c@x.io", false),
        ];
        for (toml, email, expected) in cases {
            assert_eq!(
                user_selected(&settings(toml), email),
                *expected,
                "{toml} / {email}"
            );
        }
    }

    #[test]
    fn storage_selection_table() {
        let eu = ("European Union", "os-eu", "Object Storage EU 420");
        let us = ("United States (Central)", "os-us", "Object Storage US 7");
        let cases: &[(&str, (&str, &str, &str), bool)] = &[
            ("", eu, true),
            ("regions = [\"European Union\"]", eu, true),
            ("regions = [\"european union\"]", eu, true),
            ("regions = [\"European Union\"]", us, false),
            ("object_storages = [\"os-us\"]", us, true),
            ("object_storages = [\"os-us\"]", eu, false),
            ("object_storages = [\"Object Storage EU 420\"]", eu, true),
            (
                "regions = [\"European Union\"]\nobject_storages = [\"os-us\"]",
                us,
                false,
            ),
        ];
        for (toml, (region, id, name), expected) in cases {
            assert_eq!(
                storage_selected(&settings(toml), region, id, name),
                *expected,
                "{toml} / {id}"
            );
        }
    }
}

/// What the daemon knows about one secret's history (from the state records).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// When the daemon first saw it; `None` when never seen.
    pub first_seen: Option<chrono::DateTime<chrono::Utc>>,
    /// When the daemon last rotated it.
    pub rotated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why a secret is or is not rotated in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `--force`.
    Forced,
    /// No record and `on_first_sight = "rotate"`.
    FirstSight,
    /// No record and `on_first_sight = "adopt"`: the clock starts now.
    Adopted,
    /// Older than `max_age` (since the last rotation, or since first sight).
    Expired { age_secs: i64 },
    /// Younger than `max_age`; due at the given time.
    NotDue {
        due_at: chrono::DateTime<chrono::Utc>,
    },
    /// Rotation of this kind is switched off.
    Disabled,
    /// Due, but `max_per_run` was reached; it goes first in the next run.
    Deferred,
}

impl Reason {
    /// Whether this reason means "rotate now".
    pub fn rotates(self) -> bool {
        matches!(
            self,
            Reason::Forced | Reason::FirstSight | Reason::Expired { .. }
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Forced => f.write_str("forced (--force)"),
            Reason::FirstSight => f.write_str("never rotated (on_first_sight = rotate)"),
            Reason::Adopted => f.write_str("first seen now (on_first_sight = adopt)"),
            Reason::Expired { age_secs } => write!(
                f,
                "older than max_age ({} old)",
                humantime::format_duration(std::time::Duration::from_secs(
                    (*age_secs).max(0) as u64
                ))
            ),
            Reason::NotDue { due_at } => write!(f, "not due until {}", due_at.to_rfc3339()),
            Reason::Disabled => f.write_str("rotation disabled"),
            Reason::Deferred => f.write_str("due, deferred by max_per_run"),
        }
    }
}

/// The decision for one secret, before `max_per_run` is applied.
pub fn decide(
    now: chrono::DateTime<chrono::Utc>,
    history: History,
    rotate: bool,
    max_age: std::time::Duration,
    adopt: bool,
    force: bool,
) -> Reason {
    if !rotate {
        return Reason::Disabled;
    }
    if force {
        return Reason::Forced;
    }
    let since = match (history.rotated_at, history.first_seen) {
        (Some(rotated), _) => rotated,
        (None, Some(seen)) if adopt => seen,
        (None, Some(_)) => return Reason::FirstSight,
        (None, None) if adopt => return Reason::Adopted,
        (None, None) => return Reason::FirstSight,
    };
    let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    let due_at = since + max_age;
    if now >= due_at {
        Reason::Expired {
            age_secs: (now - since).num_seconds(),
        }
    } else {
        Reason::NotDue { due_at }
    }
}

/// Applies `max_per_run` to decisions: the oldest due secrets (never rotated
/// first, then by age) keep their reason, the rest become [`Reason::Deferred`].
/// `items` pairs each decision with its last rotation (or first sight) time.
pub fn limit(
    items: &mut [(Reason, Option<chrono::DateTime<chrono::Utc>>)],
    max_per_run: Option<usize>,
) {
    let Some(max) = max_per_run else { return };
    let mut due: Vec<usize> = (0..items.len()).filter(|&i| items[i].0.rotates()).collect();
    // `None` (never rotated) sorts before every time: most overdue first.
    due.sort_by_key(|&i| items[i].1);
    for &i in due.iter().skip(max) {
        items[i].0 = Reason::Deferred;
    }
}

#[cfg(test)]
mod decision_tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn decision_table() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 3, 30, 0).unwrap();
        let ago = |days: i64| Some(now - chrono::Duration::days(days));
        let h = |first_seen, rotated_at| History {
            first_seen,
            rotated_at,
        };
        // (history, rotate, adopt, force) -> expected
        let cases: Vec<(History, bool, bool, bool, &str)> = vec![
            (h(None, None), true, false, false, "first"),
            (h(None, None), true, true, false, "adopted"),
            (h(ago(3), None), true, true, false, "not-due"),
            (h(ago(8), None), true, true, false, "expired"),
            (h(ago(3), None), true, false, false, "first"),
            (h(ago(30), ago(6)), true, false, false, "not-due"),
            (h(ago(30), ago(7)), true, false, false, "expired"),
            (h(ago(30), ago(1)), true, false, true, "forced"),
            (h(None, None), false, false, true, "disabled"),
            (h(ago(90), ago(90)), false, false, false, "disabled"),
        ];
        for (history, rotate, adopt, force, expected) in cases {
            let got = decide(now, history, rotate, 7 * DAY, adopt, force);
            let kind = match got {
                Reason::FirstSight => "first",
                Reason::Adopted => "adopted",
                Reason::NotDue { .. } => "not-due",
                Reason::Expired { .. } => "expired",
                Reason::Forced => "forced",
                Reason::Disabled => "disabled",
                Reason::Deferred => "deferred",
            };
            assert_eq!(
                kind, expected,
                "{history:?} rotate={rotate} adopt={adopt} force={force}"
            );
        }
    }

    #[test]
    fn not_due_reports_when_it_will_be() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
        let rotated = now - chrono::Duration::days(2);
        let got = decide(
            now,
            History {
                first_seen: Some(rotated),
                rotated_at: Some(rotated),
            },
            true,
            7 * DAY,
            false,
            false,
        );
        assert_eq!(
            got,
            Reason::NotDue {
                due_at: rotated + chrono::Duration::days(7)
            }
        );
    }

    #[test]
    fn max_per_run_keeps_the_most_overdue() {
        let t = |d: i64| {
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::days(d))
        };
        let exp = Reason::Expired { age_secs: 1 };
        let mut items = vec![
            (exp, t(5)),
            (Reason::FirstSight, None),
            (
                Reason::NotDue {
                    due_at: t(100).unwrap(),
                },
                t(50),
            ),
            (exp, t(1)),
            (exp, t(3)),
        ];
        limit(&mut items, Some(2));
        let kept: Vec<bool> = items.iter().map(|(r, _)| r.rotates()).collect();
        assert_eq!(kept, [false, true, false, true, false]);
        assert_eq!(items[0].0, Reason::Deferred);
        assert!(
            matches!(items[2].0, Reason::NotDue { .. }),
            "not-due stays not-due"
        );
        let mut unlimited = vec![(exp, t(1)); 4];
        limit(&mut unlimited, None);
        assert!(unlimited.iter().all(|(r, _)| r.rotates()));
    }
}
