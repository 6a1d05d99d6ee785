//! The module's directives: what each accepts, how a value is checked, and how a virtual host
//! inherits from the main server. Pure: no httpd calls, so `apache2 -t` errors are unit-tested.
//! README.md ("mod_reqin_log directives") has the table of every directive with its default;
//! [`DIRECTIVES`] is the same list in code, and a unit test keeps the two in step.
//!
//! The `JsonSockLog*` directives are those of the original C module, with its meaning and
//! defaults; everything new is prefixed `ReqinLog`.
//!
//! Only what is wrong in the text itself is an error here (syntax, range, a relative path
//! where an absolute one is needed): `apache2 -t` must pass on any machine. Whether a socket, a
//! ring or a log directory exists is the state of the machine at run time, which changes (a
//! collector's `RuntimeDirectory` appears after httpd starts, or never; the sensor restarts);
//! the hooks report a missing one once and retry, and a graceful restart never dies of it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use correlate_lib::join::{JoinRules, MatchMode, DEFAULT_TIME_WINDOW};
use correlate_lib::ring::DEFAULT_RING_PATH;
use ipnet::IpNet;

/// Every directive the module registers (module.rs holds the table httpd reads).
pub const DIRECTIVES: &[&str] = &[
    "JsonSockLogEnabled",
    "JsonSockLogSocket",
    "JsonSockLogHeaders",
    "JsonSockLogMaxHeaders",
    "JsonSockLogMaxHeaderValueLen",
    "JsonSockLogReconnectInterval",
    "JsonSockLogErrorReportInterval",
    "JsonSockLogLevel",
    "ReqinLogFile",
    "ReqinLogRing",
    "ReqinLogTimeWindow",
    "ReqinLogOrphanDelay",
    "ReqinLogMatchMode",
    "ReqinLogExcludeSource",
    "ReqinLogIncludePorts",
    "ReqinLogRedactHeaders",
    "ReqinLogExportEnv",
    "ReqinLogLookupWait",
    "ReqinLogBuffer",
    "ReqinLogFlushInterval",
    "ReqinLogMaxFieldLen",
    "ReqinLogTag",
    "ReqinLogVerdictTable",
    "ReqinLogClientMap",
    "ReqinLogTestPanic",
    "ReqinLogFingerprint",
    "ReqinLogTrustedProxy",
    "ReqinLogProxyHeader",
    "ReqinLogJA4Plus",
];

/// The C module's default: at most 25 configured headers per line.
pub const DEFAULT_MAX_HEADERS: usize = 25;
/// The C module's default: a header value is cut after 256 bytes.
pub const DEFAULT_MAX_HEADER_VALUE_LEN: usize = 256;
/// Hard limits, whatever is configured: a line must stay one datagram and one buffered write.
pub const MAX_MAX_HEADERS: usize = 256;
pub const MAX_MAX_HEADER_VALUE_LEN: usize = 16 * 1024;
/// `ReqinLogMaxFieldLen`: path, query and host are cut after this many bytes. Apache itself
/// accepts request lines up to `LimitRequestLine` (8190 bytes); 2 KiB keeps a line short while
/// holding any real URL.
pub const DEFAULT_MAX_FIELD_LEN: usize = 2048;
pub const MAX_MAX_FIELD_LEN: usize = 16 * 1024;
/// Seconds between reconnection attempts of the datagram socket (the C module's default).
pub const DEFAULT_RECONNECT_INTERVAL: Duration = Duration::from_secs(10);
/// Seconds between two error-log reports of the same sink failure (the C module's default).
pub const DEFAULT_ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// logcorrelator's `apache_emit_delay_ms`.
pub const DEFAULT_ORPHAN_DELAY: Duration = Duration::from_millis(500);
/// Longest orphan delay accepted: the pending queue holds lines that long.
pub const MAX_ORPHAN_DELAY: Duration = Duration::from_secs(10);
/// How long `post_read_request` may wait for the sensor to publish this connection's hello
/// (only while the sensor has not yet processed the packets up to the request): long enough
/// for a sensor a few packets behind, short enough not to matter to a client.
pub const DEFAULT_LOOKUP_WAIT: Duration = Duration::from_millis(20);
pub const MAX_LOOKUP_WAIT: Duration = Duration::from_secs(1);
/// Bytes of lines a child collects for `ReqinLogFile` before one write: about 25 lines, so a
/// busy child writes a few hundred times a second instead of once per request.
pub const DEFAULT_BUFFER: usize = 16 * 1024;
pub const MAX_BUFFER: usize = 1024 * 1024;
/// Longest a buffered line waits before it is written, whatever the traffic.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Headers whose values are credentials: never logged unless listed in `JsonSockLogHeaders`
/// *and* removed from the redaction list (`ReqinLogRedactHeaders -Cookie`).
pub const DEFAULT_REDACTED: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];
/// What a redacted header's value is replaced with.
pub const REDACTED_VALUE: &str = "[REDACTED]";

/// `ReqinLogFingerprint`: where a TLS connection's fingerprint comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FingerprintMode {
    /// The `ja4sensor` sidecar's ring (the default: what every earlier version did).
    #[default]
    Sensor,
    /// httpd itself: `TCP_SAVED_SYN` and OpenSSL's message callback; no sensor, no ring.
    Inline,
    /// Inline values, checked against the sensor's ring record, whose own fields
    /// (`sensor_id`, `syn_to_clienthello_ms`) the line keeps.
    Both,
}

