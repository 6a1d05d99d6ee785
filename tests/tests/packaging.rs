//! The packages (issue 7): what an administrator relies on when installing this product as
//! ordinarily as mod_ssl. `make rpm deb` runs once for the whole file (a `OnceLock`), then:
//!
//! - the RPMs hold exactly the expected files, with their owners, modes and config flags, and
//!   require `httpd`, `libpcap`, `systemd` and only libraries el8 has;
//! - every packaged ELF needs at most glibc 2.28 (el8), the capture (`ja4sensor-pcap`)
//!   `libpcap.so.1` (RHEL's SONAME, not Debian's `libpcap.so.0.8`) and `ja4sensor` no libpcap;
//!   the el8 module loads into this Debian's apache2 and the el8 sensor runs against a real
//!   libpcap;
//! - the units pass `systemd-analyze verify` and score well in `systemd-analyze security`;
//! - the .debs install with `dpkg -i`, the module is enabled with `a2enmod` and loaded by the
//!   system apache2 (`apache2ctl -t`, `-M`), and `dpkg --purge` leaves nothing behind;
//! - `apxs/install.sh` (`make install`) honours DESTDIR and the Debian or RHEL layout.
//!
//! Needs root (dpkg). The system apache2 is never started.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use e2e_tests::{free_port, workspace_root, Result};

/// el8's glibc: the oldest the RPM binaries run on.
const GLIBC_BASELINE: [u32; 2] = [2, 28];
/// The most `systemd-analyze security` may score a unit (0 = locked down, 10 = exposed; the
/// seeds' units score 9.6 (ja4sentinel) and 8.7 (logcorrelator)).
const MAX_EXPOSURE: f64 = 2.0;
const DEB_MODULE: &str = "libapache2-mod-reqin-log";
const DEB_SENSOR: &str = "ja4sensor";
/// Libraries a packaged ELF may need: el8's glibc and libgcc, and RHEL's libpcap SONAME.
const ALLOWED_NEEDED: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "libpcap.so.1",
];
/// rpmlib() features el8's rpm 4.14 knows (zstd payloads would be fine there too, but not xz-less
/// features of newer rpm such as rpmlib(LargeFiles) on every file).
const EL8_RPMLIB: &[&str] = &[
    "rpmlib(CompressedFileNames)",
    "rpmlib(FileDigests)",
    "rpmlib(PayloadFilesHavePrefix)",
    "rpmlib(PayloadIsXz)",
    "rpmlib(PayloadIsZstd)",
    "rpmlib(FileCaps)",
    "rpmlib(ScriptletExpansion)",
];

/// `make rpm deb`'s outputs.
struct Packages {
    rpm_module: PathBuf,
    rpm_sensor: PathBuf,
    deb_module: PathBuf,
    deb_sensor: PathBuf,
}

fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<std::result::Result<Packages, String>> = OnceLock::new();
    match PACKAGES.get_or_init(|| build_packages().map_err(|e| e.to_string())) {
        Ok(p) => p,
        Err(e) => panic!("make rpm deb failed: {e}"),
    }
}

fn build_packages() -> Result<Packages> {
    let started = Instant::now();
    run(Command::new("make")
        .arg("-C")
        .arg(workspace_root())
        .args(["rpm", "deb"]))?;
    eprintln!("make rpm deb: {:.0?}", started.elapsed());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let one = |dir: PathBuf, prefix: &str, ext: &str| -> Result<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(ext))
            })
            .collect();
        match (found.pop(), found.is_empty()) {
            (Some(p), true) => Ok(p),
            _ => Err(format!("expected one {prefix}*{ext} in {}", dir.display()).into()),
        }
    };
    let rpms = target.join("rpm/RPMS/x86_64");
    let debs = target.join("debian");
    Ok(Packages {
        rpm_module: one(rpms.clone(), "mod_reqin_log-", ".x86_64.rpm")?,
        rpm_sensor: one(rpms, "ja4sensor-", ".x86_64.rpm")?,
        deb_module: one(debs.clone(), &format!("{DEB_MODULE}_"), "_amd64.deb")?,
        deb_sensor: one(debs, &format!("{DEB_SENSOR}_"), "_amd64.deb")?,
    })
}

/// dpkg, a2enmod and /etc/apache2 are one system-wide state: one test at a time touches them.
static SYSTEM_PACKAGES: Mutex<()> = Mutex::new(());

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

