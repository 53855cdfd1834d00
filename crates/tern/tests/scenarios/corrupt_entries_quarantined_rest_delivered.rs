//! A thousand queued messages, a hundred of them damaged while Tern is stopped, in every
//! way a file can be: cut short, bytes flipped in each section, emptied, body or envelope
//! cut out, an envelope that is well framed (checksums recomputed) but breaks the JSON or
//! the envelope's rules, an unknown format version, and damaged delivery records. Tern
//! starts, quarantines exactly those hundred (files in `corrupt/`, event 3003, `tern
//! queue list --state corrupt`), delivers the other 900 exactly once, and ends with an
//! empty queue apart from `corrupt/`.
//!
//! The spool has no index file (the queue is the set of files, docs/SPOOL.md); the
//! closest things are the delivery records and the lock file, so those are what is
//! damaged or deleted besides the messages. Records are frames in the message files now;
//! the records damaged here are legacy ones (`records/<id>`, as versions before 2026-12
//! wrote them and this version still honours), made from the messages' frames while Tern
//! is stopped:
//! - a damaged record (flipped, cut, empty, another message's, a recipient count that
//!   disagrees with the envelope, a well-framed record with bad JSON, garbage where a
//!   message had no record) quarantines its intact message, with the record beside it,
//!   when the queue loads it: such a message counts among the hundred. Ignoring the
//!   record would resend to recipients that already have the message.
//! - a deleted record means "no attempt finished": its message (all recipients still
//!   deferred here) is delivered like any other.
//! - a record without a message is removed at start; a deleted `spool.lock` is recreated.
//!
//! The messages with records got them honestly: they were tried once against a receiver
//! that deferred them, before the rest were queued with delivery off.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tern_spool::format::{self, HEADER_LEN, TRAILER_LEN, Trailer};
use tern_spool::{DeliveryRecord, QueueId, RecipientRecord};

use crate::common::peers::SmtpPeer;
use crate::common::{
    Setup, Tern, header_value, send_batch, simple_message, strip_record_frames, write_legacy_record,
};

const TOTAL: usize = 1000;
/// Messages that get a delivery record before the rest are queued.
const TRIED: usize = 60;

/// Ways to damage a message file.
#[derive(Debug, Clone, Copy)]
enum FileDamage {
    TruncateHalf,
    CutLastByte,
    HeaderOnly,
    ZeroLength,
    FlipContent,
    FlipEnvelope,
    FlipHeaderMagic,
    FlipHeaderCrc,
    FlipTrailerLength,
    FlipTrailerMagic,
    /// The content section cut out, nothing else changed.
    RemoveBody,
    /// The content cut out and the file re-framed with correct checksums, so only the
    /// envelope's `size` disagrees.
    RemoveBodyReframed,
    /// The envelope section cut out.
    RemoveEnvelope,
    /// Well framed, checksums right, but the envelope is not JSON.
    EnvelopeNotJson,
    /// Well framed JSON that breaks the envelope's rules: no recipients.
    EnvelopeNoRecipients,
    /// ... another message's id.
    EnvelopeWrongId,
    /// ... a control character in the recipient address.
    EnvelopeBadAddress,
    /// Format version 2 in the header (its checksum recomputed).
    HeaderVersion,
    /// Format version 2 in the trailer (its checksum recomputed).
    TrailerVersion,
}

const FILE_DAMAGES: [FileDamage; 19] = [
    FileDamage::TruncateHalf,
    FileDamage::CutLastByte,
    FileDamage::HeaderOnly,
    FileDamage::ZeroLength,
    FileDamage::FlipContent,
    FileDamage::FlipEnvelope,
    FileDamage::FlipHeaderMagic,
    FileDamage::FlipHeaderCrc,
    FileDamage::FlipTrailerLength,
    FileDamage::FlipTrailerMagic,
    FileDamage::RemoveBody,
    FileDamage::RemoveBodyReframed,
    FileDamage::RemoveEnvelope,
    FileDamage::EnvelopeNotJson,
    FileDamage::EnvelopeNoRecipients,
    FileDamage::EnvelopeWrongId,
    FileDamage::EnvelopeBadAddress,
    FileDamage::HeaderVersion,
    FileDamage::TrailerVersion,
];

