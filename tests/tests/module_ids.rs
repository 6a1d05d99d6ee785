//! Correlation ids, tags and the status page for people (issue: correlation ids, tags and
//! forensic queries): every line carries its connection's `conn_id` (the root) and its own
//! `request_id`, unique across children, threads and graceful restarts.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use e2e_tests::*;
use serde_json::Value;

const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// `h2load` against `url`: `n` requests over `c` connections (HTTP/2, or HTTP/1.1 with `h1`);
/// returns the number of requests that succeeded.
fn h2load(url: &str, n: usize, c: usize, h1: bool) -> Result<usize> {
    let mut cmd = Command::new("h2load");
    cmd.args(["-n", &n.to_string(), "-c", &c.to_string(), "-t", "1"]);
    if h1 {
        cmd.arg("--h1");
    }
    let out = cmd.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("requests:"))
            .collect::<String>()
    );
    // "requests: 50000 total, 50000 started, 50000 done, 50000 succeeded, 0 failed, ..."
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .ok_or_else(|| format!("h2load printed no summary: {text}"))?;
    let succeeded = line
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" succeeded"))
        .ok_or_else(|| format!("no succeeded count in {line:?}"))?;
    Ok(succeeded.trim().parse()?)
}

/// At least `n` successful requests (h2load again for what failed: under event, right after a
/// graceful restart, some of its connections are refused while old children finish).
fn load(url: &str, n: usize, h1: bool) -> Result<usize> {
    let mut done = 0;
    for _ in 0..5 {
        done += h2load(url, n - done, 16, h1)?;
        if done >= n {
            return Ok(done);
        }
    }
    Err(format!("only {done} of {n} requests succeeded in five rounds").into())
}

fn prefix(conn_id: &str) -> &str {
    conn_id.split('-').next().unwrap_or_default()
}

#[test]
fn request_ids_are_unique_over_100000_requests_across_children_and_a_graceful_restart() -> Result<()>
{
    // Twenty requests per connection: 5 000 connections, which every child takes its share of.
    for (mpm, tuning, h1) in [
        (
            "prefork",
            "StartServers 4\nMinSpareServers 4\nMaxSpareServers 16\nMaxKeepAliveRequests 20\n",
            true,
        ),
        (
            // Four children of 16 threads, room for four more while the old ones finish after
            // the graceful restart. HTTP/1.1 here (HTTP/2 streams: the test below).
            "event",
            "StartServers 4\nServerLimit 8\nThreadsPerChild 16\nMinSpareThreads 64\n\
             MaxSpareThreads 64\nMaxRequestWorkers 64\nMaxKeepAliveRequests 20\n",
            true,
        ),
    ] {
        let root = server_root()?;
        let opts = HttpdOptions {
            mpm,
            extra_conf: tuning.into(),
            ..HttpdOptions::default()
        };
        // No sensor: the ids do not depend on the join.
        let h = Httpd::start(root.path(), &root.path().join("no.ring"), &opts)?;
        let url = h.https_url("/");
        let mut done = load(&url, 50_000, h1)?;
        let before: HashSet<String> = h
            .wait_log_lines(done)?
            .iter()
            .filter_map(|l| l["conn_id"].as_str().map(|c| prefix(c).to_owned()))
            .collect();
        h.ctl("graceful")?;
        std::thread::sleep(Duration::from_secs(2));
        done += load(&url, 50_000, h1)?;
        let lines = h.wait_log_lines(done)?;
        assert_eq!(lines.len(), done, "{mpm}: one line per request");
        let mut request_ids = HashSet::new();
        let mut per_conn: HashMap<&str, Vec<u64>> = HashMap::new();
        for l in &lines {
            let rid = str_field(l, "request_id")?;
            assert!(request_ids.insert(rid), "{mpm}: request_id {rid} twice");
            let cid = str_field(l, "conn_id")?;
            assert!(rid.starts_with(cid), "{mpm}: {rid} names its root {cid}");
            per_conn
                .entry(cid)
                .or_default()
                .push(u64_field(l, "sequence_number")?);
            assert_eq!(l["sequence_number"], l["keepalives"]);
        }
        for (cid, mut seq) in per_conn {
            seq.sort_unstable();
            let want: Vec<u64> = (1..=seq.len() as u64).collect();
            assert_eq!(seq, want, "{mpm}: {cid}: 1, 2, 3... on its connection");
        }
        let after: HashSet<String> = lines
            .iter()
            .filter_map(|l| l["conn_id"].as_str().map(|c| prefix(c).to_owned()))
            .collect();
        assert!(
            before.len() >= 4,
            "{mpm}: every child its own prefix: {before:?}"
        );
        assert!(
            after.len() > before.len(),
            "{mpm}: the children after the graceful restart draw new prefixes"
        );
        assert_eq!(h.crashed_children(), Vec::<String>::new());
    }
    Ok(())
}

