//! Connect tokens: what a game backend hands a player so a server admits them.
//!
//! A token is `{version, client_id, expires_at_unix_s, nonce, room}` and an HMAC-SHA256
//! over those fields' encoding (`docs/PROTOCOL.md` gives the bytes). The server holds the
//! key; checking a token is a pure function of the token, the key and the time the caller
//! passes in. Replay protection (remembering nonces) is state, so it lives in the server.

use bincode::{Decode, Encode};
use ring::hmac;

use crate::wire;

/// The only token format version this crate mints and accepts.
pub const TOKEN_VERSION: u8 = 1;

/// Length of a token key in bytes.
pub const TOKEN_KEY_LEN: usize = 32;

/// Encoded length of the fields the MAC covers (everything before `mac`).
pub const TOKEN_SIGNED_LEN: usize = 1 + 8 + 8 + 16 + 4;

/// Encoded length of a whole token.
pub const TOKEN_LEN: usize = TOKEN_SIGNED_LEN + 32;

/// Domain separation: the MAC is over this label followed by the signed fields, so a
/// MAC made for anything else with the same key never verifies as a token.
const MAC_LABEL: &[u8] = b"tickcast connect token v1\0";

/// A connect token as it travels in a Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct ConnectToken {
    /// Token format version, [`TOKEN_VERSION`].
    pub version: u8,
    /// The player's id, chosen by the backend; one connection per id at a time.
    pub client_id: u64,
    /// Seconds since the Unix epoch after which the token is refused.
    pub expires_at_unix_s: u64,
    /// Random bytes; a server accepts each nonce once.
    pub nonce: [u8; 16],
    /// The room (match) the token admits to; 0 means any.
    pub room: u32,
    /// HMAC-SHA256 of the label and the fields above.
    pub mac: [u8; 32],
}

impl ConnectToken {
    /// The token's wire encoding ([`TOKEN_LEN`] bytes), as it appears inside a Hello.
    pub fn to_bytes(&self) -> [u8; TOKEN_LEN] {
        let mut out = [0u8; TOKEN_LEN];
        // Fixed-width fields: the encoding is always exactly TOKEN_LEN bytes.
        let written = wire::encode_into(self, &mut out).unwrap_or(0);
        debug_assert_eq!(written, TOKEN_LEN);
        out
    }

    /// Decodes a token from exactly [`TOKEN_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, wire::WireError> {
        wire::decode_exact(bytes)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The version byte is not one this server knows.
    #[error("unknown token version {0}")]
    UnknownVersion(u8),
    /// The MAC does not verify under the server's key.
    #[error("token MAC does not verify")]
    BadMac,
    /// The token expired.
    #[error("token expired at {expires_at_unix_s}, now is {now_unix_s}")]
    Expired {
        /// The token's expiry.
        expires_at_unix_s: u64,
        /// The time the check was made at.
        now_unix_s: u64,
    },
}

/// The secret that mints and checks tokens.
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; TOKEN_KEY_LEN]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// Mints a token; `nonce` must be random and never reused.
    pub fn mint(
        &self,
        client_id: u64,
        expires_at_unix_s: u64,
        nonce: [u8; 16],
        room: u32,
    ) -> ConnectToken {
        let mut token = ConnectToken {
            version: TOKEN_VERSION,
            client_id,
            expires_at_unix_s,
            nonce,
            room,
            mac: [0; 32],
        };
        token.mac = self.mac(&token);
        token
    }

    /// Checks version, MAC and expiry at `now_unix_s`.
    pub fn verify(&self, token: &ConnectToken, now_unix_s: u64) -> Result<(), TokenError> {
        if token.version != TOKEN_VERSION {
            return Err(TokenError::UnknownVersion(token.version));
        }
        let signed = signed_bytes(token);
        let mut labelled = [0u8; MAC_LABEL.len() + TOKEN_SIGNED_LEN];
        labelled[..MAC_LABEL.len()].copy_from_slice(MAC_LABEL);
        labelled[MAC_LABEL.len()..].copy_from_slice(&signed);
        // ring compares in constant time.
        hmac::verify(&self.key, &labelled, &token.mac).map_err(|_| TokenError::BadMac)?;
        if now_unix_s >= token.expires_at_unix_s {
            return Err(TokenError::Expired {
                expires_at_unix_s: token.expires_at_unix_s,
                now_unix_s,
            });
        }
        Ok(())
    }

    fn mac(&self, token: &ConnectToken) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(MAC_LABEL);
        ctx.update(&signed_bytes(token));
        let tag = ctx.sign();
        let mut mac = [0u8; 32];
        mac.copy_from_slice(tag.as_ref());
        mac
    }
}

fn signed_bytes(token: &ConnectToken) -> [u8; TOKEN_SIGNED_LEN] {
    let whole = token.to_bytes();
    let mut signed = [0u8; TOKEN_SIGNED_LEN];
    signed.copy_from_slice(&whole[..TOKEN_SIGNED_LEN]);
    signed
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let key = TokenKey::from_bytes(&[1; 32]);
        let token = key.mint(42, NOW + 60, [3; 16], 0);
        assert_eq!(key.verify(&token, NOW), Ok(()));
        assert!(matches!(
            key.verify(&token, NOW + 60),
            Err(TokenError::Expired { .. })
        ));
    }

    #[test]
    fn any_changed_field_or_key_breaks_the_mac() {
        let key = TokenKey::from_bytes(&[1; 32]);
        let token = key.mint(42, NOW + 60, [3; 16], 7);
        let mut other = token;
        other.client_id = 43;
        assert_eq!(key.verify(&other, NOW), Err(TokenError::BadMac));
        let mut other = token;
        other.room = 8;
        assert_eq!(key.verify(&other, NOW), Err(TokenError::BadMac));
        let mut other = token;
        other.expires_at_unix_s += 1;
        assert_eq!(key.verify(&other, NOW), Err(TokenError::BadMac));
        let wrong_key = TokenKey::from_bytes(&[2; 32]);
        assert_eq!(wrong_key.verify(&token, NOW), Err(TokenError::BadMac));
        let mut other = token;
        other.version = 9;
        assert_eq!(key.verify(&other, NOW), Err(TokenError::UnknownVersion(9)));
    }

    #[test]
    fn a_token_encodes_to_its_documented_length_and_back() {
        let key = TokenKey::from_bytes(&[1; 32]);
        let token = key.mint(1, NOW, [0; 16], 0);
        let mut buf = [0u8; 128];
        assert_eq!(wire::encode_into(&token, &mut buf).unwrap(), TOKEN_LEN);
        assert_eq!(TOKEN_LEN, 69);
        assert_eq!(ConnectToken::from_bytes(&token.to_bytes()).unwrap(), token);
        assert!(ConnectToken::from_bytes(&token.to_bytes()[..68]).is_err());
    }
}
