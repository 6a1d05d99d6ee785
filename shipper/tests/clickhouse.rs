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
    assert!(
        first.contains("7 migration(s) applied, 0 already there"),
        "{first}"
    );
    let second = setup.init_schema();
    assert!(
        second.contains("0 migration(s) applied, 7 already there"),
        "{second}"
    );
    assert_eq!(
        ch.query("SELECT count(), uniqExact(name), any(variant) FROM ship_migrations"),
        "7\t7\tlegacy"
    );
    // Tables made by hand from the seed before the first init: the statement finds them and the
    // migration is recorded anyway.
    ch.query("DROP TABLE ship_migrations");
    let third = setup.init_schema();
    assert!(third.contains("7 migration(s) applied"), "{third}");
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
    // 1000-line batches: 100 batches, so the suite stays short on a shared 2-core machine.
    let Fixture {
        ch,
        dir: _dir,
        log,
        setup,
    } = fixture(false, "    batch_size: 1000\n    timeout_ms: 1000\n");
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
    assert!(wait_for(Duration::from_secs(20), || shipper
        .metric("batches_already_in_clickhouse_total")
        .unwrap_or(0)
        >= 6));
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
    } = fixture(false, "    timeout_ms: 1000\n");
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
    // batch is then sent again (at most one duplicated batch per server crash; see README).
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
        count - unique <= 500,
        "more than one batch twice: {count} rows, {unique} unique"
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

/// `cargo test -p reqin-shipper --release --test clickhouse -- --ignored --nocapture throughput`
///
/// Alternates the shipper (default config, 500-line batches) with a baseline on the same server:
/// the same kind of lines posted straight into `ship_inbox` in 500-line INSERTs by this test (no
/// files, no checkpoint, no checks), i.e. what the server and its views allow. Pairs run back to
/// back so that both sides see the same machine load; the ratio is what to read.
#[test]
#[ignore = "benchmark: run explicitly, see BENCHMARKS.md (ClickHouse shipper throughput)"]
fn throughput_rows_per_second_into_clickhouse() {
    const LINES: u64 = 100_000;
    const PAIRS: u64 = 3;
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let loadavg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut ratios = Vec::new();
    for pair in 0..PAIRS {
        // Shipper: a new file of lines never shipped (identical content would be skipped).
        let sub = dir.path().join(format!("pair{pair}"));
        std::fs::create_dir(&sub).unwrap();
        let log = sub.join("reqin.log");
        let setup = ShipSetup::new(&sub, &ch, &log.display().to_string(), "");
        setup.init_schema();
        let first = pair * 10_000_000;
        append_lines(&log, first, first + LINES);
        let before = ch.count_and_unique().0;
        let t0 = Instant::now();
        let mut shipper = setup.spawn();
        // count() only: uniqExact every 50 ms would load the server we are measuring.
        let count = || {
            ch.query("SELECT count() FROM http_logs_raw")
                .parse::<u64>()
                .unwrap()
        };
        // Steady state, from the first batch landed to the last: a start first waits out the
        // deadline a killed predecessor's insert could have (timeout + 3 s), reported apart.
        assert!(
            wait_for(Duration::from_secs(60), || count() > before),
            "{}",
            shipper.log_text()
        );
        let startup = t0.elapsed().as_secs_f64();
        let (t1, c1) = (Instant::now(), count());
        assert!(
            wait_for(Duration::from_secs(300), || count() >= before + LINES),
            "{}",
            shipper.log_text()
        );
        let shipper_rate = (before + LINES - c1) as f64 / t1.elapsed().as_secs_f64();
        shipper.stop();
        // Baseline: the same number of rows, 500 per INSERT, straight into ship_inbox.
        let first = first + 5_000_000;
        let batches: Vec<String> = (0..LINES / 500)
            .map(|b| {
                (first + b * 500..first + b * 500 + 500)
                    .map(|n| {
                        let row = serde_json::json!({
                            "batch_id": format!("baseline:{pair}:{b}"),
                            "deadline": u32::MAX,
                            "raw_json": correlated_line(n),
                        });
                        format!("{row}\n")
                    })
                    .collect()
            })
            .collect();
        let t0 = Instant::now();
        for body in &batches {
            ch.insert(
                "INSERT INTO ship_inbox (batch_id, raw_json, deadline) FORMAT JSONEachRow",
                body,
            );
        }
        let baseline_rate = LINES as f64 / t0.elapsed().as_secs_f64();
        ratios.push(shipper_rate / baseline_rate);
        println!(
            "pair {pair}: shipper {shipper_rate:.0} rows/s (first batch after {startup:.1} s), baseline {baseline_rate:.0} rows/s, ratio {:.2} (loadavg {})",
            shipper_rate / baseline_rate,
            loadavg().trim()
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median shipper/baseline ratio: {:.2}",
        ratios[ratios.len() / 2]
    );
    let total = 2 * PAIRS * LINES;
    assert_eq!(ch.count_and_unique(), (total, total));
}
