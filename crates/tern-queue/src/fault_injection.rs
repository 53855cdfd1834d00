//! Test builds only (`--features fault-injection`): abort the whole process, kill it,
//! panic at a chosen stage, or freeze a delivery worker, while a chosen message is in
//! process, to prove the poison accounting, the release of every slot and the watchdog
//! (issue 4). Each fault is armed by an environment variable naming bytes of the
//! message's content, so a test picks the message it breaks.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first freeze: later deliveries of the same content go through.
static FROZE: AtomicBool = AtomicBool::new(false);

/// The first time per process that a job's content contains the bytes in the
/// environment variable `TERN_FAULT_FREEZE_ON`, never returns: the worker keeps its
/// slot and its open connection, as a worker stuck on a lock would.
pub(crate) async fn maybe_freeze(content: &[u8]) {
    let Some(pattern) = std::env::var_os("TERN_FAULT_FREEZE_ON") else {
        return;
    };
    let pattern = pattern.as_encoded_bytes();
    if !pattern.is_empty()
        && content.windows(pattern.len()).any(|w| w == pattern)
        && !FROZE.swap(true, Ordering::SeqCst)
    {
        std::future::pending::<()>().await;
    }
}

/// Panics when the environment variable `TERN_FAULT_PANIC_ON` is `<stage>:<bytes>`,
/// `stage` is this one and the content contains the bytes. Stages: `load` (message
/// task, file read), `route` (routed, before any job is handed out), `finish`
/// (results in hand, record not yet written), `dsn`
/// (building a bounce), `connect` (delivery worker holding its concurrency slot,
/// before connecting), `transaction` (delivery worker holding a connection).
pub(crate) fn maybe_panic(stage: &str, content: &[u8]) {
    if armed("TERN_FAULT_PANIC_ON", stage, content) {
        panic!("fault injection: panic at stage {stage}");
    }
}

/// Whether the environment variable `var` is `<stage>:<bytes>` for this stage and
/// the content contains the (non-empty) bytes.
fn armed(var: &str, stage: &str, content: &[u8]) -> bool {
    let Some(spec) = std::env::var_os(var) else {
        return false;
    };
    let spec = spec.as_encoded_bytes();
    let Some(colon) = spec.iter().position(|b| *b == b':') else {
        return false;
    };
    let (want, pattern) = (&spec[..colon], &spec[colon + 1..]);
    want == stage.as_bytes()
        && !pattern.is_empty()
        && content.windows(pattern.len()).any(|w| w == pattern)
}

/// Aborts the process when the environment variable `TERN_FAULT_ABORT_AT` is
/// `<stage>:<bytes>`, `stage` is this one and the content contains the bytes. Stages:
/// `admin-bounce` (an administrator's bounce, failures written, bounce not yet
/// queued).
pub(crate) fn maybe_abort_at(stage: &str, content: &[u8]) {
    if armed("TERN_FAULT_ABORT_AT", stage, content) {
        std::process::abort();
    }
}

/// Aborts the process when the content contains the bytes in the environment
/// variable `TERN_FAULT_ABORT_ON` (SIGABRT: the last gasp names the message).
pub(crate) fn maybe_abort(content: &[u8]) {
    if contains_var(content, "TERN_FAULT_ABORT_ON") {
        std::process::abort();
    }
}

/// Kills the process with SIGKILL, as the OOM killer would, when the content contains
/// the bytes in the environment variable `TERN_FAULT_KILL_ON`: no last gasp, so only
/// the probe mark (or the message being alone in process) can point at it.
pub(crate) fn maybe_kill(content: &[u8]) {
    if contains_var(content, "TERN_FAULT_KILL_ON") {
        crate::last_gasp::kill_self();
    }
}

/// Whether the content contains the (non-empty) bytes of the environment variable.
fn contains_var(content: &[u8], var: &str) -> bool {
    let Some(pattern) = std::env::var_os(var) else {
        return false;
    };
    let pattern = pattern.as_encoded_bytes();
    !pattern.is_empty() && content.windows(pattern.len()).any(|w| w == pattern)
}
