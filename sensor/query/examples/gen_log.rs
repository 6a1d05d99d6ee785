//! Writes the generated log of the tests at any size, for the benchmark (scripts/bench/query.sh)
//! and for trying the commands by hand:
//!
//! ```sh
//! cargo run --release -p ja4sensor-query --example gen_log -- DIR CONNECTIONS [MAX_REQUESTS [ROTATIONS [GZIP [PAD]]]]
//! ```
//! Prints what it wrote as one JSON object (paths, line counts, the suspect's conn_id).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/gen.rs"]
mod gen;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gen_log DIR CONNECTIONS [MAX_REQUESTS [ROTATIONS [GZIP [PAD]]]]";
    let dir = std::path::PathBuf::from(args.first().expect(usage));
    let num = |i: usize, default: u64| args.get(i).map_or(default, |a| a.parse().expect(usage));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = gen::Config {
        connections: num(1, 600) as usize,
        max_requests: num(2, 6),
        rotations: num(3, 4) as usize,
        gzip: num(4, 2) as usize,
        ..gen::Config::default()
    };
    let g = gen::generate_padded(&dir, &cfg, num(5, 0) as usize);
    let paths = |v: &[std::path::PathBuf]| {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    };
    println!(
        "{}",
        serde_json::json!({
            "logs": paths(&g.logs),
            "events": paths(&g.events),
            "lines": g.lines,
            "event_lines": g.event_lines,
            "suspect_conn": g.suspect_conn,
            "h2_conn": g.h2_conn,
            "tag": format!("{}={}", gen::TAG_KEY, gen::TAG_VALUE),
            "suspect_ip": gen::SUSPECT_IP,
        })
    );
}