fn stdout(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8(run(cmd)?.stdout)?)
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Unpacks an RPM's payload into `dir` (rpm2archive: no cpio needed).
fn extract_rpm(rpm: &Path, dir: &Path) -> Result<()> {
    let archive = dir.join("payload.tgz");
    let out = run(Command::new("rpm2archive")
        .arg("-")
        .stdin(fs::File::open(rpm)?))?;
    fs::write(&archive, out.stdout)?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(dir))?;
    fs::remove_file(archive)?;
    Ok(())
}

fn rpm_name(rpm: &Path) -> Result<String> {
    stdout(
        Command::new("rpm")
            .args(["-qp", "--qf", "%{NAME}"])
            .arg(rpm),
    )
}

fn version_numbers(v: &str) -> Vec<u32> {
    v.split('.').filter_map(|n| n.parse().ok()).collect()
}

fn within_baseline(glibc: &str) -> bool {
    version_numbers(glibc) <= GLIBC_BASELINE.to_vec()
}

/// The `GLIBC_x.y` versions an ELF file needs (its `.gnu.version_r` section) and its NEEDED
/// libraries.
fn elf_needs(path: &Path) -> Result<(Vec<String>, BTreeSet<String>)> {
    let versions = stdout(Command::new("readelf").arg("-V").arg("--wide").arg(path))?;
    let needs_section = versions
        .split_once("Version needs section")
        .map(|(_, rest)| rest)
        .unwrap_or("");
    let glibc: Vec<String> = needs_section
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    let dynamic = stdout(Command::new("readelf").arg("-d").arg("--wide").arg(path))?;
    let needed = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split_once('[').and_then(|(_, r)| r.split_once(']')))
        .map(|(lib, _)| lib.to_owned())
        .collect();
    Ok((glibc, needed))
}

fn highest(versions: &[String]) -> Option<&String> {
    versions.iter().max_by_key(|v| version_numbers(v.as_str()))
}

#[test]
fn rpms_hold_exactly_the_expected_files_owners_and_config_flags() -> Result<()> {
    let p = packages();
    let query = |rpm: &Path| -> Result<BTreeSet<String>> {
        Ok(lines(&stdout(
            Command::new("rpm").args(["-qp", "--qf"]).arg(
                "[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} flags=%{FILEFLAGS:fflags}\\n]",
            ).arg(rpm),
        )?))
    };
    let module = query(&p.rpm_module)?;
    assert_eq!(
        module,
        set(&[
            "/etc/httpd/conf.d/reqin_log.conf -rw-r--r-- root:root flags=cn",
            "/etc/httpd/conf.modules.d/10-reqin_log.conf -rw-r--r-- root:root flags=cn",
            "/usr/lib64/httpd/modules/mod_reqin_log.so -rwxr-xr-x root:root flags=",
            "/usr/share/doc/mod_reqin_log drwxr-xr-x root:root flags=",
            "/usr/share/doc/mod_reqin_log/README.md -rw-r--r-- root:root flags=d",
        ]),
        "{}",
        p.rpm_module.display()
    );
    let sensor = query(&p.rpm_sensor)?;
    assert_eq!(
        sensor,
        set(&[
            "/etc/ja4sensor drwxr-x--- root:ja4sensor flags=",
            "/etc/ja4sensor/config.yml -rw-r----- root:ja4sensor flags=cn",
            "/etc/logrotate.d/ja4sensor -rw-r--r-- root:root flags=cn",
            "/usr/bin/ja4sensor -rwxr-xr-x root:root flags=",
            "/usr/bin/ja4sensor-pcap -rwxr-xr-x root:root flags=",
            "/usr/lib/systemd/system/ja4sensor-detect.service -rw-r--r-- root:root flags=",
            "/usr/lib/systemd/system/ja4sensor-ship.service -rw-r--r-- root:root flags=",
            "/usr/lib/systemd/system/ja4sensor.service -rw-r--r-- root:root flags=",
            "/usr/lib/sysusers.d/ja4sensor.conf -rw-r--r-- root:root flags=",
            "/usr/share/doc/ja4sensor drwxr-xr-x root:root flags=",
            "/usr/share/doc/ja4sensor/README.md -rw-r--r-- root:root flags=d",
            "/usr/share/ja4sensor drwxr-xr-x root:root flags=",
            "/usr/share/ja4sensor/clients.csv -rw-r--r-- root:root flags=",
            "/usr/share/ja4sensor/config.yml -rw-r--r-- root:root flags=",
            "/var/lib/ja4sensor drwxr-x--- ja4sensor:ja4sensor flags=",
            "/var/log/ja4sensor drwxr-x--- ja4sensor:ja4sensor flags=",
        ]),
        "{}",
        p.rpm_sensor.display()
    );
    // `rpm -qlp`, what an administrator types, says the same.
    for (rpm, attrs) in [(&p.rpm_module, &module), (&p.rpm_sensor, &sensor)] {
        let names: BTreeSet<String> = attrs
            .iter()
            .filter_map(|l| l.split(' ').next().map(str::to_owned))
            .collect();
        assert_eq!(
            lines(&stdout(Command::new("rpm").arg("-qlp").arg(rpm))?),
            names
        );
    }
    Ok(())
}

