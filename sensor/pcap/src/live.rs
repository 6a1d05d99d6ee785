//! `ja4sensor run`: live capture into the shared-memory ring (and sentinel's JSON outputs), with
//! counters stored in the ring header every second and a summary in the log every minute and
//! at exit.
//!
//! Signals: SIGTERM and SIGINT stop the loop cleanly (the capture is non-blocking and the loop
//! waits at most [`device::POLL_TIMEOUT`]; a signal interrupts the wait), then the outputs are
//! flushed; SIGHUP reopens file outputs (logrotate). systemd: `READY=1` once capturing,
//! `WATCHDOG=1` at half of `WatchdogSec` from the capture loop itself (a stuck loop gets the
//! service restarted), `STOPPING=1` on the way out.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use correlate_lib::ring::{RingConfig, SensorCounter};
use correlate_lib::unix_now_ns;

use ja4sensor::cli::RunArgs;
use ja4sensor::config::Config;
use ja4sensor::flow::MAX_FLOWS;
use ja4sensor::output::{OutputCounts, Outputs};
use ja4sensor::pipeline::{Counters, Event, Pipeline, PipelineConfig};
use ja4sensor::publish::{RingSink, RingStats};
use ja4sensor::SensorError;

use crate::device::{self, CaptureError};

/// How often counters are stored in the ring header (readers show them in status pages).
const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// How often a summary line is logged.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Time the outputs get to write what is queued at shutdown: sentinel's unit stops with
/// `TimeoutStopSec=2`, so the whole exit must fit in well under 2 s.
const OUTPUT_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The flags the signal handlers set.
struct Signals {
    stop: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
}

fn install_signals() -> Result<Signals, SensorError> {
    let stop = Arc::new(AtomicBool::new(false));
    let hangup = Arc::new(AtomicBool::new(false));
    for (signal, name, flag) in [
        (signal_hook::consts::SIGTERM, "SIGTERM", &stop),
        (signal_hook::consts::SIGINT, "SIGINT", &stop),
        (signal_hook::consts::SIGHUP, "SIGHUP", &hangup),
    ] {
        signal_hook::flag::register(signal, Arc::clone(flag)).map_err(|source| {
            SensorError::Signal {
                signal: name,
                source,
            }
        })?;
    }
    Ok(Signals { stop, hangup })
}

/// Kernel drop counts from libpcap (received but not delivered to us).
#[derive(Debug, Clone, Copy, Default)]
struct KernelStats {
    dropped: u64,
    if_dropped: u64,
}

/// The addresses of the generated filter's `dst host` clause: `core.local_ips`, or every
/// address of this host when it is empty (a host without any address gets no clause).
fn server_addresses(cfg: &Config) -> Result<Vec<IpAddr>, SensorError> {
    let configured = cfg.local_ips()?;
    if !configured.is_empty() || !cfg.core.bpf_filter.trim().is_empty() {
        return Ok(configured);
    }
    Ok(device::local_addresses()?)
}

/// `--check-config`: everything `run` would check before capturing, without capturing.
pub fn check_config(args: &RunArgs) -> Result<(), SensorError> {
    let cfg = args.config()?;
    let filter = cfg.bpf_filter(&server_addresses(&cfg)?);
    device::check_filter(&filter)?;
    let outputs = cfg.outputs()?;
    println!(
        "configuration OK: interface {}, filter {filter:?}, ring {} ({} slots, mode {}), {} output(s) enabled",
        cfg.core.interface,
        cfg.ring.path.display(),
        cfg.ring.slot_count,
        cfg.ring.mode,
        outputs.len()
    );
    Ok(())
}

/// sd_notify, when started by systemd (`NOTIFY_SOCKET` set); a no-op otherwise.
fn notify(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        log::warn!("sd_notify failed: {e}");
    }
}

