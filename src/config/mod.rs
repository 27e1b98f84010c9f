//! Configuration: strict TOML parsing, validation into typed settings,
//! secret resolution.

mod checks;
mod error;
mod locate;
mod raw;
mod secret;
mod settings;
mod validate;

pub use error::ConfigError;
pub use locate::Location;
pub use validate::default_state_dir;

pub use settings::{
    ApiSettings, ClientSecretSettings, EmailGlobs, FileFormat, FileSink, Kind, MetricsSettings,
    ObjectStorageSettings, OnFirstSight, ScheduleSettings, Selection, Settings, SinkSettings,
    StateSettings, TemplateSink, WebhookSink,
};
