//! The downgrade in two passes over a stream, with memory bounded whatever the size of
//! the message: [`Scanner`] reads the input once and decides every edit (a [`Plan`]:
//! a few facts per entity), [`Writer`] reads it again and writes the 7-bit copy, piece
//! by piece, checking its own output as it goes (no 8-bit octet; reading it gives the
//! same tree). Both passes are the [`crate::walk`] reading with a different handler.
//!
//! Same output as [`crate::downgrade`] (the rules are in `downgrade.rs`; the property
//! tests compare the two on every chunk size): the edits are the same, made where the
//! walker says an octet is, with the same encoders (their streaming forms share the
//! whole-buffer code). Why two passes: whether a leaf is encoded, and how (its
//! charset for an added Content-Type), depends on its whole body, and the fields that
//! say so come before it.
//!
//! Memory: the walker's line prefix and held fields ([`crate::walk::LINE_KEEP`],
//! [`crate::walk::FIELD_MAX`]), one held field per pass for rewriting, encoder states of
//! a few octets, and per entity a [`Plan`] entry and a shape entry (a few dozen octets
//! each, at most [`crate::Limits::max_parts`]) and per open multipart its boundary
//! (RFC 2046 says at most 70 characters; never more than a held field, 64 KiB, times
//! [`crate::Limits::max_depth`]); the writer's output for a piece is at most 5 times
//! the piece plus the rewritten fields. Differences from the whole-buffer
//! form: the refusals of `walk.rs` ([`DowngradeError::FieldTooLong`],
//! [`DowngradeError::LineTooLong`]), and, for a message with several faults, which
//! error is reported first.
//!
//! Trust: the content is hostile; no panic, no indexing. A reader that yields other
//! octets the second time gives [`DowngradeError::Inconsistent`] or
//! [`DowngradeError::StructureChanged`] at worst, never an unchecked copy.

use std::hash::{BuildHasher, RandomState};

use mail_parser::MessageParser;

use crate::encode::{Base64Encoder, Breaks, QpEncoder, Requoter};
use crate::header::{Cte, Field};
use crate::lines::has_8bit;
use crate::walk::{FIELD_MAX, FieldEnd, Handler, HeaderInfo, Kind, Name, Role, Walker};
use crate::{DowngradeError, Limits, Source};

/// Longest line SMTP carries (RFC 5321 §4.5.3.1.6), without its CRLF.
const MAX_LINE: usize = 998;

/// What is done to a leaf's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Action {
    #[default]
    Copy,
    Qp(Breaks),
    Base64,
    /// Quoted-printable with 8-bit octets: decoded and encoded again.
    Requote,
    /// Base64 with 8-bit octets: those removed.
    Strip8,
}

/// The decisions for one entity.
#[derive(Debug, Clone, Copy, Default)]
struct EntityPlan {
    action: Action,
    /// The Content-Transfer-Encoding to set (replacing the first field, removing the
    /// others, or added).
    cte: Option<&'static str>,
    /// A `Content-Type: text/plain` with this charset is added.
    charset: Option<&'static str>,
    /// `MIME-Version: 1.0` is added.
    mime_version: bool,
    /// The multipart's first text was a preamble (not a leaf).
    preamble: bool,
}

/// One entity as the structure check compares it: depth, media type (hashed with a
/// per-conversion random key), body kind, number of parts.
type Shape = (usize, u64, Kind, usize);

/// What the first pass decided.
#[derive(Debug)]
pub struct Plan {
    source: Source,
    limits: Limits,
    entities: Vec<EntityPlan>,
    shape: Vec<Shape>,
    hasher: RandomState,
    eight_bit: bool,
    parts_encoded: usize,
    fields_encoded: usize,
}

impl Plan {
    /// Whether a copy is needed: `false` for 8-bit MIME content that has no 8-bit
    /// octet (sent as it is, like [`crate::downgrade`] returning it borrowed).
    pub fn needed(&self) -> bool {
        self.source == Source::Binary || self.eight_bit
    }

