//! `ja4sensor` command line: `run` (live capture into the ring; also what a bare `ja4sensor
//! [--config FILE]` does, so sentinel's unit line keeps working) and `read` (a capture file to
//! JSON lines) are checked here and carried out by `ja4sensor-pcap`, which this process
//! executes; `ship`, `detect`, `query`, `timeline` and `report` run here, without libpcap.

#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt as _;
use std::process::{Command as Process, ExitCode};

use clap::{Parser, Subcommand};
use ja4sensor::cli::{outcome, sentinel_flags, CaptureCommand, RunArgs};

/// The capture binary, installed next to this one.
const CAPTURE_BINARY: &str = "ja4sensor-pcap";

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
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// `run` and `read`.
    #[command(flatten)]
    Capture(CaptureCommand),
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

fn main() -> ExitCode {
    let args = sentinel_flags(std::env::args());
    let cli = Cli::parse_from(&args);
    match cli.command {
        Some(Command::Capture(_)) | None => exec_capture(&args),
        // Each its own error type and exit path: they share no state with the capture.
        Some(Command::Ship(args)) => outcome("ja4sensor ship", reqin_shipper::run(&args)),
        Some(Command::Detect(args)) => outcome("ja4sensor detect", ja4sensor_detect::run(&args)),
        // grep-like exit codes (0 found, 1 nothing, 2 error), their own messages.
        Some(Command::Query(args)) => ja4sensor_query::cli::query(args),
        Some(Command::Timeline(args)) => ja4sensor_query::cli::timeline(args),
        Some(Command::Report(args)) => ja4sensor_query::cli::report(args),
    }
}

/// `run` and `read` (arguments already checked): this process becomes `ja4sensor-pcap` with the
/// same arguments. The pid stays, so systemd's main process, its notify socket and watchdog
/// carry over; so do the environment, the descriptors and ambient capabilities.
fn exec_capture(args: &[String]) -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(CAPTURE_BINARY),
        Err(e) => {
            eprintln!("ja4sensor: error: cannot find this executable's directory (for {CAPTURE_BINARY}): {e}");
            return ExitCode::FAILURE;
        }
    };
    let e = Process::new(&binary).args(args.iter().skip(1)).exec();
    eprintln!(
        "ja4sensor: error: cannot execute {} ({e}): `run` and `read` are carried out by {CAPTURE_BINARY}, installed next to ja4sensor",
        binary.display()
    );
    ExitCode::FAILURE
}
