//! Admission control for upload bytes held in memory. A call that receives audio takes an
//! upload slot before it reads the first byte, and reserves every chunk's bytes from a budget
//! shared by all calls as the chunks arrive; both are given back when the call's audio is
//! dropped. No slot or no budget left: the call is refused at once with RESOURCE_EXHAUSTED
//! instead of buffering without bound, so memory stays under `max_buffered_bytes` of uploads
//! however many clients send at once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tonic::Status;

use super::metrics::Metrics;

/// Why an upload was refused admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Every upload slot is taken.
    #[error("the server is receiving {limit} uploads already; try again later")]
    TooManyUploads {
        /// The number of slots.
        limit: usize,
    },
    /// The bytes buffered by all uploads would pass the budget.
    #[error("the server holds its limit of {limit} bytes of uploads in memory; try again later")]
    BufferFull {
        /// The budget, bytes.
        limit: u64,
    },
}

impl From<AdmissionError> for Status {
    fn from(e: AdmissionError) -> Self {
        Status::resource_exhausted(e.to_string())
    }
}

/// The shared state behind [`UploadBudget`] and its permits.
#[derive(Debug)]
struct Shared {
    max_uploads: usize,
    max_bytes: u64,
    uploads: AtomicUsize,
    bytes: AtomicU64,
    metrics: Metrics,
}

/// A bound on uploads in flight and on the bytes they hold; clones share it.
#[derive(Debug, Clone)]
pub struct UploadBudget {
    shared: Arc<Shared>,
}

impl UploadBudget {
    /// At most `max_uploads` uploads at once, holding at most `max_bytes` in all.
    pub fn new(max_uploads: usize, max_bytes: u64, metrics: Metrics) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_uploads,
                max_bytes,
                uploads: AtomicUsize::new(0),
                bytes: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// Takes an upload slot, or refuses at once when none is free.
    pub fn admit(&self) -> Result<UploadPermit, AdmissionError> {
        let s = &self.shared;
        let taken = s
            .uploads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < s.max_uploads).then_some(n + 1)
            });
        match taken {
            Ok(n) => {
                s.metrics.set_uploads_in_flight(n + 1);
                Ok(UploadPermit {
                    shared: Arc::clone(&self.shared),
                    bytes: 0,
                })
            }
            Err(_) => {
                s.metrics.record_upload_refused("slots");
                Err(AdmissionError::TooManyUploads {
                    limit: s.max_uploads,
                })
            }
        }
    }

    /// Uploads holding a slot now.
    pub fn uploads(&self) -> usize {
        self.shared.uploads.load(Ordering::SeqCst)
    }

    /// Bytes reserved by all uploads now.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::SeqCst)
    }
}

/// One upload's slot and the bytes it reserved; dropping it gives both back.
#[derive(Debug)]
pub struct UploadPermit {
    shared: Arc<Shared>,
    bytes: u64,
}

impl UploadPermit {
    /// Reserves `n` more bytes for this upload, or refuses when the budget would be passed
    /// (what was reserved before stays reserved until the permit is dropped).
    pub fn reserve(&mut self, n: usize) -> Result<(), AdmissionError> {
        let s = &self.shared;
        let n = n as u64;
        let reserved = s
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(n).filter(|&total| total <= s.max_bytes)
            });
        match reserved {
            Ok(used) => {
                self.bytes += n;
                s.metrics.set_upload_bytes(used + n);
                Ok(())
            }
            Err(_) => {
                s.metrics.record_upload_refused("bytes");
                Err(AdmissionError::BufferFull { limit: s.max_bytes })
            }
        }
    }

    /// Bytes this upload has reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        let s = &self.shared;
        let used = s.bytes.fetch_sub(self.bytes, Ordering::SeqCst) - self.bytes;
        let uploads = s.uploads.fetch_sub(1, Ordering::SeqCst) - 1;
        s.metrics.set_upload_bytes(used);
        s.metrics.set_uploads_in_flight(uploads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let budget = UploadBudget::new(2, 100, Metrics::new());
        let first = budget.admit().unwrap();
        let second = budget.admit().unwrap();
        assert_eq!(
            budget.admit().unwrap_err(),
            AdmissionError::TooManyUploads { limit: 2 }
        );
        assert_eq!(budget.uploads(), 2);
        drop(first);
        let third = budget.admit().unwrap();
        drop((second, third));
        assert_eq!(budget.uploads(), 0);
    }

    #[test]
    fn bytes_are_shared_and_released_on_drop() {
        let metrics = Metrics::new();
        let budget = UploadBudget::new(4, 100, metrics.clone());
        let mut a = budget.admit().unwrap();
        let mut b = budget.admit().unwrap();
        a.reserve(60).unwrap();
        b.reserve(40).unwrap();
        assert_eq!(budget.bytes(), 100);
        assert_eq!(
            b.reserve(1).unwrap_err(),
            AdmissionError::BufferFull { limit: 100 }
        );
        assert_eq!(b.bytes(), 40, "a refused reservation takes nothing");
        let text = metrics.render();
        assert!(text.contains("vocalguard_upload_bytes 100"), "{text}");
        assert!(
            text.contains(r#"vocalguard_uploads_refused_total{reason="bytes"} 1"#),
            "{text}"
        );
        drop(a);
        assert_eq!(budget.bytes(), 40);
        b.reserve(60).unwrap();
        drop(b);
        assert_eq!((budget.uploads(), budget.bytes()), (0, 0));
        let text = metrics.render();
        assert!(text.contains("vocalguard_upload_bytes 0"), "{text}");
        assert!(text.contains("vocalguard_uploads_in_flight 0"), "{text}");
    }

    #[test]
    fn a_huge_reservation_cannot_overflow_the_count() {
        let budget = UploadBudget::new(1, u64::MAX, Metrics::new());
        let mut p = budget.admit().unwrap();
        p.reserve(10).unwrap();
        assert!(p.reserve(usize::MAX).is_err());
        assert_eq!(budget.bytes(), 10);
    }

    #[test]
    fn refusals_are_resource_exhausted() {
        let status = Status::from(AdmissionError::BufferFull { limit: 5 });
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("5 bytes"), "{}", status.message());
    }

    #[test]
    fn concurrent_reservations_never_pass_the_budget() {
        let budget = UploadBudget::new(64, 1000, Metrics::new());
        let peak = Arc::new(AtomicU64::new(0));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let (budget, peak) = (budget.clone(), Arc::clone(&peak));
                scope.spawn(move || {
                    for _ in 0..200 {
                        let mut p = budget.admit().unwrap();
                        for _ in 0..5 {
                            if p.reserve(37).is_err() {
                                break;
                            }
                            peak.fetch_max(budget.bytes(), Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 1000);
        assert_eq!((budget.uploads(), budget.bytes()), (0, 0));
    }
}
