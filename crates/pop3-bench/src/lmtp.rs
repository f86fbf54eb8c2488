// SPDX-License-Identifier: AGPL-3.0-only
//! One LMTP delivery (RFC 2033) as an MTA makes it: connect, LHLO, one
//! transaction pipelined, QUIT.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The message body: header and lines up to `size` octets.
pub fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: bench@example.org\r\nSubject: lmtp bench\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

async fn reply(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
        all.push_str(&l);
        if l.len() < 4 || l.as_bytes()[3] != b'-' {
            return Ok(all);
        }
    }
}

/// Deliver `body` to `user`; the octets sent.
pub async fn deliver(addr: SocketAddr, user: &str, body: &[u8]) -> Result<u64, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut r = BufReader::new(stream);
    let greeting = reply(&mut r).await?;
    if !greeting.starts_with("220") {
        return Err(format!("greeting: {greeting}"));
    }
    r.get_mut()
        .write_all(b"LHLO bench.example\r\n")
        .await
        .map_err(|e| e.to_string())?;
    reply(&mut r).await?;
    let mut out =
        format!("MAIL FROM:<bench@example.org>\r\nRCPT TO:<{user}>\r\nDATA\r\n").into_bytes();
    r.get_mut()
        .write_all(&out)
        .await
        .map_err(|e| e.to_string())?;
    for step in ["MAIL", "RCPT"] {
        let answer = reply(&mut r).await?;
        if !answer.starts_with("250") {
            return Err(format!("{step}: {answer}"));
        }
    }
    let data = reply(&mut r).await?;
    if !data.starts_with("354") {
        return Err(format!("DATA: {data}"));
    }
    out.clear();
    out.extend_from_slice(body);
    out.extend_from_slice(b".\r\nQUIT\r\n");
    r.get_mut()
        .write_all(&out)
        .await
        .map_err(|e| e.to_string())?;
    let stored = reply(&mut r).await?;
    if !stored.starts_with("250") {
        return Err(format!("after DATA: {stored}"));
    }
    reply(&mut r).await?;
    Ok(body.len() as u64)
}
