//! The shipper against a private, real ClickHouse server (Debian's 18.16) and real files: each
//! test is one scenario of issue 6. Nothing is mocked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Catching up 100k lines takes seconds; a stuck shipper fails the test instead of hanging it.
const CATCH_UP: Duration = Duration::from_secs(90);

fn wait_count(ch: &ClickHouse, n: u64) -> bool {
    wait_for(CATCH_UP, || ch.count_and_unique().0 >= n)
}

/// A private server, a temp dir holding `reqin.log`, and a shipper configured to follow that file
/// (or, with `glob`, every `reqin.log*` there) with `extra` more `clickhouse:` keys; schema created.
struct Fixture {
    ch: ClickHouse,
    dir: tempfile::TempDir,
    log: std::path::PathBuf,
    setup: ShipSetup,
}

fn fixture(glob: bool, extra: &str) -> Fixture {
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("reqin.log");
    let pattern = if glob {
        format!("{}/reqin.log*", dir.path().display())
    } else {
        log.display().to_string()
    };
    let setup = ShipSetup::new(dir.path(), &ch, &pattern, extra);
    setup.init_schema();
    Fixture {
        ch,
        dir,
        log,
        setup,
    }
}

#[test]
fn schema_init_is_idempotent_and_picks_legacy_on_18_16() {
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let setup = ShipSetup::new(
        dir.path(),
        &ch,
        &format!("{}/reqin.log*", dir.path().display()),
        "",
    );
    let first = setup.init_schema();
    assert!(first.contains("legacy variant"), "{first}");
    // Every migration of the legacy list, whatever their number.
    let n = reqin_shipper::schema::migrations(reqin_shipper::ch::Flavor::Legacy).len();
    assert!(n >= 11, "seed tables, inbox, events, views: {n}");
    assert!(
        first.contains(&format!("{n} migration(s) applied, 0 already there")),
        "{first}"
    );
    let second = setup.init_schema();
    assert!(
        second.contains(&format!("0 migration(s) applied, {n} already there")),
        "{second}"
    );
    assert_eq!(
        ch.query("SELECT count(), uniqExact(name), any(variant) FROM ship_migrations"),
        format!("{n}\t{n}\tlegacy")
    );
    // Tables made by hand from the seed before the first init: the statement finds them and the
    // migration is recorded anyway.
    ch.query("DROP TABLE ship_migrations");
    let third = setup.init_schema();
    assert!(
        third.contains(&format!("{n} migration(s) applied")),
        "{third}"
    );
    for t in ["http_logs_raw", "http_logs", "ship_batches", "ship_inbox"] {
        assert_eq!(ch.query(&format!("EXISTS TABLE {t}")), "1", "{t}");
    }
}

#[test]
fn correlated_lines_are_shipped_once_and_populate_every_http_logs_column() {
    let Fixture {
        ch,
        dir: _dir,
        log,
        setup,
    } = fixture(false, "");
    append_lines(&log, 0, 1234);
    append(&log, format!("{}\n", orphan_line(5000)).as_bytes());
    let mut shipper = setup.spawn();
    assert!(wait_count(&ch, 1235), "{}", shipper.log_text());
    // Once more after a graceful restart: nothing is sent twice.
    shipper.stop();
    let shipper = setup.spawn();
    assert!(wait_for(Duration::from_secs(10), || shipper
        .get("/health")
        .is_some()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ch.count_and_unique(), (1235, 1235));
    assert_eq!(ch.query("SELECT count() FROM http_logs"), "1235");
    // The first stored line is byte for byte the first line of the file.
    let first = correlated_line(0);
    assert_eq!(
        ch.query(&format!(
            "SELECT count() FROM http_logs_raw WHERE raw_json = '{}'",
            first.replace('\\', "\\\\").replace('\'', "\\'")
        )),
        "1"
    );
    // Every column of http_logs is non-default for a correlated line (orphan_side is only set on
    // orphans, checked below).
    let cols = ch.query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'http_logs'");
    let path = "/item/7";
    for col in cols.lines() {
        if col == "orphan_side" {
            continue;
        }
        let v = ch.query(&format!(
            "SELECT {col} != defaultValueOfArgumentType({col}) FROM http_logs WHERE path = '{path}'"
        ));
        assert_eq!(v, "1", "column {col} is not populated");
    }
    assert_eq!(
        ch.query("SELECT src_ip, src_port, dst_port, correlated, ip_meta_ttl, syn_to_clienthello_ms, ja4 FROM http_logs WHERE path = '/item/7'"),
        "198.51.100.7\t1031\t443\t1\t64\t12\tt13d1516h2_8daaf6152771_e5627efa2ab1"
    );
    assert_eq!(
        ch.query("SELECT orphan_side, correlated FROM http_logs WHERE path = '/item/5000'"),
        "A\t0"
    );
    assert_eq!(
        shipper.metric("rows_shipped_total"),
        Some(0),
        "second run re-sent rows"
    );
}

#[test]
fn kill_9_at_random_points_never_loses_or_duplicates_a_line() {
    const LINES: u64 = 100_000;
    const KILLS: usize = 6;
    // 1000-line batches (capped: a backlog would otherwise go in two 64 MiB batches): 100
    // batches, two in flight, so the kills land mid-stream and the suite stays short.
    let Fixture {
        ch,
        dir: _dir,
        log,
        setup,
    } = fixture(
        false,
        "    batch_size: 1000\n    max_batch_rows: 1000\n    timeout_ms: 1000\n",
    );
    append_lines(&log, 0, LINES);
    let mut rng = Rng::from_time();
    let mut counts = Vec::new();
    for _ in 0..KILLS {
        let mut shipper = setup.spawn();
        // Random point 4..8 s after start: a start first waits ~4-5 s (the 1 s timeout plus
        // margins) for any insert of its killed predecessor to expire, then ships 1000-line
        // batches; the kill lands in the wait, an insert, a check or a checkpoint write.
        std::thread::sleep(Duration::from_millis(4000 + rng.below(4000)));
        shipper.kill9();
        counts.push(ch.count_and_unique());
    }
    eprintln!("(count, unique) after each kill -9: {counts:?}");
    assert!(
        counts.iter().any(|(c, _)| *c > 0 && *c < LINES),
        "no kill landed mid-stream: {counts:?}"
    );
    let shipper = setup.spawn();
    assert!(wait_count(&ch, LINES), "{}", shipper.log_text());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ch.count_and_unique(), (LINES, LINES));
    let log_text = shipper.log_text();
    eprintln!(
        "batches found already in ClickHouse on restart: {}, retried inserts found there: {}",
        log_text.matches("are already in ClickHouse").count(),
        log_text.matches("is already in ClickHouse").count()
    );
    // One record per batch, and the records account for every row.
    assert_eq!(
        ch.query("SELECT count() = uniqExact(batch_id), sum(rows) FROM ship_batches"),
        format!("1\t{LINES}")
    );
    assert_eq!(ch.query("SELECT count() FROM http_logs"), LINES.to_string());
}

