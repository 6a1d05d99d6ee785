//! The module's directives: what each accepts, how a value is checked, and how a virtual host
//! inherits from the main server. Pure: no httpd calls, so `apache2 -t` errors are unit-tested.
//!
//! | directive      | value                                   | default                         |
//! |----------------|-----------------------------------------|---------------------------------|
//! | `ReqinLogFile` | path (absolute or under ServerRoot), or `\|program` | unset: the module logs nothing |
//! | `ReqinLogRing` | absolute path of the sensor's ring      | [`DEFAULT_RING_PATH`]           |

use std::path::{Path, PathBuf};

use correlate_lib::ring::DEFAULT_RING_PATH;

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
        if path.is_dir() || arg.ends_with('/') {
            return Err(ConfigError::IsADirectory(path));
        }
        require_parent_dir(&path)?;
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

/// Parses a `ReqinLogRing` value: the sensor creates the ring at an absolute path, possibly after
/// httpd started, so only its directory has to exist now.
pub fn parse_ring_path(arg: &str) -> Result<PathBuf, ConfigError> {
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(ConfigError::Empty);
    }
    let path = PathBuf::from(arg);
    if !path.is_absolute() {
        return Err(ConfigError::NotAbsolute(path));
    }
    if path.is_dir() || arg.ends_with('/') {
        return Err(ConfigError::IsADirectory(path));
    }
    require_parent_dir(&path)?;
    Ok(path)
}

fn require_parent_dir(path: &Path) -> Result<(), ConfigError> {
    match path.parent() {
        Some(dir) if dir.is_dir() => Ok(()),
        Some(dir) => Err(ConfigError::MissingDir {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
        }),
        None => Err(ConfigError::IsADirectory(path.to_path_buf())),
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
    #[error("directory {dir:?} of {path:?} does not exist")]
    MissingDir { dir: PathBuf, path: PathBuf },
}

/// The directive values of one server (the main server or a virtual host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub log_target: Option<LogTarget>,
    pub ring_path: Option<PathBuf>,
}

impl Settings {
    /// A virtual host inherits every directive it does not set from the main server.
    pub fn merge(base: &Settings, add: &Settings) -> Settings {
        Settings {
            log_target: add.log_target.clone().or_else(|| base.log_target.clone()),
            ring_path: add.ring_path.clone().or_else(|| base.ring_path.clone()),
        }
    }

    pub fn ring_path(&self) -> &Path {
        self.ring_path
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_RING_PATH))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn under(root: &Path) -> impl FnOnce(&str) -> Option<PathBuf> + '_ {
        move |rel| Some(root.join(rel))
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
    fn relative_file_in_a_missing_dir_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let err = LogTarget::parse("nosuchdir/reqin.log", under(dir.path())).unwrap_err();
        assert!(matches!(err, ConfigError::MissingDir { .. }), "{err}");
        assert!(err.to_string().contains("nosuchdir"), "{err}");
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
    fn a_directory_is_not_a_log_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = LogTarget::parse(dir.path().to_str().unwrap(), |_| None).unwrap_err();
        assert!(matches!(err, ConfigError::IsADirectory(_)));
    }

    #[test]
    fn ring_path_must_be_absolute_in_an_existing_dir() {
        assert!(matches!(
            parse_ring_path("ja4.ring"),
            Err(ConfigError::NotAbsolute(_))
        ));
        assert!(matches!(
            parse_ring_path("/nonexistent-dir/ja4.ring"),
            Err(ConfigError::MissingDir { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let ring = dir.path().join("ja4.ring");
        assert_eq!(parse_ring_path(ring.to_str().unwrap()), Ok(ring));
    }

    #[test]
    fn virtual_host_inherits_what_it_does_not_set() {
        let base = Settings {
            log_target: Some(LogTarget::Pipe("cat".into())),
            ring_path: Some("/dev/shm/a.ring".into()),
        };
        let add = Settings {
            log_target: None,
            ring_path: Some("/dev/shm/b.ring".into()),
        };
        let merged = Settings::merge(&base, &add);
        assert_eq!(merged.log_target, base.log_target);
        assert_eq!(merged.ring_path(), Path::new("/dev/shm/b.ring"));
        assert_eq!(
            Settings::default().ring_path(),
            Path::new(DEFAULT_RING_PATH)
        );
    }
}
