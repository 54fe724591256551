//! `vocalguard serve`: merges the configuration (defaults < file < environment and flags),
//! loads the model and runs the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::audio::DecodeLimits;
use crate::embed::Embedder;
use crate::encoder::{DeviceChoice, Precision, ResolveOptions, SpeakerModel};
use crate::server::auth::parse_inline_tokens;
use crate::server::telemetry::{self, LogFormat};
use crate::server::ServerConfig;

/// Flags of `vocalguard serve`. Each may also come from the environment variable named in its
/// help, or from the configuration file (same names, `_` for `-`, thresholds under
/// `[screening]`, limits under `[limits]`, pool sizes under `[inference]`, enrollment checks
/// under `[enrollment]`, TLS files under `[tls]`, tokens under `[auth]`, the PostgreSQL pool
/// under `[postgres]`, the search index (`approximate_above`, `m`, `ef_construction`,
/// `ef_search`, `rebuild_deleted_fraction`, `build_threads`) under `[search]`;
/// `--print-config` shows the full layout).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file; environment variables and flags override its values.
    #[arg(long, env = "VOCALGUARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "VOCALGUARD_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Prometheus metrics listen address, plain HTTP `/metrics` [default: 127.0.0.1:9464].
    #[arg(long, env = "VOCALGUARD_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Serve no metrics.
    #[arg(long, conflicts_with = "metrics_listen")]
    no_metrics: bool,
    /// Directory holding the registry file `registry.redb`, created if missing
    /// [default: ./vocalguard-data].
    #[arg(long, env = "VOCALGUARD_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the registry in PostgreSQL instead, shared by every replica given the same URL:
    /// `postgres://user:password@host:port/dbname`. Schema migrations run at start; pool sizes
    /// and timeouts are under `[postgres]` in the configuration file.
    #[arg(long, env = "VOCALGUARD_REGISTRY", value_name = "URL")]
    registry: Option<String>,
    /// Model: a built-in name, a directory holding model.json and its weights, or a Hugging
    /// Face repo id `owner/name[@revision]` [default: campplus-zh-en]. A registry only
    /// accepts the model it was built with.
    #[arg(long, env = "VOCALGUARD_MODEL")]
    model: Option<String>,
    /// Never download from the hub; use only the local cache (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Arithmetic of the encoder's products: f32, or bf16 (GE2E only, on CPUs with
    /// AVX512_BF16: faster, embeddings within cosine 0.999 of f32) [default: f32].
    #[arg(long, env = "VOCALGUARD_PRECISION", value_enum)]
    precision: Option<Precision>,
    /// Where the encoder runs: cpu, or cuda / cuda:N (an NVIDIA GPU; builds with the `cuda`
    /// feature only) [default: cpu].
    #[arg(long, env = "VOCALGUARD_DEVICE", value_name = "DEVICE")]
    device: Option<DeviceChoice>,
    /// Largest audio upload, bytes [default: 209715200, 200 MiB].
    #[arg(long, env = "VOCALGUARD_MAX_UPLOAD_BYTES", value_name = "BYTES")]
    max_upload_bytes: Option<u64>,
    /// Calls that may hold audio at once (receiving it or waiting on its processing); beyond
    /// that calls get RESOURCE_EXHAUSTED [default: 64].
    #[arg(long, env = "VOCALGUARD_MAX_CONCURRENT_UPLOADS", value_name = "N")]
    max_concurrent_uploads: Option<usize>,
    /// Upload slots one caller (an API token, or a peer address when access control is off)
    /// may hold at once; beyond that its calls get RESOURCE_EXHAUSTED [default: 16].
    #[arg(long, env = "VOCALGUARD_MAX_UPLOADS_PER_PARTY", value_name = "N")]
    max_uploads_per_party: Option<usize>,
    /// Longest a client may go without sending an upload message (the metadata, the next
    /// chunk, or the end of the stream) before the call is dropped with DEADLINE_EXCEEDED,
    /// seconds [default: 15].
    #[arg(long, env = "VOCALGUARD_UPLOAD_IDLE_TIMEOUT", value_name = "SECONDS")]
    upload_idle_timeout: Option<f64>,
    /// Upload bytes all calls together may hold in memory; beyond that calls get
    /// RESOURCE_EXHAUSTED [default: 1073741824, 1 GiB].
    #[arg(long, env = "VOCALGUARD_MAX_BUFFERED_BYTES", value_name = "BYTES")]
    max_buffered_bytes: Option<u64>,
    /// Longest audio accepted, seconds of sound [default: 900].
    #[arg(long, env = "VOCALGUARD_MAX_DURATION", value_name = "SECONDS")]
    max_duration: Option<f64>,
    /// Deadline of calls that set none; a shorter client deadline wins [default: 120].
    #[arg(long, env = "VOCALGUARD_REQUEST_TIMEOUT", value_name = "SECONDS")]
    request_timeout: Option<f64>,
    /// Inference worker threads that decode and screen [default: four per core when
    /// batching across calls, else one per core].
    #[arg(long, env = "VOCALGUARD_WORKERS", value_name = "N")]
    workers: Option<usize>,
    /// Most encoder inputs (GE2E partials, filterbank windows) in one encoder pass
    /// [default: 128].
    #[arg(long, env = "VOCALGUARD_MAX_BATCH", value_name = "N")]
    max_batch: Option<usize>,
    /// Longest an encoder input waits for inputs of other calls to join its pass, in
    /// milliseconds; under load passes fill while the previous one runs [default: 2].
    #[arg(long, env = "VOCALGUARD_MAX_WAIT_MS", value_name = "MS")]
    max_wait_ms: Option<f64>,
    /// Run each call's encoder inputs on its own worker instead of gathering concurrent
    /// calls' inputs into shared passes on one encoder thread.
    #[arg(long, env = "VOCALGUARD_NO_CROSS_CALL_BATCHING")]
    no_cross_call_batching: bool,
    /// Jobs that may wait for a worker; beyond that calls get RESOURCE_EXHAUSTED [default: 32].
    #[arg(long, env = "VOCALGUARD_QUEUE_CAPACITY", value_name = "N")]
    queue_capacity: Option<usize>,
    /// A window matches an artist at or above this cosine score [default: 0.80].
    #[arg(long, env = "VOCALGUARD_MATCH_THRESHOLD", value_name = "SCORE")]
    match_threshold: Option<f64>,
    /// Start of the grey band that sends a track to review [default: 0.74].
    #[arg(long, env = "VOCALGUARD_REVIEW_THRESHOLD", value_name = "SCORE")]
    review_threshold: Option<f64>,
    /// Screening window, seconds of voiced audio [default: 3.1].
    #[arg(long, env = "VOCALGUARD_WINDOW", value_name = "SECONDS")]
    window: Option<f64>,
    /// Step between screening windows, seconds [default: 1.5].
    #[arg(long, env = "VOCALGUARD_HOP", value_name = "SECONDS")]
    hop: Option<f64>,
    /// Less voiced audio than this and a track needs review [default: 2.0].
    #[arg(long, env = "VOCALGUARD_MIN_VOICED", value_name = "SECONDS")]
    min_voiced: Option<f64>,
    /// Least voiced audio of an enrollment reference [default: 4.0].
    #[arg(long, env = "VOCALGUARD_MIN_ENROLL_VOICED", value_name = "SECONDS")]
    min_enroll_voiced: Option<f64>,
    /// Calibration file from `vocalguard calibrate` (fitted with this model): its threshold
    /// replaces the match threshold, and matches report log-likelihood ratios.
    #[arg(long, env = "VOCALGUARD_CALIBRATION", value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// AS-Norm cohort for screening scores: JSON lines from `vocalguard embed` with this model.
    /// Thresholds then apply to normalised scores (calibrate on `eval --cohort` scores).
    #[arg(long, env = "VOCALGUARD_AS_NORM_COHORT", value_name = "FILE")]
    as_norm_cohort: Option<PathBuf>,
    /// Cohort scores AS-Norm averages per side [default: 100].
    #[arg(
        long,
        env = "VOCALGUARD_AS_NORM_TOP_N",
        value_name = "N",
        requires = "as_norm_cohort"
    )]
    as_norm_top_n: Option<usize>,
    /// Above this many voiceprints, screening searches an approximate HNSW graph (built in
    /// the background, exact search serving meanwhile) instead of scanning every voiceprint;
    /// enrollment checks always scan [default: 50000].
    #[arg(long, env = "VOCALGUARD_APPROXIMATE_ABOVE", value_name = "N")]
    approximate_above: Option<usize>,
    /// Log format [default: text].
    #[arg(long, env = "VOCALGUARD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `vocalguard=debug`; RUST_LOG overrides it [default: info].
    #[arg(long, env = "VOCALGUARD_LOG", value_name = "FILTER")]
    log_filter: Option<String>,
    /// API tokens file: TOML `[[token]]` entries of `name`, `roles` and `sha256` (the token's
    /// SHA-256, from `vocalguard token new`). With no tokens configured, access control is off.
    #[arg(long, env = "VOCALGUARD_TOKENS_FILE", value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// API token entries inline, `NAME:ROLE[,ROLE...]:SHA256` separated by `;`; added to the
    /// tokens file's.
    #[arg(
        long,
        env = "VOCALGUARD_TOKENS",
        value_name = "ENTRIES",
        hide_env_values = true
    )]
    tokens: Option<String>,
    /// PEM certificate chain for TLS on the gRPC listener (with --tls-key).
    #[arg(long, env = "VOCALGUARD_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS certificate.
    #[arg(long, env = "VOCALGUARD_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates for client certificates: when set, every client must present a
    /// certificate signed by one of them (mutual TLS).
    #[arg(long, env = "VOCALGUARD_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
}

