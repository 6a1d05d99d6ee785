//! The commands and flags of the capture, `run` and `read` (parsed by `ja4sensor`, which hands
//! them to `ja4sensor-pcap` unchanged, and by `ja4sensor-pcap` itself), and sentinel's one-dash
//! spelling of them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::SensorError;

#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// YAML config file (ja4sentinel's keys plus `ring:` and `core.sensor_id`). sentinel's
    /// `-config FILE` spelling is accepted too.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Validate the configuration (file, environment, flags, BPF filter, output paths) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Capture interface (`any` for all); overrides core.interface.
    #[arg(long, short = 'i')]
    pub interface: Option<String>,
    /// Comma-separated server ports; overrides core.listen_ports.
    #[arg(long, short = 'p', value_delimiter = ',')]
    pub ports: Option<Vec<u16>>,
    /// Ring file; overrides ring.path.
    #[arg(long)]
    pub ring: Option<PathBuf>,
    /// Sensor identifier copied into every record; overrides core.sensor_id.
    #[arg(long)]
    pub sensor_id: Option<String>,
    /// Group that may read the ring (the Apache group, e.g. www-data); overrides ring.group.
    #[arg(long)]
    pub ring_group: Option<String>,
}

impl RunArgs {
    /// The config file (or the defaults) with the environment and command-line overrides
    /// applied, validated.
    pub fn config(&self) -> Result<Config, SensorError> {
        let mut cfg = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        cfg.apply_env()?;
        if let Some(i) = &self.interface {
            cfg.core.interface = i.clone();
        }
        if let Some(p) = &self.ports {
            cfg.core.listen_ports = p.clone();
            // Ports given on the command line mean the generated filter.
            cfg.core.bpf_filter.clear();
        }
        if let Some(r) = &self.ring {
            cfg.ring.path = r.clone();
        }
        if let Some(s) = &self.sensor_id {
            cfg.core.sensor_id = s.clone();
        }
        if let Some(g) = &self.ring_group {
            cfg.ring.group = g.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The commands `ja4sensor-pcap` carries out: `ja4sensor`'s own list flattens them in.
#[derive(Debug, Subcommand)]
pub enum CaptureCommand {
    /// Capture live traffic and publish every ClientHello into the shared-memory ring.
    Run(RunArgs),
    /// Print one JSON line per TLS ClientHello found in a pcap or pcapng file.
    Read {
        /// Capture file (pcap or pcapng, detected from its magic number).
        file: PathBuf,
    },
}

/// sentinel is a Go program: its flags have one dash (`ja4sentinel -config FILE`). Accept that
/// spelling of the flags we share so its systemd unit's `ExecStart` line works unchanged.
pub fn sentinel_flags(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| match a.as_str() {
        "-config" => "--config".to_owned(),
        _ => match a.strip_prefix("-config=") {
            Some(v) => format!("--config={v}"),
            None => a,
        },
    })
    .collect()
}

/// A command's outcome as its exit code; an error on stderr after `program` (`ja4sensor`,
/// `ja4sensor ship`...). Every error message already includes its cause.
pub fn outcome<E: std::fmt::Display>(program: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