#[test]
fn batch_inserted_but_not_checkpointed_is_not_sent_again() {
    // The window kill -9 hits only sometimes, made certain: the insert landed, the checkpoint
    // did not (an older checkpoint is put back, then none at all).
    // A 1 s timeout: every start waits out the deadline a predecessor's insert could have.
    let Fixture {
        ch,
        dir: _dir,
        log,
        setup,
    } = fixture(false, "    timeout_ms: 1000\n");
    append_lines(&log, 0, 2000);
    let mut shipper = setup.spawn();
    assert!(wait_count(&ch, 2000), "{}", shipper.log_text());
    shipper.stop();
    let old_checkpoint = std::fs::read(&setup.checkpoint).unwrap();
    append_lines(&log, 2000, 5000);
    let mut shipper = setup.spawn();
    assert!(wait_count(&ch, 5000), "{}", shipper.log_text());
    shipper.stop();
    std::fs::write(&setup.checkpoint, &old_checkpoint).unwrap();
    let mut shipper = setup.spawn();
    // However many batches the 3000 lines went in (they adapt to the backlog), all are found.
    assert!(wait_for(Duration::from_secs(20), || shipper
        .metric("lag_bytes")
        == Some(0)
        && shipper
            .metric("batches_already_in_clickhouse_total")
            .unwrap_or(0)
            >= 1));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(shipper.metric("rows_shipped_total"), Some(0));
    shipper.stop();
    std::fs::remove_file(&setup.checkpoint).unwrap();
    append_lines(&log, 5000, 5100);
    let shipper = setup.spawn();
    assert!(wait_count(&ch, 5100), "{}", shipper.log_text());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ch.count_and_unique(), (5100, 5100));
    assert_eq!(shipper.metric("rows_shipped_total"), Some(100));
}

