//! The last gasp: when the process dies of a fatal signal, the id of the message the dying
//! thread was processing is written to `spool/last-gasp`, so that the next start counts
//! the crash against that message (docs/RELIABILITY.md, "Poison messages").
//!
//! Knowing what a thread processes, in an async runtime: every message task and every
//! delivery job is polled inside [`processing`], a wrapper future that puts the message's
//! id in a per-thread slot for the duration of each poll and restores the slot's previous
//! value when the poll returns or unwinds (a guard's `Drop`). Work a task sends to the
//! blocking pool goes through [`spawn_blocking`], which carries the slot's value over to
//! the blocking thread for the closure's duration. So at any instant a thread's slot
//! names the message whose code it is running, or nothing. Work that runs elsewhere for a
//! message (the spool's commit and sync threads, the DNS resolver's background task) is
//! not named: a crash there leaves a last gasp that names no message, and the start falls
//! back on the probe mark and the other rules.
//!
//! The signal handler ([`arm`] installs it for SIGABRT, SIGSEGV, SIGBUS, SIGILL and
//! SIGFPE, on the alternate signal stack so a stack overflow is handled too) does only
//! async-signal-safe things: it reads atomics and the thread's slot (a `const`
//! thread-local without destructor: a plain TLS access), fills a 64-octet line on its
//! stack (`tern_spool::crash::gasp_line`: arithmetic only), `pwrite`s it at the slot that
//! an atomic counter gives this thread (so two threads dying at once do not mix their
//! lines), `write`s a notice to stderr, then restores the default action and raises the
//! signal again: the process dies of it as it would have (core dump included). The file
//! was opened at start and emptied then; the kernel keeps what was written after the
//! process is gone. SIGKILL (the OOM killer, `kill -9`) cannot be caught and leaves no
//! last gasp.
//!
//! A panic that unwinds is not a crash: it is caught at the task's boundary and counted
//! there (`message.rs`). A panic that cannot unwind (a panic while panicking, or in a
//! `Drop` during unwinding) aborts, which raises SIGABRT on the panicking thread, whose
//! slot still names its message. Rust's own SIGSEGV handler, which prints "has overflowed
//! its stack" before aborting, is replaced: the stderr notice says which signal it was.
//!
//! This is the crate's only unsafe code, and the only process-wide state it keeps (a
//! signal handler can reach nothing else): the file descriptor, the run's number and the
//! line counter, all atomics.

use std::cell::Cell;
use std::fs::File;
use std::future::Future;
use std::os::fd::IntoRawFd;
use std::pin::Pin;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tern_spool::QueueId;
use tern_spool::crash::{GASP_LINE_LEN, MAX_GASP_LINES, gasp_line};
use tern_spool::id::QUEUE_ID_LEN;

/// The text of a queue id, as the slot holds it.
type IdText = [u8; QUEUE_ID_LEN];

thread_local! {
    /// The message this thread is processing now (see the module header). `const`, and
    /// `Copy` without destructor, so reading it is a plain TLS access, safe in a signal
    /// handler.
    static CURRENT: Cell<Option<IdText>> = const { Cell::new(None) };
}

/// Descriptor of the last-gasp file; -1 until [`arm`].
static FD: AtomicI32 = AtomicI32::new(-1);
/// The run's number, written in each line.
static RUN: AtomicU64 = AtomicU64::new(0);
/// The next free line of the file.
static NEXT_LINE: AtomicU32 = AtomicU32::new(0);
/// The handlers are installed once per process.
static INSTALL: Once = Once::new();

/// The signals that carry a last gasp.
const FATAL: [libc::c_int; 5] = [
    libc::SIGABRT,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
];

/// Sets the thread's slot, and restores what it held when dropped.
struct Enter(Option<IdText>);

impl Enter {
    fn new(id: Option<IdText>) -> Enter {
        Enter(CURRENT.replace(id))
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        CURRENT.set(self.0);
    }
}

