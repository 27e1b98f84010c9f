//! Configuration: strict TOML parsing, validation into typed settings,
//! secret resolution.

mod settings;

pub use settings::{
    ApiSettings, ClientSecretSettings, EmailGlobs, FileFormat, FileSink, Kind, MetricsSettings,
    ObjectStorageSettings, OnFirstSight, ScheduleSettings, Selection, Settings, SinkSettings,
    StateSettings, TemplateSink, WebhookSink,
};
