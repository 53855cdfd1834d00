//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, without channel binding.
//!
//! Tern does not offer SCRAM-SHA-256-PLUS, so a client-first message must start with
//! `n,,` (client does not support channel binding) or `y,,` (it does, but thinks the
//! server does not; correct, since the PLUS variant is not advertised, RFC 5802 §6); `p=`
//! is refused. The final message's `c=` must repeat the GS2 header exactly.
//!
//! Flow: [`ScramStart::respond`] parses client-first and names the user; the caller
//! looks up the user's [`ScramKeys`] (or makes stand-in keys for an unknown user, see
//! [`ScramKeys::stand_in`]) and a server nonce from a CSPRNG, and
//! [`ScramNeedKeys::challenge`] returns server-first; [`ScramSent::respond`] checks
//! client-final's proof in constant time and returns server-final (`v=`).
//!
//! Names: the user name is decoded (`=2C`, `=3D`) but not SASLprepped; passwords are
//! taken as the octets the client hashed. Clients that SASLprep (Python's scramp, Dovecot)
//! give the same octets for every ASCII password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;

use super::{MAX_FIELD, SaslError};

/// The iteration count RFC 7677 and Dovecot use by default.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Fewest and most iterations accepted in stored keys (the most bounds the CPU time a
/// plaintext password costs to derive).
pub const ITERATIONS: std::ops::RangeInclusive<u32> = 1..=10_000_000;
/// Longest client nonce accepted, octets.
const MAX_NONCE: usize = 256;

/// What the server keeps for a user (RFC 5802 §3): salt, iteration count, StoredKey
/// and ServerKey.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ScramKeys {
    /// Derives the keys from a plaintext password (PBKDF2: CPU-bound, run it off the
    /// async workers). `iterations` of 0 is raised to 1.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramKeys {
        let mut salted = [0u8; 32];
        let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            salt,
            password,
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        ScramKeys {
            iterations: rounds.get(),
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Keys for a user who does not exist or has no SCRAM keys: the salt is derived from
    /// the user name under `secret` (so asking twice gives the same salt, RFC 5802 §9),
    /// the keys are random. An exchange on them always fails.
    pub fn stand_in(user: &str, secret: &[u8; 32], iterations: u32) -> ScramKeys {
        let salt = hmac_sha256(secret, user.as_bytes());
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        // On the very unlikely failure of the system's random source the keys stay
        // zero; the exchange still fails (`known` is false).
        let _ = getrandom::fill(&mut stored_key);
        let _ = getrandom::fill(&mut server_key);
        ScramKeys {
            iterations,
            salt: salt.get(..16).unwrap_or(&salt).to_vec(),
            stored_key,
            server_key,
        }
    }

    /// True when `password` derives these keys (used to check a PLAIN or LOGIN password
    /// against a stored SCRAM entry). Constant time in the comparison.
    pub fn matches_password(&self, password: &[u8]) -> bool {
        let derived = ScramKeys::derive(password, &self.salt, self.iterations);
        bool::from(derived.stored_key.ct_eq(&self.stored_key))
            & bool::from(derived.server_key.ct_eq(&self.server_key))
    }
}

/// A new SCRAM exchange, waiting for client-first.
#[derive(Debug, Default)]
pub struct ScramStart;

/// client-first arrived; the exchange needs the user's keys and a server nonce.
#[derive(Debug)]
pub struct ScramNeedKeys {
    user: String,
    gs2_header: String,
    client_first_bare: String,
    client_nonce: String,
}

/// server-first was sent; waiting for client-final.
#[derive(Debug)]
pub struct ScramSent {
    user: String,
    known: bool,
    keys: ScramKeys,
    gs2_header: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

/// How the exchange ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramOutcome {
    /// The proof is right: send `server_final` (the `v=` message), then succeed.
    Verified {
        /// The authenticated user.
        user: String,
        /// server-final-message.
        server_final: Vec<u8>,
    },
    /// The proof is wrong, or the user is unknown: authentication failed.
    Refused {
        /// The user name the client gave.
        user: String,
    },
}

