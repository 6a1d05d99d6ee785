//! `ja4sensor run` holds CAP_NET_RAW: what runs in that process is the capture and nothing
//! else. `ja4sensor` carries `ship` (an async runtime, an HTTP client) and the forensic
//! commands; `run` executes `ja4sensor-pcap` (same pid), which carries none of them: one thread,
//! one packet socket, no other socket, no epoll or eventfd (what an async reactor would open).
//! And only that binary is linked to libpcap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn socket_inodes(table: &str) -> Vec<String> {
    // Every /proc/net table lists the socket's inode; its column differs (tcp: 10th, packet:
    // 9th), so collect every numeric field and match exactly.
    fs::read_to_string(table)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[test]
fn run_is_one_capture_thread_with_one_packet_socket_and_no_async_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ja4.ring");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ja4sensor"))
        .args([
            "run",
            "--interface",
            "lo",
            "--ports",
            &port.to_string(),
            "--ring",
        ])
        .arg(&ring)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ring.exists() {
        assert!(
            Instant::now() < deadline,
            "the sensor did not create its ring"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past start-up: whatever it starts, it has started.
    std::thread::sleep(Duration::from_millis(500));
    let proc_dir = format!("/proc/{}", child.id());
    let exe = fs::read_link(format!("{proc_dir}/exe")).unwrap();
    let maps = fs::read_to_string(format!("{proc_dir}/maps")).unwrap();
    let threads: Vec<String> = fs::read_dir(format!("{proc_dir}/task"))
        .unwrap()
        .map(|t| {
            fs::read_to_string(t.unwrap().path().join("comm"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    let fds: Vec<String> = fs::read_dir(format!("{proc_dir}/fd"))
        .unwrap()
        .filter_map(|fd| fs::read_link(fd.unwrap().path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    let tables: Vec<(&str, Vec<String>)> = ["packet", "tcp", "tcp6", "udp", "udp6", "unix"]
        .into_iter()
        .map(|t| (t, socket_inodes(&format!("/proc/net/{t}"))))
        .collect();
    let _ = child.kill();
    let _ = child.wait();

    // `ja4sensor run` has become `ja4sensor-pcap` (same pid), the only binary linked to libpcap.
    assert_eq!(
        threads,
        ["ja4sensor-pcap"],
        "one thread, no runtime workers"
    );
    assert_eq!(exe.file_name().unwrap(), "ja4sensor-pcap");
    assert!(maps.contains("libpcap"), "the capture maps libpcap");
    assert!(
        !fds.iter()
            .any(|f| f.contains("eventpoll") || f.contains("eventfd")),
        "no reactor: {fds:?}"
    );
    let sockets: Vec<&str> = fds
        .iter()
        .filter_map(|f| f.strip_prefix("socket:[")?.strip_suffix(']'))
        .collect();
    assert_eq!(sockets.len(), 1, "exactly one socket: {fds:?}");
    for (table, inodes) in &tables {
        if *table == "packet" {
            assert!(
                inodes.iter().any(|i| i == sockets[0]),
                "it is the AF_PACKET capture socket"
            );
            continue;
        }
        assert!(
            !sockets.iter().any(|s| inodes.iter().any(|i| i == s)),
            "no {table} socket"
        );
    }
    assert!(Path::new(&ring).exists());
}

#[test]
fn a_ring_broken_by_someone_else_is_created_again_and_the_sensor_survives() {
    use correlate_lib::ring::RingReader;
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ja4.ring");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ja4sensor"))
        .args([
            "run",
            "--interface",
            "lo",
            "--ports",
            &port.to_string(),
            "--ring",
        ])
        .arg(&ring)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let generation = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = RingReader::open(&ring) {
                return r.generation();
            }
            assert!(Instant::now() < deadline, "no valid ring after {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut last = generation("start");
    let secret = dir.path().join("secret");
    fs::write(&secret, "x").unwrap();
    let faults: [(&str, &dyn Fn()); 4] = [
        ("deleted", &|| fs::remove_file(&ring).unwrap()),
        ("replaced by a FIFO", &|| {
            fs::remove_file(&ring).unwrap();
            assert!(Command::new("mkfifo")
                .arg(&ring)
                .status()
                .unwrap()
                .success());
        }),
        ("replaced by a symlink", &|| {
            fs::remove_file(&ring).unwrap();
            std::os::unix::fs::symlink(&secret, &ring).unwrap();
        }),
        ("truncated", &|| {
            fs::OpenOptions::new()
                .write(true)
                .open(&ring)
                .unwrap()
                .set_len(0)
                .unwrap()
        }),
    ];
    for (what, fault) in faults {
        fault();
        let deadline = Instant::now() + Duration::from_secs(10);
        let now = loop {
            let g = generation(what);
            if g != last {
                break g;
            }
            assert!(
                Instant::now() < deadline,
                "the ring was not created again after {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sensor survived: {what}"
        );
        assert!(fs::symlink_metadata(&ring).unwrap().is_file(), "{what}");
        last = now;
    }
    assert_eq!(
        fs::read_to_string(&secret).unwrap(),
        "x",
        "a planted symlink is never followed"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `ldd`'s list of the shared libraries `binary` needs, direct and indirect.
fn libraries(binary: &str) -> String {
    let out = Command::new("ldd").arg(binary).output().unwrap();
    assert!(out.status.success(), "ldd {binary}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn only_the_capture_binary_is_linked_to_libpcap() {
    // Next to ja4sensor (the workspace's build, `make build`, builds both).
    let pcap = Path::new(env!("CARGO_BIN_EXE_ja4sensor")).with_file_name("ja4sensor-pcap");
    let capture = libraries(pcap.to_str().unwrap());
    assert!(capture.contains("libpcap"), "{capture}");
    // Every other command (query, timeline, report, detect, ship) starts without libpcap and
    // what it pulls in (D-Bus, systemd, gcrypt...).
    let tool = libraries(env!("CARGO_BIN_EXE_ja4sensor"));
    for lib in ["libpcap", "libdbus", "libsystemd", "libgcrypt"] {
        assert!(!tool.contains(lib), "ja4sensor needs {lib}:\n{tool}");
    }
}