#[test]
fn rpms_require_httpd_libpcap_systemd_and_only_libraries_el8_has() -> Result<()> {
    let p = packages();
    for (rpm, explicit) in [
        (&p.rpm_module, set(&["httpd", "httpd-mmn = 20120211x8664"])),
        (
            &p.rpm_sensor,
            // /bin/sh: the scriptlets; shadow-utils: %pre's useradd; httpd-filesystem: creates
            // the `apache` group the unit's SupplementaryGroups= names.
            set(&[
                "/bin/sh",
                "httpd-filesystem",
                "libpcap",
                "shadow-utils",
                "systemd",
            ]),
        ),
    ] {
        let requires = lines(&stdout(
            Command::new("rpm").args(["-qp", "--requires"]).arg(rpm),
        )?);
        let mut named = BTreeSet::new();
        for r in &requires {
            if r.starts_with("rpmlib(") {
                let feature = r.split(' ').next().unwrap_or(r);
                assert!(EL8_RPMLIB.contains(&feature), "{}: {r}", rpm.display());
            } else if r == "rtld(GNU_HASH)" {
                // Every el8 glibc provides it.
            } else if r.starts_with("config(") {
                // rpm ties %config files to the package's own version-release.
                let name = rpm_name(rpm)?;
                assert!(r.starts_with(&format!("config({name}) = ")), "{r}");
            } else if r.contains(".so.") {
                // Automatic requires from the ELF files: a library el8 has, at a version it has.
                let soname = r.split('(').next().unwrap_or(r);
                assert!(ALLOWED_NEEDED.contains(&soname), "{}: {r}", rpm.display());
                if let Some(v) = r.split("(GLIBC_").nth(1) {
                    let v = v.trim_end_matches(")(64bit)");
                    assert!(within_baseline(v), "{}: {r}", rpm.display());
                }
            } else {
                named.insert(r.clone());
            }
        }
        assert_eq!(named, explicit, "{}: {requires:?}", rpm.display());
    }
    let sensor_requires = stdout(
        Command::new("rpm")
            .args(["-qp", "--requires"])
            .arg(&p.rpm_sensor),
    )?;
    assert!(
        sensor_requires.contains("libpcap.so.1()(64bit)"),
        "the sensor must need RHEL's libpcap SONAME: {sensor_requires}"
    );
    Ok(())
}

#[test]
fn packaged_binaries_need_at_most_glibc_2_28_and_each_platforms_libpcap_name() -> Result<()> {
    let p = packages();
    let rpm_root = tempfile::tempdir()?;
    for rpm in [&p.rpm_module, &p.rpm_sensor] {
        extract_rpm(rpm, rpm_root.path())?;
    }
    let deb_root = tempfile::tempdir()?;
    for deb in [&p.deb_module, &p.deb_sensor] {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(deb_root.path()))?;
    }
    // The same build in both formats; only the capture's libpcap SONAME differs (RHEL: .so.1,
    // Debian: .so.0.8, the same ABI). `ja4sensor` itself needs no libpcap at all.
    for (root, elf, pcap) in [
        (
            rpm_root.path(),
            "usr/lib64/httpd/modules/mod_reqin_log.so",
            None,
        ),
        (rpm_root.path(), "usr/bin/ja4sensor", None),
        (
            rpm_root.path(),
            "usr/bin/ja4sensor-pcap",
            Some("libpcap.so.1"),
        ),
        (
            deb_root.path(),
            "usr/lib/apache2/modules/mod_reqin_log.so",
            None,
        ),
        (deb_root.path(), "usr/bin/ja4sensor", None),
        (
            deb_root.path(),
            "usr/bin/ja4sensor-pcap",
            Some("libpcap.so.0.8"),
        ),
    ] {
        let (glibc, needed) = elf_needs(&root.join(elf))?;
        let top = highest(&glibc).ok_or(format!("{elf}: no GLIBC_ version needed?"))?;
        eprintln!("{elf}: highest GLIBC_{top}, needs {needed:?}");
        assert!(within_baseline(top), "{elf} needs GLIBC_{top} > 2.28");
        for lib in needed.iter().filter(|l| !l.starts_with("libpcap")) {
            assert!(ALLOWED_NEEDED.contains(&lib.as_str()), "{elf} needs {lib}");
        }
        let pcap_needed: Vec<&String> =
            needed.iter().filter(|l| l.starts_with("libpcap")).collect();
        assert_eq!(pcap_needed, pcap.iter().collect::<Vec<_>>(), "{elf}");
    }
    Ok(())
}

