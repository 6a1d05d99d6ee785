//! Drop-in and faults: an httpd.conf written for the original C module starts on any machine,
//! run-time resources that are missing are warnings and retries (never a failed start or a
//! dead graceful restart), and a full disk never leaves half a line in the log.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use correlate_lib::ring::{RingConfig, RingWriter};
use e2e_tests::*;
use serde_json::Value;

const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// The C module's directives as an existing httpd.conf has them, pointing at `socket`.
fn legacy_conf(socket: &Path) -> String {
    format!(
        "JsonSockLogEnabled On\n\
         JsonSockLogSocket \"{}\"\n\
         JsonSockLogHeaders User-Agent X-Request-Id\n\
         JsonSockLogMaxHeaders 25\n\
         JsonSockLogMaxHeaderValueLen 256\n\
         JsonSockLogReconnectInterval 1\n\
         JsonSockLogErrorReportInterval 1\n\
         JsonSockLogLevel WARNING\n\
         {STATUS_CONF}",
        socket.display()
    )
}

/// A collector's socket at `path` that the httpd children (www-data) may send to.
fn collector(path: &Path) -> Result<UnixDatagram> {
    let dir = path.parent().ok_or("socket path has no directory")?;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    let sock = UnixDatagram::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(sock)
}

/// Sends requests for `path` until the collector receives a datagram for it.
fn wait_datagram(h: &Httpd, sock: &UnixDatagram, path: &str) -> Result<Value> {
    let mut buf = vec![0u8; 65536];
    wait_for(LINE_TIMEOUT, &format!("a datagram for {path}"), || {
        curl(&["--http1.1"], &[h.https_url(path)]).ok()?;
        while let Ok(n) = sock.recv(&mut buf) {
            let v: Value = serde_json::from_slice(&buf[..n]).ok()?;
            if v["path"] == path {
                return Some(v);
            }
        }
        None
    })
}

fn status(h: &Httpd) -> Result<std::collections::HashMap<String, f64>> {
    prometheus(&h.http_url("/reqin-status"))
}

#[test]
fn legacy_config_starts_without_the_socket_directory_and_sends_once_it_appears() -> Result<()> {
    let root = server_root()?;
    // logcorrelator's RuntimeDirectory, on a machine where logcorrelator never ran.
    let socket = root.path().join("run/logcorrelator/http.socket");
    let (ok, out) = config_test(root.path(), &legacy_conf(&socket))?;
    assert!(ok, "apache2 -t must pass: {out}");
    let opts = HttpdOptions {
        module_conf: Some(legacy_conf(&socket)),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &root.path().join("no.ring"), &opts)?;
    for _ in 0..3 {
        curl(&["--http1.1"], &[h.https_url("/")])?;
    }
    let log = h.error_log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("JsonSockLogSocket") && l.contains("until a collector listens"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one start-up warning naming the path: {log}"
    );
    assert!(warnings[0].contains("does not exist"), "{}", warnings[0]);
    assert!(
        warnings[0].contains(&socket.display().to_string()),
        "{}",
        warnings[0]
    );
    let dropped = wait_for(LINE_TIMEOUT, "three dropped lines", || {
        let m = status(&h).ok()?;
        (m["reqin_log_dropped_total"] >= 3.0).then_some(m)
    })?;
    assert_eq!(dropped["reqin_log_lines_written_total"], 0.0, "{dropped:?}");
    // The collector starts after httpd, as logcorrelator would: no restart needed.
    let sock = collector(&socket)?;
    let line = wait_datagram(&h, &sock, "/index.html")?;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["scheme"], "https");
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn graceful_restart_and_usr1_survive_the_socket_directory_vanishing() -> Result<()> {
    let root = server_root()?;
    let socket = root.path().join("run/logcorrelator/http.socket");
    let sock = collector(&socket)?;
    let opts = HttpdOptions {
        module_conf: Some(legacy_conf(&socket)),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &root.path().join("no.ring"), &opts)?;
    wait_datagram(&h, &sock, "/index.html")?;
    drop(sock);
    fs::remove_dir_all(socket.parent().ok_or("no dir")?)?;
    // What `apachectl graceful` does: re-read the config, then restart gracefully.
    h.ctl("graceful")?;
    thread::sleep(Duration::from_secs(1));
    curl(&["--http1.1"], &[h.https_url("/")])?;
    // What logrotate's postrotate does.
    let pid = h.pid().ok_or("no httpd pid")?;
    let st = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()?;
    assert!(st.success());
    thread::sleep(Duration::from_secs(2));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the parent survived USR1: {}",
        h.error_log_text()
    );
    curl(&["--http1.1"], &[h.https_url("/")])?;
    // And the collector coming back is found again.
    let sock = collector(&socket)?;
    wait_datagram(&h, &sock, "/index.html")?;
    Ok(())
}

