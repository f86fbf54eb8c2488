// SPDX-License-Identifier: AGPL-3.0-only
//! The block list file (`[security] block_list_file`): one blocked address
//! group a line, `ADDRESS UNTIL-MS REASON...`, rewritten whole through an
//! exclusive temporary and a rename at every change. Read by the node at
//! start and at SIGHUP, and by `pop3d blocks` and `pop3d unblock`. A line
//! of an older pop3d without a reason reads as one without it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

/// One block: until when (ms since the epoch), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub until_ms: u64,
    pub reason: String,
}

/// The blocks a file holds, with the numbers of lines that were not
/// blocks. A missing file holds none.
pub fn read(path: &Path) -> std::io::Result<(HashMap<IpAddr, Block>, Vec<usize>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(parse(&text))
}

fn parse(text: &str) -> (HashMap<IpAddr, Block>, Vec<usize>) {
    let mut blocks = HashMap::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut parts = line.splitn(3, ' ');
        let parsed = (|| {
            let ip = parts.next()?.parse::<IpAddr>().ok()?;
            let until_ms = parts.next()?.parse::<u64>().ok()?;
            let reason = parts.next().unwrap_or("").to_owned();
            Some((ip, Block { until_ms, reason }))
        })();
        match parsed {
            Some((ip, block)) => {
                blocks.insert(ip, block);
            }
            None => bad.push(n + 1),
        }
    }
    (blocks, bad)
}

/// Write the blocks still in force at `now_ms`.
pub fn write(path: &Path, blocks: &HashMap<IpAddr, Block>, now_ms: u64) -> std::io::Result<()> {
    let mut lines: Vec<String> = blocks
        .iter()
        .filter(|(_, b)| b.until_ms > now_ms)
        .map(|(ip, b)| format!("{ip} {} {}\n", b.until_ms, one_line(&b.reason)))
        .collect();
    lines.sort();
    crate::safe_fs::replace_path(path, lines.concat().as_bytes())
}

/// A reason on one line.
fn one_line(reason: &str) -> String {
    reason.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_old_lines_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("blocks");
        let mut blocks = HashMap::new();
        blocks.insert(
            "192.0.2.7".parse().unwrap(),
            Block {
                until_ms: 2_000,
                reason: "too many failed logins".into(),
            },
        );
        blocks.insert(
            "2001:db8::".parse().unwrap(),
            Block {
                until_ms: 500,
                reason: "gone by now".into(),
            },
        );
        write(&file, &blocks, 1_000).unwrap();
        let (read_back, bad) = read(&file).unwrap();
        assert!(bad.is_empty());
        assert_eq!(read_back.len(), 1, "the expired one is not written");
        assert_eq!(
            read_back[&"192.0.2.7".parse().unwrap()].reason,
            "too many failed logins"
        );
        // An older pop3d's line; garbage.
        std::fs::write(&file, "192.0.2.9 5000\nnonsense\n").unwrap();
        let (read_back, bad) = read(&file).unwrap();
        assert_eq!(read_back[&"192.0.2.9".parse().unwrap()].reason, "");
        assert_eq!(bad, [2]);
        assert!(read(&dir.path().join("missing")).unwrap().0.is_empty());
    }
}
