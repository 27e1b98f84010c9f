//! `list [--json]`: selected users and credentials, with last rotation and due
//! state. Never prints a secret: only ids, names, regions and access keys.

use super::{api_client, CliError, EXIT_FAILED, EXIT_OK};
use crate::config::{OnFirstSight, Settings, TwinSettings};
use crate::inventory::{self, CredentialEntry, Inventory};
use crate::policy;
use crate::rotation::{history, key_of};
use crate::state::{AllRecords, StateDir, TwinState};
use anyhow::Context;
use serde::Serialize;
use std::io::Write;

#[derive(Serialize)]
struct Listing<'a> {
    /// [`super::JSON_SCHEMA_VERSION`].
    schema_version: u32,
    api_user_id: &'a str,
    users_seen: usize,
    users_selected: usize,
    credentials: Vec<Row<'a>>,
    failures: Vec<Failure>,
}

#[derive(Serialize)]
struct Row<'a> {
    user_id: &'a str,
    user_email: &'a str,
    object_storage_id: &'a str,
    object_storage_name: &'a str,
    region: &'a str,
    s3_url: &'a str,
    credential_id: i64,
    access_key: &'a str,
    /// RFC 3339, or `null` until the rotation engine records one.
    last_rotated: Option<String>,
    due: bool,
    due_reason: String,
    /// The twin the user belongs to, and whether the sinks hold it
    /// (`active`) or not (`standby`).
    #[serde(skip_serializing_if = "Option::is_none")]
    twin: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    twin_role: Option<&'static str>,
}

#[derive(Serialize)]
struct Failure {
    user_email: String,
    error: String,
}

/// Runs `list` and writes to `out`; exit 1 when some user could not be listed.
pub async fn run(settings: &Settings, json: bool, out: &mut impl Write) -> Result<u8, CliError> {
    let client = api_client(settings)?;
    let inventory = inventory::collect(&client, &settings.object_storage)
        .await
        .context("listing users and credentials")?;
    let view = StateDir::open_read_only(&settings.state.dir).with_context(|| {
        format!(
            "reading the state directory {}",
            settings.state.dir.display()
        )
    })?;
    let listing = listing(settings, &inventory, &view.records, &view.twins);
    if json {
        serde_json::to_writer(&mut *out, &listing).context("writing JSON")?;
        writeln!(out).context("writing to stdout")?;
    } else {
        print_table(&listing, out).context("writing to stdout")?;
    }
    Ok(if listing.failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

fn listing<'a>(
    settings: &'a Settings,
    inventory: &'a Inventory,
    records: &AllRecords,
    twins: &[TwinState],
) -> Listing<'a> {
    let os = &settings.object_storage;
    let adopt = os.on_first_sight == OnFirstSight::Adopt;
    let now = chrono::Utc::now();
    Listing {
        schema_version: super::JSON_SCHEMA_VERSION,
        api_user_id: &inventory.api_user_id,
        users_seen: inventory.users_seen,
        users_selected: inventory.users_selected,
        credentials: inventory
            .credentials
            .iter()
            .map(|c: &CredentialEntry| {
                if let Some(twin) = os.twin_of(&c.user_email) {
                    return twin_row(c, twin, twins, os, now);
                }
                let history = history(records.get(&key_of(c)));
                let reason = policy::decide(now, history, os.rotate, os.max_age, adopt, false);
                let last = history.rotated_at.map(crate::json_time::format);
                row(c, last, reason.rotates(), reason.to_string())
            })
            .collect(),
        failures: inventory
            .failures
            .iter()
            .map(|f| Failure {
                user_email: f.user_email.clone(),
                error: f.error.to_string(),
            })
            .collect(),
    }
}

/// A credential's row (of a user in no twin).
fn row(
    c: &CredentialEntry,
    last_rotated: Option<String>,
    due: bool,
    due_reason: String,
) -> Row<'_> {
    Row {
        user_id: &c.user_id,
        user_email: &c.user_email,
        object_storage_id: &c.object_storage_id,
        object_storage_name: &c.object_storage_name,
        region: &c.region,
        s3_url: &c.s3_url,
        credential_id: c.credential_id,
        access_key: &c.access_key,
        last_rotated,
        due,
        due_reason,
        twin: None,
        twin_role: None,
    }
}

/// A twin user's credential: due when it is the active user's and the
/// twin's keys are older than `max_age`; the standby's never is.
fn twin_row<'a>(
    c: &'a CredentialEntry,
    twin: &'a TwinSettings,
    twins: &[TwinState],
    os: &crate::config::ObjectStorageSettings,
    now: chrono::DateTime<chrono::Utc>,
) -> Row<'a> {
    let state = twins.iter().find(|t| t.name == twin.name);
    // Before the first run, the first user is the one that will be active.
    let active = match state {
        Some(s) => s.active.user_id == *c.user_id,
        None => twin.users[0].eq_ignore_ascii_case(&c.user_email),
    };
    let since = state.map(|s| s.active_since);
    let max_age = chrono::Duration::from_std(os.max_age).unwrap_or(chrono::Duration::MAX);
    let due = active && os.rotate && since.is_some_and(|s| s + max_age <= now);
    let due_reason = match (active, since) {
        (false, _) => format!("standby of twin {}", twin.name),
        (true, None) => format!("active user of twin {}, first run to come", twin.name),
        (true, Some(s)) => format!(
            "active user of twin {} since {}",
            twin.name,
            crate::json_time::format(s)
        ),
    };
    Row {
        twin: Some(&twin.name),
        twin_role: Some(if active { "active" } else { "standby" }),
        ..row(
            c,
            state
                .and_then(|s| s.last_switch_at)
                .map(crate::json_time::format),
            due,
            due_reason,
        )
    }
}

fn print_table(listing: &Listing<'_>, out: &mut impl Write) -> std::io::Result<()> {
    let header = [
        "USER",
        "REGION",
        "STORAGE",
        "CREDENTIAL",
        "ACCESS KEY",
        "LAST ROTATION",
        "DUE",
        "TWIN",
    ];
    let rows: Vec<[String; 8]> = listing
        .credentials
        .iter()
        .map(|r| {
            [
                r.user_email.to_owned(),
                r.region.to_owned(),
                r.object_storage_name.to_owned(),
                r.credential_id.to_string(),
                r.access_key.to_owned(),
                r.last_rotated.clone().unwrap_or_else(|| "never".into()),
                if r.due { "yes" } else { "no" }.to_owned(),
                match (r.twin, r.twin_role) {
                    (Some(t), Some(role)) => format!("{t} ({role})"),
                    _ => String::new(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(&header.map(String::from)))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    writeln!(
        out,
        "{} credentials of {} selected users ({} users in the account).",
        listing.credentials.len(),
        listing.users_selected,
        listing.users_seen
    )
}
