//! mod_reqin_log next to what an Apache administrator already runs: Debian's `a2enmod`, a piped
//! log through `rotatelogs`, a `mod_proxy` backend, `mod_remoteip`, an IPv6 listener, and the
//! status counters across graceful restarts. Real Debian apache2, the real sensor on `lo`, real
//! clients; loopback only, free ports.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use e2e_tests::*;
use serde_json::Value;

const LINE_TIMEOUT: Duration = Duration::from_secs(20);
const MODULES: &str = "/usr/lib/apache2/modules";
/// Debian's apache2-utils.
const ROTATELOGS: &str = "/usr/bin/rotatelogs";

// ---------------------------------------------------------------------------------------------
// a2enmod / a2dismod

/// A private copy of Debian's /etc/apache2 (never the real one: another test uses it), with
/// every runtime directory under `dir`, driven through Debian's own scripts.
struct DebianConfDir {
    confdir: PathBuf,
    state: PathBuf,
    run: PathBuf,
    log: PathBuf,
}

impl DebianConfDir {
    fn copy_into(dir: &Path, listen_port: u16) -> Result<Self> {
        let confdir = dir.join("apache2");
        let status = Command::new("cp")
            .arg("-a")
            .arg("/etc/apache2")
            .arg(&confdir)
            .status()?;
        if !status.success() {
            return Err(format!("cp -a /etc/apache2 {}: {status}", confdir.display()).into());
        }
        // Whatever another engineer installed into the real tree is not ours to test.
        for sub in ["mods-available", "mods-enabled"] {
            for ext in ["load", "conf"] {
                let _ = fs::remove_file(confdir.join(sub).join(format!("reqin_log.{ext}")));
            }
        }
        let (state, run, log) = (dir.join("state"), dir.join("run"), dir.join("log"));
        for d in [&state, &run, &log, &dir.join("lock")] {
            fs::create_dir_all(d)?;
        }
        let mut envvars = fs::OpenOptions::new()
            .append(true)
            .open(confdir.join("envvars"))?;
        writeln!(envvars, "\n# reqin e2e: private runtime directories")?;
        writeln!(envvars, "export APACHE_RUN_DIR={}", run.display())?;
        writeln!(
            envvars,
            "export APACHE_PID_FILE={}/apache2.pid",
            run.display()
        )?;
        writeln!(envvars, "export APACHE_LOCK_DIR={}/lock", dir.display())?;
        writeln!(envvars, "export APACHE_LOG_DIR={}", log.display())?;
        fs::write(
            confdir.join("ports.conf"),
            format!("Listen 127.0.0.1:{listen_port}\n"),
        )?;
        // Our Debian files, the .load pointing at the module just built.
        let ours = workspace_root().join("httpd-conf/debian/mods-available");
        let load = fs::read_to_string(ours.join("reqin_log.load"))?.replace(
            "/usr/lib/apache2/modules/mod_reqin_log.so",
            &module_path().display().to_string(),
        );
        assert!(
            load.contains(&module_path().display().to_string()),
            "{load}"
        );
        fs::write(confdir.join("mods-available/reqin_log.load"), load)?;
        fs::copy(
            ours.join("reqin_log.conf"),
            confdir.join("mods-available/reqin_log.conf"),
        )?;
        Ok(Self {
            confdir,
            state,
            run,
            log,
        })
    }

