//! A private `clickhouse-server` (Debian's package, `make deps`) on free loopback ports, its
//! config in a temp dir, killed on drop: the fixture of the shipper's tests and of the query
//! crate's SQL tests. HTTP/1.0 requests by hand: no client library to trust.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    crate::free_port().expect("a free loopback port")
}

/// The server starts in well under a second; a loaded CI machine gets more.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server gets for its clean shutdown before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

fn server_binary() -> PathBuf {
    for p in [
        "/usr/bin/clickhouse-server",
        "/usr/sbin/clickhouse-server",
        "/usr/bin/clickhouse",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("clickhouse-server is not installed: run `make deps`");
}

/// A private ClickHouse server, killed on drop.
pub struct ClickHouse {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub tcp_port: u16,
    interserver_port: u16,
    /// `<remote_servers>` of a cluster this server belongs to.
    remote_servers: String,
    child: Option<Child>,
}

/// The name of the test cluster in every node's `remote_servers`.
pub const CLUSTER: &str = "reqin";

impl ClickHouse {
    pub fn start() -> Self {
        let mut ch = Self::unstarted();
        ch.write_config();
        ch.spawn();
        ch
    }

    fn unstarted() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            http_port: free_port(),
            tcp_port: free_port(),
            interserver_port: free_port(),
            remote_servers: String::new(),
            child: None,
        }
    }

    /// `shards` servers, each its own process and data directory, each knowing all of them as
    /// cluster [`CLUSTER`] (one replica per shard) in its `remote_servers`.
    pub fn start_cluster(shards: usize) -> Vec<Self> {
        let mut nodes: Vec<Self> = (0..shards).map(|_| Self::unstarted()).collect();
        let shard_xml: String = nodes
            .iter()
            .map(|n| {
                format!(
                    "<shard><replica><host>127.0.0.1</host><port>{}</port></replica></shard>",
                    n.tcp_port
                )
            })
            .collect();
        let remote = format!("<remote_servers><{CLUSTER}>{shard_xml}</{CLUSTER}></remote_servers>");
        for n in &mut nodes {
            n.remote_servers = remote.clone();
            n.write_config();
            n.spawn();
        }
        nodes
    }

    /// SIGTERM, then SIGKILL if it is still there after [`STOP_TIMEOUT`] (as systemd's
    /// `TimeoutStopSec` would): 18.16's clean shutdown stops listening at once but goes on
    /// serving a client that keeps its keep-alive connection busy, and exits only once that
    /// client pauses; the stop must not wait for the client it tests.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let t0 = Instant::now();
            while t0.elapsed() < STOP_TIMEOUT {
                if !matches!(c.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The same binary on the same data directory and ports, after [`Self::stop`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        self.spawn();
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let config = format!(
            r#"<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <http_port>{}</http_port>
  <tcp_port>{}</tcp_port>
  <interserver_http_port>{}</interserver_http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>104857600</mark_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
  {}
</yandex>
"#,
            self.http_port, self.tcp_port, self.interserver_port, self.remote_servers
        );
        std::fs::write(self.dir.path().join("config.xml"), config).unwrap();
        let users = r#"<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"#;
        std::fs::write(self.dir.path().join("users.xml"), users).unwrap();
    }

    fn spawn(&mut self) {
        let bin = server_binary();
        let mut cmd = Command::new(&bin);
        if bin.ends_with("clickhouse") {
            cmd.arg("server");
        }
        let child = cmd
            .arg(format!(
                "--config-file={}/config.xml",
                self.dir.path().display()
            ))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < START_TIMEOUT {
            if let Ok((200, body)) = self.http("GET", "/ping", "") {
                if body.starts_with("Ok") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("clickhouse-server did not answer /ping within {START_TIMEOUT:?}");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Freezes the server (SIGSTOP): it accepts TCP connections but answers nothing.
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn thaw(&self) {
        signal(self.pid(), "CONT");
    }

    /// kill -9, then the same binary on the same data directory and ports.
    pub fn crash_and_restart(&mut self, down_for: Duration) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        std::thread::sleep(down_for);
        self.spawn();
    }

    /// One HTTP/1.0 request (no chunked answers to decode): (status, body, not valid UTF-8
    /// replaced).
    fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        self.http_bytes(method, path, body.as_bytes())
    }

    fn http_bytes(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port))?;
        s.set_read_timeout(Some(Duration::from_secs(300)))?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let resp = String::from_utf8_lossy(&resp);
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// `INSERT ... FORMAT ...` with `data` as the body, as the shipper sends it but with no
    /// shipper around: the baseline of the throughput benchmark.
    pub fn insert(&self, sql: &str, data: &str) {
        self.insert_bytes(sql, data.as_bytes());
    }

    /// The same with a binary body (`FORMAT RowBinary`).
    pub fn insert_bytes(&self, sql: &str, data: &[u8]) {
        let mut url = String::from("/?wait_end_of_query=1&query=");
        for b in sql.bytes() {
            if b.is_ascii_alphanumeric() {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        let (status, body) = self.http_bytes("POST", &url, data).unwrap();
        assert_eq!(status, 200, "{sql}: {body}");
    }

    pub fn pid_or_zero(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Runs `sql`; panics on a ClickHouse error. Answers in TSV.
    pub fn query(&self, sql: &str) -> String {
        let (status, body) = self.http("POST", "/", sql).unwrap();
        assert_eq!(status, 200, "{sql}: {body}");
        body.trim().to_owned()
    }

    /// Rows and distinct lines in the shipper's `http_logs_raw`.
    pub fn count_and_unique(&self) -> (u64, u64) {
        let r = self.query("SELECT count(), uniqExact(raw_json) FROM http_logs_raw");
        let (a, b) = r.split_once('\t').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A frozen server must be thawed to die cleanly; SIGKILL works either way.
            signal(c.id(), "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `kill -<sig> <pid>`; panics if it fails.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}
