//! The walking skeleton, end to end with real parts: a private httpd with mod_reqin_log, the
//! real ja4sensor capturing `lo`, real TLS clients, and tshark computing JA3 from a capture of
//! the same run as an independent oracle.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use e2e_tests::*;
use serde_json::Value;

fn line_for_port(lines: &[Value], port: u16) -> Result<Vec<&Value>> {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("src_port").and_then(Value::as_u64) == Some(u64::from(port)))
        .collect();
    if found.is_empty() {
        return Err(format!("no log line for client port {port}: {lines:?}").into());
    }
    Ok(found)
}

#[test]
fn tls_requests_are_logged_with_their_real_ja3() -> Result<()> {
    let root = server_root()?;
    let ring = root.path().join("ja4sensor.ring");
    // The sensor first, as in production: httpd children attach to its ring at start.
    let tls_port = free_port()?;
    let tshark = Tshark::start(root.path(), tls_port)?;
    let mut sensor = start_sensor(&ring, &[tls_port])?;
    let opts = HttpdOptions {
        tls_port: Some(tls_port),
        ..HttpdOptions::default()
    };
    let httpd = Httpd::start(root.path(), &ring, &opts)?;

    // One request per connection, with SNI (curl sends none for an IP literal).
    let url = format!("https://localhost:{}/", httpd.tls_port);
    let resolve = format!("localhost:{}:127.0.0.1", httpd.tls_port);
    let single = curl(&["--http1.1", "--resolve", &resolve], &[url])?;
    // A keep-alive pair: two requests on one connection share one handshake.
    let pair = curl(
        &["--http1.1"],
        &[httpd.https_url("/"), httpd.https_url("/index.html")],
    )?;
    assert_eq!(pair.len(), 2);
    assert_eq!(pair[0], pair[1], "curl reused its connection");
    // A different TLS client, so the oracle compares more than one fingerprint.
    let answer = openssl_get(httpd.tls_port, "/")?;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "openssl s_client got {answer:?}"
    );

    let lines = httpd.wait_log_lines(4)?;
    let oracle: HashMap<u16, String> = tshark.stop_and_ja3()?.into_iter().collect();
    assert_eq!(oracle.len(), 3, "tshark saw three handshakes: {oracle:?}");
    let sensor_log = sensor.stderr_so_far();
    assert!(
        sensor.stop()?.success(),
        "the sensor exits cleanly on SIGTERM: {sensor_log:?}"
    );

    for port in [single[0], pair[0]] {
        for line in line_for_port(&lines, port)? {
            assert!(bool_field(line, "correlated")?, "correlated: {line}");
            assert_eq!(
                str_field(line, "ja3_hash")?,
                oracle[&port],
                "JA3 agrees with tshark: {line}"
            );
            assert!(
                str_field(line, "ja4")?.starts_with("t13"),
                "curl offers TLS 1.3: {line}"
            );
            assert_eq!(str_field(line, "scheme")?, "https");
            assert_eq!(str_field(line, "method")?, "GET");
            assert_eq!(str_field(line, "http_version")?, "HTTP/1.1");
            assert_eq!(u64_field(line, "status")?, 200);
            assert_eq!(u64_field(line, "dst_port")?, u64::from(httpd.tls_port));
            assert_eq!(str_field(line, "src_ip")?, "127.0.0.1");
        }
    }
    assert_eq!(
        line_for_port(&lines, pair[0])?.len(),
        2,
        "one line per keep-alive request"
    );
    let with_sni = line_for_port(&lines, single[0])?[0];
    assert_eq!(str_field(with_sni, "tls_sni")?, "localhost");
    assert_eq!(str_field(with_sni, "host")?, "localhost");

    // The openssl line is the one whose port is neither curl's.
    let openssl_port = *oracle
        .keys()
        .find(|p| **p != single[0] && **p != pair[0])
        .ok_or("tshark saw the openssl handshake")?;
    let openssl_line = line_for_port(&lines, openssl_port)?[0];
    assert!(bool_field(openssl_line, "correlated")?, "{openssl_line}");
    assert_eq!(str_field(openssl_line, "ja3_hash")?, oracle[&openssl_port]);
    assert_ne!(
        str_field(openssl_line, "ja4")?,
        str_field(with_sni, "ja4")?,
        "two different clients, two different JA4s"
    );

    assert_eq!(httpd.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn requests_while_the_sensor_is_down_are_logged_uncorrelated_and_served() -> Result<()> {
    let root = server_root()?;
    let ring = root.path().join("ja4sensor.ring");
    let httpd = Httpd::start(root.path(), &ring, &HttpdOptions::default())?;

    // No sensor, no ring file: every request is served and logged as an orphan.
    let tls = curl(&["--http1.1"], &[httpd.https_url("/")])?;
    let plain = curl(&[], &[httpd.http_url("/")])?;
    let lines = httpd.wait_log_lines(2)?;
    let tls_line = line_for_port(&lines, tls[0])?[0];
    assert!(!bool_field(tls_line, "correlated")?, "{tls_line}");
    assert_eq!(str_field(tls_line, "orphan_side")?, "A");
    assert!(
        tls_line.get("ja4").is_none(),
        "no fingerprint without a sensor: {tls_line}"
    );
    let plain_line = line_for_port(&lines, plain[0])?[0];
    assert!(!bool_field(plain_line, "correlated")?);
    assert_eq!(str_field(plain_line, "scheme")?, "http");

    // The sensor comes up later: httpd attaches to its ring without a restart.
    let _sensor = start_sensor(&ring, &[httpd.tls_port])?;
    let mut correlated = false;
    for attempt in 0..10 {
        let before = httpd.log_lines()?.len();
        let port = curl(&["--http1.1"], &[httpd.https_url("/")])?[0];
        let lines = httpd.wait_log_lines(before + 1)?;
        if bool_field(line_for_port(&lines, port)?[0], "correlated")? {
            correlated = true;
            break;
        }
        // Readers retry a missing ring at most once per second.
        thread::sleep(Duration::from_millis(300 + 100 * attempt));
    }
    assert!(
        correlated,
        "a request after the sensor started was correlated"
    );
    assert_eq!(httpd.crashed_children(), Vec::<String>::new());
    Ok(())
}
