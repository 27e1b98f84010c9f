//! Tests of [`StateDir`] as a whole, against real temp directories.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use chrono::{TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::*;

const SECRET: &str = "Zq8!vN-3#pW@sK7$";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn sample_records(state: &StateDir) -> Records {
    let key = CredentialKey {
        user_id: "u-1".into(),
        object_storage_id: "os-1".into(),
        credential_id: 42,
    };
    let mut records = Records::default();
    records.insert(
        &key,
        CredentialRecord {
            user_email: "app@example.com".into(),
            first_seen: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            rotated_at: Some(Utc.with_ymd_and_hms(2026, 2, 2, 3, 4, 5).unwrap()),
            rotation_id: Some(Uuid::new_v4()),
            access_key: "AKIAEXAMPLE".into(),
            secret_fingerprint: state.fingerprint(&SecretString::from(SECRET)),
            verified: None,
        },
    );
    records.client_secret = Some(ClientSecretRecord {
        first_seen: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        rotated_at: None,
        rotation_id: None,
        fingerprint: Fingerprint::repeated(4),
    });
    records.sinks.insert(
        "file:/etc/app.json".into(),
        SinkRecord {
            last_error: Some("cannot write /etc/app.json: disk full".into()),
            ..SinkRecord::default()
        },
    );
    records
}

fn stored_secret() -> StoredClientSecret {
    StoredClientSecret {
        secret: SecretString::from(SECRET),
        rotated_at: Utc.with_ymd_and_hms(2026, 3, 1, 3, 30, 0).unwrap(),
        rotation_id: Uuid::new_v4(),
        superseded: Fingerprint::repeated(5),
        recovery_token: None,
    }
}

#[test]
fn open_creates_the_directory_and_a_private_key() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("var/lib/contabo-rotator");
    let state = StateDir::open(&dir).unwrap();
    assert_eq!(state.path(), dir);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("var/lib")), 0o700);
    let key = dir.join(KEY_FILE);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(fs::read(&key).unwrap().len(), 32);
    assert_eq!(
        fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
        format!("{}\n", std::process::id())
    );
}

#[test]
fn a_second_open_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let first = StateDir::open(dir.path()).unwrap();
    // flock locks belong to the open file description, so a second open in
    // this same process conflicts just as another process would.
    let err = StateDir::open(dir.path()).unwrap_err();
    let pid = std::process::id();
    assert!(
        matches!(&err, StateError::Locked { pid: Some(p), .. } if *p == pid),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "state directory {} is in use by another contabo-rotator (pid {pid})",
            dir.path().display()
        )
    );
    drop(first);
    StateDir::open(dir.path()).expect("the lock is released on drop");
}

#[test]
fn the_key_survives_reopening_so_fingerprints_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let secret = SecretString::from(SECRET);
    let before = StateDir::open(dir.path()).unwrap().fingerprint(&secret);
    let after = StateDir::open(dir.path()).unwrap().fingerprint(&secret);
    assert_eq!(before, after);

    let other = tempfile::tempdir().unwrap();
    assert_ne!(
        StateDir::open(other.path()).unwrap().fingerprint(&secret),
        before
    );
    assert!(before.text().starts_with("hmac-sha256:"));
    assert_eq!(before.text().len(), "hmac-sha256:".len() + 32);
}

/// `records` as every record at once.
fn all_of(records: &Records) -> AllRecords {
    let mut all = AllRecords {
        client_secret: records.client_secret.clone(),
        sinks: records.sinks.clone(),
        ..AllRecords::default()
    };
    records
        .scan(|k, r| {
            all.credentials.insert(k.clone(), r.clone());
        })
        .unwrap();
    all
}

/// Every byte of the database and its log.
fn db_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = fs::read(dir.join("state.db")).unwrap();
    bytes.extend(fs::read(dir.join("state.db-wal")).unwrap_or_default());
    bytes
}

#[test]
fn records_and_journal_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    assert_eq!(state.load_records().unwrap(), AllRecords::default());
    assert_eq!(state.load_journal().unwrap(), Journal::default());

    let mut records = sample_records(&state);
    state.save_records(&mut records).unwrap();
    assert_eq!(state.load_records().unwrap(), all_of(&records));

    let mut journal = Journal::default();
    let rotation_id = Uuid::new_v4();
    journal.begin(Intent {
        rotation_id,
        started_at: Utc::now(),
        kind: IntentKind::ObjectStorage {
            key: "u-1/os-1/42".parse().unwrap(),
            user_email: "app@example.com".into(),
            old_access_key: "AKIAOLD".into(),
            old_fingerprint: Fingerprint::repeated(6),
        },
    });
    journal.begin(Intent {
        rotation_id: Uuid::new_v4(),
        started_at: Utc::now(),
        kind: IntentKind::ClientSecret {
            old_fingerprint: Fingerprint::repeated(7),
        },
    });
    state.save_journal(&journal).unwrap();
    assert_eq!(state.load_journal().unwrap(), journal);

    journal.finish(rotation_id).unwrap();
    state.save_journal(&journal).unwrap();
    assert_eq!(state.load_journal().unwrap().intents.len(), 1);

    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
    let bytes = db_bytes(dir.path());
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the database holds a secret"
    );
}

