//! Evaluation of speaker-verification scores: the metrics researchers report (EER, minDCF,
//! actual DCF, DET curve, Cllr) and bootstrap confidence intervals. Independent of the
//! embedding pipeline; it only consumes scores.

pub mod metrics;

pub use metrics::{
    act_dcf, bootstrap_ci, cllr, det_curve, eer, min_dcf, DcfResult, EerResult, MetricsError,
};
