// SPDX-License-Identifier: AGPL-3.0-only
//! Random byte streams against a live session (the fuzz body, run on the
//! stable toolchain by proptest): the server answers or closes, never
//! panics, never hangs, and never answers more than the input can explain.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn arb_input() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let token = prop_oneof![
        Just(b"USER alice\r\n".to_vec()),
        Just(b"PASS secret\r\n".to_vec()),
        Just(b"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 1 0\r\nDELE 1\r\nRSET\r\n".to_vec()),
        Just(b"AUTH PLAIN\r\n".to_vec()),
        Just(b"*\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"STLS\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..600),
    ];
    proptest::collection::vec(
        proptest::collection::vec(token, 1..6).prop_map(|v| v.concat()),
        1..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_streams_never_break_a_session(chunks in arb_input()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let srv = TestServer::start_with(|c| {
                c.server.unauth_timeout = Duration::from_secs(2);
                c.security.suspicious_threshold = 1_000_000;
                c.security.max_auth_attempts = 1000;
            })
            .await;
            srv.deliver("alice", 1, b"Subject: x\n\n.body\n");
            let (mut client, server_side) = tokio::io::duplex(64 * 1024);
            let manager = Arc::clone(&srv.manager);
            let peer = "127.0.0.1:40000".parse().unwrap();
            let task = tokio::spawn(async move { manager.serve(server_side, peer, pop3::config::TlsMode::None).await });
            let reader = tokio::spawn(async move {
                let mut out = Vec::new();
                let (mut r, mut w) = tokio::io::split(&mut client);
                let write = async {
                    for chunk in &chunks {
                        if w.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                    let _ = w.shutdown().await;
                    chunks.iter().map(|c| c.len()).sum::<usize>()
                };
                let (sent, read) = tokio::join!(write, r.read_to_end(&mut out));
                let _ = read;
                (sent, out)
            });
            let (sent, out) = tokio::time::timeout(Duration::from_secs(20), reader)
                .await
                .expect("the session ends")
                .unwrap();
            let end = tokio::time::timeout(Duration::from_secs(5), task).await.expect("serve returns");
            assert!(end.is_ok(), "the session task panicked");
            assert!(out.starts_with(b"+OK"), "greeting first");
            // Replies stay proportional to the input (one message body at most).
            assert!(out.len() <= 4096 + sent * 64, "{} octets out for {} in", out.len(), sent);
        });
    }
}
