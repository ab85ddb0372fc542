//! Bytes a server would send, for the tests of this module: directories, chunks, whole
//! ticks, datagrams of several messages, and proptest strategies over them.

use std::sync::Arc;

use proptest::prelude::*;
use tickcast_shared::Tick;
use tickcast_shared::chunk::{
    CHUNK_HEADER_LEN, ChunkHeader, DirectoryHeader, ENTITY_RECORD_LEN, EntityRecord, directory_len,
    write_directory, write_header, write_record,
};
use tickcast_shared::schema::Schema;

use super::{ChunkOutcome, TickAssembler};

/// A schema with the arena's 14-byte layout (kinds 1 to 3), for chunks written as
/// [`EntityRecord`]s: the tracker reads every game through a schema.
pub(crate) fn arena_schema() -> Arc<Schema> {
    use tickcast_shared::schema::{EntityKind, Field, FieldRole, FieldType, InputField};
    let kind = |kind: u8| EntityKind {
        kind,
        name: format!("kind{kind}"),
        glyph: b'0' + kind,
        fields: vec![
            Field::new("health", FieldType::U8).role(FieldRole::Health),
            Field::new("x", FieldType::U16)
                .role(FieldRole::PositionX)
                .scale(64),
            Field::new("y", FieldType::U16)
                .role(FieldRole::PositionY)
                .scale(64),
            Field::new("angle", FieldType::U16).role(FieldRole::Angle),
            Field::new("aux", FieldType::U16),
        ],
    };
    Arc::new(
        Schema::new(
            "arena",
            1,
            vec![kind(1), kind(2), kind(3)],
            vec![InputField::new("move_x", FieldType::I8, -127, 127)],
        )
        .expect("valid"),
    )
}

/// A directory of a `columns × rows` grid with `occupied` cells.
pub(crate) fn directory(tick: u32, columns: u16, rows: u16, occupied: &[u16]) -> Vec<u8> {
    let mut bytes = vec![0u8; directory_len(usize::from(columns) * usize::from(rows))];
    let header = DirectoryHeader {
        tick: Tick::new(tick),
        server_time_us: 1_000,
        columns,
        rows,
    };
    write_directory(&header, |c| occupied.contains(&(c as u16)), &mut bytes);
    bytes
}

/// Chunk `index` of `count` of `cell`, holding entities `net_ids` (x = tick).
pub(crate) fn chunk(tick: u32, cell: u16, index: u16, count: u16, net_ids: &[u32]) -> Vec<u8> {
    let mut bytes = vec![0u8; CHUNK_HEADER_LEN + net_ids.len() * ENTITY_RECORD_LEN];
    let header = ChunkHeader {
        tick: Tick::new(tick),
        index_in_cell: index,
        chunks_in_cell: count,
        cell,
        record_count: net_ids.len() as u16,
        server_time_us: 1_000,
    };
    let (head, body) = bytes.split_at_mut(CHUNK_HEADER_LEN);
    write_header(&header, head.try_into().unwrap());
    for (id, slot) in net_ids.iter().zip(body.chunks_exact_mut(ENTITY_RECORD_LEN)) {
        let record = EntityRecord {
            net_id: *id,
            kind: 1,
            x: tick as u16,
            ..Default::default()
        };
        write_record(&record, slot.try_into().unwrap());
    }
    bytes
}

/// Hands one message (no length prefix) to `assembler`.
pub(crate) fn feed(assembler: &mut TickAssembler, bytes: &[u8]) -> ChunkOutcome {
    assembler.on_message(&tickcast_shared::chunk::parse_datagram(bytes).unwrap())
}

/// A datagram carrying `messages`, each behind its length.
pub(crate) fn datagram(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        out.extend_from_slice(&(message.len() as u16).to_le_bytes());
        out.extend_from_slice(message);
    }
    out
}

/// A whole tick on a 2 × 1 grid: cell 0 in two chunks, cell 1 in one.
pub(crate) fn whole_tick(tick: u32) -> [Vec<u8>; 4] {
    [
        directory(tick, 2, 1, &[0, 1]),
        chunk(tick, 0, 0, 2, &[1]),
        chunk(tick, 0, 1, 2, &[2]),
        chunk(tick, 1, 0, 1, &[3]),
    ]
}

/// Where a run's ticks start: anywhere in the tick space, and often just before the
/// wrap so that a run of 40 ticks crosses it.
pub(crate) fn run_start() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (u32::MAX - 40)..=u32::MAX, Just(0)]
}

/// A tick of the run starting at `start`: within 40 ticks of it, in any order.
pub(crate) fn tick_of_run(start: u32) -> impl Strategy<Value = u32> + Clone {
    (0u32..40).prop_map(move |offset| start.wrapping_add(offset))
}

fn valid_chunk(ticks: impl Strategy<Value = u32>) -> impl Strategy<Value = Vec<u8>> {
    (
        ticks,
        1u16..6,
        0u16..6,
        proptest::collection::vec(any::<[u8; 14]>(), 0..4),
    )
        .prop_map(|(tick, count, index, records)| {
            let mut bytes = vec![0u8; CHUNK_HEADER_LEN];
            let header = ChunkHeader {
                tick: Tick::new(tick),
                index_in_cell: index % count,
                chunks_in_cell: count,
                cell: index % 3,
                record_count: records.len() as u16,
                ..Default::default()
            };
            write_header(&header, (&mut bytes[..]).try_into().unwrap());
            bytes.extend(records.iter().flatten());
            bytes
        })
}

/// Up to 60 server datagrams whose messages carry ticks drawn from `ticks`: garbage,
/// one or two chunks, or a directory of a 3 × 1 grid.
pub(crate) fn server_datagrams(
    ticks: impl Strategy<Value = u32> + Clone,
) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let one = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        valid_chunk(ticks.clone()).prop_map(|c| datagram(&[&c])),
        (valid_chunk(ticks.clone()), valid_chunk(ticks.clone()))
            .prop_map(|(a, b)| datagram(&[&a, &b])),
        (ticks, 0u8..8).prop_map(|(tick, bits)| {
            let occupied: Vec<u16> = (0..3).filter(|c| bits & (1 << c) != 0).collect();
            datagram(&[&directory(tick, 3, 1, &occupied)])
        }),
    ];
    proptest::collection::vec(one, 0..60)
}
