//! `ja4sensor ship`: follows the correlated log that mod_reqin_log writes and inserts every line
//! into ClickHouse's `http_logs_raw` (seed 001) exactly once, as a query sees it. The disk log is
//! the buffer: nothing is held in memory that is not also on disk, so a dead ClickHouse or a
//! killed shipper delays lines but loses none.
//!
//! With `ship.events.path` it ships the detector's jsonl event files into `reqin_events` the same
//! way, and with several `ship.clickhouse.hosts` it writes each batch whole to the first that is
//! up (README "Many web servers").
//!
//! config → ch (client set-up) → schema (migrations) → follow (files, lines) → checkpoint →
//! encode (a batch as one INSERT body) → ship (the loop) → metrics.

#![forbid(unsafe_code)]

pub mod ch;
/// The follower and its checkpoint, shared with `ja4sensor detect` (correlate-lib).
pub use correlate_lib::follow::{self, checkpoint};
pub mod config;
pub mod encode;
pub mod metrics;
pub mod schema;
pub mod ship;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ShipConfig;
use crate::metrics::Metrics;
pub use crate::ship::ShipError;

/// Where the sensor's packages put its configuration; the `ship:` section lives in the same file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ja4sensor/config.yml";

/// `ja4sensor ship` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ShipArgs {
    /// YAML config file; its `ship:` section is read (the sensor's sections are ignored).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Create the ClickHouse tables that are missing (migrations for the server's version) and exit.
    #[arg(long)]
    pub init_schema: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// Entry point of the subcommand: runs until SIGTERM/SIGINT.
pub fn run(args: &ShipArgs) -> Result<(), ShipError> {
    let cfg = ShipConfig::load(&args.config)?;
    let _ = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(cfg.log_level.clone()),
    )
    .try_init();
    if args.check_config {
        log::info!("configuration OK: following {:?}", cfg.input.path);
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ShipError::Runtime)?;
    rt.block_on(async {
        if args.init_schema {
            let cluster = Some(cfg.clickhouse.cluster.as_str()).filter(|c| !c.is_empty());
            // Every node of the list: each has its local tables (and the Distributed ones).
            for url in cfg.host_urls() {
                let ch = ch::Ch::connect_to(&cfg.clickhouse, &url).await?;
                let report = schema::init_schema(&ch, cluster, &cfg.clickhouse.database).await?;
                log::info!(
                    "schema at {url} ({} variant for ClickHouse {}): {} migration(s) applied, {} already there",
                    ch.flavor.as_str(),
                    ch.version,
                    report.applied.len(),
                    report.already.len()
                );
            }
            return Ok(());
        }
        run_until_stopped(cfg).await
    })
}

async fn run_until_stopped(cfg: ShipConfig) -> Result<(), ShipError> {
    let metrics = Arc::new(Metrics::default());
    if cfg.metrics.enabled {
        let addr = cfg.metrics_addr()?;
        let bound = metrics::serve(addr, metrics.clone())
            .await
            .map_err(|source| ShipError::Metrics {
                addr: addr.to_string(),
                source,
            })?;
        log::info!("metrics on http://{bound}/metrics and /health");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ShipError::Runtime)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
    });
    log::info!(
        "shipping {:?}{} into ClickHouse at {} (checkpoint {})",
        cfg.input.path,
        if cfg.events.path.is_empty() {
            String::new()
        } else {
            format!(" and events {:?}", cfg.events.path)
        },
        cfg.host_urls().join(", then "),
        cfg.checkpoint_path.display()
    );
    ship::Shipper::new(cfg, metrics, stop_rx)?.run().await
}