#[test]
fn el8_module_and_its_rhel_config_load_into_apache2() -> Result<()> {
    let p = packages();
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let root = dir.path();
    extract_rpm(&p.rpm_module, root)?;
    fs::create_dir_all(root.join("logs"))?;
    let modules = "/usr/lib/apache2/modules";
    let conf = format!(
        "ServerRoot {root}\nServerName localhost\nPidFile {root}/httpd.pid\nMutex file:{root}\n\
         LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
         LoadModule authz_core_module {modules}/mod_authz_core.so\n\
         LoadModule reqin_log_module {root}/usr/lib64/httpd/modules/mod_reqin_log.so\n\
         Listen 127.0.0.1:{port}\nErrorLog {root}/error.log\n\
         Include {root}/etc/httpd/conf.d/reqin_log.conf\n",
        root = root.display(),
        port = free_port()?,
    );
    let conf_path = root.join("httpd.conf");
    fs::write(&conf_path, conf)?;
    run(Command::new("apache2").arg("-t").arg("-f").arg(&conf_path))?;
    let modules = stdout(Command::new("apache2").arg("-M").arg("-f").arg(&conf_path))?;
    assert!(modules.contains("reqin_log_module (shared)"), "{modules}");
    Ok(())
}

#[test]
fn el8_sensor_runs_against_a_real_libpcap_so_1() -> Result<()> {
    let p = packages();
    let dir = tempfile::tempdir()?;
    extract_rpm(&p.rpm_sensor, dir.path())?;
    // Debian names the same library libpcap.so.0.8; give the el8 binary RHEL's name for it.
    let libdir = dir.path().join("libpcap");
    fs::create_dir(&libdir)?;
    std::os::unix::fs::symlink(
        fs::canonicalize("/usr/lib/x86_64-linux-gnu/libpcap.so.0.8")?,
        libdir.join("libpcap.so.1"),
    )?;
    let sensor = dir.path().join("usr/bin/ja4sensor");
    let version = stdout(
        Command::new(&sensor)
            .arg("--version")
            .env("LD_LIBRARY_PATH", &libdir),
    )?;
    assert!(version.starts_with("ja4sensor "), "{version}");
    // The packaged config, as the unit runs it (the `apache` group is www-data here); the check
    // compiles the BPF filter with libpcap.
    let config = dir.path().join("etc/ja4sensor/config.yml");
    let check = stdout(
        Command::new(&sensor)
            .args(["run", "--check-config", "--config"])
            .arg(&config)
            .env("LD_LIBRARY_PATH", &libdir)
            .env("JA4SENSOR_RING_GROUP", "www-data"),
    )?;
    assert!(check.contains("configuration OK"), "{check}");
    // The shipper's section of the same file, with RHEL's log path.
    run(Command::new(&sensor)
        .args(["ship", "--check-config", "--config"])
        .arg(&config)
        .env("LD_LIBRARY_PATH", &libdir))?;
    let text = fs::read_to_string(&config)?;
    assert!(text.contains("group: apache"), "{text}");
    assert!(text.contains("path: /var/log/httpd/reqin.log*"), "{text}");
    Ok(())
}

