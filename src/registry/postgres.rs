//! The PostgreSQL registry store, shared by several `vocalguard serve` replicas. Every change
//! is one transaction that takes the `registry_meta` row lock (so changes are serialised and
//! numbered without gaps), writes its rows and its audit event, and sends
//! `NOTIFY vocalguard_registry` with the new version, which PostgreSQL delivers on commit.
//! Replicas hear it on a [`listener`] connection and catch their index up from the audit
//! trail, which doubles as the versioned change log. Connections come from a pool with
//! timeouts; a database that cannot be reached gives [`RegistryError::Unavailable`].
//!
//! The store's calls are synchronous, like the embedded store's: each runs on this store's own
//! small Tokio runtime, which also drives the listener.

mod error;
mod listener;
pub mod migrations;

use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use serde::Serialize;
use tokio::sync::watch;
use tokio_postgres::{NoTls, Row};

use super::audit::{AuditAction, AuditEvent, AuditQuery, Change, Origin};
use super::backend::{
    Counts, IndexChange, PoolSettings, RegistryStore, VersionedChange, ViewContents,
};
use super::consistency::Contents;
use super::dump::Dump;
use super::replay::{Recorded, ToRecord};
use super::types::{Artist, Authorization, RegistryError, Voiceprint, VoiceprintLabel};
use crate::encoder::ModelId;
use error::pg_error;
use listener::Heard;

/// A registry in a PostgreSQL database.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    describe: String,
    heard: Mutex<watch::Receiver<Heard>>,
}

