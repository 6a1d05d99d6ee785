//! The YAML configuration. A ja4sentinel `config.yml` loads unchanged: its keys keep their
//! meaning and keys we do not know are ignored, never an error. Precedence: defaults < file <
//! environment < command line.
//!
//! | key | default | env override | meaning |
//! |---|---|---|---|
//! | `core.interface` | `any` | `JA4SENSOR_INTERFACE`, `JA4SENTINEL_INTERFACE` | capture interface (`any` = all; cooked SLL/SLL2 frames) |
//! | `core.listen_ports` | `[443]` | `JA4SENSOR_PORTS`, `JA4SENTINEL_PORTS` (comma-separated) | server ports; the BPF filter selects packets *to* them |
//! | `core.bpf_filter` | `""` | `JA4SENSOR_BPF_FILTER`, `JA4SENTINEL_BPF_FILTER` | custom filter; empty = generated from the ports and local IPs |
//! | `core.local_ips` | `[]` | — | server addresses: the generated filter adds `dst host` for each; empty = every address of this host, loopback included (sentinel leaves loopback out; our Apache is on this host and may be reached through `lo`) |
//! | `core.exclude_source_ips` | `[]` | — | client IPs or CIDRs (`10.0.0.0/8`) whose packets are skipped (counted) |
//! | `core.flow_timeout_sec` | `30` | `JA4SENSOR_FLOW_TIMEOUT`, `JA4SENTINEL_FLOW_TIMEOUT` | idle time before a flow waiting for its hello is dropped (1–300) |
//! | `core.packet_buffer_size` | `1000` | `JA4SENSOR_PACKET_BUFFER_SIZE`, `JA4SENTINEL_PACKET_BUFFER_SIZE` | packets the capture can queue while processing lags (1–1 000 000); sets libpcap's kernel buffer to this many 2 KiB frames, at least 8 MiB |
//! | `core.log_level` | `info` | — (as sentinel; `RUST_LOG` wins) | `error`, `warn`, `info`, `debug`, `trace` |
//! | `core.sensor_id` | `""` | `JA4SENSOR_SENSOR_ID` | ours: copied into every record (`sensor_id`), ≤ 64 bytes |
//! | `ring.path` | `/dev/shm/ja4sensor.ring` | `JA4SENSOR_RING_PATH` | ours: the shared-memory ring read by mod_reqin_log |
//! | `ring.slot_count` | `32768` | — | records kept (2 KiB each); the oldest is overwritten when full (1024–16 Mi) |
//! | `ring.group` | `""` | `JA4SENSOR_RING_GROUP` | group owning the ring file: the Apache group (`www-data`, `apache`) |
//! | `ring.mode` | `"0640"` | — | file mode: owner writes, the group (httpd children) reads; no group/other write |
//! | `outputs[].type` | — | — | `unix_socket`, `file` or `stdout` (the ring is always written) |
//! | `outputs[].enabled` | `false` | — | disabled outputs are checked but not opened |
//! | `outputs[].async_buffer` | `1000` | — | records queued for the output (1–1 000 000); when full, records are dropped and counted |
//! | `outputs[].params.socket_path` | — | — | `unix_socket`: the datagram socket to send to |
//! | `outputs[].params.path` | — | — | `file`: JSON lines appended, reopened on SIGHUP |
//!
//! `sensor_id` lives under `core` because it describes the sensor (sentinel prints it in every
//! LogRecord); everything about the ring is in `ring`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use correlate_lib::record::MAX_SENSOR_ID_LEN;
use correlate_lib::ring::{DEFAULT_RING_PATH, DEFAULT_SLOT_COUNT};
use ipnet::IpNet;
use serde::Deserialize;

