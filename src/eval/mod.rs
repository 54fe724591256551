//! Offline evaluation for researchers: trial lists ([`trials`]), embeddings through the shared
//! pipeline with an on-disk [`cache`], scoring with optional AS-Norm normalisation
//! ([`evaluate`]), the metrics researchers report ([`metrics`]: EER, minDCF, actual DCF, DET
//! curve, Cllr, bootstrap intervals), fitting a [`calibration`] (threshold at a false-alarm
//! rate, scores to LLRs), and the written [`report`] with its [`plot`]s. What the server loads
//! and applies (AS-Norm, the fitted calibration) lives in [`crate::scoring`], which this module
//! uses and which never uses it.

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
