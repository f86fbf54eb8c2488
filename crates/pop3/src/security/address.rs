// SPDX-License-Identifier: AGPL-3.0-only
//! Client addresses as abuse limits see them. An IPv4 client on a
//! dual-stack (`[::]`) listener arrives as `::ffff:a.b.c.d` and is made
//! plain IPv4 again ([`canonical`]), so that trusted networks, PROXY
//! sources and the loopback rule match it. An IPv6 client is one of the
//! many addresses of its network: limits count the network
//! ([`group`], `/64` by default), or one customer rotating through its
//! addresses would pass every per-address limit.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The address with IPv4-mapped IPv6 turned back into IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The socket address with its IP made [`canonical`].
pub fn canonical_socket(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(addr.ip()), addr.port())
}

/// The key under which an address is counted: IPv4 alone, IPv6 by its
/// first `v6_prefix` bits (the rest zero).
pub fn group(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_v4_is_v4() {
        assert_eq!(canonical(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert!(canonical(ip("::ffff:127.0.0.1")).is_loopback());
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(group(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[test]
    fn v6_grouped_by_prefix() {
        assert_eq!(group(ip("2001:db8:1:2:aaaa::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(
            group(ip("2001:db8:1:2:aaaa::1"), 64),
            group(ip("2001:db8:1:2:ffff:1:2:3"), 64)
        );
        assert_ne!(
            group(ip("2001:db8:1:2::1"), 64),
            group(ip("2001:db8:1:3::1"), 64)
        );
        assert_eq!(group(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(group(ip("2001:db8:ffff::1"), 32), ip("2001:db8::"));
        assert_eq!(group(ip("::1"), 64), ip("::"));
    }
}
