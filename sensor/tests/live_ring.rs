//! Live capture on `lo` into a real ring: a TCP client sends a ClientHello to a local listener
//! while `ja4sensor run` captures, and a `RingReader` must find the record by the connection's
//! 4-tuple, with the SYN's traits joined. Needs root (libpcap on `lo`), like every end-to-end
//! test of `make test`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use correlate_lib::ring::{Lookup, RingReader, SensorCounter};
use correlate_lib::ConnKey;

/// A TLS 1.3-style ClientHello with SNI `ring.test`, ALPN `h2`, two ciphers and
/// supported_versions 1.3/1.2, in one record.
fn client_hello() -> Vec<u8> {
    let mut exts = Vec::new();
    let name = b"ring.test";
    let mut sni = vec![0u8];
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut sni_ext = (sni.len() as u16).to_be_bytes().to_vec();
    sni_ext.extend(sni);
    for (t, d) in [
        (0x0000u16, sni_ext),
        (0x0010, vec![0, 3, 2, b'h', b'2']),
        (0x002b, vec![4, 3, 4, 3, 3]),
        (0x000d, vec![0, 2, 4, 3]),
    ] {
        exts.extend_from_slice(&t.to_be_bytes());
        exts.extend_from_slice(&(d.len() as u16).to_be_bytes());
        exts.extend(d);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend(body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend(msg);
    rec
}

struct Sensor(Child);

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn live_hello_on_loopback_is_published_into_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let ring_path = dir.path().join("live.ring");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let mut sensor = Sensor(
        Command::new(env!("CARGO_BIN_EXE_ja4sensor"))
            .args(["run", "--interface", "lo", "--ports", &port.to_string()])
            .arg("--ring")
            .arg(&ring_path)
            .args(["--sensor-id", "live-test"])
            .env("RUST_LOG", "debug")
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let reader = wait_for("the ring file", || RingReader::open(&ring_path).ok());
    // The ring exists once capture is open (the file is created after the pcap handle).
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (_server, _) = listener.accept().unwrap();
    client.write_all(&client_hello()).unwrap();
    let key = ConnKey::new(client.local_addr().unwrap(), client.peer_addr().unwrap());

    let record = wait_for("the record", || match reader.lookup(&key) {
        Lookup::Hit(r) => Some(r),
        _ => None,
    });
    assert_eq!(record.tls_sni, "ring.test");
    assert_eq!(record.tls_alpn, "h2");
    assert_eq!(record.tls_version, "1.3");
    assert!(record.ja4.starts_with("t13d0204h2_"), "{}", record.ja4);
    assert_eq!(record.sensor_id, "live-test");
    let ip = record.ip.expect("SYN traits joined");
    assert_eq!(ip.ttl, 64);
    let tcp = record.tcp.expect("SYN traits joined");
    assert!(tcp.options.starts_with("MSS"), "{}", tcp.options);
    assert!(record.syn_time_ns > 0 && record.hello_time_ns >= record.syn_time_ns);

    assert_eq!(record.closed_time_ns, 0, "still open");
    // The client closes: its FIN marks the record closed, so a later connection on the same
    // client port cannot join this handshake.
    drop(client);
    let closed = wait_for("the close mark", || match reader.lookup(&key) {
        Lookup::Hit(r) if r.closed_time_ns != 0 => Some(r),
        _ => None,
    });
    assert!(closed.closed_time_ns >= closed.hello_time_ns);
    assert_eq!(closed.ja4, record.ja4);

    wait_for("counters in the ring header", || {
        (reader.counter(SensorCounter::HellosParsed) >= 1
            && reader.counter(SensorCounter::RingWrites) >= 1)
            .then_some(())
    });

    let pid = sensor.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = wait_for("the sensor to exit", || sensor.0.try_wait().unwrap());
    assert!(exit.success(), "sensor exited with {exit}");
}
