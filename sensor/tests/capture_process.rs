//! `ja4sensor run` holds CAP_NET_RAW: what runs in that process is the capture and nothing
//! else. The same binary carries `ship` (an async runtime, an HTTP client), but `run` never
//! starts them: one thread, one packet socket, no other socket, no epoll or eventfd (what an
//! async reactor would open).

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

    assert_eq!(threads, ["ja4sensor"], "one thread, no runtime workers");
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
