//! What goes back of the original: headers (default), the full message (RET=FULL),
//! headers with an explanation when the full message is over the limit, and 8-bit
//! originals.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_dsn::{DsnInput, Return, build};

fn returned(input: &DsnInput<'_>) -> (String, Vec<u8>, String, Option<String>) {
    let report = build(input).unwrap();
    let message = parse(&report);
    let part = parts(&message)[2];
    (
        mime_type(part),
        raw_body(&report, part).to_vec(),
        text(&message),
        part_header(part, "Content-Transfer-Encoding"),
    )
}

#[test]
fn headers_by_default() {
    let recipients = [failed("bob@example.com")];
    let (mime, body, text, _) = returned(&bounce(&recipients));
    assert_eq!(mime, "text/rfc822-headers");
    assert_eq!(body, ORIGINAL_HEADERS);
    assert!(text.contains("The headers of your message are attached below."));
}

#[test]
fn full_when_asked_and_small_enough() {
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        ret: Return::Full,
        max_full_size: ORIGINAL.len(),
        ..bounce(&recipients)
    };
    let (mime, body, text, _) = returned(&input);
    assert_eq!(mime, "message/rfc822");
    assert_eq!(body, ORIGINAL);
    assert!(text.contains("Your message is attached below."), "{text}");
}

#[test]
fn full_over_the_limit_degrades_to_headers_and_says_so() {
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        ret: Return::Full,
        max_full_size: ORIGINAL.len() - 1,
        ..bounce(&recipients)
    };
    let (mime, body, text, _) = returned(&input);
    assert_eq!(mime, "text/rfc822-headers");
    assert_eq!(body, ORIGINAL_HEADERS);
    let size = ORIGINAL.len();
    let limit = size - 1;
    assert!(
        text.contains(&format!(
            "Your message ({size} bytes) is larger than the {limit} bytes"
        )),
        "{text}"
    );
    assert!(
        text.contains("only its headers are attached below."),
        "{text}"
    );
}

#[test]
fn eight_bit_full_message_is_declared_8bit_and_returned_intact() {
    let original = b"From: J\xc3\xb6rg <j@example.net>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nK\xc3\xa4se \xff\r\n";
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        ret: Return::Full,
        original,
        ..bounce(&recipients)
    };
    let (mime, body, _, encoding) = returned(&input);
    assert_eq!(mime, "message/rfc822");
    assert_eq!(body, original);
    assert!(encoding.unwrap().contains("8bit"));
}

#[test]
fn eight_bit_headers_are_declared_8bit() {
    let original = b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nbody\r\n";
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        original,
        ..bounce(&recipients)
    };
    let (mime, body, _, encoding) = returned(&input);
    assert_eq!(mime, "text/rfc822-headers");
    assert_eq!(body, b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n");
    assert!(encoding.unwrap().contains("8bit"));
}

#[test]
fn seven_bit_original_is_declared_7bit() {
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        ret: Return::Full,
        ..bounce(&recipients)
    };
    let (_, _, _, encoding) = returned(&input);
    assert!(encoding.unwrap().contains("7bit"));
}

#[test]
fn original_containing_a_boundary_lookalike_is_returned_whole() {
    let original = b"Subject: x\r\n\r\n--tern-dsn_1_2_3\r\n--tern-dsn_1_2_3--\r\n";
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        ret: Return::Full,
        original,
        ..bounce(&recipients)
    };
    let (_, body, _, _) = returned(&input);
    assert_eq!(body, original);
}
