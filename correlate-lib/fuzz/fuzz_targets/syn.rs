//! The SYN parser on arbitrary IP packets (what `getsockopt(TCP_SAVED_SYN)` or a capture hands
//! over), then the OS guess and, with `--features foxio`, JA4T on whatever parses.
#![no_main]

use std::sync::OnceLock;

use correlate_lib::fingerprint::os::OsDatabase;
use correlate_lib::fingerprint::syn::parse_syn;
use libfuzzer_sys::fuzz_target;

fn db() -> Option<&'static OsDatabase> {
    static DB: OnceLock<Option<OsDatabase>> = OnceLock::new();
    DB.get_or_init(|| OsDatabase::load().ok()).as_ref()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(syn) = parse_syn(data) {
        if let Some(db) = db() {
            let _ = db.guess(&syn);
        }
        #[cfg(feature = "foxio")]
        let _ = correlate_lib::fingerprint::foxio::ja4t(&syn);
    }
});
