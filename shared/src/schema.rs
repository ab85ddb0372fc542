//! Replication schemas: what a game's snapshot records and inputs hold, described in
//! bytes, so a program that has never seen the game can read its snapshots and build its
//! inputs.
//!
//! A [`Schema`] names the game, lists each replicated entity kind with its fixed-size
//! fields (integer widths, a fixed-point scale, a role such as the position the engine
//! cuts cells by), and lists the fields of one input command with their ranges. Its byte
//! encoding ([`Schema::encode`], [`Schema::decode`]) is specified byte by byte in
//! `docs/PROTOCOL.md` §8, is versioned, and is bounded by [`MAX_SCHEMA_LEN`].
//!
//! Records and inputs are laid out from the schema alone:
//! * an entity record is `[net_id u32][kind u8]` followed by that kind's fields in order,
//!   each little-endian at its declared width: [`Schema::records`] walks a chunk body;
//! * an input command is `[seq u32]` followed by the input fields in order:
//!   [`Schema::write_input`] builds one, clamping each value into its declared range, and
//!   [`Schema::read_input`] reads one back and counts the values it had to clamp.
//!
//! The schema is checked once, when it is built or decoded ([`Schema::new`]); the
//! per-record readers then index precomputed offsets and never fail on a known kind. The
//! server's own encoder does not interpret a schema per field: the game writes its
//! records with code, and the schema describes what that code writes (a test holds the
//! two equal for each game).

use std::fmt;

/// First bytes of an encoded schema.
pub const SCHEMA_MAGIC: [u8; 4] = *b"TCSC";
/// The version of the schema encoding this code writes and reads.
pub const SCHEMA_FORMAT: u8 = 1;
/// The largest encoded schema either side accepts: it travels as one control-stream
/// message (`wire::MAX_MESSAGE_LEN`), and a reader never allocates more than this.
pub const MAX_SCHEMA_LEN: usize = 1024;
/// The longest name (game, kind, field, bit), in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// The most entity kinds a game may declare.
pub const MAX_KINDS: usize = 16;
/// The most fields an entity kind or an input may declare.
pub const MAX_FIELDS: usize = 16;
/// The longest record, prefix included, in bytes.
pub const MAX_RECORD_LEN: usize = 64;
/// The longest input command, `seq` included, in bytes: room for 28 bytes of fields
/// (sticks, buttons, aims). Input datagrams carry their commands inline on their way to
/// the simulation, through a bounded channel whose every slot is allocated at start, so
/// this bound is paid per slot: 64 here cost 3.65 MiB more at 510 clients' worth of
/// channels than the 12-byte commands before the schema (docs/PERFORMANCE.md, "Bring
/// your own game").
pub const MAX_INPUT_LEN: usize = 32;
/// Bytes every entity record starts with: `net_id` (u32) and `kind` (u8).
pub const RECORD_PREFIX_LEN: usize = 5;
/// Bytes every input command starts with: `seq` (u32).
pub const INPUT_PREFIX_LEN: usize = 4;

/// Why a schema cannot be built or decoded, or bytes do not fit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The bytes do not start with [`SCHEMA_MAGIC`].
    #[error("not a tickcast schema (bad magic)")]
    BadMagic,
    /// A schema encoding this build does not read.
    #[error("schema format {0} is not supported (this build reads {SCHEMA_FORMAT})")]
    UnsupportedFormat(u8),
    /// The bytes end inside the schema.
    #[error("schema truncated while reading {0}")]
    Truncated(&'static str),
    /// Bytes follow the schema.
    #[error("{0} byte(s) follow the schema")]
    TrailingBytes(usize),
    /// Longer than [`MAX_SCHEMA_LEN`].
    #[error("schema of {0} bytes exceeds the limit of {MAX_SCHEMA_LEN}")]
    TooLong(usize),
    /// A field type code this version does not know.
    #[error("unknown field type code {0}")]
    UnknownType(u8),
    /// A role code this version does not know.
    #[error("unknown {what} role code {code}")]
    UnknownRole {
        /// `entity` or `input`.
        what: &'static str,
        /// The code.
        code: u8,
    },
    /// The schema is well-formed bytes but breaks a rule (the text says which).
    #[error("invalid schema: {0}")]
    Invalid(String),
    /// A record names a kind the schema does not declare.
    #[error("record kind {0} is not in the schema")]
    UnknownKind(u8),
    /// A record or an input command is cut short.
    #[error("{what} of {len} bytes is shorter than its layout ({need} bytes)")]
    ShortRecord {
        /// `record` or `input`.
        what: &'static str,
        /// Bytes there.
        len: usize,
        /// Bytes the layout needs.
        need: usize,
    },
    /// A chunk's records do not fill its body exactly.
    #[error("{count} records take {used} of the chunk's {body} body bytes")]
    RecordCount {
        /// Records the chunk announces.
        count: usize,
        /// Bytes those records take (as far as they could be walked).
        used: usize,
        /// Bytes of the body.
        body: usize,
    },
    /// [`Schema::write_input`] was given the wrong number of values.
    #[error("the input has {expected} fields, {given} values were given")]
    InputArity {
        /// Fields declared.
        expected: usize,
        /// Values given.
        given: usize,
    },
}

/// A field's integer type on the wire (little-endian, two's complement when signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// Unsigned, 1 byte.
    U8,
    /// Unsigned, 2 bytes.
    U16,
    /// Unsigned, 4 bytes.
    U32,
    /// Signed, 1 byte.
    I8,
    /// Signed, 2 bytes.
    I16,
    /// Signed, 4 bytes.
    I32,
}

