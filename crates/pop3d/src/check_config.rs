// SPDX-License-Identifier: AGPL-3.0-only
//! `pop3d check-config`: validate a file (the library's every check, as
//! `serve` runs them), warn about what would surprise an operator, and
//! print the effective configuration (secrets hidden).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{load, refuse, runtime};

pub(crate) fn check_config(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let inspected = match runtime() {
        Ok(r) => r.block_on(pop3::setup::inspect(&config)),
        Err(code) => return code,
    };
    let found = match inspected {
        Ok(found) => found,
        Err(e) => return refuse(&path, &e),
    };
    for note in &found.notes {
        eprintln!("pop3d: {note}");
    }
    for warning in &found.warnings {
        eprintln!("pop3d: warning: {}: {warning}", path.display());
    }
    print!("{}", config.to_toml());
    ExitCode::SUCCESS
}