/// Ways to damage the delivery record of an intact message.
#[derive(Debug, Clone, Copy)]
enum RecordDamage {
    Flip,
    Truncate,
    ZeroLength,
    /// Another message's (valid) record.
    OtherMessages,
    /// Valid framing, one recipient more than the envelope has.
    RecipientCount,
    /// Valid framing (length and checksum right) around text that is not JSON.
    NotJson,
}

const RECORD_DAMAGES: [RecordDamage; 6] = [
    RecordDamage::Flip,
    RecordDamage::Truncate,
    RecordDamage::ZeroLength,
    RecordDamage::OtherMessages,
    RecordDamage::RecipientCount,
    RecordDamage::NotJson,
];

/// The parts of a valid message file.
struct Parts {
    header: Vec<u8>,
    content: Vec<u8>,
    envelope: Vec<u8>,
    trailer: Vec<u8>,
}

fn split(file: &[u8]) -> Parts {
    let tail = file.len() - TRAILER_LEN;
    let t = format::decode_trailer(&file[tail..], file.len() as u64).expect("valid trailer");
    let env_at = usize::try_from(t.envelope_offset).unwrap();
    Parts {
        header: file[..HEADER_LEN].to_vec(),
        content: file[HEADER_LEN..env_at].to_vec(),
        envelope: file[env_at..tail].to_vec(),
        trailer: file[tail..].to_vec(),
    }
}

/// A file with correct framing and checksums around `content` and `envelope`.
fn framed(content: &[u8], envelope: &[u8]) -> Vec<u8> {
    let content_len = content.len() as u64;
    let t = Trailer {
        version: format::VERSION,
        flags: 0,
        content_crc: crc32c::crc32c(content),
        content_offset: HEADER_LEN as u64,
        content_len,
        envelope_offset: HEADER_LEN as u64 + content_len,
        envelope_len: envelope.len() as u64,
        envelope_crc: crc32c::crc32c(envelope),
    };
    let mut out = format::encode_header().to_vec();
    out.extend_from_slice(content);
    out.extend_from_slice(envelope);
    out.extend_from_slice(&format::encode_trailer(&t));
    out
}

fn with_envelope(p: &Parts, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut env: Value = serde_json::from_slice(&p.envelope).unwrap();
    edit(&mut env);
    framed(&p.content, &serde_json::to_vec(&env).unwrap())
}

fn damage_file(path: &Path, how: FileDamage, other_id: &str) {
    let file = std::fs::read(path).unwrap();
    let p = split(&file);
    let flip = |at: usize| {
        let mut f = file.clone();
        f[at] ^= 0x40;
        f
    };
    let env_at = HEADER_LEN + p.content.len();
    let tail = file.len() - TRAILER_LEN;
    let cat = |parts: &[&[u8]]| parts.concat();
    let out = match how {
        FileDamage::TruncateHalf => file[..file.len() / 2].to_vec(),
        FileDamage::CutLastByte => file[..file.len() - 1].to_vec(),
        FileDamage::HeaderOnly => file[..HEADER_LEN].to_vec(),
        FileDamage::ZeroLength => Vec::new(),
        FileDamage::FlipContent => flip(HEADER_LEN + p.content.len() / 2),
        FileDamage::FlipEnvelope => flip(env_at + p.envelope.len() / 2),
        FileDamage::FlipHeaderMagic => flip(1),
        FileDamage::FlipHeaderCrc => flip(13),
        FileDamage::FlipTrailerLength => flip(tail + 25),
        FileDamage::FlipTrailerMagic => flip(tail + 2),
        FileDamage::RemoveBody => cat(&[&p.header, &p.envelope, &p.trailer]),
        FileDamage::RemoveBodyReframed => framed(b"", &p.envelope),
        FileDamage::RemoveEnvelope => cat(&[&p.header, &p.content, &p.trailer]),
        FileDamage::EnvelopeNotJson => framed(&p.content, b"{\"id\": \"not closed"),
        FileDamage::EnvelopeNoRecipients => {
            with_envelope(&p, |e| e["recipients"] = Value::Array(Vec::new()))
        }
        FileDamage::EnvelopeWrongId => with_envelope(&p, |e| e["id"] = other_id.into()),
        FileDamage::EnvelopeBadAddress => with_envelope(&p, |e| {
            e["recipients"][0]["address"] = "a\u{7}b@relay.test".into()
        }),
        FileDamage::HeaderVersion => {
            let mut f = file.clone();
            f[8..10].copy_from_slice(&2u16.to_le_bytes());
            let crc = crc32c::crc32c(&f[0..12]);
            f[12..16].copy_from_slice(&crc.to_le_bytes());
            f
        }
        FileDamage::TrailerVersion => {
            let mut f = file.clone();
            f[tail + 8..tail + 10].copy_from_slice(&2u16.to_le_bytes());
            let crc = crc32c::crc32c(&f[tail..tail + 52]);
            f[tail + 52..].copy_from_slice(&crc.to_le_bytes());
            f
        }
    };
    let own_id: QueueId = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
    assert!(
        format::decode(&out, Some(own_id)).is_err(),
        "{how:?} left a valid file"
    );
    std::fs::write(path, out).unwrap();
}

