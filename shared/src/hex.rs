//! Hex text for bytes: how tokens, certificate fingerprints and keys are printed and
//! read back (`tickcast-token`, token files, `--fingerprint`). One encoder and one
//! decoder, so every tool prints and accepts the same spelling.

/// Why text is not the hex of the expected number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// The text has the wrong length.
    #[error("expected {expected} hex digits, found {found} characters")]
    Length {
        /// Hex digits needed: twice the bytes.
        expected: usize,
        /// Bytes of text given.
        found: usize,
    },
    /// A character that is not a hex digit.
    #[error("not a hex digit at column {column}")]
    NotHex {
        /// 1-based position of the character.
        column: usize,
    },
}

/// Lower-case hex of `bytes`, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Reads exactly `out.len()` bytes of hex (either case, nothing else) into `out`.
pub fn decode_into(text: &str, out: &mut [u8]) -> Result<(), HexError> {
    let digits = text.as_bytes();
    if digits.len() != out.len() * 2 {
        return Err(HexError::Length {
            expected: out.len() * 2,
            found: digits.len(),
        });
    }
    let value = |at: usize| {
        char::from(digits[at])
            .to_digit(16)
            .ok_or(HexError::NotHex { column: at + 1 })
    };
    for (i, byte) in out.iter_mut().enumerate() {
        // Each digit is below 16, so the pair fits a byte.
        *byte = (value(2 * i)? * 16 + value(2 * i + 1)?) as u8;
    }
    Ok(())
}

/// Reads the hex of exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let mut out = [0u8; N];
    decode_into(text, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_is_lower_case_and_reads_either_case() {
        assert_eq!(encode(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(decode_array::<3>("00AB7f"), Ok([0x00, 0xab, 0x7f]));
    }

    #[test]
    fn bad_hex_says_where() {
        assert_eq!(
            decode_array::<2>("abc"),
            Err(HexError::Length {
                expected: 4,
                found: 3
            })
        );
        assert_eq!(
            decode_array::<2>("ab+c"),
            Err(HexError::NotHex { column: 3 })
        );
        assert_eq!(
            decode_array::<2>("abcg").unwrap_err().to_string(),
            "not a hex digit at column 4"
        );
        // A multi-byte character is counted in bytes and never read as a digit.
        assert!(decode_array::<2>("é00").is_err());
    }

    proptest! {
        #[test]
        fn bytes_round_trip_through_hex(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let text = encode(&bytes);
            let mut back = vec![0u8; bytes.len()];
            decode_into(&text, &mut back).unwrap();
            prop_assert_eq!(back, bytes);
        }

        #[test]
        fn decoding_any_text_never_panics(text in ".{0,12}") {
            let mut out = [0u8; 4];
            if decode_into(&text, &mut out).is_ok() {
                prop_assert_eq!(encode(&out), text.to_ascii_lowercase());
            }
        }
    }
}
