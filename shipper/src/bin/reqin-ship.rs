//! `reqin-ship`: the shipper alone, the same code as `ja4sensor ship`, for hosts (and tests) that
//! want it without the capture binary.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "reqin-ship", version, about)]
struct Cli {
    #[command(flatten)]
    ship: reqin_shipper::ShipArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match reqin_shipper::run(&cli.ship) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reqin-ship: error: {e}");
            ExitCode::FAILURE
        }
    }
}
