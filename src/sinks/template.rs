//! The `template` sink: the sink's selection of the snapshot rendered
//! through a Jinja template (minijinja), written by [`super::write`] like a
//! file sink.
//!
//! Templates are read and compiled while the configuration is loaded
//! ([`Template::compile`]): a missing file, a syntax error or an unknown
//! variable is a configuration error naming the template's file and line.
//!
//! # Context
//!
//! The same value as the `json` format, narrowed by the sink's `select`:
//!
//! * `client`: `{ client_id, client_secret }`, present only when
//!   `[client_secret] rotate` is on and the sink selects the
//!   `client_secret` kind (test it with `{% if client is defined %}`);
//! * `object_storage_credentials`: a list of `{ user_id, user_email,
//!   object_storage_id, object_storage_name, region, s3_url,
//!   credential_id, access_key, secret_key, rotated_at }`, ordered by user
//!   e-mail then credential id (`rotated_at` is none until the daemon has
//!   rotated the credential).
//!
//! Undefined values are errors (strict mode): a misspelt field fails the
//! render instead of writing an empty string. Nothing is escaped
//! automatically; quote values with the filters below. Blocks trim their
//! line (`trim_blocks` and `lstrip_blocks` are on), and the template's
//! final newline is kept.
//!
//! # Helpers
//!
//! * `credential(user=…, region=…, object_storage=…)`: the one credential
//!   of the selection matching every argument given (user e-mail and region
//!   name or code ignore case; `object_storage` is an id or display name).
//!   No match, or more than one, is a render error.
//! * `|env_quote`: a value quoted for an env file read by systemd, docker
//!   compose and sh alike (the `env` format's rule).
//! * `|shell_quote`: a value quoted for POSIX sh (`'…'`).
//! * `|ini_value`: the value unchanged, or a render error when an INI
//!   reader would not read it back the same (see [`super::formats`]).
//! * `|region_code`: `eu`, `us-central`, `sin` or `default` for a region.
//! * `|aws_profile`: the `aws-credentials` profile name of a credential.
//!
//! plus minijinja's built-ins (`tojson`, `selectattr`, `first`, `length`,
//! `default`, …).
//!
//! # Errors
//!
//! A render error fails this sink alone and leaves its file untouched. Its
//! message names the template file and line; any secret value in it is
//! replaced by `[REDACTED]`.
//!
//! # Bounds
//!
//! A render is bounded, so that a template that loops without end (two
//! nested `range(100000)`, which `check` accepts) fails its sink instead
//! of running until the process is killed:
//!
//! * **fuel**: at most [`FUEL_BASE`] (1 million) template instructions
//!   per render, plus [`FUEL_PER_CREDENTIAL`] (1,000) for each credential
//!   of the sink's selection (minijinja's fuel; the aws-credentials
//!   template of `config/templates/` takes about 46 per credential);
//! * **output**: at most [`MAX_OUTPUT`] (64 MiB) per render, counted as
//!   the bytes go to the file (and, before, to its fingerprint), so that no
//!   more than that is ever written;
//! * **terminate signal**: once SIGTERM or SIGINT arrives
//!   ([`terminate_signal`]), a render may go on for [`TERMINATE_GRACE`]
//!   (5 s, longer than any sane render takes), and a second signal stops it
//!   at once. The check is made at every write of output; a render that
//!   writes nothing is bounded by its fuel alone.
//!
//! Past a bound the render fails (`ran out of fuel after N instructions`,
//! `output larger than 64 MiB`, `stopped by a terminate signal`); the
//! sink fails, its file stays as it was, and the next run renders it again.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};
use secrecy::ExposeSecret;

use super::formats::{self, Unquotable};
use super::write::{self, RenderError, Target};
use super::Selection;
use super::{LazyRedactor, Redact, SinkError, Snapshot};
use crate::state::StateDir;

/// `type = "template"`: the selected secrets rendered through a template.
#[derive(Debug, Clone)]
pub struct TemplateSink {
    /// The template file, as configured (relative to the configuration's
    /// directory).
    pub template: PathBuf,
    /// The template, read and compiled while the configuration was loaded.
    /// Its `Debug` shows the file only.
    pub compiled: Template,
    pub path: PathBuf,
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub select: Selection,
    pub on_change: Option<Vec<String>>,
    /// How long rotations are gathered before a write (`wait`).
    pub wait: Duration,
}

/// The configuration's check of a template sink (its validation hook):
/// the rendered file must not replace its own template.
pub fn check(template: &Path, path: &Path) -> Result<(), super::ConfigProblem> {
    let normalized = |p: &Path| p.components().collect::<PathBuf>();
    if normalized(template) == normalized(path) {
        return Err(super::ConfigProblem {
            key: "path",
            problem: "would overwrite the sink's own template".into(),
        });
    }
    Ok(())
}

