//! ARC sealing (RFC 8617, `tern_dkim::arc`) of the mail Tern forwards, the last step
//! before a transaction sends its content: after the 7-bit conversion
//! (`conversion.rs`) and the DKIM signature (`signing.rs`), so the set covers exactly
//! the octets the peer receives (its DKIM-Signature fields included), and again at
//! every attempt (another attempt may send another form).
//!
//! Which mail: mail that came in from outside (its envelope's client neither in a
//! relay network, nor authenticated, nor local: pickup, `tern sendmail`, Tern's own
//! notifications) and leaves by SMTP (`mx`, `smtp` routes) or LMTP over TCP to another
//! host: relayed mail, and mail whose recipient an alias expanded to a remote address.
//! Mail Tern originates is DKIM-signed instead (`tern_dkim::rules`), never sealed; local
//! transports (Maildir, drop, LMTP on a Unix socket) are never sealed.
//!
//! The chain status: Tern's inbound verifier leaves its Authentication-Results on top
//! of the stored message; when it names Tern's authserv-id and carries `arc=pass` or
//! `arc=fail`, it gives `cv=` and becomes the new set's ARC-Authentication-Results.
//! Otherwise (verification off, no verdict) the chain is validated here, on the stored
//! form (as it was received; a 7-bit copy would break the last body hash), through
//! Tern's name servers within `arc.timeout_secs`, in a task of its own so a panic in the
//! validator ends that task only.
//!
//! Memory: the content is held in memory while it is sealed, at most `arc.max_size`
//! octets (twice when a converted copy's chain must be validated on the stored form);
//! sealings of more than 1 MiB share the large conversions' permits (one per core), so
//! a burst of large forwarded mail holds a bounded amount. A larger message is sent
//! unsealed (event 4114, `too_large`).
//!
//! Failures never hold mail up: a message that cannot be sealed is sent as it would
//! be without ARC, with event 4114 (rate-limited per reason) and the metrics'
//! `tern_arc_seals_total{result}`.

use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tern_dkim::arc::{self, Cv, Plan, Results, Sealing, Unsealed};
use tern_events::{catalog, fields};
use tern_metrics::ArcSeal;
use tern_route::{LmtpServer, Transport};
use tern_spool::Envelope;

use crate::Context;
use crate::content::{self, SPILL_OVER};
use crate::conversion::Copy7;
use crate::job::Job;

/// Whether mail with this envelope, leaving by this transport, is forwarded mail that
/// ARC sealing is for (see the module header).
pub(crate) fn forwarded(env: &Envelope, transport: &Transport) -> bool {
    let source = crate::signing::source(env);
    let outside = !source.authenticated && !source.relay_network && !source.local;
    let leaves = match transport {
        Transport::Mx { .. } | Transport::Smtp { .. } => true,
        Transport::Lmtp { server } => matches!(server, LmtpServer::Tcp(_)),
        _ => false,
    };
    outside && leaves
}

/// The blocking part's outcome.
enum Step {
    /// The fields to send, the new set's `cv`, where its AAR came from.
    Sealed(Vec<u8>, Cv, Results),
    /// The chain must be validated first: the wire form to seal, the stored form to
    /// validate, and Tern's Authentication-Results.
    Validate {
        wire: Vec<u8>,
        stored: Vec<u8>,
        top: Option<arc::chain::TopResults>,
    },
    /// Not sealed, and the error text when there is one.
    Skip(Unsealed, String),
}

