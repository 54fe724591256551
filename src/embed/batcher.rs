//! Dynamic batching of encoder inputs across concurrent callers. Each caller (in the server,
//! an inference worker screening one track) hands its inputs to one encoder thread and waits;
//! the thread runs what has gathered as one forward pass: up to `max_batch` inputs of equal
//! length, waiting at most `max_wait` after the oldest for others to join. While a pass runs,
//! new inputs queue up and go in the next one, so under load batches fill without waiting.
//! The encoder's rows are independent, so a batched input's embedding is the one it gets
//! alone.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Tensor;

use super::EmbedError;
use crate::encoder::SpeakerModel;

/// How inputs from different callers are gathered into one encoder pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchConfig {
    /// Most inputs (GE2E partials, or fbank windows) in one pass.
    pub max_batch: usize,
    /// Longest an input waits for others to fill its pass.
    pub max_wait: Duration,
}

/// What one encoder pass ran, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchRun {
    /// Inputs in the pass.
    pub inputs: usize,
    /// Callers whose inputs it held.
    pub callers: usize,
    /// How long the oldest of them waited before the pass started.
    pub waited: Duration,
}

/// Called after every pass.
pub type BatchObserver = Box<dyn Fn(BatchRun) + Send>;

/// One caller's inputs: `count` sequences of `frames` frames, and where the answer goes.
struct Job {
    frames: usize,
    count: usize,
    inputs: Vec<f32>,
    queued: Instant,
    reply: SyncSender<Result<Vec<f32>, String>>,
}

/// The handle callers share; the encoder thread ends when it is dropped.
pub(super) struct Batcher {
    jobs: Sender<Job>,
}

impl Batcher {
    /// Starts the encoder thread for `model`, whose inputs have `bins` features per frame.
    pub(super) fn start(
        model: Arc<SpeakerModel>,
        bins: usize,
        config: BatchConfig,
        observer: BatchObserver,
    ) -> Self {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("vg-encoder".into())
            .spawn(move || {
                EncoderThread {
                    model,
                    bins,
                    config,
                    observer,
                }
                .run(&queue)
            })
            .expect("spawning the encoder thread");
        Self { jobs }
    }

    /// Embeds `count` inputs of `frames` frames each (`inputs` is `count * frames * bins`
    /// values) in a pass shared with other callers; returns `count * dim` values.
    pub(super) fn embed(
        &self,
        frames: usize,
        count: usize,
        inputs: Vec<f32>,
    ) -> Result<Vec<f32>, EmbedError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            frames,
            count,
            inputs,
            queued: Instant::now(),
            reply,
        };
        let stopped = || EmbedError::Batch("the encoder thread stopped".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answer
            .recv()
            .map_err(|_| stopped())?
            .map_err(EmbedError::Batch)
    }
}

/// The thread that owns the encoder passes.
struct EncoderThread {
    model: Arc<SpeakerModel>,
    bins: usize,
    config: BatchConfig,
    observer: BatchObserver,
}

impl EncoderThread {
    /// Gathers and runs passes until every handle is gone.
    fn run(&self, queue: &Receiver<Job>) {
        let mut pending: Vec<Job> = Vec::new();
        loop {
            if pending.is_empty() {
                match queue.recv() {
                    Ok(job) => pending.push(job),
                    Err(_) => return,
                }
            }
            self.gather(queue, &mut pending);
            let pass = self.take_pass(&mut pending);
            self.run_pass(pass);
        }
    }

    /// Adds queued jobs to `pending` until a pass is full or the oldest job has waited
    /// `max_wait`.
    fn gather(&self, queue: &Receiver<Job>, pending: &mut Vec<Job>) {
        let deadline = pending[0].queued + self.config.max_wait;
        loop {
            let frames = pending[0].frames;
            let ready: usize = pending
                .iter()
                .filter(|j| j.frames == frames)
                .map(|j| j.count)
                .sum();
            if ready >= self.config.max_batch {
                return;
            }
            let now = Instant::now();
            let next = if now >= deadline {
                queue.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                queue.recv_timeout(deadline - now)
            };
            match next {
                Ok(job) => pending.push(job),
                Err(_) => return,
            }
        }
    }

    /// Takes the oldest job and, in arrival order, the others of its length that fit in
    /// `max_batch` with it (a job larger than that runs alone, in several passes).
    fn take_pass(&self, pending: &mut Vec<Job>) -> Vec<Job> {
        let frames = pending[0].frames;
        let mut rows = 0;
        let mut pass = Vec::new();
        let mut rest = Vec::new();
        for job in pending.drain(..) {
            if job.frames == frames
                && (pass.is_empty() || rows + job.count <= self.config.max_batch)
            {
                rows += job.count;
                pass.push(job);
            } else {
                rest.push(job);
            }
        }
        *pending = rest;
        pass
    }