/// The variables of the context.
const CONTEXT: [&str; 2] = ["client", "object_storage_credentials"];

/// A compiled template, ready to render. Cheap to clone; its `Debug`
/// shows the file only.
#[derive(Clone)]
pub struct Template {
    env: Arc<Environment<'static>>,
    /// The template's file, also its name in the environment.
    name: String,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.name).finish()
    }
}

/// Why a template cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cannot read template {name}: {source}")]
    Read {
        name: String,
        source: std::io::Error,
    },
    /// A syntax error, with its line ([`describe_error`]).
    #[error("{0}")]
    Syntax(String),
    #[error(
        "{name}: unknown variable{} `{}`; a template sees `client`, \
         `object_storage_credentials` and the function `credential()`",
        if .unknown.len() == 1 { "" } else { "s" },
        .unknown.join("`, `")
    )]
    Unknown { name: String, unknown: Vec<String> },
}

impl Template {
    /// Reads and compiles the template at `path`. The error names the file
    /// (and the line, for a syntax error) and what is wrong.
    pub fn compile(path: &Path) -> Result<Template, CompileError> {
        let name = path.display().to_string();
        let source = crate::dirfd::read_trusted(path, crate::dirfd::READ_LIMIT)
            .and_then(|(bytes, _)| {
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| std::io::Error::other("it is not UTF-8 text"))
            })
            .map_err(|source| CompileError::Read {
                name: name.clone(),
                source,
            })?;
        let mut env = environment();
        env.add_template_owned(name.clone(), source)
            .map_err(|e| CompileError::Syntax(describe_error(&name, &e)))?;
        let template = env
            .get_template(&name)
            .map_err(|e| CompileError::Syntax(describe_error(&name, &e)))?;
        let globals: BTreeSet<&str> = env.globals().map(|(n, _)| n).collect();
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !CONTEXT.contains(&v.as_str()) && !globals.contains(v.as_str()))
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            return Err(CompileError::Unknown { name, unknown });
        }
        drop(template);
        Ok(Template {
            env: Arc::new(env),
            name,
        })
    }

    /// Renders the template for an already selected snapshot into `out`,
    /// as it is produced, within the bounds of the module documentation.
    /// Secret values in an error message are replaced using `redactor`.
    pub fn render_into(
        &self,
        context: &Context,
        out: &mut dyn std::io::Write,
        redactor: &dyn Redact,
    ) -> Result<(), RenderError> {
        let bounds = Bounds {
            fuel: FUEL_BASE,
            fuel_per_credential: FUEL_PER_CREDENTIAL,
            max_output: MAX_OUTPUT,
            terminate: &TERMINATE,
            grace: TERMINATE_GRACE,
        };
        self.render_bounded(context, out, redactor, &bounds)
    }

    /// [`Template::render_into`] within `bounds`.
    fn render_bounded(
        &self,
        context: &Context,
        out: &mut dyn std::io::Write,
        redactor: &dyn Redact,
        bounds: &Bounds<'_>,
    ) -> Result<(), RenderError> {
        let redacted = |e: &Error| redactor.redact(&describe_error(&self.name, e));
        // The fuel grows with the selection (the work of a template that
        // loops over it does); a copy of the environment carries it (a few
        // maps of shared entries, made once per render).
        let fuel = bounds.fuel.saturating_add(
            bounds
                .fuel_per_credential
                .saturating_mul(context.credentials as u64),
        );
        let mut env = Environment::clone(&self.env);
        env.set_fuel(Some(fuel));
        let template = env
            .get_template(&self.name)
            .map_err(|e| RenderError::Content(redacted(&e)))?;
        let mut out = BoundedWriter {
            inner: out,
            written: 0,
            bounds,
            hit: None,
        };
        let result = template.render_captured_to(context.value.clone(), &mut out);
        if let Some(hit) = out.hit {
            // The writer refused: a bound, not the disk nor the template.
            let why = match hit {
                Hit::Output => format!(
                    "output larger than {} MiB, the most a template may write",
                    bounds.max_output / MIB
                ),
                Hit::Terminate => "the render was stopped by a terminate signal".to_owned(),
            };
            return Err(RenderError::Content(format!("{}: {why}", self.name)));
        }
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
                Err(RenderError::Content(format!(
                    "{}{line}: the render ran out of fuel after {fuel} instructions \
                     (a loop that does not end, or far more work than a template needs)",
                    self.name,
                )))
            }
            // The writer failed (the disk, not the template).
            Err(e) if e.kind() == ErrorKind::WriteFailure => {
                Err(RenderError::Io(std::io::Error::other(redacted(&e))))
            }
            Err(e) => Err(RenderError::Content(redacted(&e))),
        }
    }

    /// [`Template::render_into`] a string.
    #[cfg(test)]
    pub fn render(
        &self,
        selected: &Snapshot,
        redactor: &dyn Redact,
    ) -> Result<secrecy::SecretString, String> {
        let mut out = Vec::new();
        self.render_into(&Context::new(selected), &mut out, redactor)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out)
            .map(secrecy::SecretString::from)
            .map_err(|_| format!("{}: the output is not UTF-8", self.name))
    }

    /// The template's file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.name)
    }
}

