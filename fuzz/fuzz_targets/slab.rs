//! `pinion_core::fuzz::slab`: see core's `src/fuzz.rs` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinion_core::fuzz::slab(data));