    /// Runs one of Debian's scripts against the private tree; returns (success, stdout+stderr).
    fn run(&self, program: &str, args: &[&str]) -> Result<(bool, String)> {
        let out = Command::new(program)
            .args(args)
            .env("APACHE_CONFDIR", &self.confdir)
            .env("APACHE_STATE_DIRECTORY", &self.state)
            // Not systemd's apache2.service: start this instance directly.
            .env("APACHE_STARTED_BY_SYSTEMD", "1")
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    fn must(&self, program: &str, args: &[&str]) -> Result<String> {
        let (ok, out) = self.run(program, args)?;
        if !ok {
            return Err(format!("{program} {args:?} failed: {out}").into());
        }
        Ok(out)
    }

    fn enabled(&self, ext: &str) -> PathBuf {
        self.confdir.join(format!("mods-enabled/reqin_log.{ext}"))
    }
}

#[test]
fn a2enmod_reqin_log_enables_the_module_and_a2dismod_removes_it() -> Result<()> {
    let dir = server_root()?;
    let port = free_port()?;
    let deb = DebianConfDir::copy_into(dir.path(), port)?;

    let out = deb.must("/usr/sbin/a2enmod", &["reqin_log"])?;
    assert!(out.contains("Enabling module reqin_log"), "{out}");
    for ext in ["load", "conf"] {
        let link = deb.enabled(ext);
        let target = fs::read_link(&link).map_err(|e| format!("{}: {e}", link.display()))?;
        assert_eq!(
            target,
            Path::new(&format!("../mods-available/reqin_log.{ext}")),
            "a2enmod's relative link"
        );
    }
    let syntax = deb.must("/usr/sbin/apache2ctl", &["-t"])?;
    assert!(syntax.contains("Syntax OK"), "{syntax}");
    let modules = deb.must("/usr/sbin/apache2ctl", &["-M"])?;
    assert!(
        modules.contains("reqin_log_module (shared)"),
        "apache2ctl -M: {modules}"
    );

    // The enabled configuration serves and logs: Debian's layout, our .conf unchanged.
    deb.must("/usr/sbin/apache2ctl", &["start"])?;
    let pid_file = deb.run.join("apache2.pid");
    let stopped = || -> Result<()> {
        let pid = fs::read_to_string(&pid_file).unwrap_or_default();
        let _ = deb.run("/usr/sbin/apache2ctl", &["stop"]);
        let pid = pid.trim();
        if !pid.is_empty() {
            wait_for(STARTUP_TIMEOUT, "the private apache2 to stop", || {
                (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
            })?;
        }
        Ok(())
    };
    let served = (|| -> Result<Vec<Value>> {
        wait_for(STARTUP_TIMEOUT, "the private apache2 to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })?;
        let local_port = curl_output(&[
            "-o",
            "/dev/null",
            "-w",
            "%{local_port}",
            &format!("http://127.0.0.1:{port}/a2enmod-check"),
        ])?;
        let log = deb.log.join("reqin.log");
        wait_for(
            LINE_TIMEOUT,
            "a line in ${APACHE_LOG_DIR}/reqin.log",
            || {
                let text = fs::read_to_string(&log).ok()?;
                let lines: Vec<Value> = text
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                let port = local_port.trim().parse::<u16>().ok()?;
                let mine = lines_for_port(&lines, port);
                (!mine.is_empty()).then_some(mine)
            },
        )
    })();
    stopped()?;
    let lines = served.map_err(|e| {
        format!(
            "{e}; error log: {}",
            fs::read_to_string(deb.log.join("error.log")).unwrap_or_default()
        )
    })?;
    assert_eq!(str_field(&lines[0], "path")?, "/a2enmod-check");
    assert!(!bool_field(&lines[0], "correlated")?, "plain HTTP: orphan");

    let out = deb.must("/usr/sbin/a2dismod", &["reqin_log"])?;
    assert!(out.contains("Module reqin_log disabled"), "{out}");
    for ext in ["load", "conf"] {
        assert!(
            fs::symlink_metadata(deb.enabled(ext)).is_err(),
            "a2dismod removed reqin_log.{ext}"
        );
    }
    let syntax = deb.must("/usr/sbin/apache2ctl", &["-t"])?;
    assert!(syntax.contains("Syntax OK"), "{syntax}");
    let modules = deb.must("/usr/sbin/apache2ctl", &["-M"])?;
    assert!(!modules.contains("reqin_log_module"), "{modules}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Piped log

/// Every JSON line of every `reqin.*` file rotatelogs wrote in `dir`, files in name (time) order.
fn rotated_lines(dir: &Path) -> Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("reqin."))
        })
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        for l in fs::read_to_string(&f)?.lines() {
            lines.push(
                serde_json::from_str(l)
                    .map_err(|e| format!("invalid JSON line in {}: {l:?}: {e}", f.display()))?,
            );
        }
    }
    Ok(lines)
}

