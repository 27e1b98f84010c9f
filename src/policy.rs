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
        || settings.object_storages.iter().any(|s| {
            s == object_storage_id || s.eq_ignore_ascii_case(object_storage_name.trim())
        });
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
            ("users = [\"*@example.com\"]\nexclude_users = [\"admin@*\"]", "admin@example.com", false),
            ("users = [\"a@x.io\", \"b@x.io\"]", "b@x.io", true),
            ("users = [\"a@x.io\", \"b@x.io\"]", "c@x.io", false),
        ];
        for (toml, email, expected) in cases {
            assert_eq!(user_selected(&settings(toml), email), *expected, "{toml} / {email}");
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
            ("regions = [\"European Union\"]\nobject_storages = [\"os-us\"]", us, false),
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
