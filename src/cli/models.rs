//! `vocalguard models`: the built-in models and the conversion cache (`list`), and explicit
//! conversion of a published checkpoint into safetensors (`convert`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::encoder::convert::{cache_paths, pin_path};
use crate::encoder::source::{builtin_cards, DEFAULT_MODEL};
use crate::encoder::{ModelCard, ResolveOptions, SpeakerModel, WeightsRef};

/// What `vocalguard models` does.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the built-in models: architecture, where the weights come from, the expected hash,
    /// and whether a converted copy is in the cache.
    List(ListArgs),
    /// Fetch a model's published checkpoint (unless cached), verify its SHA-256 against the
    /// card (or pin it when none is published) and convert it into safetensors, as the first
    /// use of the model would.
    Convert(ConvertArgs),
}

/// Arguments of `models list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object per model instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `models convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Model: a built-in name, a directory holding model.json and its checkpoint, or a Hugging
    /// Face repo id.
    #[arg(long, env = "VOCALGUARD_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// Never download from the hub; use only the local cache (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Write the converted safetensors (with its record) here instead of the cache folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// One model in `models list`.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    architecture: &'static str,
    embedding_dim: usize,
    /// `built-in`, or `hub owner/name: file`.
    weights: String,
    /// The published SHA-256, if any.
    sha256: Option<String>,
    /// The SHA-256 pinned on first use, for cards without a published one.
    pinned_sha256: Option<String>,
    /// The converted file in the cache, if there is one.
    converted: Option<PathBuf>,
}

/// Runs a `models` command.
pub fn run(command: ModelsCommand) -> Result<ExitCode> {
    match command {
        ModelsCommand::List(args) => list(args),
        ModelsCommand::Convert(args) => convert(args),
    }
}

fn list(args: ListArgs) -> Result<ExitCode> {
    let dir = ResolveOptions::from_env().converted_dir();
    for card in builtin_cards()? {
        let listed = describe(&card, &dir);
        if args.json {
            println!("{}", serde_json::to_string(&listed)?);
            continue;
        }
        let hash = match (&listed.sha256, &listed.pinned_sha256) {
            (Some(sha), _) => format!("sha256 {sha}"),
            (None, Some(pinned)) => format!("no published sha256; pinned {pinned}"),
            (None, None) => "no published sha256; pinned on first use".into(),
        };
        let cached = match &listed.converted {
            Some(path) => format!("converted: {}", path.display()),
            None if listed.weights == "built-in" => "ready".into(),
            None => "not converted yet".into(),
        };
        println!(
            "{}\t{} ({}-dim)\t{}\t{hash}\t{cached}",
            listed.name, listed.architecture, listed.embedding_dim, listed.weights
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What the list says about `card`, looking for its conversion in `dir`.
fn describe(card: &ModelCard, dir: &std::path::Path) -> Listed {
    let (weights, sha256, pinned_sha256, converted) = match card.weights_ref() {
        WeightsRef::Safetensors { sha256, .. } => {
            ("built-in".to_string(), Some(sha256.to_string()), None, None)
        }
        WeightsRef::Checkpoint(c) => {
            let pinned = std::fs::read_to_string(pin_path(dir, &card.name))
                .ok()
                .map(|s| s.trim().to_string());
            let converted = c
                .sha256
                .clone()
                .or_else(|| pinned.clone())
                .map(|sha| cache_paths(dir, &card.name, &sha).0)
                .filter(|path| path.is_file());
            let place = match &c.repo {
                Some(repo) => format!("hub {repo}: {}", c.file),
                None => c.file.clone(),
            };
            (place, c.sha256.clone(), pinned, converted)
        }
    };
    Listed {
        name: card.name.clone(),
        architecture: card.architecture.id(),
        embedding_dim: card.embedding_dim,
        weights,
        sha256,
        pinned_sha256,
        converted,
    }
}

fn convert(args: ConvertArgs) -> Result<ExitCode> {
    let mut options = ResolveOptions::from_env();
    options.offline |= args.offline;
    options.converted_dir = args.out;
    let model = SpeakerModel::load(&args.model, &options).context("loading the model")?;
    let converted = model.converted_weights().with_context(|| {
        format!(
            "model {} is a {} model whose weights are safetensors already: nothing to convert",
            model.id().name,
            model.card().architecture.id()
        )
    })?;
    println!(
        "{}",
        serde_json::json!({
            "model": model.id().name,
            "architecture": model.card().architecture.id(),
            "checkpoint_sha256": model.id().sha256,
            "safetensors": converted.path,
            "reused": converted.reused,
        })
    );
    Ok(ExitCode::SUCCESS)
}