/// A future processing one message: see [`processing`].
pub(crate) struct Processing<F> {
    id: IdText,
    inner: Pin<Box<F>>,
}

/// Wraps `work`, the processing of message `id`, so that the thread polling it names the
/// message in its slot while it does.
pub(crate) fn processing<F: Future>(id: QueueId, work: F) -> Processing<F> {
    Processing {
        id: id.to_ascii(),
        inner: Box::pin(work),
    }
}

impl<F: Future> Future for Processing<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _naming = Enter::new(Some(self.id));
        self.inner.as_mut().poll(cx)
    }
}

/// `tokio::task::spawn_blocking`, with the caller's slot carried over to the blocking
/// thread while `f` runs.
pub(crate) fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let id = CURRENT.get();
    tokio::task::spawn_blocking(move || {
        let _naming = Enter::new(id);
        f()
    })
}

/// The message the calling thread is processing, if any (for tests).
#[cfg(test)]
fn current() -> Option<QueueId> {
    CURRENT.get().and_then(|t| {
        std::str::from_utf8(&t)
            .ok()
            .and_then(|s| QueueId::parse(s).ok())
    })
}

/// Makes `file` (emptied by the caller) the last-gasp record of run `run`, and installs
/// the signal handlers the first time. Later calls (a second queue in one process: tests)
/// switch to the new file; the old descriptor is left open, since a handler may be using
/// it at this very moment.
pub(crate) fn arm(file: File, run: u64) -> std::io::Result<()> {
    RUN.store(run, Ordering::SeqCst);
    NEXT_LINE.store(0, Ordering::SeqCst);
    FD.store(file.into_raw_fd(), Ordering::SeqCst);
    let mut installed = Ok(());
    INSTALL.call_once(|| {
        for sig in FATAL {
            // SAFETY: `action` is fully initialised (zeroed, then every field we rely on
            // set) before `sigaction` reads it; the handler has the SA_SIGINFO signature;
            // `sigemptyset` and `sigaction` only touch the structs passed to them.
            let rc = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_fatal_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut())
            };
            if rc != 0 {
                installed = Err(std::io::Error::last_os_error());
            }
        }
    });
    installed
}