    /// Body parts the copy encodes or re-encodes.
    pub fn parts_encoded(&self) -> usize {
        self.parts_encoded
    }

    /// Header fields the copy rewrites.
    pub fn fields_encoded(&self) -> usize {
        self.fields_encoded
    }

    /// The second pass: feed it the same input again.
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            walker: Walker::new(&self.limits),
            emitter: Emitter {
                plan: self,
                parser: MessageParser::new(),
                out: Vec::new(),
                entity: 0,
                field: FieldOut::Copy,
                cte_written: false,
                hold: Vec::new(),
                streamed: false,
                body: None,
            },
            check: Walker::new(&self.limits),
            checker: Checker {
                plan: self,
                stack: Vec::new(),
                seen: 0,
            },
        }
    }
}

/// The first pass of the streaming downgrade. Feed it the whole input in pieces, then
/// [`Scanner::finish`].
pub struct Scanner {
    walker: Walker,
    facts: Facts,
}

impl Scanner {
    pub fn new(source: Source, limits: &Limits) -> Scanner {
        Scanner {
            walker: Walker::new(limits),
            facts: Facts {
                source,
                limits: *limits,
                parser: MessageParser::new(),
                hasher: RandomState::new(),
                entities: Vec::new(),
                shape: Vec::new(),
                stack: Vec::new(),
                body: None,
                hold: Vec::new(),
                eight_bit: false,
                field_8bit: false,
                parts_encoded: 0,
                fields_encoded: 0,
            },
        }
    }

    /// The next piece of the input. An error is final: the message cannot be converted.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), DowngradeError> {
        self.walker.feed(piece, &mut self.facts)
    }

    /// The end of the input: the plan for the second pass.
    pub fn finish(mut self) -> Result<Plan, DowngradeError> {
        self.walker.finish(&mut self.facts)?;
        let f = self.facts;
        Ok(Plan {
            source: f.source,
            limits: f.limits,
            entities: f.entities,
            shape: f.shape,
            hasher: f.hasher,
            eight_bit: f.eight_bit,
            parts_encoded: f.parts_encoded,
            fields_encoded: f.fields_encoded,
        })
    }
}

/// The second pass: writes the copy. Feed it the same input as the [`Scanner`], in
/// pieces of any size, then [`Writer::finish`]; each call appends the next octets of the
/// copy to `out` (the caller writes them away and may clear it between calls).
pub struct Writer<'p> {
    walker: Walker,
    emitter: Emitter<'p>,
    check: Walker,
    checker: Checker<'p>,
}

impl Writer<'_> {
    /// The next piece of the input.
    pub fn feed(&mut self, piece: &[u8], out: &mut Vec<u8>) -> Result<(), DowngradeError> {
        self.walker.feed(piece, &mut self.emitter)?;
        self.flush(out)
    }

    /// The end of the input: the last octets of the copy, and the final checks.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), DowngradeError> {
        self.walker.finish(&mut self.emitter)?;
        self.flush(out)?;
        self.check.finish(&mut self.checker)?;
        if self.checker.seen != self.checker.plan.shape.len() {
            return Err(DowngradeError::StructureChanged);
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), DowngradeError> {
        let new = &self.emitter.out;
        if has_8bit(new) {
            return Err(DowngradeError::Inconsistent {
                check: "an 8-bit octet is left",
            });
        }
        self.check.feed(new, &mut self.checker)?;
        out.extend_from_slice(new);
        self.emitter.out.clear();
        Ok(())
    }
}

/// An open entity in the first pass.
#[derive(Debug)]
struct Open {
    index: usize,
    top: bool,
    main: String,
    sub: String,
    declared: bool,
    cte: Cte,
    mime_version: bool,
    /// An encoding label was introduced in it or below it.
    encoded: bool,
}

