//! Offline evaluation for researchers: trial lists ([`trials`]), embeddings through the shared
//! pipeline with an on-disk [`cache`], scoring with optional [`asnorm`] normalisation
//! ([`evaluate`]), the metrics researchers report ([`metrics`]: EER, minDCF, actual DCF, DET
//! curve, Cllr, bootstrap intervals), [`calibration`] (threshold at a false-alarm rate, scores
//! to LLRs), and the written [`report`] with its [`plot`]s.

pub mod asnorm;
pub mod cache;
pub mod calibration;
pub mod evaluate;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod trials;

pub use metrics::{
    act_dcf, bootstrap_ci, cllr, det_curve, eer, min_dcf, DcfResult, EerResult, MetricsError,
};
