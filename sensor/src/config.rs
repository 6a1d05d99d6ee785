//! The YAML configuration. A ja4sentinel `config.yml` loads unchanged: its keys keep their
//! meaning and keys we do not know are ignored, never an error.
//!
//! ```yaml
//! core:
//!   interface: any              # capture interface (`any` = all; cooked SLL/SLL2 frames)
//!   listen_ports: [443, 8443]   # server ports; the BPF filter selects packets *to* them
//!   bpf_filter: ""              # custom filter; empty = generated from listen_ports
//!   flow_timeout_sec: 30        # idle time before a flow waiting for its hello is dropped (1–300)
//!   packet_buffer_size: 1000    # sentinel's channel size; parsed, unused (no channel here)
//!   log_level: info             # error | warn | info | debug | trace (RUST_LOG wins if set)
//!   local_ips: []               # parsed; not applied yet
//!   exclude_source_ips: []      # parsed; not applied yet
//!   sensor_id: ""               # ours: copied into every record (`sensor_id`), ≤ 64 bytes
//! ring:                         # ours: the shared-memory ring read by mod_reqin_log
//!   path: /dev/shm/ja4sensor.ring
//!   slot_count: 65536           # records kept; the oldest is overwritten when full
//!   group: ""                   # group owning the ring file: the Apache group (www-data, apache)
//!   mode: "0640"                # file mode: owner writes, the group (httpd children) reads
//! outputs: []                   # sentinel's outputs; parsed, not written yet
//! ```
//!
//! `sensor_id` lives under `core` because it describes the sensor (sentinel prints it in every
//! LogRecord); everything about the ring is in `ring`. Command-line flags override the file.

use std::path::{Path, PathBuf};

use correlate_lib::record::MAX_SENSOR_ID_LEN;
use correlate_lib::ring::{DEFAULT_RING_PATH, DEFAULT_SLOT_COUNT};
use serde::Deserialize;

/// sentinel's accepted range for `core.flow_timeout_sec`.
pub const FLOW_TIMEOUT_RANGE_SEC: std::ops::RangeInclusive<u64> = 1..=300;
/// Ring sizes accepted: fewer than 1024 slots would lose records within a second on a busy
/// server; more than 16 Mi slots (16 GiB at 1 KiB a slot) is certainly a typo.
pub const RING_SLOT_COUNT_RANGE: std::ops::RangeInclusive<u32> = 1024..=16 * 1024 * 1024;
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

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
        let invalid = || ConfigError::Invalid {
            key: "ring.mode",
            value: self.mode.clone(),
            expected: "an octal mode such as 0640, without group/other write bits".into(),
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
            _ => Err(ConfigError::Invalid {
                key: "ring.group",
                value: group.to_owned(),
                expected:
                    "an existing group name or a numeric gid (the Apache group, e.g. www-data)"
                        .into(),
            }),
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
    #[error("{key} = {value}: {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        expected: String,
    },
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

    /// Checks the keys the sensor uses today.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, value: String, expected: &str| ConfigError::Invalid {
            key,
            value,
            expected: expected.to_owned(),
        };
        let core = &self.core;
        if core.interface.is_empty() {
            return Err(invalid(
                "core.interface",
                String::new(),
                "an interface name or `any`",
            ));
        }
        if core.bpf_filter.trim().is_empty() {
            if core.listen_ports.is_empty() {
                return Err(invalid(
                    "core.listen_ports",
                    "[]".into(),
                    "at least one port (or a core.bpf_filter)",
                ));
            }
            if core.listen_ports.contains(&0) {
                return Err(invalid(
                    "core.listen_ports",
                    format!("{:?}", core.listen_ports),
                    "ports 1-65535",
                ));
            }
        }
        if !FLOW_TIMEOUT_RANGE_SEC.contains(&core.flow_timeout_sec) {
            return Err(invalid(
                "core.flow_timeout_sec",
                core.flow_timeout_sec.to_string(),
                "1 to 300 seconds",
            ));
        }
        if !LOG_LEVELS.contains(&core.log_level.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                "core.log_level",
                core.log_level.clone(),
                "one of error, warn, info, debug, trace",
            ));
        }
        if core.sensor_id.len() > MAX_SENSOR_ID_LEN {
            return Err(invalid(
                "core.sensor_id",
                core.sensor_id.clone(),
                &format!("at most {MAX_SENSOR_ID_LEN} bytes"),
            ));
        }
        self.ring.mode_bits()?;
        self.ring.gid()?;
        if !RING_SLOT_COUNT_RANGE.contains(&self.ring.slot_count) {
            return Err(invalid(
                "ring.slot_count",
                self.ring.slot_count.to_string(),
                &format!(
                    "{} to {}",
                    RING_SLOT_COUNT_RANGE.start(),
                    RING_SLOT_COUNT_RANGE.end()
                ),
            ));
        }
        Ok(())
    }

    /// The BPF filter: `core.bpf_filter` if set, else client→server packets to the listen ports.
    pub fn bpf_filter(&self) -> String {
        if !self.core.bpf_filter.trim().is_empty() {
            return self.core.bpf_filter.clone();
        }
        let ports: Vec<String> = self
            .core
            .listen_ports
            .iter()
            .map(|p| format!("dst port {p}"))
            .collect();
        format!("tcp and ({})", ports.join(" or "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
        assert_eq!(cfg.core.exclude_source_ips.len(), 2);
        assert_eq!(cfg.outputs.len(), 2);
        assert_eq!(cfg.outputs[0].kind, "unix_socket");
        assert_eq!(cfg.ring, RingSection::default());
        assert_eq!(cfg.bpf_filter(), "tcp and (dst port 443 or dst port 8443)");
    }

    #[test]
    fn empty_file_and_missing_sections_give_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let cfg = Config::parse("ring:\n  path: /tmp/x.ring\n").unwrap();
        assert_eq!(cfg.core, CoreConfig::default());
        assert_eq!(cfg.ring.path, Path::new("/tmp/x.ring"));
        assert_eq!(cfg.bpf_filter(), "tcp and (dst port 443)");
    }

    #[test]
    fn custom_bpf_filter_is_used_verbatim() {
        let cfg = Config::parse("core:\n  bpf_filter: \"tcp port 8443\"\n").unwrap();
        assert_eq!(cfg.bpf_filter(), "tcp port 8443");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        for (yaml, key) in [
            ("core:\n  flow_timeout_sec: 0\n", "core.flow_timeout_sec"),
            ("core:\n  flow_timeout_sec: 301\n", "core.flow_timeout_sec"),
            ("core:\n  listen_ports: []\n", "core.listen_ports"),
            ("core:\n  log_level: loud\n", "core.log_level"),
            ("ring:\n  slot_count: 3\n", "ring.slot_count"),
        ] {
            let err = Config::parse(yaml).unwrap().validate().unwrap_err();
            assert!(err.to_string().starts_with(key), "{yaml}: {err}");
        }
        assert!(Config::parse("core:\n  listen_ports: [70000]\n").is_err());
    }
}