/// What the first pass learns of a leaf's body, streaming (`downgrade.rs`'s
/// `needs_encoding` and `charset_of`).
#[derive(Debug, Default)]
struct BodyFacts {
    eight_bit: bool,
    /// NUL, bare CR or LF, or a line over 998 octets.
    binary: bool,
    line: usize,
    prev: Option<u8>,
    pending_cr: bool,
    /// Invalid UTF-8 seen.
    not_utf8: bool,
    /// An incomplete UTF-8 sequence at the end of the last piece.
    utf8_tail: Vec<u8>,
}

impl BodyFacts {
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if std::mem::take(&mut self.pending_cr) && b != b'\n' {
                self.binary = true;
            }
            if b >= 0x80 {
                self.eight_bit = true;
            }
            if b == 0 || (b == b'\n' && self.prev != Some(b'\r')) {
                self.binary = true;
            }
            if b == b'\r' {
                self.pending_cr = true;
            }
            if b == b'\n' {
                self.line = 0;
            } else if b != b'\r' {
                self.line = self.line.saturating_add(1);
                if self.line > MAX_LINE {
                    self.binary = true;
                }
            }
            self.prev = Some(b);
        }
        self.utf8(data);
    }

    fn utf8(&mut self, mut data: &[u8]) {
        if self.not_utf8 || data.is_empty() {
            return;
        }
        // Complete the sequence the last piece ended with, one octet at a time.
        while !self.utf8_tail.is_empty() {
            let Some((&b, rest)) = data.split_first() else {
                return;
            };
            self.utf8_tail.push(b);
            data = rest;
            match std::str::from_utf8(&self.utf8_tail) {
                Ok(_) => self.utf8_tail.clear(),
                Err(e) if e.error_len().is_some() => {
                    self.not_utf8 = true;
                    return;
                }
                Err(_) => {}
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => {}
            Err(e) if e.error_len().is_some() => self.not_utf8 = true,
            Err(e) => {
                self.utf8_tail = data.get(e.valid_up_to()..).unwrap_or_default().to_vec();
            }
        }
    }

    fn needs_encoding(&self, source: Source) -> bool {
        self.eight_bit || (source == Source::Binary && (self.binary || self.pending_cr))
    }

    fn charset(&self) -> &'static str {
        if self.not_utf8 || !self.utf8_tail.is_empty() {
            "unknown-8bit"
        } else {
            "utf-8"
        }
    }
}

/// The first pass's handler.
struct Facts {
    source: Source,
    limits: Limits,
    parser: MessageParser,
    hasher: RandomState,
    entities: Vec<EntityPlan>,
    shape: Vec<Shape>,
    stack: Vec<Open>,
    /// The body being read: its entity and facts.
    body: Option<(usize, BodyFacts)>,
    /// The field being read (up to [`FIELD_MAX`] octets).
    hold: Vec<u8>,
    eight_bit: bool,
    field_8bit: bool,
    parts_encoded: usize,
    fields_encoded: usize,
}

fn missing() -> DowngradeError {
    DowngradeError::Inconsistent {
        check: "entity out of order",
    }
}

fn media_key(hasher: &RandomState, main: &str, sub: &str) -> u64 {
    hasher.hash_one((main, sub))
}

/// How a leaf with an identity encoding is encoded (`downgrade.rs`'s `class`).
fn class(main: &str, sub: &str) -> Result<(Action, &'static str), ()> {
    match main {
        "text" | "multipart" => Ok((Action::Qp(Breaks::Text), "quoted-printable")),
        "message" if sub == "partial" || sub == "external-body" => Err(()),
        "message" => Ok((Action::Qp(Breaks::Text), "quoted-printable")),
        _ => Ok((Action::Base64, "base64")),
    }
}

impl Facts {
    fn plan_mut(&mut self, entity: usize) -> Result<&mut EntityPlan, DowngradeError> {
        self.entities.get_mut(entity).ok_or_else(missing)
    }

