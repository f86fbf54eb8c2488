// SPDX-License-Identifier: AGPL-3.0-only
//! The layers of `pop3::LAYERS` only point down: no source file imports
//! from a module above its own, so no circle between modules can come
//! back unnoticed.

use std::path::Path;

/// Every `crate::MODULE` a file names outside comments and its tests.
fn used_modules(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut used = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let name: String = rest[at + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + 7..];
            // `crate::name!`: a macro of lib.rs, not a module.
            if rest[name.len()..].starts_with('!') {
                continue;
            }
            used.push(name);
        }
    }
    used
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_only_point_down() {
    let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let rank = |m: &str| pop3::LAYERS.iter().position(|l| *l == m);
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_owned();
        if top == "lib" {
            continue;
        }
        let own = rank(&top).unwrap_or_else(|| panic!("{top} is not in pop3::LAYERS"));
        for used in used_modules(&std::fs::read_to_string(&file).unwrap()) {
            let theirs = rank(&used).unwrap_or_else(|| panic!("{used} is not in pop3::LAYERS"));
            if theirs < own {
                upward.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports that point up a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    let used = used_modules(
        "// crate::server in a comment\nuse crate::server::x;\nfn f() { crate::store::y(); crate::crash_point!(\"p\"); }\n#[cfg(test)]\nuse crate::op;",
    );
    assert_eq!(used, ["server", "store"]);
}
