//! The bounded worker pool that runs decoding and inference, so that the async executor never
//! does: a fixed number of threads take jobs from a queue of fixed capacity; a job that finds
//! the queue full is refused at once, and a job whose caller has gone or whose deadline has
//! passed is dropped unrun (with what it holds, e.g. the upload's bytes) and counted in
//! `vocalguard_inference_dropped_total`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::metrics::Metrics;

/// Why a job did not run to completion.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// The queue is full.
    #[error("the inference queue is full ({capacity} jobs waiting); try again later")]
    Busy {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The deadline passed before the job finished.
    #[error("the deadline passed before the audio was processed")]
    Expired,
    /// The pool is shutting down or a worker failed.
    #[error("the inference worker stopped before finishing the job")]
    Stopped,
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of worker threads behind a bounded queue.
pub struct InferencePool {
    sender: SyncSender<Job>,
    capacity: usize,
    depth: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl InferencePool {
    /// Starts `workers` threads behind a queue of `capacity` jobs.
    pub fn new(workers: usize, capacity: usize, metrics: Metrics) -> Self {
        let (sender, receiver) = sync_channel::<Job>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers.max(1) {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("vg-inference-{i}"))
                .spawn(move || work(&receiver))
                .expect("spawning an inference worker");
        }
        Self {
            sender,
            capacity,
            depth: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    /// Runs `job` on a worker and waits for its result until `deadline`. Refused at once with
    /// [`PoolError::Busy`] when the queue is full. If the caller stops waiting (deadline, or the
    /// call was cancelled) before a worker picks the job up, the job is dropped unrun.
    pub async fn run<T: Send + 'static>(
        &self,
        deadline: Instant,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let depth = Arc::clone(&self.depth);
        let metrics = self.metrics.clone();
        let wrapped: Job = Box::new(move || {
            // The deadline first: a caller that stopped waiting because its deadline passed
            // has gone too, and counts as expired.
            let result = if Instant::now() >= deadline {
                drop(job);
                metrics.record_dropped("expired");
                None
            } else if tx.is_closed() {
                drop(job);
                metrics.record_dropped("cancelled");
                None
            } else {
                let started = Instant::now();
                let result = job();
                metrics.record_inference(started.elapsed());
                Some(result)
            };
            metrics.set_queue_depth(depth.fetch_sub(1, Ordering::SeqCst) - 1);
            if let Some(result) = result {
                let _ = tx.send(result);
            }
        });
        self.metrics
            .set_queue_depth(self.depth.fetch_add(1, Ordering::SeqCst) + 1);
        if let Err(e) = self.sender.try_send(wrapped) {
            self.metrics
                .set_queue_depth(self.depth.fetch_sub(1, Ordering::SeqCst) - 1);
            return Err(match e {
                TrySendError::Full(_) => {
                    self.metrics.record_rejected();
                    PoolError::Busy {
                        capacity: self.capacity,
                    }
                }
                TrySendError::Disconnected(_) => PoolError::Stopped,
            });
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) if Instant::now() >= deadline => Err(PoolError::Expired),
            Ok(Err(_)) => Err(PoolError::Stopped),
            Err(_) => Err(PoolError::Expired),
        }
    }

    /// Jobs queued or running.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }
}

/// A worker's loop: take the next job until the pool is dropped. A panicking job is caught so
/// the worker survives it (its caller sees [`PoolError::Stopped`]).
fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let guard = receiver.lock().unwrap_or_else(|e| e.into_inner());
            guard.recv()
        };
        let Ok(job) = job else { return };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("an inference job panicked; the worker carries on");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The longest any test waits for anything.
    const WAIT: Duration = Duration::from_secs(10);

    /// Waits until `done` holds; fails the test, naming `what`, after [`WAIT`].
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A job that holds its worker until released (or [`WAIT`] passes), and the senders that
    /// release it, with the signal it sends when a worker starts it.
    fn blocking_job() -> (
        impl FnOnce() + Send + 'static,
        std::sync::mpsc::Sender<()>,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let job = move || {
            let _ = started_tx.send(());
            let _ = release_rx.recv_timeout(WAIT);
        };
        (job, release_tx, started_rx)
    }

    /// Waits for a job's "started" signal, at most [`WAIT`].
    async fn started(signal: tokio::sync::oneshot::Receiver<()>) {
        tokio::time::timeout(WAIT, signal)
            .await
            .expect("the job did not start in time")
            .expect("the job was dropped unrun");
    }

    #[tokio::test]
    async fn runs_jobs_and_refuses_beyond_capacity() {
        let pool = Arc::new(InferencePool::new(1, 1, Metrics::new()));
        let far = Instant::now() + WAIT;
        assert_eq!(pool.run(far, || 2 + 2).await, Ok(4));
        let (job, release, signal) = blocking_job();
        let blocker = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(far, job).await })
        };
        // The worker holds the blocker, so the queue's one place is free for the next job.
        started(signal).await;
        let queued = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(far, || 1).await })
        };
        until("the second job to queue", || pool.depth() == 2).await;
        assert_eq!(
            pool.run(far, || 0).await,
            Err(PoolError::Busy { capacity: 1 })
        );
        release.send(()).unwrap();
        assert_eq!(blocker.await.unwrap(), Ok(()));
        assert_eq!(queued.await.unwrap(), Ok(1));
        assert_eq!(pool.depth(), 0);
    }

    #[tokio::test]
    async fn an_expired_job_is_dropped_unrun() {
        let metrics = Metrics::new();
        let pool = InferencePool::new(1, 4, metrics.clone());
        let ran = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&ran);
        let past = Instant::now();
        let result = pool
            .run(past, move || {
                seen.fetch_add(1, Ordering::SeqCst);
            })
            .await;
        assert_eq!(result, Err(PoolError::Expired));
        // The worker has taken the job off the queue and decided about it.
        until("the worker to drop the job", || pool.depth() == 0).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        let text = metrics.render();
        assert!(
            text.contains(r#"vocalguard_inference_dropped_total{reason="expired"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_job_whose_caller_went_away_is_dropped_unrun_and_frees_what_it_held() {
        let metrics = Metrics::new();
        let pool = Arc::new(InferencePool::new(1, 4, metrics.clone()));
        let far = Instant::now() + WAIT;
        let (job, release, signal) = blocking_job();
        let blocker = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(far, job).await })
        };
        started(signal).await;
        let held = Arc::new(());
        let ran = Arc::new(AtomicUsize::new(0));
        let (in_job, seen) = (Arc::clone(&held), Arc::clone(&ran));
        let abandoned = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.run(far, move || {
                    let _held = in_job;
                    seen.fetch_add(1, Ordering::SeqCst);
                })
                .await
            })
        };
        until("the second job to queue", || pool.depth() == 2).await;
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        assert_eq!(blocker.await.unwrap(), Ok(()));
        until("the worker to drop the abandoned job", || pool.depth() == 0).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the dropped job let go of its data"
        );
        let text = metrics.render();
        assert!(
            text.contains(r#"vocalguard_inference_dropped_total{reason="cancelled"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_kill_the_worker() {
        let pool = InferencePool::new(1, 4, Metrics::new());
        let far = Instant::now() + WAIT;
        assert_eq!(
            pool.run(far, || -> u8 { panic!("boom") }).await,
            Err(PoolError::Stopped)
        );
        assert_eq!(pool.run(far, || 7).await, Ok(7));
    }
}
