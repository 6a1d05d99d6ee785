//! Operating the sensor like ja4sentinel: its `config.yml` and environment start us unchanged,
//! `--check-config` validates, the JSON outputs (unix datagram socket, file, stdout) carry every
//! sentinel LogRecord field, SIGHUP reopens the file after a rotation, systemd hears READY,
//! WATCHDOG and STOPPING, and SIGTERM exits cleanly within sentinel's `TimeoutStopSec=2`.
//! Captures on `lo`: needs root, like every capture test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{client_hello, wait_for};
use correlate_lib::fields;
use correlate_lib::ring::{Lookup, RingReader};
use correlate_lib::ConnKey;

fn sentinel_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sentinel-config.yml")
}

fn sensor() -> Command {
    sensor_env(Command::new(env!("CARGO_BIN_EXE_ja4sensor")))
}

fn sensor_env(mut c: Command) -> Command {
    // The developer's environment must not leak into the test.
    for (k, _) in std::env::vars() {
        if k.starts_with("JA4SENSOR_") || k.starts_with("JA4SENTINEL_") || k == "NOTIFY_SOCKET" {
            c.env_remove(k);
        }
    }
    c
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Connects to `listener`, sends a ClientHello; returns both sockets and the ring key.
fn hello_to(listener: &TcpListener) -> ((TcpStream, TcpStream), ConnKey) {
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let key = ConnKey::new(client.local_addr().unwrap(), client.peer_addr().unwrap());
    client.write_all(&client_hello()).unwrap();
    ((client, server), key)
}

#[test]
fn check_config_accepts_sentinel_config_and_names_bad_keys() {
    let ok = sensor()
        .args(["--check-config", "-config"])
        .arg(sentinel_fixture())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration OK"));
    let run_form = sensor()
        .args(["run", "--check-config", "--config"])
        .arg(sentinel_fixture())
        .status()
        .unwrap();
    assert!(run_form.success());

    let bad_env = sensor()
        .args(["--check-config", "-config"])
        .arg(sentinel_fixture())
        .env("JA4SENTINEL_FLOW_TIMEOUT", "301")
        .output()
        .unwrap();
    assert!(!bad_env.status.success());
    let err = String::from_utf8_lossy(&bad_env.stderr);
    assert!(
        err.contains("core.flow_timeout_sec") && err.contains("1 to 300"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "core:\n  bpf_filter: \"tcp and nonsense ((\"\n").unwrap();
    let out = sensor()
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid BPF filter"));
}

#[test]
fn sentinel_config_and_environment_start_the_sensor_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let ring_path = dir.path().join("sentinel.ring");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // sentinel's unit: `ExecStart=/usr/bin/ja4sentinel -config ...` plus its env overrides.
    let child = sensor()
        .arg("-config")
        .arg(sentinel_fixture())
        .env("JA4SENTINEL_INTERFACE", "lo")
        .env("JA4SENTINEL_PORTS", port.to_string())
        .env("JA4SENSOR_RING_PATH", &ring_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    let reader = wait_for("the ring", || RingReader::open(&ring_path).ok());
    let (_client, key) = hello_to(&listener);
    let record = wait_for("the record", || match reader.lookup(&key) {
        Lookup::Hit(r) => Some(r),
        _ => None,
    });
    assert_eq!(record.tls_sni, "ring.test");
    // The configured unix_socket consumer does not exist: capture goes on regardless.
    let stop = Instant::now();
    signal(&running.0, "-TERM");
    let mut running = running;
    let status = wait_for("exit", || running.0.try_wait().unwrap());
    assert!(status.success());
    assert!(stop.elapsed() < Duration::from_secs(2), "TimeoutStopSec=2");
}

const SENTINEL_FIELDS: [&str; 22] = [
    fields::SRC_IP,
    fields::SRC_PORT,
    fields::DST_IP,
    fields::DST_PORT,
    fields::IP_META_TTL,
    fields::IP_META_TOTAL_LENGTH,
    fields::IP_META_ID,
    fields::IP_META_DF,
    fields::TCP_META_WINDOW_SIZE,
    fields::TCP_META_MSS,
    fields::TCP_META_WINDOW_SCALE,
    fields::TCP_META_OPTIONS,
    fields::CONN_ID,
    fields::SENSOR_ID,
    fields::TLS_VERSION,
    fields::TLS_SNI,
    fields::TLS_ALPN,
    fields::SYN_TO_CLIENTHELLO_MS,
    fields::JA4,
    fields::JA3,
    fields::JA3_HASH,
    fields::TIMESTAMP,
];

#[test]
fn outputs_carry_every_sentinel_field_and_systemd_hears_the_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let ring_path = dir.path().join("ops.ring");
    let sock_path = dir.path().join("network.socket");
    let log_path = dir.path().join("ja4.log");
    let notify_path = dir.path().join("notify.socket");
    let consumer = UnixDatagram::bind(&sock_path).unwrap();
    consumer
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let systemd = UnixDatagram::bind(&notify_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "core:\n  interface: lo\n  listen_ports: [{port}]\n  sensor_id: ops-test\n\
             ring:\n  path: {}\n\
             outputs:\n\
             \x20 - type: unix_socket\n    enabled: true\n    async_buffer: 100\n    params:\n      socket_path: {}\n\
             \x20 - type: file\n    enabled: true\n    params:\n      path: {}\n\
             \x20 - type: stdout\n    enabled: true\n",
            ring_path.display(),
            sock_path.display(),
            log_path.display()
        ),
    )
    .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: `exec` keeps the shell's.
    let child = sensor_env(Command::new("sh"))
        .arg("-c")
        .arg(format!(
            "WATCHDOG_PID=$$ exec {} run --config {}",
            env!("CARGO_BIN_EXE_ja4sensor"),
            config.display()
        ))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let mut buf = vec![0u8; 65536];
    let mut notifications = String::new();
    let mut next_notification = |notifications: &mut String| {
        let n = systemd.recv(&mut buf).unwrap();
        notifications.push_str(&String::from_utf8_lossy(&buf[..n]));
        notifications.push('\n');
    };
    while !notifications.contains("READY=1") {
        next_notification(&mut notifications);
    }
    while !notifications.contains("WATCHDOG=1") {
        next_notification(&mut notifications);
    }

    let (_c1, key1) = hello_to(&listener);
    let mut dgram = vec![0u8; 65536];
    let n = consumer.recv(&mut dgram).unwrap();
    let record: serde_json::Value = serde_json::from_slice(&dgram[..n]).unwrap();
    for field in SENTINEL_FIELDS {
        assert!(record.get(field).is_some(), "{field} missing in {record}");
    }
    assert_eq!(record[fields::CONN_ID], key1.conn_id());
    assert_eq!(record[fields::SENSOR_ID], "ops-test");
    assert_eq!(record[fields::IP_META_TTL], 64);
    assert!(record[fields::IP_META_DF].is_boolean());
    assert!(record[fields::TIMESTAMP].as_u64().unwrap() > 1_600_000_000_000_000_000);
    let line = wait_for("the file line", || {
        std::fs::read_to_string(&log_path)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_eq!(line.lines().count(), 1);

    // logrotate: move the file away, SIGHUP; the next record goes to a new file.
    std::fs::rename(&log_path, dir.path().join("ja4.log.1")).unwrap();
    signal(&running.0, "-HUP");
    std::thread::sleep(Duration::from_millis(500));
    let (_c2, key2) = hello_to(&listener);
    let line = wait_for("the reopened file", || {
        std::fs::read_to_string(&log_path)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert!(line.contains(&key2.conn_id()), "{line}");

    signal(&running.0, "-TERM");
    while !notifications.contains("STOPPING=1") {
        next_notification(&mut notifications);
    }
    let status = wait_for("exit", || running.0.try_wait().unwrap());
    assert!(status.success());
    let mut stdout = String::new();
    use std::io::Read;
    running
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}
