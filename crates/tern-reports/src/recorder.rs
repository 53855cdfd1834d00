//! The recorder sessions call, and the writer thread behind it.
//!
//! [`ChannelRecorder::record`] never waits: it puts the observation on a bounded
//! channel (`max_pending`) with `try_send`, or counts it dropped when the channel is
//! full (metric `tern_dmarc_observations_total{result="dropped_queue_full"}`, event 4127
//! from the writer). One writer thread (a plain thread: the store's work is blocking
//! file I/O) takes observations in batches, folds them into the [`ReportStore`], and
//! flushes the store every `flush_secs`, so a crash loses at most that much report data.
//! Stopping ([`Writer::stop`]) drains what is queued, flushes, and joins the thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tern_events::{EventLog, fields};

use crate::aggregate::Dmarc;
use crate::kind::Kind;
use crate::store::{AddCounts, ReportStore};
use crate::tlsrpt::{Tls, TlsReportRecorder, TlsSessionObservation};
use crate::{DmarcObservation, DmarcRecorder};

/// Observations taken per batch.
const BATCH: usize = 1024;

enum Msg<K: Kind> {
    Obs(Box<K::Obs>),
    Stop,
}

/// The recorder handed to the producers (SMTP sessions for DMARC, delivery workers for
/// TLS-RPT).
pub struct ChannelRecorder<K: Kind = Dmarc> {
    tx: SyncSender<Msg<K>>,
    dropped: Arc<AtomicU64>,
}

impl<K: Kind> std::fmt::Debug for ChannelRecorder<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRecorder")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl<K: Kind> ChannelRecorder<K> {
    /// Queues `obs` without waiting, or counts it dropped.
    pub fn put(&self, obs: K::Obs) {
        match self.tx.try_send(Msg::Obs(Box::new(obs))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                K::count_dropped_full();
            }
        }
    }
}

impl DmarcRecorder for ChannelRecorder<Dmarc> {
    fn record(&self, obs: DmarcObservation) {
        self.put(obs);
    }
}

impl TlsReportRecorder for ChannelRecorder<Tls> {
    fn record(&self, observation: TlsSessionObservation) {
        self.put(observation);
    }
}

/// The writer thread; [`Writer::stop`] ends it.
pub struct Writer<K: Kind = Dmarc> {
    tx: SyncSender<Msg<K>>,
    thread: Option<JoinHandle<()>>,
}

impl<K: Kind> Writer<K> {
    /// Drains what is queued, flushes the store, and joins the thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(thread) = self.thread.take() {
            // The writer is draining, so there is room soon.
            let _ = self.tx.send(Msg::Stop);
            let _ = thread.join();
        }
    }
}

impl<K: Kind> Drop for Writer<K> {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Starts the writer thread over `store`; returns the recorder for the sessions and
/// the writer's handle.
pub fn start<K: Kind>(
    store: Arc<dyn ReportStore<K>>,
    max_pending: usize,
    flush_every: Duration,
    events: EventLog,
) -> std::io::Result<(Arc<ChannelRecorder<K>>, Writer<K>)> {
    let (tx, rx) = sync_channel(max_pending.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let recorder = Arc::new(ChannelRecorder {
        tx: tx.clone(),
        dropped: Arc::clone(&dropped),
    });
    let thread = std::thread::Builder::new()
        .name(format!("tern-{}-writer", K::NAME))
        .spawn(move || write_loop(&rx, store.as_ref(), flush_every, &events, &dropped))?;
    Ok((
        recorder,
        Writer {
            tx,
            thread: Some(thread),
        },
    ))
}

fn now_secs() -> u64 {
    tern_watchdog::clock::unix_ms() / 1000
}

fn write_loop<K: Kind>(
    rx: &Receiver<Msg<K>>,
    store: &dyn ReportStore<K>,
    flush_every: Duration,
    events: &EventLog,
    dropped: &AtomicU64,
) {
    let mut last_flush = Instant::now();
    let mut pending = AddCounts::default();
    let mut dirty = false;
    loop {
        let wait = flush_every.saturating_sub(last_flush.elapsed());
        let mut stop = false;
        let mut batch = Vec::new();
        match rx.recv_timeout(wait.max(Duration::from_millis(10))) {
            Ok(Msg::Obs(o)) => batch.push(*o),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        while !stop && batch.len() < BATCH {
            match rx.try_recv() {
                Ok(Msg::Obs(o)) => batch.push(*o),
                Ok(Msg::Stop) => stop = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let counts = store.add(batch, now_secs());
            K::account(&counts);
            pending.domain_cap += counts.domain_cap;
            pending.row_cap += counts.row_cap;
            pending.periods_given_up += counts.periods_given_up;
            dirty = true;
        }
        if stop || last_flush.elapsed() >= flush_every {
            if dirty {
                match store.flush() {
                    Ok(()) => dirty = false,
                    Err(e) => events.emit(K::events().store_failed, fields!("error" => e)),
                }
            }
            report::<K>(events, &mut pending, dropped);
            last_flush = Instant::now();
        }
        if stop {
            return;
        }
    }
}

/// The events for what was dropped since the last flush.
fn report<K: Kind>(events: &EventLog, pending: &mut AddCounts, dropped: &AtomicU64) {
    let ev = K::events();
    let full = dropped.swap(0, Ordering::Relaxed);
    if full > 0 {
        events.emit(ev.dropped, fields!("dropped" => full));
    }
    if pending.domain_cap > 0 || pending.row_cap > 0 {
        events.emit(
            ev.capped,
            fields!("domains_dropped" => pending.domain_cap, "rows_dropped" => pending.row_cap),
        );
    }
    if pending.periods_given_up > 0 {
        events.emit(ev.given_up, fields!("periods" => pending.periods_given_up));
    }
    *pending = AddCounts::default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Caps;
    use crate::aggregate::tests::obs;
    use crate::store::MemoryStore;

    #[test]
    fn record_never_waits_and_counts_drops_when_full() {
        // A channel of one and no writer taking from it.
        let (tx, _rx) = sync_channel(1);
        let r: ChannelRecorder = ChannelRecorder {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let start = Instant::now();
        for _ in 0..1000 {
            r.record(obs("a.test", "192.0.2.1", "pass"));
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(r.dropped.load(Ordering::Relaxed), 999);
    }

    #[test]
    fn the_writer_folds_observations_and_stops_after_draining() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::new(
            Caps {
                max_domains: 10,
                max_rows: 10,
            },
            86_400,
        ));
        let (rec, writer) = start(
            store.clone(),
            10_000,
            Duration::from_secs(60),
            EventLog::discard(),
        )
        .unwrap();
        for _ in 0..500 {
            rec.record(obs("a.test", "192.0.2.1", "pass"));
        }
        writer.stop();
        store.close(u64::MAX / 2, true).unwrap();
        let due = store.due();
        let n: u64 = due
            .iter()
            .flat_map(|p| p.domains.values())
            .flat_map(|d| d.rows.values())
            .sum();
        assert_eq!(n, 500);
    }
}
