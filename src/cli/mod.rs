//! Command line: argument parsing, dispatch and the exit-code contract.

mod check;
mod demo;
mod list;
mod report;
mod run;
mod status;

use crate::config::{self, ConfigError, Settings};
use crate::contabo::ContaboClient;
use crate::telemetry::{self, LogFormat};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The version of the JSON shapes of `list --json`, `status --json` and
/// the `--run-now` JSON report (README, "JSON output"); raised when a
/// field changes meaning or goes away (new fields do not raise it).
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the run finished but at least one credential, user or sink failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: invalid configuration or unreadable secret (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

const EXIT_CODES_HELP: &str = "\
Without a command, contabo-rotator runs as a daemon on the configured schedule;
with --run-now it makes one pass and exits.

Exit codes:
  0   success: every due secret rotated and every sink delivered (--run-now),
      a clean shutdown (daemon), or the command did what it was asked
  1   a failure:
        --run-now: a credential, user, the client secret or a sink failed
          (also a key the storage refused within verify_timeout, or a pass
          stopped by the circuit breaker or a second terminate signal);
        the state directory is locked by another instance, corrupt, or
          open to other users (not the daemon's, or writable by group or
          others; nothing is sent then);
        check --online: the login or a sink check failed;
        list: a user's credentials could not be listed;
        the daemon: could not bind its metrics address, or stopped at once
          on a second terminate signal
  2   usage error (unknown flag, --run-now with a command, --dry-run or
      --force without --run-now)
  78  invalid configuration, unreadable secret, or a configuration file
      everyone may write (EX_CONFIG); nothing was changed and no request
      was sent";

/// Keeps a Contabo account's API client secret and S3 object-storage credentials fresh.
#[derive(Debug, Parser)]
#[command(name = "contabo-rotator", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        short = 'c',
        long,
        global = true,
        env = "CONTABO_ROTATOR_CONFIG",
        default_value = config::DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log output (-v debug, -vv trace); overrides RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log output (-q warnings only, -qq errors only); overrides RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Run one pass now and exit, instead of running as a daemon.
    #[arg(long)]
    pub run_now: bool,

    /// With --run-now: print the plan (what would rotate and why); change nothing.
    #[arg(long, requires = "run_now")]
    pub dry_run: bool,

    /// With --run-now: rotate every selected secret, due or not.
    #[arg(long, requires = "run_now")]
    pub force: bool,

    /// With --run-now: write the run's metrics to PATH (atomically, in the
    /// Prometheus text format of node_exporter's textfile collector).
    #[arg(long, requires = "run_now", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and resolve its secrets (no network unless --online).
    Check {
        /// Also log in to Contabo, report the API user and client id, and check that webhook URLs answer.
        #[arg(long)]
        online: bool,
    },
    /// List selected users and their S3 credentials with age and due state (never a secret).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Local state: last rotations, pending work, sink deliveries, next run (never a secret).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start a built-in Contabo simulator and run against it (no account needed).
    Demo,
    /// Print a shell completion script on stdout (needs no configuration).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout (needs no configuration).
    Man,
}

/// A failure of a whole command, mapped to an exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Parses arguments, runs the command and returns its exit status.
pub fn main() -> ExitCode {
    // First of all: no core dump (it would hold every secret), and
    // `/proc/PID/{environ,mem,fd,...}` belong to root rather than to the
    // daemon's user (and so to its `on_change` children).
    let dumpable = nix::sys::prctl::set_dumpable(false);
    let cli = Cli::parse();
    if cli.run_now && cli.command.is_some() {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--run-now cannot be combined with a command",
            )
            .exit();
    }
    // Still one thread (no runtime, no logging yet): the `{ env }` secrets
    // leave the environment now (this may execute the process again).
    let taken = match cli.command {
        None | Some(Command::Check { .. } | Command::List { .. } | Command::Status { .. }) => {
            config::env_secrets::take(&cli.config)
        }
        Some(Command::Demo | Command::Completions { .. } | Command::Man) => Default::default(),
    };
    telemetry::init(cli.log_format, cli.verbose as i8 - cli.quiet as i8);
    if let Err(errno) = dumpable {
        tracing::warn!(error = %errno, "Could not make the process non-dumpable.");
    }
    if !taken.names.is_empty() {
        tracing::debug!(variables = ?taken.names, "Took the {{ env }} secrets out of the environment.");
    }
    if let Some(warning) = &taken.warning {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let json_logs = cli.log_format == LogFormat::Json;
    let result = runtime.block_on(run(cli));
    // Errors are logged once; in text mode as a plain `error:` line, in JSON
    // mode as a log record, so that every line printed stays JSON.
    ExitCode::from(match result {
        Ok(code) => code,
        Err(CliError::Config(err)) => {
            if json_logs {
                tracing::error!(error = %err, "Invalid configuration.");
            } else {
                eprintln!("error: {err}");
            }
            EXIT_CONFIG
        }
        Err(CliError::Other(err)) => {
            if json_logs {
                tracing::error!(error = format!("{err:#}"), "Failed.");
            } else {
                eprintln!("error: {err:#}");
            }
            EXIT_FAILED
        }
    })
}

/// Runs one parsed command line; the status is the command's own verdict.
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    // With JSON logs, every command prints JSON (demo excepted).
    let json_logs = cli.log_format == LogFormat::Json;
    match cli.command {
        Some(Command::Check { online }) => check::run(&cli.config, online, json_logs).await,
        Some(Command::List { json }) => {
            let settings = config::load(&cli.config)?;
            list::run(&settings, json || json_logs, &mut std::io::stdout()).await
        }
        Some(Command::Status { json }) => {
            let settings = config::load(&cli.config)?;
            status::run(&settings, json || json_logs, &mut std::io::stdout())
        }
        Some(Command::Demo) => demo::run(&mut std::io::stdout()).await,
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "contabo-rotator",
                &mut std::io::stdout(),
            );
            Ok(EXIT_OK)
        }
        Some(Command::Man) => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            Ok(EXIT_OK)
        }
        None if cli.run_now => {
            let options = crate::rotation::RunOptions {
                dry_run: cli.dry_run,
                force: cli.force,
                output: None,
            };
            run::run_now(&cli.config, options, json_logs, cli.metrics_file.as_deref()).await
        }
        None => run::daemon(&cli.config).await,
    }
}

/// The API client for a validated configuration. It logs in with the
/// daemon's stored client secret when the configuration still holds the one
/// a rotation replaced (read without the state lock).
pub fn api_client(settings: &Settings) -> anyhow::Result<ContaboClient> {
    let (client, _) = crate::rotation::login_client(settings, &settings.state.dir)
        .context("building the API client")?;
    Ok(client)
}
