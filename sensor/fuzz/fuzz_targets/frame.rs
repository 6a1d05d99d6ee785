//! Link/IP/TCP decoding and the whole per-packet pipeline on arbitrary frames.
#![no_main]

use ja4sensor::capture::LinkType;
use ja4sensor::pipeline::Pipeline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for link in [
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Null,
        LinkType::Raw,
    ] {
        let mut pipeline = Pipeline::new(link, 16, 1_000_000_000, String::new());
        pipeline.process(1, data, &mut |_| {});
    }
});
