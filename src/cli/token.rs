//! `vocalguard token new`: draws a fresh API token, prints it once, and prints the entry (its
//! name, roles and SHA-256) to add to the server's tokens file or `VOCALGUARD_TOKENS`.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::server::auth::{new_token, Role, TokenEntry};

/// `vocalguard token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new API token: prints the token (only this once) and the entry for the server.
    New(NewArgs),
}

/// Flags of `vocalguard token new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Who will hold the token (1-64 of [A-Za-z0-9._-]); the server records it as the caller.
    #[arg(long)]
    name: String,
    /// A role the token grants: screen, registry-admin or auditor (repeat for several).
    #[arg(long = "role", required = true, value_name = "ROLE", value_parser = parse_role)]
    roles: Vec<Role>,
    /// Print one JSON object (token, name, roles, sha256, inline) instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_role(name: &str) -> Result<Role, crate::server::auth::AuthError> {
    name.parse()
}

/// What `--json` prints.
#[derive(Serialize)]
struct NewToken<'a> {
    token: &'a str,
    name: &'a str,
    roles: &'a [Role],
    sha256: &'a str,
    inline: String,
}

/// Runs a token command.
pub fn run(command: TokenCommand) -> Result<ExitCode> {
    match command {
        TokenCommand::New(args) => new(args),
    }
}

fn new(args: NewArgs) -> Result<ExitCode> {
    let token = new_token()?;
    let entry = TokenEntry::for_token(&args.name, &args.roles, &token);
    // Check the entry as the server will, so a bad name fails here and not at its start.
    crate::server::auth::Tokens::new(vec![entry.clone()], "the new entry")?;
    if args.json {
        let printed = NewToken {
            token: &token,
            name: &entry.name,
            roles: &entry.roles,
            sha256: &entry.sha256,
            inline: entry.inline(),
        };
        println!("{}", serde_json::to_string_pretty(&printed)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Token for {:?}, shown only this once (the server keeps only its SHA-256); give it to \
         the client as VOCALGUARD_TOKEN or --token:\n\n    {token}\n",
        entry.name
    );
    println!("Entry for the tokens file (--tokens-file, VOCALGUARD_TOKENS_FILE):\n");
    println!("{}", entry.to_toml());
    println!(
        "Or as an entry of VOCALGUARD_TOKENS (entries separated by ';'):\n\n    {}",
        entry.inline()
    );
    Ok(ExitCode::SUCCESS)
}
