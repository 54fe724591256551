//! `vocalguard registry export|import`: moves a registry between stores (the embedded file and
//! PostgreSQL) through a dump file, without loss: every artist, voiceprint, authorization, the
//! audit trail, the registry version and the model stamp. The store is opened directly, so
//! export from a live PostgreSQL registry is a consistent snapshot; stop servers on an embedded
//! registry first (its file is locked by the server).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::registry::backend::StoreLocation;
use crate::registry::dump::Dump;
use crate::registry::open_store;

/// `vocalguard registry`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Write a registry's whole content to a dump file (JSON Lines).
    Export(ExportArgs),
    /// Load a dump file into a new, empty registry (created with the dump's model).
    Import(ImportArgs),
}

/// `vocalguard registry export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The registry: a `postgres://` URL, or the data directory holding `registry.redb`.
    #[arg(long, env = "VOCALGUARD_REGISTRY", value_name = "URL|DIR")]
    registry: String,
    /// The dump file to write; `-` for stdout.
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
}

/// `vocalguard registry import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The destination registry: a `postgres://` URL, or a data directory (created if
    /// missing). It must hold no registry yet, or an empty one of the dump's model.
    #[arg(long, env = "VOCALGUARD_REGISTRY", value_name = "URL|DIR")]
    registry: String,
    /// The dump file to read (written by `vocalguard registry export`).
    #[arg(long = "in", short, value_name = "FILE")]
    input: PathBuf,
}

/// Runs a `vocalguard registry` subcommand.
pub fn run(command: RegistryCommand) -> Result<ExitCode> {
    match command {
        RegistryCommand::Export(args) => export(args),
        RegistryCommand::Import(args) => import(args),
    }
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let location = StoreLocation::parse(&args.registry);
    let store = open_store(&location, None).context("opening the registry")?;
    let dump = store.dump().context("reading the registry")?;
    if args.out.as_os_str() == "-" {
        dump.write(std::io::stdout().lock())?;
    } else {
        let tmp = args.out.with_extension("partial");
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = BufWriter::new(file);
        dump.write(&mut out)
            .with_context(|| format!("writing {}", tmp.display()))?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &args.out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), args.out.display()))?;
    }
    report("exported from", &store.describe(), &dump);
    Ok(ExitCode::SUCCESS)
}

fn import(args: ImportArgs) -> Result<ExitCode> {
    let file =
        File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let dump = Dump::read(BufReader::new(file))
        .with_context(|| format!("reading {}", args.input.display()))?;
    dump.check()
        .with_context(|| format!("checking {}", args.input.display()))?;
    let location = StoreLocation::parse(&args.registry);
    let store =
        open_store(&location, Some(&dump.model)).context("opening the destination registry")?;
    store.load(&dump).context("importing")?;
    report("imported into", &store.describe(), &dump);
    Ok(ExitCode::SUCCESS)
}

/// Says on stderr what moved.
fn report(what: &str, store: &str, dump: &Dump) {
    eprintln!(
        "registry version {} {what} {store}: {} artists, {} voiceprints, {} authorizations, {} audit events",
        dump.version,
        dump.artists.len(),
        dump.voiceprints.len(),
        dump.authorizations.len(),
        dump.audit_events.len()
    );
}
