//! Real parts for the shipper's tests: a private `clickhouse-server` (the workspace's fixture,
//! [`e2e_tests::clickhouse`]), the real shipper binary, and correlated log lines built with
//! correlate-lib's own field names, record and merge code.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use correlate_lib::join::merge_fields;
use correlate_lib::record::v4;
use correlate_lib::{fields, ConnKey, IpMeta, TcpMeta, TlsRecord};
pub use e2e_tests::clickhouse::{signal, ClickHouse};
use serde_json::Value;

pub const SHIPPER: &str = env!("CARGO_BIN_EXE_reqin-ship");

/// One correlated line as mod_reqin_log writes it: request fields, then the sensor's record merged
/// with correlate-lib's join rules. `n` makes it unique (time, client port, path).
pub fn correlated_line(n: u64) -> String {
    let base_us = 1_764_428_400_000_000u64 + n * 1000;
    let secs = base_us / 1_000_000;
    let micros = base_us % 1_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let time = format!("2025-11-29T{h:02}:{m:02}:{s:02}.{micros:06}Z");
    let port = 1024 + (n % 60_000) as u16;
    let client = v4(198, 51, 100, 7, port);
    let server = v4(192, 0, 2, 1, 443);
    let mut line: Vec<(String, Value)> = vec![
        (fields::TIME.into(), time.clone().into()),
        (fields::TIMESTAMP.into(), time.into()),
        (fields::SRC_IP.into(), "198.51.100.7".into()),
        (fields::SRC_PORT.into(), port.into()),
        (fields::DST_IP.into(), "192.0.2.1".into()),
        (fields::DST_PORT.into(), 443.into()),
        (fields::CORRELATED.into(), true.into()),
        (fields::KEEPALIVES.into(), 1.into()),
        // The module's ids: one connection per line here.
        (
            fields::CONN_ID.into(),
            format!("5eed5eed5eed5eed-{n:x}").into(),
        ),
        (
            fields::REQUEST_ID.into(),
            format!("5eed5eed5eed5eed-{n:x}-1").into(),
        ),
        (fields::SEQUENCE_NUMBER.into(), 1.into()),
        (fields::METHOD.into(), "GET".into()),
        (fields::SCHEME.into(), "https".into()),
        (fields::HOST.into(), "example.test".into()),
        (fields::PATH.into(), format!("/item/{n}").into()),
        (fields::QUERY.into(), "q=1".into()),
        (fields::HTTP_VERSION.into(), "HTTP/1.1".into()),
        (fields::STATUS.into(), 200.into()),
        (
            format!("{}User-Agent", fields::HEADER_PREFIX),
            "curl/8.0 \"quoted\" \\ é".into(),
        ),
    ];
    let hello_ns = base_us * 1000 + 5_000_000;
    let tls = TlsRecord {
        key: Some(ConnKey::new(client, server)),
        syn_time_ns: hello_ns - 12_000_000,
        hello_time_ns: hello_ns,
        closed_time_ns: 0,
        ip: Some(IpMeta {
            ttl: 64,
            total_length: 60,
            id: 4242,
            df: true,
        }),
        tcp: Some(TcpMeta {
            window_size: 64240,
            mss: 1460,
            window_scale: Some(7),
            options: "MSS,SACK,Timestamps,NOP,WScale".into(),
        }),
        tls_version: "1.3".into(),
        tls_sni: "example.test".into(),
        tls_alpn: "h2".into(),
        ja4: "t13d1516h2_8daaf6152771_e5627efa2ab1".into(),
        ja4_r: "t13d1516h2_002f,0035_0005,000a".into(),
        ja3: "771,4865-4866,0-23,29-23,0".into(),
        ja3_hash: "e7d705a3286e19ea42f587b344ee6865".into(),
        sensor_id: "test".into(),
        ..TlsRecord::default()
    };
    merge_fields(&mut line, tls.json_fields(), base_us * 1000);
    let obj: serde_json::Map<String, Value> = line.into_iter().collect();
    serde_json::to_string(&obj).unwrap()
}