impl FieldType {
    /// Every type, in code order (code = index + 1).
    pub const ALL: [FieldType; 6] = [
        FieldType::U8,
        FieldType::U16,
        FieldType::U32,
        FieldType::I8,
        FieldType::I16,
        FieldType::I32,
    ];

    /// Bytes on the wire.
    pub fn width(self) -> usize {
        match self {
            FieldType::U8 | FieldType::I8 => 1,
            FieldType::U16 | FieldType::I16 => 2,
            FieldType::U32 | FieldType::I32 => 4,
        }
    }

    /// Whether the type is unsigned.
    pub fn is_unsigned(self) -> bool {
        matches!(self, FieldType::U8 | FieldType::U16 | FieldType::U32)
    }

    /// The smallest value the type holds.
    pub fn min(self) -> i64 {
        match self {
            FieldType::U8 | FieldType::U16 | FieldType::U32 => 0,
            FieldType::I8 => i64::from(i8::MIN),
            FieldType::I16 => i64::from(i16::MIN),
            FieldType::I32 => i64::from(i32::MIN),
        }
    }

    /// The largest value the type holds.
    pub fn max(self) -> i64 {
        match self {
            FieldType::U8 => i64::from(u8::MAX),
            FieldType::U16 => i64::from(u16::MAX),
            FieldType::U32 => i64::from(u32::MAX),
            FieldType::I8 => i64::from(i8::MAX),
            FieldType::I16 => i64::from(i16::MAX),
            FieldType::I32 => i64::from(i32::MAX),
        }
    }

    /// The code the encoding uses (1–6).
    pub fn code(self) -> u8 {
        match self {
            FieldType::U8 => 1,
            FieldType::U16 => 2,
            FieldType::U32 => 3,
            FieldType::I8 => 4,
            FieldType::I16 => 5,
            FieldType::I32 => 6,
        }
    }

    /// The type of a code, if this version knows it.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// Reads a value of this type from the start of `bytes`, which holds at least
    /// [`FieldType::width`] bytes.
    fn read(self, bytes: &[u8]) -> i64 {
        let mut le = [0u8; 4];
        le[..self.width()].copy_from_slice(&bytes[..self.width()]);
        match self {
            FieldType::U8 => i64::from(le[0]),
            FieldType::U16 => i64::from(u16::from_le_bytes([le[0], le[1]])),
            FieldType::U32 => i64::from(u32::from_le_bytes(le)),
            FieldType::I8 => i64::from(le[0] as i8),
            FieldType::I16 => i64::from(i16::from_le_bytes([le[0], le[1]])),
            FieldType::I32 => i64::from(i32::from_le_bytes(le)),
        }
    }

    /// Writes `value`, which lies within the type's range, at the start of `out`.
    fn write(self, value: i64, out: &mut [u8]) {
        let le = (value as i32 as u32).to_le_bytes();
        out[..self.width()].copy_from_slice(&le[..self.width()]);
    }
}

/// What an entity field means to the engine and to generic tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldRole {
    /// Game data with no meaning to the engine.
    Plain,
    /// The x of the position the engine cuts cells by (unsigned; `value / scale` is in
    /// world units).
    PositionX,
    /// The y of that position.
    PositionY,
    /// A heading, a full turn in `2^(8 × width)` steps.
    Angle,
    /// Bits with names ([`Field::bits`]).
    Flags,
    /// A health-like amount a viewer may draw as a bar.
    Health,
}

impl FieldRole {
    const ALL: [FieldRole; 6] = [
        FieldRole::Plain,
        FieldRole::PositionX,
        FieldRole::PositionY,
        FieldRole::Angle,
        FieldRole::Flags,
        FieldRole::Health,
    ];

    /// The code the encoding uses (0–5).
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0) as u8
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// What an input field means to generic clients (the bots drive a game by these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputRole {
    /// Game data no generic client knows how to drive; bots send its minimum clamped
    /// to 0.
    Plain,
    /// Movement along x, from `min` (left) to `max` (right).
    MoveX,
    /// Movement along y, from `min` (up) to `max` (down).
    MoveY,
    /// An aim angle, a full turn in `2^(8 × width)` steps.
    Aim,
    /// Buttons, one bit each, with names ([`InputField::bits`]).
    Buttons,
}

impl InputRole {
    const ALL: [InputRole; 5] = [
        InputRole::Plain,
        InputRole::MoveX,
        InputRole::MoveY,
        InputRole::Aim,
        InputRole::Buttons,
    ];

    /// The code the encoding uses (0–4).
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0) as u8
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// One fixed-size field of an entity record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Name, `[a-z0-9_]`, 1–32 bytes, unique within its kind.
    pub name: String,
    /// Wire type.
    pub ty: FieldType,
    /// Meaning to the engine and tools.
    pub role: FieldRole,
    /// Fixed-point scale: the value in game units is `raw / scale` (1 for integers).
    pub scale: u16,
    /// For [`FieldRole::Flags`]: the name of each bit, lowest first; empty otherwise.
    pub bits: Vec<String>,
}

impl Field {
    /// An integer field of `ty` with no role.
    pub fn new(name: &str, ty: FieldType) -> Self {
        Self {
            name: name.into(),
            ty,
            role: FieldRole::Plain,
            scale: 1,
            bits: Vec::new(),
        }
    }

