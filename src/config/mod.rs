//! Configuration: strict TOML parsing, validation into typed settings, secret resolution.