/// sentinel's accepted range for `core.flow_timeout_sec`.
pub const FLOW_TIMEOUT_RANGE_SEC: std::ops::RangeInclusive<u64> = 1..=300;
/// sentinel's accepted range for `core.packet_buffer_size`.
pub const PACKET_BUFFER_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000;
/// Accepted `outputs[].async_buffer` (sentinel's default is 1000).
pub const ASYNC_BUFFER_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000;
pub const DEFAULT_ASYNC_BUFFER: u64 = 1000;
/// Ring sizes accepted: fewer than 1024 slots would lose records within a second on a busy
/// server; more than 16 Mi slots (16 GiB at 1 KiB a slot) is certainly a typo.
pub const RING_SLOT_COUNT_RANGE: std::ops::RangeInclusive<u32> = 1024..=16 * 1024 * 1024;
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
/// Output types sentinel knows.
pub const OUTPUT_TYPES: [&str; 3] = ["unix_socket", "file", "stdout"];

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub core: CoreConfig,
    pub ring: RingSection,
    pub outputs: Vec<OutputConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct CoreConfig {
    pub interface: String,
    pub listen_ports: Vec<u16>,
    pub bpf_filter: String,
    pub local_ips: Vec<String>,
    pub exclude_source_ips: Vec<String>,
    pub flow_timeout_sec: u64,
    pub packet_buffer_size: u64,
    pub log_level: String,
    pub sensor_id: String,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            interface: "any".into(),
            listen_ports: vec![443],
            bpf_filter: String::new(),
            local_ips: Vec::new(),
            exclude_source_ips: Vec::new(),
            flow_timeout_sec: 30,
            packet_buffer_size: 1000,
            log_level: "info".into(),
            sensor_id: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct RingSection {
    pub path: PathBuf,
    pub slot_count: u32,
    /// Group name or numeric gid that owns the ring file; empty keeps the sensor's group.
    pub group: String,
    /// Octal file mode, as a string so YAML does not read `0640` as decimal 640.
    pub mode: String,
}

impl Default for RingSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_RING_PATH),
            slot_count: DEFAULT_SLOT_COUNT,
            group: String::new(),
            mode: DEFAULT_RING_MODE.into(),
        }
    }
}

/// Readable by the owner and the group (the Apache children), writable by the sensor only.
pub const DEFAULT_RING_MODE: &str = "0640";

impl RingSection {
    /// The file mode, checked: octal, no bits beyond 0o777, and never writable by others than
    /// the sensor (readers map it read-only; a writable ring would let anyone forge records).
    pub fn mode_bits(&self) -> Result<u32, ConfigError> {
        let invalid = || {
            ConfigError::invalid(
                "ring.mode",
                &self.mode,
                "an octal mode such as 0640, without group/other write bits",
            )
        };
        let bits =
            u32::from_str_radix(self.mode.trim_start_matches("0o"), 8).map_err(|_| invalid())?;
        if bits > 0o777 || bits & 0o022 != 0 {
            return Err(invalid());
        }
        Ok(bits)
    }

    /// The gid of `group` (a name looked up through NSS, or a number); `None` when empty.
    pub fn gid(&self) -> Result<Option<u32>, ConfigError> {
        let group = self.group.trim();
        if group.is_empty() {
            return Ok(None);
        }
        if let Ok(gid) = group.parse::<u32>() {
            return Ok(Some(gid));
        }
        match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
            _ => Err(ConfigError::invalid(
                "ring.group",
                group,
                "an existing group name or a numeric gid (the Apache group, e.g. www-data)",
            )),
        }
    }
}

/// One of sentinel's `outputs` entries (`unix_socket`, `file`, `stdout`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct OutputConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub enabled: bool,
    pub async_buffer: Option<u64>,
    pub params: std::collections::BTreeMap<String, serde_yaml::Value>,
}

/// A checked, enabled output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    UnixSocket { socket_path: PathBuf, queue: usize },
    File { path: PathBuf, queue: usize },
    Stdout { queue: usize },
}

