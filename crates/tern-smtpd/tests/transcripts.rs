//! Golden transcripts: Tern's SMTP behaviour pinned as client script in, exact replies out.
//!
//! Each file in `tests/transcripts/` is one scenario, named for the behaviour it pins, and
//! runs as its own test (listed in the `transcripts!` invocation below; a test fails if a
//! file is missing from that list). Every transcript gets a fresh server from
//! `common::TestServer` (host name `mx.test`, relay domains `local.test` and `.sub.test`,
//! no relay networks, reverse DNS off, an empty spool) and one client connection named
//! `main`.
//!
//! # Format
//!
//! One item per line; blank lines are ignored.
//!
//! - `## text` is a comment.
//! - `C: text` is a line the client sends; the runner appends CRLF and sends `text` as is.
//! - `C! text` is sent raw, without an added CRLF, after decoding the escapes `\r`, `\n`,
//!   `\t`, `\\`, `\xHH` and `\{N*TEXT}` (TEXT, itself with escapes, repeated N times;
//!   TEXT cannot contain `}`). For bare CR/LF, smuggling attempts, BDAT chunks and long
//!   lines.
//! - Consecutive `C:`/`C!` lines (comments and blank lines between them do not count) are
//!   sent in ONE write: that is how a transcript pipelines.
//! - `S: text` is the next reply line the server must send, compared exactly (the CRLF is
//!   required and not written). `{ID}` matches a queue id (15 characters of upper-case
//!   Crockford base32; every id matched must name a message that is in the spool at the
//!   end, so use it only in `queued as {ID}`); `{ANY}` matches any run of characters.
//!   Each line must arrive within 5 seconds (a deadline, not a sleep).
//! - `# key: value` lines set up the server or add final checks, wherever they appear:
//!   - `# relay_networks: 127.0.0.0/8` (comma-separated; default none),
//!   - `# max_recipients: N`, `# max_errors: N`, `# max_message_size: N`,
//!     `# max_command_line: N`, `# max_text_line: N`, `# max_connections: N`,
//!     `# max_connections_per_client: N`, `# max_junk_commands: N`,
//!     `# min_data_rate: N`, `# relay_reserve_percent: N`, `# client_prefix_v4: N`,
//!     `# timeouts.command: SECONDS`, `# timeouts.data: SECONDS`,
//!     `# timeouts.session: SECONDS`, `# stress.enter_percent: N`,
//!     `# stress.leave_percent: N`, `# stress.command_timeout: SECONDS`,
//!     `# stress.data_timeout: SECONDS`, `# stress.max_errors: N`,
//!     `# stress.max_junk_commands: N`, `# bare_line_endings: reject|normalize`
//!     (the listener settings of the same names; defaults as in `ListenerConfig`),
//!   - `# tls: starttls|implicit|none` generates a self-signed certificate for `mx.test`,
//!     configures it and sets the listener's TLS mode (without this line: no certificate),
//!   - `# max_queued_messages: N`: back pressure refuses MAIL while N messages are queued,
//!   - `# auth: none|optional|required` and `# allow_plaintext_loopback: true` (the
//!     listener keys); `# auth_user: LINE` adds a line to the passwd-file (repeatable),
//!     `# auth_sender_map: LINE` one to the sender-login map; `# auth.sender_check:`,
//!     `# auth.mechanisms: PLAIN,LOGIN`, `# auth.max_failures_per_client: N`,
//!     `# auth.max_failures_per_user: N`, `# auth.received_show_user: true`,
//!     `# auth.received_hide_client: true` set `[auth]` keys (failure delays are 0),
//!   - `# rdns_lookup_loopback: true` (loopback clients are then looked up like others,
//!     and with no resolver they are `unknown`),
//!   - `# expect: closed`: after the last step, the server must close the current
//!     connection (EOF or reset within the deadline, with no further bytes),
//!   - `# queued: N`: exactly N messages are queued at the end,
//!   - `# spool_tmp_files: N`: exactly N files are left in the spool's `tmp/` (unfinished
//!     messages must leave none),
//!   - `# queued_body_contains: text`, `# queued_body_lacks: text`,
//!     `# queued_body_ends_with: text` (text with the `C!` escapes), and
//!     `# queued_body_starts_with: pattern` (escapes, `{ANY}`, `{QID}` for the message's
//!     own queue id, `{END}` for the end of the content) check the stored content of
//!     EVERY queued message (at least one must be queued),
//!   - `# envelope: field = value` checks a stored envelope field of every queued
//!     message: `sender`, `recipients` (addresses joined by `, `), `dsn_ret`
//!     (`hdrs`/`full`/`none`), `dsn_envid`, `smtputf8`, `body`, `declared_size`, `helo`,
//!     `esmtp`, `tls`, `verified_name`, `authenticated`, `relay_network`, `notify[I]` (e.g.
//!     `success,failure`), `orcpt[I]`.
//! - Directives act where they appear, on the current connection:
//!   - `# tls-handshake`: the client starts TLS (accepting the self-signed certificate); the
//!     rest of the transcript runs inside TLS. Fails if the server sent anything the client
//!     has not read yet.
//!   - `# connect: NAME` opens another connection and makes it current (`# connect: NAME
//!     from 127.0.0.2` binds the client side to that loopback address first);
//!     `# switch: NAME` makes an open connection current again.
//!   - `# closed`: the server must have closed the current connection (as `expect: closed`).
//!   - `# tls-alert-then-closed`: the server must send one TLS alert record and nothing
//!     else, then close (a handshake it refused).
//!   - `# shutdown-server`: the server starts shutting down (grace period 1 second); the
//!     shutdown signal has been sent when the next step runs.
//!   - `# quiet: 300ms` (or `2s`): the server must send nothing and keep the current
//!     connection open for that long (a check that also lets time pass, as a slow client
//!     would).
//!   - `# trickle: 300ms`: the next client bytes (the following `C:`/`C!` lines, as one
//!     write would be) are sent one byte at a time, waiting up to 300 ms for the server
//!     after each; trickling stops at the first byte the server sends (or its close), and
//!     the following `S:` lines read what it sent. For clients that keep a session
//!     alive by sending slowly.
//!
//! A failure names the file and line, shows what was expected and what arrived, and prints
//! the conversation so far.

