//! Arbitrary bytes in every untrusted input at once (remote reply, remote host, ENVID,
//! recipient, ORCPT, original): the report is always well-formed and no value adds a
//! field or a block. The same check the `dsn_build` fuzz target runs
//! (`tern_dsn::fuzzing::build_arbitrary`).

use proptest::prelude::*;

/// Most arbitrary inputs build a report (so the check above is not vacuous).
#[test]
fn most_arbitrary_inputs_build_a_report() {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut built = 0;
    for _ in 0..200 {
        let data: Vec<u8> = (0..256)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % 251) as u8
            })
            .collect();
        if tern_dsn::fuzzing::build_arbitrary(&data) {
            built += 1;
        }
    }
    assert!(built > 150, "only {built} of 200 built");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_untrusted_fields_never_break_the_report(
        data in proptest::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                1 => Just(0u8),
                1 => Just(b'\r'),
                1 => Just(b'\n'),
                1 => Just(b':'),
            ],
            0..1024,
        ),
    ) {
        tern_dsn::fuzzing::build_arbitrary(&data);
    }

    #[test]
    fn injected_lines_in_every_field_are_neutralised(
        field in 0usize..5,
        junk in "[A-Za-z-]{1,12}: [ -~]{0,20}",
    ) {
        let mut pieces = [b"550 5.1.1 no".to_vec(), b"mx.example".to_vec(),
            b"env-1".to_vec(), b"bob@example.com".to_vec(), b"rfc822;bob@example.com".to_vec()];
        pieces[field].extend_from_slice(b"\r\n");
        pieces[field].extend_from_slice(junk.as_bytes());
        pieces[field].extend_from_slice(b"\r\n\r\nX-Injected: yes");
        let mut data = pieces.join(&0u8);
        data.extend_from_slice(b"\0Subject: hi\r\n\r\nbody\r\n");
        // Every one of these untrusted values is cleaned, not refused: a report is built.
        prop_assert!(tern_dsn::fuzzing::build_arbitrary(&data), "refused: field {}", field);
    }
}
