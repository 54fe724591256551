//! Who is calling: the roles an API token grants, the configured tokens (stored only as
//! hashes), the role each RPC needs, and the authenticated caller that the access check
//! ([`AuthLayer`]) attaches to every request it lets through (read by the handlers for the
//! audit trail).
//!
//! Tokens are random 256-bit values (`vocalguard token new`), so an unsalted SHA-256 of the
//! token is an adequate form at rest: a salt or a slow hash protects low-entropy secrets such
//! as passwords from guessing, and nobody can guess a 256-bit value. The server keeps only
//! the hashes, hashes each presented token and compares hashes; it never stores or logs a
//! presented token.

mod layer;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use layer::{AuthLayer, AuthService};

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

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 3] = [Role::Screen, Role::RegistryAdmin, Role::Auditor];

    /// The role's name as configured: `screen`, `registry-admin` or `auditor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Screen => "screen",
            Role::RegistryAdmin => "registry-admin",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| AuthError::UnknownRole(s.to_string()))
    }
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

    /// Whether the caller holds any of `roles`.
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|role| roles.contains(role))
    }
}

/// Errors of reading or checking the token configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The tokens file could not be read.
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The tokens file or inline list is not of the expected shape.
    #[error("invalid tokens in {origin}: {reason}")]
    Parse {
        /// Where the entries came from (a path, or `VOCALGUARD_TOKENS`).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A role name that is not one of `screen`, `registry-admin`, `auditor`.
    #[error("unknown role {0:?} (expected screen, registry-admin or auditor)")]
    UnknownRole(String),
    /// The OS random number generator failed.
    #[error("cannot draw a random token: {0}")]
    Random(String),
}

/// One configured API token: its name, its roles and the SHA-256 of the token (lower-case
/// hex). The token itself is never configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds the token: 1-64 of `[A-Za-z0-9._-]`; recorded as the caller of its calls.
    pub name: String,
    /// The roles it grants (at least one).
    pub roles: Vec<Role>,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
}

impl TokenEntry {
    /// The entry for `token`, as `vocalguard token new` prints it.
    pub fn for_token(name: &str, roles: &[Role], token: &str) -> Self {
        Self {
            name: name.to_string(),
            roles: roles.to_vec(),
            sha256: hex::encode(token_hash(token)),
        }
    }

    /// The entry in the inline form of `VOCALGUARD_TOKENS`: `NAME:ROLE[,ROLE...]:SHA256`.
    pub fn inline(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        format!("{}:{}:{}", self.name, roles.join(","), self.sha256)
    }

    /// The entry as a `[[token]]` table of a tokens file.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct One<'a> {
            token: [&'a TokenEntry; 1],
        }
        toml::to_string(&One { token: [self] }).expect("a token entry serialises")
    }
}

/// The layout of a tokens file: `[[token]]` tables of `name`, `roles` and `sha256`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// Parses the text of a tokens file; `origin` names it in errors.
pub fn parse_tokens_file(text: &str, origin: &str) -> Result<Vec<TokenEntry>, AuthError> {
    toml::from_str::<TokensFile>(text)
        .map(|file| file.token)
        .map_err(|e| AuthError::Parse {
            origin: origin.to_string(),
            reason: e.to_string(),
        })
}

/// Reads a tokens file.
pub fn read_tokens_file(path: &Path) -> Result<Vec<TokenEntry>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_tokens_file(&text, &path.display().to_string())
}

/// Parses the inline form (`VOCALGUARD_TOKENS`): entries `NAME:ROLE[,ROLE...]:SHA256`
/// separated by `;` or line breaks; blank entries are skipped.
pub fn parse_inline_tokens(text: &str, origin: &str) -> Result<Vec<TokenEntry>, AuthError> {
    let parse_error = |reason: String| AuthError::Parse {
        origin: origin.to_string(),
        reason,
    };
    text.split([';', '\n'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            let parts: Vec<&str> = entry.split(':').collect();
            let [name, roles, sha256] = parts[..] else {
                return Err(parse_error(format!(
                    "entry {} is not NAME:ROLE[,ROLE...]:SHA256",
                    i + 1
                )));
            };
            let roles = roles
                .split(',')
                .map(|r| r.trim().parse::<Role>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| parse_error(format!("entry {}: {e}", i + 1)))?;
            Ok(TokenEntry {
                name: name.trim().to_string(),
                roles,
                sha256: sha256.trim().to_string(),
            })
        })
        .collect()
}

