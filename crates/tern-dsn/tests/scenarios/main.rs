//! Every scenario of this crate, one file each, compiled into one test binary (one link
//! instead of one per file keeps the test build short). The shared harness is
//! `../common/mod.rs`.

// Helpers outside #[test] functions unwrap too: a test that cannot set up must fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod arbitrary_fields;
mod bounce_is_parsed_by_mail_parser;
mod hostile_remote_reply;
mod malformed_originals;
mod optional_fields;
mod python_email_reads_bounce;
mod report_kinds;
mod returned_original;
