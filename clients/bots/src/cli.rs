//! Command-line pieces the two binaries share: where the server is, which certificate
//! to pin, and where connect tokens come from (minted with a key, or read from a token
//! file). Flatten [`ServerArgs`] into a binary's clap arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use tickcast_clients::ClientError;
use tickcast_net::tls::{self, TOKEN_KEY_FILE};
use tickcast_shared::hex;
use tickcast_shared::token::{ConnectToken, TOKEN_LEN, TokenKey};

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

/// Why a token file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    /// A line that is not one token in hex.
    #[error("line {line}: {problem}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// No token in the file.
    #[error("no token in the file (one hex token per line, as tickcast-token prints)")]
    Empty,
}

/// Parses a token file: one token per line in hex (the 69-byte encoding, 138 hex
/// digits, as `tickcast-token` prints it). Blank lines and lines starting with `#` are
/// skipped; anything else that is not exactly one token is an error naming its line.
pub fn parse_token_file(text: &str) -> Result<Vec<ConnectToken>, TokenFileError> {
    let mut tokens = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |problem: String| TokenFileError::BadLine {
            line: index + 1,
            problem,
        };
        let bytes: [u8; TOKEN_LEN] = hex::decode_array(line).map_err(|e| bad(e.to_string()))?;
        let token = ConnectToken::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        tokens.push(token);
    }
    if tokens.is_empty() {
        return Err(TokenFileError::Empty);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_reads_one_token_per_line_as_tickcast_token_prints_them() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let a = key.mint(1, 2_000_000_000, [1; 16], 0);
        let b = key.mint(2, 2_000_000_000, [2; 16], 3);
        let text = format!(
            "# minted for the load test\n{}\n\n  {}  \r\n",
            hex::encode(&a.to_bytes()),
            hex::encode(&b.to_bytes()).to_uppercase()
        );
        let tokens = parse_token_file(&text).unwrap();
        assert_eq!(tokens, vec![a, b]);
        assert!(key.verify(&tokens[1], 1_000).is_ok());
    }

    #[test]
    fn a_bad_token_file_names_the_line() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let good = hex::encode(&key.mint(1, 2_000_000_000, [1; 16], 0).to_bytes());
        let short = format!("{good}\n{}\n", &good[..136]);
        assert_eq!(
            parse_token_file(&short),
            Err(TokenFileError::BadLine {
                line: 2,
                problem: "expected 138 hex digits, found 136 characters".into()
            })
        );
        let mut not_hex = good.clone();
        not_hex.replace_range(10..11, "g");
        assert_eq!(
            parse_token_file(&not_hex).unwrap_err().to_string(),
            "line 1: not a hex digit at column 11"
        );
        assert_eq!(
            parse_token_file("\n# nothing\n"),
            Err(TokenFileError::Empty)
        );
    }
}
