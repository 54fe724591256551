//! Admission control for upload bytes held in memory. A call that receives audio takes an
//! upload slot before it reads the first byte, and reserves every chunk's bytes from a budget
//! shared by all calls as the chunks arrive; both are given back when the call's audio is
//! dropped. No slot or no budget left: the call is refused at once with RESOURCE_EXHAUSTED
//! instead of buffering without bound, so memory stays under `max_buffered_bytes` of uploads
//! however many clients send at once. One party (an API token, or a peer address when access
//! control is off) may hold at most its share of the slots, so a client that opens streams
//! and goes quiet cannot take them all; the idle timeout in `request` then frees them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// The caller holds its share of the slots.
    #[error("this caller has {limit} uploads in progress already, its share of the server's {slots} upload slots; finish or cancel one first")]
    PartyAtLimit {
        /// Slots one party may hold.
        limit: usize,
        /// The number of slots.
        slots: usize,
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

/// The slots taken, in all and by party.
#[derive(Debug, Default)]
struct Slots {
    taken: usize,
    by_party: HashMap<String, usize>,
}

/// The shared state behind [`UploadBudget`] and its permits.
#[derive(Debug)]
struct Shared {
    max_uploads: usize,
    max_per_party: usize,
    max_bytes: u64,
    slots: Mutex<Slots>,
    bytes: AtomicU64,
    metrics: Metrics,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        // The counts stay consistent whatever panicked while the lock was held: every
        // critical section is a few integer updates.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A bound on uploads in flight, in all and per party, and on the bytes they hold; clones
/// share it.
#[derive(Debug, Clone)]
pub struct UploadBudget {
    shared: Arc<Shared>,
}

impl UploadBudget {
    /// At most `max_uploads` uploads at once, `max_per_party` of them (capped at
    /// `max_uploads`) from one party, holding at most `max_bytes` in all.
    pub fn new(max_uploads: usize, max_per_party: usize, max_bytes: u64, metrics: Metrics) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_uploads,
                max_per_party: max_per_party.min(max_uploads),
                max_bytes,
                slots: Mutex::new(Slots::default()),
                bytes: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// Takes an upload slot for `party`, or refuses at once when none is free or the party
    /// holds its share.
    pub fn admit(&self, party: &str) -> Result<UploadPermit, AdmissionError> {
        let s = &self.shared;
        let mut slots = s.slots();
        if slots.taken >= s.max_uploads {
            s.metrics.record_upload_refused("slots");
            return Err(AdmissionError::TooManyUploads {
                limit: s.max_uploads,
            });
        }
        let held = slots.by_party.get(party).copied().unwrap_or(0);
        if held >= s.max_per_party {
            s.metrics.record_upload_refused("party");
            return Err(AdmissionError::PartyAtLimit {
                limit: s.max_per_party,
                slots: s.max_uploads,
            });
        }
        slots.taken += 1;
        slots.by_party.insert(party.to_string(), held + 1);
        s.metrics.set_uploads_in_flight(slots.taken);
        Ok(UploadPermit {
            shared: Arc::clone(&self.shared),
            party: party.to_string(),
            bytes: 0,
        })
    }

    /// Uploads holding a slot now.
    pub fn uploads(&self) -> usize {
        self.shared.slots().taken
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
    party: String,
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
        s.metrics.set_upload_bytes(used);
        let mut slots = s.slots();
        slots.taken -= 1;
        if let Some(held) = slots.by_party.get_mut(&self.party) {
            *held -= 1;
            if *held == 0 {
                slots.by_party.remove(&self.party);
            }
        }
        s.metrics.set_uploads_in_flight(slots.taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let budget = UploadBudget::new(2, 2, 100, Metrics::new());
        let first = budget.admit("p").unwrap();
        let second = budget.admit("p").unwrap();
        assert_eq!(
            budget.admit("p").unwrap_err(),
            AdmissionError::TooManyUploads { limit: 2 }
        );
        assert_eq!(budget.uploads(), 2);
        drop(first);
        let third = budget.admit("p").unwrap();
        drop((second, third));
        assert_eq!(budget.uploads(), 0);
    }

    #[test]
    fn one_party_holds_at_most_its_share() {
        let metrics = Metrics::new();
        let budget = UploadBudget::new(4, 2, 100, metrics.clone());
        let a1 = budget.admit("a").unwrap();
        let _a2 = budget.admit("a").unwrap();
        assert_eq!(
            budget.admit("a").unwrap_err(),
            AdmissionError::PartyAtLimit { limit: 2, slots: 4 }
        );
        let _b1 = budget.admit("b").unwrap();
        let _b2 = budget.admit("b").unwrap();
        assert_eq!(
            budget.admit("c").unwrap_err(),
            AdmissionError::TooManyUploads { limit: 4 }
        );
        drop(a1);
        let _a3 = budget.admit("a").unwrap();
        let text = metrics.render();
        assert!(
            text.contains(r#"vocalguard_uploads_refused_total{reason="party"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"vocalguard_uploads_refused_total{reason="slots"} 1"#),
            "{text}"
        );
        assert_eq!(
            UploadBudget::new(2, 8, 1, Metrics::new())
                .shared
                .max_per_party,
            2
        );
    }

    #[test]
    fn bytes_are_shared_and_released_on_drop() {
        let metrics = Metrics::new();
        let budget = UploadBudget::new(4, 4, 100, metrics.clone());
        let mut a = budget.admit("p").unwrap();
        let mut b = budget.admit("p").unwrap();
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
        let budget = UploadBudget::new(1, 1, u64::MAX, Metrics::new());
        let mut p = budget.admit("p").unwrap();
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
        let budget = UploadBudget::new(64, 64, 1000, Metrics::new());
        let peak = Arc::new(AtomicU64::new(0));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let (budget, peak) = (budget.clone(), Arc::clone(&peak));
                scope.spawn(move || {
                    for _ in 0..200 {
                        let mut p = budget.admit("p").unwrap();
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