    /// The same field with `role`.
    pub fn role(mut self, role: FieldRole) -> Self {
        self.role = role;
        self
    }

    /// The same field read as fixed point: `raw / scale`.
    pub fn scale(mut self, scale: u16) -> Self {
        self.scale = scale;
        self
    }

    /// The same field as named flags, lowest bit first.
    pub fn flags(mut self, bits: &[&str]) -> Self {
        self.role = FieldRole::Flags;
        self.bits = bits.iter().map(|b| (*b).into()).collect();
        self
    }
}

/// One replicated entity kind: its record layout and how a viewer draws it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityKind {
    /// The kind byte records carry (1–255, unique).
    pub kind: u8,
    /// Name, `[a-z0-9_]`, 1–32 bytes.
    pub name: String,
    /// The character a text viewer draws it with (printable ASCII, not a space).
    pub glyph: u8,
    /// The fields after the record prefix, in wire order.
    pub fields: Vec<Field>,
}

/// One field of an input command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputField {
    /// Name, `[a-z0-9_]`, 1–32 bytes, unique within the input.
    pub name: String,
    /// Wire type.
    pub ty: FieldType,
    /// Meaning to generic clients.
    pub role: InputRole,
    /// The smallest value the server takes; smaller values are clamped and counted.
    pub min: i32,
    /// The largest value the server takes; larger values are clamped and counted.
    pub max: i32,
    /// For [`InputRole::Buttons`]: the name of each bit, lowest first; empty otherwise.
    pub bits: Vec<String>,
}

impl InputField {
    /// A field of `ty` taking `min..=max`, with no role.
    pub fn new(name: &str, ty: FieldType, min: i32, max: i32) -> Self {
        Self {
            name: name.into(),
            ty,
            role: InputRole::Plain,
            min,
            max,
            bits: Vec::new(),
        }
    }

    /// The same field with `role`.
    pub fn role(mut self, role: InputRole) -> Self {
        self.role = role;
        self
    }

    /// The same field as named buttons, lowest bit first.
    pub fn buttons(mut self, bits: &[&str]) -> Self {
        self.role = InputRole::Buttons;
        self.bits = bits.iter().map(|b| (*b).into()).collect();
        self
    }
}

/// Where a kind's fields sit in its record; computed once when the schema is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KindLayout {
    offsets: Vec<usize>,
    len: usize,
    position: (usize, usize),
}

/// A game's replication schema, checked: see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    game: String,
    game_version: u16,
    kinds: Vec<EntityKind>,
    input: Vec<InputField>,
    layouts: Vec<KindLayout>,
    /// Index into `kinds` for each kind byte; `u8::MAX` where undeclared. Boxed so a
    /// schema is small to move (it sits in recording headers and messages).
    by_kind: Box<[u8; 256]>,
    input_offsets: Vec<usize>,
    input_len: usize,
}

impl Schema {
    /// Checks and builds a schema: names, kinds, one position per kind, widths, ranges,
    /// and the size of its encoding.
    pub fn new(
        game: &str,
        game_version: u16,
        kinds: Vec<EntityKind>,
        input: Vec<InputField>,
    ) -> Result<Self, SchemaError> {
        let invalid = |text: String| Err(SchemaError::Invalid(text));
        check_name("game", game, true)?;
        if kinds.is_empty() || kinds.len() > MAX_KINDS {
            return invalid(format!("{} kinds (1 to {MAX_KINDS} allowed)", kinds.len()));
        }
        let mut by_kind = Box::new([u8::MAX; 256]);
        let mut layouts = Vec::with_capacity(kinds.len());
        for (i, kind) in kinds.iter().enumerate() {
            let at = format!("kind {} ({})", kind.kind, kind.name);
            check_name("kind", &kind.name, false)?;
            if kind.kind == 0 || by_kind[usize::from(kind.kind)] != u8::MAX {
                return invalid(format!("{at}: the kind byte must be 1-255 and unique"));
            }
            if !kind.glyph.is_ascii_graphic() {
                return invalid(format!("{at}: the glyph must be printable ASCII"));
            }
            if kinds[..i].iter().any(|k| k.name == kind.name) {
                return invalid(format!("{at}: a kind of that name already exists"));
            }
            by_kind[usize::from(kind.kind)] = i as u8;
            layouts
                .push(kind_layout(kind).map_err(|e| SchemaError::Invalid(format!("{at}: {e}")))?);
        }
        let (input_offsets, input_len) =
            input_layout(&input).map_err(|e| SchemaError::Invalid(format!("input: {e}")))?;
        let schema = Self {
            game: game.into(),
            game_version,
            kinds,
            input,
            layouts,
            by_kind,
            input_offsets,
            input_len,
        };
        let len = schema.encode().len();
        if len > MAX_SCHEMA_LEN {
            return Err(SchemaError::TooLong(len));
        }
        Ok(schema)
    }

    /// The game's name.
    pub fn game(&self) -> &str {
        &self.game
    }

    /// The game's version: a reader of recordings refuses another version.
    pub fn game_version(&self) -> u16 {
        self.game_version
    }

    /// The entity kinds, in declaration order.
    pub fn kinds(&self) -> &[EntityKind] {
        &self.kinds
    }

    /// The kind a record's kind byte names.
    pub fn kind(&self, kind: u8) -> Option<&EntityKind> {
        self.kinds.get(usize::from(self.by_kind[usize::from(kind)]))
    }

