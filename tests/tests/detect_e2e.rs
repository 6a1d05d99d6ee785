//! `ja4sensor detect` end to end: a private httpd with mod_reqin_log on lo, the real sensor,
//! the real detector following the module's log, real clients (curl, headless Chromium).
//!
//! - curl claiming to be Chrome raises a `FingerprintMismatch` warning; Debian's headless
//!   Chromium with its own User-Agent raises none (and its JA4 is one the shipped client map
//!   knows as `chromium`, so the check was not vacuous).
//! - A flood trips `threshold`, the `verdict` listener writes the verdict table, and httpd
//!   refuses the flooding client's next request through `Require expr` on `REQIN_VERDICT`
//!   while another client still gets 200, until the verdict expires. That one needs the
//!   module's verdict lookup (the lead's part): ignored until it lands.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use correlate_lib::clients::ClientMap;
use e2e_tests::*;
use serde_json::Value;

const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// A second Chrome claim, sent last: once its event is out, every earlier line was processed.
const MARKER_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.0.0 Safari/537.36";
/// The closed-network flags headless Chromium needs here (no sandbox as root, no QUIC, no
/// background traffic to Google), as scripts/build_client_map.py runs it.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--ignore-certificate-errors",
];
/// The module's directive naming the verdict table (added by the lead with the lookup).
const VERDICT_DIRECTIVE: &str = "ReqinLogVerdictTable";

fn clients_csv() -> std::path::PathBuf {
    workspace_root().join("sensor/detect/data/clients.csv")
}

fn write_config(root: &Path, extra_modules: &str, listeners: &str) -> Result<std::path::PathBuf> {
    let cfg = root.join("detect.yml");
    let text = format!(
        "detect:\n  input: {{path: \"{root}/reqin.log*\", start_at: beginning, poll_interval_ms: 20}}\n  checkpoint_path: {root}/detect.checkpoint\n  clients: [{clients}]\n  metrics: {{enabled: false}}\n  modules:\n    new_fingerprint: {{state_path: {root}/fingerprints}}\n{extra_modules}  listeners:\n    - {{type: jsonl, path: {root}/events.jsonl}}\n{listeners}",
        root = root.display(),
        clients = clients_csv().display(),
    );
    std::fs::write(&cfg, text)?;
    Ok(cfg)
}

fn mismatches(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "FingerprintMismatch")
        .collect()
}

#[test]
fn curl_claiming_chrome_is_a_mismatch_and_headless_chromium_is_not() -> Result<()> {
    let stack = Stack::start("event", "JsonSockLogHeaders User-Agent\n")?;
    let root = stack.root.path();
    let _detector = start_detector(&write_config(root, "", "")?)?;
    let events_path = root.join("events.jsonl");

    curl(&["-A", CHROME_UA], &[stack.httpd.https_url("/")])?;
    let profile = tempfile::tempdir()?;
    let out = Command::new("timeout")
        .arg("60")
        .arg("chromium")
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &stack.httpd.https_url("/")])
        .output()?;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("hello from reqin e2e"),
        "Chromium loaded the page: {dom} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    curl(&["-A", MARKER_UA], &[stack.httpd.https_url("/?marker")])?;

    let events = wait_for(
        Duration::from_secs(30),
        "the marker's mismatch event",
        || {
            let ev = jsonl_lines(&events_path).ok()?;
            mismatches(&ev)
                .iter()
                .any(|e| e["data"]["user_agent"] == MARKER_UA)
                .then_some(ev)
        },
    )?;
    let curl_ev: Vec<_> = mismatches(&events)
        .into_iter()
        .filter(|e| e["data"]["user_agent"] == CHROME_UA)
        .collect();
    assert_eq!(
        curl_ev.len(),
        1,
        "one warning for curl's request: {events:?}"
    );
    let e = curl_ev[0];
    assert_eq!(e["severity"], "warning");
    assert_eq!(e["module"], "fingerprint_mismatch");
    assert_eq!(e["data"]["claimed_client"], "chromium");
    assert_eq!(
        e["data"]["ja4_clients"], "curl",
        "the JA4 side says curl: {e}"
    );
    assert_eq!(e["data"]["claimed_os"], "windows");
    assert_eq!(e["src_ip"], "127.0.0.1");
    // The event points at the request and the connection that raised it.
    let lines = stack.httpd.log_lines()?;
    let curl_line = lines
        .iter()
        .find(|l| l["header_User-Agent"] == CHROME_UA)
        .ok_or("curl's line")?;
    assert_eq!(
        e["parent_correlation_id"], curl_line["request_id"],
        "{e} {curl_line}"
    );
    assert_eq!(
        e["root_correlation_id"], curl_line["conn_id"],
        "{e} {curl_line}"
    );
    assert!(!str_field(curl_line, "request_id")?.is_empty());

    // Chromium's requests: its own User-Agent, a JA4 the map calls chromium, no warning.
    let chromium: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["header_User-Agent"]
                .as_str()
                .is_some_and(|u| u.contains("HeadlessChrome"))
        })
        .collect();
    assert!(
        !chromium.is_empty(),
        "Chromium's request is in the log: {lines:?}"
    );
    let map = ClientMap::load(&clients_csv())?;
    for l in &chromium {
        assert_eq!(l["correlated"], true, "{l}");
        let ja4 = str_field(l, "ja4")?;
        assert_eq!(
            map.client(ja4),
            "chromium",
            "Chromium's JA4 {ja4} is not in sensor/detect/data/clients.csv: regenerate it (python3 scripts/build_client_map.py)"
        );
    }
    let chromium_warnings: Vec<_> = mismatches(&events)
        .into_iter()
        .filter(|e| {
            e["data"]["user_agent"]
                .as_str()
                .is_some_and(|u| u.contains("HeadlessChrome"))
        })
        .collect();
    assert!(
        chromium_warnings.is_empty(),
        "no warning for the real browser: {chromium_warnings:?}"
    );
    Ok(())
}