#[test]
fn leftover_temp_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(StateDir::open(dir.path()).unwrap());
    fs::write(dir.path().join(".records.json.tmp-00000000deadbeef"), "{").unwrap();
    fs::write(
        dir.path().join(".client-secret.json.tmp-0123456789abcdef"),
        "x",
    )
    .unwrap();
    fs::write(dir.path().join("operator-notes.txt"), "keep me").unwrap();
    let _state = StateDir::open(dir.path()).unwrap();
    assert_eq!(
        names(dir.path()),
        [
            KEY_FILE,
            LOCK_FILE,
            "operator-notes.txt",
            "state.db",
            "state.db-shm",
            "state.db-wal"
        ]
    );
}

#[test]
fn a_damaged_database_is_reported_never_reset() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    state.save_records(&mut sample_records(&state)).unwrap();
    drop(state);
    let path = dir.path().join("state.db");
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(dir.path().join(format!("state.db{suffix}")));
    }
    let mut bytes = fs::read(&path).unwrap();
    // The header's magic string, then the rest of the first page.
    bytes[..16].copy_from_slice(b"credentials=AKIA");
    fs::write(&path, &bytes).unwrap();
    let err = StateDir::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StateError::Corrupt { path: p, .. } if *p == path),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("restore it from a backup"), "{text}");
    assert!(!text.contains("AKIA"), "{text}");
    assert_eq!(fs::read(&path).unwrap(), bytes, "left for the operator");
}

#[test]
fn a_short_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(StateDir::open(dir.path()).unwrap());
    let key = dir.path().join(KEY_FILE);
    fs::write(&key, [7u8; 31]).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let err = StateDir::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StateError::Corrupt { path, .. } if *path == key),
        "{err:?}"
    );
    assert!(err.to_string().contains("31 bytes"), "{err}");
}

/// The JSON files of the previous version: two credentials (one rotated),
/// a rotated client secret, a pending intent (snapshot and appended
/// line), an undelivered webhook event and the run history.
fn write_previous_version(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    let files = [
        (
            "records.json",
            r#"{
  "version": 1,
  "credentials": {
    "u-1/os-1/42": {"user_email":"app@example.com","first_seen":"2026-01-02T03:04:05Z","rotated_at":"2026-02-02T03:04:05Z","rotation_id":"11111111-1111-1111-1111-111111111111","access_key":"AKIAEXAMPLE","secret_fingerprint":"hmac-sha256:03030303030303030303030303030303","verified":{"at":"2026-02-02T03:04:06Z","rotation_id":"11111111-1111-1111-1111-111111111111","accepted":true}},
    "u-2/os-1/43": {"user_email":"b@example.com","first_seen":"2026-01-02T03:04:05Z","rotated_at":null,"rotation_id":null,"access_key":"AKIAOTHER","secret_fingerprint":"hmac-sha256:04040404040404040404040404040404"}
  },
  "client_secret": {"first_seen":"2026-01-01T00:00:00Z","rotated_at":"2026-03-01T03:30:00Z","rotation_id":"22222222-2222-2222-2222-222222222222","fingerprint":"hmac-sha256:05050505050505050505050505050505"},
  "sinks": {"webhook:https://h.example.com/":{"delivered_version":"v1","delivered_at":"2026-03-01T03:30:01Z","last_error":null,"last_attempt":"2026-03-01T03:30:01Z"}}
}
"#,
        ),
        (
            "journal.json",
            r#"{
  "version": 1,
  "intents": []
}
{"begin":{"rotation_id":"33333333-3333-3333-3333-333333333333","started_at":"2026-03-02T00:00:00Z","kind":"object_storage","key":"u-2/os-1/43","user_email":"b@example.com","old_access_key":"AKIAOTHER","old_fingerprint":"hmac-sha256:04040404040404040404040404040404"}}
"#,
        ),
        (
            "outbox.json",
            r#"{"version": 1, "queues": {"webhook:https://h.example.com/": {"since": "2026-01-01T00:00:00Z", "announced": ["11111111-1111-1111-1111-111111111111"], "events": [{"id": "msg_1", "type": "client_secret.rotated", "timestamp": "2026-03-01T03:30:00Z", "data": {"client_id": "INT-1"}, "secret": {"kind": "client_secret"}, "enqueued_at": "2026-03-01T03:30:00Z", "attempts": 2, "last_attempt": null, "last_error": "503"}]}}}"#,
        ),
        (
            "runs.json",
            r#"{"version": 1, "last_run_at": "2026-03-01T03:30:02Z", "last_run_duration_ms": 900, "last_success_at": "2026-03-01T03:30:02Z", "last_delivery_success_at": null, "last_failures": {"rotation": 0, "file_sinks": 0, "webhooks": 1}}"#,
        ),
    ];
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
}

