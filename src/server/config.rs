//! Server configuration: defaults, overridden by a TOML file, overridden by environment
//! variables and flags (the CLI merges those last two, see `vocalguard serve --help`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::TokenEntry;
use super::telemetry::LogFormat;
use crate::embed::BatchConfig;
use crate::encoder::source::DEFAULT_MODEL;
use crate::encoder::{DeviceChoice, ModelId, Precision, Thresholds};
use crate::registry::backend::{PoolSettings, StoreLocation};
use crate::registry::index::SearchConfig;
use crate::registry::EnrollmentPolicy;
use crate::scoring::asnorm::AsNorm;
use crate::scoring::calibration::Calibration;
use crate::screening::{Scoring, ScreeningConfig};

/// Errors of reading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid configuration file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything `vocalguard serve` runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus metrics listen address (plain HTTP, `/metrics`); `None` turns metrics off.
    pub metrics_listen: Option<SocketAddr>,
    /// Directory holding the registry file (the embedded store, used unless `registry` is set).
    pub data_dir: PathBuf,
    /// `postgres://` URL of a registry shared by several replicas; unset: the embedded store
    /// in `data_dir`.
    pub registry: Option<String>,
    /// Connection pool of the PostgreSQL registry.
    pub postgres: PoolSettings,
    /// Model spec (built-in name, directory, or hub repo id).
    pub model: String,
    /// Arithmetic of the encoder's CPU products (`bf16`: GE2E only, CPUs with AVX512_BF16).
    pub precision: Precision,
    /// Where the encoder runs: `cpu`, or `cuda` / `cuda:N` in builds with the `cuda` feature.
    pub device: DeviceChoice,
    /// Use only the local hub cache.
    pub offline: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter directives (`RUST_LOG` overrides).
    pub log_filter: String,
    /// Calibration file from `vocalguard calibrate`: its threshold replaces
    /// `screening.match_threshold`, and matches report log-likelihood ratios.
    pub calibration: Option<PathBuf>,
    /// Request limits.
    pub limits: Limits,
    /// The inference worker pool.
    pub inference: InferenceConfig,
    /// Screening thresholds and windows.
    pub screening: ScreeningConfig,
    /// Enrollment checks.
    pub enrollment: EnrollmentPolicy,
    /// How screening searches the registry: exact, or the HNSW graph above a size.
    pub search: SearchConfig,
    /// AS-Norm of window scores over a cohort.
    pub as_norm: Option<AsNormConfig>,
    /// TLS on the gRPC listener.
    pub tls: TlsConfig,
    /// API tokens; access control is on when any is configured.
    pub auth: AuthConfig,
    /// Which thresholds the file or the flags set; the others come from the model's card.
    #[serde(skip)]
    pub explicit: ExplicitThresholds,
}

/// The thresholds a configuration sets itself, rather than taking the model card's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExplicitThresholds {
    /// `screening.match_threshold`.
    pub match_threshold: bool,
    /// `screening.review_threshold`.
    pub review_threshold: bool,
    /// `enrollment.consistency_threshold`.
    pub consistency_threshold: bool,
    /// `enrollment.collision_threshold`.
    pub collision_threshold: bool,
}

/// TLS (rustls) on the gRPC listener: on when `cert` and `key` are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain the server presents.
    pub cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub key: Option<PathBuf>,
    /// PEM CA certificates; when set, every client must present a certificate signed by one
    /// of them (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// API tokens with roles (see `crate::server::auth`). No tokens: access control is off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// TOML file of `[[token]]` entries (`name`, `roles`, `sha256`), read at start.
    pub tokens_file: Option<PathBuf>,
    /// Entries given inline (the form `VOCALGUARD_TOKENS` takes), added to the file's.
    pub tokens: Vec<TokenEntry>,
}

/// Adaptive symmetric score normalisation in screening.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsNormConfig {
    /// Cohort embeddings: JSON lines written by `vocalguard embed` with the server's model.
    pub cohort: PathBuf,
    /// Cohort scores averaged per side.
    #[serde(default = "default_top_n")]
    pub top_n: usize,
}

fn default_top_n() -> usize {
    100
}

