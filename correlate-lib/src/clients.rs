//! The fingerprint→client mapping: which client family (`chromium`, `curl`,
//! `python-requests`...) a JA4 belongs to. Read by the detector's `fingerprint_mismatch` module
//! and by mod_reqin_log (`REQIN_CLIENT`, the `ja4_client` field).
//!
//! Two CSV formats, told apart by their header row:
//!
//! - **ours** (`sensor/detect/data/clients.csv`, built by `scripts/build_client_map.py` from
//!   real clients): header `ja4,client,os,notes` (`os` and `notes` optional, columns in any
//!   order, unknown columns ignored); `#` at the start of a line makes it a comment. `client` is
//!   a *label*: 1–32 bytes of `[a-z0-9._-]`, starting with a letter or digit, lowercase, naming
//!   a client family, not a version (`chromium` covers Chrome, Chromium, Edge, Brave...). One
//!   JA4 may have several rows (two clients on one TLS library): the first row's label is the
//!   primary, every label counts when a claim is checked.
//! - **FoxIO's `ja4plus-mapping.csv`** (FoxIO-LLC/ja4; under the FoxIO License, so not
//!   shipped; a user may point the detector at their copy): header
//!   `Application,Library,Device,OS,ja4,ja4s,ja4h,ja4x,ja4t,ja4tscan,Notes`. Rows with a `ja4`
//!   become entries; the label is `Application` (else `Library`) made a label (lowercase,
//!   other characters as `-`), with the few names that denote one of our families mapped to it
//!   (`Chromium Browser` → `chromium`, `GoLang` → `go`).
//!
//! RFC 4180 quoting (the `csv` crate). A bad row is an error naming the file and line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What `REQIN_CLIENT` and `ja4_client` say for a JA4 that is not in the mapping.
pub const UNKNOWN_CLIENT: &str = "unknown";
/// Where the packages install the project's mapping.
pub const DEFAULT_CLIENTS_PATH: &str = "/usr/share/ja4sensor/clients.csv";
/// Longest label.
pub const MAX_LABEL_BYTES: usize = 32;
/// Longest JA4 accepted as a key (a JA4 is 36 bytes).
pub const MAX_JA4_BYTES: usize = 64;
/// A mapping file is a few hundred KiB at most (FoxIO's is 3 KiB).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// FoxIO application/library names that are one of our families.
const FOXIO_ALIASES: [(&str, &str); 5] = [
    ("chromium-browser", "chromium"),
    ("chrome", "chromium"),
    ("google-chrome", "chromium"),
    ("golang", "go"),
    ("firefox-browser", "firefox"),
];

#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("client map {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("client map {path} is {len} bytes, more than {max}")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("client map {path}, line {line}: {reason}")]
    Row {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error(
        "client map {path}: header {found:?} is neither ours (ja4,client[,os,notes]) nor FoxIO's (Application,Library,Device,OS,ja4,...)"
    )]
    Header { path: PathBuf, found: String },
}

/// The file format, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapFormat {
    Ours,
    FoxIo,
}

/// What the mapping says about one JA4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Labels, primary first (no duplicates).
    pub clients: Vec<String>,
    /// The OS the file names for it (free text), if any.
    pub os: Option<String>,
    pub notes: Option<String>,
}

impl ClientInfo {
    /// The primary label.
    pub fn client(&self) -> &str {
        self.clients.first().map_or(UNKNOWN_CLIENT, String::as_str)
    }

    pub fn has(&self, label: &str) -> bool {
        self.clients.iter().any(|c| c == label)
    }
}

/// JA4 → client, from one or more mapping files.
#[derive(Debug, Clone, Default)]
pub struct ClientMap {
    map: HashMap<String, ClientInfo>,
}

/// Whether `s` is a label: 1–32 bytes of `[a-z0-9._-]`, starting with a letter or digit.
pub fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL_BYTES
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// A free-text client name made a label: lowercase, runs of other characters as one `-`,
/// cut to 32 bytes; FoxIO's names for our families mapped to them. `None` when nothing is left.
pub fn to_label(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_owned();
    if let Some((_, ours)) = FOXIO_ALIASES.iter().find(|(k, _)| *k == out) {
        out = (*ours).to_owned();
    }
    out.truncate(MAX_LABEL_BYTES);
    let out = out.trim_end_matches('-').to_owned();
    is_label(&out).then_some(out)
}

