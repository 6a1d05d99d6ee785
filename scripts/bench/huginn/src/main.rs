//! `huginn-bench FILE.pcap`: huginn-net's analyzer (TCP SYN OS matching against its p0f
//! database, TLS ClientHello JA4; HTTP off, as `ja4sensor read` does no HTTP) over a classic
//! pcap. Prints the JA4 of every ClientHello, one per line, on stdout (for the JA4 comparison),
//! and the counts on stderr.

use std::sync::mpsc;

use huginn_net::{AnalysisConfig, Database, HuginnNet};

/// Connections tracked at once, as the sensor's flow table.
const MAX_CONNECTIONS: usize = 65_536;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: huginn-bench FILE.pcap")?;
    let (tx, rx) = mpsc::channel();
    let analysis = std::thread::spawn(move || -> Result<(), String> {
        let db = Database::load_default().map_err(|e| e.to_string())?;
        let config = AnalysisConfig {
            http_enabled: false,
            tcp_enabled: true,
            tls_enabled: true,
            matcher_enabled: true,
        };
        let mut analyzer =
            HuginnNet::new(Some(&db), MAX_CONNECTIONS, Some(config)).map_err(|e| e.to_string())?;
        analyzer
            .analyze_pcap(&path, tx, None)
            .map_err(|e| e.to_string())
    });
    let (mut hellos, mut syns, mut os) = (0u64, 0u64, 0u64);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for result in rx {
        if let Some(tls) = result.tls_client {
            hellos += 1;
            use std::io::Write as _;
            writeln!(out, "{}", tls.sig.ja4.full.value())?;
        }
        if let Some(syn) = result.tcp_syn {
            syns += 1;
            os += u64::from(syn.os_matched.os.is_some());
        }
    }
    analysis.join().map_err(|_| "analysis thread panicked")??;
    eprintln!("hellos {hellos} syns {syns} os_matched {os}");
    Ok(())
}
