//! The human-readable first part of a report: which message, what happened to each
//! recipient, the remote server's reply quoted as received (cleaned to one line), and for
//! a delay notice when Tern will give up.
//!
//! Invariant: every untrusted value (addresses, ENVID, remote host name and reply) goes
//! through [`fields::one_line`] first, so the text holds no control characters other than
//! the CRLF line breaks written here. Non-ASCII text is kept: the part is `text/plain;
//! charset=utf-8` and mail-builder picks its transfer encoding.

use std::fmt::Write as _;

use crate::fields::{one_line, reply_text};
use crate::{Action, DsnInput, ReportKind};

/// What is attached as the third part, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Returned {
    /// The whole original message.
    Full,
    /// Its header section only, as asked (or because the report announces no failure).
    Headers,
    /// Its header section only, because the whole message is larger than the limit.
    HeadersBecauseTooLarge,
}

/// Dates already in RFC 5322 form, in the order of the input.
pub(crate) struct Dates {
    pub arrival: String,
    pub give_up: Option<String>,
    pub recipients: Vec<RecipientDates>,
}

/// Formatted per-recipient dates.
pub(crate) struct RecipientDates {
    pub last_attempt: Option<String>,
    /// Only set for a delayed recipient.
    pub will_retry_until: Option<String>,
}

/// The text of the first part, CRLF line endings.
pub(crate) fn explanation(input: &DsnInput<'_>, returned: Returned, dates: &Dates) -> String {
    let mut text = String::with_capacity(2048);
    line(
        &mut text,
        &format!("This is the mail system at host {}.", input.reporting_mta),
    );
    line(&mut text, "");
    match input.kind {
        ReportKind::Failure => {
            line(
                &mut text,
                "Your message could not be delivered to one or more recipients.",
            );
            line(
                &mut text,
                "It will not be retried. The reason is given below for each recipient.",
            );
        }
        ReportKind::Delay => {
            line(
                &mut text,
                "Your message has not yet been delivered to one or more recipients.",
            );
            match &dates.give_up {
                Some(give_up) => line(
                    &mut text,
                    &format!("The mail system will keep trying until {give_up}."),
                ),
                None => line(&mut text, "The mail system will keep trying for a while."),
            }
            line(
                &mut text,
                "You do not need to send the message again. If it still cannot be",
            );
            line(
                &mut text,
                "delivered by then, you will receive a separate notice.",
            );
        }
        ReportKind::Success => {
            line(
                &mut text,
                "Your message was delivered to the recipients listed below, as you",
            );
            line(&mut text, "asked for a report of successful delivery.");
            if input
                .recipients
                .iter()
                .any(|recipient| recipient.action == Action::Relayed)
            {
                line(
                    &mut text,
                    "Where it says \"relayed\", the message was passed on to a system that",
                );
                line(
                    &mut text,
                    "does not report delivery, so you may hear nothing more about it.",
                );
            }
        }
    }
    line(&mut text, "");
    line(&mut text, &returned_sentence(input, returned));
    line(&mut text, "");
    line(
        &mut text,
        &format!(
            "Message: queue id {}, received {}.",
            input.queue_id, dates.arrival
        ),
    );
    if let Some(envid) = input.envid {
        line(&mut text, &format!("Envelope id: {}", one_line(envid)));
    }
    if input.kind == ReportKind::Failure {
        line(
            &mut text,
            "If you need help, write to the postmaster and include this report.",
        );
    }
    line(&mut text, "");
    line(&mut text, "                   The mail system");

    for (recipient, recipient_dates) in input.recipients.iter().zip(&dates.recipients) {
        line(&mut text, "");
        line(
            &mut text,
            &format!(
                "<{}>: {} (status {})",
                one_line(recipient.final_recipient),
                action_phrase(recipient.action),
                one_line(recipient.status),
            ),
        );
        if let Some(original) = recipient.original_recipient {
            line(
                &mut text,
                &format!("    Originally addressed as: {}", one_line(original)),
            );
        }
        if let Some(remote_mta) = recipient.remote_mta {
            line(
                &mut text,
                &format!("    Remote server: {}", one_line(remote_mta)),
            );
        }
        if let Some(diagnostic) = recipient.diagnostic {
            let said = if recipient.remote_mta.is_some() {
                "    The remote server said:"
            } else {
                "    Reason:"
            };
            line(&mut text, said);
            line(&mut text, &format!("        {}", reply_text(diagnostic)));
        }
        if let Some(date) = &recipient_dates.last_attempt {
            line(&mut text, &format!("    Last attempt: {date}"));
        }
        if let Some(date) = &recipient_dates.will_retry_until {
            line(&mut text, &format!("    Will keep trying until: {date}"));
        }
    }
    text
}

fn line(text: &mut String, content: &str) {
    // Writing to a String cannot fail.
    let _ = write!(text, "{content}\r\n");
}

fn action_phrase(action: Action) -> &'static str {
    match action {
        Action::Failed => "delivery failed",
        Action::Delayed => "delivery delayed, still trying",
        Action::Delivered => "delivered",
        Action::Relayed => "relayed to a system that does not report delivery",
        Action::Expanded => "delivered to a list or alias, which passed it on",
    }
}

fn returned_sentence(input: &DsnInput<'_>, returned: Returned) -> String {
    match returned {
        Returned::Full => "Your message is attached below.".to_owned(),
        Returned::Headers => "The headers of your message are attached below.".to_owned(),
        Returned::HeadersBecauseTooLarge => format!(
            "Your message ({} bytes) is larger than the {} bytes this system returns in full,\r\n\
             so only its headers are attached below.",
            input.original.len(),
            input.max_full_size
        ),
    }
}
