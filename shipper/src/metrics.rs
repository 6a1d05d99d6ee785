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
    pub batches_shipped: AtomicU64,
    pub bytes_shipped: AtomicU64,
    /// Batches found already in ClickHouse when re-checked after a failure or a restart.
    pub batches_already_in_clickhouse: AtomicU64,
    pub retries: AtomicU64,
    pub insert_errors: AtomicU64,
    pub checkpoint_errors: AtomicU64,
    pub dead_letter_errors: AtomicU64,
    pub dead_letters: AtomicU64,
    pub lag_bytes: AtomicU64,
    pub lag_seconds: AtomicU64,
    pub files_followed: AtomicU64,
    /// 1 when the last request to ClickHouse succeeded.
    pub clickhouse_up: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    fn entries(&self) -> [(&'static str, &'static str, &'static str, &AtomicU64); 13] {
        [
            (
                "rows_shipped_total",
                "counter",
                "lines inserted into ClickHouse",
                &self.rows_shipped,
            ),
            (
                "batches_shipped_total",
                "counter",
                "batches confirmed and checkpointed",
                &self.batches_shipped,
            ),
            (
                "bytes_shipped_total",
                "counter",
                "bytes of the log consumed (shipped or dead-lettered)",
                &self.bytes_shipped,
            ),
            (
                "batches_already_in_clickhouse_total",
                "counter",
                "batches not re-sent: found in ship_batches after a failure or restart",
                &self.batches_already_in_clickhouse,
            ),
            (
                "retries_total",
                "counter",
                "failed attempts that were retried (insert, checkpoint, dead letter)",
                &self.retries,
            ),
            (
                "insert_errors_total",
                "counter",
                "failed or unconfirmed ClickHouse requests",
                &self.insert_errors,
            ),
            (
                "checkpoint_errors_total",
                "counter",
                "failed checkpoint writes (full disk...)",
                &self.checkpoint_errors,
            ),
            (
                "dead_letter_errors_total",
                "counter",
                "failed dead-letter writes",
                &self.dead_letter_errors,
            ),
            (
                "dead_letters_total",
                "counter",
                "malformed lines written to the dead-letter file",
                &self.dead_letters,
            ),
            (
                "lag_bytes",
                "gauge",
                "bytes of complete lines not yet shipped",
                &self.lag_bytes,
            ),
            (
                "lag_seconds",
                "gauge",
                "seconds since the shipper was last caught up (0 when caught up)",
                &self.lag_seconds,
            ),
            (
                "files_followed",
                "gauge",
                "log files matched by the input glob",
                &self.files_followed,
            ),
            (
                "clickhouse_up",
                "gauge",
                "1 when the last ClickHouse request succeeded",
                &self.clickhouse_up,
            ),
        ]
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, v) in self.entries() {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP reqin_ship_{name} {help}");
            let _ = writeln!(out, "# TYPE reqin_ship_{name} {kind}");
            let _ = writeln!(out, "reqin_ship_{name} {v}");
        }
        out
    }

    /// One log line with everything.
    pub fn summary(&self) -> String {
        self.entries()
            .iter()
            .map(|(name, _, _, v)| format!("{name}={}", v.load(Ordering::Relaxed)))
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
                "{{\"status\":\"{}\",\"clickhouse_up\":{up},\"lag_bytes\":{},\"lag_seconds\":{}}}\n",
                if up { "ok" } else { "degraded" },
                m.lag_bytes.load(Ordering::Relaxed),
                m.lag_seconds.load(Ordering::Relaxed)
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