#[test]
fn a_log_file_whose_directory_is_missing_is_an_error_line_not_a_failed_start() -> Result<()> {
    let root = server_root()?;
    let dir = root.path().join("logs");
    let file = dir.join("reqin.log");
    let module_conf = format!(
        "ReqinLogFile \"{}\"\nReqinLogBuffer Off\n{STATUS_CONF}",
        file.display()
    );
    let opts = HttpdOptions {
        module_conf: Some(module_conf),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &root.path().join("no.ring"), &opts)?;
    let ports = curl(&["--http1.1"], &[h.https_url("/"), h.https_url("/")])?;
    assert_eq!(ports.len(), 2, "served");
    let log = h.error_log_text();
    assert!(
        log.contains(&format!("ReqinLogFile {}: cannot open it", file.display())),
        "{log}"
    );
    let m = wait_for(LINE_TIMEOUT, "two lost lines", || {
        let m = status(&h).ok()?;
        (m["reqin_log_write_errors_total"] >= 2.0).then_some(m)
    })?;
    assert_eq!(m["reqin_log_lines_written_total"], 0.0, "{m:?}");
    // The directory appears; the next graceful restart (the parent, as root) opens the file.
    fs::create_dir(&dir)?;
    h.ctl("graceful")?;
    let lines = wait_for(LINE_TIMEOUT, "a line in the file", || {
        curl(&["--http1.1"], &[h.https_url("/after")]).ok();
        let text = fs::read_to_string(&file).ok()?;
        text.lines()
            .any(|l| l.contains("\"/after\""))
            .then_some(text)
    })?;
    for l in lines.lines() {
        serde_json::from_str::<Value>(l)?;
    }
    Ok(())
}