    /// Bytes a record of `kind` takes, prefix included.
    pub fn record_len(&self, kind: u8) -> Option<usize> {
        let index = usize::from(self.by_kind[usize::from(kind)]);
        self.layouts.get(index).map(|l| l.len)
    }

    /// The input command's fields, in wire order.
    pub fn input(&self) -> &[InputField] {
        &self.input
    }

    /// Bytes an input command takes, `seq` included.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// The records of a chunk body, read with this schema: each item is a record or the
    /// reason the bytes stop fitting (after which the iterator ends).
    pub fn records<'a>(&'a self, body: &'a [u8]) -> Records<'a> {
        Records {
            schema: self,
            rest: body,
            failed: false,
        }
    }

    /// Checks that exactly `count` records fill `body` (a chunk's): each of a declared
    /// kind, whole, and nothing after the last.
    pub fn check_records(&self, body: &[u8], count: usize) -> Result<(), SchemaError> {
        let mut used = 0;
        let mut walked = 0;
        for record in self.records(body).take(count) {
            used += record?.bytes().len();
            walked += 1;
        }
        if walked != count || used != body.len() {
            return Err(SchemaError::RecordCount {
                count,
                used,
                body: body.len(),
            });
        }
        Ok(())
    }

    /// The record at the start of `bytes`, read with this schema.
    pub fn record<'a>(&'a self, bytes: &'a [u8]) -> Result<RecordView<'a>, SchemaError> {
        self.records(bytes)
            .next()
            .unwrap_or(Err(SchemaError::ShortRecord {
                what: "record",
                len: 0,
                need: RECORD_PREFIX_LEN,
            }))
    }

    /// Writes one input command: `seq`, then `values` (one per input field, in order),
    /// each clamped into its field's range. Returns the bytes written and how many
    /// values were clamped.
    pub fn write_input(
        &self,
        seq: u32,
        values: &[i64],
        out: &mut [u8],
    ) -> Result<(usize, usize), SchemaError> {
        if values.len() != self.input.len() {
            return Err(SchemaError::InputArity {
                expected: self.input.len(),
                given: values.len(),
            });
        }
        if out.len() < self.input_len {
            return Err(SchemaError::ShortRecord {
                what: "input",
                len: out.len(),
                need: self.input_len,
            });
        }
        out[..INPUT_PREFIX_LEN].copy_from_slice(&seq.to_le_bytes());
        let mut clamped = 0;
        for ((field, offset), value) in self.input.iter().zip(&self.input_offsets).zip(values) {
            let kept = (*value).clamp(i64::from(field.min), i64::from(field.max));
            clamped += usize::from(kept != *value);
            field.ty.write(kept, &mut out[*offset..]);
        }
        Ok((self.input_len, clamped))
    }

    /// Reads one input command from the start of `bytes` into `values` (one slot per
    /// input field): returns its `seq` and how many values lay outside their declared
    /// range and were clamped into it (the server counts these as violations).
    pub fn read_input(
        &self,
        bytes: &[u8],
        values: &mut [i64; MAX_FIELDS],
    ) -> Result<(u32, usize), SchemaError> {
        if bytes.len() < self.input_len {
            return Err(SchemaError::ShortRecord {
                what: "input",
                len: bytes.len(),
                need: self.input_len,
            });
        }
        let seq = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let mut clamped = 0;
        for ((field, offset), slot) in self.input.iter().zip(&self.input_offsets).zip(values) {
            let raw = field.ty.read(&bytes[*offset..]);
            let kept = raw.clamp(i64::from(field.min), i64::from(field.max));
            clamped += usize::from(kept != raw);
            *slot = kept;
        }
        Ok((seq, clamped))
    }