/// Decodes a saslname (`=2C` is `,`, `=3D` is `=`; any other `=` is an error).
fn saslname(raw: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('=') {
        out.push_str(rest.get(..at).unwrap_or_default());
        let code = rest.get(at..at + 3).ok_or(SaslError::Malformed("SCRAM"))?;
        out.push(match code {
            "=2C" | "=2c" => ',',
            "=3D" | "=3d" => '=',
            _ => return Err(SaslError::Malformed("SCRAM")),
        });
        rest = rest.get(at + 3..).unwrap_or_default();
    }
    out.push_str(rest);
    super::user_field(out.as_bytes())
}

fn printable_nonce(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NONCE
        && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ScramStart {
    /// A new exchange.
    pub fn new() -> ScramStart {
        ScramStart
    }

    /// client-first-message.
    pub fn respond(self, message: &[u8]) -> Result<ScramNeedKeys, SaslError> {
        let text = std::str::from_utf8(message).map_err(|_| SaslError::Malformed("SCRAM"))?;
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SaslError::Malformed("SCRAM"));
        };
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(SaslError::ChannelBinding),
            _ => return Err(SaslError::Malformed("SCRAM")),
        }
        let authzid = match authzid {
            "" => None,
            a => Some(saslname(
                a.strip_prefix("a=").ok_or(SaslError::Malformed("SCRAM"))?,
            )?),
        };
        let mut fields = bare.split(',');
        let user_attr = fields.next().unwrap_or_default();
        if user_attr.starts_with("m=") {
            return Err(SaslError::Extension);
        }
        let user = saslname(
            user_attr
                .strip_prefix("n=")
                .ok_or(SaslError::Malformed("SCRAM"))?,
        )?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| printable_nonce(n))
            .ok_or(SaslError::Malformed("SCRAM"))?;
        if let Some(a) = authzid
            && a != user
        {
            return Err(SaslError::AuthzidRefused(a.chars().take(64).collect()));
        }
        let gs2_len = flag.len() + authzid_len(text, flag) + 2;
        Ok(ScramNeedKeys {
            gs2_header: text.get(..gs2_len).unwrap_or_default().to_string(),
            client_first_bare: bare.to_string(),
            client_nonce: nonce.to_string(),
            user,
        })
    }
}

/// Length of the authzid field of a client-first message whose flag is `flag`.
fn authzid_len(text: &str, flag: &str) -> usize {
    text.get(flag.len() + 1..)
        .and_then(|rest| rest.find(','))
        .unwrap_or(0)
}

impl ScramNeedKeys {
    /// The user name the client gave.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// server-first-message for these keys. `known` is false for stand-in keys (the
    /// exchange then fails whatever the client proves). `server_nonce` must come from a
    /// CSPRNG ([`server_nonce`]); printable, no comma.
    pub fn challenge(
        self,
        keys: ScramKeys,
        known: bool,
        server_nonce: &str,
    ) -> (ScramSent, Vec<u8>) {
        let nonce = format!("{}{server_nonce}", self.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&keys.salt),
            keys.iterations
        );
        let message = server_first.clone().into_bytes();
        (
            ScramSent {
                user: self.user,
                known,
                keys,
                gs2_header: self.gs2_header,
                nonce,
                client_first_bare: self.client_first_bare,
                server_first,
            },
            message,
        )
    }
}

/// A server nonce: 24 random octets from the system's CSPRNG, base64.
pub fn server_nonce() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw)?;
    Ok(STANDARD.encode(raw))
}