impl OutputConfig {
    /// Checks the entry (also when disabled: a typo should not wait for the day it is enabled).
    fn spec(&self, index: usize) -> Result<OutputSpec, ConfigError> {
        let key = |name: &str| format!("outputs[{index}].{name}");
        let queue = self.async_buffer.unwrap_or(DEFAULT_ASYNC_BUFFER);
        if !ASYNC_BUFFER_RANGE.contains(&queue) {
            return Err(ConfigError::Invalid {
                key: key("async_buffer"),
                value: queue.to_string(),
                expected: range_text(&ASYNC_BUFFER_RANGE),
            });
        }
        let queue = usize::try_from(queue).unwrap_or(usize::MAX);
        let path_param = |name: &str| -> Result<PathBuf, ConfigError> {
            match self.params.get(name).and_then(serde_yaml::Value::as_str) {
                Some(p) if !p.trim().is_empty() => Ok(PathBuf::from(p)),
                _ => Err(ConfigError::Invalid {
                    key: key(&format!("params.{name}")),
                    value: String::new(),
                    expected: format!("a path (required by type {})", self.kind),
                }),
            }
        };
        match self.kind.as_str() {
            "unix_socket" => Ok(OutputSpec::UnixSocket {
                socket_path: path_param("socket_path")?,
                queue,
            }),
            "file" => Ok(OutputSpec::File {
                path: path_param("path")?,
                queue,
            }),
            "stdout" => Ok(OutputSpec::Stdout { queue }),
            other => Err(ConfigError::Invalid {
                key: key("type"),
                value: other.to_owned(),
                expected: format!("one of {}", OUTPUT_TYPES.join(", ")),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    /// `key` is the config key (or environment variable) at fault.
    #[error("{key} = {value:?}: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, value: &str, expected: &str) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }
}

fn range_text<T: std::fmt::Display>(r: &std::ops::RangeInclusive<T>) -> String {
    format!("{} to {}", r.start(), r.end())
}

/// An environment override: our name, then sentinel's (so an existing unit file works).
struct EnvKey {
    ours: &'static str,
    sentinel: Option<&'static str>,
}

const ENV_INTERFACE: EnvKey = EnvKey {
    ours: "JA4SENSOR_INTERFACE",
    sentinel: Some("JA4SENTINEL_INTERFACE"),
};
const ENV_PORTS: EnvKey = EnvKey {
    ours: "JA4SENSOR_PORTS",
    sentinel: Some("JA4SENTINEL_PORTS"),
};
const ENV_BPF_FILTER: EnvKey = EnvKey {
    ours: "JA4SENSOR_BPF_FILTER",
    sentinel: Some("JA4SENTINEL_BPF_FILTER"),
};
const ENV_FLOW_TIMEOUT: EnvKey = EnvKey {
    ours: "JA4SENSOR_FLOW_TIMEOUT",
    sentinel: Some("JA4SENTINEL_FLOW_TIMEOUT"),
};
const ENV_PACKET_BUFFER_SIZE: EnvKey = EnvKey {
    ours: "JA4SENSOR_PACKET_BUFFER_SIZE",
    sentinel: Some("JA4SENTINEL_PACKET_BUFFER_SIZE"),
};
const ENV_SENSOR_ID: EnvKey = EnvKey {
    ours: "JA4SENSOR_SENSOR_ID",
    sentinel: None,
};
const ENV_RING_PATH: EnvKey = EnvKey {
    ours: "JA4SENSOR_RING_PATH",
    sentinel: None,
};
const ENV_RING_GROUP: EnvKey = EnvKey {
    ours: "JA4SENSOR_RING_GROUP",
    sentinel: None,
};

impl EnvKey {
    /// The value and the name it was found under.
    fn get(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<(String, &'static str)> {
        env(self.ours)
            .map(|v| (v, self.ours))
            .or_else(|| self.sentinel.and_then(|name| env(name).map(|v| (v, name))))
    }
}

fn parse_number(value: &str, name: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::invalid(name, value, "a whole number"))
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses YAML text; an empty document gives the defaults.
    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str::<Option<Self>>(text).map(Option::unwrap_or_default)
    }

    /// Applies the process environment's overrides.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_env_from(&|name| std::env::var(name).ok())
    }

    /// Applies overrides from `env` (a lookup by variable name). `JA4SENSOR_*` wins over
    /// `JA4SENTINEL_*`; a value that does not parse is an error naming the variable.
    pub fn apply_env_from(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some((v, _)) = ENV_INTERFACE.get(env) {
            self.core.interface = v;
        }
        if let Some((v, name)) = ENV_PORTS.get(env) {
            let ports: Result<Vec<u16>, _> = v
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.trim().parse::<u16>())
                .collect();
            self.core.listen_ports = ports.map_err(|_| {
                ConfigError::invalid(name, &v, "comma-separated ports 1-65535, e.g. 443,8443")
            })?;
        }
        if let Some((v, _)) = ENV_BPF_FILTER.get(env) {
            self.core.bpf_filter = v;
        }
        if let Some((v, name)) = ENV_FLOW_TIMEOUT.get(env) {
            self.core.flow_timeout_sec = parse_number(&v, name)?;
        }
        if let Some((v, name)) = ENV_PACKET_BUFFER_SIZE.get(env) {
            self.core.packet_buffer_size = parse_number(&v, name)?;
        }
        if let Some((v, _)) = ENV_SENSOR_ID.get(env) {
            self.core.sensor_id = v;
        }
        if let Some((v, _)) = ENV_RING_PATH.get(env) {
            self.ring.path = PathBuf::from(v);
        }
        if let Some((v, _)) = ENV_RING_GROUP.get(env) {
            self.ring.group = v;
        }
        Ok(())
    }

    /// Checks every key; the error names the key and the allowed values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let core = &self.core;
        if core.interface.trim().is_empty() {
            return Err(ConfigError::invalid(
                "core.interface",
                "",
                "an interface name or `any`",
            ));
        }
        if core.bpf_filter.trim().is_empty() {
            if core.listen_ports.is_empty() {
                return Err(ConfigError::invalid(
                    "core.listen_ports",
                    "[]",
                    "at least one port (or a core.bpf_filter)",
                ));
            }
            if core.listen_ports.contains(&0) {
                return Err(ConfigError::invalid(
                    "core.listen_ports",
                    &format!("{:?}", core.listen_ports),
                    "ports 1 to 65535",
                ));
            }
        }
        self.local_ips()?;
        self.exclude_sources()?;
        if !FLOW_TIMEOUT_RANGE_SEC.contains(&core.flow_timeout_sec) {
            return Err(ConfigError::invalid(
                "core.flow_timeout_sec",
                &core.flow_timeout_sec.to_string(),
                &format!("{} seconds", range_text(&FLOW_TIMEOUT_RANGE_SEC)),
            ));
        }
        if !PACKET_BUFFER_RANGE.contains(&core.packet_buffer_size) {
            return Err(ConfigError::invalid(
                "core.packet_buffer_size",
                &core.packet_buffer_size.to_string(),
                &format!("{} packets", range_text(&PACKET_BUFFER_RANGE)),
            ));
        }
        if !LOG_LEVELS.contains(&core.log_level.to_ascii_lowercase().as_str()) {
            return Err(ConfigError::invalid(
                "core.log_level",
                &core.log_level,
                "one of error, warn, info, debug, trace",
            ));
        }
        if core.sensor_id.len() > MAX_SENSOR_ID_LEN {
            return Err(ConfigError::invalid(
                "core.sensor_id",
                &core.sensor_id,
                &format!("at most {MAX_SENSOR_ID_LEN} bytes"),
            ));
        }
        self.ring.mode_bits()?;
        self.ring.gid()?;
        if !RING_SLOT_COUNT_RANGE.contains(&self.ring.slot_count) {
            return Err(ConfigError::invalid(
                "ring.slot_count",
                &self.ring.slot_count.to_string(),
                &range_text(&RING_SLOT_COUNT_RANGE),
            ));
        }
        self.outputs()?;
        Ok(())
    }

