#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| icap::fuzzing::round_trip(data));
