//! Baseline of `make bench`'s detector benchmark: what `ja4sensor ship` does to every line
//! before it sends it, on one file, without ClickHouse: the shared follower's `read_lines` in
//! batches of the shipper's default `batch_size` (500), and the shipper's validation of each
//! line (UTF-8, a JSON object: `serde_json::from_str::<Map<String, Value>>`, as
//! `reqin_shipper::ship::json_object_line`). Prints `lines=N good=N secs=S`.
//!
//!     cargo run --release -p ja4sensor-detect --example ship_validate -- FILE

use std::time::Instant;

use correlate_lib::follow;
use serde_json::{Map, Value};

/// The shipper's default `ship.clickhouse.batch_size`.
const BATCH: usize = 500;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: ship_validate FILE")?;
    let t = Instant::now();
    let file = follow::identify(std::path::Path::new(&path))?.ok_or("no complete line")?;
    let (mut offset, mut lines, mut good) = (0u64, 0u64, 0u64);
    loop {
        let (batch, end) = follow::read_lines(&file, offset, BATCH, None)?;
        if batch.is_empty() {
            break;
        }
        for l in &batch {
            lines += 1;
            let ok = !l.overlong
                && std::str::from_utf8(&l.bytes)
                    .ok()
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .is_some_and(|t| serde_json::from_str::<Map<String, Value>>(t).is_ok());
            good += u64::from(ok);
        }
        offset = end;
    }
    println!(
        "lines={lines} good={good} secs={:.3}",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