    /// `downgrade.rs`'s `Plan::leaf`: decides a leaf's body; whether an encoding label
    /// was introduced.
    fn leaf(&mut self, entity: usize, facts: &BodyFacts) -> Result<bool, DowngradeError> {
        let source = self.source;
        let open = self.stack.last().ok_or_else(missing)?;
        let (cte, main, sub, declared) = (
            open.cte.clone(),
            open.main.clone(),
            open.sub.clone(),
            open.declared,
        );
        let plan = self.entities.get_mut(entity).ok_or_else(missing)?;
        if cte.is_identity() {
            if !facts.needs_encoding(source) {
                if cte == Cte::Binary && source == Source::Binary {
                    plan.cte = Some("7bit");
                }
                return Ok(false);
            }
            let Ok((mut action, name)) = class(&main, &sub) else {
                return Err(DowngradeError::EncodingForbidden {
                    media_type: format!("{main}/{sub}"),
                });
            };
            if cte == Cte::Binary && action == Action::Qp(Breaks::Text) {
                action = Action::Qp(Breaks::Exact);
            }
            plan.action = action;
            plan.cte = Some(name);
            if !declared && main == "text" && sub == "plain" {
                plan.charset = Some(facts.charset());
            }
            self.parts_encoded = self.parts_encoded.saturating_add(1);
            return Ok(true);
        }
        if !facts.eight_bit {
            return Ok(false);
        }
        match cte {
            Cte::QuotedPrintable => plan.action = Action::Requote,
            Cte::Base64 => plan.action = Action::Strip8,
            Cte::Other(encoding) => return Err(DowngradeError::UnknownEncoding { encoding }),
            _ => return Ok(false),
        }
        self.parts_encoded = self.parts_encoded.saturating_add(1);
        Ok(false)
    }
}

impl Handler for Facts {
    fn entity_start(&mut self, entity: usize, depth: usize) -> Result<(), DowngradeError> {
        if entity != self.entities.len() {
            return Err(missing());
        }
        self.entities.push(EntityPlan::default());
        self.shape.push((depth, 0, Kind::Leaf, 0));
        Ok(())
    }

    fn field_start(&mut self, _name: Name, _colon: usize) -> Result<(), DowngradeError> {
        self.hold.clear();
        self.field_8bit = false;
        Ok(())
    }

    fn field_end(&mut self, end: FieldEnd) -> Result<(), DowngradeError> {
        if !self.field_8bit {
            return Ok(());
        }
        if end.len > self.hold.len() as u64 {
            let name = self.hold.get(..end.colon).unwrap_or_default();
            return Err(DowngradeError::FieldTooLong {
                field: crate::header::printable(name, 64),
            });
        }
        let field = Field {
            start: 0,
            colon: end.colon,
            value_end: self.hold.len().saturating_sub(end.eol),
            end: self.hold.len(),
        };
        crate::fields::convert(&self.parser, &self.hold, &field)?;
        self.fields_encoded = self.fields_encoded.saturating_add(1);
        Ok(())
    }

    fn header_end(&mut self, info: &HeaderInfo<'_>) -> Result<(), DowngradeError> {
        if info.top && self.source == Source::Binary && !info.mime_version {
            return Err(DowngradeError::NotMime);
        }
        let key = media_key(&self.hasher, &info.media.main, &info.media.sub);
        if let Some(s) = self.shape.get_mut(info.entity) {
            s.1 = key;
        }
        self.stack.push(Open {
            index: info.entity,
            top: info.top,
            main: info.media.main.clone(),
            sub: info.media.sub.clone(),
            declared: info.media.declared,
            cte: info.cte.clone(),
            mime_version: info.mime_version,
            encoded: false,
        });
        Ok(())
    }

    fn body_start(&mut self, entity: usize, _preamble: bool) -> Result<(), DowngradeError> {
        self.body = Some((entity, BodyFacts::default()));
        Ok(())
    }

    fn preamble_resolved(&mut self, entity: usize, leaf: bool) -> Result<(), DowngradeError> {
        if !leaf {
            self.body = None;
            self.plan_mut(entity)?.preamble = true;
        }
        Ok(())
    }

