//! Fixtures for the end-to-end tests: real parts, started privately on loopback and stopped on
//! drop. A private Apache httpd (Debian's `apache2` binary with a generated config on free
//! ports), the real `ja4sensor` capturing `lo`, `tshark` as an independent oracle, and real TLS
//! clients (`curl`, `openssl s_client`). And a private `clickhouse-server` ([`clickhouse`]),
//! the fixture of the shipper's and the query crate's ClickHouse tests.
//!
//! Tests need root: pcap on `lo`, and httpd starting as root before dropping to `www-data`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod clickhouse;

pub type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// How long a fixture waits for a server to come up or a log line to appear before failing.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace root (`tests/` is a member one level down).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target dir for the current profile (`make test` builds the workspace first).
pub fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    base.join(profile)
}

pub fn module_path() -> PathBuf {
    target_dir().join("libmod_reqin_log.so")
}

pub fn sensor_path() -> PathBuf {
    target_dir().join("ja4sensor")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A temp dir that the httpd children (`www-data`) can traverse and read.
pub fn server_root() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("reqin-e2e-").tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

/// A self-signed certificate for `localhost`, generated on the spot.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    pub fn generate(dir: &Path) -> Result<Self> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644))?;
        Ok(Self { cert, key })
    }
}

/// What a private httpd is started with.
#[derive(Debug, Clone)]
pub struct HttpdOptions {
    pub mpm: &'static str,
    /// The TLS port, when the test had to know it before httpd starts (to start the sensor
    /// first, as in production); a free port otherwise.
    pub tls_port: Option<u16>,
    /// Extra config appended at the end of the generated file.
    pub extra_conf: String,
    /// Replaces the template's own mod_reqin_log block (`ReqinLogFile`, `ReqinLogRing`), e.g. by
    /// a configuration written for the original C module.
    pub module_conf: Option<String>,
    /// Another build of the module (e.g. with the cargo feature `foxio`).
    pub module: Option<PathBuf>,
    /// Run httpd inside this network namespace (`ip netns exec`); its ports are the
    /// namespace's.
    pub netns: Option<String>,
}

impl Default for HttpdOptions {
    fn default() -> Self {
        Self {
            mpm: "event",
            tls_port: None,
            extra_conf: String::new(),
            module_conf: None,
            module: None,
            netns: None,
        }
    }
}

/// The comment that starts the template's mod_reqin_log block (its last lines).
const MODULE_BLOCK: &str = "# mod_reqin_log: both ports";

/// A private Apache httpd on 127.0.0.1 with our module loaded; stopped on drop.
pub struct Httpd {
    pub root: PathBuf,
    pub conf: PathBuf,
    pub tls_port: u16,
    pub http_port: u16,
    pub log: PathBuf,
    pub ring: PathBuf,
    pub error_log: PathBuf,
    pid_file: PathBuf,
    netns: Option<String>,
}

