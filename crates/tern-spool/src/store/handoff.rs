//! The list of jobs that async tasks hand to one blocking commit thread (`batch`,
//! `segment`), with the thread's stop flag.
//!
//! Invariants:
//! - The mutex guards only the list and the flag: it is never held across I/O or an
//!   `.await`, and no other lock is taken while it is held.
//! - Once `stop` was called no job is accepted, and the thread still gets every job
//!   accepted before (it returns only when `take` says there is nothing left).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

pub(super) struct Handoff<T> {
    queue: Mutex<State<T>>,
    wake: Condvar,
}

struct State<T> {
    list: Vec<T>,
    stopping: bool,
}

impl<T> Handoff<T> {
    pub(super) fn new() -> Handoff<T> {
        Handoff {
            queue: Mutex::new(State {
                list: Vec::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a job and wakes the thread; gives the job back once `stop` was called.
    pub(super) fn push(&self, job: T) -> Result<(), T> {
        {
            let mut q = self.lock();
            if q.stopping {
                return Err(job);
            }
            q.list.push(job);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Tells the thread to finish what it was given and return.
    pub(super) fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_one();
    }

    /// The thread's side: waits until there are jobs and takes them all. When the
    /// thread still holds work of its own (`busy`), returns at once, possibly with none.
    /// `None`: stopped, and neither the list nor the thread has anything left.
    pub(super) fn take(&self, busy: bool) -> Option<Vec<T>> {
        let mut q = self.lock();
        while q.list.is_empty() && !q.stopping && !busy {
            q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        if q.list.is_empty() && !busy {
            return None;
        }
        Some(std::mem::take(&mut q.list))
    }

    /// Jobs waiting (tests wait for a number of them).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.lock().list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Handoff;

    #[test]
    fn jobs_pushed_before_stop_are_taken_then_none() {
        let h = Handoff::new();
        h.push(1).unwrap();
        h.push(2).unwrap();
        h.stop();
        assert_eq!(h.push(3), Err(3), "no job after stop");
        assert_eq!(h.take(false), Some(vec![1, 2]));
        assert_eq!(h.take(false), None);
        assert_eq!(h.take(true), Some(vec![]), "a busy thread still runs");
    }

    #[test]
    fn take_waits_for_a_job_from_another_thread() {
        let h = std::sync::Arc::new(Handoff::new());
        let t = {
            let h = std::sync::Arc::clone(&h);
            std::thread::spawn(move || h.take(false))
        };
        h.push("job").unwrap();
        assert_eq!(t.join().unwrap(), Some(vec!["job"]));
        assert_eq!(h.waiting(), 0);
    }
}