#[test]
fn lines_written_counts_only_lines_that_reached_the_file() -> Result<()> {
    // Every write to /dev/full fails with ENOSPC: nothing is on disk, so nothing is "written".
    for buffer in ["Off", "16K"] {
        let root = server_root()?;
        let module_conf = format!(
            "ReqinLogFile /dev/full\nReqinLogBuffer {buffer}\nReqinLogFlushInterval 100ms\n{STATUS_CONF}"
        );
        let opts = HttpdOptions {
            module_conf: Some(module_conf),
            ..HttpdOptions::default()
        };
        let h = Httpd::start(root.path(), &root.path().join("no.ring"), &opts)?;
        let urls: Vec<String> = (0..5).map(|i| h.https_url(&format!("/?n={i}"))).collect();
        curl(&["--http1.1"], &urls)?;
        // Each status request is logged (and lost) too, after its page was made: wait until
        // every line logged so far is accounted for.
        let m = wait_for(LINE_TIMEOUT, "five lost lines", || {
            let m = status(&h).ok()?;
            let lost = m["reqin_log_write_errors_total"];
            (lost >= 5.0 && lost == m["reqin_log_orphans_total"]).then_some(m)
        })?;
        assert_eq!(
            m["reqin_log_lines_written_total"], 0.0,
            "buffer {buffer}: {m:?}"
        );
        // The error log reports losses once per JsonSockLogErrorReportInterval (10 s); what the
        // interval held back is reported when a child exits, so every lost line is in it.
        h.stop()?;
        let log = h.error_log_text();
        let reported: f64 = log
            .lines()
            .filter_map(|l| l.split_once(": ")?.1.split_once(" log line(s) lost"))
            .filter_map(|(n, _)| n.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(
            reported >= m["reqin_log_write_errors_total"],
            "buffer {buffer}: {reported} lost lines reported, {m:?}\n{log}"
        );
    }
    Ok(())
}

/// Every line of `file` as JSON (an error names the first line that is not).
fn json_lines(file: &Path) -> Result<Vec<Value>> {
    fs::read_to_string(file)?
        .lines()
        .map(|l| {
            serde_json::from_str(l).map_err(|e| format!("invalid JSON line {l:?}: {e}").into())
        })
        .collect()
}

/// A tmpfs of its own for the log: filled up on purpose.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn mount(dir: PathBuf, size: &str) -> Result<Self> {
        fs::create_dir_all(&dir)?;
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()?;
        if !st.success() {
            return Err(format!("mount tmpfs on {}: {st}", dir.display()).into());
        }
        Ok(Self { dir })
    }

    fn resize(&self, size: &str) -> Result<()> {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()?;
        if !st.success() {
            return Err(format!("remount {}: {st}", self.dir.display()).into());
        }
        Ok(())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_never_leaves_half_a_line_and_every_lost_line_is_counted() -> Result<()> {
    for buffer in ["Off", "4K"] {
        let root = server_root()?;
        let small = SmallFs::mount(root.path().join("logfs"), "16k")?;
        let file = small.dir.join("reqin.log");
        let module_conf = format!(
            "ReqinLogFile \"{}\"\nReqinLogBuffer {buffer}\nReqinLogFlushInterval 100ms\n\
             JsonSockLogHeaders User-Agent\n{STATUS_CONF}",
            file.display()
        );
        let opts = HttpdOptions {
            module_conf: Some(module_conf),
            ..HttpdOptions::default()
        };
        let h = Httpd::start(root.path(), &root.path().join("no.ring"), &opts)?;
        // About 500-byte lines: 16 KiB fills after some 30; the write that crosses the last
        // page boundary is cut short.
        let ua = format!("filler-{}", "x".repeat(150));
        let before: Vec<String> = (0..80)
            .map(|i| h.https_url(&format!("/?full={i}")))
            .collect();
        curl(&["--http1.1", "-A", &ua], &before)?;
        thread::sleep(Duration::from_millis(500));
        small.resize("1m")?;
        let after: Vec<String> = (0..20)
            .map(|i| h.https_url(&format!("/?freed={i}")))
            .collect();
        curl(&["--http1.1", "-A", &ua], &after)?;
        let freed = wait_for(LINE_TIMEOUT, "the lines after the disk was freed", || {
            let lines = json_lines(&file).ok()?;
            let n = lines
                .iter()
                .filter(|l| l["query"].as_str().is_some_and(|q| q.starts_with("freed=")))
                .count();
            (n == 20).then_some(lines)
        })
        .map_err(|e| format!("buffer {buffer}: {e}; {:?}", json_lines(&file).err()))?;
        // `json_lines` fails on a line that is not JSON: every line in the file is whole.
        let m = status(&h)?;
        let written = m["reqin_log_lines_written_total"];
        let lost = m["reqin_log_write_errors_total"];
        assert!(lost > 0.0, "buffer {buffer}: the disk was full: {m:?}");
        assert_eq!(
            written,
            freed.len() as f64,
            "buffer {buffer}: written = on disk: {m:?}"
        );
        assert_eq!(
            written + lost,
            100.0,
            "buffer {buffer}: every line counted: {m:?}"
        );
        assert_eq!(
            m["reqin_log_lines_damaged_total"], 0.0,
            "one writer at a time here"
        );
        assert!(
            fs::read(&file)?.ends_with(b"\n"),
            "buffer {buffer}: the file ends with a whole line"
        );
        drop(h);
    }
    Ok(())
}

#[test]
fn a_ring_changed_in_place_or_replaced_by_garbage_is_reported_as_what_it_is() -> Result<()> {
    let root = server_root()?;
    let ring = root.path().join("ja4sensor.ring");
    let cfg = RingConfig {
        slot_count: 64,
        slot_size: 1024,
    };
    let _w = RingWriter::create(&ring, cfg, 0o644, None)?;
    // One child: the one whose mapping each fault meets (each child reports what it sees).
    let opts = HttpdOptions {
        extra_conf: "StartServers 1\nServerLimit 1\nThreadsPerChild 25\nMinSpareThreads 1\n\
                     MaxSpareThreads 25\nMaxRequestWorkers 25\n"
            .into(),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &ring, &opts)?;
    curl(&["--http1.1"], &[h.https_url("/")])?;
    // Random bytes over the header, same inode (not what a sensor ever does).
    let f = fs::OpenOptions::new().write(true).open(&ring)?;
    std::os::unix::fs::FileExt::write_at(&f, &[0x5a; 64], 0)?;
    let log = wait_for(LINE_TIMEOUT, "the in-place change in the error log", || {
        thread::sleep(Duration::from_millis(300));
        curl(&["--http1.1"], &[h.https_url("/")]).ok()?;
        let log = h.error_log_text();
        log.contains("changed in place").then_some(log)
    })?;
    assert!(log.contains("bad magic"), "{log}");
    assert!(!log.contains("was replaced"), "not a replacement: {log}");
    // A sensor's new ring (a new file renamed over the path) is attached again...
    let _w2 = RingWriter::create(&ring, cfg, 0o644, None)?;
    wait_for(LINE_TIMEOUT, "a re-attach", || {
        thread::sleep(Duration::from_millis(300));
        curl(&["--http1.1"], &[h.https_url("/")]).ok()?;
        (h.error_log_text().matches("attached to ring").count() >= 2).then_some(())
    })?;
    // ...and a garbage file renamed over it is a replacement that does not open.
    let tmp = root.path().join("garbage");
    fs::write(&tmp, vec![0xa5u8; 8192])?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&tmp, &ring)?;
    let log = wait_for(LINE_TIMEOUT, "the replacement in the error log", || {
        thread::sleep(Duration::from_millis(300));
        curl(&["--http1.1"], &[h.https_url("/")]).ok()?;
        let log = h.error_log_text();
        log.contains("no longer the one mapped").then_some(log)
    })
    .map_err(|e| format!("{e}: {}", h.error_log_text()))?;
    assert!(log.contains("bad magic"), "{log}");
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_ring_truncated_under_the_children_costs_the_join_not_a_child() -> Result<()> {
    let stack = Stack::start("event", "")?;
    let h = &stack.httpd;
    let p = curl(&["--http1.1"], &[h.https_url("/")])?;
    wait_lines_for_ports(h, &p, LINE_TIMEOUT)?;
    // Root cuts the sensor's ring to nothing while every child has it mapped; the next lookups
    // touch pages past the end of the file (SIGBUS without the guard).
    fs::OpenOptions::new()
        .write(true)
        .open(&h.ring)?
        .set_len(0)?;
    for _ in 0..20 {
        curl(&["--http1.1"], &[h.https_url("/"), h.https_url("/")])?;
    }
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    // The sensor notices within a second and creates a new ring; new connections join again.
    let joined = wait_for(
        LINE_TIMEOUT,
        "a correlated line after the truncation",
        || {
            curl(&["--http1.1"], &[h.https_url("/?again")]).ok()?;
            h.log_lines()
                .ok()?
                .into_iter()
                .find(|l| l["query"] == "again" && l["correlated"] == true)
        },
    )
    .map_err(|e| {
        let again: Vec<String> = h
            .log_lines()
            .map(|l| {
                l.into_iter()
                    .filter(|l| l["query"] == "again")
                    .map(|l| l.to_string())
                    .collect()
            })
            .unwrap_or_else(|e| vec![e.to_string()]);
        format!("{e}; lines: {again:?}")
    })?;
    assert_eq!(joined["query"], "again");
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}
