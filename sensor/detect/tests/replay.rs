//! The engine over a log built so that the events it must raise are known by construction
//! (not taken from the program's output): `--replay` of a rotated `.gz` file and the live
//! file, with the `exec` listener running a real program per event (`tee -a`) and the `csv`
//! listener writing audit events. Then the follower: a restart neither re-reads nor skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ja4sensor_detect::config::DetectConfig;

/// JA4s of the shipped client map (sensor/detect/data/clients.csv): curl's and Chromium's.
const CURL_JA4: &str = "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6";
const CHROMIUM_JA4: &str = "t13d1517h2_8daaf6152771_cb7bf5808d99";
const CHROME_WIN_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const CHROME_LINUX_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const T0_MS: u64 = 1_795_592_400_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[allow(clippy::too_many_arguments)]
fn line(ms: u64, ip: &str, path: &str, status: u16, ua: &str, ja4: Option<&str>, n: u64) -> String {
    let mut o = serde_json::json!({
        "time": rfc3339(ms), "timestamp": rfc3339(ms), "src_ip": ip, "src_port": 40000 + n % 20000,
        "dst_ip": "192.0.2.1", "dst_port": 443, "method": "GET", "host": "www.example.test",
        "path": path, "status": status, "header_User-Agent": ua, "ip_meta_ttl": 61,
        "conn_id": format!("c{n}"), "request_id": format!("c{n}-1"), "keepalives": 1,
        "tag_case": "INC-7", "correlated": ja4.is_some(),
    });
    if let Some(j) = ja4 {
        o["ja4"] = j.into();
    }
    o.to_string()
}

/// The log and what it must raise.
struct Built {
    rotated: Vec<String>,
    live: Vec<String>,
    expected: BTreeMap<&'static str, u64>,
    distinct_ja4: u64,
}

fn build_log() -> Built {
    let mut lines = Vec::new();
    let mut n = 0u64;
    let mut push = |lines: &mut Vec<String>, ms, ip: &str, path: &str, status, ua: &str, ja4| {
        n += 1;
        lines.push(line(T0_MS + ms, ip, path, status, ua, ja4, n));
    };
    // 1. 7 requests claiming Chrome on Windows over curl's handshake from a Linux TTL: one
    //    FingerprintMismatch each.
    for i in 0..7 {
        push(
            &mut lines,
            i,
            "198.51.100.1",
            "/",
            200,
            CHROME_WIN_UA,
            Some(CURL_JA4),
        );
    }
    // 2. 20 honest requests: curl claiming curl, Chromium on Linux claiming Chrome on Linux.
    for i in 0..10 {
        push(
            &mut lines,
            100 + i,
            "198.51.100.2",
            "/",
            200,
            "curl/7.88.1",
            Some(CURL_JA4),
        );
        push(
            &mut lines,
            100 + i,
            "198.51.100.3",
            "/",
            200,
            CHROME_LINUX_UA,
            Some(CHROMIUM_JA4),
        );
    }
    // 3. The threshold rule (5 × /login with a 4xx inside 1 s, quiet 2 s): 12 failed logins
    //    10 ms apart from .9 trip it once; 4 from .8 never; after 3 s of quiet, 5 more from .9
    //    trip it again; 200s on /login never count.
    for i in 0..12 {
        push(
            &mut lines,
            1_000 + i * 10,
            "198.51.100.9",
            "/login",
            401,
            "curl/7.88.1",
            Some(CURL_JA4),
        );
        push(
            &mut lines,
            1_000 + i * 10,
            "198.51.100.7",
            "/login",
            200,
            "curl/7.88.1",
            Some(CURL_JA4),
        );
    }
    for i in 0..4 {
        push(
            &mut lines,
            1_000 + i * 10,
            "198.51.100.8",
            "/login",
            403,
            "curl/7.88.1",
            Some(CURL_JA4),
        );
    }
    for i in 0..5 {
        push(
            &mut lines,
            4_200 + i * 10,
            "198.51.100.9",
            "/login",
            401,
            "curl/7.88.1",
            Some(CURL_JA4),
        );
    }
    // 4. Three JA4s nobody has seen (new_fingerprint), one with a User-Agent that needs CSV
    //    quoting; orphans without a JA4 (no mismatch check, no fingerprint).
    let odd_ua = "Weird, \"quoted\" agent/1.0";
    for (i, j) in [
        "t13d0101h2_aaaaaaaaaaaa_bbbbbbbbbbbb",
        "t13d0202h2_aaaaaaaaaaaa_cccccccccccc",
    ]
    .iter()
    .enumerate()
    {
        push(
            &mut lines,
            5_000 + i as u64,
            "198.51.100.4",
            "/x",
            200,
            odd_ua,
            Some(j),
        );
    }
    for i in 0..3 {
        push(
            &mut lines,
            5_100 + i,
            "198.51.100.5",
            "/",
            200,
            CHROME_WIN_UA,
            None,
        );
    }
    push(
        &mut lines,
        5_200,
        "198.51.100.6",
        "/",
        200,
        odd_ua,
        Some("t13d0303h2_aaaaaaaaaaaa_dddddddddddd"),
    );
    // 5. Garbage: counted, raises nothing.
    lines.insert(10, "not json at all".into());
    lines.insert(20, "[1,2,3]".into());
    let split = lines.len() / 2;
    let live = lines.split_off(split);
    let mut expected = BTreeMap::new();
    expected.insert("FingerprintMismatch", 7);
    expected.insert("ThresholdExceeded", 2);
    // curl's, Chromium's and the three unknown ones.
    expected.insert("NewFingerprint", 5);
    // One per module at the end of the replay (the interval is an hour).
    expected.insert("ModuleStats", 4);
    Built {
        rotated: lines,
        live,
        expected,
        distinct_ja4: 5,
    }
}

