//! PLAIN (RFC 4616): one message, `[authzid] NUL authcid NUL passwd`.
//!
//! An authorization identity is accepted only when it is empty or equal to the
//! authentication identity: Tern has no notion of one user acting for another (Postfix
//! with Dovecot behaves the same unless master users are set up).

use super::{Credentials, SaslError, password_field, user_field};

/// The PLAIN exchange: waits for the one message (the challenge before it is empty).
#[derive(Debug, Default)]
pub struct Plain;

impl Plain {
    /// A new exchange.
    pub fn new() -> Plain {
        Plain
    }

    /// The client's message: its credentials, to verify.
    pub fn respond(self, message: &[u8]) -> Result<Credentials, SaslError> {
        let mut parts = message.splitn(3, |&b| b == 0);
        let (Some(authzid), Some(authcid), Some(passwd)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(SaslError::Malformed("PLAIN"));
        };
        if authzid.len() > super::MAX_FIELD {
            return Err(SaslError::BadField);
        }
        let user = user_field(authcid)?;
        let password = password_field(passwd)?;
        if !authzid.is_empty() && authzid != authcid {
            return Err(SaslError::AuthzidRefused(
                String::from_utf8_lossy(authzid).chars().take(64).collect(),
            ));
        }
        Ok(Credentials { user, password })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        let ok = Plain::new().respond(b"\0alice\0secret").unwrap();
        assert_eq!(
            (ok.user.as_str(), ok.password.as_slice()),
            ("alice", &b"secret"[..])
        );
        let same = Plain::new().respond(b"alice\0alice\0secret").unwrap();
        assert_eq!(same.user, "alice");
        assert_eq!(
            Plain::new().respond(b"bob\0alice\0secret"),
            Err(SaslError::AuthzidRefused("bob".into()))
        );
        assert_eq!(
            Plain::new().respond(b"alice\0secret"),
            Err(SaslError::Malformed("PLAIN"))
        );
        assert_eq!(
            Plain::new().respond(b"\0\0secret"),
            Err(SaslError::BadField)
        );
        assert_eq!(Plain::new().respond(b"\0alice\0"), Err(SaslError::BadField));
        // A NUL inside the password is a fourth field: refused.
        assert_eq!(
            Plain::new().respond(b"\0alice\0se\0cret"),
            Err(SaslError::BadField)
        );
        assert_eq!(
            Plain::new().respond(b"\0al\x01ice\0secret"),
            Err(SaslError::BadField)
        );
        let long = [b"\0".as_slice(), &[b'a'; 256], b"\0pw"].concat();
        assert_eq!(Plain::new().respond(&long), Err(SaslError::BadField));
    }
}