fn valid_ja4(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_JA4_BYTES && s.bytes().all(|c| c.is_ascii_graphic())
}

impl ClientMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a mapping file of either format.
    pub fn load(path: &Path) -> Result<Self, ClientsError> {
        let io = |source| ClientsError::Io {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE_BYTES {
            return Err(ClientsError::TooLarge {
                path: path.to_owned(),
                len,
                max: MAX_FILE_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::parse(&bytes, path)
    }

    /// Parses the text of a mapping file (`path` only names it in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, ClientsError> {
        let mut rdr = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(bytes);
        let row_err = |line: u64, reason: String| ClientsError::Row {
            path: path.to_owned(),
            line,
            reason,
        };
        let headers = rdr
            .headers()
            .map_err(|e| row_err(e.position().map_or(1, |p| p.line()), e.to_string()))?
            .clone();
        let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let format = match (
            col("ja4"),
            col("client"),
            col("application"),
            col("library"),
        ) {
            (Some(_), Some(_), _, _) => MapFormat::Ours,
            (Some(_), None, Some(_), Some(_)) => MapFormat::FoxIo,
            _ => {
                return Err(ClientsError::Header {
                    path: path.to_owned(),
                    found: headers.iter().collect::<Vec<_>>().join(","),
                })
            }
        };
        let (ja4_col, os_col, notes_col) = (col("ja4").unwrap_or(0), col("os"), col("notes"));
        let mut map = Self::new();
        for rec in rdr.records() {
            let rec =
                rec.map_err(|e| row_err(e.position().map_or(0, |p| p.line()), e.to_string()))?;
            let line = rec.position().map_or(0, |p| p.line());
            let field = |i: Option<usize>| i.and_then(|i| rec.get(i)).filter(|s| !s.is_empty());
            let Some(ja4) = field(Some(ja4_col)) else {
                if format == MapFormat::FoxIo {
                    // A JA4T/JA4X/... row: nothing for us.
                    continue;
                }
                return Err(row_err(line, "empty ja4".into()));
            };
            if !valid_ja4(ja4) {
                return Err(row_err(
                    line,
                    format!("ja4 {ja4:?} is not 1..={MAX_JA4_BYTES} printable ASCII bytes"),
                ));
            }
            let label = match format {
                MapFormat::Ours => {
                    let c = field(col("client")).unwrap_or_default();
                    if !is_label(c) {
                        return Err(row_err(
                            line,
                            format!("client {c:?} is not a label (1-{MAX_LABEL_BYTES} bytes of [a-z0-9._-], lowercase)"),
                        ));
                    }
                    c.to_owned()
                }
                MapFormat::FoxIo => {
                    match field(col("application"))
                        .or(field(col("library")))
                        .and_then(to_label)
                    {
                        Some(l) => l,
                        None => continue,
                    }
                }
            };
            map.add(ja4, &label, field(os_col), field(notes_col));
        }
        Ok(map)
    }

    /// Adds one row: a new label for a known JA4 is appended (the first stays primary).
    pub fn add(&mut self, ja4: &str, label: &str, os: Option<&str>, notes: Option<&str>) {
        let e = self.map.entry(ja4.to_owned()).or_default();
        if !e.has(label) {
            e.clients.push(label.to_owned());
        }
        if e.os.is_none() {
            e.os = os.map(str::to_owned);
        }
        if e.notes.is_none() {
            e.notes = notes.map(str::to_owned);
        }
    }

    /// Adds every entry of `other` (after this map's own).
    pub fn merge(&mut self, other: ClientMap) {
        for (ja4, info) in other.map {
            for c in &info.clients {
                self.add(&ja4, c, info.os.as_deref(), info.notes.as_deref());
            }
        }
    }

    pub fn lookup(&self, ja4: &str) -> Option<&ClientInfo> {
        self.map.get(ja4)
    }

    /// The primary label of `ja4`, or [`UNKNOWN_CLIENT`].
    pub fn client(&self, ja4: &str) -> &str {
        self.lookup(ja4).map_or(UNKNOWN_CLIENT, ClientInfo::client)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHROME: &str = "t13d1516h2_8daaf6152771_02713d6af862";

    #[test]
    fn our_format_with_comments_quotes_and_two_clients_for_one_ja4() {
        let text = b"# built by scripts/build_client_map.py\n\
            ja4,client,os,notes\n\
            t13d1516h2_8daaf6152771_02713d6af862,chromium,linux,\"Chromium 120, headless\"\n\
            # a comment between rows\n\
            t13d3112h1_e8f1e7e78f70_6bebaf5329ac,curl,,\n\
            t13d3112h1_e8f1e7e78f70_6bebaf5329ac,wget\n";
        let m = ClientMap::parse(text, Path::new("x.csv")).unwrap();
        assert_eq!(m.len(), 2);
        let c = m.lookup(CHROME).unwrap();
        assert_eq!(c.client(), "chromium");
        assert_eq!(c.os.as_deref(), Some("linux"));
        assert_eq!(c.notes.as_deref(), Some("Chromium 120, headless"));
        let o = m.lookup("t13d3112h1_e8f1e7e78f70_6bebaf5329ac").unwrap();
        assert_eq!(o.clients, ["curl", "wget"]);
        assert!(o.has("wget"));
        assert_eq!(
            m.client("t13d0000h1_000000000000_000000000000"),
            UNKNOWN_CLIENT
        );
    }

    #[test]
    fn foxio_format_is_recognised_and_its_names_become_labels() {
        // The header and rows as in FoxIO-LLC/ja4's ja4plus-mapping.csv (a few rows).
        let text = b"Application,Library,Device,OS,ja4,ja4s,ja4h,ja4x,ja4t,ja4tscan,Notes\n\
            ,Python,,,t13d181000_85036bcba153_d41ae481755e,,,,,,\n\
            Chromium Browser,,,,t13d1516h2_8daaf6152771_02713d6af862,,,,,,\n\
            ,,,Windows 10,,,,,64240_2-1-3-1-1-4_1460_8,,\n\
            ,GoLang,,,t13d190900_9dc949149365_97f8aa674fd9,,,,,,\n\
            Sliver Agent,,,,t13d190900_9dc949149365_97f8aa674fd9,t130200_1301_a56c5b993250,,,,,\n\
            Cobalt Strike v4.9.1 beacon,,,Windows 10,t12i190700_d83cc789557e_16bbda4055b2,t120300_c030_52d195ce1d92,,,,,Cobalt Strike v4.9.1 over wininet\n";
        let m = ClientMap::parse(text, Path::new("ja4plus-mapping.csv")).unwrap();
        assert_eq!(m.len(), 4, "the JA4T-only row is skipped");
        assert_eq!(m.client(CHROME), "chromium");
        assert_eq!(m.client("t13d181000_85036bcba153_d41ae481755e"), "python");
        let go = m.lookup("t13d190900_9dc949149365_97f8aa674fd9").unwrap();
        assert_eq!(go.clients, ["go", "sliver-agent"]);
        let cs = m.lookup("t12i190700_d83cc789557e_16bbda4055b2").unwrap();
        assert_eq!(cs.client(), "cobalt-strike-v4.9.1-beacon");
        assert_eq!(cs.os.as_deref(), Some("Windows 10"));
    }

    #[test]
    fn bad_rows_and_headers_name_the_file_and_line() {
        let e = ClientMap::parse(b"ja4,client\nt13x,Chromium\n", Path::new("m.csv")).unwrap_err();
        assert!(matches!(e, ClientsError::Row { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("m.csv, line 2"), "{e}");
        let e = ClientMap::parse(b"ja4,client\n,curl\n", Path::new("m.csv")).unwrap_err();
        assert!(matches!(e, ClientsError::Row { line: 2, .. }), "{e}");
        let e = ClientMap::parse(b"fingerprint,who\nx,y\n", Path::new("m.csv")).unwrap_err();
        assert!(matches!(e, ClientsError::Header { .. }), "{e}");
    }

    #[test]
    fn labels() {
        assert!(
            is_label("python-requests") && is_label("go") && !is_label("Go") && !is_label("-x")
        );
        assert_eq!(to_label("  Chromium Browser "), Some("chromium".into()));
        assert_eq!(to_label("IcedID "), Some("icedid".into()));
        assert_eq!(to_label("***"), None);
    }
}