/// A root with the host's systemd units, the extracted package and its ExecStart binaries, for
/// `systemd-analyze verify --root`.
fn unit_root(rpm: &Path) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let units = dir.path().join("usr/lib/systemd/system");
    fs::create_dir_all(&units)?;
    run(Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system/.")
        .arg(&units))?;
    fs::create_dir_all(dir.path().join("bin"))?;
    fs::copy("/bin/kill", dir.path().join("bin/kill"))?;
    extract_rpm(rpm, dir.path())?;
    Ok(dir)
}

fn verify_units(root: Option<&Path>, units: &[PathBuf]) -> Result<()> {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    if let Some(root) = root {
        cmd.arg(format!("--root={}", root.display()));
    }
    let out = run(cmd.args(units))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt directives are only warnings to systemd: make them failures here.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    Ok(())
}

fn exposure(unit: &Path) -> Result<f64> {
    let out = stdout(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit),
    )?;
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .ok_or(format!("no exposure level: {out}"))?;
    let score = line
        .split(": ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or(format!("unparsable: {line}"))?;
    Ok(score)
}

#[test]
fn rpm_units_verify_and_expose_little() -> Result<()> {
    let p = packages();
    let root = unit_root(&p.rpm_sensor)?;
    let units: Vec<PathBuf> = [
        "ja4sensor.service",
        "ja4sensor-ship.service",
        "ja4sensor-detect.service",
    ]
    .iter()
    .map(|u| Path::new("/usr/lib/systemd/system").join(u))
    .collect();
    verify_units(Some(root.path()), &units)?;
    let unit_dir = root.path().join("usr/lib/systemd/system");
    let sensor = fs::read_to_string(unit_dir.join("ja4sensor.service"))?;
    for line in [
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "ExecStart=/usr/bin/ja4sensor run --config /etc/ja4sensor/config.yml",
        "User=ja4sensor",
        "SupplementaryGroups=apache",
        "AmbientCapabilities=CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_RAW",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/dev/shm",
        "LogsDirectory=ja4sensor",
    ] {
        assert!(
            sensor.lines().any(|l| l == line),
            "ja4sensor.service lacks {line}"
        );
    }
    let ship = fs::read_to_string(unit_dir.join("ja4sensor-ship.service"))?;
    for line in [
        "ExecStart=/usr/bin/ja4sensor ship --config /etc/ja4sensor/config.yml",
        "BindReadOnlyPaths=/var/log/httpd",
        "StateDirectory=ja4sensor",
        "CapabilityBoundingSet=CAP_DAC_READ_SEARCH",
    ] {
        assert!(
            ship.lines().any(|l| l == line),
            "ja4sensor-ship.service lacks {line}"
        );
    }
    let detect = fs::read_to_string(unit_dir.join("ja4sensor-detect.service"))?;
    for line in [
        "ExecStart=/usr/bin/ja4sensor detect --config /etc/ja4sensor/config.yml",
        "BindReadOnlyPaths=/var/log/httpd",
        "SupplementaryGroups=apache",
        "ReadWritePaths=/dev/shm",
        "CapabilityBoundingSet=CAP_DAC_READ_SEARCH",
    ] {
        assert!(
            detect.lines().any(|l| l == line),
            "ja4sensor-detect.service lacks {line}"
        );
    }
    for unit in [
        "ja4sensor.service",
        "ja4sensor-ship.service",
        "ja4sensor-detect.service",
    ] {
        let score = exposure(&unit_dir.join(unit))?;
        eprintln!("systemd-analyze security {unit}: {score}");
        assert!(score <= MAX_EXPOSURE, "{unit}: exposure {score}");
    }
    Ok(())
}

