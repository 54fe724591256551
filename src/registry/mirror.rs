//! Index maintenance: the store and the in-memory [`View`] (search index, artists and their
//! authorizations) kept in step with it. A change is committed to the store and then applied
//! to the view under the writer lock
//! ([`WriterGuard`], taken by [`Mirror::lock_writer`], is the proof every function that needs
//! the lock asks for); the follower thread catches the index up with other replicas' changes,
//! and the index-builder thread rebuilds the graph from a copy and swaps it in.

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use super::backend::{self, IndexChange, RegistryStore, VersionedChange};
use super::index::{self, SearchConfig, SearchIndex};
use super::types::{IndexStatus, RegistryError};
use super::view::{self, View};

/// How long the index builder waits before trying again after a failed rebuild.
const REBUILD_RETRY: Duration = Duration::from_secs(5);

/// Most changes read from the store in one catch-up step.
const CATCH_UP_BATCH: usize = 1000;

/// Proof that the registry's writer lock is held: changes to the store and to the index are
/// made only while one exists.
pub(super) struct WriterGuard<'a> {
    _held: MutexGuard<'a, ()>,
}

/// A store and the view mirroring it.
pub(super) struct Mirror {
    store: Box<dyn RegistryStore>,
    view: RwLock<View>,
    writer: Mutex<()>,
    dim: usize,
    /// Wakes the index builder (see [`Mirror::maintain`]), once one runs.
    indexer: Mutex<Option<SyncSender<()>>>,
}

/// The live voiceprints copied for a rebuild, and the version they were copied at.
pub(super) struct PendingRebuild {
    /// The live voiceprints.
    pub(super) rows: index::Rows,
    /// How the new index is searched.
    pub(super) config: SearchConfig,
    /// The version they were copied at.
    pub(super) from: u64,
    dim: usize,
}

impl Mirror {
    /// Builds the view, with an index of embeddings of length `dim`, from `store`.
    pub(super) fn open(store: Box<dyn RegistryStore>, dim: usize) -> Result<Self, RegistryError> {
        let view = View::load(store.view_contents()?, dim)?;
        Ok(Self {
            store,
            view: RwLock::new(view),
            writer: Mutex::new(()),
            dim,
            indexer: Mutex::new(None),
        })
    }

    /// The store.
    pub(super) fn store(&self) -> &dyn RegistryStore {
        &*self.store
    }

    /// The view, for reading.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the writer lock.
    pub(super) fn lock_writer(&self) -> WriterGuard<'_> {
        WriterGuard {
            _held: self.writer.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Sets how the index is searched.
    pub(super) fn configure(&self, config: SearchConfig) {
        self.write().index.configure(config);
    }

    /// What the search index is now.
    pub(super) fn status(&self) -> IndexStatus {
        let view = self.read();
        IndexStatus {
            voiceprints: view.index.len(),
            approximate: view.index.is_approximate(),
            deleted: view.index.deleted(),
            memory_bytes: view.index.memory_bytes(),
        }
    }

    /// Starts the index-builder thread (see [`super::Registry::maintain_index`]); it stops when
    /// the mirror is dropped.
    pub(super) fn maintain(
        self: &Arc<Self>,
        on_change: impl Fn(IndexStatus) + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let weak: Weak<Self> = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("index-builder".into())
            .spawn(move || {
                let mut retry = false;
                loop {
                    let next = if retry {
                        woken.recv_timeout(REBUILD_RETRY)
                    } else {
                        woken.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    };
                    if next == Err(RecvTimeoutError::Disconnected) {
                        return;
                    }
                    match Self::rebuild_once(&weak) {
                        Ok(Some(status)) => {
                            retry = false;
                            on_change(status);
                        }
                        Ok(None) => retry = false,
                        Err(e) => {
                            tracing::warn!(error = %e, "rebuilding the search index failed; the current index keeps serving, retrying");
                            retry = true;
                        }
                    }
                }
            })?;
        *self.indexer.lock().unwrap_or_else(|e| e.into_inner()) = Some(wake);
        self.wake_indexer_if_needed();
        Ok(thread)
    }

    /// Wakes the index builder when the index needs a rebuild.
    fn wake_indexer_if_needed(&self) {
        if !self.read().index.needs_rebuild() {
            return;
        }
        if let Some(wake) = &*self.indexer.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = wake.try_send(());
        }
    }