/// Limits on what one request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest audio upload, bytes.
    pub max_upload_bytes: u64,
    /// Longest audio, seconds of decoded sound.
    pub max_duration_s: f64,
    /// Largest single gRPC message (a chunk, or a whole `ScreenClip`), bytes.
    pub max_message_bytes: usize,
    /// Deadline of a call that sets none (a shorter client deadline wins), seconds.
    pub request_timeout_s: f64,
    /// Calls that may hold audio at once (receiving it, or waiting on its processing); beyond
    /// that, RESOURCE_EXHAUSTED at once.
    pub max_concurrent_uploads: usize,
    /// Upload slots one party (an API token's name, or the peer address when access control
    /// is off) may hold at once, so that one client cannot take them all; capped at
    /// `max_concurrent_uploads`.
    pub max_uploads_per_party: usize,
    /// Longest a client may go without sending an upload message before its call is dropped
    /// with DEADLINE_EXCEEDED (and its slot freed), seconds.
    pub upload_idle_timeout_s: f64,
    /// Upload bytes all calls together may hold in memory; a chunk that would pass it gets
    /// RESOURCE_EXHAUSTED. At least `max_upload_bytes`.
    pub max_buffered_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 200 * 1024 * 1024,
            max_duration_s: 900.0,
            max_message_bytes: 16 * 1024 * 1024,
            request_timeout_s: 120.0,
            max_concurrent_uploads: 64,
            max_uploads_per_party: 16,
            upload_idle_timeout_s: 15.0,
            max_buffered_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// The bounded pool that runs decoding and inference off the async executor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// Worker threads that decode and screen (0: four per core when batching across calls,
    /// since workers then mostly wait for the encoder thread; else one per core).
    pub workers: usize,
    /// Jobs that may wait for a worker; beyond that, calls are refused with RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
    /// Most encoder inputs (GE2E partials, filterbank windows) in one encoder pass.
    pub max_batch: usize,
    /// Gather the encoder inputs of concurrent calls into shared passes on one encoder thread.
    pub batch_across_calls: bool,
    /// Longest an encoder input waits for others to join its pass, milliseconds.
    pub max_wait_ms: f64,
}

