//! A generated multi-file log as mod_reqin_log writes it (CONTRACTS.md's line: `conn_id`,
//! `request_id`, `sequence_number`, `stream_id`, `tag_*`, `a_timestamp`/`b_timestamp`, ...),
//! rotated like logrotate leaves it (`reqin.log.4.gz` ... `reqin.log.1`, `reqin.log`), with the
//! detector's event files beside it, and hostile lines at known places. Field names come from
//! correlate-lib. Deterministic for a seed. Shared by the tests and `examples/gen_log.rs` (the
//! benchmark's 1 GB log).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use correlate_lib::fields;
use serde_json::{json, Map, Value};

/// The investigation of the tests: one client's requests carry this tag (most of them: a
/// `ReqinLogTag ... expr` may tag only some).
pub const TAG_KEY: &str = "investigation_id";
pub const TAG_VALUE: &str = "INC-12345";
/// The suspect client.
pub const SUSPECT_IP: &str = "203.0.113.66";
/// A client of a dual-stack listener, logged in its IPv4-mapped form.
pub const MAPPED_IP: &str = "::ffff:198.51.100.200";

/// (ja4, client, User-Agent, TTL, OS)
pub const CLIENTS: &[(&str, &str, &str, u64, &str)] = &[
    (
        "t13d1516h2_8daaf6152771_02713d6af862",
        "chromium",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        128,
        "Windows NT kernel",
    ),
    (
        "t13d1715h2_5b57614c22b0_3d5424432f57",
        "firefox",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        64,
        "Linux 3.11 and newer",
    ),
    (
        "t13d3112h1_e8f1e7e78f70_6bebaf5329ac",
        "curl",
        "curl/8.5.0",
        64,
        "Linux 3.11 and newer",
    ),
    (
        "t13d091000_f91f431d341e_78e6aca7449b",
        "python-requests",
        "python-requests/2.31.0",
        63,
        "Linux 2.2.x-3.x",
    ),
    (
        "t13d2014h2_a09f3c656075_14788d8d241b",
        "safari",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
        64,
        "Mac OS X",
    ),
];
const CHROME_UA: &str = CLIENTS[0].2;

/// xorshift64*: small, deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub connections: usize,
    /// Requests per connection at most (1..=max).
    pub max_requests: u64,
    /// First request time, Unix ns.
    pub start_ns: i64,
    /// Mean time between connections, ns.
    pub spacing_ns: i64,
    /// Rotated files before the live one (the oldest `gzip` of them compressed).
    pub rotations: usize,
    pub gzip: usize,
    pub hostile: bool,
    /// Percent of connections from the suspect client.
    pub suspect_percent: u64,
    /// Some clients on IPv6 and one as an IPv4-mapped IPv6 address.
    pub ipv6: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 0x5eed_0004,
            connections: 600,
            max_requests: 6,
            start_ns: 1_795_592_400_000_000_000, // 2026-11-25T07:40:00Z
            spacing_ns: 2_000_000_000,
            rotations: 4,
            gzip: 2,
            hostile: true,
            suspect_percent: 4,
            ipv6: true,
        }
    }
}

/// What was generated, and the hostile lines by kind (each holds the tag value).
#[derive(Debug, Default)]
pub struct Generated {
    /// Oldest first, as their modification times say.
    pub logs: Vec<PathBuf>,
    pub events: Vec<PathBuf>,
    pub lines: u64,
    pub event_lines: u64,
    /// Hostile lines holding the tag value, by the reason they must be skipped.
    pub hostile_invalid_json: u64,
    pub hostile_invalid_utf8: u64,
    pub hostile_truncated: u64,
    pub hostile_not_object: u64,
    pub hostile_overlong: u64,
    /// Files whose last line has no `\n`.
    pub partial_last_lines: u64,
    /// A conn_id of the suspect with several requests.
    pub suspect_conn: Option<String>,
    /// An HTTP/2 conn_id.
    pub h2_conn: Option<String>,
}

struct Conn {
    id: String,
    ip: String,
    /// The client behind a trusted proxy (mod_remoteip): `useragent_ip`.
    behind: Option<String>,
    port: u16,
    client: usize,
    /// The User-Agent sent (a bot claims Chrome over a curl handshake).
    ua: &'static str,
    correlated: bool,
    h2: bool,
    suspect: bool,
    hello_ns: i64,
}

