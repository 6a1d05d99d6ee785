//! Client families: what a User-Agent claims and what a JA4 fingerprint is, in one vocabulary so
//! the report can say "claims chromium, fingerprint is curl".
//!
//! The JA4 → client name comes from the line's `ja4_client` (the module's lookup in the mapping
//! file) or, for lines without it, from a `--clients FILE` CSV of `ja4,client` rows (a header
//! row and `#` comments are allowed; the detector's `correlate_lib::clients` mapping file will
//! replace this reader once it lands). Both names, and the User-Agent, are reduced to a family
//! by [`family_of_client`] / [`family_of_user_agent`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Rows a mapping file may have (FoxIO's ja4plus-mapping.csv has a few hundred).
pub const MAX_MAPPING_ROWS: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("--clients {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--clients {path}: line {line}: expected `ja4,client`, got {text:?}")]
    Row {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("--clients {path}: more than {MAX_MAPPING_ROWS} rows")]
    TooLarge { path: PathBuf },
}

/// JA4 → client name.
#[derive(Debug, Default, Clone)]
pub struct Mapping {
    by_ja4: HashMap<String, String>,
}

impl Mapping {
    pub fn load(path: &Path) -> Result<Self, ClientsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ClientsError> {
        let mut by_ja4 = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((ja4, client)) = line.split_once(',') else {
                return Err(ClientsError::Row {
                    path: path.to_owned(),
                    line: i + 1,
                    text: raw.into(),
                });
            };
            let (ja4, client) = (
                ja4.trim().trim_matches('"'),
                client.trim().trim_matches('"'),
            );
            if i == 0 && ja4.eq_ignore_ascii_case("ja4") {
                continue; // header
            }
            if ja4.is_empty() || client.is_empty() {
                return Err(ClientsError::Row {
                    path: path.to_owned(),
                    line: i + 1,
                    text: raw.into(),
                });
            }
            if by_ja4.len() >= MAX_MAPPING_ROWS {
                return Err(ClientsError::TooLarge {
                    path: path.to_owned(),
                });
            }
            by_ja4.insert(ja4.to_owned(), client.to_owned());
        }
        Ok(Self { by_ja4 })
    }

    pub fn get(&self, ja4: &str) -> Option<&str> {
        self.by_ja4.get(ja4).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_ja4.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ja4.is_empty()
    }
}

/// A client family ("chromium", "firefox", "safari", "curl", "python", "go", ...) from a client
/// name as a mapping file spells it (`chromium`, `Chromium Browser`, `Google Chrome`,
/// `Python requests`...); `None` for `unknown` and names we cannot place.
pub fn family_of_client(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    FAMILIES
        .iter()
        .find(|(_, words)| words.iter().any(|w| n.contains(w)))
        .map(|(f, _)| *f)
}

/// Words of client names, family by family (checked in order: "edge" before "chrom").
const FAMILIES: &[(&str, &[&str])] = &[
    ("curl", &["curl"]),
    ("wget", &["wget"]),
    ("python", &["python", "aiohttp", "httpx", "urllib"]),
    ("go", &["golang", "go-http", "go http", "go-client"]),
    ("java", &["java", "okhttp", "apache-httpclient"]),
    ("node", &["node", "axios", "undici"]),
    ("firefox", &["firefox", "gecko"]),
    (
        "chromium",
        &["chrom", "edge", "opera", "brave", "vivaldi", "samsung"],
    ),
    ("safari", &["safari", "webkit"]),
];

/// The family a User-Agent claims; `None` when it claims nothing we know.
pub fn family_of_user_agent(ua: &str) -> Option<&'static str> {
    // Order matters: a Chromium UA also says "Safari/537.36", Edge says "Chrome/"; tools first.
    const RULES: &[(&str, &str)] = &[
        ("curl/", "curl"),
        ("Wget/", "wget"),
        ("python-requests/", "python"),
        ("Python-urllib/", "python"),
        ("aiohttp/", "python"),
        ("python-httpx/", "python"),
        ("Go-http-client/", "go"),
        ("okhttp/", "java"),
        ("Java/", "java"),
        ("Apache-HttpClient/", "java"),
        ("node-fetch", "node"),
        ("axios/", "node"),
        ("Firefox/", "firefox"),
        ("Edg/", "chromium"),
        ("OPR/", "chromium"),
        ("Chrome/", "chromium"),
        ("Chromium/", "chromium"),
        ("CriOS/", "chromium"),
        ("Safari/", "safari"),
    ];
    RULES
        .iter()
        .find(|(needle, _)| ua.contains(needle))
        .map(|(_, f)| *f)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_and_client_names_meet_in_one_family() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(family_of_user_agent(chrome), Some("chromium"));
        assert_eq!(family_of_user_agent("curl/8.5.0"), Some("curl"));
        assert_eq!(
            family_of_user_agent("Mozilla/5.0 (X11; rv:133.0) Gecko/20100101 Firefox/133.0"),
            Some("firefox")
        );
        assert_eq!(family_of_user_agent("Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15"), Some("safari"));
        assert_eq!(family_of_user_agent("zgrab/0.x"), None);
        assert_eq!(family_of_client("Chromium Browser"), Some("chromium"));
        assert_eq!(family_of_client("python-requests"), Some("python"));
        assert_eq!(family_of_client("unknown"), None);
    }

    #[test]
    fn a_mapping_file_has_a_header_comments_and_rows() {
        let m = Mapping::parse(
            "ja4,client\n# ours\nt13d1516h2_8daaf6152771_02713d6af862,chromium\n\"t13d\", \"curl\"\n",
            Path::new("m.csv"),
        )
        .unwrap();
        assert_eq!(m.get("t13d"), Some("curl"));
        assert_eq!(m.len(), 2);
        let e = Mapping::parse("ja4,client\nbroken\n", Path::new("m.csv")).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