impl Httpd {
    /// Fills `httpd-conf/test/httpd.conf.in` and starts `apache2 -f <conf> -k start`.
    pub fn start(root: &Path, ring: &Path, opts: &HttpdOptions) -> Result<Self> {
        let cert = Cert::generate(root)?;
        let docroot = root.join("htdocs");
        fs::create_dir_all(&docroot)?;
        fs::set_permissions(&docroot, fs::Permissions::from_mode(0o755))?;
        fs::write(docroot.join("index.html"), "hello from reqin e2e\n")?;
        let tls_port = match opts.tls_port {
            Some(p) => p,
            None => free_port()?,
        };
        let http_port = free_port()?;
        let log = root.join("reqin.log");
        let template = fs::read_to_string(workspace_root().join("httpd-conf/test/httpd.conf.in"))?;
        let mut conf_text = template
            .replace("@SERVER_ROOT@", &root.display().to_string())
            .replace("@MODULES_DIR@", "/usr/lib/apache2/modules")
            .replace("@MPM@", opts.mpm)
            .replace(
                "@REQIN_MODULE@",
                &opts
                    .module
                    .clone()
                    .unwrap_or_else(module_path)
                    .display()
                    .to_string(),
            )
            .replace("@LISTEN_TLS@", &tls_port.to_string())
            .replace("@LISTEN_HTTP@", &http_port.to_string())
            .replace("@CERT@", &cert.cert.display().to_string())
            .replace("@KEY@", &cert.key.display().to_string())
            .replace("@REQIN_LOG@", &log.display().to_string())
            .replace("@RING@", &ring.display().to_string())
            .replace("@DOCROOT@", &docroot.display().to_string());
        if let Some(module_conf) = &opts.module_conf {
            let at = conf_text
                .find(MODULE_BLOCK)
                .ok_or("the test template lost its mod_reqin_log block")?;
            conf_text.truncate(at);
            conf_text.push_str(module_conf);
        }
        conf_text.push('\n');
        conf_text.push_str(&opts.extra_conf);
        let conf = root.join("httpd.conf");
        fs::write(&conf, conf_text)?;
        let httpd = Self {
            root: root.to_path_buf(),
            conf,
            tls_port,
            http_port,
            log,
            ring: ring.to_path_buf(),
            error_log: root.join("error.log"),
            pid_file: root.join("httpd.pid"),
            netns: opts.netns.clone(),
        };
        httpd.ctl("start")?;
        for port in [tls_port, http_port] {
            wait_for(STARTUP_TIMEOUT, "httpd to listen", || match &httpd.netns {
                None => TcpStream::connect(("127.0.0.1", port)).ok().map(drop),
                Some(ns) => Command::new("ip")
                    .args(["netns", "exec", ns, "bash", "-c"])
                    .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
                    .stderr(Stdio::null())
                    .status()
                    .ok()
                    .filter(|s| s.success())
                    .map(drop),
            })
            .map_err(|e| format!("{e}; error log:\n{}", httpd.error_log_text()))?;
        }
        Ok(httpd)
    }

    pub fn ctl(&self, verb: &str) -> Result<()> {
        let mut cmd = match &self.netns {
            None => Command::new("apache2"),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "apache2"]);
                c
            }
        };
        run(cmd.arg("-f").arg(&self.conf).args(["-k", verb]))?;
        Ok(())
    }

    /// `apache2 -k stop`, and wait until the parent is gone (after its children: their exit
    /// hooks have run).
    pub fn stop(&self) -> Result<()> {
        let pid = self.pid();
        self.ctl("stop")?;
        if let Some(pid) = pid {
            // The parent removes its pid file and exits after its children; /proc tells.
            wait_for(STARTUP_TIMEOUT, "httpd to stop", || {
                (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
            })?;
        }
        Ok(())
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.tls_port, path)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    pub fn error_log_text(&self) -> String {
        fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    /// Every JSON line of the module's log so far (a line that does not parse fails the test).
    pub fn log_lines(&self) -> Result<Vec<Value>> {
        let text = match fs::read_to_string(&self.log) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        text.lines()
            .map(|l| {
                serde_json::from_str(l).map_err(|e| format!("invalid JSON line {l:?}: {e}").into())
            })
            .collect()
    }

    /// Waits until the log holds at least `n` lines and returns them all.
    pub fn wait_log_lines(&self, n: usize) -> Result<Vec<Value>> {
        wait_for(STARTUP_TIMEOUT, &format!("{n} log lines"), || {
            self.log_lines().ok().filter(|l| l.len() >= n)
        })
    }

    pub fn pid(&self) -> Option<i32> {
        fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }

    /// Panics, aborts and segfaults of children show up in the error log as
    /// `AH00052: child pid N exit signal ...`; a test asserts there are none.
    pub fn crashed_children(&self) -> Vec<String> {
        self.error_log_text()
            .lines()
            .filter(|l| l.contains("exit signal") || l.contains("panicked"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A child process killed (SIGTERM, then SIGKILL) on drop, with its stderr collected.
pub struct Daemon {
    name: &'static str,
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn spawn(name: &'static str, cmd: &mut Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {name}: {e}"))?;
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            thread::spawn(move || {
                for line in BufReader::new(stderr)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            name,
            child,
            stderr_lines: rx,
            seen: Vec::new(),
        })
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_stderr(&mut self, needle: &str) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if self.seen.iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .stderr_lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "{} exited before printing {needle:?}: {:?}",
                        self.name, self.seen
                    )
                    .into())
                }
            }
            if Instant::now() > deadline {
                return Err(
                    format!("{} did not print {needle:?}: {:?}", self.name, self.seen).into(),
                );
            }
        }
    }

    pub fn stderr_so_far(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr_lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// SIGTERM and wait (SIGKILL after a grace period); returns the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Ok(self.child.wait()?);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop();
        }
    }
}