impl FingerprintMode {
    pub fn parse(arg: &str) -> Result<Self, ConfigError> {
        match arg.trim().to_ascii_lowercase().as_str() {
            "sensor" => Ok(Self::Sensor),
            "inline" => Ok(Self::Inline),
            "both" => Ok(Self::Both),
            _ => Err(ConfigError::Expected {
                what: "sensor, inline or both",
                got: arg.to_owned(),
            }),
        }
    }

    /// Whether lines of this mode read the sensor's ring.
    pub fn uses_ring(self) -> bool {
        self != Self::Inline
    }

    /// Whether httpd captures the SYN and the ClientHello itself.
    pub fn captures(self) -> bool {
        self != Self::Sensor
    }
}

/// A line field a trusted proxy's header fills (`ReqinLogProxyHeader <field> <header>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamField {
    Ja4,
    Ja3Hash,
}

impl UpstreamField {
    pub const ALL: [UpstreamField; 2] = [UpstreamField::Ja4, UpstreamField::Ja3Hash];

    pub fn parse(arg: &str) -> Result<Self, ConfigError> {
        match arg.trim().to_ascii_lowercase().as_str() {
            "ja4" => Ok(Self::Ja4),
            "ja3_hash" => Ok(Self::Ja3Hash),
            _ => Err(ConfigError::Expected {
                what: "ja4 or ja3_hash",
                got: arg.to_owned(),
            }),
        }
    }

    /// The header CloudFront sends the field in, the default of `ReqinLogProxyHeader`.
    pub fn default_header(self) -> &'static str {
        match self {
            Self::Ja4 => "CloudFront-Viewer-JA4-Fingerprint",
            Self::Ja3Hash => "CloudFront-Viewer-JA3-Fingerprint",
        }
    }
}

/// `ReqinLogTrustedProxy` and the header of each field (`ReqinLogProxyHeader`).
pub type UpstreamSettings<'a> = (&'a [IpNet], Vec<(UpstreamField, &'a str)>);

/// Where the JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogTarget {
    /// A plain file opened for append by the parent, inherited by every child.
    File(PathBuf),
    /// `|program`: a piped log (httpd starts the program and restarts it if it dies).
    Pipe(String),
}

impl LogTarget {
    /// Parses a `ReqinLogFile` value. `resolve` turns a relative path into an absolute one the
    /// way httpd does for `CustomLog` (under `ServerRoot`).
    pub fn parse(
        arg: &str,
        resolve: impl FnOnce(&str) -> Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let arg = arg.trim();
        if arg.is_empty() {
            return Err(ConfigError::Empty);
        }
        if let Some(program) = arg.strip_prefix('|') {
            let program = program.trim();
            if program.is_empty() {
                return Err(ConfigError::EmptyPipe);
            }
            return Ok(LogTarget::Pipe(program.to_owned()));
        }
        let path = if Path::new(arg).is_absolute() {
            PathBuf::from(arg)
        } else {
            resolve(arg).ok_or_else(|| ConfigError::Unresolvable(arg.to_owned()))?
        };
        if arg.ends_with('/') {
            return Err(ConfigError::IsADirectory(path));
        }
        Ok(LogTarget::File(path))
    }
}

impl std::fmt::Display for LogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogTarget::File(path) => write!(f, "{}", path.display()),
            LogTarget::Pipe(program) => write!(f, "|{program}"),
        }
    }
}

/// Parses a `ReqinLogRing` value: an absolute path where the sensor creates the ring, possibly
/// after httpd started (even its directory).
pub fn parse_ring_path(arg: &str) -> Result<PathBuf, ConfigError> {
    parse_absolute_file(arg)
}

/// `JsonSockLogSocket`: the UNIX datagram socket of the collector, which may start later.
pub fn parse_socket_path(arg: &str) -> Result<PathBuf, ConfigError> {
    parse_absolute_file(arg)
}

fn parse_absolute_file(arg: &str) -> Result<PathBuf, ConfigError> {
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(ConfigError::Empty);
    }
    let path = PathBuf::from(arg);
    if !path.is_absolute() {
        return Err(ConfigError::NotAbsolute(path));
    }
    if arg.ends_with('/') || path.parent().is_none() {
        return Err(ConfigError::IsADirectory(path));
    }
    Ok(path)
}

/// An IP address or a CIDR (`ReqinLogExcludeSource`, `ReqinLogTrustedProxy`).
pub fn parse_net(arg: &str) -> Result<IpNet, ConfigError> {
    let arg = arg.trim();
    arg.parse::<IpNet>()
        .or_else(|_| arg.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| ConfigError::Expected {
            what: "an IP address or CIDR such as 10.0.0.0/8",
            got: arg.to_owned(),
        })
}

/// An absolute path, or `Off`.
pub fn parse_path_or_off(arg: &str) -> Result<Option<PathBuf>, ConfigError> {
    if arg.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_absolute_file(arg).map(Some)
}

/// `On`/`Off`, as httpd's FLAG directives spell it (ffi::entry passes FLAG values as text).
pub fn parse_flag(arg: &str) -> Result<bool, ConfigError> {
    match arg.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(ConfigError::Expected {
            what: "On or Off",
            got: arg.to_owned(),
        }),
    }
}

