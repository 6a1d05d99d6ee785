//! `ja4sensor run`: live capture into the shared-memory ring, with counters stored in the ring
//! header every second and a summary in the log every minute and at exit. SIGTERM and SIGINT
//! stop the loop cleanly: the capture is non-blocking and the loop waits at most
//! [`capture::POLL_TIMEOUT`] (a signal interrupts the wait), so the flag set by the signal
//! handler is noticed promptly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use correlate_lib::ring::{RingConfig, SensorCounter};

use crate::capture::{self, CaptureError};
use crate::config::Config;
use crate::flow::MAX_FLOWS;
use crate::pipeline::{Counters, Pipeline};
use crate::publish::{RingSink, RingStats};
use crate::SensorError;

/// How often counters are stored in the ring header (readers show them in status pages).
const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// How often a summary line is logged.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// YAML config file (ja4sentinel's keys plus `ring:` and `core.sensor_id`).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Capture interface (`any` for all); overrides core.interface.
    #[arg(long, short = 'i')]
    interface: Option<String>,
    /// Comma-separated server ports; overrides core.listen_ports.
    #[arg(long, short = 'p', value_delimiter = ',')]
    ports: Option<Vec<u16>>,
    /// Ring file; overrides ring.path.
    #[arg(long)]
    ring: Option<PathBuf>,
    /// Sensor identifier copied into every record; overrides core.sensor_id.
    #[arg(long)]
    sensor_id: Option<String>,
    /// Group that may read the ring (the Apache group, e.g. www-data); overrides ring.group.
    #[arg(long)]
    ring_group: Option<String>,
}

impl RunArgs {
    /// The config file (or the defaults) with the command-line overrides applied.
    fn config(&self) -> Result<Config, SensorError> {
        let mut cfg = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
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

fn install_stop_flag() -> Result<Arc<AtomicBool>, SensorError> {
    let stop = Arc::new(AtomicBool::new(false));
    for (signal, name) in [
        (signal_hook::consts::SIGTERM, "SIGTERM"),
        (signal_hook::consts::SIGINT, "SIGINT"),
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|source| {
            SensorError::Signal {
                signal: name,
                source,
            }
        })?;
    }
    Ok(stop)
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Kernel drop counts from libpcap (received but not delivered to us).
#[derive(Debug, Clone, Copy, Default)]
struct KernelStats {
    dropped: u64,
    if_dropped: u64,
}

pub fn run(args: RunArgs) -> Result<(), SensorError> {
    let cfg = args.config()?;
    crate::init_logging(&cfg.core.log_level);
    let stop = install_stop_flag()?;
    let filter = cfg.bpf_filter();
    let mut cap = capture::open_live(&cfg.core.interface, &filter)?;
    let link = capture::link_type(&cap)?;
    let ring_config = RingConfig {
        slot_count: cfg.ring.slot_count,
        ..RingConfig::default()
    };
    let mut ring = RingSink::create(
        &cfg.ring.path,
        ring_config,
        cfg.ring.mode_bits()?,
        cfg.ring.gid()?,
    )?;
    log::info!(
        "capturing on {} ({link:?}) with filter {filter:?}, publishing into {}",
        cfg.core.interface,
        cfg.ring.path.display()
    );
    let timeout_ns = cfg.core.flow_timeout_sec.saturating_mul(1_000_000_000);
    let mut pipeline = Pipeline::new(link, MAX_FLOWS, timeout_ns, cfg.core.sensor_id.clone());
    let mut kernel = KernelStats::default();
    let mut last_counters = Instant::now();
    let mut last_summary = Instant::now();
    let mut watermark_ns = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let polled_at_ns = unix_now_ns();
        match cap.next_packet() {
            Ok(packet) => {
                // Live captures are opened with microsecond timestamps.
                let time_ns = capture::timestamp_ns(packet.header, 1_000);
                watermark_ns = watermark_ns.max(time_ns);
                pipeline.process(time_ns, packet.data, &mut |event| {
                    log::debug!(
                        "hello {} sni={:?} ja4={} ja3={}",
                        event.record.key.map(|k| k.conn_id()).unwrap_or_default(),
                        event.record.tls_sni,
                        event.record.ja4,
                        event.record.ja3_hash
                    );
                    ring.publish(&event);
                });
                ring.set_watermark(watermark_ns);
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing buffered: in immediate mode a packet captured before this read began
                // would have been returned by it, so everything up to `polled_at_ns` is processed.
                watermark_ns = watermark_ns.max(polled_at_ns);
                ring.set_watermark(watermark_ns);
                pipeline.tick(unix_now_ns());
                capture::wait_readable(&cap, capture::POLL_TIMEOUT)?;
            }
            Err(e) => return Err(CaptureError::Read(e).into()),
        }
        if last_counters.elapsed() >= COUNTER_INTERVAL {
            last_counters = Instant::now();
            match cap.stats() {
                Ok(s) => {
                    kernel.dropped = u64::from(s.dropped);
                    kernel.if_dropped = u64::from(s.if_dropped);
                }
                Err(e) => log::debug!("pcap stats unavailable: {e}"),
            }
            store_counters(&ring, &pipeline, kernel);
        }
        if last_summary.elapsed() >= SUMMARY_INTERVAL {
            last_summary = Instant::now();
            log_summary(&pipeline, ring.stats(), kernel);
        }
    }
    store_counters(&ring, &pipeline, kernel);
    log::info!("stopping on signal");
    log_summary(&pipeline, ring.stats(), kernel);
    Ok(())
}

fn store_counters(ring: &RingSink, pipeline: &Pipeline, kernel: KernelStats) {
    let c: Counters = pipeline.counters();
    let flows = pipeline.flow_stats();
    let r = ring.stats();
    for (counter, value) in [
        (SensorCounter::PacketsSeen, c.packets_seen),
        (
            SensorCounter::KernelDrops,
            kernel.dropped + kernel.if_dropped,
        ),
        (SensorCounter::HellosParsed, c.hellos_parsed),
        (SensorCounter::ParseFailures, c.parse_failures),
        (SensorCounter::FlowsEvicted, flows.evicted + flows.expired),
        (SensorCounter::RingWrites, r.writes),
        (SensorCounter::RecordsTooLarge, r.too_large),
    ] {
        ring.set_counter(counter, value);
    }
}

fn log_summary(pipeline: &Pipeline, ring: RingStats, kernel: KernelStats) {
    let c = pipeline.counters();
    let flows = pipeline.flow_stats();
    log::info!(
        "packets={} kernel_drops={} if_drops={} syns={} hellos={} parse_failures={} \
         incomplete_hellos={} not_tls={} retransmissions={} malformed_frames={} not_tcp={} \
         fragments={} flows={} flows_evicted={} flows_expired={} ring_writes={} \
         ring_too_large={} ring_errors={} ring_shortened={}",
        c.packets_seen,
        kernel.dropped,
        kernel.if_dropped,
        c.syns,
        c.hellos_parsed,
        c.parse_failures,
        c.hellos_incomplete,
        c.payloads_not_tls,
        c.retransmissions,
        c.packets_malformed,
        c.packets_not_tcp + c.packets_not_ip,
        c.ip_fragments,
        pipeline.flows_tracked(),
        flows.evicted,
        flows.expired,
        ring.writes,
        ring.too_large,
        ring.errors,
        ring.shortened,
    );
}
