//! PostgreSQL errors as registry errors.

use tokio_postgres::error::SqlState;

use crate::registry::types::RegistryError;

/// A database error as a registry error: the server gone, unreachable or shutting down is
/// [`RegistryError::Unavailable`]; anything else is a storage error.
pub(super) fn pg_error(e: tokio_postgres::Error) -> RegistryError {
    let unavailable = match e.code() {
        None => true,
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::QUERY_CANCELED,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
    };
    let message = match (e.as_db_error(), std::error::Error::source(&e)) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    };
    if unavailable {
        RegistryError::Unavailable(message)
    } else {
        RegistryError::Storage(message)
    }
}