/// How many template instructions one render may execute (minijinja's
/// fuel): this many, plus [`FUEL_PER_CREDENTIAL`] for each credential of
/// the sink's selection. Two nested `range(100000)` loops would take tens
/// of billions.
pub const FUEL_BASE: u64 = 1_000_000;

/// The fuel a render gets for each credential it is given: the
/// aws-credentials template of `config/templates/` takes about 46 per
/// credential (1.39 million for 30,000).
pub const FUEL_PER_CREDENTIAL: u64 = 1_000;

const MIB: u64 = 1024 * 1024;

/// The most bytes one render may produce: 64 MiB, about ten times the
/// aws-credentials file of 30,000 credentials.
pub const MAX_OUTPUT: u64 = 64 * MIB;

/// How long a render may go on after the first terminate signal.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// Terminate signals, as renders see them.
struct Terminate {
    /// When the first one arrived.
    first: OnceLock<Instant>,
    /// A second one arrived: stop at once.
    again: AtomicBool,
}

impl Terminate {
    const fn new() -> Terminate {
        Terminate {
            first: OnceLock::new(),
            again: AtomicBool::new(false),
        }
    }

    fn signal(&self) {
        if self.first.set(Instant::now()).is_err() {
            self.again.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a render must stop now, `grace` after the first signal.
    fn stops(&self, grace: Duration) -> bool {
        self.first
            .get()
            .is_some_and(|at| self.again.load(Ordering::Relaxed) || at.elapsed() >= grace)
    }
}

/// The process's terminate signals.
static TERMINATE: Terminate = Terminate::new();

/// Tells renders that a terminate signal arrived (called by the signal
/// handling of `--run-now` and the daemon, for each signal): renders in
/// progress and to come stop [`TERMINATE_GRACE`] after the first one, at
/// once after a second.
pub fn terminate_signal() {
    TERMINATE.signal();
}

/// The bounds of one render.
struct Bounds<'a> {
    fuel: u64,
    fuel_per_credential: u64,
    max_output: u64,
    terminate: &'a Terminate,
    grace: Duration,
}

/// Which bound a [`BoundedWriter`] hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hit {
    Output,
    Terminate,
}

/// Passes a render's output on while it stays within its bounds; refuses
/// the write that would go past the size, and every write once a terminate
/// signal's grace is over.
struct BoundedWriter<'a, 'b> {
    inner: &'a mut dyn std::io::Write,
    written: u64,
    bounds: &'a Bounds<'b>,
    hit: Option<Hit>,
}

impl BoundedWriter<'_, '_> {
    fn refuse(&mut self, hit: Hit) -> std::io::Error {
        self.hit = Some(hit);
        std::io::Error::other(match hit {
            Hit::Output => "the render's output is too large",
            Hit::Terminate => "the render was stopped by a terminate signal",
        })
    }
}

impl std::io::Write for BoundedWriter<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.bounds.terminate.stops(self.bounds.grace) {
            return Err(self.refuse(Hit::Terminate));
        }
        if self.written + bytes.len() as u64 > self.bounds.max_output {
            return Err(self.refuse(Hit::Output));
        }
        let written = self.inner.write(bytes)?;
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Delivers the sink: renders the template with its selection of
/// `snapshot` and writes the result unless `delivered` (the version it
/// last delivered) says the file already holds it. Returns the new version
/// when it wrote. A render error is [`SinkError::Content`]; the file is
/// left untouched.
pub async fn deliver(
    sink: &TemplateSink,
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
    let redactor = LazyRedactor::new(snapshot);
    let context = Context::new(&snapshot.select(&sink.select));
    // Streamed into the file (and, before, into its fingerprint) like a
    // file sink's format: the context's values are made as the template
    // reads them, so no copy of the selection or rendered body is held.
    let render = |out: &mut dyn std::io::Write| sink.compiled.render_into(&context, out, &redactor);
    write::deliver(&target, &render, state, delivered, &redactor).await
}

/// What a template sees, made from a selection of the snapshot. Cheap to
/// clone and to build: it shares the selection's groups, and makes a
/// credential's value only when the template reads it. Built whole (as
/// `Value::from_serialize` of the json view), the context of 30,000
/// credentials took 18 MB, and a render about a third longer. Its `Debug`
/// shows no value (the client secret is one).
#[derive(Clone)]
pub struct Context {
    value: Value,
    /// How many credentials the selection holds (the render's fuel grows
    /// with it).
    credentials: usize,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Context")
    }
}

