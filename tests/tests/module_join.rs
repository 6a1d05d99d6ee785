//! mod_reqin_log's join rules (DESIGN.md "Join rules"), end to end: real httpd, the real sensor
//! on `lo`, real clients (curl, h2load).

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use e2e_tests::*;
use serde_json::Value;

const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every column of seed 001's `http_logs` that a correlated TLS line must fill.
const SEED_STRING_FIELDS: &[&str] = &[
    "time",
    "timestamp",
    "src_ip",
    "dst_ip",
    "method",
    "scheme",
    "host",
    "path",
    "query",
    "http_version",
    "conn_id",
    "tcp_meta_options",
    "tls_version",
    "tls_sni",
    "ja3",
    "ja3_hash",
    "ja4",
];
const SEED_NUMBER_FIELDS: &[&str] = &[
    "src_port",
    "dst_port",
    "keepalives",
    "a_timestamp",
    "b_timestamp",
    "ip_meta_id",
    "ip_meta_total_length",
    "ip_meta_ttl",
    "tcp_meta_window_size",
    "syn_to_clienthello_ms",
    "status",
    "bytes_sent",
    "duration_us",
];

fn keepalives(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.get("keepalives").and_then(Value::as_u64))
        .collect()
}

#[test]
fn keepalive_requests_share_one_handshake() -> Result<()> {
    let stack = Stack::start("event", "JsonSockLogHeaders User-Agent\n")?;
    let h = &stack.httpd;
    let url = format!("https://localhost:{}/", h.tls_port);
    let resolve = format!("localhost:{}:127.0.0.1", h.tls_port);
    let ports = curl(
        &["--http1.1", "--resolve", &resolve, "-A", "reqin-e2e"],
        &[url.clone(), url.clone() + "index.html?x=1", url],
    )?;
    assert!(ports.iter().all(|p| *p == ports[0]), "one connection");
    let lines = wait_lines_for_ports(h, &ports[..1], LINE_TIMEOUT)?;
    let lines = wait_for(LINE_TIMEOUT, "three lines", || {
        let l = lines_for_port(&h.log_lines().ok()?, ports[0]);
        (l.len() == 3).then_some(l)
    })
    .map_err(|e| format!("{e}: {lines:?}"))?;
    assert_eq!(keepalives(&lines), vec![1, 2, 3]);
    let ja4 = str_field(&lines[0], "ja4")?.to_owned();
    for line in &lines {
        assert!(bool_field(line, "correlated")?, "{line}");
        assert_eq!(
            str_field(line, "ja4")?,
            ja4,
            "one handshake for all: {line}"
        );
        for f in SEED_STRING_FIELDS {
            str_field(line, f)?;
        }
        for f in SEED_NUMBER_FIELDS {
            u64_field(line, f)?;
        }
        assert!(
            line.get("ip_meta_df").and_then(Value::as_bool).is_some(),
            "{line}"
        );
        assert_eq!(str_field(line, "header_User-Agent")?, "reqin-e2e");
        assert!(
            str_field(line, "timestamp")?.ends_with('Z'),
            "RFC 3339: {line}"
        );
        // a_timestamp is the request, b_timestamp the ClientHello, which came first.
        assert!(u64_field(line, "a_timestamp")? >= u64_field(line, "b_timestamp")?);
    }
    assert_eq!(str_field(&lines[1], "query")?, "x=1");
    assert_eq!(str_field(&lines[0], "host")?, "localhost");
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn one_to_one_joins_only_the_first_request() -> Result<()> {
    let stack = Stack::start("event", "ReqinLogMatchMode one_to_one\n")?;
    let h = &stack.httpd;
    let url = h.https_url("/");
    let ports = curl(&["--http1.1"], &[url.clone(), url.clone(), url])?;
    let lines = wait_for(LINE_TIMEOUT, "three lines", || {
        let l = lines_for_port(&h.log_lines().ok()?, ports[0]);
        (l.len() == 3).then_some(l)
    })?;
    assert_eq!(keepalives(&lines), vec![1, 2, 3]);
    assert!(bool_field(&lines[0], "correlated")?, "{}", lines[0]);
    for line in &lines[1..] {
        assert!(!bool_field(line, "correlated")?, "{line}");
        assert_eq!(str_field(line, "orphan_side")?, "A");
        assert!(line.get("ja4").is_none());
    }
    Ok(())
}

#[test]
fn http2_streams_join_via_the_primary_connection() -> Result<()> {
    let stack = Stack::start("event", "")?;
    let h = &stack.httpd;
    let urls: Vec<String> = (0..4).map(|i| h.https_url(&format!("/?s={i}"))).collect();
    let ports = curl(&["--http2"], &urls)?;
    assert!(ports.iter().all(|p| *p == ports[0]), "one connection");
    let lines = wait_for(LINE_TIMEOUT, "four h2 lines", || {
        let l = lines_for_port(&h.log_lines().ok()?, ports[0]);
        (l.len() == 4).then_some(l)
    })?;
    let ka: BTreeSet<u64> = keepalives(&lines).into_iter().collect();
    assert_eq!(
        ka,
        (1..=4).collect(),
        "streams numbered on their connection"
    );
    for line in &lines {
        assert!(bool_field(line, "correlated")?, "{line}");
        assert_eq!(str_field(line, "http_version")?, "HTTP/2.0");
        assert_eq!(str_field(line, "tls_alpn")?, "h2");
        assert_eq!(str_field(line, "scheme")?, "https");
    }

    // h2load: 20 requests, 10 concurrent streams, one connection.
    let before = h.log_lines()?.len();
    let out = std::process::Command::new("h2load")
        .args(["-n", "20", "-c", "1", "-m", "10", &h.https_url("/")])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("20 succeeded"), "{text}");
    let lines = h.wait_log_lines(before + 20)?;
    let new = &lines[before..];
    let port = u64_field(&new[0], "src_port")?;
    let ka: BTreeSet<u64> = new
        .iter()
        .filter(|l| l["src_port"] == port)
        .filter_map(|l| l["keepalives"].as_u64())
        .collect();
    assert_eq!(ka, (1..=20).collect(), "{new:?}");
    for line in new {
        assert!(bool_field(line, "correlated")?, "{line}");
        assert_eq!(line["src_port"], port, "one connection");
    }
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn reused_client_port_never_joins_old_handshake() -> Result<()> {
    // A 1 s window and a 1.5 s pause between the two connections: the old handshake is rejected
    // by the window even without the sensor's close time, and by the close time within it.
    let stack = Stack::start("event", "ReqinLogTimeWindow 1s\n")?;
    let h = &stack.httpd;
    // The client port must be bindable again for the second connection. If curl's own close
    // raced the server's and left the port in TIME_WAIT, curl cannot bind it (exit 45): start
    // over on another port rather than wait out TIME_WAIT.
    let mut attempt = 0;
    let (first, lines) = loop {
        attempt += 1;
        let local = free_port()?;
        let lp = local.to_string();
        // `Connection: close`: the server closes first, so the client's port is normally free.
        let common = ["--http1.1", "-H", "Connection: close", "--local-port", &lp];
        let mut first_args = common.to_vec();
        first_args.extend(["--tls-max", "1.2"]);
        let p1 = curl(&first_args, &[h.https_url("/")])?;
        assert_eq!(p1, vec![local]);
        let first = wait_lines_for_ports(h, &[local], LINE_TIMEOUT)?;
        let first = lines_for_port(&first, local);
        assert!(
            str_field(&first[0], "ja4")?.starts_with("t12"),
            "{}",
            first[0]
        );

        thread::sleep(Duration::from_millis(1500));
        match curl(&common, &[h.https_url("/index.html")]) {
            Ok(p2) => assert_eq!(p2, vec![local], "the client port was reused"),
            Err(e) if attempt < 5 && e.to_string().contains("exit status: 45") => continue,
            Err(e) => return Err(e),
        }
        let lines = wait_for(LINE_TIMEOUT, "second line", || {
            let l = lines_for_port(&h.log_lines().ok()?, local);
            (l.len() == 2).then_some(l)
        })?;
        break (first, lines);
    };
    let second = &lines[1];
    assert_eq!(str_field(second, "path")?, "/index.html");
    assert!(bool_field(second, "correlated")?, "{second}");
    assert!(
        str_field(second, "ja4")?.starts_with("t13"),
        "the second connection's own handshake, never the first's: {second}"
    );
    assert_ne!(second["b_timestamp"], first[0]["b_timestamp"]);
    Ok(())
}

#[test]
fn excluded_source_and_ports_are_logged_uncorrelated_at_once() -> Result<()> {
    for conf in [
        "ReqinLogExcludeSource 127.0.0.0/8 ::1\n",
        "ReqinLogIncludePorts 1\n",
    ] {
        let stack = Stack::start("event", &format!("ReqinLogOrphanDelay 5s\n{conf}"))?;
        let h = &stack.httpd;
        let start = Instant::now();
        let ports = curl(&["--http1.1"], &[h.https_url("/")])?;
        let lines = wait_lines_for_ports(h, &ports, LINE_TIMEOUT)?;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no orphan delay for an excluded request ({conf})"
        );
        let line = &lines_for_port(&lines, ports[0])[0];
        assert!(!bool_field(line, "correlated")?, "{conf}: {line}");
        assert_eq!(str_field(line, "orphan_side")?, "A");
    }
    Ok(())
}