    fn body_end(&mut self, entity: usize) -> Result<(), DowngradeError> {
        let Some((e, facts)) = self.body.take() else {
            return Err(missing());
        };
        if e != entity {
            return Err(missing());
        }
        let encoded = self.leaf(entity, &facts)?;
        if let Some(open) = self.stack.last_mut() {
            open.encoded |= encoded;
        }
        Ok(())
    }

    fn bytes(&mut self, role: Role, bytes: &[u8]) -> Result<(), DowngradeError> {
        let eight = has_8bit(bytes);
        self.eight_bit |= eight;
        match role {
            Role::Field => {
                self.field_8bit |= eight;
                let room = FIELD_MAX.saturating_sub(self.hold.len());
                self.hold
                    .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
            }
            Role::Body => {
                if let Some((_, facts)) = self.body.as_mut() {
                    facts.feed(bytes);
                }
            }
            Role::Junk | Role::Separator | Role::Ignored | Role::Plain => {}
        }
        Ok(())
    }

    fn entity_end(
        &mut self,
        entity: usize,
        kind: Kind,
        parts: usize,
    ) -> Result<(), DowngradeError> {
        let open = self.stack.pop().ok_or_else(missing)?;
        if open.index != entity {
            return Err(missing());
        }
        if let Some(s) = self.shape.get_mut(entity) {
            s.2 = kind;
            s.3 = parts;
        }
        let container = kind != Kind::Leaf;
        let plan = self.plan_mut(entity)?;
        if container && open.encoded && matches!(open.cte, Cte::EightBit | Cte::Binary) {
            plan.cte = Some("7bit");
        }
        if open.top && open.encoded && !open.mime_version {
            plan.mime_version = true;
        }
        if let Some(parent) = self.stack.last_mut() {
            parent.encoded |= open.encoded;
        }
        Ok(())
    }
}

/// What the second pass does with the field being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOut {
    /// Hold it (rewritten at its end when it has 8-bit octets).
    Copy,
    /// A Content-Transfer-Encoding field replaced or removed: its octets are dropped.
    Drop,
}

/// A leaf body being written.
enum BodyOut {
    Copy,
    Qp(QpEncoder),
    Base64(Base64Encoder),
    Requote(Requoter),
    Strip8,
    /// A preamble: 8-bit octets become `?`.
    Ignored,
}

/// The second pass's handler: writes the copy into `out`.
struct Emitter<'p> {
    plan: &'p Plan,
    parser: MessageParser,
    out: Vec<u8>,
    /// The entity whose header is being read.
    entity: usize,
    field: FieldOut,
    /// The replacement Content-Transfer-Encoding of this header is written.
    cte_written: bool,
    /// The field being read, up to [`FIELD_MAX`] octets; past that it streams
    /// (`streamed`), which the first pass allows for 7-bit fields only.
    hold: Vec<u8>,
    streamed: bool,
    body: Option<BodyOut>,
}

fn question_marks(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend(bytes.iter().map(|&b| if b >= 0x80 { b'?' } else { b }));
}

impl Emitter<'_> {
    fn plan(&self, entity: usize) -> Result<EntityPlan, DowngradeError> {
        self.plan.entities.get(entity).copied().ok_or_else(missing)
    }
}