/// The group the httpd children run as (`Group` in the test config); the ring must be readable
/// by it and by nobody else.
pub const HTTPD_GROUP: &str = "www-data";

/// The real sensor capturing `lo` on the given ports, publishing into `ring`.
pub fn start_sensor(ring: &Path, ports: &[u16]) -> Result<Daemon> {
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut d = Daemon::spawn(
        "ja4sensor",
        Command::new(sensor_path())
            .args([
                "run",
                "--interface",
                "lo",
                "--ports",
                &ports,
                "--ring-group",
                HTTPD_GROUP,
                "--ring",
            ])
            .arg(ring)
            .env("RUST_LOG", "info"),
    )?;
    // The ring file exists once the sensor has opened the capture and created it.
    wait_for(STARTUP_TIMEOUT, "the sensor's ring file", || {
        ring.exists().then_some(())
    })
    .map_err(|e| format!("{e}; sensor stderr: {:?}", d.stderr_so_far()))?;
    Ok(d)
}

/// `tshark` capturing `lo` for the given TCP port into a pcap file, the independent oracle.
pub struct Tshark {
    daemon: Daemon,
    pub pcap: PathBuf,
}

impl Tshark {
    pub fn start(dir: &Path, port: u16) -> Result<Self> {
        let pcap = dir.join(format!("tshark-{port}.pcap"));
        let mut daemon = Daemon::spawn(
            "tshark",
            Command::new("tshark")
                .args([
                    "-i",
                    "lo",
                    "-f",
                    &format!("tcp port {port}"),
                    "-F",
                    "pcap",
                    "-w",
                ])
                .arg(&pcap),
        )?;
        daemon.wait_stderr("Capturing on")?;
        Ok(Self { daemon, pcap })
    }

    /// Stops the capture and returns `(client port, ja3 hash)` for every ClientHello in it.
    pub fn stop_and_ja3(mut self) -> Result<Vec<(u16, String)>> {
        // Give the capture a moment to write the last packets before SIGTERM.
        thread::sleep(Duration::from_millis(300));
        self.daemon.stop()?;
        let out = run(Command::new("tshark")
            .arg("-r")
            .arg(&self.pcap)
            .args(["-Y", "tls.handshake.type == 1", "-T", "fields"])
            .args(["-e", "tcp.srcport", "-e", "tls.handshake.ja3"]))?;
        let text = String::from_utf8(out.stdout)?;
        let mut v = Vec::new();
        for line in text.lines() {
            let mut parts = line.split('\t');
            if let (Some(p), Some(h)) = (parts.next(), parts.next()) {
                v.push((p.trim().parse()?, h.trim().to_owned()));
            }
        }
        Ok(v)
    }
}

