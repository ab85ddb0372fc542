//! [`InputHistory`]: what a client sends each tick — its newest input and the few before
//! it, so one lost datagram costs nothing when the next arrives. [`Intent`] and
//! [`InputMapper`]: how a client that knows no game's code (the bots) turns "go this
//! way" into any game's input command through the input schema's roles ([`ByRoles`]),
//! and the hook a game implements for smarter behaviour.

use tickcast_shared::Tick;
use tickcast_shared::msg::{INPUT_CMD_LEN, InputCmd, InputDatagram, MAX_INPUTS_PER_DATAGRAM};
use tickcast_shared::schema::{
    INPUT_PREFIX_LEN, InputRole, MAX_FIELDS, MAX_INPUT_LEN, Schema, SchemaError,
};

/// What a generic client wants to do this tick, in no game's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Intent {
    /// Movement along x, -127 (left) to 127 (right).
    pub move_x: i8,
    /// Movement along y, -127 (up) to 127 (down).
    pub move_y: i8,
    /// Buttons held, one bit each, lowest first as the schema names them.
    pub buttons: u32,
}

/// Turns an [`Intent`] into the values of a game's input fields (one per field of
/// `schema.input()`, in order; the schema clamps each into its range). The bots use
/// [`ByRoles`]; a game that wants smarter bots implements this.
pub trait InputMapper: std::fmt::Debug + Send {
    /// Fills `values` (as many as the input has fields) for `intent`.
    fn values(&mut self, schema: &Schema, intent: Intent, values: &mut [i64]);
}

/// Drives any game through its input schema's roles: `move_x`/`move_y` get the intent's
/// movement scaled onto their ranges, `aim` the heading of that movement, `buttons` the
/// intent's buttons; a field with no role gets 0 clamped into its range.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByRoles;

impl InputMapper for ByRoles {
    fn values(&mut self, schema: &Schema, intent: Intent, values: &mut [i64]) {
        for (field, value) in schema.input().iter().zip(values.iter_mut()) {
            let (min, max) = (i64::from(field.min), i64::from(field.max));
            // -127..=127 onto min..=max, 0 onto the middle.
            let scaled = |v: i8| min + (i64::from(v) + 127) * (max - min) / 254;
            *value = match field.role {
                InputRole::MoveX => scaled(intent.move_x),
                InputRole::MoveY => scaled(intent.move_y),
                InputRole::Aim => {
                    let turn = 1i64 << (8 * field.ty.width()).min(32);
                    // y grows downward on screen; the aim is counter-clockwise from +x.
                    let radians = f64::from(-intent.move_y).atan2(f64::from(intent.move_x));
                    let steps = (radians / std::f64::consts::TAU * turn as f64).round() as i64;
                    steps.rem_euclid(turn)
                }
                InputRole::Buttons => i64::from(intent.buttons),
                InputRole::Plain => 0,
            }
            .clamp(min, max);
        }
    }
}

/// The last few input commands (any game's: bytes laid out by its schema), so each
/// datagram carries them all and one lost datagram costs nothing when the next arrives.
#[derive(Debug, Clone)]
pub struct InputHistory {
    recent: [[u8; MAX_INPUT_LEN]; MAX_INPUTS_PER_DATAGRAM],
    cmd_len: usize,
    len: usize,
    next_seq: u32,
}

impl Default for InputHistory {
    /// A history of the arena's 9-byte commands; the first command of another length
    /// starts it over at that length.
    fn default() -> Self {
        Self {
            recent: [[0; MAX_INPUT_LEN]; MAX_INPUTS_PER_DATAGRAM],
            cmd_len: INPUT_CMD_LEN,
            len: 0,
            next_seq: 0,
        }
    }
}

impl InputHistory {
    /// Records a new arena input (its sequence number is assigned here) and returns the
    /// datagram to send, acknowledging `ack_tick`.
    pub fn push(&mut self, cmd: InputCmd, ack_tick: Tick) -> InputDatagram {
        self.push_raw(&cmd.to_bytes(), ack_tick)
    }

    /// Records a new input of any game from its `values` (one per input field of
    /// `schema`, clamped into their ranges) and returns the datagram to send.
    pub fn push_values(
        &mut self,
        schema: &Schema,
        values: &[i64],
        ack_tick: Tick,
    ) -> Result<InputDatagram, SchemaError> {
        let mut command = [0u8; MAX_INPUT_LEN];
        let (len, _) = schema.write_input(0, values, &mut command)?;
        Ok(self.push_raw(&command[..len], ack_tick))
    }

