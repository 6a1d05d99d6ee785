//! httpd's `apr_sockaddr_t` carries an address as raw octets (`ipaddr_ptr`, `ipaddr_len`) and a
//! host-order port; this turns those into a [`SocketAddr`]. IPv4-mapped IPv6 (`::ffff:a.b.c.d`,
//! what a dual-stack listener reports for an IPv4 client) stays as it is here:
//! [`correlate_lib::ConnKey::new`] normalises it for the ring lookup.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `None` unless `octets` is exactly an IPv4 (4 bytes) or IPv6 (16 bytes) address.
pub fn socket_addr(octets: &[u8], port: u16) -> Option<SocketAddr> {
    let ip = match octets.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(octets).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use correlate_lib::ConnKey;

    #[test]
    fn ipv4_octets_and_port() {
        assert_eq!(
            socket_addr(&[127, 0, 0, 1], 443),
            Some("127.0.0.1:443".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_octets_and_port() {
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            socket_addr(&v6.octets(), 8443),
            Some("[2001:db8::1]:8443".parse().unwrap())
        );
    }

    #[test]
    fn mapped_ipv4_from_a_dual_stack_listener_joins_like_plain_ipv4() {
        let mapped: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
        let client = socket_addr(&mapped.octets(), 50000).unwrap();
        let server = socket_addr(&[127, 0, 0, 1], 443).unwrap();
        let key = ConnKey::new(client, server);
        assert_eq!(key.src, "127.0.0.1:50000".parse().unwrap());
    }

    #[test]
    fn other_lengths_are_not_addresses() {
        assert_eq!(socket_addr(&[], 1), None);
        assert_eq!(socket_addr(&[1, 2, 3], 1), None);
        assert_eq!(
            socket_addr(&[0; 110], 1),
            None,
            "a unix socket path is not an IP"
        );
    }
}
