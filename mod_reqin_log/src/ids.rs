//! Correlation ids (seed 004's names): `conn_id` is the root of a workflow — one TCP connection,
//! shared by its keep-alive requests and HTTP/2 streams — and `request_id` one request on it.
//! Both are unique across children, threads, graceful restarts and hosts without any
//! coordination: each child draws a random prefix when it starts (64 bits from the kernel's
//! generator, like mod_unique_id's per-child root), then counts connections.
//!
//! `conn_id` = `<prefix>-<connection counter, hex>`, `request_id` = `<conn_id>-<sequence>`, so
//! a request id names its root. With mod_unique_id loaded, `request_id` is its `UNIQUE_ID`
//! instead (see hooks.rs). Pure: unit-tested without httpd.

use std::sync::atomic::{AtomicU64, Ordering};

/// One child's id generator.
#[derive(Debug)]
pub struct Ids {
    prefix: String,
    next_conn: AtomicU64,
}

impl Ids {
    /// A fresh random prefix. Without the kernel's generator (never on Linux ≥ 3.17), the
    /// clock and the process id stand in: unique per child start, just not unpredictable.
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        let random = match getrandom::fill(&mut seed) {
            Ok(()) => u64::from_le_bytes(seed),
            Err(_) => correlate_lib::unix_now_ns().rotate_left(20) ^ u64::from(std::process::id()),
        };
        Self::with_prefix(format!("{random:016x}"))
    }

    pub fn with_prefix(prefix: String) -> Self {
        Self {
            prefix,
            next_conn: AtomicU64::new(1),
        }
    }

    /// The id of a new connection.
    pub fn conn_id(&self) -> String {
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        // `<prefix>-<n, lower-case hex>`, written without `core::fmt` (once per connection).
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 16];
        let mut start = digits.len();
        let mut rest = n;
        loop {
            start -= 1;
            digits[start] = HEX[(rest & 0xf) as usize];
            rest >>= 4;
            if rest == 0 {
                break;
            }
        }
        let mut id = String::with_capacity(self.prefix.len() + 1 + digits.len() - start);
        id.push_str(&self.prefix);
        id.push('-');
        id.extend(digits[start..].iter().map(|&d| char::from(d)));
        id
    }
}

impl Default for Ids {
    fn default() -> Self {
        Self::new()
    }
}

/// The id of the `sequence`-th request (1-based) on connection `conn_id`.
pub fn request_id(conn_id: &str, sequence: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(sequence);
    // Exactly the length: the hooks keep it as a `Box<str>`, which would reallocate a spare byte.
    let mut s = String::with_capacity(conn_id.len() + 1 + digits.len());
    s.push_str(conn_id);
    s.push('-');
    s.push_str(digits);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_of_many_children_and_connections_never_repeat() {
        let mut seen = HashSet::new();
        for _child in 0..64 {
            let ids = Ids::new();
            for _conn in 0..100 {
                let conn = ids.conn_id();
                for seq in 1..=5 {
                    assert!(seen.insert(request_id(&conn, seq)));
                }
                assert!(seen.insert(conn));
            }
        }
    }

    #[test]
    fn a_request_id_names_its_connection() {
        let ids = Ids::with_prefix("00ff00ff00ff00ff".into());
        let conn = ids.conn_id();
        assert_eq!(conn, "00ff00ff00ff00ff-1");
        assert_eq!(ids.conn_id(), "00ff00ff00ff00ff-2");
        let big = Ids {
            prefix: "p".into(),
            next_conn: AtomicU64::new(0xabc_def0),
        };
        assert_eq!(big.conn_id(), format!("p-{:x}", 0xabc_def0u64));
        let max = Ids {
            prefix: "p".into(),
            next_conn: AtomicU64::new(u64::MAX),
        };
        assert_eq!(max.conn_id(), "p-ffffffffffffffff");
        assert_eq!(request_id(&conn, 3), "00ff00ff00ff00ff-1-3");
        assert!(request_id(&conn, 3).starts_with(&conn));
    }
}