#[test]
fn clickhouse_frozen_then_crashed_mid_stream_catches_up_with_nothing_lost() {
    // 30 s stopped (SIGSTOP: connections accepted, nothing answered, inserts time out with their
    // outcome unknown) while the log keeps growing, then 3 s killed: unconfirmed inserts, deadline
    // waits, checks, back-off at its 1 s ceiling, catch-up.
    const FROZEN: Duration = Duration::from_secs(30);
    let Fixture {
        mut ch,
        dir: _dir,
        log,
        setup,
    } = fixture(false, "    timeout_ms: 1000\n    max_batch_rows: 500\n");
    let shipper = setup.spawn();
    let mut n = 0;
    let write_paced = |d: Duration, pause: Duration, n: &mut u64| {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            append_lines(&log, *n, *n + 200);
            *n += 200;
            std::thread::sleep(pause);
        }
    };
    let write_for = |d: Duration, n: &mut u64| write_paced(d, Duration::from_millis(20), n);
    write_for(Duration::from_secs(1), &mut n);
    ch.freeze();
    // 1000 lines/s while it is stopped: 30 000 lines to catch up.
    write_paced(FROZEN, Duration::from_millis(200), &mut n);
    assert_eq!(shipper.metric("clickhouse_up"), Some(0));
    let (status, _) = shipper.get("/health").unwrap();
    assert_eq!(status, 503);
    ch.thaw();
    write_for(Duration::from_secs(1), &mut n);
    // Frozen, never crashed: exactly once.
    assert!(wait_count(&ch, n), "{}", shipper.log_text());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ch.count_and_unique(), (n, n), "{}", shipper.log_text());
    assert!(shipper.metric("retries_total").unwrap() > 0);
    // Killed (-9) and restarted while lines keep coming: nothing lost. A server killed inside an
    // INSERT, between two of the inbox's views, can keep that batch's rows without its id: the
    // batch is then sent again (at most one duplicated batch per batch in flight at the server
    // crash; see README). Batches are capped at 500 lines here, 2 in flight.
    write_for(Duration::from_secs(1), &mut n);
    ch.crash_and_restart(Duration::from_secs(3));
    write_for(Duration::from_secs(1), &mut n);
    assert!(
        wait_for(CATCH_UP, || ch.count_and_unique().1 >= n),
        "{}",
        shipper.log_text()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (count, unique) = ch.count_and_unique();
    assert_eq!(unique, n, "{}", shipper.log_text());
    assert!(
        count - unique <= 1000,
        "more than the two batches in flight twice: {count} rows, {unique} unique"
    );
    eprintln!("after the server crash: {} rows twice", count - unique);
    assert_eq!(shipper.get("/health").unwrap().0, 200);
    assert!(wait_for(Duration::from_secs(5), || shipper
        .metric("lag_bytes")
        == Some(0)));
}

#[test]
fn rotation_by_rename_copytruncate_and_time_named_files_loses_and_repeats_nothing() {
    let Fixture {
        ch,
        dir,
        log,
        setup,
    } = fixture(true, "");
    let shipper = setup.spawn();
    let mut n = 0u64;
    fn write(n: &mut u64, count: u64, path: &std::path::Path) {
        for _ in 0..count / 100 {
            append_lines(path, *n, *n + 100);
            *n += 100;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    write(&mut n, 3000, &log);
    // logrotate's default: rename, the module opens a new file (late writes still reach the old one).
    let rotated1 = dir.path().join("reqin.log.1");
    std::fs::rename(&log, &rotated1).unwrap();
    write(&mut n, 500, &rotated1);
    write(&mut n, 3000, &log);
    // logrotate's copytruncate: .1 → .2, copy the live file to .1, truncate the live file.
    std::fs::rename(&rotated1, dir.path().join("reqin.log.2")).unwrap();
    std::fs::copy(&log, &rotated1).unwrap();
    // Lines written between the copy and the truncation are only in the original: shipped from
    // there, the copy is then shorter than the shipped offset and must add nothing.
    write(&mut n, 300, &log);
    assert!(wait_count(&ch, n), "{}", shipper.log_text());
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    write(&mut n, 3000, &log);
    // rotatelogs: a new time-named file; the old compressed rotation is never read.
    let timed = dir.path().join("reqin.log.20261129-1500");
    write(&mut n, 3000, &timed);
    std::fs::write(dir.path().join("reqin.log.3.gz"), b"\x1f\x8b not text\n").unwrap();
    write(&mut n, 1000, &log);
    assert!(wait_count(&ch, n), "{}", shipper.log_text());
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(ch.count_and_unique(), (n, n), "{}", shipper.log_text());
    assert_eq!(shipper.metric("dead_letters_total"), Some(0));
}

#[test]
fn disk_full_on_checkpoint_write_is_reported_retried_and_loses_nothing() {
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("reqin.log");
    let cp_dir = dir.path().join("state");
    std::fs::create_dir(&cp_dir).unwrap();
    // A real full disk: a 256 KiB tmpfs (root). Without mount rights, a directory replaced by a
    // file makes the same write fail (ENOTDIR instead of ENOSPC).
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&cp_dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    struct Unmount(std::path::PathBuf, bool);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if self.1 {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
    }
    let _unmount = Unmount(cp_dir.clone(), mounted);
    let setup = ShipSetup::with_checkpoint(
        dir.path(),
        &ch,
        &log.display().to_string(),
        "",
        &cp_dir.join("ship.checkpoint"),
    );
    setup.init_schema();
    append_lines(&log, 0, 2000);
    let mut shipper = setup.spawn();
    assert!(wait_count(&ch, 2000), "{}", shipper.log_text());
    let filler = cp_dir.join("filler");
    let break_disk = || {
        if mounted {
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 4096];
            while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        } else {
            std::fs::rename(&cp_dir, dir.path().join("state.away")).unwrap();
            std::fs::write(&cp_dir, b"not a directory").unwrap();
        }
    };
    let fix_disk = || {
        if mounted {
            std::fs::remove_file(&filler).unwrap();
        } else {
            std::fs::remove_file(&cp_dir).unwrap();
            std::fs::rename(dir.path().join("state.away"), &cp_dir).unwrap();
        }
    };
    break_disk();
    append_lines(&log, 2000, 4000);
    assert!(
        wait_for(Duration::from_secs(20), || shipper
            .metric("checkpoint_errors_total")
            .unwrap_or(0)
            >= 3),
        "{}",
        shipper.log_text()
    );
    let log_text = shipper.log_text();
    assert!(log_text.contains("checkpoint"), "{log_text}");
    // Killed while the disk is full, restarted: still nothing twice.
    shipper.kill9();
    let during = ch.count_and_unique();
    assert_eq!(during.0, during.1);
    let shipper = setup.spawn();
    std::thread::sleep(Duration::from_millis(500));
    fix_disk();
    assert!(wait_count(&ch, 4000), "{}", shipper.log_text());
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(ch.count_and_unique(), (4000, 4000));
    eprintln!(
        "full disk: {} via {}",
        during.0,
        if mounted { "tmpfs ENOSPC" } else { "ENOTDIR" }
    );
}

#[test]
fn malformed_lines_go_to_the_dead_letter_file_and_never_block() {
    let Fixture {
        ch,
        dir: _dir,
        log,
        setup,
    } = fixture(false, "");
    append_lines(&log, 0, 100);
    append(
        &log,
        b"this is not json\n[1,2,3]\n{\"unterminated\":\n\xff\xfe binary\n",
    );
    append_lines(&log, 100, 200);
    let shipper = setup.spawn();
    assert!(wait_count(&ch, 200), "{}", shipper.log_text());
    assert!(wait_for(Duration::from_secs(5), || shipper
        .metric("dead_letters_total")
        == Some(4)));
    assert_eq!(ch.count_and_unique(), (200, 200));
    let dl = std::fs::read_to_string(&setup.dead_letters).unwrap();
    let lines: Vec<serde_json::Value> = dl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["line"], "this is not json");
    assert_eq!(lines[1]["line"], "[1,2,3]");
    assert!(lines[0]["batch_id"].as_str().unwrap().contains(':'));
    assert!(lines[0]["offset"].as_u64().unwrap() > 0);
}

