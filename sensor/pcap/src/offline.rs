//! `ja4sensor read FILE`: every ClientHello of a capture file as one JSON line on stdout, in
//! frame order. No port filter: hellos are looked for on every TCP connection.

use std::io::{BufWriter, Write as _};
use std::path::Path;

use ja4sensor::flow::MAX_FLOWS;
use ja4sensor::pipeline::{Event, Pipeline};
use ja4sensor::publish::JsonLinesSink;
use ja4sensor::SensorError;

use crate::device::{self, CaptureError};

/// Offline flows never time out by wall clock; a flow idle this long in capture time is gone.
const OFFLINE_FLOW_TIMEOUT_NS: u64 = 300 * 1_000_000_000;

/// Output buffer of `ja4sensor read`.
const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;

pub fn read(path: &Path) -> Result<(), SensorError> {
    ja4sensor::init_logging("warn");
    let mut cap = device::open_file(path)?;
    let link = device::link_type(&cap)?;
    let mut pipeline = Pipeline::new(link, MAX_FLOWS, OFFLINE_FLOW_TIMEOUT_NS, String::new());
    let stdout = std::io::stdout();
    // Lines of ~1 KiB: a large buffer makes one write(2) per few hundred lines instead of one
    // per eight (stdout's own line buffering passes large writes through).
    let mut sink = JsonLinesSink::new(BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, stdout.lock()));
    let mut write_error = None;
    loop {
        let packet = match cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(CaptureError::Read(e).into()),
        };
        let time_ns = device::timestamp_ns(packet.header, 1);
        pipeline.process(time_ns, packet.data, &mut |event| {
            let Event::Hello(event) = event else { return };
            if write_error.is_none() {
                if let Err(e) = sink.publish(&event) {
                    write_error = Some(e);
                }
            }
        });
        if let Some(e) = write_error.take() {
            return Err(e.into());
        }
    }
    sink.flush()?;
    let c = pipeline.counters();
    log::info!(
        "{}: {} packets, {} hellos, {} parse failures, {} incomplete hellos, {} malformed frames",
        path.display(),
        c.packets_seen,
        c.hellos_parsed,
        c.parse_failures,
        c.hellos_incomplete,
        c.packets_malformed
    );
    let _ = std::io::stderr().flush();
    Ok(())
}