/// Seals the content this transaction is about to send: `dkim` (the DKIM-Signature
/// fields going first, possibly empty), then the stored message when `copy` is `None`,
/// else the converted copy (handed back, positioned at its start). Returns the ARC
/// fields to send before everything else (empty: not sealed), or `Err(true)` when a
/// converted copy was lost to a panic (the attempt must then be deferred; `Err(false)`:
/// nothing was lost, send unsealed).
pub(crate) async fn seal(
    ctx: &Context,
    job: &Job,
    copy: Option<Copy7>,
    dkim: &[u8],
    remote: &str,
) -> (Option<Copy7>, Result<Vec<u8>, bool>) {
    let env = &job.msg.envelope;
    if !forwarded(env, &job.transport) {
        return (copy, Ok(Vec::new()));
    }
    let runtime = ctx.runtime.load();
    let sealing = Arc::clone(&runtime.arc);
    drop(runtime);
    if !sealing.enabled() {
        return (copy, Ok(Vec::new()));
    }
    let sealer = match sealing.sealer() {
        Ok(s) => Arc::clone(s),
        Err(why) => {
            unsealed(ctx, job, remote, why, "");
            return (copy, Ok(Vec::new()));
        }
    };
    let size = copy
        .as_ref()
        .map_or(job.msg.facts.len, Copy7::len)
        .saturating_add(dkim.len() as u64);
    if size > sealing.max_size() {
        unsealed(ctx, job, remote, Unsealed::TooLarge, "");
        return (copy, Ok(Vec::new()));
    }
    // Large sealings share the large conversions' permits (memory and CPU).
    let _permit = if size > SPILL_OVER as u64 {
        ctx.large_conversions.0.acquire().await.ok()
    } else {
        None
    };
    let remote_ip = env
        .client
        .address
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| env.client.address.parse::<IpAddr>().ok());
    let spool = ctx.spool.clone();
    let (state, id) = (job.msg.state, env.id);
    let dkim_fields = dkim.to_vec();
    let authserv_id = sealing.authserv_id().to_string();
    let blocking_sealer = Arc::clone(&sealer);
    let had_copy = copy.is_some();
    let work = crate::last_gasp::spawn_blocking(move || {
        let mut copy = copy;
        let step = match read(&spool, state, id, copy.as_mut()) {
            Err(e) => Step::Skip(Unsealed::Error, e),
            Ok(content) => {
                let wire = arc::wire_form(&[&dkim_fields, &content]);
                match arc::plan(&wire, &authserv_id, remote_ip) {
                    Plan::Seal { cv, results, from } => {
                        match blocking_sealer.seal(&wire, cv, &results) {
                            Ok(fields) => Step::Sealed(fields, cv, from),
                            Err(e) => Step::Skip(Unsealed::Error, e.to_string()),
                        }
                    }
                    Plan::Skip(why) => Step::Skip(why, String::new()),
                    Plan::Validate { top } => {
                        // The chain as it was received: the stored form.
                        let stored = if copy.is_none() && dkim_fields.is_empty() {
                            Ok(wire.clone())
                        } else {
                            content::read_whole(&spool, state, id, u64::MAX)
                                .map(|c| arc::wire_form(&[&c.unwrap_or_default()]))
                                .map_err(|e| e.to_string())
                        };
                        match stored {
                            Ok(stored) => Step::Validate { wire, stored, top },
                            Err(e) => Step::Skip(Unsealed::Error, e),
                        }
                    }
                }
            }
        };
        (copy, step)
    });
    let (copy, step) = match work.await {
        Ok(done) => done,
        // A panic in the sealer ends that blocking task only; a converted copy went
        // with it, so this attempt cannot send the converted form: it is deferred.
        Err(_) => {
            unsealed(
                ctx,
                job,
                remote,
                Unsealed::Error,
                "the sealer failed inside Tern",
            );
            return (None, Err(had_copy));
        }
    };
    let (fields, cv, source) = match step {
        Step::Sealed(fields, cv, from) => (fields, cv, from),
        Step::Skip(why, error) => {
            unsealed(ctx, job, remote, why, &error);
            return (copy, Ok(Vec::new()));
        }
        Step::Validate { wire, stored, top } => {
            let cv = match validate(ctx, &sealing, stored).await {
                Ok(cv) => cv,
                Err(why) => {
                    unsealed(ctx, job, remote, why, "");
                    return (copy, Ok(Vec::new()));
                }
            };
            let Plan::Seal { cv, results, from } =
                arc::chain::after_validation(cv, top, sealing.authserv_id(), remote_ip)
            else {
                unsealed(ctx, job, remote, Unsealed::Error, "no seal planned");
                return (copy, Ok(Vec::new()));
            };
            let s = Arc::clone(&sealer);
            let done = crate::last_gasp::spawn_blocking(move || s.seal(&wire, cv, &results)).await;
            match done {
                Ok(Ok(fields)) => (fields, cv, from),
                Ok(Err(e)) => {
                    unsealed(ctx, job, remote, Unsealed::Error, &e.to_string());
                    return (copy, Ok(Vec::new()));
                }
                Err(_) => {
                    unsealed(
                        ctx,
                        job,
                        remote,
                        Unsealed::Error,
                        "the sealer failed inside Tern",
                    );
                    return (copy, Ok(Vec::new()));
                }
            }
        }
    };
    tern_metrics::get().arc_seal(ArcSeal::Sealed);
    ctx.events.emit(
        &catalog::ARC_SEALED,
        fields!(
            "queue_id" => env.id,
            "domain" => sealer.domain,
            "selector" => sealer.selector,
            "instance" => instance(&fields),
            "cv" => cv.as_str(),
            "results" => source.as_str(),
            "size" => size,
            "host" => remote,
        ),
    );
    (copy, Ok(fields))
}

/// The chain status of the stored form, bounded by `arc.timeout_secs`, in a task of
/// its own (a panic in the validator ends that task only).
async fn validate(ctx: &Context, sealing: &Sealing, stored: Vec<u8>) -> Result<Cv, Unsealed> {
    let Some(validator) = ctx.arc_chain.clone() else {
        return Err(Unsealed::TempError);
    };
    let task = tokio::spawn(async move { validator.validate(&stored).await });
    let abort = task.abort_handle();
    match tokio::time::timeout(sealing.timeout(), task).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Unsealed::Error),
        Err(_) => {
            abort.abort();
            Err(Unsealed::TempError)
        }
    }
}

