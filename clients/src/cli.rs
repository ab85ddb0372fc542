//! Command-line pieces the client binaries share: where the server is, which certificate
//! to pin, and where connect tokens come from. Flatten [`ServerArgs`] into a binary's
//! clap arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use tickcast_net::tls::{self, TOKEN_KEY_FILE};
use tickcast_shared::token::{ConnectToken, TokenKey};

use crate::{ClientError, parse_token_file};

/// The server to join and how to be admitted.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub server: SocketAddr,
    /// The server's data directory: its certificate is pinned and its token key used.
    #[arg(long, default_value = ".tickcast")]
    pub data_dir: PathBuf,
    /// Pin this SHA-256 fingerprint instead of reading the certificate from the data dir.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Token key file (default: <data-dir>/token.key).
    #[arg(long, conflicts_with = "token_file")]
    pub token_key_file: Option<PathBuf>,
    /// Connect with tokens from this file instead of minting them: one hex token per
    /// line, as tickcast-token prints them (tickcast-bots gives one to each client and
    /// each churn reconnect; tickcast-watch uses the first).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The certificate fingerprint to pin: `--fingerprint`, else the data dir's cert.
    pub fn pinned_fingerprint(&self) -> Result<[u8; 32], ClientError> {
        match &self.fingerprint {
            Some(hex) => {
                tls::parse_fingerprint(hex).map_err(|e| ClientError::Setup(with_causes(&e)))
            }
            None => tls::fingerprint_from_data_dir(&self.data_dir).map_err(|e| {
                ClientError::Setup(format!(
                    "no certificate to pin in {} (run the server once, or pass --fingerprint): {}",
                    self.data_dir.display(),
                    with_causes(&e)
                ))
            }),
        }
    }

    /// The tokens of `--token-file`, if one was given.
    pub fn listed_tokens(&self) -> Result<Option<Vec<ConnectToken>>, ClientError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ClientError::Setup(format!("reading the token file {}: {e}", path.display()))
        })?;
        let tokens = parse_token_file(&text).map_err(|e| {
            ClientError::Setup(format!("in the token file {}: {e}", path.display()))
        })?;
        Ok(Some(tokens))
    }

    /// The key to mint development tokens with: `--token-key-file`, else the data dir's.
    pub fn token_key(&self) -> Result<TokenKey, ClientError> {
        let path = self
            .token_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(TOKEN_KEY_FILE));
        tls::load_token_key(&path)
            .map_err(|e| ClientError::Setup(format!("loading the token key: {}", with_causes(&e))))
    }
}

/// An error and its causes, `: `-separated.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// 32 random bits, for client ids that do not collide across runs.
pub fn random_u32() -> Result<u32, ClientError> {
    let mut bytes = [0u8; 4];
    tls::fill_random(&mut bytes).map_err(|e| ClientError::Setup(with_causes(&e)))?;
    Ok(u32::from_le_bytes(bytes))
}