/// `curl -k` with the given extra args over the URLs; returns the local port of each transfer
/// (`-w '%{local_port}'`) and checks every transfer answered 200.
pub fn curl(args: &[&str], urls: &[String]) -> Result<Vec<u16>> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--max-time", "10"]).args(args);
    for u in urls {
        cmd.args([
            "-o",
            "/dev/null",
            "-w",
            "%{local_port} %{http_code}\\n",
            u.as_str(),
        ]);
    }
    let out = run(&mut cmd)?;
    let text = String::from_utf8(out.stdout)?;
    let mut ports = Vec::new();
    for line in text.lines() {
        let (port, code) = line
            .split_once(' ')
            .ok_or_else(|| format!("unexpected curl output {line:?}"))?;
        if code != "200" {
            return Err(format!("curl got HTTP {code} from {urls:?}").into());
        }
        ports.push(port.parse()?);
    }
    Ok(ports)
}

/// One HTTP/1.1 request through `openssl s_client`; returns what the server answered.
/// `-quiet` implies `-ign_eof`: s_client keeps reading after our stdin closes, until the server
/// closes the connection (`Connection: close`).
pub fn openssl_get(port: u16, path: &str) -> Result<String> {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-servername", "localhost"])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("openssl s_client has no stdin")?;
    write!(
        stdin,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: openssl-s_client\r\nConnection: close\r\n\r\n"
    )?;
    drop(stdin);
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Field accessors that fail with the whole line in the message.
pub fn str_field<'a>(line: &'a Value, name: &str) -> Result<&'a str> {
    line.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("line has no string {name:?}: {line}").into())
}

pub fn u64_field(line: &Value, name: &str) -> Result<u64> {
    line.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("line has no integer {name:?}: {line}").into())
}

pub fn bool_field(line: &Value, name: &str) -> Result<bool> {
    line.get(name)
        .and_then(Value::as_bool)
        .ok_or_else(|| format!("line has no bool {name:?}: {line}").into())
}

// ---------------------------------------------------------------------------------------------
// mod_reqin_log module tests (tests/tests/module_*.rs): a sensor-plus-httpd pair, raw clients,
// the status page, and config checks.

/// The status page as the README shows it (`Require ip` needs mod_authz_host, which the test
/// config loads): the tests use this block, and one checks the README still has it verbatim.
pub const STATUS_CONF: &str = "<Location /reqin-status>
    SetHandler reqin-log-status
    Require ip 127.0.0.1
</Location>
";

/// The lines of the module's log whose client port is `port`, in log order.
pub fn lines_for_port(lines: &[Value], port: u16) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.get("src_port").and_then(Value::as_u64) == Some(u64::from(port)))
        .cloned()
        .collect()
}

/// Waits until the log holds a line for each client port, and returns those lines.
pub fn wait_lines_for_ports(httpd: &Httpd, ports: &[u16], timeout: Duration) -> Result<Vec<Value>> {
    wait_for(timeout, &format!("log lines for ports {ports:?}"), || {
        let lines = httpd.log_lines().ok()?;
        ports
            .iter()
            .all(|p| !lines_for_port(&lines, *p).is_empty())
            .then_some(lines)
    })
    .map_err(|e| format!("{e}; log so far: {:?}", httpd.log_lines()).into())
}

/// The real sensor on `lo` for a TLS port chosen now, and a private httpd on that port with our
/// module and `extra_conf`; the sensor starts first, as in production.
pub struct Stack {
    // Fields drop in this order: httpd must stop (it needs its config and pid file) before the
    // sensor and before the temp dir holding both is removed.
    pub httpd: Httpd,
    pub sensor: Option<Daemon>,
    pub root: tempfile::TempDir,
}

impl Stack {
    pub fn start(mpm: &'static str, extra_conf: &str) -> Result<Self> {
        Self::start_with(mpm, &[], |_| extra_conf.to_owned())
    }