fn config(dir: &Path, extra_listeners: &str) -> DetectConfig {
    let text = format!(
        r#"
detect:
  stats_interval_s: 3600
  clients: [{clients}]
  metrics: {{enabled: false}}
  checkpoint_path: {dir}/detect.checkpoint
  input: {{path: "{dir}/reqin.log*", start_at: beginning, poll_interval_ms: 20}}
  modules:
    new_fingerprint: {{state_path: {dir}/fingerprints}}
    threshold:
      rules:
        - name: login-failures
          key: [src_ip]
          count: 5
          window_ms: 1000
          quiet_ms: 2000
          when:
            - {{field: path, prefix: /login}}
            - {{field: status, status_class: 4xx}}
  listeners:
{extra_listeners}
"#,
        clients = workspace().join("sensor/detect/data/clients.csv").display(),
        dir = dir.display(),
    );
    let cfg = DetectConfig::parse(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

fn write_log(dir: &Path, b: &Built) {
    let gz = dir.join("reqin.log.2.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for l in &b.rotated {
        writeln!(e, "{l}").unwrap();
    }
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&gz)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let text: String = b.live.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("reqin.log"), text).unwrap();
}

fn count_by_type(jsonl: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for l in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        *m.entry(v["type"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    m
}

fn expected_strings(b: &Built) -> BTreeMap<String, u64> {
    b.expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect()
}

#[test]
fn exec_and_csv_listeners_get_exactly_the_events_the_log_was_built_to_raise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b = build_log();
    write_log(d, &b);
    let out = d.join("exec.jsonl");
    let csv_dir = d.join("audit");
    std::fs::create_dir(&csv_dir).unwrap();
    let listeners = format!(
        "    - {{type: exec, command: [/usr/bin/tee, -a, {}], max_concurrency: 1}}\n    - {{type: csv, path: {}}}\n",
        out.display(),
        csv_dir.display()
    );
    let cfg = config(d, &listeners);
    let summary =
        ja4sensor_detect::replay(&cfg, &[format!("{}/reqin.log*", d.display())], false).unwrap();
    assert_eq!(summary.files, 2, "the .gz rotation and the live file");
    assert_eq!(summary.lines, (b.rotated.len() + b.live.len()) as u64);
    assert_eq!(summary.malformed, 2);
    let want = expected_strings(&b);
    assert_eq!(summary.events, want);
    // The program ran once per event, each got one whole event on stdin.
    let got = count_by_type(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(got, want);
    // Every event carries its line's ids and tags.
    for l in std::fs::read_to_string(&out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["kind"] == "event" {
            assert!(
                v["parent_correlation_id"].as_str().unwrap().ends_with("-1"),
                "{v}"
            );
            assert!(
                v["root_correlation_id"].as_str().unwrap().starts_with('c'),
                "{v}"
            );
            assert_eq!(v["correlation_tags"]["case"], "INC-7");
        }
    }
    // CSV: one file per audit type, a header, one row per audit event, RFC 4180 quoting.
    let mut files: Vec<String> = std::fs::read_dir(&csv_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["ModuleStats.csv", "NewFingerprint.csv"]);
    let mut r = csv::Reader::from_path(csv_dir.join("NewFingerprint.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(&header[..2], ["time", "event_id"]);
    assert!(header.ends_with(&[
        "ja4".into(),
        "ja4_client".into(),
        "src_ip".into(),
        "host".into(),
        "user_agent".into(),
        "tcp_os".into(),
        "first_seen".into()
    ]));
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len() as u64, b.distinct_ja4);
    let ua_col = header.iter().position(|h| h == "user_agent").unwrap();
    let client_col = header.iter().position(|h| h == "ja4_client").unwrap();
    assert!(
        rows.iter()
            .any(|r| &r[ua_col] == "Weird, \"quoted\" agent/1.0"),
        "quoted field read back whole"
    );
    let clients: Vec<&str> = rows.iter().map(|r| &r[client_col]).collect();
    assert_eq!(
        clients,
        ["curl", "chromium", "unknown", "unknown", "unknown"]
    );
    let stats = csv::Reader::from_path(csv_dir.join("ModuleStats.csv"))
        .unwrap()
        .records()
        .count();
    assert_eq!(stats, 4);
}

#[test]
fn exec_listener_counts_failures_and_kills_programs_past_their_timeout() {
    use ja4sensor_detect::listeners::exec::ExecListener;
    use ja4sensor_detect::listeners::{Dispatched, Listener};
    let ev = ja4sensor_detect::event::Event::new(
        ja4sensor_detect::event::Severity::Warning,
        "T",
        "threshold",
        "r",
        "s".into(),
        vec![],
        &ja4sensor_detect::event::Context::default(),
    );
    let d = Dispatched {
        event: &ev,
        id: "x",
        json: "{}",
    };
    let mut slow = ExecListener::start(
        &["/bin/sleep".into(), "5".into()],
        2,
        Duration::from_millis(100),
        10,
        true,
    )
    .unwrap();
    let mut fails =
        ExecListener::start(&["/bin/false".into()], 2, Duration::from_secs(5), 10, true).unwrap();
    let mut missing = ExecListener::start(
        &["/nonexistent/hook".into()],
        1,
        Duration::from_secs(5),
        10,
        true,
    )
    .unwrap();
    let t = Instant::now();
    for _ in 0..2 {
        slow.handle(&d).unwrap();
        fails.handle(&d).unwrap();
        missing.handle(&d).unwrap();
    }
    slow.finish().unwrap();
    fails.finish().unwrap();
    missing.finish().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "the sleeps were killed, not waited for"
    );
    assert_eq!(slow.counts(), (2, 0, 0, 2));
    assert_eq!(fails.counts(), (2, 0, 2, 0));
    assert_eq!(missing.counts().0, 0);
    let spawn_errors = missing
        .metrics()
        .into_iter()
        .find(|m| m.name.starts_with("exec_spawn_errors"))
        .unwrap()
        .value;
    assert_eq!(spawn_errors, 2);
}

/// A config whose one listener writes the mismatch events to the `events.jsonl` it returns: one
/// per line of [`mismatch_line`].
fn mismatch_config(d: &Path) -> (DetectConfig, PathBuf) {
    let events = d.join("events.jsonl");
    let listeners = format!(
        "    - {{type: jsonl, path: {}, types: [FingerprintMismatch]}}\n",
        events.display()
    );
    (config(d, &listeners), events)
}

/// Line `n` of a client claiming Chrome on Windows over curl's handshake: one
/// FingerprintMismatch, its parent `c<n>-1`.
fn mismatch_line(n: u64) -> String {
    line(
        T0_MS + n,
        "198.51.100.1",
        "/",
        200,
        CHROME_WIN_UA,
        Some(CURL_JA4),
        n,
    )
}

/// Appends lines `ns` of [`mismatch_line`] to `log`.
fn append_mismatch_lines(log: &Path, ns: std::ops::Range<u64>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    for n in ns {
        writeln!(f, "{}", mismatch_line(n)).unwrap();
    }
}

/// Lines in `events` so far (0 while it does not exist).
fn event_count(events: &Path) -> usize {
    std::fs::read_to_string(events)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The `parent_correlation_id` of every event in `events`, in order.
fn event_parents(events: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(events).unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["parent_correlation_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Runs the follower until `events` holds `want` lines (or 20 s), then stops it.
fn follow_until_events(cfg: &DetectConfig, events: &Path, want: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let hup = AtomicBool::new(false);
    std::thread::scope(|s| {
        let stopper = Arc::clone(&stop);
        let h = s.spawn(|| ja4sensor_detect::follow_until(cfg, &stop, &hup));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = event_count(events);
            if n >= want || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let it go round once more: anything beyond `want` would show up.
        std::thread::sleep(Duration::from_millis(200));
        stopper.store(true, Ordering::Relaxed);
        h.join().unwrap().unwrap();
    });
}

#[test]
fn a_restarted_follower_neither_rereads_nor_skips_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cfg, events) = mismatch_config(d);
    let log = d.join("reqin.log");
    append_mismatch_lines(&log, 0..300);
    follow_until_events(&cfg, &events, 300);
    append_mismatch_lines(&log, 300..420);
    // A partial last line is not read until its newline arrives.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"{\"src_ip\":")
        .unwrap();
    follow_until_events(&cfg, &events, 420);
    let ids = event_parents(&events);
    assert_eq!(ids.len(), 420, "every line once");
    let want: Vec<String> = (0..420).map(|n| format!("c{n}-1")).collect();
    assert_eq!(ids, want, "in order, none twice, none skipped");
}

#[test]
fn at_the_very_first_start_existing_lines_are_history_with_start_at_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut cfg, events) = mismatch_config(d);
    cfg.input.start_at = ja4sensor_detect::config::StartAt::End;
    let log = d.join("reqin.log");
    append_mismatch_lines(&log, 0..50);
    // Runs until the checkpoint exists (it is saved at once, at the end of the files).
    let stop = Arc::new(AtomicBool::new(false));
    let hup = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| ja4sensor_detect::follow_until(&cfg, &stop, &hup));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cfg.checkpoint_path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // New lines after the start are read.
        append_mismatch_lines(&log, 50..60);
        let deadline = Instant::now() + Duration::from_secs(20);
        while event_count(&events) < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap().unwrap();
    });
    let ids = event_parents(&events);
    let want: Vec<String> = (50..60).map(|n| format!("c{n}-1")).collect();
    assert_eq!(ids, want, "only the lines written after the first start");
}

