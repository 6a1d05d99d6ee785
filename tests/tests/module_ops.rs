//! mod_reqin_log as an Apache citizen: every MPM, graceful restart and stop under load, a ring
//! that disappears or turns to garbage, the status page, a forced panic, and `apache2 -t`.

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use correlate_lib::ring::{RingConfig, RingWriter};
use e2e_tests::*;

const LINE_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn every_mpm_joins_keepalive_and_http2_requests() -> Result<()> {
    for mpm in ["prefork", "worker", "event"] {
        let stack = Stack::start(mpm, "")?;
        let h = &stack.httpd;
        let url = h.https_url("/");
        let h1 = curl(&["--http1.1"], &[url.clone(), url.clone()])?;
        let h2 = curl(&["--http2"], &[url.clone(), url])?;
        let lines = wait_lines_for_ports(h, &[h1[0], h2[0]], LINE_TIMEOUT)?;
        let lines = wait_for(LINE_TIMEOUT, "four lines", || {
            let l = h.log_lines().ok()?;
            (l.len() >= 4).then_some(l)
        })
        .map_err(|e| format!("{mpm}: {e}: {lines:?}"))?;
        for line in &lines {
            assert!(bool_field(line, "correlated")?, "{mpm}: {line}");
        }
        let ka: Vec<u64> = lines_for_port(&lines, h1[0])
            .iter()
            .filter_map(|l| l["keepalives"].as_u64())
            .collect();
        assert_eq!(ka, vec![1, 2], "{mpm}");
        assert_eq!(h.crashed_children(), Vec::<String>::new(), "{mpm}");
    }
    Ok(())
}

#[test]
fn graceful_restart_and_graceful_stop_under_load_lose_no_line() -> Result<()> {
    // A ring whose sensor never reports progress (watermark 0): every TLS line waits in the
    // flusher for the 10 s orphan delay, so only the flush on child exit can write them sooner.
    let root = server_root()?;
    let ring = root.path().join("stuck.ring");
    let _writer = RingWriter::create(
        &ring,
        RingConfig {
            slot_count: 64,
            slot_size: 1024,
        },
        0o644,
        None,
    )?;
    let opts = HttpdOptions {
        extra_conf: "ReqinLogOrphanDelay 10s\nReqinLogLookupWait 0\n".into(),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &ring, &opts)?;
    let ok = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (ok, stop, url) = (Arc::clone(&ok), Arc::clone(&stop), h.https_url("/"));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if curl(&["--http1.1"], &[url.clone(), url.clone()]).is_ok() {
                    ok.fetch_add(2, Ordering::Relaxed);
                }
            }
        })
    };
    thread::sleep(Duration::from_millis(700));
    h.ctl("graceful")?;
    thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let served = ok.load(Ordering::Relaxed);
    assert!(served > 4, "the load ran: {served}");
    let start = Instant::now();
    h.ctl("graceful-stop")?;
    let lines = wait_for(Duration::from_secs(8), &format!("{served} lines"), || {
        let l = h.log_lines().ok()?;
        (l.len() >= served).then_some(l)
    })
    .map_err(|e| format!("{e}: {} lines", h.log_lines().map(|l| l.len()).unwrap_or(0)))?;
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "flushed on exit, not after the delay"
    );
    assert_eq!(lines.len(), served, "one line per answered request");
    for line in &lines {
        assert!(!bool_field(line, "correlated")?, "{line}");
    }
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn buffered_lines_are_written_by_the_flush_interval_whole_and_once() -> Result<()> {
    // A buffer no test traffic fills: only the interval writes these lines. Then `Off`: a write
    // per line. Both under concurrent clients on every child, HTTP/1.1 and h2.
    for (conf, what) in [
        (
            "ReqinLogBuffer 1M\nReqinLogFlushInterval 300ms\n",
            "1M buffer",
        ),
        ("ReqinLogBuffer Off\n", "no buffer"),
    ] {
        let stack = Stack::start("event", conf)?;
        let h = &stack.httpd;
        let urls: Vec<String> = (0..5).map(|_| h.https_url("/")).collect();
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let urls = urls.clone();
                let proto = if i % 2 == 0 { "--http1.1" } else { "--http2" };
                thread::spawn(move || curl(&[proto], &urls).map_err(|e| e.to_string()))
            })
            .collect();
        let mut ports = Vec::new();
        for c in clients {
            ports.extend(c.join().map_err(|_| "client thread panicked")??);
        }
        assert_eq!(ports.len(), 20, "{what}: every request answered");
        let lines = wait_for(LINE_TIMEOUT, &format!("{what}: 20 lines"), || {
            let l = h.log_lines().ok()?;
            (l.len() >= 20).then_some(l)
        })?;
        // log_lines parsed every line: none torn or interleaved.
        assert_eq!(lines.len(), 20, "{what}: each line once");
        for port in &ports {
            assert!(
                !lines_for_port(&lines, *port).is_empty(),
                "{what}: no line for client port {port}"
            );
        }
        assert!(
            lines
                .iter()
                .all(|l| bool_field(l, "correlated").unwrap_or(false)),
            "{what}: {lines:?}"
        );
        assert_eq!(h.crashed_children(), Vec::<String>::new());
    }
    Ok(())
}