    /// The schema's bytes (`docs/PROTOCOL.md` §8).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&SCHEMA_MAGIC);
        out.push(SCHEMA_FORMAT);
        put_name(&mut out, &self.game);
        out.extend_from_slice(&self.game_version.to_le_bytes());
        out.push(self.kinds.len() as u8);
        for kind in &self.kinds {
            out.push(kind.kind);
            put_name(&mut out, &kind.name);
            out.push(kind.glyph);
            out.push(kind.fields.len() as u8);
            for field in &kind.fields {
                put_name(&mut out, &field.name);
                out.push(field.ty.code());
                out.push(field.role.code());
                out.extend_from_slice(&field.scale.to_le_bytes());
                put_names(&mut out, &field.bits);
            }
        }
        out.push(self.input.len() as u8);
        for field in &self.input {
            put_name(&mut out, &field.name);
            out.push(field.ty.code());
            out.push(field.role.code());
            out.extend_from_slice(&field.min.to_le_bytes());
            out.extend_from_slice(&field.max.to_le_bytes());
            put_names(&mut out, &field.bits);
        }
        out
    }

    /// Reads and checks a schema from exactly `bytes`. Never panics and never allocates
    /// more than a few times [`MAX_SCHEMA_LEN`], whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, SchemaError> {
        if bytes.len() > MAX_SCHEMA_LEN {
            return Err(SchemaError::TooLong(bytes.len()));
        }
        let mut c = Reader { bytes };
        if c.take(4, "the magic")? != SCHEMA_MAGIC {
            return Err(SchemaError::BadMagic);
        }
        let format = c.u8("the format")?;
        if format != SCHEMA_FORMAT {
            return Err(SchemaError::UnsupportedFormat(format));
        }
        let game = c.name("the game name")?;
        let game_version = u16::from_le_bytes(c.array("the game version")?);
        let kind_count = usize::from(c.u8("the kind count")?);
        let mut kinds = Vec::with_capacity(kind_count.min(MAX_KINDS));
        for _ in 0..kind_count {
            let kind = c.u8("a kind byte")?;
            let name = c.name("a kind name")?;
            let glyph = c.u8("a glyph")?;
            let field_count = usize::from(c.u8("a field count")?);
            let mut fields = Vec::with_capacity(field_count.min(MAX_FIELDS));
            for _ in 0..field_count {
                let name = c.name("a field name")?;
                let ty = c.field_type()?;
                let code = c.u8("a field role")?;
                let role = FieldRole::from_code(code).ok_or(SchemaError::UnknownRole {
                    what: "entity",
                    code,
                })?;
                let scale = u16::from_le_bytes(c.array("a scale")?);
                let bits = c.names("bit names")?;
                fields.push(Field {
                    name,
                    ty,
                    role,
                    scale,
                    bits,
                });
            }
            kinds.push(EntityKind {
                kind,
                name,
                glyph,
                fields,
            });
        }
        let input_count = usize::from(c.u8("the input field count")?);
        let mut input = Vec::with_capacity(input_count.min(MAX_FIELDS));
        for _ in 0..input_count {
            let name = c.name("an input field name")?;
            let ty = c.field_type()?;
            let code = c.u8("an input role")?;
            let role = InputRole::from_code(code).ok_or(SchemaError::UnknownRole {
                what: "input",
                code,
            })?;
            let min = i32::from_le_bytes(c.array("an input minimum")?);
            let max = i32::from_le_bytes(c.array("an input maximum")?);
            let bits = c.names("button names")?;
            input.push(InputField {
                name,
                ty,
                role,
                min,
                max,
                bits,
            });
        }
        if !c.bytes.is_empty() {
            return Err(SchemaError::TrailingBytes(c.bytes.len()));
        }
        Self::new(&game, game_version, kinds, input)
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}: ", self.game, self.game_version)?;
        for (i, kind) in self.kinds.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} '{}'", kind.name, kind.glyph as char)?;
        }
        write!(f, "; input of {} fields", self.input.len())
    }
}

/// One entity record of a chunk, read with a [`Schema`].
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    kind: &'a EntityKind,
    layout: &'a KindLayout,
    bytes: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The entity's stable id.
    pub fn net_id(&self) -> u32 {
        u32::from_le_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]])
    }

    /// Its kind, as the schema declares it.
    pub fn kind(&self) -> &'a EntityKind {
        self.kind
    }

    /// The raw integer of field `index` (in the kind's order); 0 past the last field.
    pub fn raw(&self, index: usize) -> i64 {
        match (self.kind.fields.get(index), self.layout.offsets.get(index)) {
            (Some(field), Some(offset)) => field.ty.read(&self.bytes[*offset..]),
            _ => 0,
        }
    }

    /// Field `index` in game units (`raw / scale`).
    pub fn value(&self, index: usize) -> f64 {
        let scale = self.kind.fields.get(index).map_or(1, |f| f.scale);
        self.raw(index) as f64 / f64::from(scale)
    }

    /// The field named `name`, in game units.
    pub fn value_of(&self, name: &str) -> Option<f64> {
        let index = self.kind.fields.iter().position(|f| f.name == name)?;
        Some(self.value(index))
    }

    /// The position the engine cuts cells by, in game units.
    pub fn position(&self) -> (f64, f64) {
        (
            self.value(self.layout.position.0),
            self.value(self.layout.position.1),
        )
    }

    /// The record's bytes, prefix included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// One entity record copied out of a chunk: its net id, its kind and its bytes (prefix
/// included), inline, so a client keeps records of any game without its types. Read its
/// fields with [`Record::view`] and the schema.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The entity's stable id.
    pub net_id: u32,
    /// The record's kind byte.
    pub kind: u8,
    len: u8,
    bytes: [u8; MAX_RECORD_LEN],
}

impl Record {
    /// Copies a record out of its chunk.
    pub fn of(view: &RecordView<'_>) -> Self {
        let source = view.bytes();
        let len = source.len().min(MAX_RECORD_LEN);
        let mut bytes = [0u8; MAX_RECORD_LEN];
        bytes[..len].copy_from_slice(&source[..len]);
        Self {
            net_id: view.net_id(),
            kind: view.kind().kind,
            len: len as u8,
            bytes,
        }
    }

    /// The record's bytes, prefix included.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The record read with `schema` (`None` if the schema does not lay it out).
    pub fn view<'a>(&'a self, schema: &'a Schema) -> Option<RecordView<'a>> {
        schema.record(self.bytes()).ok()
    }

