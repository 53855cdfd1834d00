//! The SMTP transaction state machine, without I/O.
//!
//! A session is in one [`Phase`]. Transitions take the phase by value and return the next
//! one, so a transaction cannot be half-reset: EHLO/HELO, RSET, STARTTLS and the end of a
//! message each produce a fresh phase. An out-of-sequence command gets a `503 5.5.1` reply
//! that says what was expected.

use tern_proto::Reply;
use tern_spool::{MailParams, Recipient};

/// What the client said in EHLO/HELO.
#[derive(Debug, Clone)]
pub struct Greeting {
    /// The argument.
    pub name: String,
    /// EHLO (true) or HELO.
    pub esmtp: bool,
}

/// An open mail transaction.
#[derive(Debug)]
pub struct Transaction {
    /// Reverse path (canonical form; empty for `<>`).
    pub sender: String,
    /// MAIL FROM parameters kept with the message.
    pub params: MailParams,
    /// Accepted recipients.
    pub recipients: Vec<Recipient>,
    /// RCPT commands refused so far (for the DATA reply when none were accepted).
    pub refused: usize,
    /// True once this transaction's `max_recipients` refusal was logged (event 2133
    /// comes once per message, not once per refused RCPT).
    pub recipient_limit_logged: bool,
    /// Units of the recipient rate limits set aside at MAIL FROM for this
    /// transaction's RCPTs; what is left goes back when the transaction ends (`Drop`).
    pub allowance: crate::rate::Allowance,
}

/// Where the session stands.
#[derive(Debug)]
pub enum Phase {
    /// Connected; no EHLO/HELO yet.
    Connected,
    /// Greeted; no transaction open.
    Ready(Greeting),
    /// MAIL accepted.
    Mail(Greeting, Transaction),
}

impl Phase {
    /// EHLO/HELO: always allowed, aborts any open transaction (RFC 5321 §4.1.4).
    pub fn greet(self, greeting: Greeting) -> Phase {
        Phase::Ready(greeting)
    }

    /// RSET: back to greeted (or connected).
    pub fn reset(self) -> Phase {
        match self {
            Phase::Connected => Phase::Connected,
            Phase::Ready(g) | Phase::Mail(g, _) => Phase::Ready(g),
        }
    }

    /// The greeting, if any.
    pub fn greeting(&self) -> Option<&Greeting> {
        match self {
            Phase::Connected => None,
            Phase::Ready(g) | Phase::Mail(g, _) => Some(g),
        }
    }

    /// True while a transaction is open.
    pub fn in_transaction(&self) -> bool {
        matches!(self, Phase::Mail(..))
    }

    /// Checks that MAIL may start now.
    pub fn may_start_mail(&self) -> Result<(), Reply> {
        match self {
            Phase::Connected => Err(Reply::new(503, "5.5.1", "Send EHLO or HELO first")),
            Phase::Mail(..) => Err(Reply::new(503, "5.5.1", "Nested MAIL command")),
            Phase::Ready(_) => Ok(()),
        }
    }

    /// MAIL accepted: opens the transaction. Call only after `may_start_mail`.
    pub fn start_mail(self, sender: String, params: MailParams) -> Phase {
        match self {
            Phase::Ready(g) | Phase::Mail(g, _) => Phase::Mail(
                g,
                Transaction {
                    sender,
                    params,
                    recipients: Vec::new(),
                    refused: 0,
                    recipient_limit_logged: false,
                    allowance: crate::rate::Allowance::default(),
                },
            ),
            Phase::Connected => Phase::Connected,
        }
    }

    /// The open transaction, or the reply for RCPT/DATA/BDAT without one.
    pub fn transaction_mut(&mut self) -> Result<&mut Transaction, Reply> {
        match self {
            Phase::Mail(_, t) => Ok(t),
            _ => Err(Reply::new(503, "5.5.1", "Send MAIL first")),
        }
    }

    /// Takes the transaction for DATA/BDAT if it has recipients, leaving the session
    /// greeted. Without recipients the transaction stays and the reply says why.
    pub fn take_for_data(self) -> (Phase, Result<(Greeting, Transaction), Reply>) {
        match self {
            Phase::Mail(g, t) if !t.recipients.is_empty() => (Phase::Ready(g.clone()), Ok((g, t))),
            Phase::Mail(g, t) => {
                let reply = if t.refused > 0 {
                    Reply::new(554, "5.5.1", "No valid recipients")
                } else {
                    Reply::new(503, "5.5.1", "Send RCPT first")
                };
                (Phase::Mail(g, t), Err(reply))
            }
            other => (other, Err(Reply::new(503, "5.5.1", "Send MAIL first"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeted() -> Phase {
        Phase::Connected.greet(Greeting {
            name: "c".into(),
            esmtp: true,
        })
    }

    #[test]
    fn mail_needs_greeting_and_cannot_nest() {
        assert_eq!(Phase::Connected.may_start_mail().unwrap_err().code, 503);
        let p = greeted();
        assert!(p.may_start_mail().is_ok());
        let p = p.start_mail(String::new(), MailParams::default());
        assert!(p.may_start_mail().is_err());
        assert!(p.reset().may_start_mail().is_ok());
    }

    #[test]
    fn data_needs_recipients() {
        let p = greeted().start_mail(String::new(), MailParams::default());
        let (p, r) = p.take_for_data();
        assert_eq!(r.unwrap_err().lines[0], "Send RCPT first");
        assert!(p.in_transaction());
        let mut p = p;
        p.transaction_mut().unwrap().refused = 1;
        let (_, r) = p.take_for_data();
        assert_eq!(r.unwrap_err().code, 554);
    }
}