/// The SHA-256 of a presented or new token.
fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Prefix of the tokens `vocalguard token new` makes, so that secret scanners and people can
/// tell them apart from other strings.
pub const TOKEN_PREFIX: &str = "vgt_";

/// A fresh token: [`TOKEN_PREFIX`] and 256 random bits from the OS generator in hex.
pub fn new_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// The configured tokens, checked, with what each grants. Empty means access control is off.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Caller)>,
}

impl Tokens {
    /// Checks `entries` (names 1-64 of `[A-Za-z0-9._-]` and unique, at least one role, a
    /// 64-digit hex hash, no hash twice) and keeps them.
    pub fn new(entries: Vec<TokenEntry>, origin: &str) -> Result<Self, AuthError> {
        let invalid = |reason: String| AuthError::Parse {
            origin: origin.to_string(),
            reason,
        };
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut checked = Vec::with_capacity(entries.len());
        for entry in entries {
            let name = entry.name;
            if !is_valid_name(&name) {
                return Err(invalid(format!(
                    "token name {name:?} must be 1-64 of [A-Za-z0-9._-]"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(format!("token name {name:?} appears twice")));
            }
            if entry.roles.is_empty() {
                return Err(invalid(format!("token {name:?} grants no role")));
            }
            let mut hash = [0u8; 32];
            if entry.sha256.len() != 64
                || hex::decode_to_slice(entry.sha256.to_ascii_lowercase(), &mut hash).is_err()
            {
                return Err(invalid(format!(
                    "token {name:?}: sha256 must be 64 hex digits (the SHA-256 of the token, not the token)"
                )));
            }
            if !hashes.insert(hash) {
                return Err(invalid(format!(
                    "token {name:?} has the same hash as another entry"
                )));
            }
            let mut roles = entry.roles;
            roles.sort();
            roles.dedup();
            checked.push((hash, Caller { name, roles }));
        }
        Ok(Self { entries: checked })
    }

    /// Reads the tokens file (if any) and adds the inline entries; names and hashes must be
    /// unique across both.
    pub fn load(file: Option<&Path>, inline: &[TokenEntry]) -> Result<Self, AuthError> {
        let mut entries = match file {
            Some(path) => read_tokens_file(path)?,
            None => Vec::new(),
        };
        entries.extend_from_slice(inline);
        let origin = match file {
            Some(path) => format!("{} and the inline tokens", path.display()),
            None => "the inline tokens".to_string(),
        };
        Self::new(entries, &origin)
    }

    /// Whether no token is configured, which turns access control off.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The caller a presented token stands for. Hashes the token and compares it with every
    /// configured hash without stopping early.
    pub fn authenticate(&self, token: &str) -> Option<&Caller> {
        let presented = token_hash(token);
        let mut found = None;
        for (hash, caller) in &self.entries {
            let difference = hash
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                found = Some(caller);
            }
        }
        found
    }
}

fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What a gRPC method asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: anyone may call it (health checks).
    Open,
    /// A valid token of any role.
    Authenticated,
    /// A valid token with one of these roles.
    AnyOf(&'static [Role]),
    /// No role grants it: refused to every caller (deny by default).
    Undefined,
}

const SCREEN: &[Role] = &[Role::Screen];
const REGISTRY_ADMIN: &[Role] = &[Role::RegistryAdmin];
const REGISTRY_READ: &[Role] = &[Role::RegistryAdmin, Role::Auditor];
const AUDITOR: &[Role] = &[Role::Auditor];

/// The method's name for metrics and logs (a fixed label, never the client's path), and what
/// it asks of its caller, from the request path `/package.Service/Method`.
///
/// - `grpc.health.v1.Health`: open, so load balancers and orchestrators need no token.
/// - `vocalguard.v1.ScreeningService`: `screen`.
/// - `vocalguard.v1.RegistryService`: changes need `registry-admin`; reads `registry-admin`
///   or `auditor`; `ListAuditEvents` needs `auditor`.
/// - `vocalguard.v1.PingService` and gRPC reflection: any valid token. They tell the server's
///   version, model and API, which help someone aiming at it; every client with a token may
///   see them (e.g. `grpcurl -H 'authorization: Bearer …' … list`).
/// - Anything else: no role grants it.
pub fn access_for(path: &str) -> (&'static str, Access) {
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    match service {
        "grpc.health.v1.Health" => ("Health", Access::Open),
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            ("ServerReflectionInfo", Access::Authenticated)
        }
        "vocalguard.v1.PingService" if method == "Ping" => ("Ping", Access::Authenticated),
        "vocalguard.v1.ScreeningService" => match method {
            "Screen" => ("Screen", Access::AnyOf(SCREEN)),
            "ScreenClip" => ("ScreenClip", Access::AnyOf(SCREEN)),
            _ => ("unknown", Access::Undefined),
        },
        "vocalguard.v1.RegistryService" => match method {
            "CreateArtist" => ("CreateArtist", Access::AnyOf(REGISTRY_ADMIN)),
            "DeleteArtist" => ("DeleteArtist", Access::AnyOf(REGISTRY_ADMIN)),
            "EnrollVoiceprint" => ("EnrollVoiceprint", Access::AnyOf(REGISTRY_ADMIN)),
            "DeleteVoiceprint" => ("DeleteVoiceprint", Access::AnyOf(REGISTRY_ADMIN)),
            "GrantAuthorization" => ("GrantAuthorization", Access::AnyOf(REGISTRY_ADMIN)),
            "RevokeAuthorization" => ("RevokeAuthorization", Access::AnyOf(REGISTRY_ADMIN)),
            "GetArtist" => ("GetArtist", Access::AnyOf(REGISTRY_READ)),
            "ListArtists" => ("ListArtists", Access::AnyOf(REGISTRY_READ)),
            "ListVoiceprints" => ("ListVoiceprints", Access::AnyOf(REGISTRY_READ)),
            "ListAuthorizations" => ("ListAuthorizations", Access::AnyOf(REGISTRY_READ)),
            "ListAuditEvents" => ("ListAuditEvents", Access::AnyOf(AUDITOR)),
            _ => ("unknown", Access::Undefined),
        },
        _ => ("unknown", Access::Undefined),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const HASH_B: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    #[test]
    fn a_tokens_file_parses_and_its_tokens_authenticate() {
        let text = format!(
            "[[token]]\nname = \"ingest\"\nroles = [\"screen\"]\nsha256 = \"{HASH_A}\"\n\n\
             [[token]]\nname = \"ops.team\"\nroles = [\"registry-admin\", \"auditor\"]\nsha256 = \"{}\"\n",
            HASH_B.to_uppercase()
        );
        let entries = parse_tokens_file(&text, "tokens.toml").unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].roles, [Role::RegistryAdmin, Role::Auditor]);
        let tokens = Tokens::new(entries, "tokens.toml").unwrap();
        assert_eq!(tokens.len(), 2);
        // HASH_A is the SHA-256 of "test", HASH_B of "test2".
        let caller = tokens.authenticate("test").unwrap();
        assert_eq!(caller.name, "ingest");
        assert_eq!(caller.roles, [Role::Screen]);
        assert_eq!(tokens.authenticate("test2").unwrap().name, "ops.team");
        assert!(tokens.authenticate("test3").is_none());
        assert!(tokens.authenticate(HASH_A).is_none());
        assert!(parse_tokens_file("", "empty").unwrap().is_empty());
    }

    #[test]
    fn bad_token_files_are_refused_with_a_reason() {
        let entry = |name: &str, roles: &str, sha: &str| {
            format!("[[token]]\nname = \"{name}\"\nroles = [{roles}]\nsha256 = \"{sha}\"\n")
        };
        let refused = |text: String| {
            parse_tokens_file(&text, "f")
                .and_then(|e| Tokens::new(e, "f"))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(entry("a", "\"root\"", HASH_A)).contains("unknown variant"));
        assert!(refused(entry("a", "", HASH_A)).contains("grants no role"));
        assert!(refused(entry("a b", "\"screen\"", HASH_A)).contains("must be 1-64"));
        assert!(refused(entry("a", "\"screen\"", "vgt_0123")).contains("64 hex digits"));
        let twice = entry("a", "\"screen\"", HASH_A) + &entry("a", "\"auditor\"", HASH_B);
        assert!(refused(twice).contains("appears twice"));
        let same = entry("a", "\"screen\"", HASH_A) + &entry("b", "\"auditor\"", HASH_A);
        assert!(refused(same).contains("same hash"));
        let extra = entry("a", "\"screen\"", HASH_A) + "token = \"secret\"\n";
        assert!(refused(extra).contains("unknown field"));
    }

    #[test]
    fn inline_entries_parse_and_round_trip() {
        let text = format!(" ingest:screen:{HASH_A} ;\nops:registry-admin,auditor:{HASH_B};");
        let entries = parse_inline_tokens(&text, "VOCALGUARD_TOKENS").unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "ingest");
        assert_eq!(entries[1].roles, [Role::RegistryAdmin, Role::Auditor]);
        let again = entries.iter().map(TokenEntry::inline).collect::<Vec<_>>();
        assert_eq!(parse_inline_tokens(&again.join(";"), "x").unwrap(), entries);
        let err = parse_inline_tokens("ingest:screen", "VOCALGUARD_TOKENS").unwrap_err();
        assert!(err.to_string().contains("VOCALGUARD_TOKENS"), "{err}");
        let err = parse_inline_tokens(&format!("a:admin:{HASH_A}"), "x").unwrap_err();
        assert!(err.to_string().contains("unknown role"), "{err}");
    }

    #[test]
    fn a_new_token_matches_its_printed_entry() {
        let token = new_token().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 64);
        assert_ne!(token, new_token().unwrap());
        let entry = TokenEntry::for_token("ci", &[Role::Auditor], &token);
        assert!(!entry.to_toml().contains(&token));
        let parsed = parse_tokens_file(&entry.to_toml(), "printed").unwrap();
        assert_eq!(parsed, std::slice::from_ref(&entry));
        let tokens = Tokens::new(parsed, "printed").unwrap();
        assert_eq!(tokens.authenticate(&token).unwrap().name, "ci");
        let inline = parse_inline_tokens(&entry.inline(), "inline").unwrap();
        assert_eq!(inline, [entry]);
    }

    #[test]
    fn every_method_maps_to_its_role_and_the_rest_is_denied() {
        let roles = |path: &str| match access_for(path).1 {
            Access::AnyOf(roles) => roles.to_vec(),
            other => panic!("{path}: {other:?}"),
        };
        for method in ["Screen", "ScreenClip"] {
            assert_eq!(
                roles(&format!("/vocalguard.v1.ScreeningService/{method}")),
                [Role::Screen]
            );
        }
        for method in [
            "CreateArtist",
            "DeleteArtist",
            "EnrollVoiceprint",
            "DeleteVoiceprint",
            "GrantAuthorization",
            "RevokeAuthorization",
        ] {
            let path = format!("/vocalguard.v1.RegistryService/{method}");
            assert_eq!(roles(&path), [Role::RegistryAdmin]);
            assert_eq!(access_for(&path).0, method);
        }
        for method in [
            "GetArtist",
            "ListArtists",
            "ListVoiceprints",
            "ListAuthorizations",
        ] {
            assert_eq!(
                roles(&format!("/vocalguard.v1.RegistryService/{method}")),
                [Role::RegistryAdmin, Role::Auditor]
            );
        }
        assert_eq!(
            roles("/vocalguard.v1.RegistryService/ListAuditEvents"),
            [Role::Auditor]
        );
        assert_eq!(access_for("/grpc.health.v1.Health/Check").1, Access::Open);
        assert_eq!(access_for("/grpc.health.v1.Health/Watch").1, Access::Open);
        for path in [
            "/vocalguard.v1.PingService/Ping",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(access_for(path).1, Access::Authenticated, "{path}");
        }
        for path in [
            "/vocalguard.v1.RegistryService/DropEverything",
            "/vocalguard.v1.ScreeningService/screen",
            "/vocalguard.v1.PingService/Other",
            "/vocalguard.v2.RegistryService/CreateArtist",
            "/grpc.health.v1.Healthz/Check",
            "/",
            "",
            "no-slash",
        ] {
            assert_eq!(access_for(path), ("unknown", Access::Undefined), "{path}");
        }
    }

    #[test]
    fn role_names_match_the_serde_names() {
        for role in Role::ALL {
            let toml_name = toml::Value::try_from(role).unwrap();
            assert_eq!(toml_name.as_str(), Some(role.as_str()));
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
