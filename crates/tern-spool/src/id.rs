//! Queue ids: the name of a message in the spool, in logs and in Received headers.
//!
//! Text form: exactly [`QUEUE_ID_LEN`] (15) characters of upper-case Crockford base32
//! (`0-9A-Z` without `I L O U`), most significant digit first. The 75 bits are:
//! - bits 74..20 (first 11 characters): microseconds since the Unix epoch (55 bits, good
//!   until the year 3111);
//! - bits 19..0 (last 4 characters): a per-process random seed mixed with a counter; on
//!   a cluster node ([`set_node_id`], `cluster.node_id` 1..=1023) bits 19..10 (characters
//!   12 and 13) are the node's number and only bits 9..0 are random, so ids of different
//!   nodes never collide and the node is recognisable in an id ([`QueueId::node`]).
//!
//! Invariants:
//! - The value is always below 2^75, so every value has exactly one text form, and
//!   because the alphabet is in ASCII order, comparing ids, their `u128` values and their
//!   texts gives the same order: by creation time.
//! - [`QueueId::generate`] is strictly monotonic within a process: the time part is
//!   `max(now, last + 1)` via a compare-and-swap, so two ids from one process never
//!   collide even when the clock stalls or steps back. Across restarts the clock has moved
//!   on; the random low bits separate ids of different processes made in the same
//!   microsecond (e.g. a tool injecting mail while the server runs).
//!
//! Trust: [`QueueId::parse`] is strict (length, alphabet, case), so a parsed id is safe to
//! use as a file name: it never contains `/`, `.` or anything else.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Length of a queue id's text form.
pub const QUEUE_ID_LEN: usize = 15;
const LOW_BITS: u32 = 20;
const TIME_MASK: u64 = (1 << 55) - 1;
const LOW_MASK: u64 = (1 << LOW_BITS) - 1;
const ALPHABET: [u8; 32] = *b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A message's queue id. Invariant: the value is below 2^75 (see the module header).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(u128);

/// Why a string is not a queue id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueIdError {
    /// Not exactly [`QUEUE_ID_LEN`] bytes long.
    #[error("a queue id has {QUEUE_ID_LEN} characters, this has {0} bytes")]
    Length(usize),
    /// A character outside upper-case Crockford base32.
    #[error("invalid character {ch:?} at position {position} of queue id")]
    Character {
        /// Byte offset of the character.
        position: usize,
        /// The character.
        ch: char,
    },
}

static LAST_MICROS: AtomicU64 = AtomicU64::new(0);
static COUNTER: AtomicU64 = AtomicU64::new(0);
static SEED: OnceLock<u64> = OnceLock::new();
static NODE: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
const NODE_SHIFT: u32 = 10;
const NODE_MAX: u16 = 1023;

/// Sets this process's cluster node number (1..=1023; 0, the default, is no cluster),
/// written into every id made afterwards. Numbers above 1023 are refused (`false`).
pub fn set_node_id(node: u16) -> bool {
    if node > NODE_MAX {
        return false;
    }
    NODE.store(node, Ordering::Relaxed);
    true
}

/// Now in Unix microseconds (the one clock helper, `tern_watchdog::clock`), as the id's
/// unsigned time field.
fn now_micros() -> u64 {
    u64::try_from(tern_watchdog::clock::unix_micros()).unwrap_or(0)
}

fn process_seed() -> u64 {
    *SEED.get_or_init(|| {
        // RandomState is keyed from the OS random source once per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(now_micros());
        h.finish()
    })
}

fn digit_value(c: u8) -> Option<u128> {
    let v = match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'H' => c - b'A' + 10,
        b'J' | b'K' => c - b'J' + 18,
        b'M' | b'N' => c - b'M' + 20,
        b'P'..=b'T' => c - b'P' + 22,
        b'V'..=b'Z' => c - b'V' + 27,
        _ => return None,
    };
    Some(u128::from(v))
}

