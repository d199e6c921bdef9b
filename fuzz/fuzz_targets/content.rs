#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| virus_scanner_content::fuzzing::content(data));
