//! `N` verdict-table lookups of one kind, for counting instructions per lookup under callgrind
//! (scripts/bench/verdict_instructions.sh runs it with N = 0 and N = 1 000 000 and divides the
//! difference): what the module adds per request when it looks a client up.
//!
//!     verdict_lookups empty|hit|miss N
//!     verdict_lookups write PATH N [CLIENT]
//!                                      a table of N live verdicts (10.1.x.y), and one for the
//!                                      address CLIENT if given, mode 0644, kept at PATH for
//!                                      httpd to map (scripts/bench/verdict_module.py)

use std::net::IpAddr;

use correlate_lib::verdict::{VerdictLookup, VerdictReader, VerdictWriter, DEFAULT_SLOT_COUNT};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kind = args
        .next()
        .ok_or("usage: verdict_lookups empty|hit|miss N")?;
    if kind == "write" {
        let path = std::path::PathBuf::from(args.next().ok_or("PATH")?);
        let n: u32 = args.next().ok_or("N")?.parse()?;
        let client: Option<IpAddr> = args.next().map(|a| a.parse()).transpose()?;
        let mut w = VerdictWriter::create(&path, DEFAULT_SLOT_COUNT, 0o644, None)?;
        let now = correlate_lib::unix_now_ns();
        let ips = (0..n).map(|i| IpAddr::from([10, 1, (i >> 8) as u8, i as u8]));
        for ip in ips.chain(client) {
            w.set(
                &correlate_lib::verdict::VerdictKey::Ip(ip),
                "block",
                "flood",
                now + 3_600_000_000_000,
                now,
            )?;
        }
        println!("wrote {n} verdicts to {}", path.display());
        return Ok(());
    }
    let n: u64 = args.next().ok_or("N")?.parse()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.verdicts");
    let mut w = VerdictWriter::create(&path, DEFAULT_SLOT_COUNT, 0o600, None)?;
    let now = correlate_lib::unix_now_ns();
    // "Full": half the slots live (the load a 65 536-slot table is sized for).
    if kind != "empty" {
        for i in 0..DEFAULT_SLOT_COUNT / 2 {
            let ip = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            w.set(
                &correlate_lib::verdict::VerdictKey::Ip(ip),
                "block",
                "flood",
                now + 3_600_000_000_000,
                now,
            )?;
        }
    }
    let r = VerdictReader::open(&path)?;
    let (mut hits, mut i) = (0u64, 0u32);
    for _ in 0..n {
        i = (i + 1) % (DEFAULT_SLOT_COUNT / 2);
        let ip = match kind.as_str() {
            "hit" => IpAddr::from([10, 1, (i >> 8) as u8, i as u8]),
            _ => IpAddr::from([10, 2, (i >> 8) as u8, i as u8]),
        };
        if let VerdictLookup::Hit(v) = r.lookup_ip(std::hint::black_box(ip), now) {
            hits += u64::from(!v.word().is_empty());
        }
    }
    println!("{kind} lookups={n} hits={hits}");
    Ok(())
}
