//! The one place the `clickhouse` client is set up and every statement the shipper sends is
//! written. Two server generations matter:
//!
//! - **modern** (ClickHouse ≥ 23): the crate's defaults (row validation on, LZ4).
//! - **legacy** (Debian's 18.16 and the like): the typed `RowBinaryWithNamesAndTypes` format the
//!   validation needs does not exist there, so validation is off; LZ4 request bodies work.
//!
//! Every insert carries `wait_end_of_query=1` so that the server only answers once the data (and
//! every materialized view) is written: an error after a `200` header would otherwise be a
//! silently truncated insert. Every insert also carries `query_id` = the batch id: the server
//! refuses a second query with an id that is still running, so a retry can never overlap the
//! attempt it replaces; and a `deadline` in server time past which `ship_inbox` refuses it, so an
//! attempt that reaches the server late can never land after its retry (see `ship.rs`).

use std::time::Duration;

use clickhouse::insert_formatted::CompressedData;
use clickhouse::{Client, Compression};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{ClickHouseConfig, CompressionSetting, ValidationSetting};

/// First major version whose SQL runs the seed's DDL verbatim (JSONExtract*, IPv4, the JSON type).
pub const MODERN_MAJOR: u32 = 23;
/// Where the shipper inserts: a `Null` table whose materialized views write the rows into
/// `http_logs_raw` and the batch id into [`BATCHES_TABLE`] within one INSERT (see `ship.rs`).
pub const INBOX_TABLE: &str = "ship_inbox";
pub const BATCHES_TABLE: &str = "ship_batches";
/// The inbox of the detector's events: its views write `reqin_events` and [`BATCHES_TABLE`].
pub const EVENTS_INBOX_TABLE: &str = "ship_events_inbox";
/// What the retention job keeps of every file however old: past a checkpoint there are at most
/// `ship::MAX_WINDOW` (64) batches, each cut into at most 16 parts (`ship::MAX_SPLIT_DEPTH`).
pub const RETENTION_KEEP_PER_FILE: usize =
    crate::ship::MAX_WINDOW * (1 << crate::ship::MAX_SPLIT_DEPTH);
pub const MIGRATIONS_TABLE: &str = "ship_migrations";
/// Added to an insert's deadline: the server-clock estimate is good to about a second, and the
/// request needs time to reach the server.
pub const DEADLINE_MARGIN_SECS: u64 = 2;
/// Answers to our own small queries (`version()`, `count()`) are a few bytes.
const MAX_SMALL_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ChError {
    #[error("ClickHouse at {url}: {source}")]
    Client {
        url: String,
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse at {url}: no answer within {timeout:?}")]
    TimedOut { url: String, timeout: Duration },
    #[error("ClickHouse at {url}: unexpected answer {answer:?} to {what}")]
    Answer {
        url: String,
        what: &'static str,
        answer: String,
    },
}

impl ChError {
    /// The server said the object already exists (codes 57 TABLE_ALREADY_EXISTS, 82
    /// DATABASE_ALREADY_EXISTS): a migration statement ran before its record was written.
    pub fn is_already_exists(&self) -> bool {
        let text = self.to_string();
        text.contains("Code: 57") || text.contains("Code: 82") || text.contains("already exists")
    }
}

/// Which set of migrations (and client behaviour) fits the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Legacy,
    Modern,
}

impl Flavor {
    /// From `SELECT version()`: `18.16.1`, `24.8.4.13`; an unparsable version is treated as
    /// legacy, whose SQL also runs on new servers.
    pub fn from_version(version: &str) -> Self {
        let major = version
            .trim()
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        match major {
            Some(m) if m >= MODERN_MAJOR => Self::Modern,
            _ => Self::Legacy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Modern => "modern",
        }
    }
}

/// A connected client and what we learnt about the server.
#[derive(Clone)]
pub struct Ch {
    client: Client,
    url: String,
    compression: Compression,
    timeout: Duration,
    pub version: String,
    pub flavor: Flavor,
    /// Server clock minus local clock, seconds (measured at connect).
    clock_offset: i64,
}

impl Ch {
    /// Asks the server at `cfg.url` its version and sets the client up for it.
    pub async fn connect(cfg: &ClickHouseConfig) -> Result<Self, ChError> {
        Self::connect_to(cfg, &cfg.url).await
    }

