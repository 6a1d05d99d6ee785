//! Many web servers, one ClickHouse cluster (issue 17): two `clickhouse-server` processes on
//! loopback, each its own data directory, both shards of cluster `reqin` in their
//! `remote_servers`; two shippers ("web servers", each its own log, checkpoint and id space)
//! with the two nodes in opposite fail-over orders. Nothing is mocked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use e2e_tests::clickhouse::CLUSTER;

const LINES_PER_SERVER: u64 = 200_000;
/// How long shard 2 is down, in the middle of the run.
const SHARD_DOWN: Duration = Duration::from_secs(30);

fn count(ch: &ClickHouse, sql: &str) -> u64 {
    ch.query(sql).parse().unwrap()
}

/// A shard's own rows, distinct request ids and recorded rows: what a failure message needs.
fn shard_counts(ch: &ClickHouse) -> String {
    ch.query(
        "SELECT count(), uniqExact(visitParamExtractString(raw_json, 'request_id')), \
         (SELECT sum(rows) FROM ship_batches) FROM http_logs_raw",
    )
}

#[test]
fn two_web_servers_ship_into_two_shards_exactly_once_while_one_shard_is_down_for_30_s() {
    let mut nodes = ClickHouse::start_cluster(2);
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    // Web server i writes to shard i first, the other one when it is down.
    let servers: Vec<(String, std::path::PathBuf, ShipSetup)> = (0..2)
        .map(|i| {
            let name = format!("web{}", i + 1);
            let sub = dir.path().join(&name);
            std::fs::create_dir(&sub).unwrap();
            let log = sub.join("reqin.log");
            let hosts = format!(
                "    hosts: [{:?}, {:?}]\n    cluster: {CLUSTER}\n    timeout_ms: 2000\n",
                urls[i],
                urls[1 - i]
            );
            let setup = ShipSetup::full(
                &sub,
                &urls[i],
                &log.display().to_string(),
                &hosts,
                "",
                &sub.join("ship.checkpoint"),
            );
            (name, log, setup)
        })
        .collect();
    // Every node gets the local and the Distributed tables; the second run finds them all.
    let migrations = reqin_shipper::schema::migrations(reqin_shipper::ch::Flavor::Legacy).len()
        + reqin_shipper::schema::CLUSTER.len();
    let first = servers[0].2.init_schema();
    assert_eq!(
        first
            .matches(&format!("{migrations} migration(s) applied"))
            .count(),
        2,
        "{first}"
    );
    let second = servers[1].2.init_schema();
    assert_eq!(
        second
            .matches(&format!("{migrations} already there"))
            .count(),
        2,
        "{second}"
    );
    for n in &nodes {
        for t in ["http_logs_raw_all", "http_logs_all", "reqin_events_all"] {
            assert!(
                n.query(&format!("SHOW CREATE TABLE {t}"))
                    .contains("Distributed"),
                "{t}"
            );
        }
    }
    let shippers: Vec<Shipper> = servers.iter().map(|(_, _, s)| s.spawn()).collect();
    // Each web server writes its 200 000 lines over ~45 s, in the middle of which shard 2 is
    // stopped (SIGTERM: its own clean shutdown) for 30 s and restarted.
    let writers: Vec<_> = servers
        .iter()
        .map(|(name, log, _)| {
            let (name, log) = (name.clone(), log.clone());
            std::thread::spawn(move || {
                const CHUNK: u64 = 1000;
                let t0 = Instant::now();
                for c in 0..LINES_PER_SERVER / CHUNK {
                    let mut out = String::new();
                    for n in c * CHUNK..(c + 1) * CHUNK {
                        out.push_str(&fleet_line(&name, n));
                        out.push('\n');
                    }
                    append(&log, out.as_bytes());
                    // ~4 400 lines/s per web server.
                    let due = Duration::from_millis(225 * (c + 1));
                    if let Some(rest) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            })
        })
        .collect();
    // Both shippers past their start-up (settled, files looked up) and shipping, then a few s.
    assert!(wait_for(Duration::from_secs(60), || shippers
        .iter()
        .all(|s| s.metric("rows_shipped_total").unwrap_or(0) > 0)));
    std::thread::sleep(Duration::from_secs(3));
    let before_stop = count(&nodes[1], "SELECT count() FROM http_logs_raw");
    nodes[1].stop();
    std::thread::sleep(SHARD_DOWN);
    nodes[1].restart();
    for w in writers {
        w.join().unwrap();
    }
    let written = Instant::now();
    let total = 2 * LINES_PER_SERVER;
    let fleet = "SELECT count() FROM http_logs_raw_all";
    let done = wait_for(Duration::from_secs(180), || {
        nodes[0].query(fleet).parse::<u64>().ok() == Some(total)
    });
    let logs: Vec<String> = shippers.iter().map(|s| s.log_text()).collect();
    assert!(
        done,
        "{fleet}: {:?}; per shard (rows, request ids, recorded): {:?}\n{}\n{}",
        nodes[0].query(fleet),
        nodes.iter().map(shard_counts).collect::<Vec<_>>(),
        logs[0],
        logs[1]
    );
    eprintln!(
        "all {total} lines in the cluster {:.1} s after the last was written",
        written.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(1500));
    // Exactly once, by request_id, through the Distributed tables from either node.
    for n in &nodes {
        assert_eq!(
            n.query(
                "SELECT count(), uniqExact(visitParamExtractString(raw_json, 'request_id')) \
                 FROM http_logs_raw_all"
            ),
            format!("{total}\t{total}")
        );
        assert_eq!(count(n, "SELECT count() FROM http_logs_all"), total);
    }
    // The whole-fleet query of the README: every web server's lines, whichever shard holds them.
    assert_eq!(
        nodes[0].query(
            "SELECT host, count(), uniqExact(request_id) FROM \
             (SELECT host, visitParamExtractString(raw_json, 'request_id') AS request_id \
              FROM http_logs_all) GROUP BY host ORDER BY host"
        ),
        format!("web1.example.test\t{LINES_PER_SERVER}\t{LINES_PER_SERVER}\nweb2.example.test\t{LINES_PER_SERVER}\t{LINES_PER_SERVER}")
    );
    let on_shard: Vec<u64> = nodes
        .iter()
        .map(|n| count(n, "SELECT count() FROM http_logs_raw"))
        .collect();
    eprintln!(
        "rows per shard: {on_shard:?}; shard 2 held {before_stop} before it was stopped; failovers: {:?}",
        shippers
            .iter()
            .map(|s| s.metric("failovers_total"))
            .collect::<Vec<_>>()
    );
    assert_eq!(on_shard.iter().sum::<u64>(), total);
    assert!(
        before_stop > 0,
        "web2 had shipped nothing to its shard before the stop"
    );
    // Web server 2 carried on through shard 1 while its own was down.
    assert!(
        shippers[1].metric("failovers_total").unwrap() > 0,
        "{}",
        logs[1]
    );
    // Each shard's records account for its rows.
    for n in &nodes {
        assert_eq!(
            n.query("SELECT sum(rows) FROM ship_batches"),
            n.query("SELECT count() FROM http_logs_raw")
        );
    }
}

/// One web server, two hosts. The first host is frozen (SIGSTOP: it accepts connections and
/// answers nothing) for 20 s: the batch sent to it then may or may not land, and only that host
/// can tell, so it waits there; the batches after it must go on to the second host meanwhile, and
/// nothing may be lost or doubled once the first host answers again.
#[test]
fn a_batch_in_doubt_on_a_frozen_host_does_not_stop_the_next_ones_going_to_the_other_host() {
    const RATE: u64 = 2000; // lines per second
    const CHUNK: u64 = 100;
    const FREEZE: Duration = Duration::from_secs(20);
    let nodes = ClickHouse::start_cluster(2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("reqin.log");
    let hosts = format!(
        "    hosts: [{:?}, {:?}]\n    cluster: {CLUSTER}\n    timeout_ms: 2000\n",
        nodes[0].url(),
        nodes[1].url()
    );
    let setup = ShipSetup::full(
        dir.path(),
        &nodes[0].url(),
        &log.display().to_string(),
        &hosts,
        "",
        &dir.path().join("ship.checkpoint"),
    );
    setup.init_schema();
    let shipper = setup.spawn();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (log, written, stop) = (log.clone(), written.clone(), stop.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut out = String::new();
                for i in n..n + CHUNK {
                    out.push_str(&fleet_line("web1", i));
                    out.push('\n');
                }
                append(&log, out.as_bytes());
                n += CHUNK;
                written.store(n, std::sync::atomic::Ordering::Relaxed);
                let due = Duration::from_millis(n * 1000 / RATE);
                if let Some(rest) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            n
        })
    };
    let raw = "SELECT count() FROM http_logs_raw";
    assert!(
        wait_for(Duration::from_secs(60), || count(&nodes[0], raw) > 0),
        "{}",
        shipper.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    let at_freeze = written.load(std::sync::atomic::Ordering::Relaxed);
    let second_before = count(&nodes[1], raw);
    nodes[0].freeze();
    std::thread::sleep(FREEZE);
    let during = written.load(std::sync::atomic::Ordering::Relaxed) - at_freeze;
    let second_during = count(&nodes[1], raw) - second_before;
    nodes[0].thaw();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = writer.join().unwrap();
    let fleet = "SELECT count(), uniqExact(visitParamExtractString(raw_json, 'request_id')) \
                 FROM http_logs_raw_all";
    let all = wait_for(Duration::from_secs(120), || {
        nodes[0].query(fleet) == format!("{total}\t{total}")
    });
    let text = shipper.log_text();
    assert!(
        all,
        "{} of {total}; per host (rows, request ids, recorded): {:?}\n{text}",
        nodes[0].query(fleet),
        nodes.iter().map(shard_counts).collect::<Vec<_>>()
    );
    eprintln!(
        "frozen {FREEZE:?}: {during} lines written meanwhile, {second_during} shipped to the other host; failovers {:?}",
        shipper.metric("failovers_total")
    );
    assert!(
        text.contains("checking batch"),
        "no batch was in doubt on the frozen host\n{text}"
    );
    // Everything but the last few seconds' lines (a crowded window sends every 5 s) went on.
    assert!(
        second_during * 2 >= during,
        "only {second_during} of the {during} lines written while the first host was frozen reached the second\n{text}"
    );
    for n in &nodes {
        assert_eq!(
            n.query("SELECT sum(rows) FROM ship_batches"),
            n.query("SELECT count() FROM http_logs_raw")
        );
    }
}
