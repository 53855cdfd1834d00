//! The streaming downgrade's memory does not grow with the message: a 24 MB 8-bit
//! multipart (a UTF-8 text part of short lines, an 8-bit binary attachment that is one
//! 6 MB line, an 8-bit part inside a nested message) is converted in pieces of 64 KiB
//! with less than 2 MiB of heap live at any moment above what the test itself holds
//! (the input, and the output's digest). The whole-buffer form needs the message and
//! its copy, about 60 MB here, so this test fails against it.
//!
//! A counting global allocator measures the peak of live heap; this file has a single
//! test so that nothing else allocates meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tern_convert::{Limits, Scanner, Source};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same layout, as the caller promised for us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
        }
        // SAFETY: as the caller promised.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn message() -> Vec<u8> {
    let mut m = "Subject: Größe\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n--=_b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".as_bytes().to_vec();
    let mut i = 0usize;
    while m.len() < 12_000_000 {
        m.extend_from_slice("Grüße aus Köln, ça va ".as_bytes());
        m.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, i % 71));
        m.extend_from_slice(b"\r\n");
        i += 1;
    }
    m.extend_from_slice(b"--=_b\r\nContent-Type: application/octet-stream\r\n\r\n");
    let block: Vec<u8> = (0..=255u8)
        .filter(|b| !matches!(b, b'\r' | b'\n' | b'-'))
        .collect();
    while m.len() < 18_000_000 {
        m.extend_from_slice(&block);
    }
    m.extend_from_slice(b"\r\n--=_b\r\nContent-Type: message/rfc822\r\n\r\nSubject: innen\r\n\r\n");
    while m.len() < 24_000_000 {
        m.extend_from_slice("Zeile für Zeile\r\n".as_bytes());
    }
    m.extend_from_slice(b"--=_b--\r\n");
    m
}

#[test]
fn streaming_downgrade_holds_a_bounded_amount_of_memory() {
    let content = message();
    let piece = 64 * 1024;
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);

    let mut scanner = Scanner::new(Source::EightBit, &Limits::default());
    for p in content.chunks(piece) {
        scanner.feed(p).unwrap();
    }
    let plan = scanner.finish().unwrap();
    assert!(plan.needed());
    let mut writer = plan.writer();
    let mut out = Vec::new();
    // What a caller does with the copy: writes it away. Here: its length, its octets
    // checked, nothing kept.
    let (mut len, mut eight_bit) = (0usize, false);
    for p in content.chunks(piece) {
        writer.feed(p, &mut out).unwrap();
        len += out.len();
        eight_bit |= !out.is_ascii();
        out.clear();
    }
    writer.finish(&mut out).unwrap();
    len += out.len();
    eight_bit |= !out.is_ascii();
    drop(out);
    let (parts, fields) = (plan.parts_encoded(), plan.fields_encoded());
    drop(plan);

    let peak = PEAK.load(Ordering::SeqCst) - base;
    assert!(!eight_bit);
    assert!(len > content.len(), "{len}");
    assert_eq!((parts, fields), (3, 1));
    assert!(
        peak < 2 * 1024 * 1024,
        "{peak} octets of heap live at the peak for a {} octet message",
        content.len()
    );
}
