//! Versioned schema migrations of the PostgreSQL registry, applied at start in one transaction
//! under an advisory lock (so replicas starting together apply each once). A database whose
//! schema is newer than this build's is refused: an older binary must not write to it.

use tokio_postgres::Client;

use super::error::pg_error;
use crate::registry::types::RegistryError;

/// Advisory lock key taken while migrating (an arbitrary constant: "vgmigr" in ASCII).
const LOCK_MIGRATIONS: i64 = 0x7667_6d69_6772;

/// One schema change: its version, what it does, and its SQL.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

/// Every migration, in order. Append only: never edit one that has shipped.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "registry tables, audit trail",
        sql: r#"
CREATE TABLE registry_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model_name text NOT NULL,
    model_sha256 text NOT NULL,
    version bigint NOT NULL
);
CREATE TABLE artists (
    artist_id text COLLATE "C" PRIMARY KEY,
    display_name text NOT NULL,
    created_at_unix_s bigint NOT NULL
);
CREATE TABLE voiceprints (
    voiceprint_id text COLLATE "C" PRIMARY KEY,
    artist_id text COLLATE "C" NOT NULL REFERENCES artists (artist_id),
    label text NOT NULL,
    description text NOT NULL,
    voiced_s double precision NOT NULL,
    duration_s double precision NOT NULL,
    created_at_unix_s bigint NOT NULL,
    embedding bytea NOT NULL
);
CREATE INDEX voiceprints_by_artist ON voiceprints (artist_id, voiceprint_id);
CREATE TABLE authorizations (
    artist_id text COLLATE "C" NOT NULL REFERENCES artists (artist_id),
    party_id text COLLATE "C" NOT NULL,
    note text NOT NULL,
    granted_at_unix_s bigint NOT NULL,
    PRIMARY KEY (artist_id, party_id)
);
CREATE TABLE audit_events (
    sequence bigint PRIMARY KEY,
    at_unix_ms bigint NOT NULL,
    actor text NOT NULL,
    request_id text NOT NULL,
    action text NOT NULL,
    artist_id text COLLATE "C" NOT NULL,
    voiceprint_id text,
    party_id text,
    registry_version bigint NOT NULL UNIQUE
);
CREATE INDEX audit_events_by_artist ON audit_events (artist_id, sequence);
"#,
    },
    Migration {
        version: 2,
        description: "write keys of idempotent writes",
        sql: r#"
CREATE TABLE write_keys (
    actor text COLLATE "C" NOT NULL,
    request_id text COLLATE "C" NOT NULL,
    fingerprint text NOT NULL,
    outcome text NOT NULL,
    registry_version bigint NOT NULL,
    at_unix_ms bigint NOT NULL,
    PRIMARY KEY (actor, request_id)
);
"#,
    },
];

/// The schema version this build writes.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the schema to [`latest`]; refuses a database whose schema is newer.
pub async fn apply(client: &mut Client, describe: &str) -> Result<(), RegistryError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATIONS])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(pg_error)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if current > latest() {
        return Err(RegistryError::Storage(format!(
            "the registry database {describe} has schema version {current}, newer than this build's {}: it was migrated by a newer vocalguard; run that version (or newer) instead",
            latest()
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(migration.sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(pg_error)?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "registry schema migrated"
        );
    }
    tx.commit().await.map_err(pg_error)
}
