// SPDX-License-Identifier: AGPL-3.0-only
//! The PROXY protocol reader (v1 text, v2 binary) on arbitrary bytes: an
//! address comes only from a header of the right signature, and the reader
//! takes the header exactly, never a byte of what follows it (the client's
//! first command, or its TLS hello).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pop3::server::proxy::read_header;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let mut rest = data;
    let read = runtime().block_on(read_header(&mut rest, peer, Duration::from_secs(5)));
    let taken = &data[..data.len() - rest.len()];
    if read.is_ok() {
        if taken.starts_with(b"PROXY") {
            assert!(taken.ends_with(b"\r\n"), "v1 ends at its CRLF");
            assert!(taken.len() <= 107, "v1 is at most 107 octets");
        } else {
            assert!(
                taken.starts_with(V2_SIGNATURE),
                "an address without a signature"
            );
            let len = u16::from_be_bytes([taken[14], taken[15]]);
            assert_eq!(taken.len(), 16 + usize::from(len), "v2 is its length");
        }
    }
});
