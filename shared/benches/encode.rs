//! The record encoder alone: `cargo bench -p tickcast-shared --bench encode`.
//!
//! Writes N entity records (and a chunk header per 80) into a reused buffer, the inner
//! loop of the snapshot system without the ECS gather, sort and hash around it.

#![allow(missing_docs)]

use divan::Bencher;
use tickcast_shared::chunk::{
    CHUNK_HEADER_LEN, ChunkHeader, ENTITY_RECORD_LEN, EntityRecord, write_header, write_record,
};

fn main() {
    divan::main();
}

#[divan::bench(args = [1_000, 10_000, 100_000])]
fn encode_records(bencher: Bencher, entities: usize) {
    let records: Vec<EntityRecord> = (0..entities as u32)
        .map(|i| EntityRecord {
            net_id: i,
            kind: 2,
            health: 100,
            x: (i * 7) as u16,
            y: (i * 13) as u16,
            angle: (i * 977) as u16,
            aux: 0,
        })
        .collect();
    let chunks = entities.div_ceil(80);
    let mut buffer = vec![0u8; chunks * CHUNK_HEADER_LEN + entities * ENTITY_RECORD_LEN];
    bencher
        .counter(divan::counter::ItemsCount::new(entities))
        .bench_local(|| {
            let mut at = 0;
            for (index, chunk) in records.chunks(80).enumerate() {
                let header = ChunkHeader {
                    tick: tickcast_shared::Tick::new(1),
                    index_in_cell: index as u16,
                    chunks_in_cell: chunks as u16,
                    cell: 0,
                    record_count: chunk.len() as u16,
                    server_time_us: 0,
                };
                if let Some(slot) = buffer.get_mut(at..at + CHUNK_HEADER_LEN) {
                    write_header(&header, slot.try_into().unwrap());
                }
                at += CHUNK_HEADER_LEN;
                for record in chunk {
                    if let Some(slot) = buffer.get_mut(at..at + ENTITY_RECORD_LEN) {
                        write_record(record, slot.try_into().unwrap());
                    }
                    at += ENTITY_RECORD_LEN;
                }
            }
            divan::black_box(&buffer);
        });
}