fn conn_id(rng: &mut Rng, n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let prefix: String = (0..16)
        .map(|_| ALPHABET[rng.below(64) as usize] as char)
        .collect();
    format!("{prefix}-{n:x}")
}

fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// One request's line. `tagged`: carries the investigation tag.
fn line(
    c: &Conn,
    seq: u64,
    t_ns: i64,
    rng: &mut Rng,
    tagged: bool,
    pad: usize,
) -> Map<String, Value> {
    let time = rfc3339(t_ns);
    let (ja4, client, _, ttl, os) = CLIENTS[c.client];
    let mut m = Map::new();
    m.insert(fields::TIME.into(), time.clone().into());
    m.insert(fields::TIMESTAMP.into(), time.into());
    m.insert(fields::SRC_IP.into(), c.ip.clone().into());
    m.insert(fields::SRC_PORT.into(), c.port.into());
    if let Some(b) = &c.behind {
        m.insert(fields::USERAGENT_IP.into(), b.clone().into());
    }
    m.insert(fields::DST_IP.into(), "192.0.2.1".into());
    m.insert(fields::DST_PORT.into(), 443.into());
    m.insert(fields::CORRELATED.into(), c.correlated.into());
    m.insert(fields::KEEPALIVES.into(), seq.into());
    m.insert(fields::SEQUENCE_NUMBER.into(), seq.into());
    m.insert(fields::CONN_ID.into(), c.id.clone().into());
    m.insert(fields::REQUEST_ID.into(), format!("{}-{seq}", c.id).into());
    m.insert(
        fields::METHOD.into(),
        if seq.is_multiple_of(5) { "POST" } else { "GET" }.into(),
    );
    m.insert(fields::SCHEME.into(), "https".into());
    m.insert(fields::HOST.into(), "shop.example".into());
    m.insert(
        fields::PATH.into(),
        format!("/item/{}", rng.below(5000)).into(),
    );
    m.insert(
        fields::QUERY.into(),
        if seq.is_multiple_of(3) { "page=2" } else { "" }.into(),
    );
    m.insert(
        fields::HTTP_VERSION.into(),
        if c.h2 { "HTTP/2.0" } else { "HTTP/1.1" }.into(),
    );
    if c.h2 {
        m.insert(fields::STREAM_ID.into(), (2 * seq - 1).into());
    }
    let status = [200u64, 200, 200, 304, 404, 403][rng.below(6) as usize];
    m.insert(fields::STATUS.into(), status.into());
    m.insert(fields::BYTES_SENT.into(), (300 + rng.below(40_000)).into());
    m.insert(fields::DURATION_US.into(), (200 + rng.below(90_000)).into());
    m.insert(format!("{}User-Agent", fields::HEADER_PREFIX), c.ua.into());
    m.insert(
        format!("{}Accept", fields::HEADER_PREFIX),
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
            .into(),
    );
    m.insert(
        format!("{}Accept-Language", fields::HEADER_PREFIX),
        "en-US,en;q=0.9,fr;q=0.8".into(),
    );
    m.insert(
        format!("{}Accept-Encoding", fields::HEADER_PREFIX),
        "gzip, deflate, br".into(),
    );
    if pad > 0 {
        m.insert(
            format!("{}Referer", fields::HEADER_PREFIX),
            format!("https://shop.example/search?q={}", "x".repeat(pad)).into(),
        );
    }
    m.insert(
        format!("{}{}", fields::PREFIX_A, fields::TIMESTAMP),
        t_ns.into(),
    );
    if tagged {
        m.insert(format!("{}{TAG_KEY}", fields::TAG_PREFIX), TAG_VALUE.into());
        m.insert(format!("{}analyst", fields::TAG_PREFIX), "alice".into());
    }
    if c.correlated {
        m.insert(fields::FINGERPRINT_SOURCE.into(), "sensor".into());
        m.insert(
            format!("{}{}", fields::PREFIX_B, fields::TIMESTAMP),
            c.hello_ns.into(),
        );
        m.insert(fields::IP_META_TTL.into(), ttl.into());
        m.insert(fields::IP_META_TOTAL_LENGTH.into(), 60.into());
        m.insert(fields::IP_META_ID.into(), 4242.into());
        m.insert(fields::IP_META_DF.into(), true.into());
        m.insert(fields::TCP_META_WINDOW_SIZE.into(), 64240.into());
        m.insert(fields::TCP_META_MSS.into(), 1460.into());
        m.insert(fields::TCP_META_WINDOW_SCALE.into(), 7.into());
        m.insert(
            fields::TCP_META_OPTIONS.into(),
            "MSS,SACK,Timestamps,NOP,WScale".into(),
        );
        m.insert(fields::TCP_OS.into(), os.into());
        m.insert(fields::TCP_OS_DISTANCE.into(), 0.into());
        m.insert(fields::SENSOR_ID.into(), "web-1".into());
        m.insert(fields::TLS_VERSION.into(), "1.3".into());
        m.insert(fields::TLS_SNI.into(), "shop.example".into());
        m.insert(
            fields::TLS_ALPN.into(),
            if c.h2 { "h2" } else { "http/1.1" }.into(),
        );
        m.insert(fields::SYN_TO_CLIENTHELLO_MS.into(), 12.into());
        m.insert(fields::JA4.into(), ja4.into());
        m.insert(fields::JA4_R.into(), "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601".into());
        m.insert(fields::JA3.into(), "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,0-23-65281-10-11-35-16-5-13-18-51-45-43-27-17513-21,29-23-24,0".into());
        m.insert(
            fields::JA3_HASH.into(),
            "cd08e31494f9531f560d64c695473da9".into(),
        );
        m.insert(fields::JA4_CLIENT.into(), client.into());
    } else {
        m.insert(fields::ORPHAN_SIDE.into(), "A".into());
        m.insert(
            fields::ORPHAN_REASON.into(),
            if c.port.is_multiple_of(2) {
                "not_in_ring"
            } else {
                "sensor_down"
            }
            .into(),
        );
    }
    m
}

