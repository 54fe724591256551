//! Purging deleted records from the registry file.
//!
//! redb is copy-on-write: a delete commits new pages without the record and frees the old ones,
//! but a freed page keeps its bytes until it happens to be reused, so a deleted embedding can
//! stay readable in the file. [`rewrite`] copies the live records into a fresh file, makes it
//! durable, and renames it over the old one: the file then holds nothing that was deleted. A
//! crash at any point leaves either the old file (the delete already committed in it, with
//! its purge still marked pending) or the complete new one.

use std::fs::File;
use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableTable, TableDefinition, TableHandle, WriteTransaction,
};

use super::types::RegistryError;

/// Where the fresh copy of `path` is built before it replaces it.
pub fn scratch_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".rewrite");
    path.with_file_name(name)
}

/// Copies what `copy` copies from `source` into a fresh file, checks that it left no table of
/// `source` behind, syncs it, and renames it over `path` (syncing the directory too). Returns
/// the fresh database, already open, to use in place of `source`.
pub fn rewrite(
    source: &Database,
    path: &Path,
    copy: impl FnOnce(&ReadTransaction, &WriteTransaction) -> Result<(), RegistryError>,
) -> Result<Database, RegistryError> {
    let scratch = scratch_path(path);
    remove_if_present(&scratch)?;
    let fresh = Database::create(&scratch)?;
    let from = source.begin_read()?;
    let to = fresh.begin_write()?;
    if let Err(e) = copy(&from, &to) {
        drop(to);
        drop(fresh);
        remove_if_present(&scratch)?;
        return Err(e);
    }
    let mut left_behind: Vec<String> = from.list_tables()?.map(|t| t.name().to_string()).collect();
    let copied: Vec<String> = to.list_tables()?.map(|t| t.name().to_string()).collect();
    left_behind.retain(|name| !copied.contains(name));
    if !left_behind.is_empty() {
        drop(to);
        drop(fresh);
        remove_if_present(&scratch)?;
        return Err(RegistryError::Storage(format!(
            "purge would drop the tables {left_behind:?}; the registry file was left as it was"
        )));
    }
    to.commit()?;
    std::fs::rename(&scratch, path).map_err(|e| io_error("replacing", path, e))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing", dir, e))?;
    Ok(fresh)
}

/// Copies every row of `table` from `from` to `to`.
pub fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<(), RegistryError> {
    let source = from.open_table(table)?;
    let mut target = to.open_table(table)?;
    for entry in source.iter()? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
    }
    Ok(())
}

/// Removes a leftover scratch file of an interrupted rewrite.
pub fn remove_if_present(path: &Path) -> Result<(), RegistryError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("removing", path, e)),
        _ => Ok(()),
    }
}

fn io_error(doing: &str, path: &Path, e: std::io::Error) -> RegistryError {
    RegistryError::Storage(format!("{doing} {}: {e}", path.display()))
}