    /// Records the command `mapper` makes of `intent` for the game of `schema`, and
    /// returns the datagram to send.
    pub fn push_intent(
        &mut self,
        schema: &Schema,
        mapper: &mut dyn InputMapper,
        intent: Intent,
        ack_tick: Tick,
    ) -> InputDatagram {
        let mut values = [0i64; MAX_FIELDS];
        let fields = schema.input().len().min(MAX_FIELDS);
        mapper.values(schema, intent, &mut values[..fields]);
        // The values are as many as the input's fields, the buffer as long as any input.
        let mut command = [0u8; MAX_INPUT_LEN];
        let len = schema
            .write_input(0, &values[..fields], &mut command)
            .map_or(schema.input_len(), |(len, _)| len);
        self.push_raw(&command[..len], ack_tick)
    }

    /// Records a new input command given as its bytes (`[seq u32]` and the game's input
    /// fields; the `seq` is overwritten with the one assigned here) and returns the
    /// datagram to send. A command of another length than the last starts the history
    /// over (a client of a new game sends no command of the old one). A command shorter
    /// than its `seq` or longer than any schema allows is cut or padded into range.
    pub fn push_raw(&mut self, command: &[u8], ack_tick: Tick) -> InputDatagram {
        let cmd_len = command.len().clamp(INPUT_PREFIX_LEN, MAX_INPUT_LEN);
        if cmd_len != self.cmd_len {
            self.cmd_len = cmd_len;
            self.len = 0;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.recent.rotate_right(1);
        let newest = &mut self.recent[0];
        *newest = [0; MAX_INPUT_LEN];
        let copied = command.len().min(cmd_len);
        newest[..copied].copy_from_slice(&command[..copied]);
        newest[..INPUT_PREFIX_LEN].copy_from_slice(&seq.to_le_bytes());
        self.len = (self.len + 1).min(MAX_INPUTS_PER_DATAGRAM);
        let mut datagram = InputDatagram::new(ack_tick, cmd_len)
            .unwrap_or_else(|_| InputDatagram::single(InputCmd::default(), ack_tick));
        for command in &self.recent[..self.len] {
            // The length is the datagram's and at most four are pushed.
            let _ = datagram.push(&command[..cmd_len]);
        }
        datagram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_history_sends_the_newest_first_with_redundancy() {
        let mut history = InputHistory::default();
        let cmd = |move_x| InputCmd {
            move_x,
            ..Default::default()
        };
        let first = history.push(cmd(1), Tick::ZERO);
        assert_eq!(first.count(), 1);
        for x in 2..=6 {
            history.push(cmd(x), Tick::ZERO);
        }
        let last = history.push(cmd(7), Tick::new(42));
        let cmds: Vec<InputCmd> = last.arena_commands().map(Option::unwrap).collect();
        let seqs: Vec<u32> = cmds.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![6, 5, 4, 3]);
        assert_eq!(cmds[0].move_x, 7);
        assert_eq!(last.ack_tick(), Tick::new(42));
    }

    #[test]
    fn roles_drive_any_games_input() {
        use tickcast_shared::schema::{FieldType, InputField};
        let schema = Schema::new(
            "g",
            1,
            vec![tickcast_shared::schema::EntityKind {
                kind: 1,
                name: "a".into(),
                glyph: b'a',
                fields: vec![
                    tickcast_shared::schema::Field::new("x", FieldType::U16)
                        .role(tickcast_shared::schema::FieldRole::PositionX),
                    tickcast_shared::schema::Field::new("y", FieldType::U16)
                        .role(tickcast_shared::schema::FieldRole::PositionY),
                ],
            }],
            vec![
                InputField::new("power", FieldType::I16, -50, 50),
                InputField::new("dy", FieldType::U8, 0, 200).role(InputRole::MoveY),
                InputField::new("dx", FieldType::I8, -10, 10).role(InputRole::MoveX),
                InputField::new("aim", FieldType::U8, 0, 255).role(InputRole::Aim),
                InputField::new("act", FieldType::U8, 0, 3).buttons(&["jump", "use"]),
            ],
        )
        .unwrap();
        let mut values = [0i64; 5];
        let intent = Intent {
            move_x: 127,
            move_y: -127,
            buttons: 0b10,
        };
        ByRoles.values(&schema, intent, &mut values);
        // Right and up: dx at its max, dy at its min, aim 45° (32 of 256 steps).
        assert_eq!(values, [0, 0, 10, 32, 2]);
        ByRoles.values(&schema, Intent::default(), &mut values);
        assert_eq!(values, [0, 100, 0, 0, 0]);
        let mut history = InputHistory::default();
        let datagram = history.push_intent(&schema, &mut ByRoles, intent, Tick::ZERO);
        assert_eq!(datagram.cmd_len(), schema.input_len());
    }

    #[test]
    fn a_command_of_another_length_starts_the_history_over() {
        let mut history = InputHistory::default();
        history.push(InputCmd::default(), Tick::ZERO);
        let datagram = history.push_raw(&[0, 0, 0, 0, 1, 2, 3], Tick::ZERO);
        assert_eq!((datagram.count(), datagram.cmd_len()), (1, 7));
        let command = datagram.commands().next().unwrap();
        assert_eq!(command, [1, 0, 0, 0, 1, 2, 3]);
    }
}