/// A duration: `500ms`, `2s`, `1m` (humantime); a bare number is seconds, as in the C module's
/// `*Interval` directives.
pub fn parse_duration(arg: &str, max: Duration) -> Result<Duration, ConfigError> {
    let arg = arg.trim();
    let d = match arg.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(arg).map_err(|_| ConfigError::Expected {
            what: "a duration such as 500ms, 2s or 10 (seconds)",
            got: arg.to_owned(),
        })?,
    };
    if d > max {
        return Err(ConfigError::TooLarge {
            got: arg.to_owned(),
            max: humantime::format_duration(max).to_string(),
        });
    }
    Ok(d)
}

/// A size in bytes: `16384`, `16K`, `1M`; `0` or `Off` for none.
pub fn parse_size(arg: &str, max: usize) -> Result<usize, ConfigError> {
    let arg = arg.trim();
    if arg.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let (digits, unit) = match arg.char_indices().last() {
        Some((i, 'k' | 'K')) => (&arg[..i], 1024),
        Some((i, 'm' | 'M')) => (&arg[..i], 1024 * 1024),
        _ => (arg, 1),
    };
    let n = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| ConfigError::Expected {
            what: "a size in bytes such as 16384, 16K or 1M, or Off",
            got: arg.to_owned(),
        })?;
    if n > max {
        return Err(ConfigError::TooLarge {
            got: arg.to_owned(),
            max: max.to_string(),
        });
    }
    Ok(n)
}

/// A count between 1 and `max`.
pub fn parse_count(arg: &str, max: usize) -> Result<usize, ConfigError> {
    let n: usize = arg.trim().parse().map_err(|_| ConfigError::Expected {
        what: "a positive integer",
        got: arg.to_owned(),
    })?;
    if n == 0 {
        return Err(ConfigError::Expected {
            what: "a positive integer",
            got: arg.to_owned(),
        });
    }
    if n > max {
        return Err(ConfigError::TooLarge {
            got: arg.to_owned(),
            max: max.to_string(),
        });
    }
    Ok(n)
}

/// Longest tag key: `tag_<key>` stays a short column name.
pub const MAX_TAG_KEY_LEN: usize = 64;

/// A `ReqinLogTag` key: the line gets `tag_<key>`, so letters, digits and `_` only.
pub fn parse_tag_key(arg: &str) -> Result<String, ConfigError> {
    let ok = !arg.is_empty()
        && arg.len() <= MAX_TAG_KEY_LEN
        && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(arg.to_owned())
    } else {
        Err(ConfigError::Expected {
            what: "a tag key of letters, digits and _ (at most 64)",
            got: arg.to_owned(),
        })
    }
}

/// An HTTP field name (RFC 9110 token).
pub fn parse_header_name(arg: &str) -> Result<String, ConfigError> {
    let ok = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(arg.to_owned())
    } else {
        Err(ConfigError::Expected {
            what: "an HTTP header name",
            got: arg.to_owned(),
        })
    }
}

/// `JsonSockLogLevel`: the least severe level of the module's own error-log messages, on top of
/// `LogLevel reqin_log:...`. Values and default as the original C module: DEBUG, INFO, WARNING
/// (the default), ERROR, EMERG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Verbosity {
    /// Emergencies only: the module itself has none, so it writes nothing.
    Emerg,
    Error,
    #[default]
    Warn,
    Info,
    /// Every message; `LogLevel reqin_log:...` alone decides.
    Debug,
}

impl Verbosity {
    pub fn parse(arg: &str) -> Result<Self, ConfigError> {
        match arg.trim().to_ascii_lowercase().as_str() {
            "emerg" => Ok(Self::Emerg),
            "error" | "err" | "crit" | "alert" => Ok(Self::Error),
            "warn" | "warning" => Ok(Self::Warn),
            "info" | "notice" => Ok(Self::Info),
            "debug" | "trace" => Ok(Self::Debug),
            _ => Err(ConfigError::Expected {
                what: "one of DEBUG, INFO, WARNING, ERROR, EMERG",
                got: arg.to_owned(),
            }),
        }
    }
}

/// A bad directive value. httpd prints it after `Syntax error on line N of FILE:`; the FFI layer
/// prefixes the directive's name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("expected a path or |program, got an empty value")]
    Empty,
    #[error("expected |program, got a '|' with no program after it")]
    EmptyPipe,
    #[error("cannot resolve {0:?} under ServerRoot")]
    Unresolvable(String),
    #[error("expected an absolute path, got {0:?}")]
    NotAbsolute(PathBuf),
    #[error("expected a file path, {0:?} is a directory")]
    IsADirectory(PathBuf),
    #[error("expected {what}, got {got} argument(s)")]
    ArgCount { what: &'static str, got: usize },
    #[error("expected {what}, got {got:?}")]
    Expected { what: &'static str, got: String },
    #[error("{got:?} is larger than the maximum of {max}")]
    TooLarge { got: String, max: String },
    #[error("unknown directive")]
    Unknown,
}

/// The directive values of one server (the main server or a virtual host). `None`: not set
/// here, inherited from the main server, else the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub enabled: Option<bool>,
    pub log_target: Option<LogTarget>,
    pub socket: Option<PathBuf>,
    pub headers: Option<Vec<String>>,
    pub max_headers: Option<usize>,
    pub max_header_value_len: Option<usize>,
    pub reconnect_interval: Option<Duration>,
    pub error_report_interval: Option<Duration>,
    pub verbosity: Option<Verbosity>,
    pub ring_path: Option<PathBuf>,
    pub time_window: Option<Duration>,
    pub orphan_delay: Option<Duration>,
    pub match_mode: Option<MatchMode>,
    pub exclude_source: Option<Vec<IpNet>>,
    pub include_ports: Option<Vec<u16>>,
    /// Lower-case names.
    pub redact: Option<BTreeSet<String>>,
    pub export_env: Option<bool>,
    pub lookup_wait: Option<Duration>,
    /// `ReqinLogBuffer`: 0 writes every line at once.
    pub buffer: Option<usize>,
    pub flush_interval: Option<Duration>,
    /// `ReqinLogMaxFieldLen`.
    pub max_field_len: Option<usize>,
    /// `ReqinLogVerdictTable`: `Some(None)` is `Off`.
    pub verdict_table: Option<Option<PathBuf>>,
    /// `ReqinLogClientMap`: `Some(None)` is `Off`.
    pub client_map: Option<Option<PathBuf>>,
    /// Testing only: a request for exactly this path makes the log hook panic, to prove the
    /// panic is caught and reported.
    pub test_panic_path: Option<String>,
    /// `ReqinLogFingerprint`.
    pub fingerprint: Option<FingerprintMode>,
    /// `ReqinLogTrustedProxy`: peers whose fingerprint headers are believed.
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// `ReqinLogProxyHeader`: the header of each field set here (the others keep their default).
    pub proxy_headers: Option<Vec<(UpstreamField, String)>>,
    /// `ReqinLogJA4Plus`.
    pub ja4plus: Option<bool>,
}