/// `dpkg-query`'s status of a package, empty when unknown.
fn deb_status(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Leaves the system without `package`, whatever a previous (interrupted) run left.
fn purge_leftover(package: &str) -> Result<()> {
    if !deb_status(package).is_empty() {
        if package == DEB_MODULE {
            let _ = Command::new("a2dismod")
                .args(["-q", "-f", "reqin_log"])
                .output();
        }
        run(Command::new("dpkg").args(["--purge", package]))?;
    }
    Ok(())
}

/// The paths a .deb installs (directories that other packages own excluded).
fn deb_files(deb: &Path) -> Result<Vec<PathBuf>> {
    let contents = stdout(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    Ok(contents
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| PathBuf::from(p.trim_start_matches('.')))
        .collect())
}

#[test]
fn deb_module_installs_enables_loads_and_purges_cleanly() -> Result<()> {
    let p = packages();
    let _system = SYSTEM_PACKAGES.lock().unwrap_or_else(|e| e.into_inner());
    purge_leftover(DEB_MODULE)?;
    let files = deb_files(&p.deb_module)?;
    assert!(files.contains(&PathBuf::from("/usr/lib/apache2/modules/mod_reqin_log.so")));
    run(Command::new("dpkg").arg("-i").arg(&p.deb_module))?;
    let result = (|| -> Result<()> {
        // Installed, not enabled: loading it is the administrator's call.
        assert!(!Path::new("/etc/apache2/mods-enabled/reqin_log.load").exists());
        run(Command::new("a2enmod").args(["-q", "reqin_log"]))?;
        run(Command::new("apache2ctl").arg("-t"))?;
        let modules = stdout(Command::new("apache2ctl").arg("-M"))?;
        assert!(modules.contains("reqin_log_module (shared)"), "{modules}");
        run(Command::new("a2dismod").args(["-q", "reqin_log"]))?;
        Ok(())
    })();
    run(Command::new("dpkg").args(["-r", DEB_MODULE]))?;
    // Removed: the module is gone, its conffiles stay until purge; apache2 still configures.
    assert!(!Path::new("/usr/lib/apache2/modules/mod_reqin_log.so").exists());
    assert!(Path::new("/etc/apache2/mods-available/reqin_log.conf").exists());
    run(Command::new("apache2ctl").arg("-t"))?;
    run(Command::new("dpkg").args(["--purge", DEB_MODULE]))?;
    result?;
    for f in &files {
        assert!(!f.exists(), "{} left after purge", f.display());
    }
    assert!(deb_status(DEB_MODULE).is_empty() || deb_status(DEB_MODULE).contains("not-installed"));
    for leftover in [
        "/etc/apache2/mods-enabled/reqin_log.load",
        "/etc/apache2/mods-enabled/reqin_log.conf",
        "/usr/share/doc/libapache2-mod-reqin-log",
    ] {
        assert!(!Path::new(leftover).exists(), "{leftover} left after purge");
    }
    Ok(())
}

#[test]
fn deb_module_removal_disables_a_module_left_enabled() -> Result<()> {
    let p = packages();
    let _system = SYSTEM_PACKAGES.lock().unwrap_or_else(|e| e.into_inner());
    purge_leftover(DEB_MODULE)?;
    run(Command::new("dpkg").arg("-i").arg(&p.deb_module))?;
    let enabled = run(Command::new("a2enmod").args(["-q", "reqin_log"]));
    // The administrator forgets a2dismod: prerm disables it, so apache2's config still loads.
    run(Command::new("dpkg").args(["-r", DEB_MODULE]))?;
    enabled?;
    assert!(!Path::new("/etc/apache2/mods-enabled/reqin_log.load").exists());
    run(Command::new("apache2ctl").arg("-t"))?;
    run(Command::new("dpkg").args(["--purge", DEB_MODULE]))?;
    Ok(())
}

#[test]
fn deb_sensor_installs_with_its_user_units_and_purges_cleanly() -> Result<()> {
    let p = packages();
    let _system = SYSTEM_PACKAGES.lock().unwrap_or_else(|e| e.into_inner());
    purge_leftover(DEB_SENSOR)?;
    let files = deb_files(&p.deb_sensor)?;
    run(Command::new("dpkg").arg("-i").arg(&p.deb_sensor))?;
    let result = (|| -> Result<()> {
        run(Command::new("getent").args(["passwd", "ja4sensor"]))?;
        let config = fs::metadata("/etc/ja4sensor/config.yml")?;
        assert_eq!(config.mode() & 0o777, 0o640);
        let group =
            stdout(Command::new("stat").args(["-c", "%U:%G", "/etc/ja4sensor/config.yml"]))?;
        assert_eq!(group.trim(), "root:ja4sensor");
        for dir in ["/var/lib/ja4sensor", "/var/log/ja4sensor"] {
            let owner = stdout(Command::new("stat").args(["-c", "%U:%G %a", dir]))?;
            assert_eq!(owner.trim(), "ja4sensor:ja4sensor 750", "{dir}");
        }
        let check = stdout(Command::new("/usr/bin/ja4sensor").args([
            "run",
            "--check-config",
            "--config",
            "/etc/ja4sensor/config.yml",
        ]))?;
        assert!(check.contains("configuration OK"), "{check}");
        run(Command::new("/usr/bin/ja4sensor").args([
            "ship",
            "--check-config",
            "--config",
            "/etc/ja4sensor/config.yml",
        ]))?;
        run(Command::new("/usr/bin/ja4sensor").args([
            "detect",
            "--check-config",
            "--config",
            "/etc/ja4sensor/config.yml",
        ]))?;
        let text = fs::read_to_string("/etc/ja4sensor/config.yml")?;
        assert!(text.contains("group: www-data"), "{text}");
        assert!(text.contains("path: /var/log/apache2/reqin.log*"), "{text}");
        let units: Vec<PathBuf> = [
            "ja4sensor.service",
            "ja4sensor-ship.service",
            "ja4sensor-detect.service",
        ]
        .iter()
        .map(|u| Path::new("/lib/systemd/system").join(u))
        .collect();
        verify_units(None, &units)?;
        let sensor_unit = fs::read_to_string(&units[0])?;
        assert!(sensor_unit.contains("\nSupplementaryGroups=www-data\n"));
        let ship_unit = fs::read_to_string(&units[1])?;
        assert!(ship_unit.contains("\nBindReadOnlyPaths=/var/log/apache2\n"));
        for unit in &units {
            let score = exposure(unit)?;
            eprintln!(
                "systemd-analyze security {} (Debian): {score}",
                unit.display()
            );
            assert!(score <= MAX_EXPOSURE, "{}: {score}", unit.display());
        }
        // The logrotate file is accepted (its `su ja4sensor` user exists now) and reloads the
        // sensor, which reopens its file outputs on SIGHUP.
        let debug = Command::new("logrotate")
            .args(["-d", "/etc/logrotate.d/ja4sensor"])
            .output()
            .map_err(|e| format!("logrotate (apt package logrotate): {e}"))?;
        let text = String::from_utf8_lossy(&debug.stderr).into_owned()
            + &String::from_utf8_lossy(&debug.stdout);
        assert!(debug.status.success() && !text.contains("error"), "{text}");
        assert!(text.contains("/var/log/ja4sensor/*.log"), "{text}");
        Ok(())
    })();
    run(Command::new("dpkg").args(["--purge", DEB_SENSOR]))?;
    result?;
    for f in &files {
        assert!(!f.exists(), "{} left after purge", f.display());
    }
    for dir in [
        "/etc/ja4sensor",
        "/var/lib/ja4sensor",
        "/var/log/ja4sensor",
        "/usr/share/ja4sensor",
    ] {
        assert!(!Path::new(dir).exists(), "{dir} left after purge");
    }
    Ok(())
}

/// An `apxs` that answers like RHEL's httpd-devel.
fn fake_rhel_apxs(dir: &Path) -> Result<PathBuf> {
    let apxs = dir.join("apxs");
    fs::write(
        &apxs,
        "#!/bin/sh\ncase \"$2\" in\n  LIBEXECDIR) echo /usr/lib64/httpd/modules ;;\n  SYSCONFDIR) echo /etc/httpd/conf ;;\n  *) exit 1 ;;\nesac\n",
    )?;
    fs::set_permissions(&apxs, fs::Permissions::from_mode(0o755))?;
    Ok(apxs)
}

#[test]
fn apxs_install_honours_destdir_with_this_debian_layout() -> Result<()> {
    // The module the packages carry (`make install` builds its own with `make release`, which
    // would be a second full build here; that the Makefile hands DESTDIR over is checked below).
    packages();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let module = target.join("x86_64-unknown-linux-gnu/release/libmod_reqin_log.so");
    let dest = tempfile::tempdir()?;
    run(Command::new(workspace_root().join("apxs/install.sh"))
        .env("MODULE_SO", &module)
        .env("DESTDIR", dest.path())
        .env_remove("LAYOUT")
        .env_remove("APXS"))?;
    let d = dest.path();
    // `apxs -q LIBEXECDIR` and SYSCONFDIR of Debian's apache2-dev.
    let so = d.join("usr/lib/apache2/modules/mod_reqin_log.so");
    assert_eq!(fs::metadata(&so)?.mode() & 0o777, 0o755);
    assert_eq!(fs::read(&so)?, fs::read(&module)?);
    for f in ["reqin_log.load", "reqin_log.conf"] {
        let installed = fs::read(d.join("etc/apache2/mods-available").join(f))?;
        let source = fs::read(
            workspace_root()
                .join("httpd-conf/debian/mods-available")
                .join(f),
        )?;
        assert_eq!(installed, source, "{f}");
    }
    let recipe = stdout(
        Command::new("make")
            .arg("-n")
            .arg("-C")
            .arg(workspace_root())
            .args(["install", "DESTDIR=/tmp/stage", "LAYOUT=rhel"]),
    )?;
    assert!(
        recipe.contains("DESTDIR=\"/tmp/stage\" LAYOUT=\"rhel\" ./apxs/install.sh"),
        "{recipe}"
    );
    Ok(())
}

#[test]
fn apxs_install_uses_rhel_layout_and_keeps_edited_configs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let apxs = fake_rhel_apxs(dir.path())?;
    let so = dir.path().join("libmod_reqin_log.so");
    fs::write(&so, b"not really an ELF")?;
    let dest = dir.path().join("stage");
    let install = || {
        run(Command::new(workspace_root().join("apxs/install.sh"))
            .env("APXS", &apxs)
            .env("LAYOUT", "rhel")
            .env("MODULE_SO", &so)
            .env("DESTDIR", &dest))
    };
    install()?;
    assert_eq!(
        fs::read(dest.join("usr/lib64/httpd/modules/mod_reqin_log.so"))?,
        b"not really an ELF"
    );
    let modconf = dest.join("etc/httpd/conf.modules.d/10-reqin_log.conf");
    let conf = dest.join("etc/httpd/conf.d/reqin_log.conf");
    assert_eq!(
        fs::read(&modconf)?,
        fs::read(workspace_root().join("httpd-conf/rhel/conf.modules.d/10-reqin_log.conf"))?
    );
    // The administrator edits the config; a reinstall keeps it and puts ours beside it.
    fs::write(&conf, "# mine\n")?;
    install()?;
    assert_eq!(fs::read_to_string(&conf)?, "# mine\n");
    assert_eq!(
        fs::read(conf.with_extension("conf.new"))?,
        fs::read(workspace_root().join("httpd-conf/rhel/conf.d/reqin_log.conf"))?
    );
    // Without apxs's answers or a known layout, it refuses instead of guessing.
    let refused = Command::new(workspace_root().join("apxs/install.sh"))
        .env("APXS", &apxs)
        .env("MODULE_SO", &so)
        .env("DESTDIR", &dest)
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("LAYOUT="));
    Ok(())
}

