#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern_auth::fuzzing::sasl_responses(data);
});
