// SPDX-License-Identifier: AGPL-3.0-only
//! What pop3d's batch tools share (`deliver`, `restore`, `import-pop3`,
//! `migrate-maildir`): sysexits(3) exit codes, the error line, the progress
//! bar on a terminal and the summary of a copy.
//!
//! Exit codes, documented once in docs/operations.md: 0 done; 64 a bad
//! argument; 67 an unknown user; 69 a server the tool needs did not
//! answer; 75 a temporary failure (run again: an MTA retries, an import
//! resumes where it stopped); 77 refused for good (too large, over
//! quota); 78 a bad configuration.

use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

pub const EX_USAGE: u8 = 64;
pub const EX_NOUSER: u8 = 67;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_NOPERM: u8 = 77;
pub const EX_CONFIG: u8 = 78;

/// Say why the tool stopped, on stderr, and exit with `code`.
pub fn fail(tool: &str, code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("pop3d: {tool}: {message}");
    ExitCode::from(code)
}

/// The administrative commands (`db`, `user`, `blocks`, `lease`...):
/// say why on stderr and exit 1.
pub fn fail_at_once(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("pop3d: {message}");
    ExitCode::FAILURE
}

/// A bar of `len` `units` on a terminal; nothing otherwise (a cron job's
/// mail or a log gets only the summary).
pub fn progress(len: u64, units: &str) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {units} {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// What a copy of mailboxes did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Copied {
    pub messages: usize,
    pub octets: u64,
    /// Messages whose UIDL the mailbox had already: not copied again.
    pub present: usize,
    /// Users whose copy stopped; a second run resumes them.
    pub failed: Vec<String>,
}

impl Copied {
    /// Print the summary line for `users` users and, when some failed,
    /// name them; the exit code.
    pub fn report(&self, dry_run: bool, users: usize, more: &[String]) -> ExitCode {
        let verb = if dry_run { "would copy" } else { "copied" };
        println!(
            "{verb} {} messages ({} octets) for {} users; {} messages already there",
            self.messages,
            self.octets,
            users - self.failed.len(),
            self.present
        );
        for line in more {
            println!("{line}");
        }
        if self.failed.is_empty() {
            return ExitCode::SUCCESS;
        }
        println!("failed: {} (run again to resume)", self.failed.join(", "));
        ExitCode::from(EX_TEMPFAIL)
    }
}