#[test]
fn partial_last_line_is_held_back_until_completed() {
    let Fixture {
        ch,
        dir: _dir,
        log,
        setup,
    } = fixture(false, "");
    append_lines(&log, 0, 10);
    let last = correlated_line(10);
    let (head, tail) = last.split_at(last.len() / 2);
    append(&log, head.as_bytes());
    let shipper = setup.spawn();
    assert!(wait_count(&ch, 10), "{}", shipper.log_text());
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(ch.count_and_unique(), (10, 10));
    assert_eq!(shipper.metric("dead_letters_total"), Some(0));
    append(&log, format!("{tail}\n").as_bytes());
    assert!(wait_count(&ch, 11), "{}", shipper.log_text());
    // http_logs is written by the next view of the same INSERT: it may trail by a moment.
    assert!(wait_for(Duration::from_secs(5), || ch
        .query("SELECT count() FROM http_logs WHERE path = '/item/10'")
        == "1"));
    assert_eq!(ch.count_and_unique(), (11, 11));
}

/// `scripts/bench/ship_throughput.sh` (`make bench`): `cargo test -p reqin-shipper --release
/// --test clickhouse -- --ignored --nocapture catch_up` (`SHIP_BENCH_LINES`, default 1 000 000;
/// `SHIP_BENCH_CLICKHOUSE`: more `clickhouse:` keys for the shipper, e.g. `max_in_flight: 1`, to
/// compare designs; the default config when unset).
///
/// The shipper catching up a file of 1M correlated lines (~1 KB each, `request_id` per the
/// contract) against the server's best rate for the same schema measured in the same run: the
/// same kind of rows posted by this test straight into `ship_inbox` (no file, no checkpoint, no
/// checks), uncompressed, in `RowBinary` and in `JSONEachRow`, at 10 000 to 100 000 rows per
/// INSERT, one or two INSERTs at once; the best of that sweep is then run over as many rows as the shipper ships. Baseline
/// and shipper alternate twice, each on a fresh set of lines; the ratio is what to read.
#[test]
#[ignore = "benchmark: run explicitly, see BENCHMARKS.md (ClickHouse shipper throughput)"]
fn catch_up_1m_lines_against_the_servers_best_insert_rate() {
    let lines: u64 = std::env::var("SHIP_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    const SWEEP_ROWS: u64 = 200_000;
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("reqin.log");
    let extra: String = std::env::var("SHIP_BENCH_CLICKHOUSE")
        .map(|keys| {
            keys.split(';')
                .map(|k| format!("    {}\n", k.trim()))
                .collect()
        })
        .unwrap_or_default();
    let setup = ShipSetup::new(dir.path(), &ch, &log.display().to_string(), &extra);
    setup.init_schema();
    let loadavg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // Rows from the parts' metadata: on 18.16 `count()` reads the table's only column whole
    // (no trivial-count optimisation before 20.x): 1.3-2.4 s for 2M rows of 1 KB, which the
    // poll below would run back to back beside the shipper, and not beside the baseline.
    let count = || {
        ch.query(
            "SELECT sum(rows) FROM system.parts WHERE database = currentDatabase() \
             AND table = 'http_logs_raw' AND active",
        )
        .parse::<u64>()
        .unwrap()
    };
    // Lines of run `r`: never shipped before (identical content would be skipped by nobody, but
    // distinct request ids let the check below count them).
    let line = |r: u64, n: u64| fleet_line(&format!("bench{r}"), n);
    let rowbinary = |id: &str, r: u64, from: u64, to: u64| -> Vec<u8> {
        let mut out = Vec::new();
        let put = |out: &mut Vec<u8>, s: &[u8]| {
            let mut n = s.len() as u64;
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(s);
        };
        for n in from..to {
            put(&mut out, id.as_bytes());
            put(&mut out, line(r, n).as_bytes());
            out.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        out
    };
    let json_each_row = |id: &str, r: u64, from: u64, to: u64| -> Vec<u8> {
        let mut out = Vec::new();
        for n in from..to {
            let row =
                serde_json::json!({"batch_id": id, "deadline": u32::MAX, "raw_json": line(r, n)});
            out.extend_from_slice(row.to_string().as_bytes());
            out.push(b'\n');
        }
        out
    };
    // Bodies built first, then posted back to back by `parallel` clients at once (the shipper
    // has up to `max_in_flight` INSERTs running): the rate is the server's alone.
    let baseline = |run: u64, format: &str, batch: u64, rows: u64, parallel: usize| -> f64 {
        let bodies: Vec<Vec<u8>> = (0..rows.div_ceil(batch))
            .map(|b| {
                let (from, to) = (b * batch, ((b + 1) * batch).min(rows));
                let id = format!("baseline:{run}:{b}");
                match format {
                    "RowBinary" => rowbinary(&id, run, from, to),
                    _ => json_each_row(&id, run, from, to),
                }
            })
            .collect();
        let sql = format!("INSERT INTO ship_inbox (batch_id, raw_json, deadline) FORMAT {format}");
        let next = std::sync::atomic::AtomicUsize::new(0);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..parallel {
                s.spawn(|| {
                    while let Some(body) =
                        bodies.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        ch.insert_bytes(&sql, body);
                    }
                });
            }
        });
        rows as f64 / t0.elapsed().as_secs_f64()
    };
    // The merges of what the previous phase inserted, finished before the next is timed (the
    // phase that came second paid for the first's: up to half the shipper's rate at 1M rows).
    let settle = || {
        let t0 = Instant::now();
        let mut quiet = 0;
        while quiet < 4 && t0.elapsed() < Duration::from_secs(300) {
            if ch.query("SELECT count() FROM system.merges") == "0" {
                quiet += 1;
            } else {
                quiet = 0;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        t0.elapsed().as_secs_f64()
    };
    let mut run = 100;
    let mut best = (0.0, "", 0u64, 0usize);
    for parallel in [1, 2] {
        for format in ["RowBinary", "JSONEachRow"] {
            for batch in [10_000u64, 25_000, 50_000, 100_000] {
                run += 1;
                settle();
                let rate = baseline(run, format, batch, SWEEP_ROWS.min(lines), parallel);
                println!(
                    "sweep: {format} {batch} rows per INSERT, {parallel} at once: {rate:.0} rows/s"
                );
                if rate > best.0 {
                    best = (rate, format, batch, parallel);
                }
            }
        }
    }
    println!(
        "best: {} in {}-row INSERTs, {} at once",
        best.1, best.2, best.3
    );
    let mut expected = count();
    let mut ratios = Vec::new();
    for pair in 0..2u64 {
        run += 1;
        let merging = settle();
        let (srv0, t0) = (cpu_seconds(ch.pid_or_zero()), Instant::now());
        let base = baseline(run, best.1, best.2, lines, best.3);
        let base_server = (cpu_seconds(ch.pid_or_zero()) - srv0) / t0.elapsed().as_secs_f64();
        expected += lines;
        // The shipper: a clean stop first (no wait at the start), then the whole file at once.
        run += 1;
        let sub = dir.path().join(format!("pair{pair}"));
        std::fs::create_dir(&sub).unwrap();
        let log = sub.join("reqin.log");
        let setup = ShipSetup::new(&sub, &ch, &log.display().to_string(), &extra);
        let mut shipper = setup.spawn();
        assert!(wait_for(Duration::from_secs(30), || shipper
            .get("/health")
            .is_some()));
        shipper.stop();
        let mut out = Vec::with_capacity(lines as usize * 1100);
        for n in 0..lines {
            out.extend_from_slice(line(run, n).as_bytes());
            out.push(b'\n');
        }
        append(&log, &out);
        let bytes = out.len();
        drop(out);
        let merging = (merging, settle());
        let before = count();
        let mut shipper = setup.spawn();
        let (cpu0, srv0) = (cpu_seconds(shipper.pid()), cpu_seconds(ch.pid_or_zero()));
        let t0 = Instant::now();
        assert!(
            wait_for(Duration::from_secs(900), || count() >= before + lines),
            "{}",
            shipper.log_text()
        );
        let secs = t0.elapsed().as_secs_f64();
        let (cpu1, srv1) = (cpu_seconds(shipper.pid()), cpu_seconds(ch.pid_or_zero()));
        let rate = lines as f64 / secs;
        let m = |k: &str| {
            shipper
                .get("/metrics")
                .and_then(|(_, b)| {
                    b.lines().find_map(|l| {
                        l.strip_prefix(&format!("reqin_ship_{k} "))
                            .map(str::to_owned)
                    })
                })
                .unwrap_or_default()
        };
        println!(
            "pair {pair}: shipper {rate:.0} rows/s ({:.1} MB/s of log, {} lines of {:.0} B; {} batches, prepare {} s, insert {} s, checkpoint {} s; CPU shipper {:.2}, server {:.2} cores), baseline {base:.0} rows/s (server {base_server:.2} cores), ratio {:.2} (loadavg {}; merges settled for {:.0} s before the baseline, {:.0} s before the shipper)",
            bytes as f64 / secs / 1e6,
            lines,
            bytes as f64 / lines as f64,
            m("batches_shipped_total"),
            m("prepare_seconds_total"),
            m("insert_seconds_total"),
            m("checkpoint_seconds_total"),
            (cpu1 - cpu0) / secs,
            (srv1 - srv0) / secs,
            rate / base,
            loadavg().trim(),
            merging.0,
            merging.1
        );
        ratios.push(rate / base);
        shipper.stop();
        expected += lines;
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "shipper/best-baseline ratios: {ratios:.2?} (median of two: {:.2})",
        (ratios[0] + ratios[1]) / 2.0
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ch.query("SELECT count() FROM http_logs_raw"),
        expected.to_string()
    );
    // Every run's ids are its own: each line exactly once.
    assert_eq!(
        ch.query(
            "SELECT uniqExact(visitParamExtractString(raw_json, 'request_id')) FROM http_logs_raw"
        ),
        expected.to_string()
    );
}

#[test]
fn clean_stop_leaves_a_marker_so_the_next_start_does_not_wait_but_a_crash_does() {
    let Fixture {
        ch,
        dir: _dir,
        log,
        setup,
    } = fixture(false, "    timeout_ms: 1000\n");
    let marker = reqin_shipper::ship::marker_path(&setup.checkpoint);
    // A first run has no marker: it waits (~4 s with a 1 s timeout), ships, stops cleanly.
    append_lines(&log, 0, 10);
    let mut shipper = setup.spawn();
    assert!(wait_count(&ch, 10), "{}", shipper.log_text());
    shipper.stop();
    assert!(shipper.log_text().contains("no clean-stop marker"));
    let text = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(text, r#"{"uncertain":[],"pending":false}"#);
    // From now on a 30 s timeout: after a crash a start waits ~33 s for any insert the dead
    // process may have left in flight; after a clean stop it must not wait at all.
    let config = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        config.replace("timeout_ms: 1000", "timeout_ms: 30000"),
    )
    .unwrap();
    append_lines(&log, 10, 1010);
    let mut shipper = setup.spawn();
    // Well under the 33 s a wait would take.
    assert!(
        wait_for(Duration::from_secs(15), || ch.count_and_unique().0 == 1010),
        "{}",
        shipper.log_text()
    );
    assert!(!marker.exists(), "the marker must be gone while running");
    assert!(shipper
        .log_text()
        .contains("stopped cleanly: starting at once"));
    // kill -9: no marker; the next start waits for the dead process's possible insert.
    shipper.kill9();
    assert!(!marker.exists());
    append_lines(&log, 1010, 1110);
    let mut shipper = setup.spawn();
    assert!(wait_for(Duration::from_secs(10), || shipper
        .log_text()
        .matches("no clean-stop marker")
        .count()
        == 2));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        ch.count_and_unique(),
        (1010, 1010),
        "shipped during the wait after a crash"
    );
    // Stopped during that wait: the marker carries the deadline still owed, and the next start
    // waits for it (not for a new one of its own).
    shipper.stop();
    let owed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
    assert_eq!(owed["uncertain"].as_array().unwrap().len(), 1, "{owed}");
    assert_eq!(owed["uncertain"][0]["url"], ch.url());
    let shipper = setup.spawn();
    assert!(
        wait_for(Duration::from_secs(120), || ch.count_and_unique().0 == 1110),
        "{}",
        shipper.log_text()
    );
    assert!(shipper
        .log_text()
        .contains("insert(s) of unknown outcome: waiting for their deadlines"));
    assert_eq!(ch.count_and_unique(), (1110, 1110));
}