#[test]
fn orphan_is_logged_after_the_delay_and_plain_http_at_once() -> Result<()> {
    // A sensor watching another port: the ring exists and is alive, but never has our hellos.
    let root = server_root()?;
    let ring = root.path().join("ja4sensor.ring");
    let _sensor = start_sensor(&ring, &[free_port()?])?;
    let opts = HttpdOptions {
        extra_conf: "ReqinLogOrphanDelay 300ms\nReqinLogLookupWait 0\n".into(),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &ring, &opts)?;

    let start = Instant::now();
    let ports = curl(&["--http1.1"], &[h.https_url("/")])?;
    let lines = wait_lines_for_ports(&h, &ports, LINE_TIMEOUT)?;
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_millis(1500),
        "within ~the orphan delay: {waited:?}"
    );
    let line = &lines_for_port(&lines, ports[0])[0];
    assert!(!bool_field(line, "correlated")?, "{line}");
    assert_eq!(str_field(line, "orphan_side")?, "A");
    assert_eq!(str_field(line, "scheme")?, "https");

    let start = Instant::now();
    let ports = curl(&[], &[h.http_url("/")])?;
    wait_lines_for_ports(&h, &ports, LINE_TIMEOUT)?;
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "plain HTTP is not delayed"
    );
    Ok(())
}