impl ServeArgs {
    /// The configuration: defaults, then the file, then environment variables and flags.
    pub fn config(&self) -> Result<ServerConfig> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut c.listen, &self.listen);
        if self.metrics_listen.is_some() {
            c.metrics_listen = self.metrics_listen;
        }
        if self.no_metrics {
            c.metrics_listen = None;
        }
        set(&mut c.data_dir, &self.data_dir);
        if self.registry.is_some() {
            c.registry = self.registry.clone();
        }
        set(&mut c.model, &self.model);
        c.offline |= self.offline;
        set(&mut c.limits.max_upload_bytes, &self.max_upload_bytes);
        set(&mut c.limits.max_duration_s, &self.max_duration);
        set(
            &mut c.limits.max_concurrent_uploads,
            &self.max_concurrent_uploads,
        );
        set(
            &mut c.limits.max_uploads_per_party,
            &self.max_uploads_per_party,
        );
        set(
            &mut c.limits.upload_idle_timeout_s,
            &self.upload_idle_timeout,
        );
        set(&mut c.limits.max_buffered_bytes, &self.max_buffered_bytes);
        set(&mut c.limits.request_timeout_s, &self.request_timeout);
        set(&mut c.inference.workers, &self.workers);
        set(&mut c.inference.queue_capacity, &self.queue_capacity);
        set(&mut c.inference.max_batch, &self.max_batch);
        set(&mut c.inference.max_wait_ms, &self.max_wait_ms);
        if self.no_cross_call_batching {
            c.inference.batch_across_calls = false;
        }
        set(&mut c.screening.match_threshold, &self.match_threshold);
        set(&mut c.screening.review_threshold, &self.review_threshold);
        c.explicit.match_threshold |= self.match_threshold.is_some();
        c.explicit.review_threshold |= self.review_threshold.is_some();
        set(&mut c.screening.window_s, &self.window);
        set(&mut c.screening.hop_s, &self.hop);
        set(&mut c.screening.min_voiced_s, &self.min_voiced);
        set(&mut c.enrollment.min_voiced_s, &self.min_enroll_voiced);
        if self.calibration.is_some() {
            c.calibration = self.calibration.clone();
        }
        if let Some(cohort) = &self.as_norm_cohort {
            c.as_norm = Some(crate::server::config::AsNormConfig {
                cohort: cohort.clone(),
                top_n: self.as_norm_top_n.unwrap_or(100),
            });
        }
        set(&mut c.search.approximate_above, &self.approximate_above);
        set(&mut c.log_format, &self.log_format);
        set(&mut c.precision, &self.precision);
        set(&mut c.device, &self.device);
        set(&mut c.log_filter, &self.log_filter);
        if self.tokens_file.is_some() {
            c.auth.tokens_file = self.tokens_file.clone();
        }
        if let Some(inline) = &self.tokens {
            c.auth.tokens = parse_inline_tokens(inline, "--tokens / VOCALGUARD_TOKENS")?;
        }
        for (target, value) in [
            (&mut c.tls.cert, &self.tls_cert),
            (&mut c.tls.key, &self.tls_key),
            (&mut c.tls.client_ca, &self.tls_client_ca),
        ] {
            if value.is_some() {
                *target = value.clone();
            }
        }
        c.validate()?;
        Ok(c)
    }
}

/// Runs `vocalguard serve`.
pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let config = args.config()?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    telemetry::init(config.log_format, &config.log_filter)?;
    telemetry::install_panic_hook();
    let mut options = ResolveOptions::from_env();
    options.offline |= config.offline;
    let (model, precision) =
        SpeakerModel::load_in(&config.model, &options, config.device, config.precision)
            .context("loading the model")?;
    if precision != config.precision {
        tracing::warn!(
            "precision {} needs the encoder on a CPU with AVX512_BF16; it runs in {precision}",
            config.precision
        );
    }
    let limits = DecodeLimits {
        max_duration_s: config.limits.max_duration_s,
    };
    let embedder = Embedder::new(model, limits)?.with_max_batch(config.inference.max_batch);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(crate::server::serve(config, embedder))?;
    Ok(ExitCode::SUCCESS)
}