/// The low 20 bits: the random mix, with the node number in bits 19..10 when set.
fn low_bits(mix: u64, node: u16) -> u64 {
    if node == 0 {
        mix & LOW_MASK
    } else {
        (u64::from(node.min(NODE_MAX)) << NODE_SHIFT) | (mix & ((1 << NODE_SHIFT) - 1))
    }
}

impl QueueId {
    /// A new id, unique across restarts and later than every id this process made before.
    pub fn generate() -> QueueId {
        let now = now_micros().min(TIME_MASK);
        let mut last = LAST_MICROS.load(Ordering::Relaxed);
        let micros = loop {
            let next = now.max(last.saturating_add(1)).min(TIME_MASK);
            match LAST_MICROS.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break next,
                Err(current) => last = current,
            }
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mix = process_seed() ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23);
        QueueId::from_parts(micros, low_bits(mix, NODE.load(Ordering::Relaxed)))
    }

    fn from_parts(micros: u64, low: u64) -> QueueId {
        QueueId((u128::from(micros & TIME_MASK) << LOW_BITS) | u128::from(low & LOW_MASK))
    }

    /// Parses the text form strictly: 15 characters, upper-case Crockford base32.
    pub fn parse(s: &str) -> Result<QueueId, QueueIdError> {
        if s.len() != QUEUE_ID_LEN {
            return Err(QueueIdError::Length(s.len()));
        }
        let mut v: u128 = 0;
        for (position, ch) in s.char_indices() {
            let d = u8::try_from(ch)
                .ok()
                .and_then(digit_value)
                .ok_or(QueueIdError::Character { position, ch })?;
            v = (v << 5) | d;
        }
        Ok(QueueId(v))
    }

    /// The cluster node number in the id (bits 19..10): meaningful for ids made by a node
    /// with `cluster.node_id` set; for others it is random.
    pub fn node(&self) -> u16 {
        u16::try_from((self.0 >> NODE_SHIFT) & u128::from(NODE_MAX)).unwrap_or(0)
    }

    /// The arrival time encoded in the id, microseconds since the Unix epoch.
    pub fn arrival_micros(&self) -> i64 {
        // At most 55 bits, so always fits.
        i64::try_from(self.0 >> LOW_BITS).unwrap_or(i64::MAX)
    }

    /// The text form as ASCII bytes. Pure arithmetic on a stack array: no allocation, no
    /// lock, no panic, so it may be called from a signal handler (the last-gasp record).
    pub fn to_ascii(self) -> [u8; QUEUE_ID_LEN] {
        let mut out = [0u8; QUEUE_ID_LEN];
        let mut v = self.0;
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(v & 31) as usize];
            v >>= 5;
        }
        out
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ascii = self.to_ascii();
        f.write_str(std::str::from_utf8(&ascii).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({self})")
    }
}

impl FromStr for QueueId {
    type Err = QueueIdError;
    fn from_str(s: &str) -> Result<QueueId, QueueIdError> {
        QueueId::parse(s)
    }
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ascii = self.to_ascii();
        let text = std::str::from_utf8(&ascii).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }
}