    /// The record as text, read with `schema`: its kind's name, then `name=value` for
    /// each field in game units (what `replay inspect` and `verify` print).
    pub fn describe(&self, schema: &Schema) -> String {
        match self.view(schema) {
            Some(view) => {
                let fields: Vec<String> = view
                    .kind()
                    .fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| format!("{}={}", f.name, view.value(i)))
                    .collect();
                format!("{} {}", view.kind().name, fields.join(" "))
            }
            None => format!("kind {} ({} bytes)", self.kind, self.len),
        }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("net_id", &self.net_id)
            .field("kind", &self.kind)
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// The records of a chunk body: see [`Schema::records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    schema: &'a Schema,
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, SchemaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let fail = |this: &mut Self, error| {
            this.failed = true;
            Some(Err(error))
        };
        if self.rest.len() < RECORD_PREFIX_LEN {
            let len = self.rest.len();
            return fail(
                self,
                SchemaError::ShortRecord {
                    what: "record",
                    len,
                    need: RECORD_PREFIX_LEN,
                },
            );
        }
        let kind_byte = self.rest[4];
        let index = usize::from(self.schema.by_kind[usize::from(kind_byte)]);
        let (Some(kind), Some(layout)) =
            (self.schema.kinds.get(index), self.schema.layouts.get(index))
        else {
            return fail(self, SchemaError::UnknownKind(kind_byte));
        };
        if self.rest.len() < layout.len {
            let len = self.rest.len();
            return fail(
                self,
                SchemaError::ShortRecord {
                    what: "record",
                    len,
                    need: layout.len,
                },
            );
        }
        let (bytes, rest) = self.rest.split_at(layout.len);
        self.rest = rest;
        Some(Ok(RecordView {
            kind,
            layout,
            bytes,
        }))
    }
}

fn check_name(what: &str, name: &str, allow_dash: bool) -> Result<(), SchemaError> {
    let allowed = |b: u8| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (allow_dash && b == b'-')
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(allowed) {
        return Err(SchemaError::Invalid(format!(
            "{what} name {name:?} must be 1-{MAX_NAME_LEN} bytes of [a-z0-9_{}]",
            if allow_dash { "-" } else { "" }
        )));
    }
    Ok(())
}

fn check_names(what: &str, names: &[String]) -> Result<(), String> {
    for (i, name) in names.iter().enumerate() {
        check_name(what, name, false).map_err(|e| e.to_string())?;
        if names[..i].contains(name) {
            return Err(format!("{what} name {name:?} appears twice"));
        }
    }
    Ok(())
}

fn check_bits(ty: FieldType, is_flags: bool, bits: &[String]) -> Result<(), String> {
    if !is_flags {
        return match bits.is_empty() {
            true => Ok(()),
            false => Err("only flags and buttons have bit names".into()),
        };
    }
    if !ty.is_unsigned() || bits.len() > ty.width() * 8 {
        return Err(format!(
            "flags must be unsigned with at most one name per bit ({} names for {} bits)",
            bits.len(),
            ty.width() * 8
        ));
    }
    check_names("bit", bits)
}

fn kind_layout(kind: &EntityKind) -> Result<KindLayout, String> {
    if kind.fields.len() > MAX_FIELDS {
        return Err(format!(
            "{} fields (at most {MAX_FIELDS})",
            kind.fields.len()
        ));
    }
    let names: Vec<String> = kind.fields.iter().map(|f| f.name.clone()).collect();
    check_names("field", &names)?;
    let mut offsets = Vec::with_capacity(kind.fields.len());
    let mut len = RECORD_PREFIX_LEN;
    let (mut x, mut y) = (None, None);
    for (i, field) in kind.fields.iter().enumerate() {
        if field.scale == 0 {
            return Err(format!(
                "field {}: the scale must be at least 1",
                field.name
            ));
        }
        check_bits(field.ty, field.role == FieldRole::Flags, &field.bits)
            .map_err(|e| format!("field {}: {e}", field.name))?;
        let slot = match field.role {
            FieldRole::PositionX => Some(&mut x),
            FieldRole::PositionY => Some(&mut y),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_some() || !field.ty.is_unsigned() {
                return Err(format!(
                    "field {}: one unsigned position_x and one position_y per kind",
                    field.name
                ));
            }
            *slot = Some(i);
        }
        offsets.push(len);
        len += field.ty.width();
    }
    let (Some(x), Some(y)) = (x, y) else {
        return Err("a kind needs a position_x and a position_y field".into());
    };
    if len > MAX_RECORD_LEN {
        return Err(format!(
            "a record of {len} bytes (at most {MAX_RECORD_LEN})"
        ));
    }
    Ok(KindLayout {
        offsets,
        len,
        position: (x, y),
    })
}

fn input_layout(input: &[InputField]) -> Result<(Vec<usize>, usize), String> {
    if input.len() > MAX_FIELDS {
        return Err(format!("{} fields (at most {MAX_FIELDS})", input.len()));
    }
    let names: Vec<String> = input.iter().map(|f| f.name.clone()).collect();
    check_names("input field", &names)?;
    let mut offsets = Vec::with_capacity(input.len());
    let mut len = INPUT_PREFIX_LEN;
    for (i, field) in input.iter().enumerate() {
        let within = |v: i32| (field.ty.min()..=field.ty.max()).contains(&i64::from(v));
        if field.min > field.max || !within(field.min) || !within(field.max) {
            return Err(format!(
                "field {}: the range {}..={} must be ordered and fit its type",
                field.name, field.min, field.max
            ));
        }
        if field.role != InputRole::Plain && input[..i].iter().any(|f| f.role == field.role) {
            return Err(format!("field {}: its role is taken", field.name));
        }
        check_bits(field.ty, field.role == InputRole::Buttons, &field.bits)
            .map_err(|e| format!("field {}: {e}", field.name))?;
        offsets.push(len);
        len += field.ty.width();
    }
    if len > MAX_INPUT_LEN {
        return Err(format!("an input of {len} bytes (at most {MAX_INPUT_LEN})"));
    }
    Ok((offsets, len))
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names are checked to be at most MAX_NAME_LEN bytes before a schema exists.
    out.push(name.len().min(MAX_NAME_LEN) as u8);
    out.extend_from_slice(&name.as_bytes()[..name.len().min(MAX_NAME_LEN)]);
}