#[test]
fn rotatelogs_pipe_gets_every_correlated_line_across_a_graceful_restart() -> Result<()> {
    for mpm in ["prefork", "event"] {
        rotatelogs_across_restarts(mpm).map_err(|e| format!("{mpm}: {e}"))?;
    }
    Ok(())
}

fn rotatelogs_across_restarts(mpm: &'static str) -> Result<()> {
    let stack = Stack::start_with(mpm, &[], |root| {
        let _ = fs::create_dir(root.join("rotated"));
        format!(
            "ReqinLogFile \"|{ROTATELOGS} {}/reqin.%Y%m%d%H%M%S 60\"\n",
            root.join("rotated").display()
        )
    })?;
    let h = &stack.httpd;
    let rotated = stack.root.path().join("rotated");

    // Keep-alive pairs from a client loop while httpd restarts gracefully under it.
    let served = Arc::new(AtomicUsize::new(0));
    let ports = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (served, ports, stop) = (Arc::clone(&served), Arc::clone(&ports), Arc::clone(&stop));
        let url = h.https_url("/");
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(p) = curl(&["--http1.1"], &[url.clone(), url.clone()]) {
                    served.fetch_add(p.len(), Ordering::Relaxed);
                    if let Ok(mut v) = ports.lock() {
                        v.extend(p);
                    }
                }
            }
        })
    };
    thread::sleep(Duration::from_millis(1500));
    graceful_and_wait(h)?;
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    // And after the restart, from the new generation's children and its new rotatelogs.
    let after = curl(&["--http1.1"], &[h.https_url("/"), h.https_url("/")])?;
    let served = served.load(Ordering::Relaxed) + after.len();
    assert!(served > 6, "the load ran: {served}");

    let lines = wait_for(LINE_TIMEOUT, &format!("{served} rotated lines"), || {
        rotated_lines(&rotated).ok().filter(|l| l.len() >= served)
    })
    .map_err(|e| format!("{e}: got {:?}", rotated_lines(&rotated).map(|l| l.len())))?;
    assert_eq!(lines.len(), served, "one line per answered request");
    let mut all_ports = ports.lock().map_err(|e| e.to_string())?.clone();
    all_ports.extend(after);
    for p in &all_ports {
        let mine = lines_for_port(&lines, *p);
        assert!(!mine.is_empty(), "a line for client port {p}");
        for line in mine {
            assert!(bool_field(&line, "correlated")?, "{line}");
        }
    }
    assert!(
        !h.log.exists(),
        "the template's file log was overridden by the pipe"
    );

    // A hard restart kills the children and the program (same process group): the new
    // generation starts a new program, and its lines arrive.
    restart_and_wait(h, "restart")?;
    let later = curl(&["--http1.1"], &[h.https_url("/")])?;
    wait_for(LINE_TIMEOUT, "a line after the hard restart", || {
        let l = rotated_lines(&rotated).ok()?;
        (!lines_for_port(&l, later[0]).is_empty()).then_some(())
    })
    .map_err(|e| format!("{e}; error log:\n{}", h.error_log_text()))?;
    // httpd neither lost track of a program nor failed to start one again.
    let errors = h.error_log_text();
    for bad in ["piped log", "respawn", "lost child"] {
        assert!(!errors.contains(bad), "{bad:?} in the error log: {errors}");
    }
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// mod_proxy

/// What the backend received: the request line and the headers, names lower-cased.
type BackendRequest = (String, HashMap<String, String>);

/// A minimal HTTP/1.1 backend on a free loopback port: answers every request `200 ok` and
/// hands the request head's headers (names lower-cased) to the test.
fn start_backend() -> Result<(u16, mpsc::Receiver<BackendRequest>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut headers = HashMap::new();
            loop {
                let mut l = String::new();
                match reader.read_line(&mut l) {
                    Ok(n) if n > 0 && l.trim_end() != "" => {
                        if let Some((k, v)) = l.trim_end().split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                        }
                    }
                    _ => break,
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
            );
            if tx
                .send((request_line.trim_end().to_owned(), headers))
                .is_err()
            {
                break;
            }
        }
    });
    Ok((port, rx))
}

