//! JA4+ fingerprints of FoxIO: JA4T (the TCP client, from its SYN) and JA4H (the HTTP client,
//! from one request). Built only with the cargo feature `foxio`.
//!
//! Licence: unlike JA4 (BSD-3-Clause), JA4T and JA4H are under the FoxIO License 1.1 — use is
//! allowed for non-commercial purposes and internal business use, not for a product or service
//! sold or offered to others; there is no patent grant for independent implementations. Its
//! text is in NOTICE at the repository root; README.md ("Licences") says the terms.
//!
//! Reference: FoxIO-LLC/ja4 `technical_details/` (JA4H.md, JA4H.png, JA4T.png), its Python
//! (`python/ja4h.py`, golden output in `python/test/testdata/`) and Rust (`rust/ja4/src/`,
//! snapshots in `src/snapshots/`) implementations; where those two disagree, the comments of
//! each function say which one is followed and why.

pub mod ja4h;
pub mod ja4t;

pub use ja4h::{ja4h, HttpVersion, Ja4h};
pub use ja4t::{ja4t, ja4t_of_record};