fn put_names(out: &mut Vec<u8>, names: &[String]) {
    out.push(names.len() as u8);
    for name in names {
        put_name(out, name);
    }
}

/// A cursor over schema bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SchemaError> {
        if self.bytes.len() < n {
            return Err(SchemaError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SchemaError> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SchemaError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn name(&mut self, what: &'static str) -> Result<String, SchemaError> {
        let len = usize::from(self.u8(what)?);
        if len > MAX_NAME_LEN {
            return Err(SchemaError::Invalid(format!(
                "{what} of {len} bytes (at most {MAX_NAME_LEN})"
            )));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| SchemaError::Invalid(format!("{what} is not UTF-8")))
    }

    fn names(&mut self, what: &'static str) -> Result<Vec<String>, SchemaError> {
        let count = usize::from(self.u8(what)?);
        if count > 32 {
            return Err(SchemaError::Invalid(format!("{count} {what} (at most 32)")));
        }
        (0..count).map(|_| self.name(what)).collect()
    }

    fn field_type(&mut self) -> Result<FieldType, SchemaError> {
        let code = self.u8("a field type")?;
        FieldType::from_code(code).ok_or(SchemaError::UnknownType(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind(kind: u8, name: &str, fields: Vec<Field>) -> EntityKind {
        EntityKind {
            kind,
            name: name.into(),
            glyph: b'@',
            fields,
        }
    }

    fn position() -> Vec<Field> {
        vec![
            Field::new("x", FieldType::U16)
                .role(FieldRole::PositionX)
                .scale(64),
            Field::new("y", FieldType::U16)
                .role(FieldRole::PositionY)
                .scale(64),
        ]
    }

    fn sample() -> Schema {
        let mut crate_fields = position();
        crate_fields.push(Field::new("state", FieldType::U8).flags(&["open", "gold"]));
        crate_fields.push(Field::new("drift", FieldType::I16));
        Schema::new(
            "sample-game",
            3,
            vec![
                kind(1, "runner", position()),
                kind(9, "crate", crate_fields),
            ],
            vec![
                InputField::new("dx", FieldType::I8, -127, 127).role(InputRole::MoveX),
                InputField::new("aim", FieldType::U16, 0, 65_535).role(InputRole::Aim),
                InputField::new("buttons", FieldType::U8, 0, 3).buttons(&["jump", "use"]),
                InputField::new("power", FieldType::I32, -1000, 1000),
            ],
        )
        .expect("the sample schema is valid")
    }

    #[test]
    fn a_schema_round_trips_through_its_bytes() {
        let schema = sample();
        let bytes = schema.encode();
        assert_eq!(&bytes[..5], b"TCSC\x01");
        assert_eq!(Schema::decode(&bytes), Ok(schema));
    }

    #[test]
    fn records_of_two_kinds_are_read_by_their_own_layouts() {
        let schema = sample();
        assert_eq!(schema.record_len(1), Some(9));
        assert_eq!(schema.record_len(9), Some(12));
        assert_eq!(schema.record_len(2), None);
        let mut body = Vec::new();
        body.extend_from_slice(&7u32.to_le_bytes());
        body.push(1);
        body.extend_from_slice(&(64u16 * 10).to_le_bytes());
        body.extend_from_slice(&32u16.to_le_bytes());
        body.extend_from_slice(&8u32.to_le_bytes());
        body.push(9);
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&u16::MAX.to_le_bytes());
        body.push(0b10);
        body.extend_from_slice(&(-300i16).to_le_bytes());
        let records: Vec<RecordView> = schema.records(&body).map(|r| r.unwrap()).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[0].net_id(), records[0].kind().name.as_str()),
            (7, "runner")
        );
        assert_eq!(records[0].position(), (10.0, 0.5));
        assert_eq!(records[1].net_id(), 8);
        assert_eq!(records[1].position(), (0.0, 65_535.0 / 64.0));
        assert_eq!(records[1].raw(2), 0b10);
        assert_eq!(records[1].value_of("drift"), Some(-300.0));
        assert_eq!(records[1].value_of("nope"), None);
    }

    #[test]
    fn an_unknown_kind_or_a_cut_record_ends_the_walk_with_its_reason() {
        let schema = sample();
        let mut body = vec![1, 0, 0, 0, 5];
        assert_eq!(
            schema.records(&body).map(|r| r.err()).collect::<Vec<_>>(),
            [Some(SchemaError::UnknownKind(5))]
        );
        body[4] = 1;
        body.push(0);
        assert_eq!(
            schema.records(&body).next().and_then(Result::err),
            Some(SchemaError::ShortRecord {
                what: "record",
                len: 6,
                need: 9
            })
        );
    }

    #[test]
    fn inputs_are_clamped_into_their_ranges_both_ways_and_the_clamps_counted() {
        let schema = sample();
        assert_eq!(schema.input_len(), 4 + 1 + 2 + 1 + 4);
        let mut out = [0u8; MAX_RECORD_LEN];
        let written = schema.write_input(41, &[-128, 70_000, 3, 5000], &mut out);
        assert_eq!(written, Ok((12, 3)));
        let mut values = [0i64; MAX_FIELDS];
        assert_eq!(schema.read_input(&out, &mut values), Ok((41, 0)));
        assert_eq!(&values[..4], &[-127, 65_535, 3, 1000]);
        // A peer that writes outside the range is clamped on the way in, and counted.
        out[4] = 0x80; // dx = -128
        out[7] = 0xFF; // buttons = 255, declared 0..=3
        assert_eq!(schema.read_input(&out, &mut values), Ok((41, 2)));
        assert_eq!((values[0], values[2]), (-127, 3));
        assert_eq!(
            schema.write_input(1, &[0], &mut out),
            Err(SchemaError::InputArity {
                expected: 4,
                given: 1
            })
        );
    }

    #[test]
    fn broken_schemas_are_refused_with_the_rule_they_break() {
        let refused = |kinds: Vec<EntityKind>, input: Vec<InputField>| match Schema::new(
            "g", 1, kinds, input,
        ) {
            Err(SchemaError::Invalid(text)) => text,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(refused(vec![], vec![]).contains("kinds"));
        assert!(refused(vec![kind(1, "a", vec![])], vec![]).contains("position_x"));
        assert!(refused(vec![kind(0, "a", position())], vec![]).contains("1-255"));
        assert!(
            refused(
                vec![kind(1, "a", position()), kind(1, "b", position())],
                vec![]
            )
            .contains("unique")
        );
        let mut signed = position();
        signed[0].ty = FieldType::I16;
        assert!(refused(vec![kind(1, "a", signed)], vec![]).contains("unsigned"));
        assert!(refused(vec![kind(1, "Bad", position())], vec![]).contains("[a-z0-9_]"));
        let wide = InputField::new("v", FieldType::I8, -200, 0);
        assert!(refused(vec![kind(1, "a", position())], vec![wide]).contains("fit its type"));
        let two_moves = vec![
            InputField::new("a", FieldType::I8, -1, 1).role(InputRole::MoveX),
            InputField::new("b", FieldType::I8, -1, 1).role(InputRole::MoveX),
        ];
        assert!(refused(vec![kind(1, "a", position())], two_moves).contains("role is taken"));
        let mut big = position();
        big.extend((0..14).map(|i| Field::new(&format!("f{i}"), FieldType::U32)));
        assert!(refused(vec![kind(1, "a", big)], vec![]).contains("at most 64"));
        // An input command is bounded tighter than a record: 4 + 7 × 4 bytes fit, a
        // field more does not.
        let input = |n: usize| -> Vec<InputField> {
            (0..n)
                .map(|i| InputField::new(&format!("v{i}"), FieldType::I32, -1, 1))
                .collect()
        };
        let fits = Schema::new("g", 1, vec![kind(1, "a", position())], input(7)).unwrap();
        assert_eq!(fits.input_len(), MAX_INPUT_LEN);
        assert!(refused(vec![kind(1, "a", position())], input(8)).contains("at most 32"));
    }

    #[test]
    fn decoding_names_what_is_wrong_with_the_bytes() {
        let bytes = sample().encode();
        assert_eq!(Schema::decode(b"TCSX"), Err(SchemaError::BadMagic));
        let mut future = bytes.clone();
        future[4] = 2;
        assert_eq!(
            Schema::decode(&future),
            Err(SchemaError::UnsupportedFormat(2))
        );
        assert!(matches!(
            Schema::decode(&bytes[..bytes.len() - 1]),
            Err(SchemaError::Truncated(_))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Schema::decode(&long), Err(SchemaError::TrailingBytes(1)));
        assert_eq!(
            Schema::decode(&vec![0; MAX_SCHEMA_LEN + 1]),
            Err(SchemaError::TooLong(MAX_SCHEMA_LEN + 1))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_what_decodes_re_encodes_to_itself(
            bytes in proptest::collection::vec(any::<u8>(), 0..1100)
        ) {
            if let Ok(schema) = Schema::decode(&bytes) {
                prop_assert_eq!(schema.encode(), bytes);
            }
        }

        #[test]
        fn a_mutated_schema_never_panics_and_what_decodes_re_encodes_to_itself(
            at in 0usize..200, value in any::<u8>(), cut in 0usize..8
        ) {
            let mut bytes = sample().encode();
            let at = at % bytes.len();
            bytes[at] = value;
            bytes.truncate(bytes.len() - cut.min(bytes.len()));
            if let Ok(schema) = Schema::decode(&bytes) {
                prop_assert_eq!(schema.encode(), bytes);
            }
        }

        #[test]
        fn arbitrary_record_bodies_are_walked_without_panic_and_within_their_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let schema = sample();
            let mut used = 0;
            for record in schema.records(&body) {
                match record {
                    Ok(view) => {
                        used += view.bytes().len();
                        let _ = (view.position(), view.raw(99), view.value(3));
                    }
                    Err(_) => break,
                }
            }
            prop_assert!(used <= body.len());
        }

        #[test]
        fn written_inputs_read_back_within_their_ranges(
            seq in any::<u32>(), values in proptest::array::uniform4(any::<i64>())
        ) {
            let schema = sample();
            let mut out = [0u8; MAX_INPUT_LEN];
            let (len, _) = schema.write_input(seq, &values, &mut out).unwrap();
            let mut read = [0i64; MAX_FIELDS];
            let (back, clamped) = schema.read_input(&out[..len], &mut read).unwrap();
            prop_assert_eq!((back, clamped), (seq, 0));
            for (field, value) in schema.input().iter().zip(read) {
                prop_assert!((i64::from(field.min)..=i64::from(field.max)).contains(&value));
            }
        }
    }
}
