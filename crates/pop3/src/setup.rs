// SPDX-License-Identifier: AGPL-3.0-only
//! From a configuration file to a server's parts. The [`config`] module
//! knows the file's shape and its own rules; each layer knows the rules of
//! its own keys (SASL mechanisms, Maildir templates) and says so through a
//! `check_config` function it owns. This module, above them all, asks
//! each in turn, so that the arrows between layers run one way.
//!
//! [`config`]: crate::config

use std::path::Path;

use crate::config::{ConfigError, LoadedConfig, Pop3Config};

/// A layer's check of its own keys: the dotted key and the reason.
type LayerCheck = fn(&Pop3Config) -> Result<(), (String, String)>;

/// Each layer's own checks, in the order their errors are reported.
const LAYER_CHECKS: &[LayerCheck] = &[
    crate::auth::sasl::check_config,
    crate::store::maildir::check_config,
];

impl Pop3Config {
    /// Read, parse and validate a file completely. Relative paths inside
    /// it are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let loaded = Pop3Config::read_file(path)?;
        check_layers(&loaded.config, path)?;
        Ok(loaded)
    }

    /// Parse and validate TOML text; `file` is used in error messages only.
    pub fn from_toml(text: &str, file: &Path) -> Result<LoadedConfig, ConfigError> {
        let loaded = Pop3Config::parse(text, file)?;
        check_layers(&loaded.config, file)?;
        Ok(loaded)
    }

    /// Every check of a configuration built in code: the configuration's
    /// own rules, then each layer's. Returns the dotted key and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.validate_values()?;
        LAYER_CHECKS.iter().try_for_each(|check| check(self))
    }
}

fn check_layers(config: &Pop3Config, file: &Path) -> Result<(), ConfigError> {
    LAYER_CHECKS
        .iter()
        .try_for_each(|check| check(config))
        .map_err(|(key, reason)| ConfigError::at(file, key, reason))
}