/// HTTP status codes of `curl <args> <url>...` (one transfer per URL).
fn codes(args: &[&str], urls: &[String]) -> Result<Vec<String>> {
    let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    for u in urls {
        a.extend([
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}\\n".into(),
            u.clone(),
        ]);
    }
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    Ok(curl_output(&refs)?.lines().map(str::to_owned).collect())
}

#[test]
fn a_flood_is_refused_through_the_verdict_table_until_the_verdict_expires() -> Result<()> {
    let stack = Stack::start_with("event", &[], |root| {
        format!(
            "JsonSockLogHeaders User-Agent\n{VERDICT_DIRECTIVE} \"{}/verdicts\"\n<Location \"/\">\n    Require expr \"%{{ENV:REQIN_VERDICT}} != 'block'\"\n</Location>\n",
            root.display()
        )
    })?;
    let root = stack.root.path();
    let modules = "    threshold:\n      rules:\n        - {name: flood, key: [src_ip], count: 10, window_ms: 10000, quiet_ms: 60000, when: [{field: path, prefix: /flood}]}\n";
    let listeners = format!(
        "    - {{type: verdict, path: {}/verdicts, key: src_ip, verdict: block, ttl_s: 4, group: {HTTPD_GROUP}, types: [ThresholdExceeded]}}\n",
        root.display()
    );
    let _detector = start_detector(&write_config(root, modules, &listeners)?)?;
    let flooder = ["--interface", "127.0.0.2"];
    let other = ["--interface", "127.0.0.1"];
    let flood: Vec<String> = (0..12)
        .map(|i| stack.httpd.https_url(&format!("/flood/{i}")))
        .collect();
    assert!(codes(&flooder, &flood)?.iter().all(|c| c == "404"));
    let flooded = Instant::now();
    // The next request of the flooding client is refused as soon as the verdict is in the table.
    wait_for(
        Duration::from_secs(10),
        "a 403 for the flooding client",
        || {
            (codes(&flooder, &[stack.httpd.https_url("/")])
                .ok()?
                .first()?
                == "403")
                .then_some(())
        },
    )?;
    println!("verdict effective {:?} after the flood", flooded.elapsed());
    assert_eq!(
        codes(&other, &[stack.httpd.https_url("/")])?,
        ["200"],
        "another client is served"
    );
    let events = jsonl_lines(&root.join("events.jsonl"))?;
    let tripped: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "ThresholdExceeded")
        .collect();
    assert_eq!(
        tripped.len(),
        1,
        "one event for the flood, not one per line: {tripped:?}"
    );
    assert_eq!(tripped[0]["src_ip"], "127.0.0.2");
    // Its line is written within ReqinLogFlushInterval.
    let refused = wait_for(Duration::from_secs(10), "the 403 line", || {
        stack
            .httpd
            .log_lines()
            .ok()?
            .into_iter()
            .find(|l| l["status"] == 403)
    })?;
    assert_eq!(refused["verdict"], "block");
    assert_eq!(refused["verdict_rule"], "flood");
    // After its expiry (ttl_s 4), the client is served again.
    wait_for(
        Duration::from_secs(15),
        "a 200 after the verdict expired",
        || {
            (codes(&flooder, &[stack.httpd.https_url("/")])
                .ok()?
                .first()?
                == "200")
                .then_some(())
        },
    )?;
    Ok(())
}