macro_rules! merge {
    ($base:ident, $add:ident, $($f:ident),*) => {
        Settings { $($f: $add.$f.clone().or_else(|| $base.$f.clone()),)* }
    };
}

impl Settings {
    /// A virtual host inherits every directive it does not set from the main server.
    pub fn merge(base: &Settings, add: &Settings) -> Settings {
        merge!(
            base,
            add,
            enabled,
            log_target,
            socket,
            headers,
            max_headers,
            max_header_value_len,
            reconnect_interval,
            error_report_interval,
            verbosity,
            ring_path,
            time_window,
            orphan_delay,
            match_mode,
            exclude_source,
            include_ports,
            redact,
            export_env,
            lookup_wait,
            buffer,
            flush_interval,
            max_field_len,
            verdict_table,
            client_map,
            test_panic_path,
            fingerprint,
            trusted_proxies,
            proxy_headers,
            ja4plus
        )
    }

    /// Applies one directive with its arguments (ITERATE directives come one argument at a
    /// time, FLAG ones as `On`/`Off`). `resolve` resolves a relative `ReqinLogFile` under
    /// ServerRoot.
    pub fn apply(
        &mut self,
        directive: &str,
        args: &[&str],
        resolve: impl FnOnce(&str) -> Option<PathBuf>,
    ) -> Result<(), ConfigError> {
        if directive == "ReqinLogTag" {
            // The value and condition are ap_expr text, parsed by httpd (module.rs); here only
            // what makes a field name.
            return match args {
                [key, _value] | [key, _value, _] => parse_tag_key(key).map(|_| ()),
                _ => Err(ConfigError::ArgCount {
                    what: "a key, a value and optionally a condition",
                    got: args.len(),
                }),
            };
        }
        if directive == "ReqinLogProxyHeader" {
            let [field, header] = args else {
                return Err(ConfigError::ArgCount {
                    what: "a field (ja4 or ja3_hash) and a header name",
                    got: args.len(),
                });
            };
            let field = UpstreamField::parse(field)?;
            let header = parse_header_name(header.trim())?;
            let list = self.proxy_headers.get_or_insert_with(Vec::new);
            list.retain(|(f, _)| *f != field);
            list.push((field, header));
            return Ok(());
        }
        let arg = match args {
            [one] => *one,
            _ => {
                return Err(ConfigError::ArgCount {
                    what: "one argument",
                    got: args.len(),
                })
            }
        };
        match directive {
            "JsonSockLogEnabled" => self.enabled = Some(parse_flag(arg)?),
            "JsonSockLogSocket" => self.socket = Some(parse_socket_path(arg)?),
            "JsonSockLogHeaders" => {
                let name = parse_header_name(arg.trim())?;
                let list = self.headers.get_or_insert_with(Vec::new);
                if !list.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
                    list.push(name);
                }
            }
            "JsonSockLogMaxHeaders" => self.max_headers = Some(parse_count(arg, MAX_MAX_HEADERS)?),
            "JsonSockLogMaxHeaderValueLen" => {
                self.max_header_value_len = Some(parse_count(arg, MAX_MAX_HEADER_VALUE_LEN)?)
            }
            "JsonSockLogReconnectInterval" => {
                self.reconnect_interval = Some(parse_duration(arg, Duration::from_secs(3600))?)
            }
            "JsonSockLogErrorReportInterval" => {
                self.error_report_interval = Some(parse_duration(arg, Duration::from_secs(86400))?)
            }
            "JsonSockLogLevel" => self.verbosity = Some(Verbosity::parse(arg)?),
            "ReqinLogFile" => self.log_target = Some(LogTarget::parse(arg, resolve)?),
            "ReqinLogRing" => self.ring_path = Some(parse_ring_path(arg)?),
            "ReqinLogTimeWindow" => {
                let d = parse_duration(arg, Duration::from_secs(3600))?;
                if d.is_zero() {
                    return Err(ConfigError::Expected {
                        what: "a window longer than zero",
                        got: arg.to_owned(),
                    });
                }
                self.time_window = Some(d);
            }
            "ReqinLogOrphanDelay" => {
                self.orphan_delay = Some(parse_duration(arg, MAX_ORPHAN_DELAY)?)
            }
            "ReqinLogMatchMode" => {
                self.match_mode =
                    Some(
                        MatchMode::parse(arg.trim()).ok_or_else(|| ConfigError::Expected {
                            what: "one_to_many or one_to_one",
                            got: arg.to_owned(),
                        })?,
                    )
            }
            "ReqinLogExcludeSource" => {
                let net = parse_net(arg)?;
                self.exclude_source.get_or_insert_with(Vec::new).push(net);
            }
            "ReqinLogIncludePorts" => {
                let port = arg
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| ConfigError::Expected {
                        what: "a TCP port (1-65535)",
                        got: arg.to_owned(),
                    })?;
                self.include_ports.get_or_insert_with(Vec::new).push(port);
            }
            "ReqinLogRedactHeaders" => {
                let set = self.redact.get_or_insert_with(|| {
                    DEFAULT_REDACTED.iter().map(|s| s.to_string()).collect()
                });
                let arg = arg.trim();
                if arg.eq_ignore_ascii_case("none") {
                    set.clear();
                } else if let Some(name) = arg.strip_prefix('-') {
                    set.remove(&parse_header_name(name)?.to_ascii_lowercase());
                } else {
                    let name = arg.strip_prefix('+').unwrap_or(arg);
                    set.insert(parse_header_name(name)?.to_ascii_lowercase());
                }
            }
            "ReqinLogExportEnv" => self.export_env = Some(parse_flag(arg)?),
            "ReqinLogLookupWait" => self.lookup_wait = Some(parse_duration(arg, MAX_LOOKUP_WAIT)?),
            "ReqinLogBuffer" => self.buffer = Some(parse_size(arg, MAX_BUFFER)?),
            "ReqinLogFlushInterval" => {
                let d = parse_duration(arg, MAX_FLUSH_INTERVAL)?;
                if d.is_zero() {
                    return Err(ConfigError::Expected {
                        what: "an interval longer than zero",
                        got: arg.to_owned(),
                    });
                }
                self.flush_interval = Some(d);
            }
            "ReqinLogVerdictTable" => self.verdict_table = Some(parse_path_or_off(arg)?),
            "ReqinLogClientMap" => self.client_map = Some(parse_path_or_off(arg)?),
            "ReqinLogMaxFieldLen" => {
                self.max_field_len = Some(parse_count(arg, MAX_MAX_FIELD_LEN)?)
            }
            "ReqinLogFingerprint" => self.fingerprint = Some(FingerprintMode::parse(arg)?),
            "ReqinLogTrustedProxy" => {
                let net = parse_net(arg)?;
                self.trusted_proxies.get_or_insert_with(Vec::new).push(net);
            }
            "ReqinLogJA4Plus" => {
                let on = parse_flag(arg)?;
                if on && !cfg!(feature = "foxio") {
                    return Err(ConfigError::Expected {
                        what: "Off: this mod_reqin_log was built without JA4T/JA4H (cargo feature foxio, FoxIO License 1.1)",
                        got: arg.to_owned(),
                    });
                }
                self.ja4plus = Some(on);
            }
            "ReqinLogTestPanic" => {
                let path = arg.trim();
                if !path.starts_with('/') {
                    return Err(ConfigError::Expected {
                        what: "a URL path starting with /",
                        got: arg.to_owned(),
                    });
                }
                self.test_panic_path = Some(path.to_owned());
            }
            _ => return Err(ConfigError::Unknown),
        }
        Ok(())
    }

    /// Whether this server logs at all: a sink is in use and `JsonSockLogEnabled` is not Off.
    pub fn logs(&self) -> bool {
        self.enabled != Some(false) && (self.log_target.is_some() || self.socket_sink().is_some())
    }

    /// The `JsonSockLogSocket` in use. As in the original C module, whose `JsonSockLogEnabled`
    /// defaults to Off, the socket gets lines only with `JsonSockLogEnabled On`; a
    /// `ReqinLogFile` (new) logs unless `JsonSockLogEnabled Off`.
    pub fn socket_sink(&self) -> Option<&PathBuf> {
        self.socket.as_ref().filter(|_| self.enabled == Some(true))
    }

    pub fn ring_path(&self) -> &Path {
        self.ring_path
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_RING_PATH))
    }

    pub fn headers(&self) -> &[String] {
        self.headers.as_deref().unwrap_or(&[])
    }

    pub fn max_headers(&self) -> usize {
        self.max_headers.unwrap_or(DEFAULT_MAX_HEADERS)
    }

    pub fn max_header_value_len(&self) -> usize {
        self.max_header_value_len
            .unwrap_or(DEFAULT_MAX_HEADER_VALUE_LEN)
    }

    pub fn reconnect_interval(&self) -> Duration {
        self.reconnect_interval
            .unwrap_or(DEFAULT_RECONNECT_INTERVAL)
    }

    pub fn error_report_interval(&self) -> Duration {
        self.error_report_interval
            .unwrap_or(DEFAULT_ERROR_REPORT_INTERVAL)
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity.unwrap_or_default()
    }

    pub fn orphan_delay(&self) -> Duration {
        self.orphan_delay.unwrap_or(DEFAULT_ORPHAN_DELAY)
    }

    pub fn export_env(&self) -> bool {
        self.export_env.unwrap_or(true)
    }

    pub fn lookup_wait(&self) -> Duration {
        self.lookup_wait.unwrap_or(DEFAULT_LOOKUP_WAIT)
    }

    /// `ReqinLogBuffer`: bytes of lines collected before a write (0: a write per line).
    pub fn buffer(&self) -> usize {
        self.buffer.unwrap_or(DEFAULT_BUFFER)
    }

    pub fn flush_interval(&self) -> Duration {
        self.flush_interval.unwrap_or(DEFAULT_FLUSH_INTERVAL)
    }

    /// `ReqinLogVerdictTable`: the detector's verdict table, unless `Off`.
    pub fn verdict_table(&self) -> Option<&Path> {
        match &self.verdict_table {
            Some(v) => v.as_deref(),
            None => Some(Path::new(correlate_lib::verdict::DEFAULT_VERDICT_PATH)),
        }
    }

    /// `ReqinLogClientMap`: the ja4→client mapping file, unless `Off`; `true` when it was
    /// configured (a missing default file is not worth a warning).
    pub fn client_map(&self) -> Option<(&Path, bool)> {
        match &self.client_map {
            Some(v) => v.as_deref().map(|p| (p, true)),
            None => Some((
                Path::new(correlate_lib::clients::DEFAULT_CLIENTS_PATH),
                false,
            )),
        }
    }

    /// `ReqinLogMaxFieldLen`: the cap of path, query and host.
    pub fn max_field_len(&self) -> usize {
        self.max_field_len.unwrap_or(DEFAULT_MAX_FIELD_LEN)
    }

    /// Whether a header's value must be replaced by [`REDACTED_VALUE`].
    pub fn is_redacted(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        match &self.redact {
            Some(set) => set.contains(&lower),
            None => DEFAULT_REDACTED.contains(&lower.as_str()),
        }
    }

    /// `ReqinLogFingerprint` (default `sensor`: see the README for why).
    pub fn fingerprint(&self) -> FingerprintMode {
        self.fingerprint.unwrap_or_default()
    }

    /// `ReqinLogJA4Plus` (default Off; only a build with the cargo feature `foxio` accepts On).
    pub fn ja4plus(&self) -> bool {
        self.ja4plus.unwrap_or(false)
    }

    /// The trusted proxies and the header of each upstream field; `None` without
    /// `ReqinLogTrustedProxy` (no header is then trusted, and none is removed).
    pub fn upstream(&self) -> Option<UpstreamSettings<'_>> {
        let proxies = self.trusted_proxies.as_deref().filter(|p| !p.is_empty())?;
        let set = self.proxy_headers.as_deref().unwrap_or(&[]);
        let headers = UpstreamField::ALL
            .iter()
            .map(|f| {
                let name = set
                    .iter()
                    .find(|(g, _)| g == f)
                    .map_or(f.default_header(), |(_, h)| h.as_str());
                (*f, name)
            })
            .collect();
        Some((proxies, headers))
    }

    pub fn join_rules(&self) -> JoinRules {
        JoinRules {
            time_window: self.time_window.unwrap_or(DEFAULT_TIME_WINDOW),
            mode: self.match_mode.unwrap_or_default(),
            exclude_source: self.exclude_source.clone().unwrap_or_default(),
            include_dest_ports: self.include_ports.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn under(root: &Path) -> impl FnOnce(&str) -> Option<PathBuf> + '_ {
        move |rel| Some(root.join(rel))
    }

    fn apply(s: &mut Settings, d: &str, a: &str) -> Result<(), ConfigError> {
        s.apply(d, &[a], |_| None)
    }

    #[test]
    fn absolute_file_in_an_existing_dir_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reqin.log");
        let t = LogTarget::parse(path.to_str().unwrap(), |_| None).unwrap();
        assert_eq!(t, LogTarget::File(path));
    }

    #[test]
    fn relative_file_resolves_under_server_root() {
        let dir = tempfile::tempdir().unwrap();
        let t = LogTarget::parse("reqin.log", under(dir.path())).unwrap();
        assert_eq!(t, LogTarget::File(dir.path().join("reqin.log")));
    }

    #[test]
    fn a_file_in_a_directory_that_does_not_exist_yet_is_accepted() {
        // The directory is machine state: the hooks warn and retry; `apache2 -t` passes.
        let dir = tempfile::tempdir().unwrap();
        let t = LogTarget::parse("nosuchdir/reqin.log", under(dir.path())).unwrap();
        assert_eq!(t, LogTarget::File(dir.path().join("nosuchdir/reqin.log")));
        assert_eq!(
            parse_socket_path("/var/run/logcorrelator/http.socket"),
            Ok(PathBuf::from("/var/run/logcorrelator/http.socket"))
        );
    }

    #[test]
    fn empty_values_are_rejected() {
        assert_eq!(LogTarget::parse("  ", |_| None), Err(ConfigError::Empty));
        assert_eq!(
            LogTarget::parse("| ", |_| None),
            Err(ConfigError::EmptyPipe)
        );
        assert_eq!(parse_ring_path(""), Err(ConfigError::Empty));
    }

    #[test]
    fn pipe_keeps_the_whole_command_line() {
        let t = LogTarget::parse("|/usr/bin/rotatelogs /var/log/x.%Y 86400", |_| None).unwrap();
        assert_eq!(
            t,
            LogTarget::Pipe("/usr/bin/rotatelogs /var/log/x.%Y 86400".into())
        );
    }

    #[test]
    fn a_path_spelled_as_a_directory_is_not_a_log_file() {
        let err = LogTarget::parse("/var/log/apache2/", |_| None).unwrap_err();
        assert!(matches!(err, ConfigError::IsADirectory(_)));
        assert!(matches!(
            parse_socket_path("/run/x/"),
            Err(ConfigError::IsADirectory(_))
        ));
        assert!(matches!(
            parse_ring_path("/"),
            Err(ConfigError::IsADirectory(_))
        ));
    }

    #[test]
    fn ring_and_socket_paths_must_be_absolute_and_nothing_more() {
        assert!(matches!(
            parse_ring_path("ja4.ring"),
            Err(ConfigError::NotAbsolute(_))
        ));
        assert!(matches!(
            parse_socket_path("run/http.socket"),
            Err(ConfigError::NotAbsolute(_))
        ));
        assert_eq!(
            parse_ring_path("/nonexistent-dir/ja4.ring"),
            Ok(PathBuf::from("/nonexistent-dir/ja4.ring")),
            "the sensor may create the directory later"
        );
    }

    #[test]
    fn a_directive_given_the_wrong_number_of_arguments_says_so() {
        let mut s = Settings::default();
        let err = s
            .apply("ReqinLogRing", &["/a", "/b"], |_| None)
            .unwrap_err();
        assert_eq!(err.to_string(), "expected one argument, got 2 argument(s)");
    }

    #[test]
    fn verdict_table_and_client_map_default_to_the_packages_paths_or_off() {
        let mut s = Settings::default();
        assert_eq!(
            s.verdict_table(),
            Some(Path::new("/dev/shm/ja4sensor.verdicts"))
        );
        assert_eq!(s.client_map().map(|(_, set)| set), Some(false));
        apply(&mut s, "ReqinLogVerdictTable", "Off").unwrap();
        assert_eq!(s.verdict_table(), None);
        apply(&mut s, "ReqinLogClientMap", "/etc/ja4sensor/clients.csv").unwrap();
        assert_eq!(
            s.client_map(),
            Some((Path::new("/etc/ja4sensor/clients.csv"), true))
        );
        assert!(apply(&mut s, "ReqinLogVerdictTable", "verdicts").is_err());
    }

    #[test]
    fn tag_keys_make_field_names() {
        let mut s = Settings::default();
        assert!(s
            .apply("ReqinLogTag", &["investigation_id", "INC-1"], |_| None)
            .is_ok());
        assert!(s
            .apply(
                "ReqinLogTag",
                &["analyst", "%{ENV:WHO}", "-R '10.0.0.0/8'"],
                |_| None
            )
            .is_ok());
        let err = s
            .apply("ReqinLogTag", &["bad-key", "x"], |_| None)
            .unwrap_err();
        assert!(err.to_string().contains("bad-key"), "{err}");
        assert!(s.apply("ReqinLogTag", &["only_a_key"], |_| None).is_err());
    }

    #[test]
    fn request_fields_have_a_documented_cap() {
        let mut s = Settings::default();
        assert_eq!(s.max_field_len(), DEFAULT_MAX_FIELD_LEN);
        apply(&mut s, "ReqinLogMaxFieldLen", "512").unwrap();
        assert_eq!(s.max_field_len(), 512);
        assert!(apply(&mut s, "ReqinLogMaxFieldLen", "0").is_err());
        assert!(apply(&mut s, "ReqinLogMaxFieldLen", "100000")
            .unwrap_err()
            .to_string()
            .contains("maximum"));
    }

    #[test]
    fn virtual_host_inherits_what_it_does_not_set() {
        let base = Settings {
            log_target: Some(LogTarget::Pipe("cat".into())),
            ring_path: Some("/dev/shm/a.ring".into()),
            max_headers: Some(3),
            ..Settings::default()
        };
        let add = Settings {
            ring_path: Some("/dev/shm/b.ring".into()),
            match_mode: Some(MatchMode::OneToOne),
            ..Settings::default()
        };
        let merged = Settings::merge(&base, &add);
        assert_eq!(merged.log_target, base.log_target);
        assert_eq!(merged.ring_path(), Path::new("/dev/shm/b.ring"));
        assert_eq!(merged.max_headers(), 3);
        assert_eq!(merged.join_rules().mode, MatchMode::OneToOne);
        assert_eq!(
            Settings::default().ring_path(),
            Path::new(DEFAULT_RING_PATH)
        );
    }

    #[test]
    fn c_module_defaults() {
        let s = Settings::default();
        assert_eq!(s.max_headers(), 25);
        assert_eq!(s.max_header_value_len(), 256);
        assert_eq!(s.orphan_delay(), Duration::from_millis(500));
        assert!(s.export_env());
        assert!(!s.logs(), "no sink, no logging");
    }

    #[test]
    fn every_directive_is_handled_and_bad_values_say_what_was_expected() {
        for d in DIRECTIVES {
            let mut s = Settings::default();
            let err = s
                .apply(
                    d,
                    &["\u{1}bogus value", "x"][..if *d == "ReqinLogTag" { 2 } else { 1 }],
                    |_| None,
                )
                .unwrap_err();
            assert_ne!(err, ConfigError::Unknown, "{d} is not handled");
            assert!(!err.to_string().is_empty());
        }
        let mut s = Settings::default();
        assert!(apply(&mut s, "ReqinLogTimeWindow", "0").is_err());
        assert!(apply(&mut s, "ReqinLogOrphanDelay", "1h")
            .unwrap_err()
            .to_string()
            .contains("maximum"));
        assert!(apply(&mut s, "JsonSockLogMaxHeaders", "0").is_err());
        assert!(apply(&mut s, "ReqinLogIncludePorts", "70000").is_err());
        assert!(apply(&mut s, "ReqinLogExcludeSource", "10.0.0.0/33").is_err());
        assert!(apply(&mut s, "JsonSockLogEnabled", "yes").is_err());
    }

    #[test]
    fn values_parse() {
        let mut s = Settings::default();
        apply(&mut s, "ReqinLogTimeWindow", "500ms").unwrap();
        apply(&mut s, "ReqinLogOrphanDelay", "2").unwrap();
        apply(&mut s, "ReqinLogMatchMode", "one_to_one").unwrap();
        apply(&mut s, "ReqinLogExcludeSource", "10.0.0.0/8").unwrap();
        apply(&mut s, "ReqinLogExcludeSource", "192.0.2.1").unwrap();
        apply(&mut s, "ReqinLogIncludePorts", "443").unwrap();
        apply(&mut s, "JsonSockLogHeaders", "User-Agent").unwrap();
        apply(&mut s, "JsonSockLogHeaders", "user-agent").unwrap();
        apply(&mut s, "JsonSockLogEnabled", "off").unwrap();
        apply(&mut s, "JsonSockLogLevel", "WARN").unwrap();
        let rules = s.join_rules();
        assert_eq!(rules.time_window, Duration::from_millis(500));
        assert_eq!(rules.exclude_source.len(), 2);
        assert_eq!(rules.include_dest_ports, vec![443]);
        assert_eq!(s.orphan_delay(), Duration::from_secs(2));
        assert_eq!(s.headers(), ["User-Agent"], "case-insensitive, kept once");
        assert_eq!(s.enabled, Some(false));
        assert_eq!(s.verbosity(), Verbosity::Warn);
    }

    #[test]
    fn buffer_sizes_and_flush_interval() {
        let mut s = Settings::default();
        assert_eq!(s.buffer(), DEFAULT_BUFFER);
        assert_eq!(s.flush_interval(), DEFAULT_FLUSH_INTERVAL);
        for (arg, bytes) in [
            ("16384", 16384),
            ("16K", 16384),
            ("1m", 1 << 20),
            ("0", 0),
            ("Off", 0),
        ] {
            apply(&mut s, "ReqinLogBuffer", arg).unwrap();
            assert_eq!(s.buffer(), bytes, "{arg}");
        }
        for bad in ["2M", "16KB", "-1", "lots", "99999999999999999999K"] {
            let err = apply(&mut s, "ReqinLogBuffer", bad).unwrap_err();
            assert!(err.to_string().contains(bad.trim()), "{bad}: {err}");
        }
        apply(&mut s, "ReqinLogFlushInterval", "250ms").unwrap();
        assert_eq!(s.flush_interval(), Duration::from_millis(250));
        assert!(apply(&mut s, "ReqinLogFlushInterval", "0").is_err());
        assert!(apply(&mut s, "ReqinLogFlushInterval", "1h").is_err());
    }

    #[test]
    fn json_sock_log_defaults_are_the_c_modules() {
        let mut s = Settings::default();
        assert_eq!(s.verbosity(), Verbosity::Warn, "JsonSockLogLevel WARNING");
        apply(&mut s, "JsonSockLogSocket", "/run/x.sock").unwrap();
        assert_eq!(s.socket_sink(), None, "JsonSockLogEnabled defaults to Off");
        assert!(!s.logs());
        apply(&mut s, "JsonSockLogEnabled", "On").unwrap();
        assert!(s.socket_sink().is_some() && s.logs());
        for (arg, v) in [
            ("DEBUG", Verbosity::Debug),
            ("INFO", Verbosity::Info),
            ("WARNING", Verbosity::Warn),
            ("ERROR", Verbosity::Error),
            ("EMERG", Verbosity::Emerg),
        ] {
            assert_eq!(Verbosity::parse(arg), Ok(v));
        }
        assert!(Verbosity::Emerg < Verbosity::Error);
    }

    #[test]
    fn readme_documents_every_directive() {
        let readme = include_str!("../../README.md");
        for d in DIRECTIVES {
            assert!(
                readme.contains(&format!("| `{d} ")),
                "{d} missing from README's directive table"
            );
        }
        let table = include_str!("module.rs");
        for d in DIRECTIVES {
            assert!(
                table.contains(&format!("name: c\"{d}\",")),
                "{d} missing from module.rs's directive table"
            );
        }
    }

    #[test]
    fn credentials_are_redacted_unless_removed_from_the_list() {
        let mut s = Settings::default();
        assert!(s.is_redacted("Authorization"));
        assert!(s.is_redacted("COOKIE"));
        assert!(!s.is_redacted("User-Agent"));
        apply(&mut s, "ReqinLogRedactHeaders", "X-Api-Key").unwrap();
        apply(&mut s, "ReqinLogRedactHeaders", "-Cookie").unwrap();
        assert!(s.is_redacted("x-api-key"));
        assert!(s.is_redacted("Authorization"), "defaults stay");
        assert!(!s.is_redacted("Cookie"));
        apply(&mut s, "ReqinLogRedactHeaders", "none").unwrap();
        assert!(!s.is_redacted("Authorization"));
    }
}