impl ScramSent {
    /// client-final-message.
    pub fn respond(self, message: &[u8]) -> Result<ScramOutcome, SaslError> {
        let text = std::str::from_utf8(message).map_err(|_| SaslError::Malformed("SCRAM"))?;
        let proof_at = text.rfind(",p=").ok_or(SaslError::Malformed("SCRAM"))?;
        let without_proof = text.get(..proof_at).unwrap_or_default();
        let proof = text.get(proof_at + 3..).unwrap_or_default();
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(SaslError::Malformed("SCRAM"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(SaslError::Malformed("SCRAM"))?;
        let expected_binding = STANDARD.encode(self.gs2_header.as_bytes());
        if binding != expected_binding || nonce != self.nonce {
            return Err(SaslError::Mismatch);
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| SaslError::Malformed("SCRAM"))?;
        if proof.len() != 32 || self.client_first_bare.len() > MAX_FIELD * 40 {
            return Err(SaslError::Malformed("SCRAM"));
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_signature = hmac_sha256(&self.keys.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature))
        {
            *k = p ^ s;
        }
        let matches = bool::from(sha256(&client_key).ct_eq(&self.keys.stored_key));
        if !(matches && self.known) {
            return Ok(ScramOutcome::Refused { user: self.user });
        }
        let server_signature = hmac_sha256(&self.keys.server_key, auth_message.as_bytes());
        Ok(ScramOutcome::Verified {
            user: self.user,
            server_final: format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: user "user", password "pencil".
    #[test]
    fn rfc7677_test_vector() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = ScramKeys::derive(b"pencil", &salt, 4096);
        let need = ScramStart::new()
            .respond(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        assert_eq!(need.user(), "user");
        let (sent, first) = need.challenge(keys, true, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(
            first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let outcome = sent
            .respond(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            outcome,
            ScramOutcome::Verified {
                user: "user".into(),
                server_final: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
            }
        );
    }

    fn vector_exchange(keys: ScramKeys, known: bool) -> ScramOutcome {
        let need = ScramStart::new()
            .respond(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        let (sent, _) = need.challenge(keys, known, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        sent.respond(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap()
    }

    #[test]
    fn wrong_password_and_stand_in_keys_are_refused() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let wrong = ScramKeys::derive(b"pencils", &salt, 4096);
        assert_eq!(
            vector_exchange(wrong, true),
            ScramOutcome::Refused {
                user: "user".into()
            }
        );
        // Right keys but marked unknown: still refused.
        let right = ScramKeys::derive(b"pencil", &salt, 4096);
        assert_eq!(
            vector_exchange(right, false),
            ScramOutcome::Refused {
                user: "user".into()
            }
        );
        let a = ScramKeys::stand_in("user", &[7; 32], 4096);
        let b = ScramKeys::stand_in("user", &[7; 32], 4096);
        assert_eq!(a.salt, b.salt, "same salt for the same unknown user");
    }

    #[test]
    fn gs2_header_rules() {
        assert_eq!(
            ScramStart::new()
                .respond(b"p=tls-unique,,n=user,r=abc")
                .unwrap_err(),
            SaslError::ChannelBinding
        );
        assert_eq!(
            ScramStart::new()
                .respond(b"n,a=other,n=user,r=abc")
                .unwrap_err(),
            SaslError::AuthzidRefused("other".into())
        );
        assert!(ScramStart::new().respond(b"n,a=user,n=user,r=abc").is_ok());
        assert_eq!(
            ScramStart::new()
                .respond(b"n,,m=ext,n=user,r=abc")
                .unwrap_err(),
            SaslError::Extension
        );
        let need = ScramStart::new().respond(b"n,,n=a=2Cb=3Dc,r=abc").unwrap();
        assert_eq!(need.user(), "a,b=c");
        assert!(ScramStart::new().respond(b"n,,n=a=ZZ,r=abc").is_err());
        // y,, is fine (the client supports binding, the server does not offer it) and
        // its c= must then be base64("y,,").
        let need = ScramStart::new().respond(b"y,,n=user,r=abc").unwrap();
        let (sent, _) = need.challenge(ScramKeys::derive(b"p", b"salt", 1), true, "xyz");
        assert_eq!(
            sent.respond(b"c=biws,r=abcxyz,p=AAAA").unwrap_err(),
            SaslError::Mismatch
        );
    }

    #[test]
    fn plaintext_check_against_keys() {
        let k = ScramKeys::derive(b"secret", b"0123456789abcdef", 16);
        assert!(k.matches_password(b"secret"));
        assert!(!k.matches_password(b"secreT"));
    }

    #[test]
    fn nonces_are_random_and_printable() {
        let a = server_nonce().unwrap();
        let b = server_nonce().unwrap();
        assert_ne!(a, b);
        assert!(printable_nonce(&a));
    }
}
