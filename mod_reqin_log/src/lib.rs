//! `mod_reqin_log`: an Apache httpd 2.4 module that writes one flat JSON line per request,
//! joined with the TLS ClientHello fingerprint (JA4/JA3) and SYN traits the `ja4sensor` sidecar
//! publishes in a shared-memory ring.
//!
//! Read in this order: [`config`] (directives) → `module` (what httpd loads: the module
//! struct, the directive table, the hook registration) → `hooks` (what runs at each phase) →
//! [`record`] (the JSON line) → [`sink`] (where it is written), with `flusher` finishing the
//! lines whose handshake arrives late. `source` decides where a request's fingerprint comes
//! from: the sensor's ring ([`correlation`]), httpd's own capture (`inline`, checked against
//! the ring by [`crosscheck`] in `both` mode), or a trusted proxy ([`upstream`]). [`correlation`] is the child's handle on the ring,
//! [`env`] the environment variables, [`stats`] the status page, [`addr`] the socket-address
//! conversion. Every `unsafe` line is under `ffi/` (bindgen bindings, the generic `extern "C"`
//! entry points, safe wrappers), which depends on nothing else in the crate.
//!
//! `ffi`, `hooks` and `sink` call httpd, whose symbols only exist inside an httpd process; unit
//! tests (`cargo test`) build without them and cover the pure modules.

#![deny(unsafe_code)]
// Under `cargo test` the httpd half is not compiled, so some pure helpers have no caller.
#![cfg_attr(test, allow(dead_code))]

pub mod addr;
pub mod config;
pub mod correlation;
pub mod crosscheck;
pub mod env;
pub mod ids;
#[cfg(feature = "foxio")]
pub mod ja4plus;
pub mod record;
pub mod sink;
pub mod stats;
pub mod upstream;

#[cfg(not(test))]
mod ffi;
#[cfg(not(test))]
mod flusher;
#[cfg(not(test))]
mod hooks;
#[cfg(not(test))]
mod inline;
#[cfg(not(test))]
mod module;
#[cfg(not(test))]
mod source;