#[test]
fn mod_proxy_backend_receives_the_ja4_the_sensor_computed_for_the_client() -> Result<()> {
    let (backend, requests) = start_backend()?;
    let conf = format!(
        "LoadModule headers_module {MODULES}/mod_headers.so\n\
         LoadModule proxy_module {MODULES}/mod_proxy.so\n\
         LoadModule proxy_http_module {MODULES}/mod_proxy_http.so\n\
         RequestHeader set X-JA4 \"%{{JA4}}e\"\n\
         RequestHeader set X-JA3-Hash \"%{{JA3_HASH}}e\"\n\
         RequestHeader set X-Reqin-Correlated \"%{{REQIN_CORRELATED}}e\"\n\
         RequestHeader set X-Request-Id \"%{{REQIN_REQUEST_ID}}e\"\n\
         ProxyPass /app/ http://127.0.0.1:{backend}/app/\n"
    );
    let stack = Stack::start("event", &conf)?;
    let h = &stack.httpd;
    for tls in [&["--tls-max", "1.2"][..], &[][..]] {
        let mut args = vec!["--http1.1"];
        args.extend_from_slice(tls);
        let p = curl(&args, &[h.https_url("/app/hello?x=1")])?;
        let (request_line, headers) = requests
            .recv_timeout(LINE_TIMEOUT)
            .map_err(|e| format!("the backend got no request: {e}"))?;
        assert_eq!(request_line, "GET /app/hello?x=1 HTTP/1.1");
        let lines = wait_lines_for_ports(h, &p, LINE_TIMEOUT)?;
        let line = &lines_for_port(&lines, p[0])[0];
        assert!(bool_field(line, "correlated")?, "{line}");
        assert_eq!(str_field(line, "path")?, "/app/hello");
        let ja4 = str_field(line, "ja4")?;
        assert!(ja4.starts_with('t'), "{line}");
        assert_eq!(
            headers.get("x-ja4").map(String::as_str),
            Some(ja4),
            "{tls:?}: {headers:?}"
        );
        assert_eq!(
            headers.get("x-ja3-hash").map(String::as_str),
            Some(str_field(line, "ja3_hash")?),
            "{headers:?}"
        );
        assert_eq!(
            headers.get("x-reqin-correlated").map(String::as_str),
            Some("1")
        );
        // The README's forwarding line: the backend's log can name the same request.
        assert_eq!(
            headers.get("x-request-id").map(String::as_str),
            Some(str_field(line, "request_id")?),
            "{headers:?}"
        );
    }
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn with_mod_unique_id_loaded_the_request_id_is_its_unique_id() -> Result<()> {
    let (backend, requests) = start_backend()?;
    let conf = format!(
        "LoadModule unique_id_module {MODULES}/mod_unique_id.so\n\
         LoadModule headers_module {MODULES}/mod_headers.so\n\
         LoadModule proxy_module {MODULES}/mod_proxy.so\n\
         LoadModule proxy_http_module {MODULES}/mod_proxy_http.so\n\
         RequestHeader set X-Request-Id \"%{{REQIN_REQUEST_ID}}e\"\n\
         RequestHeader set X-Unique-Id \"%{{UNIQUE_ID}}e\"\n\
         ProxyPass /app/ http://127.0.0.1:{backend}/app/\n"
    );
    let stack = Stack::start("prefork", &conf)?;
    let h = &stack.httpd;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let p = curl(&["--http1.1"], &[h.https_url("/app/u")])?;
        let (_, headers) = requests
            .recv_timeout(LINE_TIMEOUT)
            .map_err(|e| format!("the backend got no request: {e}"))?;
        let lines = wait_lines_for_ports(h, &p, LINE_TIMEOUT)?;
        let line = &lines_for_port(&lines, p[0])[0];
        let id = str_field(line, "request_id")?;
        assert_eq!(
            headers.get("x-unique-id").map(String::as_str),
            Some(id),
            "{headers:?}"
        );
        assert_eq!(headers.get("x-request-id").map(String::as_str), Some(id));
        assert!(seen.insert(id.to_owned()), "unique: {id}");
        assert!(
            !id.starts_with(str_field(line, "conn_id")?),
            "mod_unique_id's, not ours"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// mod_remoteip and IPv6

#[test]
fn remoteip_rewrites_the_client_ip_but_the_join_keeps_the_tcp_peer() -> Result<()> {
    let conf = format!(
        "LoadModule remoteip_module {MODULES}/mod_remoteip.so\n\
         RemoteIPHeader X-Forwarded-For\n\
         RemoteIPInternalProxy 127.0.0.1\n"
    );
    let stack = Stack::start("event", &conf)?;
    let h = &stack.httpd;
    let url = h.https_url("/");
    let forwarded = curl(
        &["--http1.1", "-H", "X-Forwarded-For: 203.0.113.7"],
        &[url.clone(), url.clone()],
    )?;
    let direct = curl(&["--http1.1"], &[url])?;
    let lines = wait_lines_for_ports(h, &[forwarded[0], direct[0]], LINE_TIMEOUT)?;
    let lines = wait_for(LINE_TIMEOUT, "three lines", || {
        let l = h.log_lines().ok()?;
        (l.len() >= 3).then_some(l)
    })
    .map_err(|e| format!("{e}: {lines:?}"))?;

    let mine = lines_for_port(&lines, forwarded[0]);
    assert_eq!(mine.len(), 2, "{lines:?}");
    for (i, line) in mine.iter().enumerate() {
        // The handshake came from the TCP peer: the join and src_ip/src_port are the peer's.
        assert!(bool_field(line, "correlated")?, "{line}");
        assert_eq!(str_field(line, "src_ip")?, "127.0.0.1", "{line}");
        assert_eq!(u64_field(line, "keepalives")?, i as u64 + 1);
        assert!(str_field(line, "ja4")?.starts_with('t'), "{line}");
        // What mod_remoteip made of X-Forwarded-For, logged beside it.
        assert_eq!(str_field(line, "useragent_ip")?, "203.0.113.7", "{line}");
    }
    let line = &lines_for_port(&lines, direct[0])[0];
    assert!(bool_field(line, "correlated")?, "{line}");
    assert!(line.get("useragent_ip").is_none(), "same as src_ip: {line}");
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

#[test]
fn ipv6_tls_client_on_loopback_is_joined_with_its_v6_address() -> Result<()> {
    let port6 = TcpListener::bind("[::1]:0")?.local_addr()?.port();
    let stack = Stack::start_with("event", &[port6], |root| {
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
    })?;
    let h = &stack.httpd;
    wait_for(STARTUP_TIMEOUT, "httpd to listen on [::1]", || {
        TcpStream::connect(("::1", port6)).ok()
    })?;
    let url = format!("https://[::1]:{port6}/index.html");
    let ports = curl(&["-6", "-g", "--http1.1"], &[url.clone(), url])?;
    assert_eq!(ports[0], ports[1], "one connection");
    let lines = wait_lines_for_ports(h, &ports[..1], LINE_TIMEOUT)?;
    let lines = wait_for(LINE_TIMEOUT, "two lines", || {
        let l = lines_for_port(&h.log_lines().ok()?, ports[0]);
        (l.len() >= 2).then_some(l)
    })
    .map_err(|e| format!("{e}: {lines:?}"))?;
    for (i, line) in lines.iter().enumerate() {
        assert!(bool_field(line, "correlated")?, "{line}");
        assert_eq!(str_field(line, "src_ip")?, "::1", "{line}");
        assert_eq!(str_field(line, "dst_ip")?, "::1", "{line}");
        assert_eq!(u64_field(line, "dst_port")?, u64::from(port6));
        assert_eq!(u64_field(line, "keepalives")?, i as u64 + 1);
        assert!(str_field(line, "ja4")?.starts_with('t'), "{line}");
        assert_eq!(
            str_field(line, "conn_id")?,
            str_field(&lines[0], "conn_id")?,
            "one root per connection: {line}"
        );
        assert_eq!(
            str_field(line, "request_id")?,
            format!("{}-{}", str_field(line, "conn_id")?, i + 1)
        );
    }
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JsonSockLog* semantics of the original C module

#[test]
fn json_sock_log_socket_stays_silent_without_json_sock_log_enabled_on() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("reqin-sock-").tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let sock_path = dir.path().join("http.socket");
    let collector = UnixDatagram::bind(&sock_path)?;
    fs::set_permissions(&sock_path, fs::Permissions::from_mode(0o666))?;
    collector.set_read_timeout(Some(Duration::from_secs(2)))?;
    // The C module's default is JsonSockLogEnabled Off: a socket alone sends nothing.
    let conf = format!(
        "JsonSockLogSocket {}
",
        sock_path.display()
    );
    let stack = Stack::start("event", &conf)?;
    let h = &stack.httpd;
    let p = curl(&["--http1.1"], &[h.https_url("/")])?;
    // The file log (a new directive) still logs, so the request was seen and finished.
    wait_lines_for_ports(h, &p, LINE_TIMEOUT)?;
    let mut buf = [0u8; 65536];
    assert!(
        collector.recv(&mut buf).is_err(),
        "no datagram without JsonSockLogEnabled On"
    );
    let log = h.error_log_text();
    assert!(
        log.contains("JsonSockLogEnabled is not On"),
        "the administrator is told why: {log}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Status counters across graceful restarts

/// `ctl graceful`, then waits until the parent has started the new generation (its notice
/// "resuming normal operations" appears once more in the error log).
fn graceful_and_wait(h: &Httpd) -> Result<()> {
    restart_and_wait(h, "graceful")
}

/// `ctl verb` (`graceful` or `restart`), then waits for the new generation.
fn restart_and_wait(h: &Httpd, verb: &str) -> Result<()> {
    let resumed = |h: &Httpd| {
        h.error_log_text()
            .matches("resuming normal operations")
            .count()
    };
    let before = resumed(h);
    h.ctl(verb)?;
    wait_for(STARTUP_TIMEOUT, "the new generation", || {
        (resumed(h) > before).then_some(())
    })
    .map_err(|e| format!("{e}; error log:\n{}", h.error_log_text()).into())
}

#[test]
fn status_counters_keep_counting_across_graceful_restarts() -> Result<()> {
    let stack = Stack::start("event", STATUS_CONF)?;
    let h = &stack.httpd;
    let status = h.http_url("/reqin-status");
    let metric = |name: &str| -> Result<f64> {
        prometheus(&status)?
            .get(name)
            .copied()
            .ok_or_else(|| format!("no {name}").into())
    };
    let url = h.https_url("/");
    let mut tls_requests = 0usize;
    for round in 0..3 {
        if round > 0 {
            let before = metric("reqin_log_lines_written_total")?;
            graceful_and_wait(h)?;
            let after = metric("reqin_log_lines_written_total")?;
            assert!(after >= before, "round {round}: {after} < {before}: reset");
        }
        let ports = curl(&["--http1.1"], &[url.clone(), url.clone(), url.clone()])?;
        tls_requests += ports.len();
        wait_for(LINE_TIMEOUT, "this round's lines", || {
            let l = h.log_lines().ok()?;
            (lines_for_port(&l, ports[0]).len() == 3).then_some(())
        })?;
        // Every line in the log was counted, whichever generation wrote it.
        let logged = h.log_lines()?.len() as f64;
        let written = metric("reqin_log_lines_written_total")?;
        assert!(
            written >= logged,
            "round {round}: {written} counted, {logged} lines"
        );
        let correlated = metric("reqin_log_correlated_total")?;
        assert!(
            correlated >= tls_requests as f64,
            "round {round}: {correlated} correlated of {tls_requests}"
        );
    }
    assert_eq!(metric("reqin_log_panics_total")?, 0.0);
    assert_eq!(h.crashed_children(), Vec::<String>::new());
    Ok(())
}