/// The module's log needs no logrotate file of ours: it lives in httpd's log directory, whose
/// own logrotate file (Debian `/var/log/apache2/*.log`, RHEL `/var/log/httpd/*log`) rotates it
/// and then reloads httpd gracefully, which reopens it. A second stanza for the same file would
/// be an error ("duplicate log entry") that logrotate reports on every run.
#[test]
fn module_log_is_rotated_by_apache2s_logrotate_with_a_graceful_reload() -> Result<()> {
    let apache2 = fs::read_to_string("/etc/logrotate.d/apache2")?;
    assert!(apache2.contains("invoke-rc.d apache2 reload"), "{apache2}");
    let unit = fs::read_to_string("/lib/systemd/system/apache2.service")?;
    assert!(
        unit.contains("ExecReload=/usr/sbin/apachectl graceful"),
        "{unit}"
    );
    // The same stanza over a sandbox log directory (logrotate -d changes nothing).
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("apache2");
    fs::create_dir(&logs)?;
    fs::write(logs.join("reqin.log"), "{}\n")?;
    let sandboxed = dir.path().join("apache2.logrotate");
    fs::write(
        &sandboxed,
        apache2.replace("/var/log/apache2/", &format!("{}/", logs.display())),
    )?;
    let state = dir.path().join("state");
    let debug = |configs: &[&Path]| -> Result<(bool, String)> {
        let out = Command::new("logrotate")
            .arg("-d")
            .arg("-s")
            .arg(&state)
            .args(configs)
            .output()
            .map_err(|e| format!("logrotate (apt package logrotate): {e}"))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        ))
    };
    let (ok, text) = debug(&[&sandboxed])?;
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("considering log {}/reqin.log", logs.display())),
        "{text}"
    );
    let ours = dir.path().join("reqin.logrotate");
    fs::write(
        &ours,
        format!("{}/reqin.log {{\n  daily\n}}\n", logs.display()),
    )?;
    let (ok, text) = debug(&[&sandboxed, &ours])?;
    assert!(!ok && text.contains("duplicate log entry"), "{text}");
    Ok(())
}