/// Test builds only: dies of SIGKILL now, as the OOM killer or `kill -9` would kill it
/// (no handler runs, no last gasp).
#[cfg(feature = "fault-injection")]
pub(crate) fn kill_self() {
    // SAFETY: kill(2) on our own pid has no memory-safety requirements.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// The handler (see the module header for what it may and may not do).
extern "C" fn on_fatal_signal(
    sig: libc::c_int,
    _info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    let fd = FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // `try_with` cannot fail for a const slot without destructor; `None` if it did.
        let id = CURRENT.try_with(Cell::get).ok().flatten();
        let line = gasp_line(RUN.load(Ordering::SeqCst), sig, id);
        let slot = NEXT_LINE.fetch_add(1, Ordering::SeqCst);
        if (slot as usize) < MAX_GASP_LINES {
            let offset = (slot as usize * GASP_LINE_LEN) as libc::off_t;
            // SAFETY: pwrite(2) is async-signal-safe; `line` is a live stack array and
            // the length passed is its own. A failure cannot be reported from here and
            // changes nothing that follows.
            unsafe {
                libc::pwrite(fd, line.as_ptr().cast(), line.len(), offset);
            }
        }
        let notice = b"tern: fatal signal; last gasp: ";
        // SAFETY: write(2) is async-signal-safe; both buffers are live with their lengths.
        unsafe {
            libc::write(2, notice.as_ptr().cast(), notice.len());
            libc::write(2, line.as_ptr().cast(), line.len());
        }
    }
    // SAFETY: sigaction(2) and raise(3) are async-signal-safe; `dfl` is fully initialised.
    // The signal is blocked while this handler runs, so the raised one is delivered, with
    // the default action, as soon as the handler returns; a fault that re-executes would
    // meet the default action too.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
        libc::raise(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;
    use tern_spool::crash::{LastGasp, parse_gasps};

    const CHILD: &str = "TERN_TEST_LAST_GASP_CHILD";

    /// Runs this test binary again with only test `name`, as a child told by `CHILD`
    /// where its file is and what to do; returns its exit status and the gasp lines.
    fn in_child(name: &str, what: &str) -> (std::process::ExitStatus, Vec<LastGasp>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last-gasp");
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, format!("{what}:{}", path.display()))
            .output()
            .unwrap();
        let bytes = std::fs::read(&path).unwrap_or_default();
        (out.status, parse_gasps(&bytes))
    }

    /// In the child: arms the record in the file named by `CHILD` and runs `die`.
    fn child(die: impl FnOnce(QueueId)) -> bool {
        let Ok(spec) = std::env::var(CHILD) else {
            return false;
        };
        let path = spec.split_once(':').map(|(_, p)| p).unwrap_or_default();
        let file = File::create(path).unwrap();
        arm(file, 0x7e57).unwrap();
        die(QueueId::parse("0000000000ABCDE").unwrap());
        unreachable!("the child should have died");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn an_abort_inside_a_message_task_names_the_message() {
        let name = "last_gasp::tests::an_abort_inside_a_message_task_names_the_message";
        if child(|id| {
            let task = runtime().block_on(async move {
                tokio::spawn(processing(id, async {
                    tokio::task::yield_now().await;
                    std::process::abort();
                }))
                .await
            });
            drop(task);
        }) {
            return;
        }
        let (status, gasps) = in_child(name, "abort");
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
        assert_eq!(
            gasps,
            vec![LastGasp {
                run: 0x7e57,
                signal: libc::SIGABRT,
                id: Some(QueueId::parse("0000000000ABCDE").unwrap()),
            }]
        );
    }

    #[test]
    fn a_segfault_on_the_blocking_pool_names_the_message_that_sent_the_work() {
        let name = "last_gasp::tests::a_segfault_on_the_blocking_pool_names_the_message_that_sent_the_work";
        if child(|id| {
            runtime().block_on(processing(id, async {
                let _ = spawn_blocking(|| {
                    // SAFETY (test): a real fault would do the same; raise is harmless.
                    unsafe { libc::raise(libc::SIGSEGV) };
                })
                .await;
            }));
        }) {
            return;
        }
        let (status, gasps) = in_child(name, "segv");
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
        assert_eq!(gasps.len(), 1, "{gasps:?}");
        assert_eq!(gasps[0].id, QueueId::parse("0000000000ABCDE").ok());
        assert_eq!(gasps[0].signal, libc::SIGSEGV);
    }

    #[test]
    fn a_crash_outside_any_message_names_none() {
        let name = "last_gasp::tests::a_crash_outside_any_message_names_none";
        if child(|id| {
            // The slot was set and restored: nothing is named after the poll.
            runtime().block_on(processing(id, async {}));
            std::process::abort();
        }) {
            return;
        }
        let (status, gasps) = in_child(name, "none");
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
        assert_eq!(gasps.len(), 1, "{gasps:?}");
        assert_eq!(gasps[0].id, None);
    }

    #[tokio::test]
    async fn the_slot_names_the_message_only_while_it_is_polled() {
        let a = QueueId::generate();
        let b = QueueId::generate();
        assert_eq!(current(), None);
        let seen = processing(a, async move {
            let inner = processing(b, async { current() }).await;
            (current(), inner)
        })
        .await;
        assert_eq!(seen, (Some(a), Some(b)));
        assert_eq!(current(), None);
        let carried = processing(a, async { spawn_blocking(current).await.ok().flatten() }).await;
        assert_eq!(carried, Some(a));
        // A panic unwinding through the poll restores the slot too.
        let caught = std::panic::catch_unwind(|| {
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let mut f = processing(a, async { panic!("boom") });
            let _ = Pin::new(&mut f).poll(&mut cx);
        });
        assert!(caught.is_err());
        assert_eq!(current(), None);
    }
}
