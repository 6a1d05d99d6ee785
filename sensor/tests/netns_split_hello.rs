//! Real traffic, really split: inside a private network namespace whose loopback has MTU 300
//! and no segmentation offload (`gso_max_segs 1`, so the capture sees the segments the wire
//! would carry), curl talks TLS to `openssl s_server` while `ja4sensor run` captures. curl's
//! ~520-byte ClientHello travels in three TCP segments; the ring record must carry the JA3 that
//! tshark computes from its own reassembly of the same traffic, the SYN traits, and the close
//! time of curl's FIN. Needs root (network namespaces, pcap), like every capture test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use correlate_lib::ring::{Lookup, RingReader};
use correlate_lib::ConnKey;

const PORT: u16 = 4433;
const CLIENT_PORT: u16 = 45_123;

struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Netns {
    fn create() -> Option<Self> {
        let name = format!("ja4s-test-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let ns = Self {
            name,
            children: Vec::new(),
        };
        let status = Command::new("ip")
            .args(["-n", &ns.name, "link", "set", "lo", "up", "mtu", "300"])
            .args(["gso_max_segs", "1"])
            .status()
            .unwrap();
        assert!(status.success(), "configuring lo in {}", ns.name);
        Some(ns)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    fn spawn(&mut self, mut command: Command) -> u32 {
        let child = command.stdout(Stdio::null()).spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
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

fn self_signed_cert(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=split.example", "-days", "1"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn curl_hello_split_by_a_small_mtu_is_reassembled_live() {
    let Some(mut ns) = Netns::create() else {
        eprintln!("SKIP: cannot create a network namespace (not root?)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    self_signed_cert(dir.path());
    let ring_path = dir.path().join("split.ring");
    let pcap_path = dir.path().join("split.pcap");

    let mut server = ns.command("openssl");
    server
        .args(["s_server", "-quiet", "-www", "-accept", &PORT.to_string()])
        .arg("-cert")
        .arg(dir.path().join("cert.pem"))
        .arg("-key")
        .arg(dir.path().join("key.pem"));
    ns.spawn(server);
    let mut dump = ns.command("tcpdump");
    dump.args(["-i", "lo", "-nn", "-U", "--immediate-mode", "-w"])
        .arg(&pcap_path)
        .arg(format!("tcp dst port {PORT}"))
        .stderr(Stdio::null());
    let dump_pid = ns.spawn(dump);
    let mut sensor = ns.command(env!("CARGO_BIN_EXE_ja4sensor"));
    sensor
        .args(["run", "-i", "lo", "-p", &PORT.to_string(), "--ring"])
        .arg(&ring_path);
    ns.spawn(sensor);

    let reader = wait_for("the ring", || RingReader::open(&ring_path).ok());
    wait_for("tcpdump", || pcap_path.exists().then_some(()));
    wait_for("curl to succeed", || {
        ns.command("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "--local-port",
                &CLIENT_PORT.to_string(),
            ])
            .args(["--resolve", &format!("split.example:{PORT}:127.0.0.1")])
            .arg(format!("https://split.example:{PORT}/"))
            .status()
            .unwrap()
            .success()
            .then_some(())
    });

    let key = ConnKey::new(
        format!("127.0.0.1:{CLIENT_PORT}").parse().unwrap(),
        format!("127.0.0.1:{PORT}").parse().unwrap(),
    );
    let record = wait_for("the closed record", || match reader.lookup(&key) {
        Lookup::Hit(r) if r.closed_time_ns != 0 => Some(r),
        _ => None,
    });
    assert_eq!(record.tls_sni, "split.example");
    assert!(record.ja4.starts_with("t13d"), "{}", record.ja4);
    let tcp = record.tcp.clone().expect("SYN traits");
    assert_eq!(tcp.mss, 260, "MSS of the MTU-300 loopback");
    assert_eq!(tcp.options, "MSS,SACK,Timestamps,NOP,WScale");

    // tshark's view of the same traffic: its JA3 and proof that the hello was split.
    Command::new("kill")
        .arg(dump_pid.to_string())
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap_path)
        .args(["-Y", "tls.handshake.type == 1", "-T", "fields"])
        .args([
            "-e",
            "tls.handshake.ja3_full",
            "-e",
            "tcp.len",
            "-e",
            "tls.handshake.length",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = text
        .lines()
        .next()
        .expect("tshark saw the hello")
        .split('\t')
        .collect();
    assert_eq!(fields[0], record.ja3, "JA3 agrees with tshark");
    let last_segment: usize = fields[1].parse().unwrap();
    let hello_len: usize = fields[2].parse().unwrap();
    assert!(
        last_segment < hello_len,
        "the hello spanned several segments"
    );
}
