//! The MIME tree read from a stream of pieces: the same reading as `structure.rs`
//! (which reads a whole buffer), as a push state machine that never holds more than one
//! bounded line prefix and two bounded header fields.
//!
//! The [`Walker`] is fed the content in pieces of any size and tells a [`Handler`], in
//! content order, what each octet is ([`Role`]) and where entities, header sections and
//! bodies begin and end. Every octet of the input is passed to the handler exactly once,
//! in order, so a handler that copies what it is given reproduces the input; the
//! streaming downgrade (`stream.rs`) runs it over the input twice (plan, then write)
//! and over its own output once (the check).
//!
//! Equivalence with `structure.rs` (tested on the corpus and generated messages through
//! the whole conversion): the same line ends, the same delimiter rule, the same header
//! rule, the same entities in the same order with the same media types, the same body
//! ranges (the line end before a delimiter belongs to the delimiter) and the same
//! ignored text. Where `structure.rs` looks back (a multipart whose boundary never
//! starts a part is read again as one leaf), the walker keeps both readings open until
//! the first delimiter decides ([`Handler::preamble_resolved`]).
//!
//! Bounds (the reason for this module): a line is classified from its first
//! [`LINE_KEEP`] octets; the rest streams through. Two kinds of line cannot be
//! classified from a prefix and are refused ([`DowngradeError::LineTooLong`]): a line
//! longer than that which starts like a delimiter line of an open multipart and goes
//! on with white space only, and a line in a header section whose first [`LINE_KEEP`]
//! octets are all field-name characters. The first Content-Type and
//! Content-Transfer-Encoding fields of a header section are held to be parsed, each at
//! most [`FIELD_MAX`] octets ([`DowngradeError::FieldTooLong`]). The rest of the state
//! is one frame per open entity (at most [`crate::Limits::max_depth`] + 1) and the
//! boundaries of the open multiparts.
//!
//! Trust: the content is hostile. No panic, no indexing, no recursion.

use mail_parser::MessageParser;

use crate::header::{Cte, Field, HeaderSection, Media, cte, field_colon, media};
use crate::lines::{Delimiter, delimiter, trim_wsp_end};
use crate::{DowngradeError, Limits};

/// Longest header field held whole: the first Content-Type and
/// Content-Transfer-Encoding of a section, and any field with 8-bit octets (which is
/// rewritten). Postfix's `header_size_limit` is 100 KiB for a whole header.
pub(crate) const FIELD_MAX: usize = 64 * 1024;

/// How much of a line is kept to classify it; above any boundary (itself at most
/// [`FIELD_MAX`]) plus its delimiter's `--` and `--`.
pub(crate) const LINE_KEEP: usize = FIELD_MAX + 64;

/// What an octet of the input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A header field (every line of it, line ends included).
    Field,
    /// A header line that belongs to no field: readers ignore it.
    Junk,
    /// The empty line after a header section.
    Separator,
    /// Body content of a leaf, or of a multipart's first text until a delimiter says
    /// whether it was a preamble or a leaf ([`Handler::preamble_resolved`]). The line end
    /// before a delimiter line is not content.
    Body,
    /// Text readers ignore: a preamble, an epilogue, what follows a close delimiter.
    Ignored,
    /// Delimiter lines and the line end before them.
    Plain,
}

/// What a header field is called, as far as the conversion cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    ContentType,
    Cte,
    MimeVersion,
    Other,
}

impl Name {
    fn of(name: &[u8]) -> Name {
        if name.eq_ignore_ascii_case(b"content-type") {
            Name::ContentType
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            Name::Cte
        } else if name.eq_ignore_ascii_case(b"mime-version") {
            Name::MimeVersion
        } else {
            Name::Other
        }
    }
}

/// The kind of an entity's body, for the structure comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Leaf,
    Multipart,
    Message,
}

/// A header section, once read.
#[derive(Debug)]
pub(crate) struct HeaderInfo<'a> {
    pub entity: usize,
    pub top: bool,
    pub media: &'a Media,
    pub cte: &'a Cte,
    /// An empty line ends the section (new fields go before it).
    pub separator: bool,
    /// The section has a Content-Transfer-Encoding field.
    pub has_cte: bool,
    /// The section has a MIME-Version field.
    pub mime_version: bool,
}

/// A header field, once read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldEnd {
    /// Offset of the colon from the field's start.
    pub colon: usize,
    /// Length of the field, line ends included.
    pub len: u64,
    /// Length of its last line end.
    pub eol: usize,
}