#[test]
fn the_previous_versions_files_are_imported_once_and_set_aside() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    write_previous_version(&dir);
    // Read before the import as the import reads them.
    let before = StateDir::open_read_only(&dir).unwrap();
    assert!(!dir.join("state.db").exists(), "a view writes nothing");
    let state = StateDir::open(&dir).unwrap();
    let records = state.load_records().unwrap();
    assert_eq!(records, before.records);
    assert_eq!(records.credentials.len(), 2);
    let key: CredentialKey = "u-1/os-1/42".parse().unwrap();
    let record = &records.credentials[&key];
    assert_eq!(
        record.rotated_at,
        Some(Utc.with_ymd_and_hms(2026, 2, 2, 3, 4, 5).unwrap())
    );
    assert!(record.verified.as_ref().unwrap().accepted);
    assert!(records.client_secret.as_ref().unwrap().rotated_at.is_some());
    assert_eq!(records.sinks.len(), 1);
    let journal = state.load_journal().unwrap();
    assert_eq!(journal.intents.len(), 1);
    assert_eq!(journal, before.journal);
    let outbox = state.load_outbox().unwrap();
    let queue = &outbox.queues["webhook:https://h.example.com/"];
    assert_eq!((queue.events.len(), queue.events[0].attempts), (1, 2));
    assert_eq!(queue.announced.len(), 1);
    assert_eq!(outbox, before.outbox);
    assert_eq!(state.load_runs().unwrap().last_failures.webhooks, 1);
    for name in ["records.json", "journal.json", "outbox.json", "runs.json"] {
        assert!(!dir.join(name).exists(), "{name}");
        assert!(dir.join(format!("{name}.imported")).exists(), "{name}");
    }
    drop(state);
    // Files left by a stop between the commit and the renames are set
    // aside, not imported twice.
    fs::copy(dir.join("outbox.json.imported"), dir.join("outbox.json")).unwrap();
    let state = StateDir::open(&dir).unwrap();
    assert!(!dir.join("outbox.json").exists());
    assert_eq!(state.load_outbox().unwrap(), outbox);
}

#[test]
fn a_failed_import_changes_nothing_and_names_the_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    write_previous_version(&dir);
    let outbox = dir.join("outbox.json");
    let text = fs::read_to_string(&outbox).unwrap();
    fs::write(&outbox, &text[..text.len() / 2]).unwrap();
    let before = names(&dir);
    let err = StateDir::open(&dir).unwrap_err().to_string();
    assert!(err.contains("outbox.json"), "{err}");
    // The database created for the import is gone again; the key and the
    // lock, which an earlier version made too, are all that was added.
    let mut after = names(&dir);
    after.retain(|n| n != KEY_FILE && n != LOCK_FILE);
    assert_eq!(after, before);
    // Mended, the next start imports.
    fs::write(&outbox, &text).unwrap();
    let state = StateDir::open(&dir).unwrap();
    assert_eq!(state.load_outbox().unwrap().queues.len(), 1);
}

#[test]
fn json_files_beside_a_database_that_did_not_import_them_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    state.save_records(&mut sample_records(&state)).unwrap();
    drop(state);
    fs::write(dir.path().join("runs.json"), "{}").unwrap();
    let err = StateDir::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("runs.json") && err.contains("did not import"),
        "{err}"
    );
    assert!(dir.path().join("runs.json").exists());
}

