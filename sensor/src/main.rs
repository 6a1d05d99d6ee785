//! `ja4sensor` command line: `run` (live capture into the ring) and `read` (a capture file to
//! JSON lines). Everything else lives in the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ja4sensor::{live, offline};

#[derive(Debug, Parser)]
#[command(name = "ja4sensor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => live::run(args),
        Command::Read { file } => offline::read(&file),
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