/// Receives the walk, in content order.
pub(crate) trait Handler {
    /// A new entity (pre-order index), before its header section.
    fn entity_start(&mut self, entity: usize, depth: usize) -> Result<(), DowngradeError>;
    /// A header field starts; its octets follow as [`Role::Field`].
    fn field_start(&mut self, name: Name, colon: usize) -> Result<(), DowngradeError>;
    /// The field started last is complete.
    fn field_end(&mut self, end: FieldEnd) -> Result<(), DowngradeError>;
    /// The header section is read; the separator line (if any) follows.
    fn header_end(&mut self, info: &HeaderInfo<'_>) -> Result<(), DowngradeError>;
    /// The body of `entity` starts: a leaf, or (`preamble`) the text of a multipart
    /// before its first delimiter.
    fn body_start(&mut self, entity: usize, preamble: bool) -> Result<(), DowngradeError>;
    /// The preamble candidate of `entity` was a preamble (`false`: it was the body of a
    /// leaf, and [`Handler::body_end`] follows).
    fn preamble_resolved(&mut self, entity: usize, leaf: bool) -> Result<(), DowngradeError>;
    /// The body of a leaf is complete.
    fn body_end(&mut self, entity: usize) -> Result<(), DowngradeError>;
    /// Octets of the input.
    fn bytes(&mut self, role: Role, bytes: &[u8]) -> Result<(), DowngradeError>;
    /// An entity is complete.
    fn entity_end(&mut self, entity: usize, kind: Kind, parts: usize)
    -> Result<(), DowngradeError>;
}

/// A held line end (0 to 2 octets).
#[derive(Debug, Clone, Copy, Default)]
struct Eol {
    bytes: [u8; 2],
    len: usize,
}

impl Eol {
    fn of(eol: &[u8]) -> Eol {
        let mut e = Eol::default();
        for (slot, &b) in e.bytes.iter_mut().zip(eol) {
            *slot = b;
            e.len += 1;
        }
        e
    }

