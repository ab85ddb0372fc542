//! The engine's record path alone: `cargo bench -p tickcast-sim --bench encode`.
//!
//! What the snapshot system does per record around the ECS gather, sort and hash: a game's
//! writer stores the arena's five fields into the record's 16-byte slot (as
//! `arena::Arena::write_record` does, through `RecordWriter`), the engine stamps the
//! prefix, and the encoder copies the slot's block into the tick buffer behind a chunk
//! header every 80 records. The successor of `tickcast-shared`'s `encode` bench (the
//! bincode `write_record` the encoder used before games wrote their own records).

#![allow(missing_docs)]

use divan::Bencher;
use tickcast_shared::chunk::{CHUNK_HEADER_LEN, ChunkHeader, write_header};
use tickcast_sim::engine::RecordWriter;

const BLOCK: usize = 16;
const RECORD_LEN: usize = 14;

fn main() {
    divan::main();
}

#[divan::bench(args = [1_000, 10_000, 100_000])]
fn write_and_copy_records(bencher: Bencher, entities: usize) {
    let fields: Vec<(u8, u16, u16, u16, u16)> = (0..entities as u32)
        .map(|i| (100, (i * 7) as u16, (i * 13) as u16, (i * 977) as u16, 0))
        .collect();
    let mut slots = vec![0u8; entities * BLOCK];
    let chunks = entities.div_ceil(80);
    // A block of slack past the end, as the encoder's buffers have.
    let mut buffer = vec![0u8; chunks * CHUNK_HEADER_LEN + entities * RECORD_LEN + BLOCK];
    bencher
        .counter(divan::counter::ItemsCount::new(entities))
        .bench_local(|| {
            for (i, (slot, &(health, x, y, angle, aux))) in
                slots.chunks_exact_mut(BLOCK).zip(&fields).enumerate()
            {
                let mut writer = RecordWriter::new(slot, 5);
                writer.u8(health).u16(x).u16(y).u16(angle).u16(aux);
                divan::black_box(writer.len());
                slot[..4].copy_from_slice(&(i as u32).to_le_bytes());
                slot[4] = 2;
            }
            let mut at = 0;
            for (index, chunk) in slots.chunks(80 * BLOCK).enumerate() {
                let header = ChunkHeader {
                    tick: tickcast_shared::Tick::new(1),
                    index_in_cell: index as u16,
                    chunks_in_cell: chunks as u16,
                    cell: 0,
                    record_count: (chunk.len() / BLOCK) as u16,
                    server_time_us: 0,
                };
                if let Some(out) = buffer
                    .get_mut(at..at + CHUNK_HEADER_LEN)
                    .and_then(|s| s.try_into().ok())
                {
                    write_header(&header, out);
                }
                at += CHUNK_HEADER_LEN;
                for block in chunk.chunks_exact(BLOCK) {
                    if let Some(out) = buffer.get_mut(at..at + BLOCK) {
                        out.copy_from_slice(block);
                    }
                    at += RECORD_LEN;
                }
            }
            divan::black_box(&buffer);
        });
}