impl<'de> serde::Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<QueueId, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = QueueId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 15-character queue id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<QueueId, E> {
                QueueId::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_are_strictly_increasing_and_round_trip() {
        let mut prev = QueueId::generate();
        for _ in 0..10_000 {
            let next = QueueId::generate();
            assert!(next > prev);
            assert!(next.to_string() > prev.to_string());
            assert!(next.arrival_micros() > prev.arrival_micros());
            assert_eq!(QueueId::parse(&next.to_string()), Ok(next));
            prev = next;
        }
    }

    #[test]
    fn a_node_number_is_in_the_id_and_recognisable() {
        for node in [1u16, 7, 512, 1023] {
            for mix in [0u64, u64::MAX, 0x1234_5678_9abc] {
                let id = QueueId::from_parts(1_700_000_000_000_000, low_bits(mix, node));
                assert_eq!(id.node(), node);
                let text = id.to_string();
                assert_eq!(QueueId::parse(&text), Ok(id));
                // Characters 12 and 13 carry the node: equal nodes, equal characters.
                let other = QueueId::from_parts(1_700_000_000_000_001, low_bits(!mix, node));
                assert_eq!(text.get(11..13), other.to_string().get(11..13));
            }
        }
        assert_ne!(
            QueueId::from_parts(5, low_bits(9, 1)),
            QueueId::from_parts(5, low_bits(9, 2))
        );
        assert!(!set_node_id(1024));
    }

    #[test]
    fn ids_from_many_threads_never_collide() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..5000).map(|_| QueueId::generate()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for h in handles {
            for id in h.join().unwrap_or_default() {
                assert!(all.insert(id), "duplicate {id}");
            }
        }
        assert_eq!(all.len(), 20_000);
    }

    #[test]
    fn arrival_time_is_now() {
        let before = i64::try_from(now_micros()).unwrap_or(0);
        let id = QueueId::generate();
        assert!(id.arrival_micros() >= before);
        assert!(id.arrival_micros() < before + 60_000_000);
    }

    #[test]
    fn parse_is_strict() {
        assert!(QueueId::parse("0K3M9QW2XYZAB7F").is_ok());
        assert_eq!(
            QueueId::parse("0K3M9QW2XYZAB7"),
            Err(QueueIdError::Length(14))
        );
        assert_eq!(QueueId::parse(""), Err(QueueIdError::Length(0)));
        for bad in [
            "0k3M9QW2XYZAB7F",
            "0K3M9QW2XYZAB7I",
            "0K3M9QW2XYZAB7L",
            "0K3M9QW2XYZAB7O",
            "0K3M9QW2XYZAB7U",
            "0K3M9QW2XYZ/B7F",
            "0K3M9QW2XYZ.B7F",
            "0K3M9QW2XYZAB7\u{e9}",
        ] {
            assert!(
                matches!(
                    QueueId::parse(bad),
                    Err(QueueIdError::Character { .. }) | Err(QueueIdError::Length(_))
                ),
                "{bad} accepted"
            );
        }
        assert_eq!(
            QueueId::parse("0K3M9QW2XYZAB7u"),
            Err(QueueIdError::Character {
                position: 14,
                ch: 'u'
            })
        );
    }

    #[test]
    fn extremes_round_trip() {
        let max = QueueId::parse("ZZZZZZZZZZZZZZZ").ok();
        assert_eq!(
            max.map(|m| m.to_string()).as_deref(),
            Some("ZZZZZZZZZZZZZZZ")
        );
        assert_eq!(max.map(|m| m.arrival_micros()), Some((1i64 << 55) - 1));
        let zero = QueueId::from_parts(0, 0);
        assert_eq!(zero.to_string(), "000000000000000");
    }

    #[test]
    fn serde_uses_the_text_form() {
        let id = QueueId::generate();
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, format!("\"{id}\""));
        let back: Result<QueueId, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(id));
        assert!(serde_json::from_str::<QueueId>("\"../../etc/passwd\"").is_err());
        assert!(serde_json::from_str::<QueueId>("12").is_err());
    }

    proptest! {
        #[test]
        fn text_order_equals_value_order(a in 0u64..=TIME_MASK, b in 0u64..=LOW_MASK,
                                         c in 0u64..=TIME_MASK, d in 0u64..=LOW_MASK) {
            let x = QueueId::from_parts(a, b);
            let y = QueueId::from_parts(c, d);
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
            prop_assert_eq!(QueueId::parse(&x.to_string()), Ok(x));
            prop_assert_eq!(x.arrival_micros(), i64::try_from(a).unwrap_or(-1));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = QueueId::parse(&s);
        }
    }
}
