//! Counters of the shipper, logged periodically and served as Prometheus text on `/metrics`,
//! with `/health` (like logcorrelator's endpoint). Bound to loopback by default: it is not
//! authenticated.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request head larger than this is not a scraper's `GET /metrics`.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// A slow client must not hold a connection open forever.
const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Metrics {
    pub rows_shipped: AtomicU64,
    pub event_rows_shipped: AtomicU64,
    pub batches_shipped: AtomicU64,
    pub bytes_shipped: AtomicU64,
    /// Batches found already in ClickHouse when re-checked after a failure or a restart.
    pub batches_already_in_clickhouse: AtomicU64,
    /// Timed-out batches cut in two after ClickHouse confirmed they had not landed.
    pub batches_split: AtomicU64,
    pub retries: AtomicU64,
    pub insert_errors: AtomicU64,
    pub failovers: AtomicU64,
    pub checkpoint_errors: AtomicU64,
    pub dead_letter_errors: AtomicU64,
    pub dead_letters: AtomicU64,
    pub retention_runs: AtomicU64,
    pub lag_bytes: AtomicU64,
    /// Milliseconds (rendered as seconds).
    pub lag_ms: AtomicU64,
    pub files_followed: AtomicU64,
    pub in_flight: AtomicU64,
    pub last_batch_rows: AtomicU64,
    /// 1 when the last request to ClickHouse succeeded.
    pub clickhouse_up: AtomicU64,
    /// Microseconds (rendered as seconds): where the time goes.
    pub prepare_us: AtomicU64,
    pub insert_us: AtomicU64,
    pub checkpoint_us: AtomicU64,
}

/// How a value is stored and shown.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    /// Stored in µs, shown in seconds.
    MicrosCounter,
    /// Stored in ms, shown in seconds.
    MillisGauge,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    pub fn add_time(counter: &AtomicU64, d: std::time::Duration) {
        Self::add(counter, u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    fn entries(&self) -> [(&'static str, Kind, &'static str, &AtomicU64); 22] {
        use Kind::*;
        [
            (
                "rows_shipped_total",
                Counter,
                "lines inserted into ClickHouse (logs and events)",
                &self.rows_shipped,
            ),
            (
                "event_rows_shipped_total",
                Counter,
                "event lines inserted into reqin_events",
                &self.event_rows_shipped,
            ),
            (
                "batches_shipped_total",
                Counter,
                "batches confirmed and checkpointed",
                &self.batches_shipped,
            ),
            (
                "bytes_shipped_total",
                Counter,
                "bytes of the log consumed (shipped or dead-lettered)",
                &self.bytes_shipped,
            ),
            (
                "batches_already_in_clickhouse_total",
                Counter,
                "batches not re-sent: found in ship_batches after a failure or restart",
                &self.batches_already_in_clickhouse,
            ),
            (
                "batches_split_total",
                Counter,
                "timed-out batches cut in two once known not to have landed",
                &self.batches_split,
            ),
            (
                "retries_total",
                Counter,
                "failed attempts that were retried (insert, check, checkpoint, dead letter)",
                &self.retries,
            ),
            (
                "insert_errors_total",
                Counter,
                "failed or unconfirmed ClickHouse requests",
                &self.insert_errors,
            ),
            (
                "failovers_total",
                Counter,
                "batches sent to a host other than the first of the list",
                &self.failovers,
            ),
            (
                "checkpoint_errors_total",
                Counter,
                "failed checkpoint writes (full disk...)",
                &self.checkpoint_errors,
            ),
            (
                "dead_letter_errors_total",
                Counter,
                "failed dead-letter writes",
                &self.dead_letter_errors,
            ),
            (
                "dead_letters_total",
                Counter,
                "malformed lines written to the dead-letter file",
                &self.dead_letters,
            ),
            (
                "retention_runs_total",
                Counter,
                "ship_batches retention deletes started",
                &self.retention_runs,
            ),
            (
                "lag_bytes",
                Gauge,
                "bytes on disk not yet confirmed by ClickHouse",
                &self.lag_bytes,
            ),
            (
                "lag_seconds",
                MillisGauge,
                "age of the oldest byte not yet confirmed by ClickHouse (0 when caught up)",
                &self.lag_ms,
            ),
            (
                "files_followed",
                Gauge,
                "files matched by the input globs",
                &self.files_followed,
            ),
            (
                "in_flight",
                Gauge,
                "batches being inserted",
                &self.in_flight,
            ),
            (
                "last_batch_rows",
                Gauge,
                "lines of the last batch prepared",
                &self.last_batch_rows,
            ),
            (
                "clickhouse_up",
                Gauge,
                "1 when the last ClickHouse request succeeded",
                &self.clickhouse_up,
            ),
            (
                "prepare_seconds_total",
                MicrosCounter,
                "reading, validating and encoding batches (blocking threads)",
                &self.prepare_us,
            ),
            (
                "insert_seconds_total",
                MicrosCounter,
                "inside INSERT requests, summed over the batches in flight",
                &self.insert_us,
            ),
            (
                "checkpoint_seconds_total",
                MicrosCounter,
                "writing and syncing checkpoints",
                &self.checkpoint_us,
            ),
        ]
    }

    fn value(kind: Kind, v: &AtomicU64) -> String {
        let v = v.load(Ordering::Relaxed);
        match kind {
            Kind::Counter | Kind::Gauge => v.to_string(),
            Kind::MicrosCounter => format!("{:.6}", v as f64 / 1e6),
            Kind::MillisGauge => format!("{:.3}", v as f64 / 1e3),
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, v) in self.entries() {
            let type_name = match kind {
                Kind::Counter | Kind::MicrosCounter => "counter",
                Kind::Gauge | Kind::MillisGauge => "gauge",
            };
            let _ = writeln!(out, "# HELP reqin_ship_{name} {help}");
            let _ = writeln!(out, "# TYPE reqin_ship_{name} {type_name}");
            let _ = writeln!(out, "reqin_ship_{name} {}", Self::value(kind, v));
        }
        out
    }

    /// One log line with everything.
    pub fn summary(&self) -> String {
        self.entries()
            .iter()
            .map(|(name, kind, _, v)| format!("{name}={}", Self::value(*kind, v)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Binds now (so a taken port is a start-up error) and serves in the background.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let m = metrics.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, &m)).await;
                    });
                }
                Err(e) => {
                    log::warn!("metrics endpoint: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(bound)
}

async fn answer(mut stream: tokio::net::TcpStream, m: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD_BYTES {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&head);
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = match target {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", m.render()),
        "/health" => {
            let up = m.clickhouse_up.load(Ordering::Relaxed) == 1;
            let body = format!(
                "{{\"status\":\"{}\",\"clickhouse_up\":{up},\"lag_bytes\":{},\"lag_seconds\":{:.3}}}\n",
                if up { "ok" } else { "degraded" },
                m.lag_bytes.load(Ordering::Relaxed),
                m.lag_ms.load(Ordering::Relaxed) as f64 / 1e3
            );
            // 503 while ClickHouse is unreachable: lines pile up on disk (nothing is lost).
            (
                if up {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                },
                "application/json",
                body,
            )
        }
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}