#[test]
fn http2_streams_share_their_connection_id_with_their_own_request_ids() -> Result<()> {
    let root = server_root()?;
    let h = Httpd::start(
        root.path(),
        &root.path().join("no.ring"),
        &HttpdOptions::default(),
    )?;
    let urls: Vec<String> = (0..4).map(|i| h.https_url(&format!("/?s={i}"))).collect();
    let ports = curl(&["--http2"], &urls)?;
    let lines = wait_lines_for_ports(&h, &ports[..1], LINE_TIMEOUT)?;
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|l| l["src_port"] == u64::from(ports[0]))
        .collect();
    assert_eq!(mine.len(), 4, "{lines:?}");
    let cid = str_field(mine[0], "conn_id")?;
    let mut streams = Vec::new();
    let mut ids = HashSet::new();
    for l in &mine {
        assert_eq!(str_field(l, "http_version")?, "HTTP/2.0");
        assert_eq!(
            str_field(l, "conn_id")?,
            cid,
            "every stream of the connection"
        );
        assert!(ids.insert(str_field(l, "request_id")?));
        streams.push((u64_field(l, "sequence_number")?, u64_field(l, "stream_id")?));
    }
    streams.sort_unstable();
    let seq: Vec<u64> = streams.iter().map(|s| s.0).collect();
    assert_eq!(seq, [1, 2, 3, 4], "sequence numbers on the connection");
    assert!(
        streams.windows(2).all(|w| w[0].1 < w[1].1) && streams.iter().all(|s| s.1 % 2 == 1),
        "client stream ids, odd and increasing with the sequence: {streams:?}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["http_version"] == "HTTP/1.1")
            .all(|l| l.get("stream_id").is_none()),
        "only HTTP/2 lines name a stream"
    );
    Ok(())
}

#[test]
fn operator_tags_mark_the_lines_they_match() -> Result<()> {
    let conf = format!(
        "ReqinLogTag investigation_id INC-12345 \"-R '127.0.0.0/8'\"\n\
         ReqinLogTag never_here yes \"-R '203.0.113.0/24'\"\n\
         ReqinLogTag case \"%{{HTTP:X-Case}}\"\n\
         ReqinLogTag analyst alice\n\
         SetEnvIf User-Agent probe PROBE=1\n\
         ReqinLogTag probe \"%{{ENV:PROBE}}\" \"-n %{{ENV:PROBE}}\"\n\
         {STATUS_CONF}"
    );
    let root = server_root()?;
    let opts = HttpdOptions {
        extra_conf: format!(
            "LoadModule setenvif_module /usr/lib/apache2/modules/mod_setenvif.so\n{conf}"
        ),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &root.path().join("no.ring"), &opts)?;
    let a = curl(&["--http1.1", "-H", "X-Case: c-42"], &[h.https_url("/")])?;
    let b = curl(&["--http1.1", "-A", "probe/1"], &[h.https_url("/")])?;
    let lines = wait_lines_for_ports(&h, &[a[0], b[0]], LINE_TIMEOUT)?;
    let la = &lines_for_port(&lines, a[0])[0];
    let lb = &lines_for_port(&lines, b[0])[0];
    assert_eq!(str_field(la, "tag_investigation_id")?, "INC-12345");
    assert_eq!(str_field(la, "tag_case")?, "c-42");
    assert_eq!(str_field(la, "tag_analyst")?, "alice");
    assert!(la.get("never_here").is_none() && la.get("tag_never_here").is_none());
    assert!(la.get("tag_probe").is_none(), "condition false: no tag");
    assert_eq!(str_field(lb, "tag_probe")?, "1");
    assert_eq!(
        str_field(lb, "tag_case")?,
        "",
        "an empty header is an empty value"
    );
    // A value or condition httpd cannot parse fails the config test, naming the directive.
    let (ok, out) = config_test(root.path(), "ReqinLogTag x y \"-R 'not-an-ip\"\n")?;
    assert!(!ok && out.contains("ReqinLogTag"), "{out}");
    let (ok, out) = config_test(root.path(), "ReqinLogTag bad-key y\n")?;
    assert!(!ok && out.contains("ReqinLogTag"), "{out}");
    Ok(())
}

#[test]
fn the_status_page_answers_html_for_people() -> Result<()> {
    let root = server_root()?;
    let opts = HttpdOptions {
        extra_conf: STATUS_CONF.into(),
        ..HttpdOptions::default()
    };
    let h = Httpd::start(root.path(), &root.path().join("no.ring"), &opts)?;
    curl(&["--http1.1"], &[h.https_url("/")])?;
    let out = Command::new("curl")
        .args(["-s", "-D", "-", &h.http_url("/reqin-status?html")])
        .output()?;
    let page = String::from_utf8(out.stdout)?;
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(page.contains("<h1>mod_reqin_log status</h1>"), "{page}");
    assert!(page.contains("reqin_log_lines_written_total"), "{page}");
    assert!(page.contains("no sensor ring mapped"), "{page}");
    // And the Prometheus text stays what it was without `?html` (the line is written within
    // ReqinLogFlushInterval).
    wait_for(LINE_TIMEOUT, "a line counted", || {
        let m = prometheus(&h.http_url("/reqin-status")).ok()?;
        (m["reqin_log_lines_written_total"] >= 1.0).then_some(())
    })?;
    Ok(())
}