impl Handler for Emitter<'_> {
    fn entity_start(&mut self, entity: usize, _depth: usize) -> Result<(), DowngradeError> {
        self.entity = entity;
        self.cte_written = false;
        Ok(())
    }

    fn field_start(&mut self, name: Name, _colon: usize) -> Result<(), DowngradeError> {
        self.hold.clear();
        self.streamed = false;
        self.field = FieldOut::Copy;
        if name == Name::Cte
            && let Some(label) = self.plan(self.entity)?.cte
        {
            // The first one is replaced; the others were dropped with it in mind.
            self.field = FieldOut::Drop;
            if !std::mem::replace(&mut self.cte_written, true) {
                self.out.extend_from_slice(
                    format!("Content-Transfer-Encoding: {label}\r\n").as_bytes(),
                );
            }
        }
        Ok(())
    }

    fn field_end(&mut self, end: FieldEnd) -> Result<(), DowngradeError> {
        if self.field == FieldOut::Drop || self.streamed {
            return Ok(());
        }
        if has_8bit(&self.hold) {
            let field = Field {
                start: 0,
                colon: end.colon,
                value_end: self.hold.len().saturating_sub(end.eol),
                end: self.hold.len(),
            };
            let new = crate::fields::convert(&self.parser, &self.hold, &field)?;
            self.out.extend_from_slice(&new);
        } else {
            self.out.extend_from_slice(&self.hold);
        }
        self.hold.clear();
        Ok(())
    }

    fn header_end(&mut self, info: &HeaderInfo<'_>) -> Result<(), DowngradeError> {
        let plan = self.plan(info.entity)?;
        let mut inserts = Vec::new();
        if plan.mime_version {
            inserts.extend_from_slice(b"MIME-Version: 1.0\r\n");
        }
        if let Some(label) = plan.cte
            && !info.has_cte
        {
            inserts.extend_from_slice(format!("Content-Transfer-Encoding: {label}\r\n").as_bytes());
        }
        if let Some(charset) = plan.charset {
            inserts.extend_from_slice(
                format!("Content-Type: text/plain; charset=\"{charset}\"\r\n").as_bytes(),
            );
        }
        if !inserts.is_empty() && !info.separator {
            inserts.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(&inserts);
        Ok(())
    }

    fn body_start(&mut self, entity: usize, preamble: bool) -> Result<(), DowngradeError> {
        let plan = self.plan(entity)?;
        self.body = Some(if preamble && plan.preamble {
            BodyOut::Ignored
        } else {
            match plan.action {
                Action::Copy => BodyOut::Copy,
                Action::Qp(breaks) => BodyOut::Qp(QpEncoder::new(breaks)),
                Action::Base64 => BodyOut::Base64(Base64Encoder::default()),
                Action::Requote => BodyOut::Requote(Requoter::new()),
                Action::Strip8 => BodyOut::Strip8,
            }
        });
        Ok(())
    }

    fn preamble_resolved(&mut self, entity: usize, leaf: bool) -> Result<(), DowngradeError> {
        if leaf == self.plan(entity)?.preamble {
            return Err(DowngradeError::Inconsistent {
                check: "the input changed between the passes",
            });
        }
        if !leaf {
            self.body = None;
        }
        Ok(())
    }

    fn body_end(&mut self, _entity: usize) -> Result<(), DowngradeError> {
        match self.body.take() {
            Some(BodyOut::Qp(enc)) => enc.finish(&mut self.out),
            Some(BodyOut::Base64(enc)) => enc.finish(&mut self.out),
            Some(BodyOut::Requote(enc)) => enc.finish(&mut self.out),
            _ => {}
        }
        Ok(())
    }

    fn bytes(&mut self, role: Role, bytes: &[u8]) -> Result<(), DowngradeError> {
        let out = &mut self.out;
        match role {
            Role::Field => match self.field {
                FieldOut::Drop => {}
                FieldOut::Copy if self.streamed => {
                    if has_8bit(bytes) {
                        return Err(DowngradeError::Inconsistent {
                            check: "a long field has 8-bit octets",
                        });
                    }
                    out.extend_from_slice(bytes);
                }
                FieldOut::Copy => {
                    if self.hold.len().saturating_add(bytes.len()) <= FIELD_MAX {
                        self.hold.extend_from_slice(bytes);
                    } else {
                        // Too long to rewrite: the first pass made sure it is 7-bit.
                        self.streamed = true;
                        if has_8bit(&self.hold) || has_8bit(bytes) {
                            return Err(DowngradeError::Inconsistent {
                                check: "a long field has 8-bit octets",
                            });
                        }
                        out.extend_from_slice(&self.hold);
                        out.extend_from_slice(bytes);
                        self.hold.clear();
                    }
                }
            },
            Role::Junk | Role::Ignored => question_marks(bytes, out),
            Role::Separator | Role::Plain => out.extend_from_slice(bytes),
            Role::Body => match self.body.as_mut() {
                None | Some(BodyOut::Copy) => out.extend_from_slice(bytes),
                Some(BodyOut::Qp(enc)) => enc.feed(bytes, out),
                Some(BodyOut::Base64(enc)) => enc.feed(bytes, out),
                Some(BodyOut::Requote(enc)) => enc.feed(bytes, out),
                Some(BodyOut::Strip8) => out.extend(bytes.iter().filter(|&&b| b < 0x80)),
                Some(BodyOut::Ignored) => question_marks(bytes, out),
            },
        }
        Ok(())
    }

    fn entity_end(
        &mut self,
        _entity: usize,
        _kind: Kind,
        _parts: usize,
    ) -> Result<(), DowngradeError> {
        Ok(())
    }
}