    /// As [`Stack::start`], with the sensor also capturing `more_ports` (extra `Listen`s of
    /// the config) and the extra config written knowing the server root (where
    /// [`Httpd::start`] puts `cert.pem` and `key.pem`, for an extra TLS virtual host).
    pub fn start_with(
        mpm: &'static str,
        more_ports: &[u16],
        extra_conf: impl FnOnce(&Path) -> String,
    ) -> Result<Self> {
        let root = server_root()?;
        let ring = root.path().join("ja4sensor.ring");
        let tls_port = free_port()?;
        let mut ports = vec![tls_port];
        ports.extend_from_slice(more_ports);
        let sensor = start_sensor(&ring, &ports)?;
        let opts = HttpdOptions {
            mpm,
            tls_port: Some(tls_port),
            extra_conf: extra_conf(root.path()),
            ..HttpdOptions::default()
        };
        let httpd = Httpd::start(root.path(), &ring, &opts)?;
        Ok(Self {
            root,
            sensor: Some(sensor),
            httpd,
        })
    }
}

/// Runs `curl -sk --max-time 10 <args>` and returns stdout (curl's exit status must be 0).
pub fn curl_output(args: &[&str]) -> Result<String> {
    let out = run(Command::new("curl")
        .args(["-sk", "--max-time", "10"])
        .args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends raw bytes to a plain-HTTP port and returns the answer (the request should ask for
/// `Connection: close`).
pub fn raw_http(port: u16, request: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    Ok(answer)
}

/// Fetches a Prometheus page over plain HTTP and returns `metric -> value`.
pub fn prometheus(url: &str) -> Result<std::collections::HashMap<String, f64>> {
    let text = curl_output(&[url])?;
    let mut m = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((k, v)) = line.split_once(' ') {
            m.insert(k.to_owned(), v.trim().parse()?);
        }
    }
    if m.is_empty() {
        return Err(format!("no metrics at {url}: {text:?}").into());
    }
    Ok(m)
}

/// Writes the test httpd config (as [`Httpd::start`] does) without starting httpd, and runs
/// `apache2 -t` on it; returns (success, stdout+stderr).
pub fn config_test(root: &Path, extra_conf: &str) -> Result<(bool, String)> {
    let cert = Cert::generate(root)?;
    let docroot = root.join("htdocs");
    fs::create_dir_all(&docroot)?;
    let template = fs::read_to_string(workspace_root().join("httpd-conf/test/httpd.conf.in"))?;
    let mut conf_text = template
        .replace("@SERVER_ROOT@", &root.display().to_string())
        .replace("@MODULES_DIR@", "/usr/lib/apache2/modules")
        .replace("@MPM@", "event")
        .replace("@REQIN_MODULE@", &module_path().display().to_string())
        .replace("@LISTEN_TLS@", &free_port()?.to_string())
        .replace("@LISTEN_HTTP@", &free_port()?.to_string())
        .replace("@CERT@", &cert.cert.display().to_string())
        .replace("@KEY@", &cert.key.display().to_string())
        .replace("@REQIN_LOG@", &root.join("reqin.log").display().to_string())
        .replace("@RING@", &root.join("ring").display().to_string())
        .replace("@DOCROOT@", &docroot.display().to_string());
    conf_text.push('\n');
    conf_text.push_str(extra_conf);
    let conf = root.join("httpd-t.conf");
    fs::write(&conf, conf_text)?;
    let out = Command::new("apache2")
        .arg("-t")
        .arg("-f")
        .arg(&conf)
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// ja4sensor detect (tests/tests/detect_e2e.rs): the real detector following the module's log.

/// `ja4sensor detect --config <config>`, started once it follows the log.
pub fn start_detector(config: &Path) -> Result<Daemon> {
    let mut d = Daemon::spawn(
        "ja4sensor detect",
        Command::new(sensor_path())
            .args(["detect", "--config"])
            .arg(config)
            .env("RUST_LOG", "info"),
    )?;
    d.wait_stderr("following")?;
    Ok(d)
}

/// Every JSON line of a file written by the detector's `jsonl` listener (none yet: empty).
pub fn jsonl_lines(path: &Path) -> Result<Vec<Value>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    text.lines()
        .map(|l| {
            serde_json::from_str(l).map_err(|e| format!("invalid JSON line {l:?}: {e}").into())
        })
        .collect()
}
