//! RFC 6376's published vectors through Tern's verifier: Appendix A (the example
//! message, its signed form, the key of Appendix C published as A.3 shows) and the
//! canonicalization examples of §3.4.5. The files and where each came from:
//! `tests/data/rfc6376/README.md`.
//!
//! What the RFC's own signature does, found by running it (and what errata 4926 says):
//! A.2 as printed folds its header fields with five spaces; the signer used six. The
//! `simple` header canonicalization keeps whitespace, so the printed `b=` does not
//! verify, while its `bh=` (the body's hash, which no header whitespace touches) does.
//! With the errata's six spaces the RFC's signature verifies. Independently of that, a
//! signature made by dkimpy with the Appendix C private key over the same message and
//! the same tags verifies too, and carries the `bh=` the RFC prints.

use mail_auth::common::crypto::HashAlgorithm;
use mail_auth::common::headers::Writable as _;
use mail_auth::dkim::{Canonicalization, Signature};

use super::tests::{dkim_of, offline};
use crate::results::{AuthResult, DkimCheck};

/// A.3: the key record, published under `brisbane._domainkey.example.com`.
const KEY_RECORD: &str = include_str!("../../tests/data/rfc6376/rfc6376-a3-brisbane.txt");
const KEY_NAME: &str = "brisbane._domainkey.example.com";

const A2_AS_PRINTED: &[u8] = include_bytes!("../../tests/data/rfc6376/rfc6376-a2-as-printed.eml");
const A2_ERRATA_4926: &[u8] = include_bytes!("../../tests/data/rfc6376/rfc6376-a2-errata-4926.eml");
const A1: &[u8] = include_bytes!("../../tests/data/rfc6376/rfc6376-a1.eml");
const DKIMPY_A2_TAGS: &[u8] = include_bytes!("../../tests/data/rfc6376/dkimpy-a2-tags.eml");
const SECTION_3_4_5_INPUT: &[u8] =
    include_bytes!("../../tests/data/rfc6376/rfc6376-3.4.5-input.eml");

/// The four c= combinations of the §3.4.5 example, signed by dkimpy.
const DKIMPY_3_4_5: [(&str, &str, &[u8]); 4] = [
    (
        "simple",
        "simple",
        include_bytes!("../../tests/data/rfc6376/dkimpy-3.4.5-simple-simple.eml"),
    ),
    (
        "simple",
        "relaxed",
        include_bytes!("../../tests/data/rfc6376/dkimpy-3.4.5-simple-relaxed.eml"),
    ),
    (
        "relaxed",
        "simple",
        include_bytes!("../../tests/data/rfc6376/dkimpy-3.4.5-relaxed-simple.eml"),
    ),
    (
        "relaxed",
        "relaxed",
        include_bytes!("../../tests/data/rfc6376/dkimpy-3.4.5-relaxed-relaxed.eml"),
    ),
];

/// The body hash RFC 6376 A.2 prints.
const A2_BH: &str = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=";

/// mail-auth's words for the two ways a signature fails (the Authentication-Results
/// comment): the body does not match `bh=`, or `b=` does not verify over the header.
const BODY_HASH_FAILED: &str = "Calculated body hash does not match signature hash";
const SIGNATURE_FAILED: &str = "Signature verification failed";

fn verifier() -> super::Verifier {
    offline(&[(KEY_NAME, KEY_RECORD.trim())])
}

fn replaced(message: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    assert!(text.contains(from), "{from:?} is not in the vector");
    text.replacen(from, to, 1).into_bytes()
}

/// The one result of a message carrying one signature, by `brisbane` for `example.com`.
async fn only(v: &super::Verifier, message: &[u8]) -> DkimCheck {
    let got = dkim_of(v, message).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let check = got[0].clone();
    assert_eq!(
        (check.domain.as_str(), check.selector.as_str()),
        ("example.com", "brisbane")
    );
    check
}

fn assert_fails_with(check: &DkimCheck, why: &str) {
    assert_eq!(check.result, AuthResult::Fail, "{check:?}");
    assert_eq!(check.comment.as_deref(), Some(why), "{check:?}");
}

/// The header and the body of a message, split at the first empty line.
fn split(message: &[u8]) -> (&[u8], &[u8]) {
    let at = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of header"));
    let (header, rest) = message.split_at(at + 2);
    (header, rest.get(2..).unwrap_or_default())
}

/// The value of the first header field `name` (unfolded bytes as they stand).
fn field<'a>(header: &'a [u8], name: &str) -> &'a [u8] {
    let prefix = format!("{name}:");
    let start = header
        .windows(prefix.len())
        .position(|w| w.eq_ignore_ascii_case(prefix.as_bytes()))
        .unwrap_or_else(|| panic!("no {name}"));
    let rest = header.get(start..).unwrap_or_default();
    let mut end = 0;
    for line in rest.split_inclusive(|&b| b == b'\n') {
        if end > 0 && !matches!(line.first(), Some(b' ' | b'\t')) {
            break;
        }
        end += line.len();
    }
    rest.get(..end).unwrap_or_default()
}