#![allow(clippy::unwrap_used)]

mod common;

macro_rules! transcripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                common::runner::run(stringify!($name)).await;
            }
        )*

        /// Every transcript file, as listed above.
        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

transcripts![
    auth_after_helo_and_auth_parameter_without_auth_refused,
    auth_lines_up_to_12288_octets,
    auth_login_continuations_cancel_and_bad_base64,
    auth_received_hides_client_and_names_user_on_request,
    auth_required_needs_tls_then_plain_relays,
    auth_sender_login_map_envelope_and_header,
    auth_wrong_password_and_unknown_user_then_lockout,
    back_pressure_refuses_mail_when_queue_full,
    basic_session_queues_message,
    bdat_bare_line_endings_normalized_across_chunks,
    bdat_bare_line_endings_rejected,
    bdat_line_too_long_refused,
    bdat_over_size_limit,
    bdat_pipelined_with_commands,
    bdat_several_chunks,
    bdat_single_chunk_last,
    bdat_transfer_stalled_between_chunks_cut_at_data_timeout,
    bdat_trickled_cut_when_content_stops_progressing,
    bdat_without_transaction_consumes_chunk,
    bdat_zero_last_empty_message,
    bdat_zero_last_ends_message,
    command_bare_lf_accepted,
    command_line_too_long,
    command_timeout,
    command_trickled_byte_by_byte_cut_at_command_timeout,
    connections_per_client_limit,
    data_after_bdat_refused,
    data_before_rcpt_refused,
    data_timeout_drops_message,
    data_trickled_cut_when_content_stops_progressing,
    data_with_only_refused_recipients,
    dot_stuffing,
    dsn_notify_never_must_stand_alone,
    dsn_parameters_stored,
    dsn_parameters_with_control_characters_refused,
    duplicate_recipient_stored_once,
    ehlo_resets_transaction,
    helo_has_no_extensions,
    idle_session_gives_way_when_full,
    implicit_tls_client_that_never_handshakes_gives_way,
    implicit_tls_session,
    junk_command_limit_closes,
    junk_count_restarts_after_a_queued_message,
    large_message_over_size_leaves_no_file,
    mail_before_ehlo_refused,
    mail_from_postmaster_is_not_null_sender,
    nested_mail_refused,
    noop_rset_help,
    nul_in_commands_refused_in_sync,
    null_sender_accepted,
    pipelined_batch_with_refused_rcpt,
    pipelined_transaction,
    rcpt_before_mail_refused,
    rcpt_to_empty_path_refused,
    received_header_helo_invalid_utf8,
    received_header_helo_is_printable_ascii,
    received_header_sanitizes_helo,
    received_header_single_recipient,
    received_header_two_recipients_no_for,
    received_header_unknown_client_name,
    relay_address_literal_refused,
    relay_bang_path_refused,
    relay_domain_case_and_trailing_dot,
    relay_double_at_is_syntax_error,
    relay_local_domain_accepted,
    relay_non_ascii_needs_smtputf8,
    relay_other_domain_denied,
    relay_percent_hack_refused,
    relay_postmaster_accepted,
    relay_quoted_at_refused,
    relay_quoted_local_part_requoted,
    relay_reserve_admits_relay_network_client,
    relay_source_route_dropped,
    relay_source_route_to_other_domain_refused,
    relay_subdomain_rule,
    relay_trusted_client_any_domain,
    rset_mid_transaction,
    session_time_limit_closes_a_busy_client,
    session_time_limit_lets_message_in_transfer_finish,
    shutdown_closes_idle_session,
    shutdown_gives_bdat_transfer_the_grace_period,
    shutdown_gives_stalled_data_the_grace_period,
    shutdown_lets_message_in_progress_finish,
    size_parameter_boundaries,
    size_parameter_over_limit,
    smuggling_cr_dot_cr_is_content,
    smuggling_cr_dot_cr_rejected,
    smuggling_crlf_dot_cr_is_content,
    smuggling_crlf_dot_cr_rejected,
    smuggling_crlf_dot_lf_is_content,
    smuggling_crlf_dot_lf_rejected,
    smuggling_lf_dot_crlf_is_content,
    smuggling_lf_dot_crlf_rejected,
    smuggling_lf_dot_lf_is_content,
    smuggling_lf_dot_lf_rejected,
    smuggling_nul_dot_is_content,
    starttls_in_transaction_refused,
    starttls_not_offered_when_tls_none,
    starttls_not_offered_without_certificate,
    starttls_pipelined_commands_discarded,
    starttls_plaintext_after_ready_is_never_executed,
    starttls_split_command_with_injection_discarded,
    starttls_upgrade_resets_session,
    streamed_content_over_size,
    stress_shortens_timeouts_of_waiting_sessions,
    stress_tightens_error_limit,
    text_line_too_long,
    too_many_errors_closes,
    too_many_recipients,
    too_many_recipients_is_not_an_error,
    total_connections_limit,
    unadvertised_parameter_named_in_reply,
    unadvertised_parameters_refused,
    unknown_command_and_bad_syntax,
    vrfy_expn_auth_not_offered,
];

/// A transcript file that is not listed would never run.
#[test]
fn every_transcript_file_is_listed() {
    let mut files: Vec<String> = std::fs::read_dir(common::runner::transcripts_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for f in &files {
        let name = f
            .strip_suffix(".txt")
            .unwrap_or_else(|| panic!("tests/transcripts/{f}: not a .txt file"));
        assert!(
            LISTED.contains(&name),
            "tests/transcripts/{f} is not listed in tests/transcripts.rs"
        );
    }
    for name in LISTED {
        assert!(
            files.contains(&format!("{name}.txt")),
            "listed transcript {name} has no file"
        );
    }
}
