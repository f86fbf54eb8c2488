// SPDX-License-Identifier: AGPL-3.0-only
//! The ceiling reference: a responder that does no POP3 work. Every reply
//! is canned and every message is pre-encoded in memory, so what it reaches
//! is what loopback, the kernel and the load generator allow.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub async fn serve(listen: SocketAddr, messages: usize, size: usize) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    eprintln!("ceiling: {messages} messages of {size} octets on {listen}");
    let mut body = Vec::with_capacity(size + 8);
    let line = b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n";
    while body.len() + line.len() <= size {
        body.extend_from_slice(line);
    }
    while body.len() < size {
        body.push(b'x');
    }
    if !body.ends_with(b"\r\n") && size >= 2 {
        let n = body.len();
        body[n - 2..].copy_from_slice(b"\r\n");
    }
    let mut retr = format!("+OK {size} octets\r\n").into_bytes();
    retr.extend_from_slice(&body);
    retr.extend_from_slice(b".\r\n");
    let stat = format!("+OK {messages} {}\r\n", messages * size).into_bytes();
    let retr: Arc<[u8]> = Arc::from(retr);
    let stat: Arc<[u8]> = Arc::from(stat);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (retr, stat) = (retr.clone(), stat.clone());
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            if w.write_all(b"+OK ceiling ready\r\n").await.is_err() {
                return;
            }
            let mut line = Vec::with_capacity(64);
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let reply: &[u8] = match line.get(..4) {
                    Some(b"RETR") => &retr,
                    Some(b"STAT") => &stat,
                    Some(b"QUIT") => {
                        let _ = w.write_all(b"+OK bye\r\n").await;
                        return;
                    }
                    _ => b"+OK\r\n",
                };
                if w.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}
