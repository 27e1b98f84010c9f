//! Configuration: strict TOML parsing, validation into typed settings,
//! secret resolution.

mod error;
mod locate;
mod raw;
mod secret;
mod settings;

pub use error::ConfigError;
pub use locate::Location;

pub use settings::{
    ApiSettings, ClientSecretSettings, EmailGlobs, FileFormat, FileSink, Kind, MetricsSettings,
    ObjectStorageSettings, OnFirstSight, ScheduleSettings, Selection, Settings, SinkSettings,
    StateSettings, TemplateSink, WebhookSink,
};
