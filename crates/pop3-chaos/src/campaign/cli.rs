// SPDX-License-Identifier: AGPL-3.0-only
//! The command line of a campaign run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug)]
pub struct Args {
    pub seed: u64,
    pub duration: Duration,
    pub pop3d: PathBuf,
    pub history: PathBuf,
}

/// `--seed N --duration 120s [--pop3d PATH] [--history FILE]
/// [--broken-epoch]`, from `args` (the program's name left out).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut seed = 1;
    let mut duration = Duration::from_secs(120);
    let mut pop3d = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("pop3d");
    let mut history = PathBuf::from("chaos-history.jsonl");
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--duration" => duration = seconds(&value()?)?,
            "--pop3d" => pop3d = PathBuf::from(value()?),
            "--history" => history = PathBuf::from(value()?),
            "--broken-epoch" => pop3d = broken_build()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !pop3d.is_file() {
        return Err(format!(
            "no pop3d at {} (cargo build --release -p pop3d, or --pop3d PATH)",
            pop3d.display()
        ));
    }
    Ok(Args {
        seed,
        duration,
        pop3d,
        history,
    })
}

/// pop3d built with the `broken-epoch` feature (QUIT deletes without its
/// lease), in a target directory of its own: the campaign must catch it.
fn broken_build() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/broken-epoch");
    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "pop3d", "--features", "broken-epoch"])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !built.success() {
        return Err("building pop3d with broken-epoch failed".into());
    }
    Ok(target.join("debug/pop3d"))
}

/// `120s`, `2m`, or a number of seconds.
fn seconds(text: &str) -> Result<Duration, String> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(digits);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_arguments() {
        assert_eq!(seconds("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(seconds("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(seconds("90"), Ok(Duration::from_secs(90)));
        assert!(seconds("1h").is_err() && seconds("s").is_err());
        let args = |a: &[&str]| parse(a.iter().map(|s| (*s).to_owned()));
        assert!(args(&["--seed"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--bogus"]).unwrap_err().contains("unknown argument"));
        let err = args(&["--pop3d", "/nonexistent/pop3d"]).unwrap_err();
        assert!(err.contains("no pop3d at /nonexistent/pop3d"), "{err}");
        let me = std::env::current_exe().unwrap();
        let ok = args(&[
            "--seed",
            "7",
            "--duration",
            "3m",
            "--pop3d",
            me.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!((ok.seed, ok.duration), (7, Duration::from_secs(180)));
    }
}