impl InferenceConfig {
    /// How encoder passes are gathered across calls.
    pub fn batching(&self) -> BatchConfig {
        BatchConfig {
            max_batch: self.max_batch,
            max_wait: Duration::from_secs_f64(self.max_wait_ms / 1000.0),
        }
    }
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            queue_capacity: 32,
            max_batch: crate::embed::Embedder::DEFAULT_MAX_BATCH,
            batch_across_calls: true,
            max_wait_ms: 2.0,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            data_dir: PathBuf::from("vocalguard-data"),
            registry: None,
            postgres: PoolSettings::default(),
            model: DEFAULT_MODEL.to_string(),
            precision: Precision::F32,
            device: DeviceChoice::Cpu,
            offline: false,
            log_format: LogFormat::Text,
            log_filter: "info".to_string(),
            limits: Limits::default(),
            inference: InferenceConfig::default(),
            screening: ScreeningConfig::default(),
            enrollment: EnrollmentPolicy::default(),
            search: SearchConfig::default(),
            calibration: None,
            as_norm: None,
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            explicit: ExplicitThresholds::default(),
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut config: Self = toml::from_str(&text).map_err(parse_error)?;
        let table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
        let has = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key))
        };
        config.explicit = ExplicitThresholds {
            match_threshold: has("screening", "match_threshold"),
            review_threshold: has("screening", "review_threshold"),
            consistency_threshold: has("enrollment", "consistency_threshold"),
            collision_threshold: has("enrollment", "collision_threshold"),
        };
        Ok(config)
    }

    /// Takes the thresholds the configuration does not set from the model card's `thresholds`
    /// (cards without them leave the built-in defaults), then checks the result.
    pub fn adopt_model_thresholds(&mut self, card: Option<&Thresholds>) -> Result<(), ConfigError> {
        if let Some(t) = card {
            let e = self.explicit;
            let take = |explicit: bool, target: &mut f64, value: f64| {
                if !explicit {
                    *target = value;
                }
            };
            take(
                e.match_threshold,
                &mut self.screening.match_threshold,
                t.match_threshold,
            );
            take(
                e.review_threshold,
                &mut self.screening.review_threshold,
                t.review_threshold,
            );
            take(
                e.consistency_threshold,
                &mut self.enrollment.consistency_threshold,
                t.consistency_threshold,
            );
            take(
                e.collision_threshold,
                &mut self.enrollment.collision_threshold,
                t.collision_threshold,
            );
        }
        self.validate()
    }

    /// The configuration as TOML, as a file would hold it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration serialises")
    }

    /// Where the registry lives: PostgreSQL when `registry` is set, else `data_dir`.
    pub fn store_location(&self) -> StoreLocation {
        match &self.registry {
            Some(url) => StoreLocation::Postgres {
                url: url.clone(),
                pool: self.postgres,
            },
            None => StoreLocation::Embedded(self.data_dir.clone()),
        }
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(url) = &self.registry {
            if !matches!(StoreLocation::parse(url), StoreLocation::Postgres { .. }) {
                return invalid(format!(
                    "registry must be a postgres:// or postgresql:// URL (the embedded store is chosen with data_dir), got {:?}",
                    url.split('@').next_back().unwrap_or_default()
                ));
            }
        }
        let p = &self.postgres;
        if p.max_connections == 0 || p.connect_timeout_ms == 0 || p.acquire_timeout_ms == 0 {
            return invalid(
                "postgres.max_connections, connect_timeout_ms and acquire_timeout_ms must be positive".into(),
            );
        }
        let mut screening = self.screening;
        if self.calibration.is_some() {
            // The calibration's threshold replaces the match threshold; `scoring` checks the
            // order of the two once it is read.
            screening.match_threshold = screening.match_threshold.max(screening.review_threshold);
        }
        screening
            .validate(self.as_norm.is_some())
            .map_err(ConfigError::Invalid)?;
        let l = &self.limits;
        if l.max_upload_bytes == 0 || l.max_message_bytes < 1024 {
            return invalid(
                "max_upload_bytes must be positive and max_message_bytes at least 1024".into(),
            );
        }
        if l.max_concurrent_uploads == 0 || l.max_buffered_bytes < l.max_upload_bytes {
            return invalid(
                "max_concurrent_uploads must be at least 1 and max_buffered_bytes at least max_upload_bytes"
                    .into(),
            );
        }
        if !(l.max_duration_s > 0.0 && l.max_duration_s.is_finite()) {
            return invalid("max_duration_s must be a positive number of seconds".into());
        }
        if !(l.request_timeout_s > 0.0 && l.request_timeout_s.is_finite()) {
            return invalid("request_timeout_s must be a positive number of seconds".into());
        }
        if l.max_uploads_per_party == 0 {
            return invalid("max_uploads_per_party must be at least 1".into());
        }
        if !(l.upload_idle_timeout_s > 0.0 && l.upload_idle_timeout_s.is_finite()) {
            return invalid("upload_idle_timeout_s must be a positive number of seconds".into());
        }
        if self.inference.queue_capacity == 0 || self.inference.max_batch == 0 {
            return invalid(
                "inference.queue_capacity and inference.max_batch must be at least 1".into(),
            );
        }
        if !(0.0..=1000.0).contains(&self.inference.max_wait_ms) {
            return invalid("inference.max_wait_ms must lie in 0..1000 milliseconds".into());
        }
        let e = &self.enrollment;
        if !(0.0..=f64::MAX).contains(&e.min_voiced_s)
            || !(-1.0..=1.0).contains(&e.consistency_threshold)
            || !(-1.0..=1.0).contains(&e.collision_threshold)
        {
            return invalid(
                "enrollment thresholds must lie in -1..1 and min_voiced_s must not be negative"
                    .into(),
            );
        }
        self.search.validate().map_err(ConfigError::Invalid)?;
        let t = &self.tls;
        if t.cert.is_some() != t.key.is_some() {
            return invalid("tls.cert and tls.key must be set together".into());
        }
        if t.client_ca.is_some() && t.cert.is_none() {
            return invalid(
                "tls.client_ca (client certificates) needs tls.cert and tls.key".into(),
            );
        }
        Ok(())
    }

    /// The screening thresholds with the calibration and AS-Norm cohort loaded; both must come
    /// from `model`, and a configured calibration's threshold becomes the match threshold.
    /// Without a configured calibration or AS-Norm, `model_calibration` (the model card's)
    /// turns scores into log-likelihood ratios and the thresholds stay as they are.
    pub fn scoring(
        &self,
        model: &ModelId,
        model_calibration: Option<&Calibration>,
    ) -> Result<Scoring, ConfigError> {
        let mut config = self.screening;
        let calibration = match &self.calibration {
            Some(path) => {
                let c = Calibration::load(path).map_err(|e| ConfigError::Invalid(e.to_string()))?;
                if c.model_sha256 != model.sha256 {
                    return Err(ConfigError::Invalid(format!(
                        "the calibration {} was fitted on scores of model '{}' ({}), but this server loaded {model}; run `vocalguard eval` and `vocalguard calibrate` with this model",
                        path.display(),
                        c.model,
                        c.model_sha256
                    )));
                }
                config.match_threshold = c.threshold;
                config.validate(self.as_norm.is_some()).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "with the calibration's threshold {}: {e}",
                        c.threshold
                    ))
                })?;
                Some(c)
            }
            // The card's calibration reads raw cosines, not AS-Norm scores.
            None if self.as_norm.is_none() => model_calibration.cloned(),
            None => None,
        };
        let as_norm = match &self.as_norm {
            Some(a) => Some(
                AsNorm::load(&a.cohort, model, a.top_n)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Scoring {
            config,
            as_norm,
            calibration,
        })
    }

    /// Worker threads after resolving 0: four per core when batching across calls, else one
    /// per core.
    pub fn workers(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self.inference.workers {
            0 if self.inference.batch_across_calls => 4 * cores,
            0 => cores,
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let cfg: ServerConfig =
            toml::from_str("listen = \"0.0.0.0:6000\"\n[screening]\nmatch_threshold = 0.9\n")
                .unwrap();
        assert_eq!(cfg.listen.port(), 6000);
        assert_eq!(cfg.screening.match_threshold, 0.9);
        assert_eq!(cfg.screening.hop_s, ScreeningConfig::default().hop_s);
        assert_eq!(cfg.limits, Limits::default());
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ServerConfig>("listne = \"x\"").is_err());
        let mut cfg = ServerConfig::default();
        cfg.limits.request_timeout_s = 0.0;
        assert!(cfg.validate().is_err());
        let mut cfg = ServerConfig::default();
        cfg.limits.max_buffered_bytes = cfg.limits.max_upload_bytes - 1;
        assert!(cfg.validate().is_err());
        let mut cfg = ServerConfig::default();
        cfg.limits.max_concurrent_uploads = 0;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn the_search_section_is_read_and_checked() {
        let cfg: ServerConfig = toml::from_str(
            "[search]
approximate_above = 0
ef_search = 200
",
        )
        .unwrap();
        assert_eq!(cfg.search.approximate_above, 0);
        assert_eq!(cfg.search.ef_search, 200);
        assert_eq!(cfg.search.m, SearchConfig::default().m);
        cfg.validate().unwrap();
        assert!(toml::from_str::<ServerConfig>(
            "[search]
ef = 3
"
        )
        .is_err());
        for bad in [
            "[search]
m = 1
",
            "[search]
ef_search = 0
",
            "[search]
ef_construction = 100000
",
            "[search]
rebuild_deleted_fraction = 1.0
",
        ] {
            let cfg: ServerConfig = toml::from_str(bad).unwrap();
            let refused = cfg.validate().unwrap_err().to_string();
            assert!(refused.contains("search."), "{bad}: {refused}");
        }
    }

    #[test]
    fn a_calibration_of_another_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("calibration.json");
        let calibration =
            Calibration::fit(&[0.3, 0.8, 0.9], &[0.1, 0.2, 0.35, 0.4], 0.5, 0.5).unwrap();
        std::fs::write(&file, calibration.to_json()).unwrap();
        let config = ServerConfig {
            calibration: Some(file),
            ..ServerConfig::default()
        };
        let model = ModelId {
            name: "m".into(),
            sha256: "ab".repeat(32),
        };
        let refused = config.scoring(&model, None).err().unwrap().to_string();
        assert!(
            refused.contains("was fitted on scores of model"),
            "{refused}"
        );
    }

    #[test]
    fn half_configured_tls_is_refused() {
        let tls = |cert: bool, key: bool, ca: bool| ServerConfig {
            tls: TlsConfig {
                cert: cert.then(|| "cert.pem".into()),
                key: key.then(|| "key.pem".into()),
                client_ca: ca.then(|| "ca.pem".into()),
            },
            ..ServerConfig::default()
        };
        for (cert, key, ca) in [
            (true, false, false),
            (false, true, false),
            (false, false, true),
        ] {
            let refused = tls(cert, key, ca).validate().unwrap_err().to_string();
            assert!(refused.contains("tls."), "{refused}");
        }
        tls(true, true, false).validate().unwrap();
        tls(true, true, true).validate().unwrap();
    }

    #[test]
    fn tls_and_tokens_round_trip_through_toml() {
        let text = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n\n\
                    [auth]\ntokens_file = \"tokens.toml\"\n\n[[auth.tokens]]\nname = \"ingest\"\n\
                    roles = [\"screen\"]\nsha256 = \"ab\"\n";
        let cfg: ServerConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(cfg.auth.tokens[0].name, "ingest");
        let back: ServerConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
        assert!(toml::from_str::<ServerConfig>("[tls]\ncertificate = \"c\"\n").is_err());
    }

    #[test]
    fn the_defaults_round_trip_through_toml() {
        let cfg = ServerConfig::default();
        let back: ServerConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
    }
}