/// The check's handler: reads the copy and compares its tree with the plan's.
struct Checker<'p> {
    plan: &'p Plan,
    /// Open entities: index, depth, media key.
    stack: Vec<(usize, usize, u64)>,
    seen: usize,
}

impl Handler for Checker<'_> {
    fn entity_start(&mut self, entity: usize, depth: usize) -> Result<(), DowngradeError> {
        self.stack.push((entity, depth, 0));
        self.seen = self.seen.max(entity.saturating_add(1));
        Ok(())
    }

    fn field_start(&mut self, _name: Name, _colon: usize) -> Result<(), DowngradeError> {
        Ok(())
    }

    fn field_end(&mut self, _end: FieldEnd) -> Result<(), DowngradeError> {
        Ok(())
    }

    fn header_end(&mut self, info: &HeaderInfo<'_>) -> Result<(), DowngradeError> {
        if let Some(top) = self.stack.last_mut() {
            top.2 = media_key(&self.plan.hasher, &info.media.main, &info.media.sub);
        }
        Ok(())
    }

    fn body_start(&mut self, _entity: usize, _preamble: bool) -> Result<(), DowngradeError> {
        Ok(())
    }

    fn preamble_resolved(&mut self, _entity: usize, _leaf: bool) -> Result<(), DowngradeError> {
        Ok(())
    }

    fn body_end(&mut self, _entity: usize) -> Result<(), DowngradeError> {
        Ok(())
    }

    fn bytes(&mut self, _role: Role, _bytes: &[u8]) -> Result<(), DowngradeError> {
        Ok(())
    }

    fn entity_end(
        &mut self,
        entity: usize,
        kind: Kind,
        parts: usize,
    ) -> Result<(), DowngradeError> {
        let Some((index, depth, key)) = self.stack.pop() else {
            return Err(DowngradeError::StructureChanged);
        };
        if index != entity || self.plan.shape.get(entity) != Some(&(depth, key, kind, parts)) {
            return Err(DowngradeError::StructureChanged);
        }
        Ok(())
    }
}