    fn get(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

#[derive(Debug)]
enum Frame {
    /// Reading a header section (its state is `Walker::header`).
    Header,
    /// A leaf body; `eol` is the last body line's end, held until the next line says
    /// whether it is content.
    Leaf { entity: usize, eol: Eol },
    /// A multipart's text before its first delimiter.
    Preamble {
        entity: usize,
        boundary: Vec<u8>,
        digest: bool,
        depth: usize,
        eol: Eol,
    },
    /// A multipart's parts: after a delimiter line (`in_child` false) or after a part.
    Parts {
        entity: usize,
        boundary: Vec<u8>,
        digest: bool,
        depth: usize,
        parts: usize,
        in_child: bool,
    },
    /// Ignored text to the end of the entity: an epilogue, or what follows the close
    /// delimiter of a multipart read as a leaf.
    Rest {
        entity: usize,
        kind: Kind,
        parts: usize,
    },
    /// A message/rfc822 whose inner message is being read.
    Message { entity: usize },
    /// The top-level entity is complete.
    Done,
}

/// The header section being read.
#[derive(Debug, Default)]
struct Header {
    entity: usize,
    depth: usize,
    digest: bool,
    in_field: bool,
    /// The field being read: its name, its colon, its length, its last line end, and
    /// whether it is held (the first Content-Type or Content-Transfer-Encoding).
    field: Option<(Name, usize, u64, usize, bool)>,
    /// The first Content-Type and Content-Transfer-Encoding fields.
    held: Vec<u8>,
    fields: Vec<Field>,
    has_ct: bool,
    has_cte: bool,
    mime_version: bool,
}

/// The reading of one stream (see the module header).
pub(crate) struct Walker {
    parser: MessageParser,
    limits: Limits,
    frames: Vec<Frame>,
    /// Boundaries of the multiparts whose parts are being read, outermost first.
    open: Vec<Vec<u8>>,
    entities: usize,
    header: Header,
    /// The current line: its first octets, whether it has begun, its role once known.
    kept: Vec<u8>,
    in_line: bool,
    role: Option<Role>,
    /// A CR ended the last piece: the line end is CR or CRLF.
    pending_cr: bool,
}

impl Walker {
    pub(crate) fn new(limits: &Limits) -> Walker {
        Walker {
            parser: MessageParser::new(),
            limits: *limits,
            frames: Vec::new(),
            open: Vec::new(),
            entities: 0,
            header: Header::default(),
            kept: Vec::new(),
            in_line: false,
            role: None,
            pending_cr: false,
        }
    }

    /// The next piece of the input.
    pub(crate) fn feed<H: Handler>(
        &mut self,
        data: &[u8],
        h: &mut H,
    ) -> Result<(), DowngradeError> {
        if self.entities == 0 {
            self.start_entity(0, false, h)?;
        }
        let mut rest = data;
        if self.pending_cr && !rest.is_empty() {
            self.pending_cr = false;
            if let Some(after) = rest.strip_prefix(b"\n") {
                rest = after;
                self.end_line(b"\r\n", h)?;
            } else {
                self.end_line(b"\r", h)?;
            }
        }
        while !rest.is_empty() {
            let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                self.content(rest, h)?;
                break;
            };
            let (text, tail) = rest.split_at_checked(i).unwrap_or((rest, &[]));
            self.content(text, h)?;
            match tail {
                [b'\n', after @ ..] => {
                    rest = after;
                    self.end_line(b"\n", h)?;
                }
                [b'\r'] => {
                    self.in_line = true;
                    self.pending_cr = true;
                    rest = &[];
                }
                [b'\r', b'\n', after @ ..] => {
                    rest = after;
                    self.end_line(b"\r\n", h)?;
                }
                [b'\r', after @ ..] => {
                    rest = after;
                    self.end_line(b"\r", h)?;
                }
                _ => rest = &[],
            }
        }
        Ok(())
    }

    /// The end of the input: the last line, then every open entity ends.
    pub(crate) fn finish<H: Handler>(&mut self, h: &mut H) -> Result<(), DowngradeError> {
        if self.entities == 0 {
            self.start_entity(0, false, h)?;
        }
        if self.pending_cr {
            self.pending_cr = false;
            self.end_line(b"\r", h)?;
        } else if self.in_line {
            self.end_line(b"", h)?;
        }
        while let Some(top) = self.frames.last_mut() {
            match top {
                Frame::Header => {
                    self.end_field(h)?;
                    self.end_header(false, h)?;
                }
                Frame::Leaf { entity, eol } | Frame::Preamble { entity, eol, .. } => {
                    let (entity, eol) = (*entity, *eol);
                    let preamble = matches!(top, Frame::Preamble { .. });
                    if preamble {
                        h.preamble_resolved(entity, true)?;
                    }
                    h.bytes(Role::Body, eol.get())?;
                    h.body_end(entity)?;
                    self.frames.pop();
                    self.end_entity(entity, Kind::Leaf, 0, h)?;
                }
                Frame::Parts {
                    in_child: false, ..
                } => self.start_part(h)?,
                Frame::Parts {
                    entity,
                    parts,
                    in_child: true,
                    ..
                } => {
                    let (entity, parts) = (*entity, *parts);
                    self.frames.pop();
                    self.end_entity(entity, Kind::Multipart, parts, h)?;
                }
                Frame::Rest {
                    entity,
                    kind,
                    parts,
                } => {
                    let (entity, kind, parts) = (*entity, *kind, *parts);
                    self.frames.pop();
                    self.end_entity(entity, kind, parts, h)?;
                }
                Frame::Message { entity } => {
                    let entity = *entity;
                    self.frames.pop();
                    self.end_entity(entity, Kind::Message, 1, h)?;
                }
                Frame::Done => {
                    self.frames.pop();
                }
            }
        }
        Ok(())
    }

    /// Octets of the current line's text.
    fn content<H: Handler>(&mut self, text: &[u8], h: &mut H) -> Result<(), DowngradeError> {
        if text.is_empty() {
            return Ok(());
        }
        self.in_line = true;
        if let Some(role) = self.role {
            return self.emit(role, text, h);
        }
        let room = LINE_KEEP.saturating_sub(self.kept.len());
        let (keep, more) = text.split_at_checked(room).unwrap_or((text, &[]));
        self.kept.extend_from_slice(keep);
        if more.is_empty() {
            return Ok(());
        }
        let role = self.classify(false, h)?;
        self.role = Some(role);
        let kept = std::mem::take(&mut self.kept);
        let sent = self.emit(role, &kept, h);
        self.kept = kept;
        sent?;
        self.emit(role, more, h)
    }

    /// Gives octets of the current line to the handler.
    fn emit<H: Handler>(
        &mut self,
        role: Role,
        bytes: &[u8],
        h: &mut H,
    ) -> Result<(), DowngradeError> {
        if role == Role::Field {
            self.field_bytes(bytes)?;
        }
        h.bytes(role, bytes)
    }

    /// The current line ends with `eol` (empty at the end of the input).
    fn end_line<H: Handler>(&mut self, eol: &[u8], h: &mut H) -> Result<(), DowngradeError> {
        let role = match self.role {
            Some(role) => role,
            None => {
                let role = self.classify(true, h)?;
                let kept = std::mem::take(&mut self.kept);
                let sent = self.emit(role, &kept, h);
                self.kept = kept;
                sent?;
                role
            }
        };
        match (role, self.frames.last_mut()) {
            (
                Role::Body,
                Some(Frame::Leaf { eol: held, .. } | Frame::Preamble { eol: held, .. }),
            ) => {
                *held = Eol::of(eol);
            }
            _ => self.emit(role, eol, h)?,
        }
        if role == Role::Field
            && let Some(field) = self.header.field.as_mut()
        {
            field.3 = eol.len();
        }
        self.kept.clear();
        self.role = None;
        self.in_line = false;
        Ok(())
    }

    /// Whether the current line is a delimiter line of `boundary`; `complete` when the
    /// whole line is in `kept`.
    fn delimiter_of(
        kept: &[u8],
        complete: bool,
        boundary: &[u8],
    ) -> Result<Option<Delimiter>, DowngradeError> {
        if complete {
            return Ok(delimiter(kept, boundary));
        }
        let Some(rest) = kept
            .strip_prefix(b"--")
            .and_then(|r| r.strip_prefix(boundary))
        else {
            return Ok(None);
        };
        let rest = trim_wsp_end(rest);
        if rest.is_empty() || rest == b"--" {
            // Only white space so far: what follows decides, and it is not kept.
            return Err(DowngradeError::LineTooLong);
        }
        Ok(None)
    }

    /// Whether the current line delimits an open multipart (`structure.rs`'s `peek`).
    fn stops(&self, complete: bool) -> Result<bool, DowngradeError> {
        if !self.kept.starts_with(b"--") {
            return Ok(false);
        }
        for b in &self.open {
            if Self::delimiter_of(&self.kept, complete, b)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Decides the role of the current line, making the transitions it implies.
    fn classify<H: Handler>(&mut self, complete: bool, h: &mut H) -> Result<Role, DowngradeError> {
        loop {
            let stop = self.stops(complete)?;
            let Some(top) = self.frames.last_mut() else {
                return Ok(Role::Ignored);
            };
            match top {
                Frame::Done => return Ok(Role::Ignored),
                Frame::Header => {
                    if stop {
                        self.end_field(h)?;
                        self.end_header(false, h)?;
                        continue;
                    }
                    if complete && self.kept.is_empty() {
                        self.end_field(h)?;
                        self.end_header(true, h)?;
                        return Ok(Role::Separator);
                    }
                    match self.kept.first() {
                        Some(b' ' | b'\t') => {
                            if self.header.in_field {
                                return Ok(Role::Field);
                            }
                            return Ok(Role::Junk);
                        }
                        _ if self.kept.starts_with(b"From ") || self.kept.starts_with(b":") => {
                            self.end_field(h)?;
                            self.header.in_field = false;
                            return Ok(Role::Junk);
                        }
                        _ => {}
                    }
                    if let Some(colon) = field_colon(&self.kept) {
                        self.end_field(h)?;
                        self.start_field(colon, h)?;
                        return Ok(Role::Field);
                    }
                    let name_chars = self
                        .kept
                        .iter()
                        .all(|&b| (b'!'..=b'~').contains(&b) && b != b':');
                    if !complete && name_chars {
                        return Err(DowngradeError::LineTooLong);
                    }
                    // Not a header line: the body starts here, without separator.
                    self.end_field(h)?;
                    self.end_header(false, h)?;
                }
                Frame::Leaf { entity, eol } => {
                    let (entity, eol) = (*entity, *eol);
                    if stop {
                        h.body_end(entity)?;
                        h.bytes(Role::Plain, eol.get())?;
                        self.frames.pop();
                        self.end_entity(entity, Kind::Leaf, 0, h)?;
                        continue;
                    }
                    h.bytes(Role::Body, eol.get())?;
                    return Ok(Role::Body);
                }
                Frame::Preamble {
                    entity,
                    boundary,
                    digest,
                    depth,
                    eol,
                } => {
                    let (entity, eol, digest, depth) = (*entity, *eol, *digest, *depth);
                    let found = if stop {
                        None
                    } else {
                        Self::delimiter_of(&self.kept, complete, boundary)?
                    };
                    if stop || found == Some(Delimiter::Close) {
                        // No part ever starts: the text was a leaf.
                        h.preamble_resolved(entity, true)?;
                        h.body_end(entity)?;
                        h.bytes(Role::Plain, eol.get())?;
                        if stop {
                            self.frames.pop();
                            self.end_entity(entity, Kind::Leaf, 0, h)?;
                            continue;
                        }
                        *top = Frame::Rest {
                            entity,
                            kind: Kind::Leaf,
                            parts: 0,
                        };
                        return Ok(Role::Ignored);
                    }
                    if found == Some(Delimiter::Part) {
                        h.preamble_resolved(entity, false)?;
                        h.bytes(Role::Ignored, eol.get())?;
                        let boundary = std::mem::take(boundary);
                        *top = Frame::Parts {
                            entity,
                            boundary,
                            digest,
                            depth,
                            parts: 0,
                            in_child: false,
                        };
                        return Ok(Role::Plain);
                    }
                    // The line's own end replaces the held one (`end_line`).
                    h.bytes(Role::Body, eol.get())?;
                    return Ok(Role::Body);
                }
                Frame::Parts {
                    entity,
                    boundary,
                    parts,
                    in_child,
                    ..
                } => {
                    let (entity, parts) = (*entity, *parts);
                    if !*in_child {
                        if !stop && Self::delimiter_of(&self.kept, complete, boundary)?.is_some() {
                            return Ok(Role::Plain);
                        }
                        self.start_part(h)?;
                        continue;
                    }
                    if stop {
                        // Unterminated: an enclosing delimiter ends it.
                        self.frames.pop();
                        self.end_entity(entity, Kind::Multipart, parts, h)?;
                        continue;
                    }
                    match Self::delimiter_of(&self.kept, complete, boundary)? {
                        Some(Delimiter::Part) => {
                            *in_child = false;
                            return Ok(Role::Plain);
                        }
                        Some(Delimiter::Close) => {
                            *top = Frame::Rest {
                                entity,
                                kind: Kind::Multipart,
                                parts,
                            };
                            return Ok(Role::Plain);
                        }
                        None => {
                            *top = Frame::Rest {
                                entity,
                                kind: Kind::Multipart,
                                parts,
                            };
                        }
                    }
                }
                Frame::Rest {
                    entity,
                    kind,
                    parts,
                } => {
                    if stop {
                        let (entity, kind, parts) = (*entity, *kind, *parts);
                        self.frames.pop();
                        self.end_entity(entity, kind, parts, h)?;
                        continue;
                    }
                    return Ok(Role::Ignored);
                }
                Frame::Message { entity } => {
                    let entity = *entity;
                    self.frames.pop();
                    self.end_entity(entity, Kind::Message, 1, h)?;
                }
            }
        }
    }

    /// A part of the multipart on top starts (after its delimiter lines).
    fn start_part<H: Handler>(&mut self, h: &mut H) -> Result<(), DowngradeError> {
        let Some(Frame::Parts {
            boundary,
            digest,
            depth,
            in_child,
            ..
        }) = self.frames.last_mut()
        else {
            return Err(DowngradeError::Inconsistent {
                check: "part outside a multipart",
            });
        };
        *in_child = true;
        let (digest, depth) = (*digest, *depth);
        self.open.push(boundary.clone());
        self.start_entity(depth.saturating_add(1), digest, h)
    }

    fn start_entity<H: Handler>(
        &mut self,
        depth: usize,
        digest: bool,
        h: &mut H,
    ) -> Result<(), DowngradeError> {
        if depth > self.limits.max_depth {
            return Err(DowngradeError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        let entity = self.entities;
        self.entities = self.entities.saturating_add(1);
        if self.entities > self.limits.max_parts {
            return Err(DowngradeError::TooManyParts {
                limit: self.limits.max_parts,
            });
        }
        let mut held = std::mem::take(&mut self.header.held);
        held.clear();
        let mut fields = std::mem::take(&mut self.header.fields);
        fields.clear();
        self.header = Header {
            entity,
            depth,
            digest,
            held,
            fields,
            ..Header::default()
        };
        self.frames.push(Frame::Header);
        h.entity_start(entity, depth)
    }

    /// An entity ends; so does a message/rfc822 around it.
    fn end_entity<H: Handler>(
        &mut self,
        entity: usize,
        kind: Kind,
        parts: usize,
        h: &mut H,
    ) -> Result<(), DowngradeError> {
        let (mut entity, mut kind, mut parts) = (entity, kind, parts);
        loop {
            h.entity_end(entity, kind, parts)?;
            match self.frames.last_mut() {
                Some(Frame::Parts {
                    parts,
                    in_child: true,
                    ..
                }) => {
                    *parts = parts.saturating_add(1);
                    self.open.pop();
                    return Ok(());
                }
                Some(Frame::Message { entity: outer }) => {
                    (entity, kind, parts) = (*outer, Kind::Message, 1);
                    self.frames.pop();
                }
                Some(_) => {
                    return Err(DowngradeError::Inconsistent {
                        check: "entity ends inside another",
                    });
                }
                None => {
                    self.frames.push(Frame::Done);
                    return Ok(());
                }
            }
        }
    }

    fn start_field<H: Handler>(&mut self, colon: usize, h: &mut H) -> Result<(), DowngradeError> {
        let name = Name::of(self.kept.get(..colon).unwrap_or_default());
        let held = match name {
            Name::ContentType => !std::mem::replace(&mut self.header.has_ct, true),
            Name::Cte => !std::mem::replace(&mut self.header.has_cte, true),
            Name::MimeVersion => {
                self.header.mime_version = true;
                false
            }
            Name::Other => false,
        };
        if held {
            let start = self.header.held.len();
            self.header.fields.push(Field {
                start,
                colon: start.saturating_add(colon),
                value_end: start,
                end: start,
            });
        }
        self.header.field = Some((name, colon, 0, 0, held));
        self.header.in_field = true;
        h.field_start(name, colon)
    }

    /// Counts (and holds) the octets of the field being read; called for every octet
    /// given to the handler as [`Role::Field`].
    fn field_bytes(&mut self, bytes: &[u8]) -> Result<(), DowngradeError> {
        let Some((name, _, len, _, held)) = self.header.field.as_mut() else {
            return Ok(());
        };
        *len = len.saturating_add(bytes.len() as u64);
        if *held {
            if *len > FIELD_MAX as u64 {
                return Err(DowngradeError::FieldTooLong {
                    field: match name {
                        Name::ContentType => "Content-Type",
                        _ => "Content-Transfer-Encoding",
                    }
                    .into(),
                });
            }
            self.header.held.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn end_field<H: Handler>(&mut self, h: &mut H) -> Result<(), DowngradeError> {
        let Some((_, colon, len, eol, held)) = self.header.field.take() else {
            return Ok(());
        };
        if held && let Some(f) = self.header.fields.last_mut() {
            f.end = self.header.held.len();
            f.value_end = f.end.saturating_sub(eol);
        }
        h.field_end(FieldEnd { colon, len, eol })
    }

    fn end_header<H: Handler>(&mut self, separator: bool, h: &mut H) -> Result<(), DowngradeError> {
        let hd = &self.header;
        let section = HeaderSection {
            fields: hd.fields.clone(),
            ..HeaderSection::default()
        };
        let default = Media::default_for(hd.digest);
        let media = media(&self.parser, &hd.held, &section, default);
        let cte = cte(&hd.held, &section);
        let (entity, depth) = (hd.entity, hd.depth);
        h.header_end(&HeaderInfo {
            entity,
            top: entity == 0,
            media: &media,
            cte: &cte,
            separator,
            has_cte: hd.has_cte,
            mime_version: hd.mime_version,
        })?;
        self.frames.pop();
        if media.main == "multipart"
            && let Some(boundary) = media.boundary.clone()
        {
            self.frames.push(Frame::Preamble {
                entity,
                boundary,
                digest: media.sub == "digest",
                depth,
                eol: Eol::default(),
            });
            h.body_start(entity, true)
        } else if media.is("message", "rfc822") && cte.is_identity() {
            self.frames.push(Frame::Message { entity });
            self.start_entity(depth.saturating_add(1), false, h)
        } else {
            self.frames.push(Frame::Leaf {
                entity,
                eol: Eol::default(),
            });
            h.body_start(entity, false)
        }
    }
}