    /// One background rebuild, if the index (still) needs one and the mirror still exists;
    /// returns the new status.
    fn rebuild_once(weak: &Weak<Self>) -> Result<Option<IndexStatus>, RegistryError> {
        let Some(pending) = weak.upgrade().and_then(|m| m.prepare_rebuild()) else {
            return Ok(None);
        };
        let voiceprints = pending.rows.ids.len();
        tracing::info!(
            voiceprints,
            approximate = voiceprints > pending.config.approximate_above,
            registry_version = pending.from,
            threads = pending.config.threads(),
            "building the search index in the background; the current one keeps serving"
        );
        let started = Instant::now();
        let built = SearchIndex::build(pending.dim, pending.config, pending.rows, &|linked| {
            tracing::info!(
                linked,
                of = voiceprints,
                elapsed_s = started.elapsed().as_secs_f64(),
                "building the search index"
            );
        });
        let build_s = started.elapsed().as_secs_f64();
        let Some(mirror) = weak.upgrade() else {
            return Ok(None);
        };
        let (replayed, version) = mirror.swap_in(built, pending.from)?;
        let status = mirror.status();
        tracing::info!(
            voiceprints = status.voiceprints,
            approximate = status.approximate,
            build_s,
            replayed_changes = replayed,
            registry_version = version,
            memory_mib = status.memory_bytes as f64 / (1024.0 * 1024.0),
            "search index rebuilt and swapped in"
        );
        mirror.wake_indexer_if_needed();
        Ok(Some(status))
    }

    /// The copy a rebuild starts from, if the index needs one.
    pub(super) fn prepare_rebuild(&self) -> Option<PendingRebuild> {
        let view = self.read();
        view.index.needs_rebuild().then(|| PendingRebuild {
            rows: view.index.rows(),
            config: *view.index.config(),
            from: view.version,
            dim: self.dim,
        })
    }

    /// Under the writer lock, catches the view up with the store, brings `index`, built at
    /// version `from`, to the same version and makes it the view's index; returns the changes
    /// replayed and the version.
    pub(super) fn swap_in(
        &self,
        mut index: SearchIndex,
        from: u64,
    ) -> Result<(usize, u64), RegistryError> {
        let w = self.lock_writer();
        let target = self.catch_up(&w)?;
        let mut version = from;
        let mut replayed = 0;
        while version < target {
            // Versions have no gaps, so this reads no change beyond `target`.
            let wanted =
                usize::try_from(target - version).map_or(CATCH_UP_BATCH, |n| n.min(CATCH_UP_BATCH));
            let changes = self.store.changes_after(version, wanted)?;
            if changes.is_empty() {
                return Err(RegistryError::Corrupt(format!(
                    "the store has no change after version {version}, yet it is at {target}"
                )));
            }
            replayed += changes.len();
            version = view::replay(&mut index, version, &changes, self.dim)?;
        }
        let mut view = self.write();
        index.configure(*view.index.config());
        view.index = index;
        Ok((replayed, version))
    }

    /// For a shared store, starts the follower thread (see [`super::Registry::follow`]);
    /// `on_change` runs after each catch-up that moved the version. It stops when the mirror
    /// is dropped.
    pub(super) fn follow(
        self: &Arc<Self>,
        on_change: impl Fn() + Send + 'static,
    ) -> Option<std::thread::JoinHandle<()>> {
        if !self.store.shared() {
            return None;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("registry-follower".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    let Some(mirror) = weak.upgrade() else { return };
                    let before = mirror.read().version;
                    match mirror.sync() {
                        Ok(after) => {
                            if failing {
                                tracing::info!(version = after, "registry follower caught up again");
                                failing = false;
                            }
                            if after != before {
                                on_change();
                            }
                        }
                        Err(e) if !failing => {
                            tracing::warn!(error = %e, "registry follower cannot read changes; retrying");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                    let known = mirror.read().version;
                    mirror.store.wait_for_change(known, backend::POLL_INTERVAL);
                }
            })
            .expect("spawning the registry follower thread");
        Some(thread)
    }

    /// Applies every change the store has beyond the index's version; returns the version
    /// reached.
    fn sync(&self) -> Result<u64, RegistryError> {
        let w = self.lock_writer();
        self.catch_up(&w)
    }

    /// Brings the index to `version` after this process committed `change` there: applies it
    /// directly when it is the next version, else catches up from the store (another replica
    /// committed in between).
    pub(super) fn advance(
        &self,
        w: &WriterGuard<'_>,
        version: u64,
        change: IndexChange,
    ) -> Result<(), RegistryError> {
        let next = self.read().version + 1;
        if version == next {
            self.apply(w, &[VersionedChange { version, change }])
        } else if version > next {
            self.catch_up(w).map(|_| ())
        } else {
            Ok(())
        }
    }

    /// Applies the store's changes beyond the index's version; returns the version reached.
    pub(super) fn catch_up(&self, w: &WriterGuard<'_>) -> Result<u64, RegistryError> {
        loop {
            let from = self.read().version;
            let changes = self.store.changes_after(from, CATCH_UP_BATCH)?;
            if changes.is_empty() {
                return Ok(from);
            }
            self.apply(w, &changes)?;
        }
    }

    /// Applies changes, in version order, that are newer than the index; wakes the index
    /// builder when they leave the index needing a rebuild.
    fn apply(&self, _: &WriterGuard<'_>, changes: &[VersionedChange]) -> Result<(), RegistryError> {
        self.write().apply(changes, self.dim)?;
        self.wake_indexer_if_needed();
        Ok(())
    }
}
