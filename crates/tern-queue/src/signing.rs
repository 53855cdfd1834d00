//! DKIM signing of one SMTP transaction's content (`tern-dkim`), the last step before
//! it is sent: the signature covers exactly the octets the peer receives, so it runs
//! after the 7-bit conversion (`conversion.rs`) and again at every attempt (a later
//! attempt may go to a peer with 8BITMIME and send the stored content instead).
//!
//! Memory: the content is read once, 64 KiB at a time (the stored file through the
//! spool's checked `BodyReader`, the converted copy from memory or from its spill file,
//! which is then rewound), and fed to the signer, which keeps only the header section
//! (at most 1 MiB) and hash states; the transaction then streams the same content
//! again behind the `DKIM-Signature` fields. A delivery holds no more whatever the size.
//!
//! CPU: hashing and the RSA or Ed25519 operation run on the blocking pool (with the last
//! gasp naming the message), never on an async worker.
//!
//! Which mail: the rules of `tern_dkim::rules` on the envelope's origin and the From
//! header in the content facts' head. Local transports (Maildir, LMTP) are never signed:
//! the message stays inside the organisation.
//!
//! Failures: a message that should be signed and cannot be is deferred (4.7.0) or sent
//! unsigned, as `dkim.on_failure` says (events 4104, 4105); a stored content that cannot
//! be read is deferred like any unreadable content. Metrics count every signature and
//! failure by algorithm.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use tern_dkim::{Decision, DomainSigner, OnFailure, Signatures, Source};
use tern_events::{catalog, fields};
use tern_metrics::DkimSignature;
use tern_spool::Envelope;

use crate::Context;
use crate::conversion::{Copy7, PIECE, stream_content};
use crate::job::Job;

/// The origin of a message for the signing rules, from its envelope.
pub(crate) fn source(env: &Envelope) -> Source {
    Source {
        authenticated: env.client.authenticated.is_some(),
        relay_network: env.client.relay_network,
        // Locally submitted (pickup, `tern sendmail`) or Tern's own notifications,
        // DMARC aggregate reports and TLS reports (`tern-reports`; RFC 8460 §5.3 wants
        // the latter signed).
        local: matches!(
            env.client.listener.as_str(),
            "pickup" | "dsn" | "dmarc-reports" | "tls-reports"
        ),
    }
}

/// What signing came to for one transaction.
pub(crate) enum Signed {
    /// Not signed (no rule matched, or sent unsigned after a failure by policy).
    Unsigned,
    /// The `DKIM-Signature` fields to send before the content.
    Fields(Vec<u8>),
    /// Defer the job's recipients with this text (4.7.0 / 4.3.0).
    Defer(String),
}

/// Outcome of the blocking part: the copy handed back, and the fields or why not.
type Work = (Option<Copy7>, Result<Vec<u8>, Failure>);

enum Failure {
    /// The signer refused or failed.
    Sign(tern_dkim::SignError),
    /// The stored content or the copy could not be read.
    Read(String),
}