/// A record file with correct framing around `json`.
fn framed_record(json: &[u8]) -> Vec<u8> {
    let mut out = tern_spool::record::RECORD_MAGIC.to_vec();
    out.extend_from_slice(&u32::try_from(json.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(json).to_le_bytes());
    out.extend_from_slice(json);
    out
}

fn damage_record(path: &Path, how: RecordDamage, other_record: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let out = match how {
        RecordDamage::Flip => {
            let mut b = bytes.clone();
            let at = b.len() - 3;
            b[at] ^= 0x40;
            b
        }
        RecordDamage::Truncate => bytes[..bytes.len() / 2].to_vec(),
        RecordDamage::ZeroLength => Vec::new(),
        RecordDamage::OtherMessages => std::fs::read(other_record).unwrap(),
        RecordDamage::RecipientCount => {
            let id: QueueId = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            let mut r = tern_spool::record::decode(&bytes, id).expect("valid record");
            r.recipients.push(RecipientRecord::default());
            tern_spool::record::encode(&r)
        }
        RecordDamage::NotJson => framed_record(b"{\"id\": [}"),
    };
    std::fs::write(path, out).unwrap();
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Subject of each message the receiver got, with its number of copies.
fn received_subjects(peer: &SmtpPeer) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in peer.received() {
        if let Some(s) = header_value(&r.content, "Subject") {
            *out.entry(s).or_default() += 1;
        }
    }
    out
}

fn wait_until(what: &str, limit: Duration, tern: &Tern, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}\n--- last events ---\n{}",
            tern.events()
                .iter()
                .rev()
                .take(20)
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn hundred_damaged_of_thousand_are_quarantined_and_the_rest_delivered() {
    let mut peer = SmtpPeer::start("127.0.0.3", &["tempfail-rcpt=^tried-"]);
    let route = format!(
        "[delivery]\nconnect_timeout_secs = 2\ngreeting_timeout_secs = 3\ncommand_timeout_secs = 5\n\
         [[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
        peer.addr
    );
    let mut tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .section(&route)
        // Per-message files: the test damages a hundred of them.
        .section("[spool]\ncommit = \"file\"\n")
        .start();
    let spool = tern.spool_dir();
    let body = "a line of text to give the file some content\n".repeat(30);
    let mk = |prefix: &str, range: std::ops::Range<usize>| -> Vec<(String, Vec<u8>)> {
        range
            .map(|i| {
                (
                    format!("{prefix}-{i}@relay.test"),
                    simple_message(&format!("{prefix}-{i}"), &body),
                )
            })
            .collect()
    };

    // 1. Sixty messages are tried once and deferred: they get delivery records.
    let tried = mk("tried", 0..TRIED);
    let mut ids = send_batch(tern.addr(), 4, &tried);
    wait_until(
        "60 delivery records",
        Duration::from_secs(60),
        &tern,
        || {
            let ro = tern.spool();
            ids.iter()
                .filter(|id| {
                    id.parse::<QueueId>()
                        .ok()
                        .and_then(|q| ro.read_record(q).ok().flatten())
                        .is_some()
                })
                .count()
                == TRIED
        },
    );
    tern.stop(Duration::from_secs(20));

    // 2. The rest are queued with delivery off.
    tern.replace_in_config("deliver = true", "deliver = false");
    tern.restart();
    let fresh = mk("fresh", TRIED..TOTAL);
    ids.extend(send_batch(tern.addr(), 4, &fresh));
    tern.stop(Duration::from_secs(20));
    let subjects: BTreeMap<String, String> = ids
        .iter()
        .cloned()
        .zip(
            tried
                .iter()
                .chain(&fresh)
                .map(|(rcpt, _)| rcpt.trim_end_matches("@relay.test").to_string()),
        )
        .collect();
    assert_eq!(subjects.len(), TOTAL, "queue ids are unique");

    // Where each message is now (a clean stop puts messages in process back in incoming/).
    let mut location: BTreeMap<String, &str> = BTreeMap::new();
    for state in ["incoming", "deferred", "active", "hold"] {
        for n in names(&spool.join(state)) {
            location.insert(n, state);
        }
    }
    assert_eq!(
        location.len(),
        TOTAL,
        "every message is queued: {location:?}"
    );
    // Records are frames in the message files now (their damage is covered by the
    // spool's unit tests: a torn or forged frame never counts); the damage below is to
    // records as versions before 2026-12 kept them (`records/<id>`), which are still
    // honoured. Turn the tried messages' records into that form first.
    {
        let ro = tern.spool();
        for id in &ids {
            let qid: QueueId = id.parse().unwrap();
            if let Ok(Some(rec)) = ro.read_record(qid) {
                strip_record_frames(&spool.join(location[id.as_str()]).join(id), qid);
                write_legacy_record(&spool, &rec);
            }
        }
    }
    let records = names(&spool.join("records"));
    let with_record: Vec<&String> = ids.iter().filter(|id| records.contains(*id)).collect();
    let without_record: Vec<&String> = ids.iter().filter(|id| !records.contains(*id)).collect();
    assert_eq!(with_record.len(), TRIED, "only the tried ones have records");
    let path = |id: &str| spool.join(location[id]).join(id);
    let record_path = |id: &str| spool.join("records").join(id);

    // 3. Damage: 19 kinds x 4 on messages without a record, 6 on messages with one
    // (their records must go to corrupt/ with them), 6 kinds x 2 on the records of intact
    // messages, and garbage records for 6 messages that had none: 100 in all.
    let mut damaged: BTreeSet<String> = BTreeSet::new();
    let mut file_damaged_with_record: Vec<String> = Vec::new();
    let mut record_damaged: Vec<String> = Vec::new();
    let mut plain = without_record.iter().step_by(9);
    for kind in FILE_DAMAGES {
        for _ in 0..4 {
            let id = plain.next().unwrap();
            damage_file(&path(id), kind, &ids[0]);
            damaged.insert(id.to_string());
        }
    }
    let mut tried_iter = with_record.iter();
    for kind in [
        FileDamage::FlipContent,
        FileDamage::TruncateHalf,
        FileDamage::ZeroLength,
        FileDamage::EnvelopeNotJson,
        FileDamage::HeaderVersion,
        FileDamage::RemoveEnvelope,
    ] {
        let id = tried_iter.next().unwrap();
        damage_file(&path(id), kind, &ids[1]);
        damaged.insert(id.to_string());
        file_damaged_with_record.push(id.to_string());
    }
    let intact_record = record_path(with_record[TRIED - 1]);
    for kind in RECORD_DAMAGES {
        for _ in 0..2 {
            let id = tried_iter.next().unwrap();
            damage_record(&record_path(id), kind, &intact_record);
            damaged.insert(id.to_string());
            record_damaged.push(id.to_string());
        }
    }
    for id in without_record.iter().skip(1).step_by(50).take(6) {
        assert!(!damaged.contains(*id));
        std::fs::write(record_path(id), b"garbage where no record was").unwrap();
        damaged.insert(id.to_string());
        record_damaged.push(id.to_string());
    }
    assert_eq!(damaged.len(), 100, "a hundred distinct messages damaged");
    // Not damage: records deleted (their messages go as if never tried), a record whose
    // message does not exist, the lock file deleted.
    let mut record_deleted = Vec::new();
    for _ in 0..10 {
        let id = tried_iter.next().unwrap();
        std::fs::remove_file(record_path(id)).unwrap();
        record_deleted.push(id.to_string());
    }
    let orphan = QueueId::generate();
    std::fs::write(
        record_path(&orphan.to_string()),
        tern_spool::record::encode(&DeliveryRecord::new(orphan, 1)),
    )
    .unwrap();
    std::fs::remove_file(spool.join("spool.lock")).unwrap();
    // The spool key (which authenticates segment frames) is not an index either, nor is
    // the crash evidence (the probe journal and the last-gasp record): damaged, it counts
    // nothing against anyone and stops nothing.
    std::fs::write(spool.join("probe"), b"\xff\x00garbage\nprobe not-an-id\n").unwrap();
    std::fs::write(spool.join("last-gasp"), vec![0xa5u8; 4096]).unwrap();
    let evidence = ["spool.key", "probe", "last-gasp"];
    let index_like: Vec<String> = names(&spool)
        .into_iter()
        .filter(|n| !spool.join(n).is_dir() && !evidence.contains(&n.as_str()))
        .collect();
    assert!(
        index_like.is_empty(),
        "no index file in the spool (only directories now): {index_like:?}"
    );

    // 4. Restart with delivery on and a receiver that takes everything.
    peer.restart(&["accept"]);
    tern.replace_in_config("deliver = false", "deliver = true");
    tern.restart();

    let good: BTreeSet<&String> = subjects
        .iter()
        .filter(|(id, _)| !damaged.contains(*id))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(good.len(), TOTAL - 100);
    wait_until("900 delivered", Duration::from_secs(240), &tern, || {
        received_subjects(&peer).len() >= good.len()
    });
    wait_until(
        "the queue empties (all but corrupt/)",
        Duration::from_secs(60),
        &tern,
        || {
            [
                "incoming", "active", "deferred", "hold", "poison", "records",
            ]
            .iter()
            .all(|d| names(&spool.join(d)).is_empty())
        },
    );

    // Delivered: exactly the 900 good ones, once each; none of the damaged.
    let got = received_subjects(&peer);
    let got_set: BTreeSet<&String> = got.keys().collect();
    assert_eq!(
        got_set, good,
        "the receiver has exactly the undamaged messages"
    );
    let copies: usize = got.values().sum();
    assert_eq!(copies, good.len(), "each delivered once: {copies} copies");
    for id in &record_deleted {
        assert!(
            got.contains_key(&subjects[id]),
            "{id} (record deleted) delivered"
        );
    }

    // Quarantined: exactly the damaged hundred, each with a reason.
    let corrupt = names(&spool.join("corrupt"));
    let messages: BTreeSet<String> = corrupt
        .iter()
        .filter(|n| !n.contains('.'))
        .cloned()
        .collect();
    assert_eq!(
        messages, damaged,
        "corrupt/ holds exactly the damaged messages"
    );
    for id in &damaged {
        assert!(
            corrupt.contains(&format!("{id}.reason")),
            "{id} has no reason"
        );
    }
    let expected_records: BTreeSet<String> = file_damaged_with_record
        .iter()
        .chain(&record_damaged)
        .map(|id| format!("{id}.record"))
        .collect();
    let quarantined_records: BTreeSet<String> = corrupt
        .iter()
        .filter(|n| n.ends_with(".record"))
        .cloned()
        .collect();
    assert_eq!(
        quarantined_records, expected_records,
        "every damaged message that had a record keeps it beside it in corrupt/"
    );
    let listed: BTreeSet<String> = tern
        .queue_json(&["--state", "corrupt"])
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, damaged, "tern queue list --state corrupt");
    let events = tern.wait_for_events(3003, 100, Duration::from_secs(10));
    let quarantined_ids: BTreeSet<String> = events
        .iter()
        .map(|e| {
            let file = e["file"].as_str().unwrap();
            file.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    assert_eq!(events.len(), 100, "one event 3003 per damaged message");
    assert_eq!(quarantined_ids, damaged);
    // Damaged files are caught by the scan at start, or for deferred/ by the background
    // load of the backlog right after it (event 4055: `damaged`, which the queue then
    // quarantines, since it may be delivering them; names and non-files
    // `quarantined`); damaged records when loaded.
    let recovered = tern.events_with_id(3001);
    let backlog = tern.wait_for_events(4055, 1, Duration::from_secs(10));
    let field = |v: &Value, f: &str| v[f].as_str().unwrap().parse::<usize>().unwrap();
    let count = |v: &Value| field(v, "quarantined");
    let backlog = backlog.last().unwrap();
    assert_eq!(
        count(recovered.last().unwrap()) + count(backlog) + field(backlog, "damaged"),
        FILE_DAMAGES.len() * 4 + file_damaged_with_record.len(),
        "damaged files are caught by the scan at start or the backlog's load; damaged records when loaded"
    );
    let everything = tern.queue_json(&[]);
    assert!(
        everything.iter().all(|m| m["state"] == "corrupt"),
        "only corrupt entries are left: {everything:?}"
    );
    assert_eq!(everything.len(), 100);
    assert!(spool.join("spool.lock").exists(), "the lock file is back");
    tern.stop(Duration::from_secs(20));
}