    /// The enabled outputs, checked (disabled ones are checked too).
    pub fn outputs(&self) -> Result<Vec<OutputSpec>, ConfigError> {
        let mut specs = Vec::new();
        for (i, o) in self.outputs.iter().enumerate() {
            let spec = o.spec(i)?;
            if o.enabled {
                specs.push(spec);
            }
        }
        Ok(specs)
    }

    /// `core.local_ips`, parsed.
    pub fn local_ips(&self) -> Result<Vec<IpAddr>, ConfigError> {
        self.core
            .local_ips
            .iter()
            .map(|s| {
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| ConfigError::invalid("core.local_ips", s, "IP addresses"))
            })
            .collect()
    }

    /// `core.exclude_source_ips`, parsed: single addresses or CIDR networks.
    pub fn exclude_sources(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.core
            .exclude_source_ips
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::invalid(
                            "core.exclude_source_ips",
                            s,
                            "IP addresses or CIDR networks such as 10.0.0.0/8",
                        )
                    })
            })
            .collect()
    }

    /// libpcap's kernel buffer for `core.packet_buffer_size` packets: 2 KiB a packet (an
    /// MTU-size frame plus its header), at least 8 MiB, at most 1 GiB. The floor is about time,
    /// not packets: libpcap splits the buffer into 256 KiB blocks that the kernel hands over when
    /// full or `ja4sensor_pcap::device::BLOCK_TIMEOUT_MS` old, so a quiet block holds only a few
    /// packets; 32 blocks let the sensor be descheduled for tens of milliseconds (a busy 2-core
    /// host) without a kernel drop.
    pub fn pcap_buffer_bytes(&self) -> i32 {
        const FRAME_BYTES: u64 = 2048;
        const MIN: u64 = 8 * 1024 * 1024;
        const MAX: u64 = 1024 * 1024 * 1024;
        let bytes = self
            .core
            .packet_buffer_size
            .saturating_mul(FRAME_BYTES)
            .clamp(MIN, MAX);
        i32::try_from(bytes).unwrap_or(i32::MAX)
    }

    /// The BPF filter: `core.bpf_filter` if set, else [`HANDSHAKE_PACKETS`] to the listen ports and, when
    /// `local_ips` is not empty, to those addresses (sentinel's `dst host` clause). Loopback
    /// IPv4 is written `dst net 127.0.0.0/8`: every 127.x address reaches the host.
    pub fn bpf_filter(&self, local_ips: &[IpAddr]) -> String {
        if !self.core.bpf_filter.trim().is_empty() {
            return self.core.bpf_filter.clone();
        }
        let ports: Vec<String> = self
            .core
            .listen_ports
            .iter()
            .map(|p| format!("dst port {p}"))
            .collect();
        let mut filter = format!("tcp and ({})", ports.join(" or "));
        let mut hosts: Vec<String> = Vec::new();
        for ip in local_ips {
            let clause = match ip {
                IpAddr::V4(v4) if v4.is_loopback() => "dst net 127.0.0.0/8".to_owned(),
                other => format!("dst host {other}"),
            };
            if !hosts.contains(&clause) {
                hosts.push(clause);
            }
        }
        if !hosts.is_empty() {
            filter.push_str(&format!(" and ({})", hosts.join(" or ")));
        }
        filter.push_str(" and ");
        filter.push_str(HANDSHAKE_PACKETS);
        filter
    }
}

