//! The forensic tools over mod_reqin_log's disk logs and the detector's events, no database
//! needed: `ja4sensor query` (the lines matching tags, a JA4, an address, ids, a time window),
//! `ja4sensor timeline` (everything a client did, connection by connection: handshake, each
//! request with its keep-alive/stream number and the gap since the previous one, the events they
//! raised), `ja4sensor report` (one self-contained HTML page, from the files or ClickHouse).
//!
//! Seed 004's names: a connection (`conn_id`) is the root of a workflow
//! (`root_correlation_id`), each request on it (`request_id`) a correlation with its
//! `sequence_number`, each event points at its request (`parent_correlation_id`); operator tags
//! (`tag_*`, an event's `correlation_tags`) are searched with `--tag`.
//!
//! Reading: [`scan`] (constant memory, SIMD prefilter on raw bytes, parallel files, hostile
//! lines counted); matching: [`filter`]; lines: [`object`].

#![forbid(unsafe_code)]

pub mod ch;
pub mod cli;
pub mod clients;
pub mod filter;
pub mod object;
pub mod query;
pub mod report;
pub mod scan;
pub mod time;
pub mod timeline;

pub use cli::{QueryArgs, ReportArgs, TimelineArgs};
