//! Issue 18, end to end with real parts: `ReqinLogFingerprint inline|both` (httpd's own SYN and
//! ClientHello, checked against the real sensor's ring), a trusted proxy's fingerprint headers,
//! and the `orphan_reason` of every line without a fingerprint.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use correlate_lib::ring::{Lookup, RingReader};
use correlate_lib::ConnKey;
use e2e_tests::*;
use serde_json::Value;

const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The fields a connection's fingerprint gives a line, from the SYN and from the ClientHello:
/// what inline and the sensor must agree on.
const FINGERPRINT_FIELDS: &[&str] = &[
    "ja4",
    "ja4_r",
    "ja3",
    "ja3_hash",
    "tls_version",
    "tls_sni",
    "tls_alpn",
    "ip_meta_ttl",
    "ip_meta_total_length",
    "ip_meta_id",
    "ip_meta_df",
    "tcp_meta_window_size",
    "tcp_meta_mss",
    "tcp_meta_window_scale",
    "tcp_meta_options",
    "tcp_os",
    "tcp_os_distance",
];

/// One request through `openssl s_client` with extra arguments (`-tls1_2`...); the request's
/// head is written as given.
fn openssl_request(port: u16, args: &[&str], head: &str) -> Result<String> {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-servername", "localhost"])
        .args(args)
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("openssl s_client has no stdin")?;
    stdin.write_all(head.as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn openssl_get_path(port: u16, args: &[&str], path: &str) -> Result<()> {
    let answer = openssl_request(
        port,
        args,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("openssl s_client {args:?} got {answer:?}").into());
    }
    Ok(())
}

fn h2load(args: &[&str], url: &str, n: usize) -> Result<()> {
    let out = Command::new("h2load").args(args).arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains(&format!("{n} succeeded")) {
        return Err(format!("h2load {args:?}: {text}").into());
    }
    Ok(())
}

/// The clients of the other end-to-end suites, each on paths of its own (`/?c=<label>`):
/// curl HTTP/1.1 with SNI and keep-alive, curl HTTP/2 streams, openssl s_client TLS 1.2 and
/// TLS 1.3, h2load over HTTP/2 and HTTP/1.1, curl over IPv6. Returns how many requests each
/// made.
fn run_clients(h: &Httpd, port6: u16) -> Result<Vec<(&'static str, usize)>> {
    let base = format!("https://localhost:{}", h.tls_port);
    let resolve = format!("localhost:{}:127.0.0.1", h.tls_port);
    let two = [format!("{base}/?c=curl-h1"), format!("{base}/?c=curl-h1")];
    curl(&["--http1.1", "--resolve", &resolve], &two)?;
    let streams: Vec<String> = (0..3).map(|_| h.https_url("/?c=curl-h2")).collect();
    curl(&["--http2"], &streams)?;
    openssl_get_path(h.tls_port, &["-tls1_2"], "/?c=openssl-tls12")?;
    openssl_get_path(h.tls_port, &["-tls1_3"], "/?c=openssl-tls13")?;
    h2load(
        &["-n", "10", "-c", "2", "-m", "5"],
        &h.https_url("/?c=h2load-h2"),
        10,
    )?;
    h2load(
        &["--h1", "-n", "6", "-c", "3"],
        &h.https_url("/?c=h2load-h1"),
        6,
    )?;
    let v6 = format!("https://[::1]:{port6}/?c=curl-ipv6");
    curl(&["-6", "-g", "--http1.1"], &[v6.clone(), v6])?;
    Ok(vec![
        ("curl-h1", 2),
        ("curl-h2", 3),
        ("openssl-tls12", 1),
        ("openssl-tls13", 1),
        ("h2load-h2", 10),
        ("h2load-h1", 6),
        ("curl-ipv6", 2),
    ])
}

/// The lines of each client (by its query), once every request is in the log.
fn lines_by_client(
    h: &Httpd,
    expected: &[(&'static str, usize)],
) -> Result<BTreeMap<&'static str, Vec<Value>>> {
    let total: usize = expected.iter().map(|(_, n)| n).sum();
    wait_for(LINE_TIMEOUT, &format!("{total} lines"), || {
        let lines = h.log_lines().ok()?;
        let mut by = BTreeMap::new();
        for (label, n) in expected {
            let mine: Vec<Value> = lines
                .iter()
                .filter(|l| l["query"] == format!("c={label}"))
                .cloned()
                .collect();
            if mine.len() < *n {
                return None;
            }
            by.insert(*label, mine);
        }
        Some(by)
    })
    .map_err(|e| format!("{e}: {:?}", h.log_lines()).into())
}

/// An IPv6 TLS virtual host on a free port, beside the template's IPv4 one.
fn ipv6_vhost(root: &Path, port6: u16) -> String {
    format!(
        "Listen [::1]:{port6}\n\
         <VirtualHost [::1]:{port6}>\n\
           SSLEngine on\n\
           SSLCertificateFile \"{cert}\"\n\
           SSLCertificateKeyFile \"{key}\"\n\
         </VirtualHost>\n",
        cert = root.join("cert.pem").display(),
        key = root.join("key.pem").display(),
    )
}

fn free_port6() -> Result<u16> {
    Ok(TcpListener::bind("[::1]:0")?.local_addr()?.port())
}

fn wait_listening6(port6: u16) -> Result<()> {
    wait_for(STARTUP_TIMEOUT, "httpd to listen on [::1]", || {
        TcpStream::connect(("::1", port6)).ok()
    })?;
    Ok(())
}

fn conn_key(line: &Value) -> Result<ConnKey> {
    let addr = |ip: &str, port: &str| -> Result<std::net::SocketAddr> {
        Ok(std::net::SocketAddr::new(
            str_field(line, ip)?.parse()?,
            u16::try_from(u64_field(line, port)?)?,
        ))
    };
    Ok(ConnKey::new(
        addr("src_ip", "src_port")?,
        addr("dst_ip", "dst_port")?,
    ))
}

fn status(h: &Httpd) -> Result<std::collections::HashMap<String, f64>> {
    prometheus(&h.http_url("/reqin-status"))
}

fn metric(m: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

#[test]
fn both_agrees_with_the_sensor_field_by_field_and_inline_alone_gives_the_same_lines() -> Result<()>
{
    let port6 = free_port6()?;
    let stack = Stack::start_with("event", &[port6], |root| {
        format!(
            "ReqinLogFingerprint both\n{STATUS_CONF}{}",
            ipv6_vhost(root, port6)
        )
    })?;
    let h = &stack.httpd;
    wait_listening6(port6)?;
    let expected = run_clients(h, port6)?;
    let both = lines_by_client(h, &expected)?;
    // The sensor's own records, read from its ring by this test: the reference.
    let ring = RingReader::open(&h.ring)?;
    let mut lines = 0;
    for (client, client_lines) in &both {
        for line in client_lines {
            lines += 1;
            assert!(bool_field(line, "correlated")?, "{client}: {line}");
            assert_eq!(str_field(line, "fingerprint_source")?, "inline", "{line}");
            assert!(line.get("orphan_reason").is_none(), "{client}: {line}");
            // The sensor's own fields, which only `both` adds to an inline line.
            str_field(line, "sensor_id")?;
            u64_field(line, "syn_to_clienthello_ms")?;
            let key = conn_key(line)?;
            let Lookup::Hit(record) = ring.lookup(&key) else {
                return Err(format!("{client}: no ring record for {key:?}").into());
            };
            let sensor = record.json_fields();
            for field in FINGERPRINT_FIELDS {
                assert_eq!(
                    line.get(*field),
                    sensor.get(*field),
                    "{client}: {field} inline vs sensor: {line}"
                );
            }
            assert_eq!(
                line["b_timestamp"], sensor["timestamp"],
                "the sensor's hello time"
            );
        }
    }
    let m = status(h)?;
    assert_eq!(
        metric(&m, r#"reqin_log_crosscheck_lines_total{result="disagree"}"#),
        0.0,
        "{}",
        h.error_log_text()
    );
    assert_eq!(
        metric(&m, r#"reqin_log_crosscheck_lines_total{result="agree"}"#),
        lines as f64
    );
    assert_eq!(h.crashed_children(), Vec::<String>::new());

    // The same clients against `inline` alone, no sensor anywhere: the same fingerprints.
    let root = server_root()?;
    let port6 = free_port6()?;
    let opts = HttpdOptions {
        extra_conf: format!(
            "ReqinLogFingerprint inline\n{}",
            ipv6_vhost(root.path(), port6)
        ),
        ..HttpdOptions::default()
    };
    let alone = Httpd::start(root.path(), &root.path().join("no-sensor.ring"), &opts)?;
    wait_listening6(port6)?;
    let expected = run_clients(&alone, port6)?;
    let inline = lines_by_client(&alone, &expected)?;
    assert!(!alone.ring.exists(), "nothing made a ring");
    for (client, client_lines) in &inline {
        let reference = &both[client][0];
        for line in client_lines {
            assert!(bool_field(line, "correlated")?, "{client}: {line}");
            assert_eq!(str_field(line, "fingerprint_source")?, "inline");
            assert!(line.get("orphan_reason").is_none(), "{client}: {line}");
            for only_the_sensor_knows in ["sensor_id", "syn_to_clienthello_ms"] {
                assert!(line.get(only_the_sensor_knows).is_none(), "{line}");
            }
            // The IP id is the one field of a SYN that changes from connection to connection.
            for field in FINGERPRINT_FIELDS.iter().filter(|f| **f != "ip_meta_id") {
                assert_eq!(
                    line.get(*field),
                    reference.get(*field),
                    "{client}: {field} alone vs in both: {line}"
                );
            }
            u64_field(line, "ip_meta_id")?;
            // The accept time stands in for the hello's.
            assert!(u64_field(line, "b_timestamp")? <= u64_field(line, "a_timestamp")?);
        }
    }
    assert_eq!(alone.crashed_children(), Vec::<String>::new());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A small MTU: the hello in several TCP segments, inline and sensor alike

/// A private network namespace whose loopback has MTU 300 and no segmentation offload, as
/// sensor/tests/netns_split_hello.rs uses: curl's ClientHello travels in three segments.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Result<Self> {
        let name = format!("reqin-inl-{}", std::process::id());
        let add = Command::new("ip").args(["netns", "add", &name]).status()?;
        if !add.success() {
            return Err(format!("ip netns add {name} failed (root needed)").into());
        }
        let ns = Self { name };
        let up = Command::new("ip")
            .args(["-n", &ns.name, "link", "set", "lo", "up", "mtu", "300"])
            .args(["gso_max_segs", "1"])
            .status()?;
        if !up.success() {
            return Err("configuring lo in the namespace failed".into());
        }
        Ok(ns)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ns_curl(ns: &Netns, args: &[&str]) -> Result<String> {
    let out = ns
        .command("curl")
        .args(["-sk", "--max-time", "10"])
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("curl {args:?} in the namespace: {}", out.status).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_hello_split_over_several_segments_is_fingerprinted_identically_inline() -> Result<()> {
    let ns = Netns::create()?;
    let root = server_root()?;
    let ring = root.path().join("split.ring");
    let tls_port = free_port()?;
    let pcap = root.path().join("split.pcap");
    let mut dump = ns
        .command("tcpdump")
        .args(["-i", "lo", "-nn", "-U", "--immediate-mode", "-w"])
        .arg(&pcap)
        .arg(format!("tcp dst port {tls_port}"))
        .stderr(Stdio::null())
        .spawn()?;
    let mut sensor = ns
        .command(sensor_path())
        .args(["run", "-i", "lo", "-p", &tls_port.to_string(), "--ring"])
        .arg(&ring)
        .args(["--ring-group", HTTPD_GROUP])
        .stderr(Stdio::null())
        .spawn()?;
    let stop = |c: &mut std::process::Child| {
        if let Ok(None) = c.try_wait() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    };
    let result = (|| -> Result<()> {
        wait_for(STARTUP_TIMEOUT, "the sensor's ring", || {
            ring.exists().then_some(())
        })?;
        wait_for(STARTUP_TIMEOUT, "tcpdump", || pcap.exists().then_some(()))?;
        let opts = HttpdOptions {
            tls_port: Some(tls_port),
            netns: Some(ns.name.clone()),
            extra_conf: format!("ReqinLogFingerprint both\n{STATUS_CONF}"),
            ..HttpdOptions::default()
        };
        let h = Httpd::start(root.path(), &ring, &opts)?;
        let url = format!("https://split.example:{tls_port}/?c=split");
        let resolve = format!("split.example:{tls_port}:127.0.0.1");
        ns_curl(
            &ns,
            &["--http1.1", "-o", "/dev/null", "--resolve", &resolve, &url],
        )?;
        let lines = wait_for(LINE_TIMEOUT, "the split hello's line", || {
            h.log_lines()
                .ok()?
                .into_iter()
                .find(|l| l["query"] == "c=split")
        })?;
        let line = &lines;
        assert_eq!(str_field(line, "fingerprint_source")?, "inline", "{line}");
        assert_eq!(str_field(line, "tls_sni")?, "split.example");
        assert_eq!(
            u64_field(line, "tcp_meta_mss")?,
            260,
            "the MTU-300 loopback: {line}"
        );
        str_field(line, "sensor_id")?;
        let status = ns_curl(
            &ns,
            &[&format!("http://127.0.0.1:{}/reqin-status", h.http_port)],
        )?;
        assert!(
            status.contains("reqin_log_crosscheck_lines_total{result=\"agree\"} 1\n")
                && status.contains("reqin_log_crosscheck_lines_total{result=\"disagree\"} 0\n"),
            "inline and the sensor agree on the split hello: {status}"
        );

        // tshark's own reassembly of the same traffic: its JA3, and that the hello was split.
        thread::sleep(Duration::from_millis(300));
        stop(&mut dump);
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(["-Y", "tls.handshake.type == 1", "-T", "fields"])
            .args(["-e", "tls.handshake.ja3_full", "-e", "tcp.len"])
            .args(["-e", "tls.handshake.length"])
            .stderr(Stdio::null())
            .output()?;
        let text = String::from_utf8(out.stdout)?;
        let fields: Vec<&str> = text
            .lines()
            .next()
            .ok_or("tshark saw no hello")?
            .split('\t')
            .collect();
        assert_eq!(fields.first().copied(), Some(str_field(line, "ja3")?));
        let last_segment: usize = fields.get(1).ok_or("tcp.len")?.parse()?;
        let hello_len: usize = fields.get(2).ok_or("tls.handshake.length")?.parse()?;
        assert!(
            last_segment < hello_len,
            "the hello spanned several segments"
        );

        // SYN cookies for every connection (this namespace only): the kernel keeps no SYN,
        // the line says so and still has the TLS fields.
        let cookies = ns
            .command("sysctl")
            .args(["-qw", "net.ipv4.tcp_syncookies=2"])
            .status()?;
        assert!(cookies.success());
        let url = format!("https://split.example:{tls_port}/?c=cookie");
        ns_curl(
            &ns,
            &["--http1.1", "-o", "/dev/null", "--resolve", &resolve, &url],
        )?;
        let line = wait_for(LINE_TIMEOUT, "the SYN-cookie line", || {
            h.log_lines()
                .ok()?
                .into_iter()
                .find(|l| l["query"] == "c=cookie")
        })?;
        assert_eq!(
            str_field(&line, "orphan_reason")?,
            "syn_not_saved",
            "{line}"
        );
        assert_eq!(str_field(&line, "fingerprint_source")?, "inline");
        assert_eq!(str_field(&line, "tls_sni")?, "split.example");
        assert!(line.get("tcp_meta_options").is_none(), "{line}");
        assert_eq!(h.crashed_children(), Vec::<String>::new());
        Ok(())
    })();
    stop(&mut dump);
    stop(&mut sensor);
    result
}

// ---------------------------------------------------------------------------------------------
// mod_ssl's trace, MPMs, graceful restarts

#[test]
fn mod_ssl_at_trace4_still_logs_its_trace_and_inline_still_fingerprints() -> Result<()> {
    let root = server_root()?;
    let opts = HttpdOptions {
        extra_conf: "ReqinLogFingerprint inline\nLogLevel warn ssl:trace4 reqin_log:debug\n".into(),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &root.path().join("none.ring"), &opts)?;
    for tls in [&["--tls-max", "1.2"][..], &[][..]] {
        let mut args = vec!["--http1.1"];
        args.extend_from_slice(tls);
        let p = curl(&args, &[h.https_url("/")])?;
        let lines = wait_lines_for_ports(&h, &p, LINE_TIMEOUT)?;
        let line = &lines_for_port(&lines, p[0])[0];
        assert_eq!(str_field(line, "fingerprint_source")?, "inline", "{line}");
        assert!(str_field(line, "ja4")?.starts_with('t'), "{line}");
        str_field(line, "tcp_meta_options")?;
    }
    let log = h.error_log_text();
    for trace in ["Handshake: start", "Handshake: done", "Loop: "] {
        assert!(
            log.contains(trace),
            "mod_ssl's info-callback trace ({trace:?}) is still written"
        );
    }
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn inline_works_under_every_mpm_and_keeps_the_syn_across_a_graceful_restart() -> Result<()> {
    for mpm in ["prefork", "worker", "event"] {
        let root = server_root()?;
        let opts = HttpdOptions {
            mpm,
            extra_conf: "ReqinLogFingerprint inline\n".into(),
            ..HttpdOptions::default()
        };
        let h = Httpd::start(root.path(), &root.path().join("none.ring"), &opts)?;
        let check = |h: &Httpd, what: &str| -> Result<()> {
            let mut ports = curl(&["--http1.1"], &[h.https_url("/"), h.https_url("/")])?;
            ports.extend(curl(&["--http2"], &[h.https_url("/"), h.https_url("/")])?);
            let lines = wait_lines_for_ports(h, &ports, LINE_TIMEOUT)?;
            for port in &ports {
                for line in lines_for_port(&lines, *port) {
                    assert_eq!(
                        str_field(&line, "fingerprint_source")?,
                        "inline",
                        "{mpm} {what}: {line}"
                    );
                    str_field(&line, "tcp_meta_options")?;
                    str_field(&line, "ja4")?;
                }
            }
            Ok(())
        };
        check(&h, "at start")?;
        h.ctl("graceful")?;
        // The restarted generation's children accept on the same, inherited sockets.
        thread::sleep(Duration::from_millis(1500));
        check(&h, "after a graceful restart")?;
        assert_eq!(h.crashed_children(), Vec::<String>::new(), "{mpm}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A trusted proxy's fingerprint headers

#[test]
fn a_trusted_front_passes_the_clients_ja4_and_anyone_elses_header_is_dropped() -> Result<()> {
    // The back: plain HTTP from the front, which it trusts (127.0.0.1); a SetEnvIf after our
    // hook shows whether any other module still sees the header.
    let back_root = server_root()?;
    let back_conf = format!(
        "LoadModule setenvif_module {MODULES}/mod_setenvif.so\n\
         LoadModule headers_module {MODULES}/mod_headers.so\n\
         ReqinLogTrustedProxy 127.0.0.1\n\
         JsonSockLogHeaders CloudFront-Viewer-JA4-Fingerprint\n\
         SetEnvIf CloudFront-Viewer-JA4-Fingerprint \".\" SAW_JA4\n\
         Header always set X-Saw-JA4 yes env=SAW_JA4\n\
         Header always set X-Back-JA4 \"%{{JA4}}e\"\n"
    );
    let back = Httpd::start(
        back_root.path(),
        &back_root.path().join("none.ring"),
        &HttpdOptions {
            extra_conf: back_conf,
            ..HttpdOptions::default()
        },
    )?;
    // The front: the client's TLS, fingerprinted inline, passed on as CloudFront does.
    let front_root = server_root()?;
    let front_conf = format!(
        "LoadModule headers_module {MODULES}/mod_headers.so\n\
         LoadModule proxy_module {MODULES}/mod_proxy.so\n\
         LoadModule proxy_http_module {MODULES}/mod_proxy_http.so\n\
         ReqinLogFingerprint inline\n\
         RequestHeader set CloudFront-Viewer-JA4-Fingerprint \"%{{JA4}}e\"\n\
         RequestHeader set CloudFront-Viewer-JA3-Fingerprint \"%{{JA3_HASH}}e\"\n\
         ProxyPass /app/ http://127.0.0.1:{}/\n",
        back.http_port
    );
    let front = Httpd::start(
        front_root.path(),
        &front_root.path().join("none.ring"),
        &HttpdOptions {
            extra_conf: front_conf,
            ..HttpdOptions::default()
        },
    )?;
    let headers = curl_output(&[
        "--http1.1",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &front.https_url("/app/index.html?via=front"),
    ])?;
    let front_line = wait_for(LINE_TIMEOUT, "the front's line", || {
        front
            .log_lines()
            .ok()?
            .into_iter()
            .find(|l| l["query"] == "via=front")
    })?;
    let back_line = wait_for(LINE_TIMEOUT, "the back's line", || {
        back.log_lines()
            .ok()?
            .into_iter()
            .find(|l| l["query"] == "via=front")
    })?;
    assert_eq!(str_field(&front_line, "fingerprint_source")?, "inline");
    let client_ja4 = str_field(&front_line, "ja4")?;
    assert_eq!(
        str_field(&back_line, "fingerprint_source")?,
        "upstream",
        "{back_line}"
    );
    assert!(bool_field(&back_line, "correlated")?);
    assert_eq!(
        str_field(&back_line, "ja4")?,
        client_ja4,
        "the client's, not the front's"
    );
    assert_eq!(
        str_field(&back_line, "ja3_hash")?,
        str_field(&front_line, "ja3_hash")?
    );
    for proxy_connection_field in ["tls_version", "ja4_r", "tcp_meta_options", "orphan_reason"] {
        assert!(
            back_line.get(proxy_connection_field).is_none(),
            "{back_line}"
        );
    }
    assert_eq!(
        str_field(&back_line, "header_CloudFront-Viewer-JA4-Fingerprint")?,
        client_ja4
    );
    let headers = headers.to_ascii_lowercase();
    assert!(
        headers.contains("x-saw-ja4: yes"),
        "the trusted header stays: {headers}"
    );
    assert!(
        headers.contains(&format!("x-back-ja4: {}", client_ja4.to_ascii_lowercase())),
        "the back's JA4 variable: {headers}"
    );

    // A client that is not the front (127.0.0.2), straight to the back, forging the header.
    let forged = "t13d1516h2_8daaf6152771_e5627efa2ab1";
    let headers = curl_output(&[
        "--interface",
        "127.0.0.2",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        &format!("CloudFront-Viewer-JA4-Fingerprint: {forged}"),
        &back.http_url("/index.html?via=forged"),
    ])?;
    let line = wait_for(LINE_TIMEOUT, "the forged request's line", || {
        back.log_lines()
            .ok()?
            .into_iter()
            .find(|l| l["query"] == "via=forged")
    })?;
    assert_eq!(str_field(&line, "src_ip")?, "127.0.0.2");
    assert_eq!(
        str_field(&line, "orphan_reason")?,
        "upstream_untrusted",
        "{line}"
    );
    assert!(!bool_field(&line, "correlated")?);
    assert!(line.get("ja4").is_none(), "{line}");
    assert!(
        line.get("header_CloudFront-Viewer-JA4-Fingerprint")
            .is_none(),
        "removed before the log: {line}"
    );
    let headers = headers.to_ascii_lowercase();
    assert!(
        !headers.contains("x-saw-ja4"),
        "mod_setenvif never saw the forged header: {headers}"
    );
    assert!(!headers.contains(forged), "{headers}");
    for h in [&front, &back] {
        assert_eq!(h.crashed_children(), Vec::<String>::new());
    }
    Ok(())
}

const MODULES: &str = "/usr/lib/apache2/modules";

// ---------------------------------------------------------------------------------------------
// Why a line has no fingerprint

fn line_for(h: &Httpd, query: &str) -> Result<Value> {
    wait_for(LINE_TIMEOUT, &format!("the line of ?{query}"), || {
        h.log_lines()
            .ok()?
            .into_iter()
            .find(|l| l["query"] == query)
    })
}

fn reason_of(h: &Httpd, query: &str) -> Result<String> {
    let line = line_for(h, query)?;
    assert!(!bool_field(&line, "correlated")?, "{line}");
    assert!(line.get("fingerprint_source").is_none(), "{line}");
    Ok(str_field(&line, "orphan_reason")?.to_owned())
}

#[test]
fn every_orphan_reason_comes_from_a_real_scenario_and_is_counted() -> Result<()> {
    // The sensor captures the template's TLS port only; a second TLS port excludes the local
    // clients, a third is not captured at all.
    let excluded_port = free_port()?;
    let uncaptured_port = free_port()?;
    let mut stack = Stack::start_with("event", &[excluded_port], |root| {
        let vhost = |port: u16, inside: &str| {
            format!(
                "Listen 127.0.0.1:{port}\n\
                 <VirtualHost 127.0.0.1:{port}>\n\
                   SSLEngine on\n\
                   SSLCertificateFile \"{cert}\"\n\
                   SSLCertificateKeyFile \"{key}\"\n\
                   {inside}\n\
                 </VirtualHost>\n",
                cert = root.join("cert.pem").display(),
                key = root.join("key.pem").display(),
            )
        };
        format!(
            "ReqinLogOrphanDelay 300ms\nReqinLogTrustedProxy 192.0.2.1\n{STATUS_CONF}{}{}",
            vhost(excluded_port, "ReqinLogExcludeSource 127.0.0.0/8"),
            vhost(uncaptured_port, ""),
        )
    })?;
    let h = &stack.httpd;
    let tls = |port: u16, query: &str| -> Result<()> {
        curl(
            &["--http1.1"],
            &[format!("https://127.0.0.1:{port}/?{query}")],
        )
        .map(drop)
    };
    tls(h.tls_port, "joined")?;
    let joined = line_for(h, "joined")?;
    assert_eq!(
        str_field(&joined, "fingerprint_source")?,
        "sensor",
        "{joined}"
    );
    assert!(joined.get("orphan_reason").is_none());

    curl(&[], &[h.http_url("/?plain")])?;
    assert_eq!(reason_of(h, "plain")?, "no_tls");
    tls(excluded_port, "excluded")?;
    assert_eq!(reason_of(h, "excluded")?, "excluded");
    tls(uncaptured_port, "uncaptured")?;
    assert_eq!(reason_of(h, "uncaptured")?, "not_in_ring");
    // A fingerprint header from a peer that is not the trusted proxy: removed, and said.
    curl(
        &[
            "-H",
            "CloudFront-Viewer-JA4-Fingerprint: t13d1516h2_8daaf6152771_e5627efa2ab1",
        ],
        &[h.http_url("/?forged")],
    )?;
    assert_eq!(reason_of(h, "forged")?, "upstream_untrusted");

    // The sensor stops: its ring stays mapped, its watermark goes stale.
    if let Some(mut s) = stack.sensor.take() {
        s.stop()?;
    }
    thread::sleep(Duration::from_millis(1200));
    tls(h.tls_port, "stopped")?;
    assert_eq!(reason_of(h, "stopped")?, "sensor_down");
    // Its ring deleted too: nothing will write the mapping again.
    std::fs::remove_file(&h.ring)?;
    thread::sleep(Duration::from_millis(1100)); // children re-check the ring once per second
    tls(h.tls_port, "deleted-1")?;
    line_for(h, "deleted-1")?;
    thread::sleep(Duration::from_millis(1100));
    tls(h.tls_port, "deleted")?;
    assert_eq!(reason_of(h, "deleted")?, "ring_missing");

    let m = status(h)?;
    for reason in [
        "no_tls",
        "excluded",
        "not_in_ring",
        "upstream_untrusted",
        "sensor_down",
        "ring_missing",
    ] {
        let counted = metric(
            &m,
            &format!("reqin_log_orphan_reason_lines_total{{reason=\"{reason}\"}}"),
        );
        assert!(counted >= 1.0, "{reason} counted: {m:?}");
    }
    assert!(
        metric(
            &m,
            r#"reqin_log_fingerprinted_lines_total{source="sensor"}"#
        ) >= 1.0
    );
    assert!(metric(&m, "reqin_log_upstream_headers_removed_total") >= 1.0);
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JA4T and JA4H (cargo feature `foxio`)

/// The module built with the cargo feature `foxio` (`make build` builds it into
/// `target/foxio/`); `REQIN_FOXIO_MODULE` names another.
fn foxio_module() -> Result<PathBuf> {
    let path = std::env::var_os("REQIN_FOXIO_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"));
            base.join("foxio/debug/libmod_reqin_log.so")
        });
    if !path.exists() {
        return Err(format!(
            "{} is missing: cargo build -p mod_reqin_log --features foxio --target-dir target/foxio (make build does)",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// The first 12 hex digits of SHA-256, by `sha256sum`: JA4H's hash, computed apart from the
/// module.
fn sha12(text: &str) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("sha256sum has no stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8(out.stdout)?[..12].to_owned())
}

#[test]
fn ja4plus_puts_ja4t_and_ja4h_in_the_line_and_the_environment() -> Result<()> {
    let module = foxio_module()?;
    let root = server_root()?;
    let opts = HttpdOptions {
        module: Some(module),
        extra_conf: format!(
            "LoadModule headers_module {MODULES}/mod_headers.so\n\
             ReqinLogFingerprint inline\n\
             ReqinLogJA4Plus On\n\
             Header always set X-JA4T \"%{{JA4T}}e\"\n\
             Header always set X-JA4H \"%{{JA4H}}e\"\n\
             Header always set X-JA4H-R \"%{{JA4H_R}}e\"\n"
        ),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &root.path().join("none.ring"), &opts)?;
    let head =
        "GET /?c=ja4h HTTP/1.1\r\nHost: localhost\r\nUser-Agent: reqin-e2e\r\nAccept: */*\r\n\
                Cookie: session=s3cr3t; theme=dark\r\nAccept-Language: en-US,en;q=0.9\r\n\
                Connection: close\r\n\r\n";
    let answer = openssl_request(h.tls_port, &[], head)?;
    let line = line_for(&h, "c=ja4h")?;
    // JA4H by its definition, from the request this test wrote: method, version, cookie,
    // no referer, five headers besides Cookie, the language; then three hashes.
    let expected = format!(
        "ge11cn05enus_{}_{}_{}",
        sha12("Host,User-Agent,Accept,Accept-Language,Connection")?,
        sha12("session,theme")?,
        sha12("session=s3cr3t,theme=dark")?
    );
    assert_eq!(str_field(&line, "ja4h")?, expected, "{line}");
    assert_eq!(
        str_field(&line, "ja4h_r")?,
        "ge11cn05enus_Host,User-Agent,Accept,Accept-Language,Connection_session,theme_session=[REDACTED],theme=[REDACTED]",
        "cookie values are credentials"
    );
    assert!(!line.to_string().contains("s3cr3t"), "{line}");
    // JA4T from the line's own SYN fields, with Linux's option order on loopback.
    let ja4t = format!(
        "{}_2-4-8-1-3_{}_{}",
        u64_field(&line, "tcp_meta_window_size")?,
        u64_field(&line, "tcp_meta_mss")?,
        u64_field(&line, "tcp_meta_window_scale")?
    );
    assert_eq!(
        str_field(&line, "tcp_meta_options")?,
        "MSS,SACK,Timestamps,NOP,WScale"
    );
    assert_eq!(str_field(&line, "ja4t")?, ja4t, "{line}");
    let answer = answer.to_ascii_lowercase();
    for (header, value) in [("x-ja4t", ja4t.as_str()), ("x-ja4h", expected.as_str())] {
        assert!(
            answer.contains(&format!("{header}: {}\r\n", value.to_ascii_lowercase())),
            "{header} in the environment: {answer}"
        );
    }
    assert!(answer.contains("x-ja4h-r: ge11cn05enus_"), "{answer}");
    assert!(!answer.contains("s3cr3t"), "{answer}");

    // HTTP/2: the version says 20, the pseudo-headers are not headers.
    let p = curl(&["--http2", "-b", "a=1"], &[h.https_url("/?c=h2")])?;
    let line = line_for(&h, "c=h2")?;
    assert_eq!(u64_field(&line, "src_port")?, u64::from(p[0]));
    let ja4h = str_field(&line, "ja4h")?;
    assert!(ja4h.starts_with("ge20cn"), "{line}");
    assert!(
        str_field(&line, "ja4h_r")?.ends_with("_a_a=[REDACTED]"),
        "{line}"
    );
    assert_eq!(
        str_field(&line, "ja4t")?.split('_').nth(1),
        Some("2-4-8-1-3")
    );
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_module_without_foxio_refuses_ja4plus_on() -> Result<()> {
    let root = server_root()?;
    let (ok, out) = config_test(root.path(), "ReqinLogJA4Plus On\n")?;
    assert!(!ok, "{out}");
    assert!(
        out.contains("ReqinLogJA4Plus") && out.contains("foxio"),
        "{out}"
    );
    let (ok, out) = config_test(root.path(), "ReqinLogFingerprint sometimes\n")?;
    assert!(!ok && out.contains("sensor, inline or both"), "{out}");
    Ok(())
}