/// A request the sensor saw no handshake for, as the module logs it.
pub fn orphan_line(n: u64) -> String {
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(&correlated_line(n)).unwrap();
    v.retain(|k, _| {
        ![fields::JA4, fields::JA3, fields::JA3_HASH, fields::TLS_SNI].contains(&k.as_str())
    });
    v.insert(fields::CORRELATED.into(), false.into());
    v.insert(fields::ORPHAN_SIDE.into(), "A".into());
    serde_json::to_string(&v).unwrap()
}

/// Appends lines `from..to` to `path`.
pub fn append_lines(path: &Path, from: u64, to: u64) {
    let mut out = String::new();
    for n in from..to {
        out.push_str(&correlated_line(n));
        out.push('\n');
    }
    append(path, out.as_bytes());
}

pub fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// One line of web server `server` of a fleet (its own id space): `request_id` per the contract
/// (`<conn_id>-<sequence_number>`, four requests per connection) and clients spread over 250
/// addresses, so the sharding key spreads them. Built from one correlated line by substitution:
/// hundreds of thousands of them are written by a debug build.
pub fn fleet_line(server: &str, n: u64) -> String {
    static TEMPLATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let mut v: serde_json::Map<String, Value> =
            serde_json::from_str(&correlated_line(0)).unwrap();
        for (k, marker) in [
            (fields::SRC_IP, "@SRC@"),
            (fields::REQUEST_ID, "@RID@"),
            (fields::CONN_ID, "@CONN@"),
            (fields::HOST, "@HOST@"),
            (fields::PATH, "@PATH@"),
            (fields::TIME, "@TIME@"),
            (fields::TIMESTAMP, "@TIME@"),
        ] {
            v.insert(k.into(), marker.into());
        }
        v.insert(fields::SEQUENCE_NUMBER.into(), 999_999.into());
        serde_json::to_string(&v).unwrap()
    });
    let conn_id = format!("{server}-{:x}", n / 4);
    let seq = n % 4 + 1;
    let secs = 1_764_428_400 + n / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    template
        .replace("@SRC@", &format!("198.51.100.{}", n % 250))
        .replace("@RID@", &format!("{conn_id}-{seq}"))
        .replace("@CONN@", &conn_id)
        .replace("@HOST@", &format!("{server}.example.test"))
        .replace("@PATH@", &format!("/item/{n}"))
        .replace(
            "@TIME@",
            &format!("2025-11-29T{h:02}:{m:02}:{s:02}.{:06}Z", (n % 1000) * 1000),
        )
        .replace("999999", &seq.to_string())
}

/// One event of the detector as its `jsonl` listener writes it (CONTRACTS.md), `n` unique. Its
/// `data` object carries keys that are also top-level keys (`ja4`, `time`), with other values.
pub fn event_line(n: u64) -> String {
    let secs = 1_764_428_400 + n;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let time = format!("2025-11-29T{h:02}:{m:02}:{s:02}.000042Z");
    let mut data = serde_json::Map::new();
    data.insert("ja4".into(), "NESTED_ja4_not_the_event_s".into());
    data.insert("time".into(), "1999-01-01T00:00:00Z".into());
    data.insert("count".into(), n.into());
    data.insert("note".into(), "braces } { and \"quotes\"".into());
    let mut tags = serde_json::Map::new();
    tags.insert("investigation_id".into(), format!("INC-{n}").into());
    let pairs: Vec<(&str, Value)> = vec![
        (fields::CORRELATION_TAGS, tags.into()),
        (fields::EVENT_DATA, data.into()),
        (fields::EVENT_EMITTED, "2026-12-01T00:00:00.000000Z".into()),
        (fields::EVENT_ID, format!("ev-{n:08}").into()),
        (fields::HOST, "example.test".into()),
        (fields::JA4, "t13d1516h2_8daaf6152771_e5627efa2ab1".into()),
        (fields::EVENT_KIND, "event".into()),
        (fields::EVENT_MODULE, "fingerprint_mismatch".into()),
        (fields::PARENT_CORRELATION_ID, format!("conn{n}-1").into()),
        (fields::ROOT_CORRELATION_ID, format!("conn{n}").into()),
        (fields::EVENT_RULE, "ua_vs_ja4".into()),
        (fields::EVENT_SEVERITY, "warning".into()),
        (fields::SRC_IP, format!("203.0.113.{}", n % 200).into()),
        (
            fields::EVENT_SUMMARY,
            format!("Chrome UA with a curl JA4 #{n}").into(),
        ),
        (fields::EVENT_TIME, time.into()),
        (
            fields::EVENT_TIME_NS,
            (secs * 1_000_000_000 + 42_000).into(),
        ),
        (fields::EVENT_TYPE, "FingerprintMismatch".into()),
    ];
    let obj: serde_json::Map<String, Value> =
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    serde_json::to_string(&obj).unwrap()
}

