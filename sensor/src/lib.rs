//! `ja4sensor` library: the pcap sidecar of mod_reqin_log. It captures client SYNs and TLS
//! ClientHellos, fingerprints them (JA4, JA3) and publishes one record per connection into the
//! shared-memory ring that Apache reads.
//!
//! The code follows the packet: [`capture`] (the frame's link, IP and TCP headers) → [`flow`] →
//! the ClientHello parser, JA4/JA3, the SYN traits and the OS guess of
//! `correlate_lib::fingerprint` (the one implementation, shared with the Apache module's inline
//! mode) → [`publish`] (the ring) and [`output`] (sentinel's JSON outputs), glued by
//! [`pipeline`]; [`config`] is sentinel's YAML and [`cli`] the flags of `run`. The link decoding
//! ([`capture`]) and the reassembly ([`flow`]) take hostile bytes and are fuzzed from `fuzz/`
//! (targets `frame`, `segments`); the parsers from `correlate-lib/fuzz/`.
//!
//! Nothing here links libpcap. The capture itself (libpcap, `run`'s loop, `read`) is the
//! `ja4sensor-pcap` crate and binary: `ja4sensor run` and `ja4sensor read` execute it, so every
//! other command (`ship`, `detect`, `query`, `timeline`, `report`) starts without libpcap and
//! the libraries it pulls in (D-Bus, systemd, gcrypt...), and only that binary needs
//! `CAP_NET_RAW`.

#![forbid(unsafe_code)]

pub mod capture;
pub mod cli;
pub mod config;
pub mod flow;
pub mod output;
pub mod pipeline;
pub mod publish;

/// Errors that end a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// libpcap's errors (`ja4sensor_pcap::device::CaptureError`), which this crate does not link.
    #[error(transparent)]
    Capture(Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot create the ring: {0}")]
    Ring(#[from] correlate_lib::ring::RingError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Starts logging at `level` unless `RUST_LOG` is set.
pub fn init_logging(level: &str) {
    let env = env_logger::Env::default().default_filter_or(level.to_ascii_lowercase());
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}
