//! Who is calling: the roles an API token grants and the authenticated caller that the access
//! check attaches to every request it lets through (read by the handlers for the audit trail).

use serde::{Deserialize, Serialize};

/// A role an API token grants; each RPC requires one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Screen tracks (`ScreeningService`).
    Screen,
    /// Read and change the registry (`RegistryService`).
    RegistryAdmin,
    /// Read the registry and its audit trail.
    Auditor,
}

/// The caller of one request, as the access check established it. Stored in the request's
/// extensions; absent when access control is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (never the token itself).
    pub name: String,
    /// The roles the token grants.
    pub roles: Vec<Role>,
}

impl Caller {
    /// Name recorded for calls made while access control is off.
    pub const ANONYMOUS: &'static str = "anonymous";
}