/// The detector's half of the loop, with the real stack and no module lookup: a flood from
/// 127.0.0.2 trips the rule once and puts that client (only) into the verdict table, readable
/// by the Apache group, until its expiry.
#[test]
fn a_flood_puts_its_client_into_the_verdict_table_until_expiry() -> Result<()> {
    use correlate_lib::verdict::{VerdictLookup, VerdictReader};
    use std::os::unix::fs::MetadataExt;
    let stack = Stack::start("event", "JsonSockLogHeaders User-Agent\n")?;
    let root = stack.root.path();
    let table = root.join("verdicts");
    let modules = "    threshold:\n      rules:\n        - {name: flood, key: [src_ip], count: 10, window_ms: 10000, quiet_ms: 60000, when: [{field: path, prefix: /flood}]}\n";
    let listeners = format!(
        "    - {{type: verdict, path: {}, key: src_ip, verdict: block, ttl_s: 3, group: {HTTPD_GROUP}, types: [ThresholdExceeded]}}\n",
        table.display()
    );
    let _detector = start_detector(&write_config(root, modules, &listeners)?)?;
    let meta = std::fs::metadata(&table)?;
    assert_eq!(meta.mode() & 0o777, 0o640);
    let www = Command::new("getent")
        .args(["group", HTTPD_GROUP])
        .output()?;
    let gid: u32 = String::from_utf8_lossy(&www.stdout)
        .split(':')
        .nth(2)
        .ok_or("gid")?
        .parse()?;
    assert_eq!(meta.gid(), gid, "the Apache group reads the table");
    let flooder: std::net::IpAddr = "127.0.0.2".parse()?;
    let other: std::net::IpAddr = "127.0.0.1".parse()?;
    let flood: Vec<String> = (0..12)
        .map(|i| stack.httpd.https_url(&format!("/flood/{i}")))
        .collect();
    assert!(codes(&["--interface", "127.0.0.2"], &flood)?
        .iter()
        .all(|c| c == "404"));
    codes(
        &["--interface", "127.0.0.1"],
        &[stack.httpd.https_url("/flood/x")],
    )?;
    let hit = wait_for(Duration::from_secs(10), "the flooder's verdict", || {
        let r = VerdictReader::open(&table).ok()?;
        match r.lookup_ip(flooder, correlate_lib::unix_now_ns()) {
            VerdictLookup::Hit(v) => Some((v.word().to_owned(), v.rule().to_owned())),
            _ => None,
        }
    })?;
    assert_eq!(hit, ("block".to_owned(), "flood".to_owned()));
    let r = VerdictReader::open(&table)?;
    assert_eq!(
        r.lookup_ip(other, correlate_lib::unix_now_ns()),
        VerdictLookup::Miss
    );
    let events = jsonl_lines(&root.join("events.jsonl"))?;
    let tripped: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "ThresholdExceeded")
        .collect();
    assert_eq!(
        tripped.len(),
        1,
        "one event for the flood, not one per line: {tripped:?}"
    );
    assert_eq!(tripped[0]["src_ip"], "127.0.0.2");
    wait_for(Duration::from_secs(15), "the verdict to expire", || {
        let r = VerdictReader::open(&table).ok()?;
        (r.lookup_ip(flooder, correlate_lib::unix_now_ns()) == VerdictLookup::Miss).then_some(())
    })?;
    Ok(())
}