/// Signs the content this transaction is about to send: the stored message when `copy`
/// is `None`, else the converted copy (handed back, positioned at its start).
pub(crate) async fn sign(
    ctx: &Context,
    job: &Job,
    copy: Option<Copy7>,
    remote: &str,
) -> (Option<Copy7>, Signed) {
    if job.transport.is_local() {
        return (copy, Signed::Unsigned);
    }
    let runtime = ctx.runtime.load();
    let signing = Arc::clone(&runtime.dkim);
    drop(runtime);
    let domain = match signing.decide(source(&job.msg.envelope), &job.msg.facts.head) {
        Decision::Sign(d) => d,
        Decision::Skip(_) => return (copy, Signed::Unsigned),
    };
    let spool = ctx.spool.clone();
    let (state, id) = (job.msg.state, job.msg.envelope.id);
    let signer = Arc::clone(&domain);
    let work = crate::last_gasp::spawn_blocking(move || -> Work {
        let mut sig = signer.start();
        let mut copy = copy;
        let read = feed(&spool, state, id, copy.as_mut(), &mut sig);
        match read {
            Err(e) => (copy, Err(Failure::Read(e))),
            Ok(()) => (copy, sig.finish().map_err(Failure::Sign)),
        }
    });
    let (copy, result) = match work.await {
        Ok(done) => done,
        // A panic in the signer ends that blocking task only; the copy went with it.
        Err(_) => {
            return (
                None,
                Signed::Defer("4.3.0 signing the message failed inside Tern".into()),
            );
        }
    };
    let env = &job.msg.envelope;
    match result {
        Ok(fields) => {
            count(&domain, true);
            ctx.events.emit(
                &catalog::DKIM_SIGNED,
                fields!(
                    "queue_id" => env.id,
                    "domain" => domain.domain,
                    "selectors" => selectors(&domain),
                    "size" => job.msg.facts.len,
                    "host" => remote,
                ),
            );
            (copy, Signed::Fields(fields))
        }
        Err(Failure::Read(e)) => (
            copy,
            Signed::Defer(format!("4.3.0 reading the queued message to sign it: {e}")),
        ),
        Err(Failure::Sign(e)) => {
            count(&domain, false);
            let error = e.to_string();
            match signing.on_failure() {
                OnFailure::Defer => {
                    ctx.events.emit(
                        &catalog::DKIM_SIGN_DEFERRED,
                        fields!(
                            "queue_id" => env.id,
                            "domain" => domain.domain,
                            "next_hop" => job.hop,
                            "host" => remote,
                            "error" => error,
                        ),
                    );
                    (
                        copy,
                        Signed::Defer(format!(
                            "4.7.0 the message could not be DKIM-signed for {}: {error}; it is kept and retried",
                            domain.domain
                        )),
                    )
                }
                OnFailure::Unsigned => {
                    ctx.events.emit(
                        &catalog::DKIM_SIGN_SKIPPED,
                        fields!(
                            "queue_id" => env.id,
                            "domain" => domain.domain,
                            "next_hop" => job.hop,
                            "host" => remote,
                            "error" => error,
                        ),
                    );
                    (copy, Signed::Unsigned)
                }
            }
        }
    }
}

fn selectors(domain: &DomainSigner) -> String {
    domain
        .keys
        .iter()
        .map(|k| k.selector.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn count(domain: &DomainSigner, ok: bool) {
    let m = tern_metrics::get();
    for k in &domain.keys {
        m.dkim_signature(match (k.algorithm, ok) {
            (tern_dkim::Algorithm::RsaSha256, true) => DkimSignature::RsaSigned,
            (tern_dkim::Algorithm::Ed25519Sha256, true) => DkimSignature::Ed25519Signed,
            (tern_dkim::Algorithm::RsaSha256, false) => DkimSignature::RsaFailed,
            (tern_dkim::Algorithm::Ed25519Sha256, false) => DkimSignature::Ed25519Failed,
        });
    }
}

/// Feeds the content to the signatures: the copy when there is one (a spill file is
/// read from its start and rewound), else the stored file through the spool's check.
/// Blocking.
fn feed(
    spool: &tern_spool::Spool,
    state: tern_spool::QueueState,
    id: tern_spool::QueueId,
    copy: Option<&mut Copy7>,
    sig: &mut Signatures<'_>,
) -> Result<(), String> {
    match copy {
        Some(Copy7::Memory(v)) => {
            for piece in v.chunks(PIECE) {
                sig.feed(piece);
            }
            Ok(())
        }
        Some(Copy7::Spilled { file, .. }) => {
            let mut buf = vec![0u8; PIECE];
            let rewind = |file: &mut std::fs::File| {
                file.seek(SeekFrom::Start(0))
                    .map(|_| ())
                    .map_err(|e| format!("spill file: {e}"))
            };
            rewind(file)?;
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sig.feed(buf.get(..n).unwrap_or_default()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("spill file: {e}")),
                }
            }
            rewind(file)
        }
        None => {
            let mut buf = vec![0u8; PIECE];
            stream_content(spool, state, id, &mut buf, &mut |piece| {
                sig.feed(piece);
                Ok(())
            })
            .map_err(|e| e.to_string())
        }
    }
}