pub fn run(args: RunArgs) -> Result<(), SensorError> {
    if args.check_config {
        return check_config(&args);
    }
    let cfg = args.config()?;
    ja4sensor::init_logging(&cfg.core.log_level);
    let signals = install_signals()?;
    let filter = cfg.bpf_filter(&server_addresses(&cfg)?);
    let mut cap = device::open_live(&cfg.core.interface, &filter, cfg.pcap_buffer_bytes())?;
    let link = device::link_type(&cap)?;
    let ring_config = RingConfig {
        slot_count: cfg.ring.slot_count,
        ..RingConfig::default()
    };
    // A ring cut short under the mapping must not kill the sensor (SIGBUS): the page is
    // replaced and `ring.check()` notices.
    if let Err(e) = correlate_lib::ring::guard::install() {
        log::warn!("cannot guard the ring mapping against truncation: {e}");
    }
    let mut ring = RingSink::create(
        &cfg.ring.path,
        ring_config,
        cfg.ring.mode_bits()?,
        cfg.ring.gid()?,
    )?;
    let reopen = Arc::new(AtomicU64::new(0));
    let outputs = Outputs::start(&cfg.outputs()?, Arc::clone(&reopen))?;
    log::info!(
        "capturing on {} ({link:?}) with filter {filter:?}, publishing into {}{}",
        cfg.core.interface,
        cfg.ring.path.display(),
        if outputs.is_empty() {
            String::new()
        } else {
            format!(" and {} output(s)", outputs.counts().len())
        }
    );
    let timeout_ns = cfg.core.flow_timeout_sec.saturating_mul(1_000_000_000);
    let mut pipeline = Pipeline::with_config(
        link,
        PipelineConfig {
            max_flows: MAX_FLOWS,
            flow_timeout_ns: timeout_ns,
            sensor_id: cfg.core.sensor_id.clone(),
            exclude_sources: cfg.exclude_sources()?,
        },
    );
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec / 2));
    notify(sd_notify::NotifyState::Ready);
    let mut kernel = KernelStats::default();
    let mut last_counters = Instant::now();
    let mut last_summary = Instant::now();
    let mut last_watchdog = Instant::now();
    let mut watermark_ns = 0u64;
    let mut result = Ok(());
    while !signals.stop.load(Ordering::Relaxed) {
        let polled_at_ns = unix_now_ns();
        match cap.next_packet() {
            Ok(packet) => {
                // Live captures are opened with microsecond timestamps.
                let time_ns = device::timestamp_ns(packet.header, 1_000);
                watermark_ns = watermark_ns.max(time_ns);
                pipeline.process(time_ns, packet.data, &mut |event| match event {
                    Event::Hello(event) => {
                        log::debug!(
                            "hello {} sni={:?} ja4={} ja3={}",
                            event.record.key.map(|k| k.conn_id()).unwrap_or_default(),
                            event.record.tls_sni,
                            event.record.ja4,
                            event.record.ja3_hash
                        );
                        ring.publish(&event);
                        if !outputs.is_empty() {
                            match serde_json::to_string(&event.record.json()) {
                                Ok(json) => outputs.send(&json),
                                Err(e) => log::warn!("record not serializable: {e}"),
                            }
                        }
                    }
                    Event::Closed { key, time_ns } => ring.mark_closed(&key, time_ns),
                });
                ring.set_watermark(watermark_ns);
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing handed over: a packet captured before this read began is either
                // processed or still in the kernel's open block, which is handed over at most
                // CAPTURE_LATENCY_NS after its first packet.
                watermark_ns =
                    watermark_ns.max(polled_at_ns.saturating_sub(device::CAPTURE_LATENCY_NS));
                ring.set_watermark(watermark_ns);
                pipeline.tick(unix_now_ns());
                if let Err(e) = device::wait_readable(&cap, device::POLL_TIMEOUT) {
                    result = Err(e.into());
                    break;
                }
            }
            Err(e) => {
                result = Err(CaptureError::Read(e).into());
                break;
            }
        }
        if signals.hangup.swap(false, Ordering::Relaxed) {
            log::info!("SIGHUP: reopening file outputs");
            reopen.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(interval) = watchdog {
            if last_watchdog.elapsed() >= interval {
                last_watchdog = Instant::now();
                notify(sd_notify::NotifyState::Watchdog);
            }
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
            ring.check();
        }
        if last_summary.elapsed() >= SUMMARY_INTERVAL {
            last_summary = Instant::now();
            log_summary(&pipeline, ring.stats(), kernel, &outputs.counts());
        }
    }
    notify(sd_notify::NotifyState::Stopping);
    store_counters(&ring, &pipeline, kernel);
    match &result {
        Ok(()) => log::info!("stopping on signal"),
        Err(e) => log::error!("stopping: {e}"),
    }
    let output_counts = outputs.shutdown(OUTPUT_DRAIN_GRACE);
    log_summary(&pipeline, ring.stats(), kernel, &output_counts);
    result
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
        // The total of every reason below; kept for readers that only show one number.
        (
            SensorCounter::ParseFailures,
            c.parse_failures + c.hellos_too_large + c.reassembly_over_budget,
        ),
        (SensorCounter::ParseMalformedBody, c.parse_malformed_body),
        (
            SensorCounter::ParseMalformedExtensions,
            c.parse_malformed_extensions,
        ),
        (SensorCounter::HellosTooLarge, c.hellos_too_large),
        (
            SensorCounter::ReassemblyOverBudget,
            c.reassembly_over_budget,
        ),
        (SensorCounter::HellosReassembled, c.hellos_reassembled),
        (SensorCounter::PayloadsNotTls, c.payloads_not_tls),
        (SensorCounter::PacketsMalformed, c.packets_malformed),
        (SensorCounter::PacketsExcluded, c.packets_excluded),
        (SensorCounter::FlowsEvicted, flows.evicted),
        (SensorCounter::FlowsExpired, flows.expired),
        (
            SensorCounter::FlowsWithoutHello,
            flows.expired_without_hello,
        ),
        (SensorCounter::ConnectionsClosed, c.connections_closed),
        (SensorCounter::RingWrites, r.writes),
        (SensorCounter::RecordsTooLarge, r.too_large),
    ] {
        ring.set_counter(counter, value);
    }
}