/// The streaming downgrade of a buffer, fed in pieces of `piece` octets (tests and the
/// fuzz target compare it with [`crate::downgrade`]). `None` when no copy is needed.
pub fn downgrade_pieces(
    content: &[u8],
    source: Source,
    limits: &Limits,
    piece: usize,
) -> Result<Option<(Vec<u8>, usize, usize)>, DowngradeError> {
    let piece = piece.max(1);
    let mut scanner = Scanner::new(source, limits);
    for p in content.chunks(piece) {
        scanner.feed(p)?;
    }
    let plan = scanner.finish()?;
    if !plan.needed() {
        return Ok(None);
    }
    let mut writer = plan.writer();
    let mut out = Vec::new();
    for p in content.chunks(piece) {
        writer.feed(p, &mut out)?;
    }
    writer.finish(&mut out)?;
    Ok(Some((out, plan.parts_encoded(), plan.fields_encoded())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::check_streaming;
    use crate::walk::LINE_KEEP;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn lines_longer_than_the_kept_prefix_stream_through() {
        // A body line, a 7-bit field and an ignored preamble line, each far past the
        // prefix the walker keeps, in 8-bit content: converted like the whole buffer.
        let long = LINE_KEEP * 3;
        let mut raw = b"X-Long: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', long));
        raw.extend_from_slice(b"\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
        raw.extend(std::iter::repeat_n(0xe9, long));
        raw.extend_from_slice(b"\r\n--b\r\nContent-Type: application/x\r\n\r\n");
        raw.extend(std::iter::repeat_n(0xff, long));
        raw.extend_from_slice(b"\r\n--b\r\n\r\n-");
        raw.extend(std::iter::repeat_n(b'-', long));
        raw.extend(std::iter::repeat_n(0xc3, 3));
        raw.extend_from_slice(b"\r\n--b--\r\n");
        check_streaming(&raw, Source::EightBit, &limits());
        let out = downgrade_pieces(&raw, Source::EightBit, &limits(), 1000).unwrap();
        assert!(out.is_some_and(|(o, parts, _)| crate::is_7bit(&o) && parts == 2));
    }

    #[test]
    fn what_a_prefix_cannot_decide_is_refused() {
        // Starts like a delimiter of the open multipart, then white space past the
        // kept prefix: only its end would say.
        let mut raw =
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xe9\r\n--b".to_vec();
        raw.extend(std::iter::repeat_n(b' ', LINE_KEEP));
        raw.extend_from_slice(b"x\r\n--b--\r\n");
        assert_eq!(
            downgrade_pieces(&raw, Source::EightBit, &limits(), 4096).unwrap_err(),
            DowngradeError::LineTooLong
        );
        // 8-bit fields and the Content-Type are read whole, up to 64 KiB.
        let mut raw = b"Subject: \xe9".to_vec();
        raw.extend(std::iter::repeat_n(b'a', FIELD_MAX));
        raw.extend_from_slice(b"\r\n\r\nbody\r\n");
        let want = DowngradeError::FieldTooLong {
            field: "Subject".into(),
        };
        assert_eq!(
            downgrade_pieces(&raw, Source::EightBit, &limits(), 4096).unwrap_err(),
            want
        );
        assert_eq!(
            crate::downgrade(&raw, Source::EightBit, &limits()).unwrap_err(),
            want
        );
        let mut raw = b"Content-Type: text/plain; x=".to_vec();
        raw.extend(std::iter::repeat_n(b'a', FIELD_MAX));
        raw.extend_from_slice(b"\r\n\r\n\xe9\r\n");
        assert!(matches!(
            downgrade_pieces(&raw, Source::EightBit, &limits(), 4096),
            Err(DowngradeError::FieldTooLong { .. })
        ));
        check_streaming(&raw, Source::EightBit, &limits());
    }

    #[test]
    fn the_second_pass_must_read_what_the_first_read() {
        let first =
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xe9\r\n--b--\r\n";
        let other = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xe9\r\n--b\r\n\r\nx\r\n--b--\r\n";
        let mut s = Scanner::new(Source::EightBit, &limits());
        s.feed(first).unwrap();
        let plan = s.finish().unwrap();
        let mut w = plan.writer();
        let mut out = Vec::new();
        let got = w.feed(other, &mut out).and_then(|()| w.finish(&mut out));
        assert!(got.is_err(), "{:?}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn seven_bit_content_needs_no_copy() {
        let raw = b"Subject: x\r\n\r\nbody\r\n";
        assert_eq!(
            downgrade_pieces(raw, Source::EightBit, &limits(), 3).unwrap(),
            None
        );
        assert!(
            downgrade_pieces(raw, Source::Binary, &limits(), 3).is_err(),
            "binary needs MIME-Version"
        );
    }
}
