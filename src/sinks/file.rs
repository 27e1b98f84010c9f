//! The `file` sink: the sink's selection of the snapshot in one fixed
//! format (`json`, `env`, `aws-credentials` or `aws-config`; see
//! [`super::formats`]),
//! written by [`super::write`]: atomically, with its final mode, owner and
//! group from creation, only when it changed, then `on_change`.

use secrecy::ExposeSecret;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use super::write::{self, RenderError, Target};
use super::Selection;
use super::{formats, SinkError, Snapshot};
use crate::state::StateDir;

/// `type = "file"`: the selected secrets written in a fixed format.
#[derive(Debug, Clone)]
pub struct FileSink {
    pub path: PathBuf,
    pub format: FileFormat,
    /// Permission bits (at most 0o770: never any for others).
    pub mode: u32,
    /// User name or numeric id; `None` leaves the owner as created.
    pub owner: Option<String>,
    /// Group name or numeric id; `None` leaves the group as created.
    pub group: Option<String>,
    pub select: Selection,
    /// argv run after a changed write; never empty, `[0]` never empty.
    pub on_change: Option<Vec<String>>,
    /// How long rotations are gathered before a write (`wait`).
    pub wait: Duration,
}

/// The format of a `file` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// The snapshot as JSON.
    Json,
    /// `AWS_*` variables for exactly one credential.
    Env,
    /// An INI profile per credential, as in `~/.aws/credentials`.
    AwsCredentials,
    /// The same profiles as `~/.aws/config` sections (`[profile NAME]`).
    AwsConfig,
}

impl FileFormat {
    /// The name users write in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Json => "json",
            FileFormat::Env => "env",
            FileFormat::AwsCredentials => "aws-credentials",
            FileFormat::AwsConfig => "aws-config",
        }
    }
}

/// Delivers the sink: renders its format from its selection of `snapshot`
/// and writes it unless `delivered` (the version it last delivered) says
/// the file already holds it. Returns the new version when it wrote.
/// `on_change` runs without the environment variables in `hide_env`.
/// `expect_change` (the sink's values changed) renders the content once,
/// into the file and its fingerprint together ([`Target::expect_change`]).
///
/// A format that cannot hold the selection (`env` with other than one
/// credential, a value INI cannot carry) fails with
/// [`SinkError::Content`] and leaves the file untouched.
pub async fn deliver(
    sink: &FileSink,
    snapshot: &Snapshot,
    state: &StateDir,
    delivered: Option<&str>,
    hide_env: &[String],
    expect_change: bool,
) -> Result<Option<String>, SinkError> {
    let target = Target {
        hide_env,
        expect_change,
        ..target(sink)
    };
    let selected = snapshot.select(&sink.select);
    let render = |out: &mut dyn std::io::Write| render_into(sink.format, &selected, out);
    write::deliver(
        &target,
        &render,
        state,
        delivered,
        &super::LazyRedactor::new(snapshot),
    )
    .await
}

/// `check --online` for this sink (see [`write::healthcheck`]).
pub fn healthcheck(sink: &FileSink) -> Result<(), SinkError> {
    write::healthcheck(&target(sink))
}

/// The content of `format` for an already selected snapshot, written
/// into `out` as it is produced.
pub fn render_into(
    format: FileFormat,
    selected: &Snapshot,
    out: &mut dyn std::io::Write,
) -> Result<(), RenderError> {
    match format {
        FileFormat::Json => Ok(selected.write_json(out)?),
        FileFormat::Env => {
            // One credential: small, and built whole to check it first.
            let text = formats::env(selected)?;
            Ok(out.write_all(text.expose_secret().as_bytes())?)
        }
        FileFormat::AwsCredentials => formats::write_aws_credentials(selected, out),
        FileFormat::AwsConfig => formats::write_aws_config(selected, out),
    }
}

/// Whether `format` can hold `selected` (rendered into nothing); the error
/// says why not.
pub fn check_renders(format: FileFormat, selected: &Snapshot) -> Result<(), RenderError> {
    render_into(format, selected, &mut std::io::sink())
}

fn target(sink: &FileSink) -> Target<'_> {
    Target {
        name: format!("file sink {}", sink.path.display()),
        path: &sink.path,
        mode: sink.mode,
        owner: sink.owner.as_deref(),
        group: sink.group.as_deref(),
        on_change: sink.on_change.as_deref(),
        hide_env: &[],
        expect_change: false,
    }
}
