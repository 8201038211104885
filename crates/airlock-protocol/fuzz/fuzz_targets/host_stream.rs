//! Arbitrary bytes from a hostile agent, through the stream framer, the
//! reassembler and the host session validator. The body lives in
//! `airlock_protocol::v2::fuzzing` so that `cargo test` runs it on stable
//! over generated inputs too.
//!
//! Run: `cargo +nightly fuzz run host_stream` (from crates/airlock-protocol).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    airlock_protocol::v2::fuzzing::host_stream(data);
});
