//! Sans-I/O SMTP server codec for Tern.
//!
//! Bytes in, typed values out; no sockets, no clocks, no allocation beyond the line being
//! parsed. The SMTP session in `tern-smtpd` owns the I/O and feeds this crate:
//!
//! - [`input::CommandFramer`] cuts the input into command lines with a hard length limit;
//!   an over-long line is reported once and skipped up to its end so the session stays in
//!   sync with the client.
//! - [`command::parse`] turns one line into a typed [`command::Command`], using the
//!   `smtp-proto` grammar for the standard syntax and Tern's own checks on top (parameters
//!   Tern does not advertise are refused; addresses are re-quoted canonically).
//! - [`address`] judges a parsed address for relay control (routing tricks, domain
//!   syntax, internationalised addresses).
//! - [`data::DataDecoder`] decodes DATA content: dot-unstuffing, end of data only at
//!   `CRLF.CRLF`, bare CR/LF policy, size and line-length limits, all while streaming.
//! - [`bdat::BdatDecoder`] applies the same content rules to BDAT chunks (no dot
//!   handling; a CRLF split between chunks is still one line ending).
//! - [`reply::Reply`] renders replies with enhanced status codes (RFC 3463).
//!
//! Trust: every input to this crate comes from an untrusted peer. Nothing here panics on
//! any input (property tests and the `fuzz/` targets check it), and every buffer it grows
//! is bounded by a limit the caller sets.

#![forbid(unsafe_code)]

pub mod address;
pub mod bdat;
pub mod command;
pub mod data;
pub mod input;
pub mod msgid;
pub mod reply;

pub use address::{AddressError, Mailbox, RoutingTrick};
pub use bdat::BdatDecoder;
pub use command::{Command, CommandError, MailCommand, RcptCommand};
pub use data::{BareLinePolicy, DataDecoder, DataLimits, DataProblem, DataStep};
pub use input::{AUTH_LINE_LIMIT, CommandFramer, Frame};
pub use msgid::MessageIdScanner;
pub use reply::Reply;

/// Entry points for fuzz targets (see `fuzz/`). Not part of the stable API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::data::{BareLinePolicy, DataDecoder, DataLimits};
    use crate::input::{CommandFramer, Frame};

    /// Frames and parses arbitrary bytes as a command stream.
    pub fn commands(data: &[u8]) {
        let mut framer = CommandFramer::new(512);
        let mut buf = data.to_vec();
        loop {
            let (frame, used) = framer.next_frame(&buf);
            if let Frame::Line(line) = frame
                && let Ok(crate::Command::Mail(m)) = crate::command::parse(line)
            {
                let _ = crate::address::Mailbox::parse(&m.address);
            }
            if used == 0 {
                break;
            }
            buf.drain(..used);
        }
    }

    /// Decodes arbitrary bytes as DATA content in arbitrary chunkings; asserts that output
    /// never exceeds input plus the CRLFs added by normalisation.
    pub fn data(data: &[u8]) {
        let split = data.first().map(|b| usize::from(*b) + 1).unwrap_or(1);
        let mut dec = DataDecoder::new(DataLimits {
            max_size: 1 << 20,
            max_line: 1000,
            bare: BareLinePolicy::Normalize,
        });
        let mut out = Vec::new();
        for chunk in data.chunks(split) {
            let step = dec.feed(chunk, &mut out);
            if matches!(step, crate::DataStep::End { .. }) {
                break;
            }
        }
        assert!(out.len() <= data.len().saturating_mul(2));
    }

    /// Checks arbitrary bytes as BDAT content cut into arbitrary chunks; asserts that the
    /// result does not depend on the cuts and that normalised output has only CRLF line
    /// endings.
    pub fn bdat(data: &[u8]) {
        let split = data.first().map(|b| usize::from(*b) + 1).unwrap_or(1);
        let limits = DataLimits {
            max_size: 1 << 20,
            max_line: 100,
            bare: BareLinePolicy::Normalize,
        };
        let mut whole = Vec::new();
        let mut one = crate::BdatDecoder::new(limits);
        one.feed(data, &mut whole);
        one.finish(&mut whole);
        let mut cut = Vec::new();
        let mut many = crate::BdatDecoder::new(limits);
        for chunk in data.chunks(split) {
            many.feed(chunk, &mut cut);
        }
        many.finish(&mut cut);
        assert_eq!(whole, cut);
        assert_eq!(one.problem(), many.problem());
        if one.problem().is_none() {
            let bare_lf = whole
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'\n' && (i == 0 || whole.get(i - 1) != Some(&b'\r')));
            assert!(!bare_lf);
        }
    }
}