impl Context {
    pub fn new(selected: &Snapshot) -> Context {
        let mut context = std::collections::BTreeMap::new();
        if let Some((client_id, secret)) = &selected.client {
            let client: std::collections::BTreeMap<&str, Value> = [
                ("client_id", Value::from(client_id.as_str())),
                ("client_secret", Value::from(secret.expose_secret())),
            ]
            .into();
            context.insert("client", Value::from(client));
        }
        let mut starts = Vec::with_capacity(selected.groups.len());
        let mut count = 0;
        for group in &selected.groups {
            starts.push(count);
            count += group.len();
        }
        let credentials = Credentials {
            groups: selected.groups.clone(),
            starts,
            count,
        };
        context.insert(
            "object_storage_credentials",
            Value::from_object(credentials),
        );
        Context {
            value: Value::from(context),
            credentials: count,
        }
    }
}

/// `object_storage_credentials`: a list whose items are made when read.
struct Credentials {
    groups: Vec<super::snapshot::Group>,
    /// The index of each group's first credential.
    starts: Vec<usize>,
    count: usize,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "object_storage_credentials ({})", self.count)
    }
}

impl Credentials {
    /// The value of credential `index` of group `group`.
    fn item(&self, group: usize, index: usize) -> Value {
        Value::from_object(Credential {
            group: self.groups[group].clone(),
            index,
        })
    }
}

impl Object for Credentials {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let index = key.as_usize().filter(|i| *i < self.count)?;
        let group = self.starts.partition_point(|start| *start <= index) - 1;
        Some(self.item(group, index - self.starts[group]))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.count)
    }
}

/// One item of `object_storage_credentials`: the json format's fields.
struct Credential {
    group: super::snapshot::Group,
    index: usize,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.group[self.index];
        write!(f, "credential {}", c.credential_id)
    }
}

/// Its fields, in the order a map of them iterates (the json format's).
const CREDENTIAL_FIELDS: [&str; 10] = [
    "user_id",
    "user_email",
    "object_storage_id",
    "object_storage_name",
    "region",
    "s3_url",
    "credential_id",
    "access_key",
    "secret_key",
    "rotated_at",
];

impl Object for Credential {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let c = &self.group[self.index];
        Some(match key.as_str()? {
            "access_key" => Value::from(c.access_key()),
            "credential_id" => Value::from(c.credential_id),
            "object_storage_id" => Value::from(&*c.storage.id),
            "object_storage_name" => Value::from(&*c.storage.name),
            "region" => Value::from(&*c.storage.region),
            "rotated_at" => c.rotated_at.map_or(Value::from(()), |t| {
                Value::from(crate::json_time::Rfc3339(t).to_string())
            }),
            "s3_url" => Value::from(&*c.storage.s3_url),
            "secret_key" => Value::from(c.keys.expose_secret()),
            "user_email" => Value::from(&*c.user_email),
            "user_id" => Value::from(&*c.user_id),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&CREDENTIAL_FIELDS)
    }
}

/// `check --online` for this sink (see [`write::healthcheck`]).
pub fn healthcheck(sink: &TemplateSink) -> Result<(), SinkError> {
    write::healthcheck(&target(sink))
}

fn target(sink: &TemplateSink) -> Target<'_> {
    Target {
        name: format!("template sink {}", sink.path.display()),
        path: &sink.path,
        mode: sink.mode,
        owner: sink.owner.as_deref(),
        group: sink.group.as_deref(),
        on_change: sink.on_change.as_deref(),
        hide_env: &[],
        expect_change: false,
    }
}

/// `file:line: kind: detail`, without minijinja's debug dump (which would
/// print the context, secrets included).
fn describe_error(name: &str, err: &Error) -> String {
    let line = err.line().map(|l| format!(":{l}")).unwrap_or_default();
    match err.detail() {
        Some(detail) => format!("{name}{line}: {}: {detail}", err.kind()),
        None => format!("{name}{line}: {}", err.kind()),
    }
}

