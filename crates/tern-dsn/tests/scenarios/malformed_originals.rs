//! Malformed originals never panic and always give a report mail-parser reads with three
//! parts: no header/body separator, bare LF, bare CR, 8-bit bytes, an enormous header
//! section, an empty original, and (proptest) arbitrary bytes.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use proptest::prelude::*;
use tern_dsn::{DsnInput, HEADERS_CAP, Return, build};

fn report_for(original: &[u8], ret: Return) -> Vec<u8> {
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        original,
        ret,
        ..bounce(&recipients)
    };
    build(&input).unwrap()
}

fn returned_body(original: &[u8], ret: Return) -> Vec<u8> {
    let report = report_for(original, ret);
    let message = parse(&report);
    raw_body(&report, parts(&message)[2]).to_vec()
}

#[test]
fn no_separator_returns_everything_as_headers() {
    let original = b"From: a@example.net\r\nSubject: no body";
    assert_eq!(returned_body(original, Return::Headers), original);
}

#[test]
fn bare_lf_original_comes_back_with_crlf() {
    let original = b"From: a@example.net\nSubject: lf\n\nbody\n";
    assert_eq!(
        returned_body(original, Return::Headers),
        b"From: a@example.net\r\nSubject: lf\r\n"
    );
    assert_eq!(
        returned_body(original, Return::Full),
        b"From: a@example.net\r\nSubject: lf\r\n\r\nbody\r\n"
    );
}

#[test]
fn bare_cr_becomes_crlf() {
    let original = b"From: a@example.net\rSubject: cr\r\n\r\nbody\r";
    assert_eq!(
        returned_body(original, Return::Full),
        b"From: a@example.net\r\nSubject: cr\r\n\r\nbody\r\n"
    );
}

#[test]
fn enormous_header_section_is_capped() {
    let mut original = Vec::new();
    while original.len() < 4 * HEADERS_CAP {
        original.extend_from_slice(b"X-Filler: 0123456789abcdef0123456789abcdef\r\n");
    }
    original.extend_from_slice(b"\r\nbody\r\n");
    let body = returned_body(&original, Return::Headers);
    assert!(body.len() <= HEADERS_CAP);
    assert!(body.len() > HEADERS_CAP - 100);
    assert!(body.ends_with(b"\r\n"), "cut after a whole line");
    assert_eq!(body, original[..body.len()]);
}

#[test]
fn enormous_single_line_is_capped() {
    let original = vec![b'a'; 3 * HEADERS_CAP];
    let body = returned_body(&original, Return::Headers);
    assert_eq!(body.len(), HEADERS_CAP);
}

#[test]
fn empty_original() {
    assert_eq!(returned_body(b"", Return::Headers), b"");
    assert_eq!(returned_body(b"", Return::Full), b"");
}

#[test]
fn body_only_original_has_no_headers() {
    assert_eq!(returned_body(b"\r\njust a body\r\n", Return::Headers), b"");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_originals_never_break_the_report(
        original in proptest::collection::vec(any::<u8>(), 0..2048),
        full in any::<bool>(),
    ) {
        let ret = if full { Return::Full } else { Return::Headers };
        let report = report_for(&original, ret);
        let message = parse(&report); // asserts multipart/report with three parts
        let types: Vec<String> = parts(&message).into_iter().map(mime_type).collect();
        let third = if full { "message/rfc822" } else { "text/rfc822-headers" };
        prop_assert_eq!(
            types,
            vec!["text/plain".to_owned(), "message/delivery-status".to_owned(), third.to_owned()]
        );
        prop_assert_eq!(status_blocks(&report).len(), 2);
    }

    #[test]
    fn line_based_junk_never_breaks_the_report(
        lines in proptest::collection::vec(
            prop_oneof![
                Just(b"\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"Subject: x".to_vec()),
                Just(b"Content-Type: multipart/mixed; boundary=zz".to_vec()),
                Just(b"--zz".to_vec()),
                Just(b"--".to_vec()),
                Just(b"\xff\xfe".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
            0..64,
        ),
        full in any::<bool>(),
    ) {
        let original = lines.concat();
        let ret = if full { Return::Full } else { Return::Headers };
        let report = report_for(&original, ret);
        parse(&report);
        prop_assert_eq!(status_blocks(&report).len(), 2);
    }
}
