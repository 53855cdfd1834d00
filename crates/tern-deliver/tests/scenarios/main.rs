//! Every scenario of this crate, one file each, compiled into one test binary (one link
//! instead of one per file keeps the test build short). The shared harness is
//! `../common/mod.rs`.

// Helpers outside #[test] functions unwrap too: a test that cannot set up must fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod all_recipients_rejected_keeps_session_reusable;
mod connection_dropped_mid_data;
mod connection_refused;
mod content_read_error_sends_no_final_dot;
mod data_rejected;
mod delivery_without_pipelining;
mod dsn_parameters_only_when_advertised;
mod greeting_refused_is_connection_failure;
mod hanging_server_times_out_at_greeting;
mod mail_from_rejected;
mod mixed_recipient_results;
mod no_smtputf8_is_incompatible;
mod own_greeting_is_a_loop_to_myself;
mod pipelined_delivery_is_byte_identical;
mod postfix_smtp_sink_fifty_pipelined;
mod rset_between_transactions_probes_a_reused_connection;
mod session_reuse_three_transactions;
mod size_limit_too_big;
mod slow_peer_within_timeouts;
mod starttls_audit_records_without_failing;
mod starttls_may_encrypts;
mod starttls_required_but_not_offered;
mod starttls_response_injection_refused;
mod starttls_verify_checks_name;
mod tls_policy_none_stays_plaintext;