/// What the sensor needs of a connection, as a BPF clause: its SYN (the traits), its FIN or RST
/// (the close time), and the client payloads that may hold the ClientHello. Pure ACKs and
/// segments that begin with a TLS 1.2/1.3 application-data record header (`17 03 03`) — the bulk
/// of a busy server's client-to-server packets once the handshake is done — are dropped in the
/// kernel and never wake the sensor. A ClientHello split over segments continues with whatever
/// byte comes next, so a continuation segment is dropped only if it happens to begin with those
/// three bytes (1 in 16 million for random key-share bytes; a client crafting that split only
/// makes itself an orphan, which is visible). IPv6 packets are all kept: libpcap's `tcp[]` only
/// indexes IPv4 headers.
pub const HANDSHAKE_PACKETS: &str = "(ip6 \
    or tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0 \
    or (ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) > 0 \
        and not (tcp[((tcp[12] & 0xf0) >> 2):2] = 0x1703 and tcp[((tcp[12] & 0xf0) >> 2) + 2] = 0x03)))";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The example of seed 002, verbatim, plus a key from a later sentinel version.
    const SENTINEL_EXAMPLE: &str = r#"
core:
  interface: any
  listen_ports: [443, 8443]
  bpf_filter: ""
  local_ips: []
  exclude_source_ips: ["10.0.0.0/8", "192.168.1.1"]
  flow_timeout_sec: 30
  packet_buffer_size: 1000
  log_level: info
  some_future_key: 7
outputs:
  - type: unix_socket
    enabled: true
    params:
      socket_path: /var/run/logcorrelator/network.socket
  - type: file
    enabled: false
    params:
      path: /var/log/ja4sentinel/ja4.log
watchdog:
  enabled: true
