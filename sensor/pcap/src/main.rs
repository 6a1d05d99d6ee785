//! `ja4sensor-pcap`: `run` (live capture into the ring; also what a bare `ja4sensor-pcap
//! [--config FILE]` does) and `read` (a capture file to JSON lines). `ja4sensor run` and
//! `ja4sensor read` execute it with their own arguments; it can be run directly too.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ja4sensor::cli::{outcome, sentinel_flags, CaptureCommand, RunArgs};
use ja4sensor_pcap::{live, offline};

#[derive(Debug, Parser)]
#[command(
    name = "ja4sensor-pcap",
    version,
    about = "The capture of ja4sensor (`ja4sensor run` and `ja4sensor read` execute it)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<CaptureCommand>,
    /// Without a subcommand: `run` with these options.
    #[command(flatten)]
    run: RunArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(sentinel_flags(std::env::args()));
    let result = match cli.command {
        Some(CaptureCommand::Run(args)) => live::run(args),
        Some(CaptureCommand::Read { file }) => offline::read(&file),
        None => live::run(cli.run),
    };
    outcome("ja4sensor", result)
}