/// The new set's `i=` from the fields written (for the event).
fn instance(fields: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(fields.get(..fields.len().min(64)).unwrap_or_default());
    text.strip_prefix("ARC-Seal: i=")
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn unsealed(ctx: &Context, job: &Job, remote: &str, why: Unsealed, error: &str) {
    tern_metrics::get().arc_seal(match why {
        Unsealed::TooLarge => ArcSeal::TooLarge,
        Unsealed::ChainFailed => ArcSeal::ChainFailed,
        Unsealed::ChainTooLong => ArcSeal::ChainTooLong,
        Unsealed::ChainMalformed => ArcSeal::ChainMalformed,
        Unsealed::TempError => ArcSeal::TempError,
        Unsealed::NoKey => ArcSeal::NoKey,
        _ => ArcSeal::Error,
    });
    ctx.events.emit(
        &catalog::ARC_UNSEALED,
        fields!(
            "reason" => why.as_str(),
            "queue_id" => job.msg.envelope.id,
            "next_hop" => job.hop,
            "host" => remote,
            "size" => job.msg.facts.len,
            "error" => error,
        ),
    );
}

/// The content to send, in memory: the copy when there is one (a spill file is read
/// from its start and rewound), else the stored file through the spool's check. The
/// caller bounded its size. Blocking.
fn read(
    spool: &tern_spool::Spool,
    state: tern_spool::QueueState,
    id: tern_spool::QueueId,
    copy: Option<&mut Copy7>,
) -> Result<Vec<u8>, String> {
    match copy {
        Some(Copy7::Memory(v)) => Ok(v.clone()),
        Some(Copy7::Spilled { file, len }) => {
            let rewind = |file: &mut std::fs::File| {
                file.seek(SeekFrom::Start(0))
                    .map(|_| ())
                    .map_err(|e| format!("spill file: {e}"))
            };
            rewind(file)?;
            let mut out = Vec::with_capacity(usize::try_from(*len).unwrap_or(0));
            file.read_to_end(&mut out)
                .map_err(|e| format!("spill file: {e}"))?;
            rewind(file)?;
            Ok(out)
        }
        None => content::read_whole(spool, state, id, u64::MAX)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_route::{RelayHost, TlsPolicy};
    use tern_spool::ClientInfo;

    fn env(relay_network: bool, authenticated: Option<&str>, listener: &str) -> Envelope {
        Envelope {
            id: tern_spool::QueueId::generate(),
            sender: "a@b.test".into(),
            recipients: vec![tern_spool::Recipient::new("r@c.test")],
            params: tern_spool::MailParams {
                declared_size: None,
                body: tern_spool::BodyType::SevenBit,
                smtputf8: false,
                dsn_ret: None,
                dsn_envid: None,
            },
            client: ClientInfo {
                address: "192.0.2.1:4000".into(),
                listener: listener.into(),
                relay_network,
                authenticated: authenticated.map(str::to_string),
                ..Default::default()
            },
            arrival_micros: 1,
            size: 1,
            quarantine: None,
        }
    }

    #[test]
    fn only_mail_from_outside_leaving_for_another_host_is_forwarded() {
        let mx = Transport::Mx {
            port: 25,
            tls: TlsPolicy::default(),
        };
        assert!(forwarded(&env(false, None, "mx"), &mx));
        assert!(!forwarded(&env(true, None, "mx"), &mx), "relay network");
        assert!(
            !forwarded(&env(false, Some("u"), "submission"), &mx),
            "authenticated"
        );
        assert!(!forwarded(&env(false, None, "pickup"), &mx), "pickup");
        assert!(!forwarded(&env(false, None, "dsn"), &mx), "a DSN");
        let maildir = Transport::Maildir { root: "/m".into() };
        assert!(!forwarded(&env(false, None, "mx"), &maildir));
        let unix = Transport::Lmtp {
            server: LmtpServer::Unix("/run/lmtp".into()),
        };
        assert!(!forwarded(&env(false, None, "mx"), &unix));
        let tcp = Transport::Lmtp {
            server: LmtpServer::Tcp(RelayHost::parse("192.0.2.9:24").unwrap()),
        };
        assert!(forwarded(&env(false, None, "mx"), &tcp));
    }

    #[test]
    fn the_instance_is_read_from_the_seal() {
        assert_eq!(instance(b"ARC-Seal: i=7; a=rsa-sha256; cv=pass;\r\n"), 7);
        assert_eq!(instance(b"junk"), 0);
    }
}