fn event(kind: (&str, &str, &str, &str), line: &Map<String, Value>, n: u64) -> Map<String, Value> {
    let (ty, module, rule, severity) = kind;
    let t_ns = line[&format!("{}{}", fields::PREFIX_A, fields::TIMESTAMP)]
        .as_i64()
        .unwrap();
    let mut tags = Map::new();
    for (k, v) in line {
        if let Some(t) = k.strip_prefix(fields::TAG_PREFIX) {
            tags.insert(t.into(), v.clone());
        }
    }
    let mut e = Map::new();
    e.insert(fields::EVENT_TIME.into(), rfc3339(t_ns).into());
    e.insert(fields::EVENT_TIME_NS.into(), t_ns.into());
    e.insert(
        fields::EVENT_EMITTED.into(),
        rfc3339(t_ns + 3_000_000).into(),
    );
    e.insert(fields::EVENT_ID.into(), format!("ev-{n:08x}").into());
    e.insert(fields::EVENT_SEVERITY.into(), severity.into());
    e.insert(fields::EVENT_KIND.into(), "event".into());
    e.insert(fields::EVENT_TYPE.into(), ty.into());
    e.insert(fields::EVENT_MODULE.into(), module.into());
    e.insert(fields::EVENT_RULE.into(), rule.into());
    e.insert(
        fields::EVENT_SUMMARY.into(),
        format!("{ty} for {}", line[fields::SRC_IP].as_str().unwrap()).into(),
    );
    e.insert(
        fields::EVENT_DATA.into(),
        json!({"score": n % 7, "note": "generated"}),
    );
    e.insert(
        fields::PARENT_CORRELATION_ID.into(),
        line[fields::REQUEST_ID].clone(),
    );
    e.insert(
        fields::ROOT_CORRELATION_ID.into(),
        line[fields::CONN_ID].clone(),
    );
    e.insert(fields::CORRELATION_TAGS.into(), Value::Object(tags));
    e.insert(fields::SRC_IP.into(), line[fields::SRC_IP].clone());
    if let Some(j) = line.get(fields::JA4) {
        e.insert(fields::JA4.into(), j.clone());
    }
    e.insert(fields::HOST.into(), line[fields::HOST].clone());
    e
}

