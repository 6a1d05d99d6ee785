//! `ja4sensor` command line: `run` (live capture into the ring; also what a bare `ja4sensor
//! [--config FILE]` does, so sentinel's unit line keeps working) and `read` (a capture file to
//! JSON lines). Everything else lives in the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ja4sensor::{live, offline};

#[derive(Debug, Parser)]
#[command(
    name = "ja4sensor",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: `run` with these options.
    #[command(flatten)]
    run: live::RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture live traffic and publish every ClientHello into the shared-memory ring.
    Run(live::RunArgs),
    /// Print one JSON line per TLS ClientHello found in a pcap or pcapng file.
    Read {
        /// Capture file (pcap or pcapng, detected from its magic number).
        file: PathBuf,
    },
    /// Follow mod_reqin_log's correlated log into ClickHouse (disk-first, exactly once).
    Ship(reqin_shipper::ShipArgs),
    /// Run detection modules over the correlated log (live, or --replay FILE...) and dispatch
    /// their events to the configured listeners.
    Detect(ja4sensor_detect::DetectArgs),
    /// The log lines and events matching tags, a JA4, an address, ids and a time window.
    Query(ja4sensor_query::QueryArgs),
    /// Everything a client did, connection by connection, events interleaved.
    Timeline(ja4sensor_query::TimelineArgs),
    /// One self-contained HTML page about the logs (or ClickHouse).
    Report(ja4sensor_query::ReportArgs),
}

/// sentinel is a Go program: its flags have one dash (`ja4sentinel -config FILE`). Accept that
/// spelling of the flags we share so its systemd unit's `ExecStart` line works unchanged.
fn sentinel_flags(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| match a.as_str() {
        "-config" => "--config".to_owned(),
        _ => match a.strip_prefix("-config=") {
            Some(v) => format!("--config={v}"),
            None => a,
        },
    })
    .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(sentinel_flags(std::env::args()));
    let result = match cli.command {
        Some(Command::Run(args)) => live::run(args),
        Some(Command::Read { file }) => offline::read(&file),
        // Its own error type and exit path: the shipper shares no state with the capture.
        Some(Command::Ship(args)) => {
            return match reqin_shipper::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ja4sensor ship: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Detect(args)) => {
            return match ja4sensor_detect::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ja4sensor detect: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        // grep-like exit codes (0 found, 1 nothing, 2 error), their own messages.
        Some(Command::Query(args)) => return ja4sensor_query::cli::query(args),
        Some(Command::Timeline(args)) => return ja4sensor_query::cli::timeline(args),
        Some(Command::Report(args)) => return ja4sensor_query::cli::report(args),
        None => live::run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error message already includes its cause.
            eprintln!("ja4sensor: error: {e}");
            ExitCode::FAILURE
        }
    }
}