/// The environment every template is compiled in: strict, unescaped, with
/// the helpers of the module documentation.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_filter("env_quote", |v: Value| {
        formats::env_quote(&text_of("env_quote", &v)?).map_err(|e| quote_error("env_quote", e))
    });
    env.add_filter("shell_quote", |v: Value| {
        Ok::<_, Error>(formats::shell_quote(&text_of("shell_quote", &v)?))
    });
    env.add_filter("ini_value", |v: Value| {
        let text = text_of("ini_value", &v)?;
        formats::ini_value(&text)
            .map(str::to_owned)
            .map_err(|e| quote_error("ini_value", e))
    });
    env.add_filter("region_code", |v: Value| {
        Ok::<_, Error>(formats::region_code(&text_of("region_code", &v)?))
    });
    env.add_filter("aws_profile", |c: Value| {
        let field = |name: &str| -> Result<Value, Error> {
            let value = c.get_attr(name)?;
            if value.is_undefined() {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("aws_profile: the value has no `{name}`; pass a credential"),
                ));
            }
            Ok(value)
        };
        // A twin's credential carries its profile name.
        if let Some(profile) = c
            .get_attr("profile")
            .ok()
            .filter(|p| !p.is_undefined() && !p.is_none())
        {
            return text_of("aws_profile", &profile);
        }
        let id = field("credential_id")?;
        let id = i64::try_from(id).map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                "aws_profile: credential_id is not an integer",
            )
        })?;
        Ok(formats::profile_name(
            &text_of("aws_profile", &field("user_email")?)?,
            &text_of("aws_profile", &field("region")?)?,
            id,
        ))
    });
    env.add_function("credential", credential);
    env
}

/// A string value, or a number's digits; none and other kinds are errors.
fn text_of(filter: &str, value: &Value) -> Result<String, Error> {
    if let Some(s) = value.as_str() {
        return Ok(s.to_owned());
    }
    if value.is_number() {
        return Ok(value.to_string());
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{filter}: expected a string, got {}", value.kind()),
    ))
}

fn quote_error(filter: &str, Unquotable(why): Unquotable) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{filter}: the value cannot be written: {why}"),
    )
}

