//! SASL server mechanisms, sans-I/O: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login)
//! and SCRAM-SHA-256 (RFC 5802, RFC 7677).
//!
//! Each mechanism is a typed state machine whose transitions consume it: it takes the
//! client's decoded response and returns the next state with a challenge to send, or
//! what it learned (credentials to verify, or the outcome). No I/O, no clock, no
//! allocation beyond the bounded messages themselves; the randomness SCRAM needs (its
//! server nonce) is a parameter.
//!
//! Trust: every response is hostile. Responses are decoded from base64 with
//! [`decode_response`], which refuses anything over [`MAX_RESPONSE`] octets; every field
//! is bounded again where it is parsed, and parsing never panics (fuzz target
//! `sasl_responses`, property test in `fuzzing.rs`).

pub mod login;
pub mod plain;
pub mod scram;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The most octets a decoded client response may have. RFC 4954 §4 bounds an AUTH line
/// at 12288 octets, whose base64 holds 9216; no mechanism here needs more than a few
/// hundred.
pub const MAX_RESPONSE: usize = 9216;

/// Longest user name or password accepted, octets (RFC 4616's bound for PLAIN).
pub const MAX_FIELD: usize = 255;

/// A SASL mechanism Tern offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    #[serde(rename = "PLAIN")]
    Plain,
    /// LOGIN (the de facto mechanism older clients use).
    #[serde(rename = "LOGIN")]
    Login,
    /// SCRAM-SHA-256 (RFC 7677), without channel binding.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
}

impl Mechanism {
    /// Every mechanism, in the order they are advertised by default.
    pub const ALL: [Mechanism; 3] = [Mechanism::ScramSha256, Mechanism::Plain, Mechanism::Login];

    /// The registered name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// The mechanism named `name` (case-insensitive), if Tern implements it.
    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Mechanism::Plain => "plain",
            Mechanism::Login => "login",
            Mechanism::ScramSha256 => "scram_sha_256",
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A client response line, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The client cancelled the exchange (`*`, RFC 4954 §4): answer `501 5.7.0`.
    Cancel,
    /// The decoded octets (empty for an empty line or the initial response `=`).
    Data(Vec<u8>),
}

/// Why a response line could not be decoded: answer `501 5.5.2`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// Not valid base64.
    #[error("response is not valid base64")]
    Base64,
    /// Longer than [`MAX_RESPONSE`] octets once decoded.
    #[error("response too long")]
    TooLong,
}

/// Decodes one client response line (without its CRLF): `*` cancels, anything else is
/// base64 (RFC 4954 §4). An empty line is an empty response.
pub fn decode_response(line: &[u8]) -> Result<Response, ResponseError> {
    if line == b"*" {
        return Ok(Response::Cancel);
    }
    // Four base64 characters carry three octets.
    if line.len() / 4 * 3 > MAX_RESPONSE + 3 {
        return Err(ResponseError::TooLong);
    }
    let data = STANDARD.decode(line).map_err(|_| ResponseError::Base64)?;
    if data.len() > MAX_RESPONSE {
        return Err(ResponseError::TooLong);
    }
    Ok(Response::Data(data))
}

/// Encodes a challenge for a `334` line.
pub fn encode_challenge(challenge: &[u8]) -> String {
    STANDARD.encode(challenge)
}

/// A user name and password a mechanism received (PLAIN, LOGIN).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity (the user name), 1 to [`MAX_FIELD`] octets of UTF-8
    /// without controls.
    pub user: String,
    /// The password, 1 to [`MAX_FIELD`] octets.
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password, not even in a test failure.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why a mechanism refused what the client sent. Every variant is answered like a
/// failed authentication (`535 5.7.8`), except where a variant says otherwise, and counts
/// as a failure for brute-force protection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    /// The message does not have the mechanism's syntax.
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// A user name or password is empty, too long, not UTF-8 or has control characters.
    #[error("bad user name or password field")]
    BadField,
    /// An authorization identity other than the user itself was asked for (PLAIN's
    /// authzid, SCRAM's `a=`): Tern lets nobody act as someone else.
    #[error("authorization identity {0:?} differs from the user")]
    AuthzidRefused(String),
    /// SCRAM: the client asked for channel binding (`p=`), which Tern does not offer.
    #[error("channel binding not supported")]
    ChannelBinding,
    /// SCRAM: a mandatory extension (`m=`) Tern does not know.
    #[error("unsupported SCRAM extension")]
    Extension,
    /// SCRAM: the nonce or channel-binding data of the final message does not match.
    #[error("SCRAM final message does not match the exchange")]
    Mismatch,
}

/// Checks a user name: 1 to [`MAX_FIELD`] octets of UTF-8, no control characters.
pub(crate) fn user_field(raw: &[u8]) -> Result<String, SaslError> {
    if raw.is_empty() || raw.len() > MAX_FIELD {
        return Err(SaslError::BadField);
    }
    let s = std::str::from_utf8(raw).map_err(|_| SaslError::BadField)?;
    if s.chars().any(char::is_control) {
        return Err(SaslError::BadField);
    }
    Ok(s.to_string())
}

/// Checks a password: 1 to [`MAX_FIELD`] octets, no NUL.
pub(crate) fn password_field(raw: &[u8]) -> Result<Vec<u8>, SaslError> {
    if raw.is_empty() || raw.len() > MAX_FIELD || raw.contains(&0) {
        return Err(SaslError::BadField);
    }
    Ok(raw.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_decode_cancel_and_bounds() {
        assert_eq!(decode_response(b"*"), Ok(Response::Cancel));
        assert_eq!(decode_response(b""), Ok(Response::Data(vec![])));
        assert_eq!(
            decode_response(b"AGFsaWNlAHNlY3JldA=="),
            Ok(Response::Data(b"\0alice\0secret".to_vec()))
        );
        assert_eq!(decode_response(b"not base64!"), Err(ResponseError::Base64));
        let long = vec![b'A'; 12292];
        assert!(matches!(
            decode_response(&long),
            Err(ResponseError::TooLong)
        ));
        let fits = vec![b'A'; MAX_RESPONSE / 3 * 4];
        assert!(matches!(decode_response(&fits), Ok(Response::Data(d)) if d.len() == MAX_RESPONSE));
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(
            Mechanism::parse("scram-sha-256"),
            Some(Mechanism::ScramSha256)
        );
        assert_eq!(Mechanism::parse("CRAM-MD5"), None);
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.name()), Some(m));
        }
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            user: "u".into(),
            password: b"hunter2".to_vec(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