fn stats_event(t_ns: i64, n: u64) -> Map<String, Value> {
    let mut e = Map::new();
    e.insert(fields::EVENT_TIME.into(), rfc3339(t_ns).into());
    e.insert(fields::EVENT_TIME_NS.into(), t_ns.into());
    e.insert(fields::EVENT_EMITTED.into(), rfc3339(t_ns).into());
    e.insert(fields::EVENT_ID.into(), format!("stats-{n:08x}").into());
    e.insert(fields::EVENT_SEVERITY.into(), "notice".into());
    e.insert(fields::EVENT_KIND.into(), "event".into());
    e.insert(fields::EVENT_TYPE.into(), "ModuleStats".into());
    e.insert(fields::EVENT_MODULE.into(), "stats".into());
    e.insert(fields::EVENT_RULE.into(), "".into());
    e.insert(fields::EVENT_SUMMARY.into(), "lines seen".into());
    e.insert(fields::EVENT_DATA.into(), json!({"lines": n}));
    e
}

/// A file being written: plain or gzip.
enum Out {
    Plain(BufWriter<File>),
    Gz(flate2::write::GzEncoder<BufWriter<File>>),
}

impl Write for Out {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::Plain(w) => w.write(b),
            Out::Gz(w) => w.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Plain(w) => w.flush(),
            Out::Gz(w) => w.flush(),
        }
    }
}

impl Out {
    fn create(path: &Path, gz: bool) -> Self {
        let f = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
        if gz {
            Out::Gz(flate2::write::GzEncoder::new(
                f,
                flate2::Compression::fast(),
            ))
        } else {
            Out::Plain(f)
        }
    }
    fn finish(self) {
        match self {
            Out::Plain(mut w) => w.flush().unwrap(),
            Out::Gz(w) => {
                w.finish().unwrap().flush().unwrap();
            }
        }
    }
}

/// The k-th of `n` files, oldest first: `reqin.log.{n-1}[.gz]` ... `reqin.log.1`, `reqin.log`.
fn file_name(base: &str, k: usize, n: usize, gzip: usize) -> (String, bool) {
    let age = n - 1 - k;
    if age == 0 {
        (base.to_owned(), false)
    } else if k < gzip {
        (format!("{base}.{age}.gz"), true)
    } else {
        (format!("{base}.{age}"), false)
    }
}

/// Generates the log and events under `dir`.
pub fn generate(dir: &Path, cfg: &Config) -> Generated {
    generate_padded(dir, cfg, 0)
}

