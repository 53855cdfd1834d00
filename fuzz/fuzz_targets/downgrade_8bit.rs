#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern_convert::fuzzing::downgrade_arbitrary(data);
});
