//! Logging: `tracing` to stderr as text or JSON, the level from `RUST_LOG`
//! or `-v`/`-q`. Under journald (`JOURNAL_STREAM` set) text logs carry no
//! colours and no timestamp, since the journal adds its own.

use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `verbosity` is `-v` count minus `-q` count.
pub fn init(format: LogFormat, verbosity: i8) {
    let default_level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // -v/-q win over RUST_LOG only when given; otherwise RUST_LOG, then info.
    let filter = if verbosity != 0 {
        EnvFilter::new(format!("contabo_rotator={default_level},warn"))
    } else {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("contabo_rotator={default_level},warn")))
    };
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match (format, under_journald) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        (LogFormat::Text, true) => builder.with_ansi(false).without_time().try_init(),
        (LogFormat::Text, false) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    // A second init (tests calling run twice) keeps the first subscriber.
    let _ = result;
}
