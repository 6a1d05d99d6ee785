//! `ja4sensor-pcap`: `run` (live capture into the ring; also what a bare `ja4sensor-pcap
//! [--config FILE]` does) and `read` (a capture file to JSON lines). `ja4sensor run` and
//! `ja4sensor read` execute it with their own arguments; it can be run directly too.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ja4sensor::cli::{sentinel_flags, RunArgs};
use ja4sensor_pcap::{live, offline};

#[derive(Debug, Parser)]
#[command(
    name = "ja4sensor",
    version,
    about = "The capture of ja4sensor (`ja4sensor run` and `ja4sensor read` execute it)",
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
    /// Capture live traffic and publish every ClientHello into the shared-memory ring.
    Run(RunArgs),
    /// Print one JSON line per TLS ClientHello found in a pcap or pcapng file.
    Read {
        /// Capture file (pcap or pcapng, detected from its magic number).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(sentinel_flags(std::env::args()));
    let result = match cli.command {
        Some(Command::Run(args)) => live::run(args),
        Some(Command::Read { file }) => offline::read(&file),
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