#[test]
fn client_secret_round_trips_privately() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    assert!(state.load_client_secret().unwrap().is_none());

    let stored = stored_secret();
    state.store_client_secret(&stored).unwrap();
    let path = dir.path().join(CLIENT_SECRET_FILE);
    assert_eq!(mode(&path), 0o600);

    let loaded = state.load_client_secret().unwrap().unwrap();
    assert_eq!(loaded.secret.expose_secret(), SECRET);
    assert_eq!(loaded.rotated_at, stored.rotated_at);
    assert_eq!(loaded.rotation_id, stored.rotation_id);
    assert_eq!(loaded.superseded, stored.superseded);

    let debug = format!("{loaded:?} {stored:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("[REDACTED]"), "{debug}");
}

#[test]
fn a_recovery_token_round_trips_and_the_next_store_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let pending = StoredClientSecret {
        recovery_token: Some(SecretString::from("TOKEN-before-the-put")),
        ..stored_secret()
    };
    state.store_client_secret(&pending).unwrap();
    let loaded = state.load_client_secret().unwrap().unwrap();
    assert_eq!(
        loaded.recovery_token.as_ref().map(|t| t.expose_secret()),
        Some("TOKEN-before-the-put")
    );
    assert!(!format!("{loaded:?}").contains("TOKEN-before"));
    state.store_client_secret(&stored_secret()).unwrap();
    let text = fs::read_to_string(dir.path().join(CLIENT_SECRET_FILE)).unwrap();
    assert!(!text.contains("recovery_token"), "{text}");
}

#[test]
fn a_client_secret_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    state.store_client_secret(&stored_secret()).unwrap();
    let path = dir.path().join(CLIENT_SECRET_FILE);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

    let err = state.load_client_secret().unwrap_err();
    assert!(
        matches!(&err, StateError::Permissions { mode: 0o644, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(!text.contains(SECRET), "{text}");

    // Storing again replaces it with a private file.
    state.store_client_secret(&stored_secret()).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_corrupt_client_secret_is_reported_without_content() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let path = dir.path().join(CLIENT_SECRET_FILE);
    std::fs::write(&path, format!("{{\"secret\": {SECRET}}}")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let err = state.load_client_secret().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("client-secret.json is corrupt"), "{text}");
    assert!(!text.contains(SECRET) && !text.contains("Zq8"), "{text}");
}

#[test]
fn a_world_readable_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(StateDir::open(dir.path()).unwrap());
    let key = dir.path().join(KEY_FILE);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o604)).unwrap();
    let err = StateDir::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StateError::Permissions { mode: 0o604, .. }),
        "{err:?}"
    );
}

#[test]
fn audit_appends_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let event = |event, subject: &str| AuditEvent {
        at: Utc::now(),
        event,
        rotation_id: Some(Uuid::new_v4()),
        trace_id: Some("trace-1".into()),
        subject: subject.into(),
        detail: serde_json::json!({ "note": "multi\nline" }),
    };
    state
        .audit(&event(AuditKind::Rotation, "u-1/os-1/42"))
        .unwrap();
    state
        .audit(&event(AuditKind::Delivery, "file:/etc/app.json"))
        .unwrap();

    let path = dir.path().join(AUDIT_FILE);
    assert_eq!(mode(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    let events: Vec<AuditEvent> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event, AuditKind::Rotation);
    assert_eq!(events[1].subject, "file:/etc/app.json");
    assert!(text.contains(r#""event":"delivery""#), "{text}");
}

#[test]
fn a_torn_audit_line_is_ended_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(StateDir::open(dir.path()).unwrap());
    let path = dir.path().join(AUDIT_FILE);
    fs::write(&path, "{\"at\":\"2026-01-01T00:00:00Z\",\"ev").unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    state
        .audit(&AuditEvent {
            at: Utc::now(),
            event: AuditKind::Recovery,
            rotation_id: None,
            trace_id: None,
            subject: "client_secret".into(),
            detail: serde_json::Value::Null,
        })
        .unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    serde_json::from_str::<AuditEvent>(lines[1]).unwrap();
}

#[test]
fn read_only_view_needs_no_lock_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("never-ran");
    let view = StateDir::open_read_only(&missing).unwrap();
    assert!(!view.exists);
    assert_eq!(view.records, AllRecords::default());
    assert!(
        !missing.exists(),
        "a read-only open must not create the directory"
    );

    let dir = root.path().join("state");
    let state = StateDir::open(&dir).unwrap();
    let mut records = sample_records(&state);
    state.save_records(&mut records).unwrap();
    let before = names(&dir);
    // Works while the daemon holds the lock.
    let view = StateDir::open_read_only(&dir).unwrap();
    assert!(view.exists);
    assert_eq!(view.records, all_of(&records));
    assert_eq!(view.journal, Journal::default());
    assert_eq!(names(&dir), before);
}
