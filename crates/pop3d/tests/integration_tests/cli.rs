// SPDX-License-Identifier: AGPL-3.0-only
//! The `pop3d` command line: check-config, hash-password, and a crash in
//! the middle of a session.

use crate::common::*;

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = pop3d()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A child that exits without reading (bad arguments) closes the pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pop3d.toml");
    let (code, out, err) = run(&["check-config", "--config", example], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[server]") && out.contains("session_timeout = \"10m\""),
        "{out}"
    );
    assert!(
        out.contains("[[listener]]") && out.contains("bind = \"127.0.0.1:1995\""),
        "{out}"
    );
}

#[test]
fn bad_configs_name_file_key_and_reason() {
    let s = Setup::new(&[]);
    let cfg = s.config.to_str().unwrap().to_owned();
    let original = read(&s.config);
    let cases = [
        (
            original.replace("[server]\n", "[server]\ncolour = \"blue\"\n"),
            "colour",
        ),
        (
            original.replace("unauth_timeout = \"30s\"", "unauth_timeout = \"soon\""),
            "server.unauth_timeout",
        ),
        (
            original.replace("tls = \"none\"", "tls = \"sometimes\""),
            "sometimes",
        ),
        (
            original.replace("passwd_file = \"passwd\"", "passwd_file = \"missing\""),
            "auth.passwd_file",
        ),
        (
            original.replace("cert = \"cert.pem\"", "cert = \"nope.pem\""),
            "tls.cert",
        ),
        (
            original.replace("[auth]", "[auth]\nmechanisms = [\"XYZ\"]"),
            "auth.mechanisms[0]",
        ),
        (
            format!(
                "{original}\n[auth.oauth]\nissuer = \"https://idp.test\"\naudience = \"pop3\"\njwks_file = \"nowhere.json\"\n"
            ),
            "auth.oauth.jwks_file",
        ),
        (
            original.replace("[auth]", "[auth]\nmechanisms = [\"ANONYMOUS\"]"),
            "anonymous_user",
        ),
        ("[server\n".to_owned(), ":1:"),
    ];
    for (text, needle) in cases {
        std::fs::write(&s.config, &text).unwrap();
        let (code, _, err) = run(&["check-config", "--config", &cfg], "");
        assert_eq!(code, 2, "{needle}: {err}");
        assert!(err.contains(&cfg), "names the file: {err}");
        assert!(err.contains(needle), "names {needle}: {err}");
        // serve refuses the same file the same way.
        let (code, _, err) = run(&["serve", "--config", &cfg], "");
        assert_eq!(code, 2, "{needle}: {err}");
        assert!(err.contains(needle), "serve names {needle}: {err}");
    }
    let (code, _, err) = run(&["check-config", "--config", "/does/not/exist.toml"], "");
    assert_eq!(code, 2);
    assert!(
        err.contains("/does/not/exist.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn the_redis_password_comes_from_a_file_and_is_never_printed() {
    let s = Setup::new(&[]);
    let cfg = s.config.to_str().unwrap().to_owned();
    let original = read(&s.config);
    let with = |security: &str| {
        std::fs::write(
            &s.config,
            original.replace("[security]\n", &format!("[security]\n{security}")),
        )
        .unwrap();
    };
    std::fs::write(s.path("redis.pw"), "very-secret-redis-pw\n").unwrap();
    with("shared_state = \"redis://127.0.0.1:6390\"\nshared_state_password_file = \"redis.pw\"\n");
    let (code, out, err) = run(&["check-config", "--config", &cfg], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shared_state_password_file"), "{out}");
    assert!(
        !out.contains("very-secret-redis-pw") && !err.contains("very-secret-redis-pw"),
        "{out}{err}"
    );
    // In the URL it is refused, naming the key, without repeating it.
    with("shared_state = \"redis://:url-secret-pw@127.0.0.1:6390\"\n");
    let (code, _, err) = run(&["check-config", "--config", &cfg], "");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("security.shared_state") && err.contains("password_file"),
        "{err}"
    );
    assert!(!err.contains("url-secret-pw"), "{err}");
}

#[test]
fn user_names_that_could_escape_are_refused_by_every_subcommand() {
    let s = Setup::new(&[]);
    let cfg = s.config.to_str().unwrap().to_owned();
    for name in ["../x", "a/b", "..", "a\u{7}b"] {
        let (code, _, err) = run(
            &["deliver", "--config", &cfg, "--user", name],
            "Subject: x\r\n\r\nx\r\n",
        );
        assert_eq!(code, 64, "deliver {name:?}: {err}");
        assert!(err.contains("user name"), "{err}");
        let (code, _, err) = run(&["restore", "--config", &cfg, "--user", name], "");
        assert_eq!(code, 64, "restore {name:?}: {err}");
    }
    std::fs::write(s.path("pw"), "x\n").unwrap();
    let (code, out) = import_pop3(
        &s,
        &[
            "--from",
            "pop3://127.0.0.1:1",
            "--user",
            "../x",
            "--password-file",
            s.path("pw").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("user name"), "{out}");
    assert!(!s.path("x").exists() && !s.path("mail/../x").exists());
}

#[test]
fn risky_settings_are_warned_about() {
    let s = Setup::new(&[]);
    let text = read(&s.config).replace("[auth]\n", "[auth]\nallow_plaintext = true\n");
    std::fs::write(&s.config, text).unwrap();
    let (code, _, err) = run(
        &["check-config", "--config", s.config.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("auth.allow_plaintext"),
        "{err}"
    );
}

#[test]
fn keys_without_effect_are_warned_about_and_caches_that_never_cache_refused() {
    let s = Setup::new(&[]);
    let cfg = s.config.to_str().unwrap().to_owned();
    let original = read(&s.config);
    std::fs::write(
        &s.config,
        format!(
            "{}\n[protocol]\nmax_arguments = 8\nenable_pipelining = false\nmax_pipelined_commands = 5\n\n[performance]\ncache_ttl = \"1m\"\n",
            original.replace("[auth]\n", "[auth]\nrealm = \"example.org\"\n")
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", "--config", &cfg], "");
    assert_eq!(code, 0, "{err}");
    for key in [
        "protocol.max_arguments has no effect",
        "protocol.max_pipelined_commands has no effect",
        "performance.cache_ttl has no effect",
        "auth.realm has no effect: DIGEST-MD5",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
    for (text, key) in [
        (
            "enable_response_caching = true\nmax_cached_responses = 0\n",
            "performance.max_cached_responses",
        ),
        (
            "enable_response_caching = true\ncache_ttl = \"0s\"\n",
            "performance.cache_ttl",
        ),
    ] {
        std::fs::write(&s.config, format!("{original}\n[performance]\n{text}")).unwrap();
        let (code, _, err) = run(&["check-config", "--config", &cfg], "");
        assert_eq!(code, 2, "{key}: {err}");
        assert!(err.contains(key) && err.contains("never"), "{err}");
    }
}

#[test]
fn bad_passwd_lines_are_reported_with_their_numbers() {
    let s = Setup::new(&[]);
    let passwd =
        read(&s.path("passwd")) + "carol:{ROT13}x::::\n\n# fine\ndave:{PLAIN}pw:notanumber\n";
    std::fs::write(s.path("passwd"), passwd).unwrap();
    let (code, _, err) = run(
        &["check-config", "--config", s.config.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 0, "bad lines are skipped, not fatal: {err}");
    assert!(err.contains("line 3:") && err.contains("ROT13"), "{err}");
    assert!(
        err.contains("line 6:") && err.contains("notanumber"),
        "{err}"
    );
    assert!(err.contains("2 users"), "{err}");
}

#[test]
fn hash_password_makes_fields_that_verify() {
    for (scheme, prefix) in [
        (None, "{ARGON2ID}$argon2id$"),
        (Some("SHA512-CRYPT"), "{SHA512-CRYPT}$6$"),
        (Some("ssha256"), "{SSHA256}"),
        (Some("BLF-CRYPT"), "{BLF-CRYPT}$2y$"),
        (Some("CRAM-MD5"), "{CRAM-MD5}"),
    ] {
        let mut args = vec!["hash-password"];
        if let Some(s) = scheme {
            args.extend(["--scheme", s]);
        }
        let (code, out, err) = run(&args, "pass word\n");
        assert_eq!(code, 0, "{err}");
        let field = out.trim_end();
        assert!(field.starts_with(prefix), "{field}");
        let secret = pop3::auth::StoredSecret::parse(field).unwrap();
        assert!(secret.verify(b"pass word"));
        assert!(!secret.verify(b"pass word\n"));
    }
    let (code, _, err) = run(&["hash-password", "--scheme", "ROT13"], "x\n");
    assert_eq!(code, 2);
    assert!(err.contains("ROT13") && err.contains("ARGON2ID"), "{err}");
    let (code, _, _) = run(&["hash-password"], "");
    assert_eq!(code, 2, "an empty password is refused");
}

#[test]
fn help_lists_every_subcommand() {
    let (code, out, _) = run(&["--help"], "");
    assert_eq!(code, 0);
    for sub in ["serve", "check-config", "hash-password"] {
        assert!(out.contains(sub), "{out}");
    }
}

#[test]
fn a_crash_mid_session_deletes_nothing_and_frees_the_lock() {
    let s = Setup::new(&[b"Subject: 1\n\none\n", b"Subject: 2\n\ntwo\n"]);
    let mut server = s.start();
    let mut c = Client::login(s.plain, "alice", "secret");
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted\r\n");
    assert_eq!(c.cmd("DELE 2"), "+OK message 2 deleted\r\n");
    server.crash();
    assert_eq!(s.maildir_count(), 2, "nothing deleted by a crash");
    drop(c);
    // A new server takes the dead one's lock over at once.
    let _server = s.start();
    let mut c = Client::login(s.plain, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 2 38\r\n");
    c.cmd("DELE 1");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(s.maildir_count(), 1);
    // SHA512-CRYPT user through the binary too.
    let mut c = Client::connect(s.plain);
    c.cmd("USER bob");
    assert!(
        c.cmd("PASS password")
            .starts_with("+OK bob's maildrop has 0 messages")
    );
}

/// Two `pop3d` processes on one mail root (an upgrade with overlap, two
/// instances): simultaneous logins to one maildrop, one through each, and
/// exactly one of them wins every round.
#[test]
fn two_processes_never_both_hold_a_maildrop() {
    let s = Setup::new(&[b"Subject: 1\n\none\n"]);
    // Loopback is trusted here so that 2,000 quick logins are not paced.
    let text = read(&s.config).replace(
        "[security]\n",
        "[security]\ntrusted_networks = [\"127.0.0.0/8\"]\n",
    );
    std::fs::write(&s.config, text).unwrap();
    let (twin, twin_port) = s.twin_config("twin.toml");
    let _a = s.start_with(&s.config, s.plain);
    let mut b = s.start_with(&twin, twin_port);
    one_winner_per_round([s.plain, twin_port], 1000);
    // kill -9 of the holder: the other process takes the stale lock over.
    let mut c = Client::login(twin_port, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 1 19\r\n");
    b.crash();
    drop(c);
    let mut c = Client::login(s.plain, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 1 19\r\n");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(s.maildir_count(), 1);
}
