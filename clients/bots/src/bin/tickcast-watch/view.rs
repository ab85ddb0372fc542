//! What the viewer draws, as a pure function of a [`ViewModel`]: testable with
//! ratatui's `TestBackend`, no terminal or network involved. It knows no game: each
//! kind is drawn with the glyph the game's schema suggests, at the position its
//! schema's position fields give.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use tickcast_shared::Tick;
use tickcast_shared::schema::{FieldRole, Record, Schema};

/// The glyph of the entity this viewer controls.
pub const GLYPH_SELF: char = '@';

/// Colours of the kinds, in the schema's kind order.
const PALETTE: [Color; 6] = [
    Color::Cyan,
    Color::Green,
    Color::Red,
    Color::Magenta,
    Color::Blue,
    Color::White,
];

/// How a kind is drawn and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindStyle {
    /// The kind's name in the schema.
    pub name: String,
    /// The glyph the schema suggests.
    pub glyph: char,
}

/// One entity to draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drawn {
    /// Its net id.
    pub net_id: u32,
    /// Its kind's index in [`ViewModel::kinds`] (the schema's order).
    pub kind: usize,
    /// Its position in world units.
    pub position: (f64, f64),
    /// Its health-role field, if its kind has one.
    pub health: Option<f64>,
}

impl Drawn {
    /// An entity of the game of `schema`, read from its record (`None` if the schema
    /// does not lay it out).
    pub fn of(record: &Record, schema: &Schema) -> Option<Self> {
        let view = record.view(schema)?;
        let kind = schema.kinds().iter().position(|k| k.kind == record.kind)?;
        let health = view
            .kind()
            .fields
            .iter()
            .position(|f| f.role == FieldRole::Health)
            .map(|i| view.value(i));
        Some(Self {
            net_id: record.net_id,
            kind,
            position: view.position(),
            health,
        })
    }
}

/// The kinds of `schema`, as the view model lists them.
pub fn kind_styles(schema: &Schema) -> Vec<KindStyle> {
    schema
        .kinds()
        .iter()
        .map(|k| KindStyle {
            name: k.name.clone(),
            glyph: char::from(k.glyph),
        })
        .collect()
}

/// Everything one frame shows.
#[derive(Debug, Clone, Default)]
pub struct ViewModel {
    /// Arena width and height in world units (from the Welcome).
    pub arena: (u16, u16),
    /// The `net_id` this viewer controls.
    pub own: Option<u32>,
    /// The game's kinds (from its schema).
    pub kinds: Vec<KindStyle>,
    /// Entities to draw.
    pub entities: Vec<Drawn>,
    /// The newest complete tick.
    pub tick: Option<Tick>,
    /// Complete ÷ expected ticks so far.
    pub delivery: Option<f64>,
    /// QUIC RTT in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Age of the newest complete snapshot in milliseconds.
    pub age_ms: Option<f64>,
    /// Connection state, or why it ended.
    pub status: String,
}

/// The screen cell of a world position (world units) inside `area`, clamped to it.
pub fn cell_of(x: f64, y: f64, arena: (u16, u16), area: Rect) -> Option<(u16, u16)> {
    if area.width == 0 || area.height == 0 {
        return None;
    }
    let scale = |v: f64, extent: u16, cells: u16| -> u16 {
        let at = (v.max(0.0) * f64::from(cells) / f64::from(extent.max(1))).floor();
        (at as u64).min(u64::from(cells) - 1) as u16
    };
    Some((
        area.x + scale(x, arena.0, area.width),
        area.y + scale(y, arena.1, area.height),
    ))
}

fn glyph(entity: &Drawn, model: &ViewModel) -> Option<(char, Style, usize)> {
    // The last number orders drawing: a higher one wins a shared cell — the own entity
    // first, then later kinds over earlier ones.
    if Some(entity.net_id) == model.own {
        return Some((
            GLYPH_SELF,
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            usize::MAX,
        ));
    }
    let style = model.kinds.get(entity.kind)?;
    let colour = PALETTE[entity.kind % PALETTE.len()];
    Some((style.glyph, Style::new().fg(colour), entity.kind))
}