#[tokio::test]
async fn rfc_6376_a2_as_printed_fails_on_its_signature_not_its_body_hash() {
    let v = verifier();
    // The body hash checks out (it is tested first), the signature does not: the
    // header was signed with other whitespace than the RFC prints (errata 4926).
    let check = only(&v, A2_AS_PRINTED).await;
    assert_fails_with(&check, SIGNATURE_FAILED);

    // The printed bh= is the SHA-256 of A.1's body under the `simple` canonicalization
    // A.2 names, computed here independently of the verifier.
    let (header, body) = split(A2_AS_PRINTED);
    let signature = Signature::parse(
        field(header, "DKIM-Signature")
            .get("DKIM-Signature:".len()..)
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let hash = HashAlgorithm::Sha256.hash(Canonicalization::Simple.canonical_body(body, 0));
    assert_eq!(hash.as_ref(), signature.bh.as_slice());
    assert_eq!(split(A1).1, body, "A.2 carries A.1's body");

    // And a one-byte change of that body is caught by the body hash first.
    let changed = replaced(A2_AS_PRINTED, "hungry", "Hungry");
    assert_fails_with(&only(&v, &changed).await, BODY_HASH_FAILED);
}

#[tokio::test]
async fn rfc_6376_a2_with_the_indentation_of_errata_4926_verifies() {
    let v = verifier();
    let check = only(&v, A2_ERRATA_4926).await;
    assert_eq!(check.result, AuthResult::Pass, "{check:?}");
    // The only difference from the printed form is one space per folded line.
    assert_eq!(
        String::from_utf8_lossy(A2_AS_PRINTED).replace("\r\n     ", "\r\n      "),
        String::from_utf8_lossy(A2_ERRATA_4926)
    );

    let changed = replaced(A2_ERRATA_4926, "We lost", "We Lost");
    assert_fails_with(&only(&v, &changed).await, BODY_HASH_FAILED);
    let changed = replaced(A2_ERRATA_4926, "Is dinner ready?", "Is dinner ready!");
    assert_fails_with(&only(&v, &changed).await, SIGNATURE_FAILED);
    // A signed Received field is covered too, and simple/simple sees its whitespace.
    let changed = replaced(
        A2_ERRATA_4926,
        "example.com  [192.0.2.1]",
        "example.com [192.0.2.1]",
    );
    assert_fails_with(&only(&v, &changed).await, SIGNATURE_FAILED);
}

#[tokio::test]
async fn rfc_6376_a2_tags_signed_by_dkimpy_with_the_appendix_c_key_verify() {
    let v = verifier();
    let text = String::from_utf8_lossy(DKIMPY_A2_TAGS);
    // The independent signer hashed A.1's body to the value the RFC prints.
    assert!(text.contains(&format!("bh={A2_BH};")), "{text}");
    for tag in [
        "a=rsa-sha256",
        "c=simple/simple",
        "d=example.com",
        "s=brisbane",
    ] {
        assert!(text.contains(tag), "{tag} in {text}");
    }
    let check = only(&v, DKIMPY_A2_TAGS).await;
    assert_eq!(check.result, AuthResult::Pass, "{check:?}");

    // One byte of the body: the body hash fails.
    let changed = replaced(DKIMPY_A2_TAGS, "Joe.\r\n", "Joe!\r\n");
    assert_fails_with(&only(&v, &changed).await, BODY_HASH_FAILED);
    // One byte of a signed header field: the signature fails.
    let changed = replaced(DKIMPY_A2_TAGS, "To: Suzie Q", "To: Suzie R");
    assert_fails_with(&only(&v, &changed).await, SIGNATURE_FAILED);
}

#[test]
fn rfc_6376_3_4_5_canonicalization_examples() {
    let (header, body) = split(SECTION_3_4_5_INPUT);
    let fields: [(&[u8], &[u8]); 2] = [(b"A", b" X\r\n"), (b"B ", b" Y\t\r\n\tZ  \r\n")];
    let simple_header = b"A: X\r\nB : Y\t\r\n\tZ  \r\n";
    assert_eq!(
        header, simple_header,
        "the fields as split here are the input's"
    );

    let headers = |c: Canonicalization| {
        let mut out = Vec::new();
        c.canonicalize_headers(fields.iter().copied(), &mut out);
        out
    };
    let body_of = |c: Canonicalization| {
        let mut out = Vec::new();
        c.canonical_body(body, 0).write(&mut out);
        out
    };
    // Example 1: relaxed header and relaxed body.
    assert_eq!(headers(Canonicalization::Relaxed), b"a:X\r\nb:Y Z\r\n");
    assert_eq!(body_of(Canonicalization::Relaxed), b" C\r\nD E\r\n");
    // Example 2: simple header and simple body.
    assert_eq!(headers(Canonicalization::Simple), simple_header);
    assert_eq!(body_of(Canonicalization::Simple), b" C \r\nD \t E\r\n");
    // Example 3 (relaxed header, simple body) is the pair of the two above.
}

#[tokio::test]
async fn rfc_6376_3_4_5_example_signed_by_dkimpy_verifies_under_each_canonicalization() {
    let v = verifier();
    for (ch, cb, message) in DKIMPY_3_4_5 {
        let text = String::from_utf8_lossy(message);
        assert!(text.contains(&format!("c={ch}/{cb};")), "{text}");
        let check = only(&v, message).await;
        assert_eq!(check.result, AuthResult::Pass, "c={ch}/{cb}: {check:?}");

        // Whitespace inside a body line: relaxed reduces it, simple keeps it.
        let changed = replaced(message, "D \t E", "D E");
        let check = only(&v, &changed).await;
        if cb == "relaxed" {
            assert_eq!(check.result, AuthResult::Pass, "c={ch}/{cb}: {check:?}");
        } else {
            assert_fails_with(&check, BODY_HASH_FAILED);
        }
        // Whitespace after a signed field's colon: relaxed drops it, simple keeps it.
        let changed = replaced(message, "\r\nA: X\r\n", "\r\nA:\t X\r\n");
        let check = only(&v, &changed).await;
        if ch == "relaxed" {
            assert_eq!(check.result, AuthResult::Pass, "c={ch}/{cb}: {check:?}");
        } else {
            assert_fails_with(&check, SIGNATURE_FAILED);
        }
        // A word of the body changed fails under every combination.
        let changed = replaced(message, " C ", " K ");
        assert_fails_with(&only(&v, &changed).await, BODY_HASH_FAILED);
    }
}