    /// Runs the jobs' inputs through the encoder and answers each job.
    fn run_pass(&self, pass: Vec<Job>) {
        let run = BatchRun {
            inputs: pass.iter().map(|j| j.count).sum(),
            callers: pass.len(),
            waited: pass[0].queued.elapsed(),
        };
        let frames = pass[0].frames;
        let inputs: Vec<f32> = pass.iter().flat_map(|j| j.inputs.iter().copied()).collect();
        match self.encode(frames, inputs) {
            Ok(vectors) => {
                let dim = vectors.len() / run.inputs.max(1);
                let mut offset = 0;
                for job in pass {
                    let len = job.count * dim;
                    let _ = job.reply.send(Ok(vectors[offset..offset + len].to_vec()));
                    offset += len;
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for job in pass {
                    let _ = job.reply.send(Err(reason.clone()));
                }
            }
        }
        (self.observer)(run);
    }

    /// Embeds inputs of `frames` frames in passes of at most `max_batch`.
    fn encode(&self, frames: usize, inputs: Vec<f32>) -> candle_core::Result<Vec<f32>> {
        let size = frames * self.bins;
        let mut vectors = Vec::new();
        for chunk in inputs.chunks(self.config.max_batch * size) {
            let batch = Tensor::from_vec(
                chunk.to_vec(),
                (chunk.len() / size, frames, self.bins),
                self.model.device(),
            )?;
            vectors.extend(
                self.model
                    .embed_partials(&batch)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Barrier, Mutex};

    use super::*;
    use crate::encoder::ResolveOptions;

    const BINS: usize = 40;

    fn model() -> Arc<SpeakerModel> {
        Arc::new(SpeakerModel::load("ge2e-resemblyzer", &ResolveOptions::default()).unwrap())
    }

    /// `count` deterministic inputs of `frames` frames, different for each `seed`.
    fn inputs(seed: usize, count: usize, frames: usize) -> Vec<f32> {
        (0..count * frames * BINS)
            .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0).powi(2))
            .collect()
    }

    fn alone(model: &SpeakerModel, frames: usize, count: usize, data: Vec<f32>) -> Vec<f32> {
        let x = Tensor::from_vec(data, (count, frames, BINS), model.device()).unwrap();
        model
            .embed_partials(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn recorder() -> (Arc<Mutex<Vec<BatchRun>>>, BatchObserver) {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&runs);
        (runs, Box::new(move |run| sink.lock().unwrap().push(run)))
    }

    #[test]
    fn concurrent_callers_share_passes_and_get_their_own_embeddings() {
        let model = model();
        let (runs, observer) = recorder();
        let config = BatchConfig {
            max_batch: 64,
            max_wait: Duration::from_millis(500),
        };
        let batcher = Arc::new(Batcher::start(Arc::clone(&model), BINS, config, observer));
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (1..=4)
            .map(|caller| {
                let (batcher, barrier) = (Arc::clone(&batcher), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    batcher
                        .embed(160, caller, inputs(caller, caller, 160))
                        .unwrap()
                })
            })
            .collect();
        for (caller, handle) in (1..=4).zip(handles) {
            let shared = handle.join().unwrap();
            let want = alone(&model, 160, caller, inputs(caller, caller, 160));
            assert_eq!(shared.len(), caller * 256);
            for (a, b) in shared.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "caller {caller}: {a} vs {b}");
            }
        }
        let runs = runs.lock().unwrap();
        assert_eq!(runs.iter().map(|r| r.inputs).sum::<usize>(), 10);
        assert!(
            runs.iter().any(|r| r.callers > 1),
            "no pass was shared: {runs:?}"
        );
    }

    #[test]
    fn a_job_larger_than_a_pass_runs_in_several_and_lengths_never_mix() {
        let model = model();
        let (runs, observer) = recorder();
        let config = BatchConfig {
            max_batch: 4,
            max_wait: Duration::from_millis(200),
        };
        let batcher = Arc::new(Batcher::start(Arc::clone(&model), BINS, config, observer));
        let short = {
            let batcher = Arc::clone(&batcher);
            std::thread::spawn(move || batcher.embed(90, 2, inputs(7, 2, 90)).unwrap())
        };
        let long = batcher.embed(160, 10, inputs(3, 10, 160)).unwrap();
        let short = short.join().unwrap();
        let want_long = alone(&model, 160, 10, inputs(3, 10, 160));
        let want_short = alone(&model, 90, 2, inputs(7, 2, 90));
        for (a, b) in long
            .iter()
            .zip(&want_long)
            .chain(short.iter().zip(&want_short))
        {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let runs = runs.lock().unwrap();
        assert!(runs.iter().all(|r| r.callers == 1), "{runs:?}");
        assert_eq!(runs.iter().map(|r| r.inputs).sum::<usize>(), 12);
    }
}