fn figure(value: Option<f64>, digits: usize, unit: &str) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.digits$}{unit}"))
}

/// The status line's text.
pub fn status_line(model: &ViewModel) -> String {
    let me = model
        .own
        .and_then(|id| model.entities.iter().find(|r| r.net_id == id));
    let you = me
        .and_then(|r| r.health)
        .map_or(String::new(), |hp| format!(" · you: hp {hp}"));
    let mut counts = String::new();
    for (index, kind) in model.kinds.iter().enumerate() {
        let count = model.entities.iter().filter(|r| r.kind == index).count();
        counts.push_str(&format!(" {} {count}", kind.name));
    }
    format!(
        "tick {} · delivery {} · rtt {} · age {}{you} ·{counts}",
        model.tick.map_or("-".to_string(), |t| t.to_string()),
        figure(model.delivery, 3, ""),
        figure(model.rtt_ms, 1, " ms"),
        figure(model.age_ms, 0, " ms"),
    )
}

/// Help shown under the arena.
pub const HELP: &str = "arrows walk · space fire (toward your walk) · s stop · q quit";

/// Draws one frame: a status line, the arena in a border titled with the connection
/// state, a help line.
pub fn draw(frame: &mut Frame, model: &ViewModel) {
    let [status, arena, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(Line::raw(status_line(model))), status);
    frame.render_widget(
        Paragraph::new(Line::raw(HELP)).style(Style::new().fg(Color::DarkGray)),
        help,
    );
    let block = Block::bordered().title(format!(
        " arena {}×{} · {} ",
        model.arena.0, model.arena.1, model.status
    ));
    let inner = block.inner(arena);
    frame.render_widget(block, arena);
    let mut drawn: Vec<(&Drawn, char, Style, usize)> = model
        .entities
        .iter()
        .filter_map(|r| glyph(r, model).map(|(c, s, rank)| (r, c, s, rank)))
        .collect();
    drawn.sort_by_key(|(r, _, _, rank)| (*rank, r.net_id));
    let buffer = frame.buffer_mut();
    for (entity, c, style, _) in drawn {
        let (x, y) = entity.position;
        if let Some(position) = cell_of(x, y, model.arena, inner)
            && let Some(cell) = buffer.cell_mut(position)
        {
            cell.set_char(c).set_style(style);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    const KIND_PLAYER: usize = 0;
    const KIND_NPC: usize = 1;
    const KIND_PROJECTILE: usize = 2;

    fn kinds() -> Vec<KindStyle> {
        [("player", 'P'), ("npc", 'n'), ("projectile", '*')]
            .map(|(name, glyph)| KindStyle {
                name: name.into(),
                glyph,
            })
            .to_vec()
    }

    fn entity(net_id: u32, kind: usize, x_units: u16, y_units: u16) -> Drawn {
        Drawn {
            net_id,
            kind,
            position: (f64::from(x_units), f64::from(y_units)),
            health: Some(100.0),
        }
    }

    fn render(model: &ViewModel, width: u16, height: u16) -> ratatui::buffer::Buffer {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, model)).unwrap();
        terminal.backend().buffer().clone()
    }

    fn symbol(buffer: &ratatui::buffer::Buffer, x: u16, y: u16) -> &str {
        buffer[(x, y)].symbol()
    }

    fn row(buffer: &ratatui::buffer::Buffer, y: u16) -> String {
        (0..buffer.area.width)
            .map(|x| symbol(buffer, x, y))
            .collect()
    }

    #[test]
    fn entities_are_drawn_where_they_are_in_the_arena() {
        // A 100 × 50 arena in a 52 × 29 terminal: the arena's inner area is 50 × 25
        // cells starting at (1, 2), so one cell is 2 world units on each axis.
        let model = ViewModel {
            arena: (100, 50),
            own: Some(7),
            kinds: kinds(),
            entities: vec![
                entity(7, KIND_PLAYER, 0, 0),
                entity(8, KIND_PLAYER, 99, 49),
                entity(20, KIND_NPC, 50, 24),
                entity(30, KIND_PROJECTILE, 10, 40),
            ],
            tick: Some(Tick::new(1234)),
            delivery: Some(0.998),
            rtt_ms: Some(0.42),
            age_ms: Some(3.0),
            status: "connected".into(),
        };
        let buffer = render(&model, 52, 29);
        assert_eq!(symbol(&buffer, 1, 2), "@");
        assert_eq!(buffer[(1, 2)].fg, Color::Yellow);
        assert_eq!(symbol(&buffer, 50, 26), "P");
        assert_eq!(symbol(&buffer, 1 + 25, 2 + 12), "n");
        assert_eq!(symbol(&buffer, 1 + 5, 2 + 20), "*");
        // Nothing else in the arena.
        let glyphs = (2..27)
            .flat_map(|y| (1..51).map(move |x| (x, y)))
            .filter(|(x, y)| symbol(&buffer, *x, *y) != " ")
            .count();
        assert_eq!(glyphs, 4);
        // The border, status and help.
        assert_eq!(symbol(&buffer, 0, 1), "┌");
        assert!(row(&buffer, 1).contains("arena 100×50 · connected"));
        let status = row(&buffer, 0);
        assert!(
            status.starts_with("tick 1234 · delivery 0.998 · rtt 0.4 ms"),
            "{status}"
        );
        assert!(row(&buffer, 28).starts_with("arrows walk"));
    }

    #[test]
    fn the_own_player_wins_a_shared_cell_and_npcs_lose_it() {
        let model = ViewModel {
            arena: (10, 10),
            own: Some(1),
            kinds: kinds(),
            entities: vec![
                entity(5, KIND_NPC, 5, 5),
                entity(1, KIND_PLAYER, 5, 5),
                entity(6, KIND_PROJECTILE, 2, 2),
                entity(7, KIND_NPC, 2, 2),
            ],
            ..ViewModel::default()
        };
        let buffer = render(&model, 12, 14);
        // Inner area 10 × 10 at (1, 2): one cell per world unit.
        assert_eq!(symbol(&buffer, 6, 7), "@");
        assert_eq!(symbol(&buffer, 3, 4), "*");
    }

    #[test]
    fn positions_at_the_far_edge_stay_inside_and_a_tiny_terminal_does_not_panic() {
        let area = Rect::new(1, 2, 10, 5);
        assert_eq!(cell_of(1e9, 1e9, (100, 100), area), Some((10, 6)));
        assert_eq!(cell_of(-5.0, 0.0, (0, 0), area), Some((1, 2)));
        assert_eq!(cell_of(0.0, 0.0, (10, 10), Rect::new(0, 0, 0, 5)), None);
        let model = ViewModel {
            arena: (10, 10),
            kinds: kinds(),
            entities: vec![entity(1, KIND_NPC, 3, 3)],
            ..ViewModel::default()
        };
        for (w, h) in [(1, 1), (2, 3), (5, 4), (0, 0)] {
            render(&model, w, h);
        }
    }

    #[test]
    fn the_status_line_counts_kinds_and_shows_the_own_player() {
        let model = ViewModel {
            own: Some(1),
            kinds: kinds(),
            entities: vec![
                entity(1, KIND_PLAYER, 0, 0),
                entity(2, KIND_NPC, 0, 0),
                entity(3, KIND_NPC, 0, 0),
            ],
            status: "connected".into(),
            ..ViewModel::default()
        };
        assert_eq!(
            status_line(&model),
            "tick - · delivery - · rtt - · age - · you: hp 100 · player 1 npc 2 projectile 0"
        );
    }
}