/// `credential(user=…, region=…, object_storage=…)`.
fn credential(state: &State, kwargs: Kwargs) -> Result<Value, Error> {
    let user: Option<String> = kwargs.get("user")?;
    let region: Option<String> = kwargs.get("region")?;
    let storage: Option<String> = kwargs.get("object_storage")?;
    kwargs.assert_all_used()?;
    let asked = [
        ("user", &user),
        ("region", &region),
        ("object_storage", &storage),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v:?}")))
    .collect::<Vec<_>>()
    .join(", ");
    let list = state
        .lookup("object_storage_credentials")
        .ok_or_else(|| Error::new(ErrorKind::UndefinedError, "object_storage_credentials"))?;
    let matches =
        |email: &str, [region_name, code]: [&str; 2], storage_id: &str, storage_name: &str| {
            user.as_ref().is_none_or(|u| u.eq_ignore_ascii_case(email))
                && region.as_ref().is_none_or(|r| {
                    r.eq_ignore_ascii_case(region_name) || r.eq_ignore_ascii_case(code)
                })
                && storage
                    .as_ref()
                    .is_none_or(|s| s == storage_id || s == storage_name)
        };
    let mut found = Vec::new();
    if let Some(credentials) = list.downcast_object::<Credentials>() {
        // The context's own list: its credentials are read in place, not
        // made into values one by one.
        for (group, values) in credentials.groups.iter().enumerate() {
            for (index, c) in values.iter().enumerate() {
                if matches(
                    &c.user_email,
                    [&c.storage.region, c.storage.region_code],
                    &c.storage.id,
                    &c.storage.name,
                ) {
                    found.push(credentials.item(group, index));
                }
            }
        }
    } else {
        // A list the template set itself.
        let text = |c: &Value, field: &str| -> String {
            c.get_attr(field)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        for c in list.try_iter()? {
            let fields = [
                "user_email",
                "region",
                "object_storage_id",
                "object_storage_name",
            ];
            let [email, region_name, storage_id, storage_name] = fields.map(|f| text(&c, f));
            let code = formats::region_code(&region_name);
            if matches(&email, [&region_name, code], &storage_id, &storage_name) {
                found.push(c);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("credential({asked}): no credential of the sink's selection matches"),
        )),
        n => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "credential({asked}): {n} credentials match; narrow it with user=, region= or \
                 object_storage="
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::snapshot::tests::credential as cred;
    use secrecy::{ExposeSecret, SecretString};

    fn compile(source: &str) -> Result<Template, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.j2");
        std::fs::write(&path, source).unwrap();
        Template::compile(&path)
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "t.j2"))
    }

    fn snapshot() -> Snapshot {
        Snapshot::new(
            Some(("INT-1".into(), SecretString::from("client-s3cret"))),
            &[
                cred("app@example.com", "European Union", 7, "s3/cr+t'7"),
                cred("app@example.com", "Asia (Singapore)", 8, "secret-8"),
                cred("ops@example.com", "European Union", 9, "secret-9"),
            ],
        )
    }

    fn render(source: &str) -> Result<String, String> {
        let s = snapshot();
        let t = compile(source)?;
        let name = t.path().display().to_string();
        t.render(&s, &s.redactor())
            .map(|t| t.expose_secret().to_owned())
            .map_err(|e| e.replace(&name, "t.j2"))
    }

    #[test]
    fn renders_the_snapshot_with_helpers() {
        let out = render(
            "{% set c = credential(user=\"APP@example.com\", region=\"eu\") %}\n\
             KEY={{ c.access_key | env_quote }}\n\
             SECRET={{ c.secret_key | env_quote }}\n\
             SH={{ c.secret_key | shell_quote }}\n\
             REGION={{ c.region | region_code }}\n\
             {% for c in object_storage_credentials %}\n\
             [{{ c | aws_profile }}] {{ c.secret_key | ini_value }}\n\
             {% endfor %}\n\
             {% if client is defined %}CLIENT={{ client.client_secret }}{% endif %}\n",
        )
        .unwrap();
        assert_eq!(
            out,
            "KEY='AK7'\nSECRET=\"s3/cr+t'7\"\nSH='s3/cr+t'\\''7'\nREGION=eu\n\
             [app_example_com-eu-7] s3/cr+t'7\n[app_example_com-sin-8] secret-8\n\
             [ops_example_com-eu-9] secret-9\nCLIENT=client-s3cret",
            "trim_blocks eats the newline after the last tag"
        );
    }

    #[test]
    fn compile_errors_name_file_and_line() {
        let err = compile("line one\n{{ object_storage_credentials | first }\n").unwrap_err();
        assert!(err.starts_with("t.j2:2: syntax error"), "{err}");
        let err = compile("{{ objct_storage_credentials }}{{ clent }}").unwrap_err();
        assert_eq!(
            err,
            "t.j2: unknown variables `clent`, `objct_storage_credentials`; a template sees \
             `client`, `object_storage_credentials` and the function `credential()`"
        );
        let err = Template::compile(Path::new("/nonexistent/t.j2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read template /nonexistent/t.j2: /nonexistent does not exist"),
            "{err}"
        );
        // Loops, sets, macros and built-in globals are not unknown.
        compile("{% for c in object_storage_credentials %}{{ loop.index }}{% endfor %}{% set x = range(2) %}{{ x }}{{ namespace() }}").unwrap();
    }

    #[test]
    fn render_errors_are_strict_and_redacted() {
        let err = render("{{ object_storage_credentials[0].secret }}").unwrap_err();
        assert!(err.starts_with("t.j2:1: undefined value"), "{err}");
        let err = render("{{ credential(user=\"app@example.com\") }}").unwrap_err();
        assert!(err.contains("2 credentials match"), "{err}");
        let err = render("{{ credential(user=\"nobody@example.com\") }}").unwrap_err();
        assert!(
            err.contains("no credential of the sink's selection matches"),
            "{err}"
        );
        let err = render("{{ credential(usr=\"x\") }}").unwrap_err();
        assert!(err.contains("usr"), "{err}");
        // A secret pushed into an error message is redacted.
        let err = render("{{ object_storage_credentials[2].secret_key | int }}").unwrap_err();
        assert!(!err.contains("secret-9"), "{err}");
        let err = render("{{ credential(user=client.client_secret) }}").unwrap_err();
        assert!(
            !err.contains("client-s3cret") && err.contains("[REDACTED]"),
            "{err}"
        );
        let err = render("{{ \"a\\nb\" | ini_value }}").unwrap_err();
        assert!(
            err.contains("ini_value: the value cannot be written"),
            "{err}"
        );
    }

    /// The lazy context renders what the json view, serialized whole into
    /// the context, rendered: every way a template reads a list and its
    /// items, errors included.
    #[test]
    fn the_lazy_context_renders_as_the_whole_json_view() {
        let mut credentials = [
            cred("app@example.com", "European Union", 7, "s3/cr+t'7"),
            cred("app@example.com", "Asia (Singapore)", 8, "secret-8"),
            cred("ops@example.com", "European Union", 9, "secret-9"),
            cred(
                "zed@example.com",
                "United States (Central)",
                10,
                "secret-10",
            ),
        ];
        credentials[1].rotated_at = chrono::DateTime::from_timestamp(1_796_400_000, 0);
        // Several groups, so that an index crosses from one to the next.
        let groups = credentials[..3]
            .chunks(2)
            .map(crate::sinks::snapshot::group)
            .chain([crate::sinks::snapshot::group(&credentials[3..])])
            .collect();
        let with_client = Snapshot {
            client: Some(("INT-1".into(), SecretString::from("client-s3cret"))),
            groups,
        };
        let without_client = Snapshot {
            client: None,
            groups: with_client.groups.clone(),
        };
        let empty = Snapshot::default();
        let sources = [
            "{{ object_storage_credentials | tojson }}",
            "{{ object_storage_credentials | tojson(indent=2) }}",
            "{{ object_storage_credentials }}",
            "{{ object_storage_credentials | length }} {{ object_storage_credentials | count }}",
            "{{ object_storage_credentials[0] }}|{{ object_storage_credentials[2].user_email }}",
            "{{ object_storage_credentials[-1].credential_id }}",
            "{{ object_storage_credentials[4] is defined }}",
            "{{ object_storage_credentials[4].user_id }}",
            "{{ (object_storage_credentials | first).secret_key }}{{ (object_storage_credentials | last).secret_key }}",
            "{% for c in object_storage_credentials | reverse %}{{ loop.index }}{{ c.credential_id }}{{ loop.previtem is defined }} {% endfor %}",
            "{% for c in object_storage_credentials %}{% for k, v in c | items %}{{ k }}={{ v }};{% endfor %}\n{% endfor %}",
            "{% for c in object_storage_credentials %}{{ c | list }}{{ c | length }}{% endfor %}",
            "{% for c in object_storage_credentials | sort(attribute='region') %}{{ c.region }},{% endfor %}",
            "{% for c in object_storage_credentials | selectattr('region', 'equalto', 'European Union') %}{{ c.credential_id }}{% endfor %}",
            "{% for c in object_storage_credentials | rejectattr('rotated_at', 'none') %}{{ c.rotated_at }}{% endfor %}",
            "{{ object_storage_credentials | map(attribute='access_key') | join(',') }}",
            "{{ object_storage_credentials | map(attribute='rotated_at') | list }}",
            "{% for c in object_storage_credentials %}{{ c.credential_id + 1 }}{{ c.missing is defined }}{% endfor %}",
            "{{ object_storage_credentials[1:3] | map(attribute='user_email') | list }}",
            "{{ object_storage_credentials[0] == object_storage_credentials[0] }}",
            "{{ credential(user='ZED@example.com').s3_url }} {{ credential(region='sin') | aws_profile }}",
            "{{ credential(region='EU', object_storage='storage-9').secret_key }}",
            "{{ credential(object_storage='Object Storage 8').user_id }}",
            // A list the template set itself.
            "{% set object_storage_credentials = object_storage_credentials | selectattr('region', 'equalto', 'European Union') | list %}{{ credential(user='OPS@example.com').credential_id }}",
            "{{ client | tojson }}{{ client.client_id }}",
            "{% if client is defined %}yes{% else %}no{% endif %}",
            "{{ object_storage_credentials[0].nope }}",
            "{{ object_storage_credentials.user_id }}",
        ];
        for snapshot in [&with_client, &without_client, &empty] {
            for source in sources {
                let t = compile(source).unwrap();
                let redactor = snapshot.redactor();
                let lazy = t.render(snapshot, &redactor);
                let whole = t
                    .env
                    .get_template(&t.name)
                    .and_then(|template| template.render(Value::from_serialize(snapshot.view())))
                    .map(SecretString::from)
                    .map_err(|e| redactor.redact(&describe_error(&t.name, &e)));
                match (lazy, whole) {
                    (Ok(lazy), Ok(whole)) => {
                        assert_eq!(lazy.expose_secret(), whole.expose_secret(), "{source}")
                    }
                    (Err(lazy), Err(whole)) => {
                        // The same kind of error at the same place.
                        let head = |e: &str| e.split(':').take(3).collect::<Vec<_>>().join(":");
                        assert_eq!(head(&lazy), head(&whole), "{source}: {lazy} / {whole}")
                    }
                    (lazy, whole) => panic!(
                        "{source}: {:?} / {:?}",
                        lazy.map(|s| s.expose_secret().to_owned()),
                        whole.map(|s| s.expose_secret().to_owned())
                    ),
                }
            }
        }
    }

    /// Bounds with room for everything but what a test narrows.
    fn roomy(terminate: &Terminate) -> Bounds<'_> {
        Bounds {
            fuel: 50_000_000,
            fuel_per_credential: 0,
            max_output: MAX_OUTPUT,
            terminate,
            grace: Duration::from_secs(3600),
        }
    }

    /// Renders `source` with the test snapshot within `bounds`: the output
    /// so far and the error, if any.
    fn render_within(source: &str, bounds: &Bounds<'_>) -> (Vec<u8>, Result<(), String>) {
        let s = snapshot();
        let t = compile(source).unwrap();
        let name = t.path().display().to_string();
        let mut out = Vec::new();
        let result = t
            .render_bounded(&Context::new(&s), &mut out, &s.redactor(), bounds)
            .map_err(|e| e.to_string().replace(&name, "t.j2"));
        (out, result)
    }

    #[test]
    fn a_render_that_runs_out_of_fuel_fails_naming_it() {
        let terminate = Terminate::new();
        let nested = "{% for i in range(100000) %}{% for j in range(100000) %}\
                      {% endfor %}{% endfor %}";
        let bounds = Bounds {
            fuel: 20_000,
            ..roomy(&terminate)
        };
        let (out, result) = render_within(nested, &bounds);
        assert!(out.is_empty());
        let err = result.unwrap_err();
        assert!(
            err.starts_with("t.j2:1: the render ran out of fuel after 20000 instructions"),
            "{err}"
        );
        // The fuel grows with the selection: a loop over the three
        // credentials that the base alone cannot pay for renders with
        // enough per credential.
        let aws = "{% for c in object_storage_credentials %}[{{ c | aws_profile }}]\n\
                   key = {{ c.access_key | ini_value }}\n{% endfor %}";
        let base_only = Bounds {
            fuel: 10,
            fuel_per_credential: 0,
            ..roomy(&terminate)
        };
        let (_, result) = render_within(aws, &base_only);
        assert!(result
            .unwrap_err()
            .contains("ran out of fuel after 10 instructions"));
        let per_credential = Bounds {
            fuel: 10,
            fuel_per_credential: 100,
            ..roomy(&terminate)
        };
        let (out, result) = render_within(aws, &per_credential);
        result.unwrap();
        assert!(String::from_utf8(out).unwrap().contains("key = AK9\n"));
    }

    #[test]
    fn output_past_the_cap_fails_and_goes_no_further() {
        let terminate = Terminate::new();
        let bounds = Bounds {
            max_output: MIB,
            ..roomy(&terminate)
        };
        // 16 bytes a turn: exactly 1 MiB passes, one turn more fails.
        let (out, result) = render_within(
            "{% for i in range(65536) %}0123456789abcdef{% endfor %}",
            &bounds,
        );
        result.unwrap();
        assert_eq!(out.len() as u64, MIB);
        let (out, result) = render_within(
            "{% for i in range(65537) %}0123456789abcdef{% endfor %}",
            &bounds,
        );
        assert_eq!(
            result.unwrap_err(),
            "t.j2: output larger than 1 MiB, the most a template may write"
        );
        assert_eq!(out.len() as u64, MIB, "the writer got no byte past the cap");
        // One value larger than the cap: nothing of it is written.
        let (out, result) = render_within("{{ \"x\" * 2000000 }}", &bounds);
        assert!(result.unwrap_err().contains("output larger than 1 MiB"));
        assert!(out.is_empty());
    }

    /// Signals `terminate` once `after` bytes have gone through.
    struct SignalAfter<'a> {
        terminate: &'a Terminate,
        after: usize,
        signals: usize,
        out: Vec<u8>,
    }

    impl std::io::Write for SignalAfter<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.out.extend_from_slice(bytes);
            if self.out.len() >= self.after && self.signals > 0 {
                self.signals -= 1;
                self.terminate.signal();
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_terminate_signal_stops_a_render_after_its_grace_or_at_a_second_signal() {
        let s = snapshot();
        let t = compile("{% for i in range(100000) %}{{ i }}\n{% endfor %}").unwrap();
        let render = |terminate: &Terminate, grace: Duration, signals: usize| {
            let mut out = SignalAfter {
                terminate,
                after: 1000,
                signals,
                out: Vec::new(),
            };
            let bounds = Bounds {
                grace,
                ..roomy(terminate)
            };
            let result = t.render_bounded(&Context::new(&s), &mut out, &s.redactor(), &bounds);
            (out.out.len(), result.map_err(|e| e.to_string()))
        };
        let full = (0..100000).map(|i| format!("{i}\n").len()).sum::<usize>();
        // Within the grace, one signal lets the render finish.
        let terminate = Terminate::new();
        let (written, result) = render(&terminate, Duration::from_secs(3600), 1);
        result.unwrap();
        assert_eq!(written, full);
        // Without a grace, the render stops at its next write...
        let terminate = Terminate::new();
        let (written, result) = render(&terminate, Duration::ZERO, 1);
        let err = result.unwrap_err();
        assert!(
            err.ends_with(": the render was stopped by a terminate signal"),
            "{err}"
        );
        assert!(written < 1100, "{written}");
        // ...and so does a render that starts later.
        let (written, result) = render(&terminate, Duration::ZERO, 0);
        assert!(result.is_err());
        assert_eq!(written, 0);
        // A second signal ends the grace.
        let terminate = Terminate::new();
        let (written, result) = render(&terminate, Duration::from_secs(3600), 2);
        assert!(result
            .unwrap_err()
            .contains("stopped by a terminate signal"));
        assert!(written < 1100, "{written}");
    }

    #[test]
    fn the_context_debug_shows_no_value() {
        let shown = format!("{:?}", Context::new(&snapshot()));
        assert_eq!(shown, "Context");
    }

    #[test]
    fn debug_shows_the_path_only() {
        let t = compile("{{ object_storage_credentials | tojson }}").unwrap();
        let shown = format!("{t:?}");
        assert!(
            shown.starts_with("Template(") && shown.contains("t.j2"),
            "{shown}"
        );
        assert!(!shown.contains("tojson"), "{shown}");
    }
}