    /// The same for one of several hosts (`ship.clickhouse.hosts`).
    pub async fn connect_to(cfg: &ClickHouseConfig, url: &str) -> Result<Self, ChError> {
        let compression = match cfg.compression {
            CompressionSetting::Lz4 => Compression::Lz4,
            CompressionSetting::None => Compression::None,
        };
        // The clickhouse crate's own HTTP client (hyper's), keeping no connection idle: every
        // request opens its own. A server being stopped (SIGTERM) closes its listening socket at
        // once but goes on serving requests on the keep-alive connections it has, for seconds,
        // then tears its tables down under them; an INSERT cut there can leave a batch's rows
        // without its `ship_batches` record (sent again: a duplicate). On a fresh connection
        // per request, a stopping server refuses the next attempt (never sent: the batch goes
        // to the next host at once) and only attempts already running are in its hands, which
        // its shutdown lets finish. The cost: one TCP connect per batch or check.
        let mut connector = HttpConnector::new();
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let base = Client::with_http_client(http)
            .with_url(url)
            .with_database(&cfg.database)
            .with_user(&cfg.user)
            .with_password(&cfg.password)
            .with_compression(compression)
            // Until we know the server's version, assume the oldest.
            .with_validation(false);
        let mut ch = Self {
            client: base,
            url: url.to_owned(),
            compression,
            timeout: Duration::from_millis(cfg.timeout_ms),
            version: String::new(),
            flavor: Flavor::Legacy,
            clock_offset: 0,
        };
        ch.version = ch.small_query("SELECT version()", "version()").await?;
        let server_now = ch.server_now().await?;
        ch.clock_offset = i64::try_from(server_now).unwrap_or(i64::MAX) - unix_now_i64();
        ch.flavor = Flavor::from_version(&ch.version);
        let validation = match cfg.validation {
            ValidationSetting::Auto => ch.flavor == Flavor::Modern,
            ValidationSetting::On => true,
            ValidationSetting::Off => false,
        };
        ch.client = ch.client.clone().with_validation(validation);
        Ok(ch)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(&self, source: clickhouse::error::Error) -> ChError {
        ChError::Client {
            url: self.url.clone(),
            source,
        }
    }

    fn timed_out(&self) -> ChError {
        ChError::TimedOut {
            url: self.url.clone(),
            timeout: self.timeout,
        }
    }

    /// A statement without a result (DDL, a small INSERT ... VALUES).
    pub async fn execute(&self, sql: &str) -> Result<(), ChError> {
        let run = self.client.query_raw(sql).execute();
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r.map_err(|e| self.err(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// One short TSV answer, trimmed. `sql` must not contain `?` (it is sent verbatim).
    pub async fn small_query(&self, sql: &str, what: &'static str) -> Result<String, ChError> {
        let run = async {
            let mut cursor = self
                .client
                .query_raw(sql)
                .fetch_bytes("TabSeparated")
                .map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            while let Some(chunk) = cursor.next().await.map_err(|e| self.err(e))? {
                out.extend_from_slice(&chunk);
                if out.len() > MAX_SMALL_ANSWER_BYTES {
                    return Err(ChError::Answer {
                        url: self.url.clone(),
                        what,
                        answer: format!("more than {MAX_SMALL_ANSWER_BYTES} bytes"),
                    });
                }
            }
            Ok(String::from_utf8_lossy(&out).trim().to_owned())
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        }
    }

    async fn count(&self, sql: &str, what: &'static str) -> Result<u64, ChError> {
        let answer = self.small_query(sql, what).await?;
        answer.parse().map_err(|_| ChError::Answer {
            url: self.url.clone(),
            what,
            answer,
        })
    }

    /// The server's clock, Unix seconds.
    pub async fn server_now(&self) -> Result<u64, ChError> {
        self.count("SELECT toUInt32(now())", "now()").await
    }

    /// The server's clock as estimated from ours, Unix seconds.
    pub fn estimated_server_now(&self) -> u64 {
        u64::try_from(unix_now_i64().saturating_add(self.clock_offset)).unwrap_or(0)
    }

    /// The `deadline` of an attempt starting now: past it, the server refuses the attempt
    /// (`ship_inbox.live`), and by then the client has given up on it (the whole insert is bounded
    /// by the timeout).
    pub fn attempt_deadline(&self) -> u64 {
        self.estimated_server_now() + self.timeout.as_secs() + 1 + DEADLINE_MARGIN_SECS
    }

    /// Whether the inbox's view has recorded this batch id (the rows went in with it).
    pub async fn batch_recorded(&self, batch_id: &str) -> Result<bool, ChError> {
        let sql = format!(
            "SELECT count() FROM {BATCHES_TABLE} WHERE batch_id = {}",
            quote(batch_id)
        );
        Ok(self.count(&sql, "the batch check").await? > 0)
    }

    /// Whether an insert with this query id is still being processed by the server.
    pub async fn query_running(&self, query_id: &str) -> Result<bool, ChError> {
        let sql = format!(
            "SELECT count() FROM system.processes WHERE query_id = {}",
            quote(query_id)
        );
        Ok(self.count(&sql, "the running-query check").await? > 0)
    }

    /// A recorded batch id starting with `prefix` (`<fingerprint>:<start>-`), if any.
    pub async fn batch_with_prefix(&self, prefix: &str) -> Result<Option<String>, ChError> {
        let sql = format!(
            "SELECT batch_id FROM {BATCHES_TABLE} WHERE batch_id LIKE {} LIMIT 1",
            quote(&like_prefix(prefix))
        );
        let answer = self.small_query(&sql, "the batch lookup").await?;
        Ok(Some(answer).filter(|a| !a.is_empty()))
    }

    /// Whether a query whose id starts with `prefix` is being processed.
    pub async fn query_running_with_prefix(&self, prefix: &str) -> Result<bool, ChError> {
        let sql = format!(
            "SELECT count() FROM system.processes WHERE query_id LIKE {}",
            quote(&like_prefix(prefix))
        );
        Ok(self.count(&sql, "the running-query check").await? > 0)
    }

    /// The ranges `(start, end)` of the batches of one file (`fingerprint`) recorded in
    /// [`BATCHES_TABLE`] that end after `offset`, by start, at most `limit` of them: what may
    /// have landed past a checkpoint.
    pub async fn landed_ranges(
        &self,
        fingerprint: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, ChError> {
        let sql = format!(
            "SELECT toUInt64(extract(batch_id, ':([0-9]+)-')) AS s, \
             toUInt64(extract(batch_id, '-([0-9]+)$')) AS e \
             FROM {BATCHES_TABLE} WHERE batch_id LIKE {} AND e > {offset} \
             GROUP BY s, e ORDER BY s, e LIMIT {limit}",
            quote(&like_prefix(&format!("{fingerprint}:")))
        );
        let answer = self.small_query(&sql, "the batch lookup").await?;
        let mut out = Vec::new();
        for line in answer.lines().filter(|l| !l.is_empty()) {
            let range = line
                .split_once('\t')
                .and_then(|(s, e)| Some((s.parse().ok()?, e.parse().ok()?)));
            match range {
                Some(r) => out.push(r),
                None => {
                    return Err(ChError::Answer {
                        url: self.url.clone(),
                        what: "the batch lookup",
                        answer: line.to_owned(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Sends one batch (`RowBinary` rows of the inbox's `(batch_id, raw_json, deadline)`) into
    /// `inbox` under `batch_id`, refused by the server after `deadline`. The whole request
    /// (sending and waiting) is bounded by the timeout, so no answer is accepted after the
    /// deadline. The chunks are compressed on a blocking thread first (when compression is on).
    pub async fn insert_rows(
        &self,
        inbox: &str,
        batch_id: &str,
        chunks: Vec<bytes::Bytes>,
    ) -> Result<(), ChError> {
        let payload = if !matches!(self.compression, Compression::None) {
            let compression = self.compression;
            let work = tokio::task::spawn_blocking(move || {
                chunks
                    .iter()
                    .map(|c| CompressedData::new(c, compression))
                    .collect::<Result<Vec<_>, _>>()
            });
            match work.await {
                Ok(r) => Payload::Compressed(r.map_err(|e| self.err(e))?),
                Err(e) => {
                    return Err(ChError::Answer {
                        url: self.url.clone(),
                        what: "compressing a batch",
                        answer: e.to_string(),
                    })
                }
            }
        } else {
            Payload::Plain(chunks)
        };
        let t0 = std::time::Instant::now();
        let sql = format!("INSERT INTO {inbox} (batch_id, raw_json, deadline) FORMAT RowBinary");
        let mut insert = self
            .client
            .insert_formatted_with(sql)
            .with_setting("wait_end_of_query", "1")
            .with_setting("query_id", batch_id)
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        let run = async {
            match payload {
                Payload::Compressed(blocks) => {
                    for block in blocks {
                        insert
                            .send_compressed(block)
                            .await
                            .map_err(|e| self.err(e))?;
                    }
                }
                Payload::Plain(chunks) => {
                    for chunk in chunks {
                        insert.send(chunk).await.map_err(|e| self.err(e))?;
                    }
                }
            }
            let sent = t0.elapsed();
            let r = insert.end().await.map_err(|e| match e {
                clickhouse::error::Error::TimedOut => self.timed_out(),
                e => self.err(e),
            });
            log::debug!(
                "batch {batch_id}: body handed to the connection after {sent:?}, answer after {:?}",
                t0.elapsed()
            );
            r
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Deletes the records of [`BATCHES_TABLE`] older than `days`, except the newest `keep` of
    /// every file (by end offset): a restart looks up the batches past its checkpoint, which are
    /// among the newest `max_in_flight` of their file. One `ALTER ... DELETE` (a mutation, run
    /// by the server in the background); none is started while an earlier one is unfinished.
    /// Returns whether one was started.
    pub async fn prune_batches(&self, days: u32, keep: usize) -> Result<bool, ChError> {
        let pending = self
            .count(
                &format!(
                    "SELECT count() FROM system.mutations WHERE database = currentDatabase() \
                     AND table = {} AND is_done = 0",
                    quote(BATCHES_TABLE)
                ),
                "the mutation check",
            )
            .await?;
        if pending > 0 {
            return Ok(false);
        }
        let old = format!("inserted_at < now() - {}", u64::from(days) * 86_400);
        let any_old = self
            .count(
                &format!("SELECT count() FROM {BATCHES_TABLE} WHERE {old}"),
                "the retention check",
            )
            .await?;
        if any_old == 0 {
            return Ok(false);
        }
        let file = "substring(batch_id, 1, position(batch_id, ':') - 1)";
        let end = "toUInt64(extract(batch_id, '-([0-9]+)$'))";
        self.execute(&format!(
            "ALTER TABLE {BATCHES_TABLE} DELETE WHERE {old} AND batch_id NOT IN \
             (SELECT batch_id FROM {BATCHES_TABLE} ORDER BY {file}, {end} DESC LIMIT {keep} BY {file})"
        ))
        .await?;
        Ok(true)
    }
}

impl ChError {
    /// The request never reached the server (connection refused): the attempt cannot land, so
    /// the batch may go to the next host at once.
    pub fn never_sent(&self) -> bool {
        let ChError::Client { source, .. } = self else {
            return false;
        };
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return true;
                }
            }
            cur = e.source();
        }
        false
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, ChError::TimedOut { .. })
    }
}

enum Payload {
    Compressed(Vec<CompressedData>),
    Plain(Vec<bytes::Bytes>),
}

fn unix_now_i64() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A ClickHouse string literal. Batch ids and names are ours ([0-9a-z:-]), escaping is for safety.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A LIKE pattern matching strings that start with `prefix`.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_picks_the_flavor() {
        assert_eq!(Flavor::from_version("18.16.1"), Flavor::Legacy);
        assert_eq!(Flavor::from_version("22.8.5.29"), Flavor::Legacy);
        assert_eq!(Flavor::from_version("23.3.1.1"), Flavor::Modern);
        assert_eq!(Flavor::from_version("25.8.2.1\n"), Flavor::Modern);
        assert_eq!(Flavor::from_version("garbage"), Flavor::Legacy);
    }

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("ab:1-"), "ab:1-%");
        assert_eq!(like_prefix("a_%"), "a\\_\\%%");
    }

    #[test]
    fn quote_escapes() {
        assert_eq!(quote("a'b\\c"), "'a\\'b\\\\c'");
    }
}