/// The same, with a `Referer` header of about `pad` bytes on every line (the benchmark's 1 KB
/// lines).
pub fn generate_padded(dir: &Path, cfg: &Config, pad: usize) -> Generated {
    let mut rng = Rng(cfg.seed | 1);
    let mut g = Generated::default();
    // Requests: (completion time, conn index, seq, start time), written in completion order.
    let mut conns: Vec<Conn> = Vec::with_capacity(cfg.connections);
    let mut reqs: Vec<(i64, u32, u32, i64)> = Vec::new();
    let mut t = cfg.start_ns;
    for i in 0..cfg.connections {
        t += 1 + rng.below(2 * cfg.spacing_ns as u64) as i64;
        // The first connection is the suspect's: its tagged lines come early in every file.
        let suspect = i == 0 || rng.chance(cfg.suspect_percent);
        let (ip, client, ua) = if suspect {
            // The suspect is a curl bot claiming Chrome.
            (SUSPECT_IP.to_owned(), 2, CHROME_UA)
        } else {
            let c = rng.below(CLIENTS.len() as u64) as usize;
            let ip = match rng.below(40) {
                0 if cfg.ipv6 => MAPPED_IP.to_owned(),
                1..=4 if cfg.ipv6 => format!("2001:db8::{:x}", 1 + rng.below(20)),
                n if n < 20 => format!("198.51.100.{}", 1 + rng.below(150)),
                _ => format!("203.0.113.{}", 1 + rng.below(60)),
            };
            // A few python clients claim Chrome too.
            let ua = if c == 3 && rng.chance(30) {
                CHROME_UA
            } else {
                CLIENTS[c].2
            };
            (ip, c, ua)
        };
        // Some clients come through the trusted proxy 10.0.0.5.
        let (ip, behind) = if !suspect && rng.chance(5) {
            ("10.0.0.5".to_owned(), Some(ip))
        } else {
            (ip, None)
        };
        let c = Conn {
            id: conn_id(&mut rng, i),
            ip,
            behind,
            port: 1024 + rng.below(60_000) as u16,
            client,
            ua,
            correlated: !rng.chance(15),
            h2: rng.chance(30),
            suspect,
            hello_ns: t - 2_000_000 - rng.below(5_000_000) as i64,
        };
        let n = if suspect && g.suspect_conn.is_none() {
            cfg.max_requests.max(3)
        } else {
            1 + rng.below(cfg.max_requests)
        };
        let mut rt = t;
        for seq in 1..=n {
            let done = rt + 200_000 + rng.below(90_000_000) as i64;
            reqs.push((done, i as u32, seq as u32, rt));
            rt += if c.h2 {
                rng.below(3_000_000) as i64
            } else {
                1_000_000 + rng.below(4_000_000_000) as i64
            };
        }
        if suspect && n >= 3 && g.suspect_conn.is_none() {
            g.suspect_conn = Some(c.id.clone());
        }
        if c.h2 && n >= 3 && g.h2_conn.is_none() {
            g.h2_conn = Some(c.id.clone());
        }
        conns.push(c);
    }
    reqs.sort_unstable();
    let files = cfg.rotations + 1;
    let per_file = reqs.len().div_ceil(files);
    let mut n_events = 0u64;
    let mut last_line = String::new();
    for k in 0..files {
        let (name, gz) = file_name("reqin.log", k, files, cfg.gzip);
        let (ev_name, ev_gz) = file_name("events.jsonl", k, files, cfg.gzip.min(1));
        let path = dir.join(&name);
        let ev_path = dir.join(&ev_name);
        let mut out = Out::create(&path, gz);
        let mut ev = Out::create(&ev_path, ev_gz);
        let chunk = reqs.iter().skip(k * per_file).take(per_file);
        let mut last_done = cfg.start_ns;
        for (i, (done, ci, seq, start)) in chunk.enumerate() {
            last_done = *done;
            let c = &conns[*ci as usize];
            // The suspect is tagged on all but every 4th request (an `expr` that misses some).
            let tagged = c.suspect && seq % 4 != 0;
            let m = line(c, u64::from(*seq), *start, &mut rng, tagged, pad);
            let text = serde_json::to_string(&m).unwrap();
            out.write_all(text.as_bytes()).unwrap();
            out.write_all(b"\n").unwrap();
            g.lines += 1;
            let mismatch = c.ua == CHROME_UA && c.client != 0 && c.correlated;
            if mismatch {
                n_events += 1;
                let e = event(
                    (
                        "FingerprintMismatch",
                        "fingerprint_mismatch",
                        "ua_vs_ja4",
                        "warning",
                    ),
                    &m,
                    n_events,
                );
                writeln!(ev, "{}", serde_json::to_string(&e).unwrap()).unwrap();
                g.event_lines += 1;
            }
            if c.suspect && *seq == 2 {
                // An event about a request whose line is not in the logs (lost with a broken
                // file): it stands at its own time, between the connection's requests.
                n_events += 1;
                let mut lost = m.clone();
                lost.insert(fields::REQUEST_ID.into(), format!("{}-lost", c.id).into());
                let key = format!("{}{}", fields::PREFIX_A, fields::TIMESTAMP);
                lost.insert(key, (start + 1_000).into());
                let e = event(
                    ("NewFingerprint", "new_fingerprint", "first_seen", "notice"),
                    &lost,
                    n_events,
                );
                writeln!(ev, "{}", serde_json::to_string(&e).unwrap()).unwrap();
                g.event_lines += 1;
            }
            if c.suspect && seq % 3 == 0 {
                n_events += 1;
                let e = event(
                    ("ThresholdExceeded", "threshold", "burst_per_ip", "notice"),
                    &m,
                    n_events,
                );
                writeln!(ev, "{}", serde_json::to_string(&e).unwrap()).unwrap();
                g.event_lines += 1;
            }
            if i % 500 == 499 {
                n_events += 1;
                let e = stats_event(*start, n_events);
                writeln!(ev, "{}", serde_json::to_string(&e).unwrap()).unwrap();
                g.event_lines += 1;
            }
            if tagged {
                last_line = text;
            }
            if cfg.hostile && i == per_file / 2 && !last_line.is_empty() {
                hostile(&mut out, &mut ev, &last_line, k, files, &mut g);
            }
        }
        if cfg.hostile && k == files - 1 {
            // The live file: a line still being written.
            let partial = format!(
                "{{\"time\":\"{}\",\"tag_{TAG_KEY}\":\"{TAG_VALUE}\",\"src_ip\":\"{SUSPECT_IP}\"",
                rfc3339(t)
            );
            out.write_all(partial.as_bytes()).unwrap();
            g.partial_last_lines += 1;
        }
        out.finish();
        ev.finish();
        // As logrotate leaves them: a file was last written when its last line was.
        let mtime = UNIX_EPOCH + Duration::from_nanos(last_done as u64 + 1_000_000_000);
        for p in [&path, &ev_path] {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
        g.logs.push(path);
        g.events.push(ev_path);
    }
    g
}

/// Hostile lines, each holding the tag value, into file `k` of `n`.
fn hostile(out: &mut Out, ev: &mut Out, tagged_line: &str, k: usize, n: usize, g: &mut Generated) {
    // A writer killed mid-line: the line stops inside a string, the next one starts.
    let cut = &tagged_line[..tagged_line.len() * 2 / 3];
    writeln!(out, "{cut}").unwrap();
    g.hostile_truncated += u64::from(cut.contains(TAG_VALUE));
    // A byte that is not UTF-8 in a value.
    let mut bytes = tagged_line.as_bytes().to_vec();
    let p = bytes.windows(6).position(|w| w == b"/item/").unwrap();
    bytes.insert(p + 3, 0xff);
    out.write_all(&bytes).unwrap();
    out.write_all(b"\n").unwrap();
    g.hostile_invalid_utf8 += 1;
    // Two lines run together (a lost newline).
    writeln!(out, "{tagged_line}{tagged_line}").unwrap();
    g.hostile_invalid_json += 1;
    // Binary junk around the value.
    out.write_all(b"\x00\x01\x02 \"INC-12345\" \x7f junk {")
        .unwrap();
    out.write_all(b"\n").unwrap();
    g.hostile_invalid_json += 1;
    // Valid JSON, not an object.
    writeln!(out, "[\"tag_{TAG_KEY}\",\"{TAG_VALUE}\"]").unwrap();
    g.hostile_not_object += 1;
    // The value in another tag: parsed, not a match. A copy is another request: its own id.
    let copy = |suffix: &str, edit: &dyn Fn(&mut Map<String, Value>)| {
        let mut m: Map<String, Value> = serde_json::from_str(tagged_line).unwrap();
        let id = format!("{}-{suffix}", m[fields::REQUEST_ID].as_str().unwrap());
        m.insert(fields::REQUEST_ID.into(), id.into());
        edit(&mut m);
        serde_json::to_string(&m).unwrap()
    };
    let tag_key = format!("{}{TAG_KEY}", fields::TAG_PREFIX);
    let other = copy("other", &|m| {
        let v = m.remove(&tag_key).unwrap();
        m.insert(format!("{}other_case", fields::TAG_PREFIX), v);
    });
    writeln!(out, "{other}").unwrap();
    g.lines += 1;
    // Windows line end: a valid line (JSON allows the `\r`).
    let head = copy("head", &|m| {
        m.insert(fields::METHOD.into(), "HEAD".into());
    });
    writeln!(out, "{head}\r").unwrap();
    g.lines += 1;
    // An empty line.
    writeln!(out).unwrap();
    if k == n - 2 {
        // One line longer than any log line may be.
        let long = tagged_line.replace("/item/", &format!("/{}/", "A".repeat(1_100_000)));
        writeln!(out, "{long}").unwrap();
        g.hostile_overlong += 1;
    }
    // The event file: a cut event and a broken byte.
    writeln!(
        ev,
        "{{\"time_ns\":1795592400000000000,\"correlation_tags\":{{\"{TAG_KEY}\":\"{TAG_VALUE}\""
    )
    .unwrap();
    ev.write_all(b"{\"time_ns\":1795592400000000000,\"summary\":\"\xfe\",\"correlation_tags\":{\"investigation_id\":\"INC-12345\"}}\n").unwrap();
    g.hostile_truncated += 1;
    g.hostile_invalid_utf8 += 1;
}
