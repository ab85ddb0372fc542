//! Golden ticks for clients that know no game: [`assert_tick_fixture`] writes or checks a
//! file holding a game's schema and one of its ticks, which `clients/tests/any_game.rs`
//! decodes with the schema alone (the client crate cannot link a game). A game's test
//! calls it so a change to what its encoder writes is seen, and the file is regenerated
//! on purpose.

use std::path::Path;

use tickcast_shared::schema::Schema;

/// Set to rewrite the fixtures instead of checking them.
pub const UPDATE_ENV: &str = "TICKCAST_UPDATE_FIXTURES";

/// The fixture's bytes: `[u16 LE schema length][schema, PROTOCOL.md §8][tick buffer]`.
pub fn tick_fixture(schema: &Schema, tick: &[u8]) -> Vec<u8> {
    let schema = schema.encode();
    let mut bytes = (schema.len() as u16).to_le_bytes().to_vec();
    bytes.extend_from_slice(&schema);
    bytes.extend_from_slice(tick);
    bytes
}

/// Writes the fixture at `path` when [`UPDATE_ENV`] is set; otherwise panics (a test
/// assertion) unless the file holds exactly [`tick_fixture`]'s bytes.
#[track_caller]
pub fn assert_tick_fixture(path: &Path, schema: &Schema, tick: &[u8]) {
    let bytes = tick_fixture(schema, tick);
    if std::env::var_os(UPDATE_ENV).is_some() {
        if let Err(e) = std::fs::write(path, &bytes) {
            panic!("writing {}: {e}", path.display());
        }
        return;
    }
    let committed = std::fs::read(path).unwrap_or_default();
    assert!(
        committed == bytes,
        "{} is not what this game's encoder writes now: rerun with {UPDATE_ENV}=1 and \
         commit it",
        path.display()
    );
}