fn log_summary(
    pipeline: &Pipeline,
    ring: RingStats,
    kernel: KernelStats,
    outputs: &[OutputCounts],
) {
    let c = pipeline.counters();
    let flows = pipeline.flow_stats();
    let outputs: Vec<String> = outputs
        .iter()
        .map(|o| {
            format!(
                "{}(written={} queue_drops={} write_failures={})",
                o.name, o.written, o.dropped, o.failed
            )
        })
        .collect();
    log::info!(
        "packets={} kernel_drops={} if_drops={} excluded={} syns={} syns_unparsed={} hellos={} reassembled={} \
         parse_failures={} (body={} extensions={} interleaved={}) too_large={} over_budget={} \
         incomplete_waits={} not_tls={} not_hello={} retransmissions={} out_of_order={} \
         malformed_frames={} not_tcp={} fragments={} flows={} flows_evicted={} flows_expired={} \
         flows_without_hello={} buffered_bytes={} open_connections={} closes={} ring_writes={} \
         ring_too_large={} ring_errors={} ring_shortened={} ring_closed_marked={} \
         ring_closed_not_found={} ring_recreated={} outputs=[{}]",
        c.packets_seen,
        kernel.dropped,
        kernel.if_dropped,
        c.packets_excluded,
        c.syns,
        c.syns_unparsed,
        c.hellos_parsed,
        c.hellos_reassembled,
        c.parse_failures,
        c.parse_malformed_body,
        c.parse_malformed_extensions,
        c.parse_interleaved,
        c.hellos_too_large,
        c.reassembly_over_budget,
        c.hellos_incomplete,
        c.payloads_not_tls,
        c.payloads_not_hello,
        c.retransmissions,
        c.segments_out_of_order,
        c.packets_malformed,
        c.packets_not_tcp + c.packets_not_ip,
        c.ip_fragments,
        pipeline.flows_tracked(),
        flows.evicted,
        flows.expired,
        flows.expired_without_hello,
        pipeline.reassembly_bytes(),
        pipeline.open_connections(),
        c.connections_closed,
        ring.writes,
        ring.too_large,
        ring.errors,
        ring.shortened,
        ring.closed_marked,
        ring.closed_not_found,
        ring.recreated,
        outputs.join(" "),
    );
}
