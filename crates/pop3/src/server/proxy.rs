// SPDX-License-Identifier: AGPL-3.0-only
//! The HAProxy PROXY protocol, v1 (text) and v2 (binary), read before
//! anything else on listeners that ask for it, so that limits and logs see
//! the client's address rather than the load balancer's. The header is read
//! exactly, byte for byte where needed, so nothing after it is consumed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// A v1 header is at most 107 octets, CRLF included.
const V1_MAX: usize = 107;
/// Longest v2 address block plus TLVs accepted.
const V2_MAX_PAYLOAD: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("connection from an address not in proxy_trusted_networks")]
    Untrusted,
    #[error("no PROXY header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("PROXY header not received in time")]
    Timeout,
    #[error("connection closed inside the PROXY header")]
    Closed,
}

/// Read the header; returns the client's address (or `peer` itself for a
/// v2 LOCAL command or a v1 UNKNOWN, which health checks send).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, ProxyError> {
    tokio::time::timeout(timeout, read(stream, peer))
        .await
        .map_err(|_| ProxyError::Timeout)?
}

async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), ProxyError> {
    stream
        .read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| ProxyError::Closed)
}

async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyError> {
    let mut head = [0u8; 12];
    read_exact(stream, &mut head[..5]).await?;
    if &head[..5] == b"PROXY" {
        let mut line = head[..5].to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(ProxyError::Malformed("v1 header too long".into()));
            }
            let mut b = [0u8; 1];
            read_exact(stream, &mut b).await?;
            line.push(b[0]);
        }
        return parse_v1(&line, peer);
    }
    if head[..5] != V2_SIGNATURE[..5] {
        return Err(ProxyError::Missing);
    }
    read_exact(stream, &mut head[5..]).await?;
    if head != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    let mut rest = [0u8; 4];
    read_exact(stream, &mut rest).await?;
    let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::Malformed("v2 payload too long".into()));
    }
    let mut whole = Vec::with_capacity(16 + len);
    whole.extend_from_slice(&head);
    whole.extend_from_slice(&rest);
    whole.resize(16 + len, 0);
    read_exact(stream, &mut whole[16..]).await?;
    parse_v2(&whole, peer)
}

fn parse_v1(line: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    use ppp::v1::{Addresses, Header};
    let header = Header::try_from(line).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    Ok(match header.addresses {
        Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::Unknown => peer,
    })
}

fn parse_v2(bytes: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(bytes).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(peer);
    }
    match header.addresses {
        Addresses::IPv4(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::IPv6(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unspecified | Addresses::Unix(_) => Ok(peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "127.0.0.1:9999";

    async fn run(bytes: &[u8]) -> (Result<SocketAddr, ProxyError>, Vec<u8>) {
        let mut input: &[u8] = bytes;
        let r = read_header(&mut input, PEER.parse().unwrap(), Duration::from_secs(1)).await;
        (r, input.to_vec())
    }

    #[tokio::test]
    async fn v1_and_v2_give_the_client_address_and_leave_the_rest() {
        let (r, rest) = run(b"PROXY TCP4 192.0.2.10 192.0.2.1 40000 110\r\nUSER x\r\n").await;
        assert_eq!(r, Ok("192.0.2.10:40000".parse().unwrap()));
        assert_eq!(rest, b"USER x\r\n");
        let (r, _) = run(b"PROXY TCP6 2001:db8::5 2001:db8::1 40000 995\r\n").await;
        assert_eq!(r, Ok("[2001:db8::5]:40000".parse().unwrap()));
        let (r, _) = run(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(r, Ok(PEER.parse().unwrap()));

        let v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.7:5555".parse::<SocketAddr>().unwrap(),
                "192.0.2.1:995".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let mut bytes = v2.clone();
        bytes.extend_from_slice(b"\x16\x03\x01");
        let (r, rest) = run(&bytes).await;
        assert_eq!(r, Ok("198.51.100.7:5555".parse().unwrap()));
        assert_eq!(
            rest, b"\x16\x03\x01",
            "TLS bytes after the header are untouched"
        );
    }

    #[tokio::test]
    async fn missing_or_malformed_headers_are_errors() {
        assert_eq!(run(b"USER alice\r\n").await.0, Err(ProxyError::Missing));
        assert!(matches!(
            run(b"PROXY TCP4 nonsense\r\n").await.0,
            Err(ProxyError::Malformed(_))
        ));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(run(&long).await.0, Err(ProxyError::Malformed(_))));
        assert_eq!(run(b"PROX").await.0, Err(ProxyError::Closed));
        let mut bad_v2 = V2_SIGNATURE.to_vec();
        bad_v2.extend_from_slice(&[0x21, 0x11, 0x00, 0x02, 1, 2]);
        assert!(matches!(
            run(&bad_v2).await.0,
            Err(ProxyError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = rt.block_on(run(&bytes));
        }
    }
}
