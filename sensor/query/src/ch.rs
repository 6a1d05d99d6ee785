//! `report --clickhouse URL`: the same page from ClickHouse's `http_logs` and `reqin_events`.
//! The rows' `raw_json` (each line exactly as the shipper received it) is streamed back and
//! counted by the same code as the files, so both pages agree; the server narrows by time
//! (its `time`/`event_time` columns, whole seconds) and by connection, the exact tests are ours.
//!
//! A runtime and an HTTP client exist only while this runs (never in `ja4sensor run`).

use std::collections::BTreeSet;
use std::time::Duration;

use clickhouse::Client;

use crate::filter::Role;

/// One answer's lines arrive in chunks; a line longer than this is cut off and skipped.
const MAX_LINE_BYTES: usize = crate::scan::MAX_LINE_BYTES;
/// `conn_id IN (...)` lists at most this many ids per query.
const IDS_PER_QUERY: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ChError {
    #[error("ClickHouse at {url}: {source}")]
    Client {
        url: String,
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse at {url}: no answer within {timeout:?}")]
    TimedOut { url: String, timeout: Duration },
    #[error("starting the ClickHouse client: {0}")]
    Runtime(std::io::Error),
}

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct ChSource {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    /// For each whole query (a report over a day of logs streams many rows).
    pub timeout: Duration,
}

/// A string literal for ClickHouse SQL (the shipper's: one escaping rule for both).
pub use reqin_shipper::ch::quote;

/// `AND`-clauses for a window in Unix ns over a `DateTime` column (whole seconds, widened).
pub fn window_sql(column: &str, since_ns: Option<i64>, until_ns: Option<i64>) -> String {
    let mut s = String::new();
    if let Some(since) = since_ns {
        s.push_str(&format!(
            " AND {column} >= toDateTime({})",
            since.div_euclid(1_000_000_000).max(0)
        ));
    }
    if let Some(until) = until_ns {
        let secs =
            until.div_euclid(1_000_000_000) + i64::from(until.rem_euclid(1_000_000_000) != 0);
        s.push_str(&format!(" AND {column} < toDateTime({})", secs.max(0)));
    }
    s
}

impl ChSource {
    fn client(&self) -> Client {
        Client::default()
            .with_url(&self.url)
            .with_database(&self.database)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_validation(false)
    }

    fn runtime(&self) -> Result<tokio::runtime::Runtime, ChError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ChError::Runtime)
    }

    /// Runs `sql` (a `SELECT raw_json ...`) and calls `on_line` with each row's text.
    pub fn lines(&self, sql: &str, on_line: &mut dyn FnMut(&[u8])) -> Result<(), ChError> {
        let rt = self.runtime()?;
        let client = self.client();
        let err = |source| ChError::Client {
            url: self.url.clone(),
            source,
        };
        let run = async {
            let mut cursor = client
                .query_raw(sql)
                .fetch_bytes("TabSeparatedRaw")
                .map_err(err)?;
            let mut carry: Vec<u8> = Vec::new();
            let mut overlong = false;
            while let Some(chunk) = cursor.next().await.map_err(err)? {
                let mut rest: &[u8] = &chunk;
                while let Some(i) = memchr::memchr(b'\n', rest) {
                    if !overlong {
                        if carry.is_empty() {
                            on_line(&rest[..i]);
                        } else {
                            carry.extend_from_slice(&rest[..i]);
                            on_line(&carry);
                        }
                    }
                    carry.clear();
                    overlong = false;
                    rest = &rest[i + 1..];
                }
                if carry.len() + rest.len() > MAX_LINE_BYTES {
                    overlong = true;
                    carry.clear();
                } else if !overlong {
                    carry.extend_from_slice(rest);
                }
            }
            Ok(())
        };
        rt.block_on(async {
            match tokio::time::timeout(self.timeout, run).await {
                Ok(r) => r,
                Err(_) => Err(ChError::TimedOut {
                    url: self.url.clone(),
                    timeout: self.timeout,
                }),
            }
        })
    }

    /// Lines of `http_logs` and events of `reqin_events` in a window.
    pub fn window(
        &self,
        since_ns: Option<i64>,
        until_ns: Option<i64>,
        on_line: &mut dyn FnMut(&[u8], Role),
    ) -> Result<(), ChError> {
        let logs = format!(
            "SELECT raw_json FROM http_logs WHERE 1{} ORDER BY time",
            window_sql("time", since_ns, until_ns)
        );
        self.lines(&logs, &mut |l| on_line(l, Role::Log))?;
        let events = format!(
            "SELECT raw_json FROM reqin_events WHERE 1{} ORDER BY event_time",
            window_sql("event_time", since_ns, until_ns)
        );
        self.lines(&events, &mut |l| on_line(l, Role::Events))
    }

    /// Every line and event of the connections `roots`, whatever their time.
    pub fn roots(
        &self,
        roots: &BTreeSet<String>,
        on_line: &mut dyn FnMut(&[u8], Role),
    ) -> Result<(), ChError> {
        let ids: Vec<String> = roots.iter().map(|r| quote(r)).collect();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let list = chunk.join(",");
            self.lines(
                &format!("SELECT raw_json FROM http_logs WHERE conn_id IN ({list})"),
                &mut |l| on_line(l, Role::Log),
            )?;
            self.lines(
                &format!("SELECT raw_json FROM reqin_events WHERE root_correlation_id IN ({list})"),
                &mut |l| on_line(l, Role::Events),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted_and_windows_widened_to_whole_seconds() {
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(
            window_sql("time", Some(1_500_000_000), Some(3_000_000_001)),
            " AND time >= toDateTime(1) AND time < toDateTime(4)"
        );
        assert_eq!(
            window_sql("t", None, Some(3_000_000_000)),
            " AND t < toDateTime(3)"
        );
    }
}