#[test]
fn the_service_serves_its_counters_on_metrics() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The events go to a file nobody reads here: the counters are what is looked at.
    let (mut cfg, _events) = mismatch_config(d);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.metrics.enabled = true;
    cfg.metrics.addr = format!("127.0.0.1:{port}");
    let log = d.join("reqin.log");
    let mut f = std::fs::File::create(&log).unwrap();
    for n in 0..40 {
        writeln!(f, "{}", mismatch_line(n)).unwrap();
    }
    writeln!(f, "garbage").unwrap();
    drop(f);
    let stop = Arc::new(AtomicBool::new(false));
    let hup = AtomicBool::new(false);
    let text = std::thread::scope(|s| {
        let h = s.spawn(|| ja4sensor_detect::follow_until(&cfg, &stop, &hup));
        let get = || -> Option<String> {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut out = String::new();
            c.read_to_string(&mut out).ok()?;
            Some(out)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut text = String::new();
        while Instant::now() < deadline {
            text = get().unwrap_or_default();
            if text.contains("ja4sensor_detect_lines_total 41") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap().unwrap();
        text
    });
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for want in [
        "ja4sensor_detect_lines_total 41",
        "ja4sensor_detect_malformed_lines_total 1",
        "ja4sensor_detect_events_total{type=\"FingerprintMismatch\"} 40",
        "ja4sensor_detect_module_lines_total{module=\"fingerprint_mismatch\"} 40",
        "ja4sensor_detect_fingerprint_mismatch_client_mismatches_total 40",
        "ja4sensor_detect_report_orphans_total 0",
        "ja4sensor_detect_listener_events_written_total{listener=\"jsonl:",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}