/// A shipper configuration in `dir` following `pattern`.
pub struct ShipSetup {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub metrics_port: u16,
    pub checkpoint: PathBuf,
    pub dead_letters: PathBuf,
}

impl ShipSetup {
    pub fn new(dir: &Path, ch: &ClickHouse, pattern: &str, extra_clickhouse: &str) -> Self {
        Self::with_checkpoint(
            dir,
            ch,
            pattern,
            extra_clickhouse,
            &dir.join("ship.checkpoint"),
        )
    }

    pub fn with_checkpoint(
        dir: &Path,
        ch: &ClickHouse,
        pattern: &str,
        extra_clickhouse: &str,
        checkpoint: &Path,
    ) -> Self {
        Self::full(dir, &ch.url(), pattern, extra_clickhouse, "", checkpoint)
    }

    /// Every knob: `url` of the first server, more `clickhouse:` keys, more `ship:` keys.
    pub fn full(
        dir: &Path,
        url: &str,
        pattern: &str,
        extra_clickhouse: &str,
        extra_ship: &str,
        checkpoint: &Path,
    ) -> Self {
        let metrics_port = e2e_tests::free_port().unwrap();
        let dead_letters = dir.join("ship.deadletter");
        let config = dir.join("config.yml");
        let text = format!(
            "core:\n  interface: lo\nship:\n  clickhouse:\n    url: {url}\n{extra_clickhouse}  retry:\n    initial_ms: 50\n    max_ms: 1000\n  input:\n    path: {pattern:?}\n  checkpoint_path: {:?}\n  dead_letter_path: {:?}\n  metrics:\n    addr: 127.0.0.1:{metrics_port}\n    log_interval_s: 2\n  log_level: info\n{extra_ship}",
            checkpoint.display().to_string(),
            dead_letters.display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        Self {
            dir: dir.to_owned(),
            config,
            metrics_port,
            checkpoint: checkpoint.to_owned(),
            dead_letters,
        }
    }

    pub fn init_schema(&self) -> String {
        let out = Command::new(SHIPPER)
            .arg("--config")
            .arg(&self.config)
            .arg("--init-schema")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "init-schema failed: {log}");
        log
    }

    pub fn spawn(&self) -> Shipper {
        let log = self.dir.join("shipper.log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(SHIPPER)
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Shipper {
            child: Some(child),
            log,
            metrics_port: self.metrics_port,
        }
    }
}

/// The shipper process, killed (-9) on drop.
pub struct Shipper {
    child: Option<Child>,
    pub log: PathBuf,
    metrics_port: u16,
}

impl Shipper {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the graceful stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the metrics endpoint: (status, body); None while it is not up.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let status = resp.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, resp.split_once("\r\n\r\n")?.1.to_owned()))
    }

    /// A counter or gauge from `/metrics`.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let (_, body) = self.get("/metrics")?;
        let key = format!("reqin_ship_{name} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// utime + stime of a process and its threads, seconds (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Small deterministic PRNG (xorshift64*) for kill points: the seed is printed so a failure can
/// be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn from_time() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("rng seed {seed}");
        Self(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
