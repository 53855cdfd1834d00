//! Every scenario of this crate, one file each, compiled into one test binary (one link
//! instead of one per file keeps the test build short). The shared harness is
//! `../common/mod.rs`.

// Helpers outside #[test] functions unwrap too: a test that cannot set up must fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod admin_api_auth_health_and_openapi;
mod admin_bounce_survives_a_crash_and_is_sent_once;
mod admin_queue_actions_single_and_bulk;
mod admin_queue_list_filters_and_paging;
mod admin_releases_and_deletes_poisoned_and_held_mail;
mod alias_loop_duplicates_and_remote_member;
mod all_hosts_down_then_back;
mod back_pressure_refuses_with_452;
mod bdat_chunks_are_queued_byte_identical;
mod chaos_soak_short;
mod check_config_reports_every_problem;
mod cli_queue_over_the_api;
mod corrupt_entries_quarantined_rest_delivered;
mod corrupt_spool_entry_quarantined_at_start;
mod default_config_accepts_local_and_loopback_relay;
mod delay_notice_expiry_and_hop_limit;
mod destination_concurrency_and_connection_reuse;
mod disk_full_refuses_with_452_and_recovers;
mod dns_answers_decide_bounce_or_defer;
mod drop_transport_writes_complete_parseable_files;
mod eight_bit_downgraded_for_a_peer_without_8bitmime;
mod equal_preference_mx_share_the_load;
mod ipv6_and_multiple_listeners;
mod kill9_during_drop_delivery_loses_nothing;
mod kill9_during_pickup_queues_every_file;
mod kill9_loses_no_acknowledged_message;
mod kill9_while_relaying_delivers_every_acknowledged_message;
mod lmtp_to_dovecot_fails_only_the_unknown_user;
mod local_maps_reload_with_the_routes;
mod maildir_delivery_read_by_doveadm;
mod maildir_quota_defers_then_bounces;
mod mx_answer_cached_for_its_ttl;
mod mx_preference_order_and_fallback;
mod one_bad_recipient_among_thousand_bounces_once;
mod outbound_tls_policies_per_route;
mod panic_at_any_stage_releases_every_slot;
mod partial_recipient_failures_bounce_once;
mod peer_limits_and_dsn_notify;
mod pickup_bad_files_go_to_badmail_and_the_rest_flows;
mod pickup_files_in_both_formats_reach_the_peer;
mod poison_message_is_quarantined_after_two_crashes;
mod postfix_interop_both_directions;
mod python_smtplib_interop;
mod queue_list_json_fields;
mod reload_storm_during_flow_delivers_every_message;
mod reverse_dns_names_client;
mod route_reload_during_flow_loses_nothing;
mod sendmail_and_mailq_links;
mod sendmail_bs_speaks_smtp_on_stdin;
mod sendmail_sender_name_and_input_flags;
mod sendmail_takes_recipients_from_arguments_and_headers;
mod sendmail_while_the_server_is_stopped;
mod sigterm_shuts_down_within_grace;
mod smarthost_and_reject_routes;
mod smtp_source_interop;
mod swaks_interop;
mod unknown_local_recipient_refused_at_rcpt;
mod unusable_spool_dir_fails_start_with_path;
mod watchdog_restarts_frozen_delivery_worker;