impl PgStore {
    /// Connects to the database at `url`, applies the schema migrations, and checks the model:
    /// with `model`, an empty registry is stamped with it and a stamped one must match it;
    /// without, the registry must already be stamped. Starts the listener for changes.
    pub fn connect(
        url: &str,
        settings: &PoolSettings,
        model: Option<&ModelId>,
    ) -> Result<Self, RegistryError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| RegistryError::Invalid(format!("invalid PostgreSQL URL: {e}")))?;
        config
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .application_name("vocalguard")
            .options(format!(
                "-c statement_timeout={}",
                settings.statement_timeout_ms
            ));
        let describe = describe(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("registry-pg")
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Storage(format!("starting the database runtime: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(Duration::from_millis(settings.acquire_timeout_ms));
        let pool = Pool::builder(manager)
            .max_size(settings.max_connections.max(1))
            .wait_timeout(timeout)
            .create_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
            .recycle_timeout(timeout)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| RegistryError::Storage(format!("building the connection pool: {e}")))?;
        let (heard_tx, heard_rx) = watch::channel(Heard::default());
        let store = Self {
            runtime: Some(runtime),
            pool,
            describe,
            heard: Mutex::new(heard_rx),
        };
        store
            .run(async {
                let mut client = store.client().await?;
                migrations::apply(&mut client, &store.describe).await?;
                store.check_model(&mut client, model).await
            })
            .map_err(|e| match e {
                RegistryError::Unavailable(why) => {
                    RegistryError::Unavailable(format!("{}: {why}", store.describe))
                }
                other => other,
            })?;
        store.runtime().spawn(listener::run(config, heard_tx));
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
    }

    /// Runs `work` to completion on the store's runtime, from synchronous code or from a
    /// worker thread of another multi-threaded runtime.
    fn run<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.runtime().block_on(work))
        } else {
            self.runtime().block_on(work)
        }
    }

    async fn client(&self) -> Result<Object, RegistryError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => pg_error(e),
            PoolError::Timeout(_) => RegistryError::Unavailable(format!(
                "no connection to {} within the timeout ({e})",
                self.describe
            )),
            other => RegistryError::Unavailable(other.to_string()),
        })
    }

    async fn check_model(
        &self,
        client: &mut Object,
        model: Option<&ModelId>,
    ) -> Result<(), RegistryError> {
        let tx = client.transaction().await.map_err(pg_error)?;
        let row = tx
            .query_opt(
                "SELECT model_name, model_sha256 FROM registry_meta FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg_error)?;
        match (row, model) {
            (Some(row), Some(model)) => {
                let stored = ModelId {
                    name: row.get(0),
                    sha256: row.get(1),
                };
                if stored != *model {
                    return Err(RegistryError::ModelMismatch {
                        path: self.describe.clone(),
                        registry: stored,
                        loaded: model.clone(),
                    });
                }
            }
            (None, Some(model)) => {
                tx.execute(
                    "INSERT INTO registry_meta (model_name, model_sha256, version) VALUES ($1, $2, 0)",
                    &[&model.name, &model.sha256],
                )
                .await
                .map_err(pg_error)?;
            }
            (Some(_), None) => {}
            (None, None) => {
                return Err(RegistryError::Invalid(format!(
                    "the registry database {} holds no registry yet",
                    self.describe
                )))
            }
        }
        tx.commit().await.map_err(pg_error)
    }

    /// Ends a change's transaction: bumps the version, appends the audit event, notifies the
    /// replicas and commits. Returns the new version.
    /// Bumps the version, appends the audit event of `change`, keeps `record` under the
    /// origin's actor and request id (refusing the whole change with
    /// [`RegistryError::AlreadyApplied`] when that id is recorded already), and commits.
    async fn finish(
        tx: Transaction<'_>,
        origin: &Origin,
        record: Option<&ToRecord>,
        change: Change,
    ) -> Result<u64, RegistryError> {
        let version: i64 = tx
            .query_one(
                "UPDATE registry_meta SET version = version + 1 RETURNING version",
                &[],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        let sequence: i64 = tx
            .query_one(
                "SELECT coalesce(max(sequence), 0) + 1 FROM audit_events",
                &[],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        tx.execute(
            "INSERT INTO audit_events (sequence, at_unix_ms, actor, request_id, action, artist_id, voiceprint_id, party_id, registry_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &sequence,
                &super::audit::now_ms(),
                &origin.actor,
                &origin.request_id,
                &action_text(change.action),
                &change.artist_id,
                &change.voiceprint_id,
                &change.party_id,
                &version,
            ],
        )
        .await
        .map_err(pg_error)?;
        if let Some(record) = record {
            let outcome = record.outcome.to_string();
            let kept = tx
                .execute(
                    "INSERT INTO write_keys (actor, request_id, fingerprint, outcome, registry_version, at_unix_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (actor, request_id) DO NOTHING",
                    &[
                        &origin.actor,
                        &record.request_id,
                        &record.fingerprint,
                        &outcome,
                        &version,
                        &super::audit::now_ms(),
                    ],
                )
                .await
                .map_err(pg_error)?;
            if kept == 0 {
                return Err(RegistryError::AlreadyApplied);
            }
        }
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&listener::CHANNEL, &version.to_string()],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(version as u64)
    }

    async fn artist_exists(tx: &Transaction<'_>, artist_id: &str) -> Result<(), RegistryError> {
        let found = tx
            .query_opt("SELECT 1 FROM artists WHERE artist_id = $1", &[&artist_id])
            .await
            .map_err(pg_error)?;
        match found {
            Some(_) => Ok(()),
            None => Err(RegistryError::NotFound {
                what: "artist",
                id: artist_id.to_string(),
            }),
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

const VOICEPRINT_COLUMNS: &str =
    "voiceprint_id, artist_id, label, description, voiced_s, duration_s, created_at_unix_s, embedding";
const AUDIT_COLUMNS: &str =
    "sequence, at_unix_ms, actor, request_id, action, artist_id, voiceprint_id, party_id, registry_version";

impl RegistryStore for PgStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn version(&self) -> Result<u64, RegistryError> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT version FROM registry_meta", &[])
                .await
                .map_err(pg_error)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn artist(&self, artist_id: &str) -> Result<Option<Artist>, RegistryError> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT artist_id, display_name, created_at_unix_s FROM artists WHERE artist_id = $1",
                    &[&artist_id],
                )
                .await
                .map_err(pg_error)?;
            Ok(row.map(|r| artist_row(&r)))
        })
    }

    fn artists_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Artist>, u64), RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let total: i64 = tx
                .query_one("SELECT count(*) FROM artists", &[])
                .await
                .map_err(pg_error)?
                .get(0);
            let rows = tx
                .query(
                    "SELECT artist_id, display_name, created_at_unix_s FROM artists
                     WHERE $1::text IS NULL OR artist_id > $1 ORDER BY artist_id LIMIT $2",
                    &[&after, &(limit as i64)],
                )
                .await
                .map_err(pg_error)?;
            Ok((rows.iter().map(artist_row).collect(), total as u64))
        })
    }

    fn voiceprints_of(&self, artist_id: &str) -> Result<Vec<Voiceprint>, RegistryError> {
        self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!("SELECT {VOICEPRINT_COLUMNS} FROM voiceprints WHERE artist_id = $1 ORDER BY voiceprint_id"),
                    &[&artist_id],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(voiceprint_row).collect()
        })
    }

    fn view_contents(&self) -> Result<ViewContents, RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            read_records(&tx).await
        })
    }

    fn counts_of(&self, artist_id: &str) -> Result<Counts, RegistryError> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM voiceprints WHERE artist_id = $1),
                            (SELECT count(*) FROM authorizations WHERE artist_id = $1)",
                    &[&artist_id],
                )
                .await
                .map_err(pg_error)?;
            Ok(Counts {
                voiceprints: row.get::<_, i64>(0) as u32,
                authorizations: row.get::<_, i64>(1) as u32,
            })
        })
    }

    fn authorization(
        &self,
        artist_id: &str,
        party_id: &str,
    ) -> Result<Option<Authorization>, RegistryError> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT artist_id, party_id, note, granted_at_unix_s FROM authorizations
                     WHERE artist_id = $1 AND party_id = $2",
                    &[&artist_id, &party_id],
                )
                .await
                .map_err(pg_error)?;
            Ok(row.map(|r| authorization_row(&r)))
        })
    }

    fn authorizations_of(&self, artist_id: &str) -> Result<Vec<Authorization>, RegistryError> {
        self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT artist_id, party_id, note, granted_at_unix_s FROM authorizations
                     WHERE artist_id = $1 ORDER BY party_id",
                    &[&artist_id],
                )
                .await
                .map_err(pg_error)?;
            Ok(rows.iter().map(authorization_row).collect())
        })
    }

    fn recorded(&self, actor: &str, request_id: &str) -> Result<Option<Recorded>, RegistryError> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT fingerprint, outcome, registry_version, at_unix_ms FROM write_keys
                     WHERE actor = $1 AND request_id = $2",
                    &[&actor, &request_id],
                )
                .await
                .map_err(pg_error)?;
            row.map(|r| {
                let outcome: String = r.get(1);
                Ok(Recorded {
                    fingerprint: r.get(0),
                    outcome: serde_json::from_str(&outcome).map_err(|e| {
                        RegistryError::Corrupt(format!("unreadable recorded result: {e}"))
                    })?,
                    version: r.get::<_, i64>(2) as u64,
                    at_unix_ms: r.get(3),
                })
            })
            .transpose()
        })
    }

    fn insert_artist(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        artist: &Artist,
    ) -> Result<u64, RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let (tx, _) = begin_change(&mut client).await?;
            let inserted = tx
                .execute(
                    "INSERT INTO artists (artist_id, display_name, created_at_unix_s) VALUES ($1, $2, $3)
                     ON CONFLICT (artist_id) DO NOTHING",
                    &[&artist.artist_id, &artist.display_name, &artist.created_at_unix_s],
                )
                .await
                .map_err(pg_error)?;
            if inserted == 0 {
                return Err(RegistryError::AlreadyExists {
                    what: "artist",
                    id: artist.artist_id.clone(),
                });
            }
            let change = Change::artist(AuditAction::CreateArtist, &artist.artist_id);
            Self::finish(tx, origin, record, change).await
        })
    }

    fn delete_artist(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        artist_id: &str,
    ) -> Result<(Counts, u64), RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let (tx, _) = begin_change(&mut client).await?;
            Self::artist_exists(&tx, artist_id).await?;
            let voiceprints = tx
                .execute(
                    "DELETE FROM voiceprints WHERE artist_id = $1",
                    &[&artist_id],
                )
                .await
                .map_err(pg_error)?;
            let authorizations = tx
                .execute(
                    "DELETE FROM authorizations WHERE artist_id = $1",
                    &[&artist_id],
                )
                .await
                .map_err(pg_error)?;
            tx.execute("DELETE FROM artists WHERE artist_id = $1", &[&artist_id])
                .await
                .map_err(pg_error)?;
            let change = Change::artist(AuditAction::DeleteArtist, artist_id);
            let version = Self::finish(tx, origin, record, change).await?;
            let counts = Counts {
                voiceprints: voiceprints as u32,
                authorizations: authorizations as u32,
            };
            Ok((counts, version))
        })
    }

    fn insert_voiceprint(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        voiceprint: &Voiceprint,
        checked_at: u64,
    ) -> Result<u64, RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let (tx, version) = begin_change(&mut client).await?;
            if version != checked_at {
                return Err(RegistryError::Stale);
            }
            Self::artist_exists(&tx, &voiceprint.artist_id).await?;
            tx.execute(
                &format!("INSERT INTO voiceprints ({VOICEPRINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
                &[
                    &voiceprint.voiceprint_id,
                    &voiceprint.artist_id,
                    &label_text(voiceprint.label),
                    &voiceprint.description,
                    &voiceprint.voiced_s,
                    &voiceprint.duration_s,
                    &voiceprint.created_at_unix_s,
                    &embedding_bytes(&voiceprint.embedding),
                ],
            )
            .await
            .map_err(pg_error)?;
            let change = Change::voiceprint(
                AuditAction::EnrollVoiceprint,
                &voiceprint.artist_id,
                &voiceprint.voiceprint_id,
            );
            Self::finish(tx, origin, record, change).await
        })
    }

    fn delete_voiceprint(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        voiceprint_id: &str,
    ) -> Result<(String, u64), RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let (tx, _) = begin_change(&mut client).await?;
            let owner = tx
                .query_opt(
                    "DELETE FROM voiceprints WHERE voiceprint_id = $1 RETURNING artist_id",
                    &[&voiceprint_id],
                )
                .await
                .map_err(pg_error)?;
            let Some(owner) = owner.map(|r| r.get::<_, String>(0)) else {
                return Err(RegistryError::NotFound {
                    what: "voiceprint",
                    id: voiceprint_id.to_string(),
                });
            };
            let change = Change::voiceprint(AuditAction::DeleteVoiceprint, &owner, voiceprint_id);
            let version = Self::finish(tx, origin, record, change).await?;
            Ok((owner, version))
        })
    }

    fn put_authorization(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        grant: &Authorization,
    ) -> Result<u64, RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let (tx, _) = begin_change(&mut client).await?;
            Self::artist_exists(&tx, &grant.artist_id).await?;
            tx.execute(
                "INSERT INTO authorizations (artist_id, party_id, note, granted_at_unix_s) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (artist_id, party_id)
                 DO UPDATE SET note = excluded.note, granted_at_unix_s = excluded.granted_at_unix_s",
                &[&grant.artist_id, &grant.party_id, &grant.note, &grant.granted_at_unix_s],
            )
            .await
            .map_err(pg_error)?;
            let change = Change::party(
                AuditAction::GrantAuthorization,
                &grant.artist_id,
                &grant.party_id,
            );
            Self::finish(tx, origin, record, change).await
        })
    }

    fn delete_authorization(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        artist_id: &str,
        party_id: &str,
    ) -> Result<u64, RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let (tx, _) = begin_change(&mut client).await?;
            let removed = tx
                .execute(
                    "DELETE FROM authorizations WHERE artist_id = $1 AND party_id = $2",
                    &[&artist_id, &party_id],
                )
                .await
                .map_err(pg_error)?;
            if removed == 0 {
                return Err(RegistryError::NotFound {
                    what: "authorization",
                    id: format!("{party_id} of artist {artist_id}"),
                });
            }
            let change = Change::party(AuditAction::RevokeAuthorization, artist_id, party_id);
            Self::finish(tx, origin, record, change).await
        })
    }

    fn audit_events(&self, query: &AuditQuery) -> Result<(Vec<AuditEvent>, bool), RegistryError> {
        self.run(async {
            let client = self.client().await?;
            let wanted = query.limit.saturating_add(1).min(i64::MAX as usize) as i64;
            let rows = client
                .query(
                    &format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit_events
                         WHERE sequence > $1 AND ($2::text IS NULL OR artist_id = $2)
                         ORDER BY sequence LIMIT $3"
                    ),
                    &[
                        &(query.after_sequence.min(i64::MAX as u64) as i64),
                        &query.artist_id,
                        &wanted,
                    ],
                )
                .await
                .map_err(pg_error)?;
            let mut page = rows.iter().map(audit_row).collect::<Result<Vec<_>, _>>()?;
            let more = page.len() > query.limit;
            page.truncate(query.limit);
            Ok((page, more))
        })
    }

    fn changes_after(
        &self,
        version: u64,
        limit: usize,
    ) -> Result<Vec<VersionedChange>, RegistryError> {
        self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT e.registry_version, e.action, e.artist_id, e.voiceprint_id,
                            v.voiceprint_id, v.artist_id, v.label, v.description, v.voiced_s,
                            v.duration_s, v.created_at_unix_s, v.embedding,
                            e.party_id, a.display_name
                     FROM audit_events e
                     LEFT JOIN voiceprints v
                       ON e.action = 'enroll_voiceprint' AND v.voiceprint_id = e.voiceprint_id
                     LEFT JOIN artists a
                       ON e.action = 'create_artist' AND a.artist_id = e.artist_id
                     WHERE e.registry_version > $1
                     ORDER BY e.registry_version LIMIT $2",
                    &[&(version as i64), &(limit as i64)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|row| {
                    let version = row.get::<_, i64>(0) as u64;
                    let action = parse_action(row.get(1))?;
                    let artist_id: String = row.get(2);
                    let voiceprint_id: Option<String> = row.get(3);
                    let party_id: Option<String> = row.get(12);
                    let party = || {
                        party_id.clone().ok_or_else(|| {
                            RegistryError::Corrupt(format!(
                                "the change to version {version} ({action:?}) names no party"
                            ))
                        })
                    };
                    let change = match (action, voiceprint_id) {
                        (AuditAction::CreateArtist, _) => IndexChange::ArtistCreated {
                            display_name: row.get(13),
                            artist_id,
                        },
                        (AuditAction::GrantAuthorization, _) => IndexChange::Granted {
                            party_id: party()?,
                            artist_id,
                        },
                        (AuditAction::RevokeAuthorization, _) => IndexChange::Revoked {
                            party_id: party()?,
                            artist_id,
                        },
                        (AuditAction::EnrollVoiceprint, _) => {
                            let stored: Option<String> = row.get(4);
                            match stored {
                                Some(_) => IndexChange::Enrolled(Some(voiceprint_at(row, 4)?)),
                                None => IndexChange::Enrolled(None),
                            }
                        }
                        (AuditAction::DeleteVoiceprint, Some(id)) => {
                            IndexChange::VoiceprintDeleted(id)
                        }
                        (AuditAction::DeleteArtist, _) => IndexChange::ArtistDeleted(artist_id),
                        (AuditAction::DeleteVoiceprint, None) => {
                            return Err(RegistryError::Corrupt(format!(
                                "the change to version {version} deletes no named voiceprint"
                            )))
                        }
                    };
                    Ok(VersionedChange { version, change })
                })
                .collect()
        })
    }

    fn contents(&self) -> Result<Contents, RegistryError> {
        let dump = self.dump()?;
        let last_audit_event = dump.audit_events.last().cloned();
        let mut contents = Contents {
            version: dump.version,
            audit_events: dump.audit_events.len() as u64,
            last_audit_event,
            ..Contents::default()
        };
        for artist in dump.artists {
            contents.artists.insert(artist.artist_id.clone(), artist);
        }
        for vp in dump.voiceprints {
            contents
                .owners
                .insert(vp.voiceprint_id.clone(), vp.artist_id.clone());
            contents
                .voiceprints
                .insert(format!("{}\0{}", vp.artist_id, vp.voiceprint_id), vp);
        }
        for grant in dump.authorizations {
            contents
                .authorizations
                .insert(format!("{}\0{}", grant.artist_id, grant.party_id), grant);
        }
        Ok(contents)
    }

    /// PostgreSQL keeps deleted rows as dead tuples until vacuum reclaims them; the deletion
    /// is committed and invisible to every reader, and autovacuum removes the bytes.
    fn purge(&self) -> Result<(), RegistryError> {
        Ok(())
    }

    fn purge_pending(&self) -> Result<bool, RegistryError> {
        Ok(false)
    }

    fn dump(&self) -> Result<Dump, RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let meta = tx
                .query_one("SELECT model_name, model_sha256 FROM registry_meta", &[])
                .await
                .map_err(pg_error)?;
            let records = read_records(&tx).await?;
            let events = tx
                .query(
                    &format!("SELECT {AUDIT_COLUMNS} FROM audit_events ORDER BY sequence"),
                    &[],
                )
                .await
                .map_err(pg_error)?;
            Ok(Dump {
                model: ModelId {
                    name: meta.get(0),
                    sha256: meta.get(1),
                },
                version: records.version,
                artists: records.artists,
                voiceprints: records.voiceprints,
                authorizations: records.authorizations,
                audit_events: events.iter().map(audit_row).collect::<Result<_, _>>()?,
            })
        })
    }

    fn load(&self, dump: &Dump) -> Result<(), RegistryError> {
        self.run(async {
            let mut client = self.client().await?;
            let (tx, version) = begin_change(&mut client).await?;
            let artists: i64 = tx
                .query_one("SELECT count(*) FROM artists", &[])
                .await
                .map_err(pg_error)?
                .get(0);
            if version != 0 || artists != 0 {
                return Err(RegistryError::Invalid(format!(
                    "{} is not empty (registry version {version}); import only into a new registry",
                    self.describe
                )));
            }
            let insert_artist = tx
                .prepare("INSERT INTO artists (artist_id, display_name, created_at_unix_s) VALUES ($1, $2, $3)")
                .await
                .map_err(pg_error)?;
            for a in &dump.artists {
                tx.execute(&insert_artist, &[&a.artist_id, &a.display_name, &a.created_at_unix_s])
                    .await
                    .map_err(pg_error)?;
            }
            let insert_voiceprint = tx
                .prepare(&format!("INSERT INTO voiceprints ({VOICEPRINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
                .await
                .map_err(pg_error)?;
            for v in &dump.voiceprints {
                tx.execute(
                    &insert_voiceprint,
                    &[
                        &v.voiceprint_id,
                        &v.artist_id,
                        &label_text(v.label),
                        &v.description,
                        &v.voiced_s,
                        &v.duration_s,
                        &v.created_at_unix_s,
                        &embedding_bytes(&v.embedding),
                    ],
                )
                .await
                .map_err(pg_error)?;
            }
            let insert_grant = tx
                .prepare("INSERT INTO authorizations (artist_id, party_id, note, granted_at_unix_s) VALUES ($1, $2, $3, $4)")
                .await
                .map_err(pg_error)?;
            for g in &dump.authorizations {
                tx.execute(&insert_grant, &[&g.artist_id, &g.party_id, &g.note, &g.granted_at_unix_s])
                    .await
                    .map_err(pg_error)?;
            }
            let insert_event = tx
                .prepare(&format!("INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
                .await
                .map_err(pg_error)?;
            for e in &dump.audit_events {
                tx.execute(
                    &insert_event,
                    &[
                        &(e.sequence as i64),
                        &e.at_unix_ms,
                        &e.actor,
                        &e.request_id,
                        &action_text(e.action),
                        &e.artist_id,
                        &e.voiceprint_id,
                        &e.party_id,
                        &(e.registry_version as i64),
                    ],
                )
                .await
                .map_err(pg_error)?;
            }
            tx.execute(
                "UPDATE registry_meta SET version = $1",
                &[&(dump.version as i64)],
            )
            .await
            .map_err(pg_error)?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&listener::CHANNEL, &dump.version.to_string()],
            )
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn wait_for_change(&self, known: u64, timeout: Duration) {
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        if heard.borrow_and_update().version > known {
            return;
        }
        self.run(async {
            let _ = tokio::time::timeout(timeout, heard.changed()).await;
        });
    }
}

/// Starts a change's transaction and takes the version row's lock, which serialises changes;
/// returns the transaction and the version before the change.
async fn begin_change(client: &mut Object) -> Result<(Transaction<'_>, u64), RegistryError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let version: i64 = tx
        .query_one("SELECT version FROM registry_meta FOR UPDATE", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    Ok((tx, version as u64))
}

/// Starts a read-only transaction that sees one snapshot for all its statements.
/// Every artist, voiceprint and authorization, and the version, as `tx` reads them.
async fn read_records(tx: &Transaction<'_>) -> Result<ViewContents, RegistryError> {
    let version: i64 = tx
        .query_one("SELECT version FROM registry_meta", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    let artists = tx
        .query(
            "SELECT artist_id, display_name, created_at_unix_s FROM artists ORDER BY artist_id",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let voiceprints = tx
        .query(
            &format!(
                "SELECT {VOICEPRINT_COLUMNS} FROM voiceprints ORDER BY artist_id, voiceprint_id"
            ),
            &[],
        )
        .await
        .map_err(pg_error)?;
    let authorizations = tx
        .query(
            "SELECT artist_id, party_id, note, granted_at_unix_s FROM authorizations
             ORDER BY artist_id, party_id",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(ViewContents {
        version: version as u64,
        artists: artists.iter().map(artist_row).collect(),
        voiceprints: voiceprints
            .iter()
            .map(voiceprint_row)
            .collect::<Result<_, _>>()?,
        authorizations: authorizations.iter().map(authorization_row).collect(),
    })
}

async fn snapshot(client: &mut Object) -> Result<Transaction<'_>, RegistryError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)
}

/// `postgres://user@host:port/dbname`, without the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

fn artist_row(row: &Row) -> Artist {
    Artist {
        artist_id: row.get(0),
        display_name: row.get(1),
        created_at_unix_s: row.get(2),
    }
}

fn authorization_row(row: &Row) -> Authorization {
    Authorization {
        artist_id: row.get(0),
        party_id: row.get(1),
        note: row.get(2),
        granted_at_unix_s: row.get(3),
    }
}

fn voiceprint_row(row: &Row) -> Result<Voiceprint, RegistryError> {
    voiceprint_at(row, 0)
}

/// The voiceprint whose columns ([`VOICEPRINT_COLUMNS`]) start at `at`.
fn voiceprint_at(row: &Row, at: usize) -> Result<Voiceprint, RegistryError> {
    let voiceprint_id: String = row.get(at);
    let bytes: Vec<u8> = row.get(at + 7);
    if !bytes.len().is_multiple_of(4) {
        return Err(RegistryError::Corrupt(format!(
            "voiceprint {voiceprint_id} has an embedding of {} bytes, not a whole number of f32",
            bytes.len()
        )));
    }
    Ok(Voiceprint {
        artist_id: row.get(at + 1),
        label: parse_label(row.get(at + 2))?,
        description: row.get(at + 3),
        voiced_s: row.get(at + 4),
        duration_s: row.get(at + 5),
        created_at_unix_s: row.get(at + 6),
        embedding: bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        voiceprint_id,
    })
}

fn audit_row(row: &Row) -> Result<AuditEvent, RegistryError> {
    Ok(AuditEvent {
        sequence: row.get::<_, i64>(0) as u64,
        at_unix_ms: row.get(1),
        actor: row.get(2),
        request_id: row.get(3),
        action: parse_action(row.get(4))?,
        artist_id: row.get(5),
        voiceprint_id: row.get(6),
        party_id: row.get(7),
        registry_version: row.get::<_, i64>(8) as u64,
    })
}

fn embedding_bytes(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A serde unit variant's name (`snake_case` or `lowercase`, as the type declares).
fn variant_name<T: Serialize>(value: T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => unreachable!("unit variants serialise as strings"),
    }
}

fn parse_variant<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, RegistryError> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| RegistryError::Corrupt(format!("unknown {what} {text:?} in the database")))
}

fn label_text(label: VoiceprintLabel) -> String {
    variant_name(label)
}

fn parse_label(text: &str) -> Result<VoiceprintLabel, RegistryError> {
    parse_variant(text, "voiceprint label")
}

fn action_text(action: AuditAction) -> String {
    variant_name(action)
}

fn parse_action(text: &str) -> Result<AuditAction, RegistryError> {
    parse_variant(text, "audit action")
}