#[test]
fn restart_skips_every_recorded_range_past_the_checkpoint_and_sends_only_the_gaps() {
    // What pipelined inserts can leave after a crash, made certain: of the batches past the
    // checkpoint, some landed and some did not, in no particular order. Ten 500-line batches,
    // then the checkpoint is lost and two of them (the 3rd and the 8th) are taken out of
    // ClickHouse, rows and records.
    let Fixture {
        ch,
        dir: _dir,
        log,
        setup,
    } = fixture(
        false,
        "    batch_size: 500\n    max_batch_rows: 500\n    timeout_ms: 1000\n",
    );
    append_lines(&log, 0, 5000);
    let mut shipper = setup.spawn();
    assert!(wait_count(&ch, 5000), "{}", shipper.log_text());
    shipper.stop();
    let ids: Vec<String> = ch
        .query(
            "SELECT batch_id FROM ship_batches ORDER BY toUInt64(extract(batch_id, ':([0-9]+)-'))",
        )
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 10, "{ids:?}");
    for (k, first_line) in [(2usize, 1000u64), (7, 3500)] {
        let item = "toUInt64(extract(raw_json, '\"path\":\"/item/([0-9]+)\"'))";
        let range = format!("BETWEEN {first_line} AND {}", first_line + 499);
        for table in ["http_logs_raw", "http_logs"] {
            ch.query(&format!("ALTER TABLE {table} DELETE WHERE {item} {range}"));
        }
        ch.query(&format!(
            "ALTER TABLE ship_batches DELETE WHERE batch_id = '{}'",
            ids[k]
        ));
    }
    assert!(wait_for(Duration::from_secs(30), || ch
        .count_and_unique()
        .0
        == 4000
        && ch.query("SELECT count() FROM ship_batches") == "8"));
    std::fs::remove_file(&setup.checkpoint).unwrap();
    let shipper = setup.spawn();
    assert!(wait_count(&ch, 5000), "{}", shipper.log_text());
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(ch.count_and_unique(), (5000, 5000));
    assert_eq!(ch.query("SELECT count() FROM http_logs"), "5000");
    assert_eq!(shipper.metric("rows_shipped_total"), Some(1000));
    assert_eq!(
        shipper.metric("batches_already_in_clickhouse_total"),
        Some(8)
    );
}

