//! Scoring: what the serving path needs to turn a cosine score into the score its thresholds
//! read and a calibrated statement: AS-Norm over a cohort ([`asnorm`], with the cohort file and
//! its model check) and a fitted calibration ([`calibration`]: the LLR of a score and its
//! threshold, loaded from a file), and whether a voiceprint is a hub ([`hubness`]). Fitting a calibration and measuring scores is the
//! evaluator's work ([`crate::eval`]), which uses this module; this module never uses it.

pub mod asnorm;
pub mod calibration;
pub mod hubness;
pub mod normal;
