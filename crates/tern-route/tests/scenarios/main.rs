//! Every scenario of this crate, one file each, compiled into one test binary (one link
//! instead of one per file keeps the test build short). The shared harness is
//! `../common/mod.rs`.

// Helpers outside #[test] functions unwrap too: a test that cannot set up must fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod best_mx_pointing_to_us_is_a_loop;
mod concurrent_lookups_share_one_query;
mod domain_without_mx_uses_its_address;
mod many_mx_records_are_bounded;
mod mx_host_without_addresses_defers;
mod mx_through_cname_resolves;
mod null_mx_refuses_domain;
mod nxdomain_is_permanent_and_cached;
mod relay_hosts_resolve_in_order;
mod servfail_is_temporary_and_cached;
mod truncated_udp_answer_retried_over_tcp;
mod ttl_expiry_requeries_changed_answer;
mod unanswered_query_times_out_as_temporary;
mod zero_ttl_is_not_cached;