#[test]
fn events_files_are_shipped_into_reqin_events_exactly_once_across_a_clickhouse_restart() {
    const EVENTS: u64 = 20_000;
    let ch = ClickHouse::start();
    let mut ch = ch;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("reqin.log");
    let events = dir.path().join("events.jsonl");
    let setup = ShipSetup::full(
        dir.path(),
        &ch.url(),
        &log.display().to_string(),
        "    timeout_ms: 1000\n",
        &format!(
            "  events:\n    path: {:?}\n    checkpoint_path: {:?}\n",
            format!("{}*", events.display()),
            dir.path()
                .join("ship-events.checkpoint")
                .display()
                .to_string()
        ),
        &dir.path().join("ship.checkpoint"),
    );
    setup.init_schema();
    append_lines(&log, 0, 3000);
    let write_events = |from: u64, to: u64| {
        let mut out = String::new();
        for n in from..to {
            out.push_str(&event_line(n));
            out.push('\n');
        }
        append(&events, out.as_bytes());
    };
    write_events(0, EVENTS / 2);
    let shipper = setup.spawn();
    let events_in = |ch: &ClickHouse| -> (u64, u64) {
        let r = ch.query("SELECT count(), uniqExact(event_id) FROM reqin_events");
        let (a, b) = r.split_once('\t').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    assert!(
        wait_for(CATCH_UP, || events_in(&ch).0 >= EVENTS / 4),
        "{}",
        shipper.log_text()
    );
    // Stopped (its own shutdown) and started again while events keep coming.
    ch.stop();
    write_events(EVENTS / 2, EVENTS);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(shipper.metric("clickhouse_up"), Some(0));
    ch.restart();
    assert!(
        wait_for(CATCH_UP, || events_in(&ch).0 >= EVENTS),
        "{}",
        shipper.log_text()
    );
    assert!(wait_count(&ch, 3000), "{}", shipper.log_text());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(events_in(&ch), (EVENTS, EVENTS), "{}", shipper.log_text());
    assert_eq!(ch.count_and_unique(), (3000, 3000));
    assert_eq!(shipper.metric("event_rows_shipped_total"), Some(EVENTS));
    // The columns of one event, against the line it came from: top-level keys, not the same
    // keys inside `data`; the two objects as JSON text.
    let line: serde_json::Value = serde_json::from_str(&event_line(77)).unwrap();
    let row = ch.query(
        "SELECT event_time, time_ns, severity, kind, type, module, rule, summary, \
         parent_correlation_id, root_correlation_id, src_ip, ja4, host, data, correlation_tags, raw_json \
         FROM reqin_events WHERE event_id = 'ev-00000077' FORMAT JSONEachRow",
    );
    let row: serde_json::Value = serde_json::from_str(&row).unwrap();
    assert_eq!(row["event_time"], "2025-11-29 15:01:17");
    assert_eq!(
        row["time_ns"],
        line["time_ns"].as_u64().unwrap().to_string()
    );
    for k in [
        "severity",
        "kind",
        "type",
        "module",
        "rule",
        "summary",
        "parent_correlation_id",
        "root_correlation_id",
        "src_ip",
        "ja4",
        "host",
    ] {
        assert_eq!(row[k], line[k], "{k}");
    }
    for k in ["data", "correlation_tags"] {
        let text: serde_json::Value = serde_json::from_str(row[k].as_str().unwrap()).unwrap();
        assert_eq!(text, line[k], "{k}");
    }
    assert_eq!(row["raw_json"], event_line(77));
}

#[test]
fn retention_deletes_old_batch_records_but_keeps_the_newest_of_every_file() {
    let Fixture {
        ch,
        dir: _dir,
        log,
        setup,
    } = fixture(false, "    batch_retention_days: 30\n");
    // Records of two old files (40 days): `keep` + 44 of one, 10 of another; and recent ones.
    let keep = reqin_shipper::ch::RETENTION_KEEP_PER_FILE as u64;
    let old = keep + 44;
    let mut values = Vec::new();
    for i in 0..old {
        values.push(format!(
            "('aaaa:{}-{}', 1, now() - 86400 * 40)",
            i * 10,
            i * 10 + 10
        ));
    }
    for i in 0..10u64 {
        values.push(format!(
            "('bbbb:{}-{}', 1, now() - 86400 * 40)",
            i * 10,
            i * 10 + 10
        ));
    }
    for i in 0..5u64 {
        values.push(format!(
            "('cccc:{}-{}', 1, now() - 86400 * 2)",
            i * 10,
            i * 10 + 10
        ));
    }
    ch.query(&format!(
        "INSERT INTO ship_batches (batch_id, rows, inserted_at) VALUES {}",
        values.join(",")
    ));
    append_lines(&log, 0, 100);
    let shipper = setup.spawn();
    assert!(wait_count(&ch, 100), "{}", shipper.log_text());
    let counts = || {
        ch.query(
            "SELECT countIf(batch_id LIKE 'aaaa:%'), countIf(batch_id LIKE 'bbbb:%'), \
             countIf(batch_id LIKE 'cccc:%'), min(if(batch_id LIKE 'aaaa:%', \
             toUInt64(extract(batch_id, ':([0-9]+)-')), 999999)) FROM ship_batches",
        )
    };
    // The newest `keep` of aaaa (by end offset) stay: starts from (old - keep) * 10.
    let expected = format!("{keep}\t10\t5\t{}", (old - keep) * 10);
    assert!(
        wait_for(Duration::from_secs(30), || counts() == expected),
        "{} vs {expected}\n{}",
        counts(),
        shipper.log_text()
    );
    assert_eq!(shipper.metric("retention_runs_total"), Some(1));
    // The shipper's own record is recent: untouched (the batch-id view writes it last within the
    // INSERT, a moment after the rows).
    let own = "SELECT sum(rows) FROM ship_batches WHERE batch_id NOT LIKE 'aaaa:%' \
               AND batch_id NOT LIKE 'bbbb:%' AND batch_id NOT LIKE 'cccc:%'";
    assert!(wait_for(Duration::from_secs(10), || ch.query(own) == "100"));
}

/// The soak's "ClickHouse stopped 30 s" fault, three times while the shipper works through a
/// backlog: a clean stop (SIGTERM) of the server must neither lose nor double a line. (The soak
/// once doubled a 500-row batch there, and the fleet test a 1000-row one, while the shipper kept
/// a keep-alive connection busy through the server's shutdown; see `Ch::connect_to`.)
#[test]
fn clickhouse_stopped_cleanly_while_the_shipper_is_behind_doubles_and_loses_nothing() {
    const N: u64 = 60_000;
    let Fixture {
        mut ch,
        dir: _dir,
        log,
        setup,
    } = fixture(false, "    max_batch_rows: 2000\n");
    append_lines(&log, 0, N);
    let shipper = setup.spawn();
    for round in 1..=3 {
        let target = round * N / 5;
        assert!(
            wait_for(CATCH_UP, || ch.count_and_unique().0 >= target),
            "{}",
            shipper.log_text()
        );
        ch.stop();
        std::thread::sleep(Duration::from_secs(2));
        ch.restart();
    }
    assert!(wait_count(&ch, N), "{}", shipper.log_text());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ch.count_and_unique(), (N, N), "{}", shipper.log_text());
}