#[test]
fn ring_deleted_replaced_or_garbage_while_serving() -> Result<()> {
    let mut stack = Stack::start("event", "")?;
    let ring = stack.httpd.ring.clone();
    let h = &stack.httpd;
    let get = || curl(&["--http1.1"], &[h.https_url("/")]);
    let p = get()?;
    let lines = wait_lines_for_ports(h, &p, LINE_TIMEOUT)?;
    assert!(bool_field(&lines_for_port(&lines, p[0])[0], "correlated")?);

    if let Some(mut s) = stack.sensor.take() {
        s.stop()?;
    }
    fs::remove_file(&ring)?;
    let p = get()?;
    wait_lines_for_ports(h, &p, LINE_TIMEOUT)?;
    for garbage in [
        vec![0xA5u8; 100_000],
        b"JA4RING\0short".to_vec(),
        Vec::new(),
    ] {
        fs::write(&ring, &garbage)?;
        thread::sleep(Duration::from_millis(1100)); // readers re-check once per second
        let p = get()?;
        let lines = wait_lines_for_ports(h, &p, LINE_TIMEOUT)?;
        assert!(!bool_field(&lines_for_port(&lines, p[0])[0], "correlated")?);
    }
    // A restarted sensor replaces the file: requests are joined again without an httpd restart.
    fs::remove_file(&ring)?;
    let _sensor = start_sensor(&ring, &[h.tls_port])?;
    let mut correlated = false;
    for _ in 0..20 {
        let p = get()?;
        let lines = wait_lines_for_ports(h, &p, LINE_TIMEOUT)?;
        if bool_field(&lines_for_port(&lines, p[0])[0], "correlated")? {
            correlated = true;
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(correlated, "re-attached to the new ring");
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn status_handler_sums_every_child_and_shows_the_sensor() -> Result<()> {
    let stack = Stack::start("prefork", &format!("StartServers 3\n{STATUS_CONF}"))?;
    let h = &stack.httpd;
    let mut ports = Vec::new();
    for _ in 0..6 {
        ports.extend(curl(&["--http1.1"], &[h.https_url("/")])?);
    }
    ports.extend(curl(&[], &[h.http_url("/")])?);
    wait_lines_for_ports(h, &ports, LINE_TIMEOUT)?;
    let m = prometheus(&h.http_url("/reqin-status"))?;
    let get = |k: &str| m.get(k).copied().unwrap_or(-1.0);
    assert!(get("reqin_log_lines_written_total") >= 7.0, "{m:?}");
    assert!(get("reqin_log_correlated_total") >= 6.0, "{m:?}");
    assert!(get("reqin_log_orphans_total") >= 1.0, "{m:?}");
    assert_eq!(get("reqin_log_panics_total"), 0.0);
    assert_eq!(get("reqin_log_ring_attached"), 1.0);
    // The sensor's own counters are published periodically; the ring's cursor at once.
    assert!(get("ja4sensor_ring_published_total") >= 6.0, "{m:?}");
    assert!(get("ja4sensor_hellos_parsed_total") >= 0.0, "{m:?}");
    assert!(get("ja4sensor_watermark_seconds") > 0.0, "{m:?}");
    Ok(())
}

#[test]
fn a_panic_in_the_log_hook_is_caught_and_reported() -> Result<()> {
    let stack = Stack::start("event", &format!("ReqinLogTestPanic /boom\n{STATUS_CONF}"))?;
    let h = &stack.httpd;
    let code = curl_output(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &h.https_url("/boom"),
    ])?;
    assert_eq!(code, "404", "the request was served");
    let p = curl(&["--http1.1"], &[h.https_url("/")])?;
    wait_lines_for_ports(h, &p, LINE_TIMEOUT)?;
    // The default panic hook may be slow (a backtrace when RUST_BACKTRACE is set); then ours.
    let log = wait_for(LINE_TIMEOUT, "the panic in the error log", || {
        let log = h.error_log_text();
        log.contains("panic in log_transaction").then_some(log)
    })?;
    assert!(!log.contains("exit signal"), "{log}");
    let m = prometheus(&h.http_url("/reqin-status"))?;
    assert_eq!(m["reqin_log_panics_total"], 1.0);
    Ok(())
}

#[test]
fn bad_directive_values_fail_the_config_test_naming_the_directive() -> Result<()> {
    let root = server_root()?;
    let (ok, out) = config_test(root.path(), "")?;
    assert!(ok, "the test config itself is valid: {out}");
    for (line, directive) in [
        ("JsonSockLogEnabled maybe", "JsonSockLogEnabled"),
        ("JsonSockLogSocket relative.sock", "JsonSockLogSocket"),
        ("JsonSockLogHeaders Bad:Name", "JsonSockLogHeaders"),
        ("JsonSockLogMaxHeaders -1", "JsonSockLogMaxHeaders"),
        (
            "JsonSockLogMaxHeaderValueLen lots",
            "JsonSockLogMaxHeaderValueLen",
        ),
        (
            "JsonSockLogReconnectInterval soon",
            "JsonSockLogReconnectInterval",
        ),
        (
            "JsonSockLogErrorReportInterval x",
            "JsonSockLogErrorReportInterval",
        ),
        ("JsonSockLogLevel LOUD", "JsonSockLogLevel"),
        ("ReqinLogFile /var/log/apache2/", "ReqinLogFile"),
        ("ReqinLogFile |", "ReqinLogFile"),
        ("ReqinLogRing ring", "ReqinLogRing"),
        ("ReqinLogTimeWindow 0", "ReqinLogTimeWindow"),
        ("ReqinLogOrphanDelay 1h", "ReqinLogOrphanDelay"),
        ("ReqinLogMatchMode many", "ReqinLogMatchMode"),
        ("ReqinLogExcludeSource 10.0.0.0/33", "ReqinLogExcludeSource"),
        ("ReqinLogIncludePorts 99999", "ReqinLogIncludePorts"),
        ("ReqinLogRedactHeaders -Bad:Name", "ReqinLogRedactHeaders"),
        ("ReqinLogExportEnv sometimes", "ReqinLogExportEnv"),
        ("ReqinLogLookupWait 5s", "ReqinLogLookupWait"),
        ("ReqinLogBuffer 2M", "ReqinLogBuffer"),
        ("ReqinLogFlushInterval 0", "ReqinLogFlushInterval"),
        ("ReqinLogMaxFieldLen 0", "ReqinLogMaxFieldLen"),
    ] {
        let (ok, out) = config_test(root.path(), &format!("{line}\n"))?;
        assert!(!ok, "{line:?} was accepted");
        assert!(out.contains(directive), "{line:?}: {out}");
    }
    Ok(())
}
