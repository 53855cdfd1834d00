//! Helpers shared by the unit tests: sample envelopes and a proptest strategy for them.
//!
//! Test-only; compiled under `cfg(test)`.

use proptest::prelude::*;

use crate::envelope::{
    BodyType, ClientInfo, DsnRet, Envelope, MailParams, Notify, Recipient, RecipientStatus,
};
use crate::id::QueueId;

/// A plausible envelope for `id` with `size` content bytes and `n` recipients.
pub(crate) fn envelope(id: QueueId, size: u64, n: usize) -> Envelope {
    Envelope {
        quarantine: None,
        id,
        sender: "alice@example.org".into(),
        recipients: (0..n.max(1))
            .map(|i| Recipient {
                address: format!("rcpt{i}@example.net"),
                orcpt: Some(format!("rfc822;rcpt{i}@example.net")),
                notify: Some(Notify {
                    failure: true,
                    delay: true,
                    ..Notify::default()
                }),
                status: RecipientStatus::Pending,
            })
            .collect(),
        params: MailParams {
            declared_size: Some(size),
            body: BodyType::EightBitMime,
            smtputf8: false,
            dsn_ret: Some(DsnRet::Hdrs),
            dsn_envid: Some("envid-1".into()),
        },
        client: ClientInfo {
            address: "192.0.2.1:40000".into(),
            verified_name: Some("mx.example.org".into()),
            helo: "mx.example.org".into(),
            esmtp: true,
            tls: Some("TLSv1.3 TLS_AES_128_GCM_SHA256".into()),
            listener: "mx".into(),
            ..Default::default()
        },
        arrival_micros: id.arrival_micros(),
        size,
    }
}

fn address() -> impl Strategy<Value = String> {
    // Any characters except controls, at most 64 of them (<= 256 bytes of UTF-8).
    "[^\\p{Cc}]{1,64}"
}

fn status() -> impl Strategy<Value = RecipientStatus> {
    prop_oneof![
        Just(RecipientStatus::Pending),
        ".{0,40}".prop_map(|reply| RecipientStatus::Delivered { reply }),
        ".{0,40}".prop_map(|reply| RecipientStatus::Deferred { reply }),
        ".{0,40}".prop_map(|reply| RecipientStatus::Failed { reply }),
    ]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (
        address(),
        proptest::option::of(".{0,40}"),
        proptest::option::of(any::<[bool; 4]>()),
        status(),
    )
        .prop_map(|(address, orcpt, notify, status)| Recipient {
            address,
            orcpt,
            notify: notify.map(|[success, failure, delay, never]| Notify {
                success,
                failure,
                delay,
                never,
            }),
            status,
        })
}

/// Arbitrary valid envelopes (sender may be empty, 1 to 5 recipients) for `id` and
/// content of `size` bytes.
pub(crate) fn arb_envelope(id: QueueId, size: u64) -> impl Strategy<Value = Envelope> {
    (
        prop_oneof![Just(String::new()), address()],
        proptest::collection::vec(recipient(), 1..5),
        (
            proptest::option::of(any::<u64>()),
            any::<bool>(),
            proptest::option::of(".{0,20}"),
        ),
        (
            ".{0,30}",
            proptest::option::of(".{0,30}"),
            ".{0,30}",
            any::<bool>(),
        ),
        any::<i64>(),
    )
        .prop_map(
            move |(sender, recipients, (declared_size, smtputf8, dsn_envid), client, arrival)| {
                let (address, verified_name, helo, esmtp) = client;
                Envelope {
                    quarantine: None,
                    id,
                    sender,
                    recipients,
                    params: MailParams {
                        declared_size,
                        body: BodyType::BinaryMime,
                        smtputf8,
                        dsn_ret: Some(DsnRet::Full),
                        dsn_envid,
                    },
                    client: ClientInfo {
                        address,
                        verified_name,
                        helo,
                        esmtp,
                        tls: None,
                        listener: "submission".into(),
                        ..Default::default()
                    },
                    arrival_micros: arrival,
                    size,
                }
            },
        )
}

/// Recomputes the header and trailer CRCs of an encoded file after a deliberate edit, so
/// that a test reaches the check it means to reach.
pub(crate) fn reseal(file: &mut [u8]) {
    use crate::format::TRAILER_LEN;
    if file.len() < 16 + TRAILER_LEN {
        return;
    }
    let hcrc = crc32c::crc32c(&file[0..12]);
    file[12..16].copy_from_slice(&hcrc.to_le_bytes());
    let t = file.len() - TRAILER_LEN;
    let tcrc = crc32c::crc32c(&file[t..t + 52]);
    file[t + 52..t + 56].copy_from_slice(&tcrc.to_le_bytes());
}