"#;

    #[test]
    fn sentinel_config_loads_unchanged() {
        let cfg = Config::parse(SENTINEL_EXAMPLE).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.core.listen_ports, [443, 8443]);
        let excluded = cfg.exclude_sources().unwrap();
        assert!(excluded[0].contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(excluded[1].contains(&"192.168.1.1".parse::<IpAddr>().unwrap()));
        assert!(!excluded[1].contains(&"192.168.1.2".parse::<IpAddr>().unwrap()));
        assert_eq!(
            cfg.outputs().unwrap(),
            [OutputSpec::UnixSocket {
                socket_path: "/var/run/logcorrelator/network.socket".into(),
                queue: 1000
            }]
        );
        assert_eq!(cfg.ring, RingSection::default());
        assert_eq!(
            cfg.bpf_filter(&[]),
            format!("tcp and (dst port 443 or dst port 8443) and {HANDSHAKE_PACKETS}")
        );
    }

    #[test]
    fn local_ips_add_a_dst_host_clause() {
        let cfg = Config::parse("core:\n  local_ips: [\"192.0.2.10\", \"2001:db8::1\"]\n").unwrap();
        let ips = cfg.local_ips().unwrap();
        assert_eq!(
            cfg.bpf_filter(&ips),
            format!("tcp and (dst port 443) and (dst host 192.0.2.10 or dst host 2001:db8::1) and {HANDSHAKE_PACKETS}")
        );
        let lo = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(
            cfg.bpf_filter(&lo),
            format!("tcp and (dst port 443) and (dst net 127.0.0.0/8 or dst host ::1) and {HANDSHAKE_PACKETS}")
        );
    }

    #[test]
    fn empty_file_and_missing_sections_give_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let cfg = Config::parse("ring:\n  path: /tmp/x.ring\n").unwrap();
        assert_eq!(cfg.core, CoreConfig::default());
        assert_eq!(cfg.ring.path, Path::new("/tmp/x.ring"));
        assert_eq!(
            cfg.bpf_filter(&[]),
            format!("tcp and (dst port 443) and {HANDSHAKE_PACKETS}")
        );
        assert_eq!(cfg.pcap_buffer_bytes(), 8 * 1024 * 1024);
    }

    #[test]
    fn custom_bpf_filter_is_used_verbatim() {
        let cfg = Config::parse("core:\n  bpf_filter: \"tcp port 8443\"\n").unwrap();
        assert_eq!(
            cfg.bpf_filter(&["10.0.0.1".parse().unwrap()]),
            "tcp port 8443"
        );
    }

    #[test]
    fn out_of_range_values_name_the_key_and_the_range() {
        for (yaml, key, range) in [
            (
                "core:\n  flow_timeout_sec: 0\n",
                "core.flow_timeout_sec",
                "1 to 300",
            ),
            (
                "core:\n  flow_timeout_sec: 301\n",
                "core.flow_timeout_sec",
                "1 to 300",
            ),
            (
                "core:\n  packet_buffer_size: 0\n",
                "core.packet_buffer_size",
                "1 to 1000000",
            ),
            (
                "core:\n  listen_ports: []\n",
                "core.listen_ports",
                "at least one",
            ),
            ("core:\n  log_level: loud\n", "core.log_level", "debug"),
            ("core:\n  local_ips: [\"nope\"]\n", "core.local_ips", "IP"),
            (
                "core:\n  exclude_source_ips: [\"10.0.0.0/33\"]\n",
                "core.exclude_source_ips",
                "CIDR",
            ),
            ("ring:\n  slot_count: 3\n", "ring.slot_count", "1024 to"),
            ("ring:\n  mode: \"0666\"\n", "ring.mode", "octal"),
            (
                "outputs:\n  - type: kafka\n",
                "outputs[0].type",
                "unix_socket",
            ),
            (
                "outputs:\n  - type: file\n",
                "outputs[0].params.path",
                "path",
            ),
            (
                "outputs:\n  - type: stdout\n    async_buffer: 0\n",
                "outputs[0].async_buffer",
                "1 to",
            ),
        ] {
            let err = Config::parse(yaml).unwrap().validate().unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(key) && text.contains(range),
                "{yaml}: {text}"
            );
        }
        assert!(Config::parse("core:\n  listen_ports: [70000]\n").is_err());
    }

    #[test]
    fn environment_overrides_ours_winning_over_sentinels() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let mut cfg = Config::default();
        cfg.apply_env_from(&env(&[
            ("JA4SENTINEL_INTERFACE", "eth0"),
            ("JA4SENTINEL_PORTS", "443, 8443"),
            ("JA4SENTINEL_BPF_FILTER", "tcp port 1"),
            ("JA4SENTINEL_FLOW_TIMEOUT", "60"),
            ("JA4SENTINEL_PACKET_BUFFER_SIZE", "5000"),
            ("JA4SENSOR_INTERFACE", "lo"),
            ("JA4SENSOR_RING_PATH", "/tmp/r"),
        ]))
        .unwrap();
        assert_eq!(cfg.core.interface, "lo");
        assert_eq!(cfg.core.listen_ports, [443, 8443]);
        assert_eq!(cfg.core.bpf_filter, "tcp port 1");
        assert_eq!(cfg.core.flow_timeout_sec, 60);
        assert_eq!(cfg.core.packet_buffer_size, 5000);
        assert_eq!(cfg.ring.path, Path::new("/tmp/r"));
        let err = Config::default()
            .apply_env_from(&env(&[("JA4SENTINEL_FLOW_TIMEOUT", "soon")]))
            .unwrap_err();
        assert!(
            err.to_string().starts_with("JA4SENTINEL_FLOW_TIMEOUT"),
            "{err}"
        );
        let mut cfg = Config::default();
        cfg.apply_env_from(&env(&[("JA4SENTINEL_FLOW_TIMEOUT", "900")]))
            .unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("1 to 300"));
    }
}
