//! The issuance signers: a small, fixed set of threads that run the token part of every leaf
//! issuance (the basis check, the signature on the token, its check, and the hand-off of the
//! certificate's commit to the store writer).
//!
//! **Why not the blocking pool.** `tokio::task::spawn_blocking` starts or wakes one thread per
//! call and never queues while it may start another (up to 512): sixteen concurrent issuances kept
//! up to sixteen threads signing at once on a two-core host, each preempting the others, the async
//! workers and the store writer, and each finished call put its thread to sleep while the next
//! call woke another one. A token call is CPU work for a software token (SoftHSM) and a short
//! wait for a hardware one, so a few threads that take the next job as soon as they finish one do
//! the same work with fewer context switches (measured in docs/PERFORMANCE.md). The number is
//! `[hsm] sign_threads` (default: CPUs + 1); a network HSM whose calls mostly wait on the network
//! wants more.
//!
//! **A token that hangs.** A PKCS#11 call cannot be cancelled. The request bounds its wait itself
//! (`[hsm] call_timeout`, counted from the moment its job is queued here, see `issue::SignWatch`)
//! and answers `503 hsm_unavailable`; a job whose request gave up before a thread took it is
//! dropped without calling the token. So that calls stuck in a hung module do not take the pool's
//! capacity for good, a job queued while no thread is idle and fewer than `size` threads are free
//! of a call older than `stuck_after` starts one more thread (at most [`MAX_EXTRA`] over `size`);
//! threads over `size` end when they finish a job and find none queued.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Threads a pool may run beyond its size while calls are stuck in the token.
pub const MAX_EXTRA: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the signer threads; cheap to clone. The threads end once every handle is gone
/// and the queue is empty.
#[derive(Clone)]
pub struct Signers {
    handle: Arc<Handle>,
}

/// Closes the pool when the last [`Signers`] goes.
struct Handle(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    ready: Condvar,
    size: usize,
    stuck_after: Option<Duration>,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// When each running job began, by thread number.
    running: Vec<(u64, Instant)>,
    next_id: u64,
    closed: bool,
}

impl Signers {
    /// A pool of `size` threads (at least one), started as work arrives. With `stuck_after`, a
    /// job running longer than that counts as stuck in the token (see the module documentation).
    pub fn new(size: usize, stuck_after: Option<Duration>) -> Self {
        Signers {
            handle: Arc::new(Handle(Arc::new(Inner {
                state: Mutex::new(State::default()),
                ready: Condvar::new(),
                size: size.max(1),
                stuck_after,
            }))),
        }
    }

    /// The default size: the host's CPUs plus one.
    pub fn default_size() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get() + 1)
    }

    /// Queues `job`; a free thread runs it as soon as it can.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let inner = &self.handle.0;
        let mut st = inner.lock();
        st.jobs.push_back(Box::new(job));
        if st.idle > 0 {
            drop(st);
            inner.ready.notify_one();
            return;
        }
        if st.threads < inner.size || inner.short_of_free_threads(&st) {
            st.threads += 1;
            let id = st.next_id;
            st.next_id += 1;
            drop(st);
            let worker = inner.clone();
            let spawned = std::thread::Builder::new()
                .name("signer".into())
                .spawn(move || worker.work(id));
            if let Err(e) = spawned {
                // The job stays queued for the threads there are (the request's own limit
                // bounds its wait).
                tracing::warn!(error = %e, "cannot start a signer thread");
                inner.lock().threads -= 1;
            }
        }
    }

    /// `(threads alive, jobs queued, threads in a call older than the stuck limit)`, for
    /// `GET /metrics`.
    pub fn gauges(&self) -> (usize, usize, usize) {
        let inner = &self.handle.0;
        let st = inner.lock();
        let stuck = inner.stuck_after.map_or(0, |after| st.stuck(after));
        (st.threads, st.jobs.len(), stuck)
    }

    /// `(threads alive, jobs queued)`.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let (threads, queued, _) = self.gauges();
        (threads, queued)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

impl State {
    /// Threads whose job has run for `after` or longer.
    fn stuck(&self, after: Duration) -> usize {
        self.running
            .iter()
            .filter(|(_, since)| since.elapsed() >= after)
            .count()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A job runs outside the lock, so a poisoned lock only means a panic between two
        // counter updates: the counters are still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True when fewer than `size` threads are free of a stuck call (and the pool may grow).
    fn short_of_free_threads(&self, st: &State) -> bool {
        let Some(after) = self.stuck_after else {
            return false;
        };
        if st.threads >= self.size + MAX_EXTRA {
            return false;
        }
        st.threads - st.stuck(after) < self.size
    }

    fn work(&self, id: u64) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                st.running.push((id, Instant::now()));
                drop(st);
                // A panicking job loses its own result (its request answers 500), not the thread.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                st = self.lock();
                st.running.retain(|(i, _)| *i != id);
                if st.threads > self.size && st.jobs.is_empty() {
                    break;
                }
                continue;
            }
            if st.closed {
                break;
            }
            st.idle += 1;
            st = self
                .ready
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.idle -= 1;
        }
        st.threads -= 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::Signers;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    #[test]
    fn jobs_run_on_at_most_size_threads_while_none_is_stuck() {
        let pool = Signers::new(2, Some(Duration::from_secs(60)));
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = mpsc::channel();
        for _ in 0..20 {
            let (running, peak, tx) = (running.clone(), peak.clone(), tx.clone());
            pool.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                tx.send(()).unwrap();
            });
        }
        for _ in 0..20 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "two threads, both used");
        assert!(pool.sizes().0 <= 2, "{:?}", pool.sizes());
    }

    #[test]
    fn a_stuck_call_does_not_take_the_pools_capacity() {
        let pool = Signers::new(1, Some(Duration::from_millis(50)));
        let (release, hung) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        pool.run(move || {
            let _ = hung.recv(); // a token call that does not return until released
        });
        std::thread::sleep(Duration::from_millis(80));
        let done = tx.clone();
        pool.run(move || done.send("second").unwrap());
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            "second",
            "a second thread took the job while the first is stuck"
        );
        assert_eq!(pool.gauges().2, 1, "the hung call counts as stuck");
        // The extra thread ends with its job: the pool is back to its size (the stuck thread).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.sizes().0 > 1 {
            assert!(std::time::Instant::now() < deadline, "{:?}", pool.sizes());
            std::thread::sleep(Duration::from_millis(5));
        }
        // Once the stuck call returns, its thread takes work again.
        release.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        pool.run(move || tx.send("third").unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "third");
        while pool.sizes() != (1, 0) {
            assert!(std::time::Instant::now() < deadline, "{:?}", pool.sizes());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn without_a_stuck_limit_jobs_queue_behind_a_busy_thread() {
        let pool = Signers::new(1, None);
        let (release, hung) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        pool.run(move || {
            let _ = hung.recv();
        });
        std::thread::sleep(Duration::from_millis(30));
        pool.run(move || tx.send(()).unwrap());
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(pool.sizes(), (1, 1));
        release.send(()).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_panicking_job_keeps_its_thread() {
        let pool = Signers::new(1, None);
        #[allow(clippy::panic)]
        pool.run(|| panic!("a job that panics"));
        let (tx, rx) = mpsc::channel();
        pool.run(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(pool.sizes().0, 1);
    }

    #[test]
    fn dropping_the_last_handle_ends_the_threads() {
        let pool = Signers::new(2, None);
        let (tx, rx) = mpsc::channel();
        pool.run(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let inner = Arc::downgrade(&pool.handle.0);
        drop(pool);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while inner.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "threads still hold the pool"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
