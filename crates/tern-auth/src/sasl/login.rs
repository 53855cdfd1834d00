//! LOGIN: the server asks `Username:` then `Password:`; each answer is one response. An
//! initial response, when the client sends one, is the user name.

use super::{Credentials, SaslError, password_field, user_field};

/// The first challenge.
pub const USERNAME: &[u8] = b"Username:";
/// The second challenge.
pub const PASSWORD: &[u8] = b"Password:";

/// The LOGIN exchange.
#[derive(Debug)]
pub enum Login {
    /// `Username:` was (or is to be) asked.
    NeedUser,
    /// The user name arrived; `Password:` was asked.
    NeedPassword(String),
}

/// What a LOGIN step produced.
#[derive(Debug)]
pub enum LoginStep {
    /// Send this challenge, continue with the state.
    Challenge(Login, &'static [u8]),
    /// Both answers arrived.
    Done(Credentials),
}

impl Login {
    /// A new exchange; its first challenge is [`USERNAME`] unless the client sent an
    /// initial response.
    pub fn new() -> Login {
        Login::NeedUser
    }

    /// The client's answer to the current question.
    pub fn respond(self, answer: &[u8]) -> Result<LoginStep, SaslError> {
        match self {
            Login::NeedUser => {
                let user = user_field(answer)?;
                Ok(LoginStep::Challenge(Login::NeedPassword(user), PASSWORD))
            }
            Login::NeedPassword(user) => Ok(LoginStep::Done(Credentials {
                user,
                password: password_field(answer)?,
            })),
        }
    }
}

impl Default for Login {
    fn default() -> Login {
        Login::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_then_password() {
        let LoginStep::Challenge(next, challenge) = Login::new().respond(b"alice").unwrap() else {
            panic!("expected a challenge");
        };
        assert_eq!(challenge, PASSWORD);
        let LoginStep::Done(c) = next.respond(b"secret").unwrap() else {
            panic!("expected credentials");
        };
        assert_eq!(
            (c.user.as_str(), c.password.as_slice()),
            ("alice", &b"secret"[..])
        );
        assert_eq!(Login::new().respond(b"").unwrap_err(), SaslError::BadField);
        assert_eq!(
            Login::NeedPassword("a".into()).respond(b"").unwrap_err(),
            SaslError::BadField
        );
    }
}
