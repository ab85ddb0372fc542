//! What the viewer draws, as a pure function of a [`ViewModel`]: testable with
//! ratatui's `TestBackend`, no terminal or network involved.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use tickcast_shared::Tick;
use tickcast_shared::chunk::{
    EntityRecord, KIND_NPC, KIND_PLAYER, KIND_PROJECTILE, POSITION_SCALE,
};

/// The glyph of the player this viewer controls.
pub const GLYPH_SELF: char = '@';
/// The glyph of another player.
pub const GLYPH_PLAYER: char = 'P';
/// The glyph of an NPC.
pub const GLYPH_NPC: char = 'n';
/// The glyph of a projectile.
pub const GLYPH_PROJECTILE: char = '*';

/// Everything one frame shows.
#[derive(Debug, Clone, Default)]
pub struct ViewModel {
    /// Arena width and height in world units (from the Welcome).
    pub arena: (u16, u16),
    /// The `net_id` this viewer controls.
    pub own: Option<u32>,
    /// Entities to draw.
    pub entities: Vec<EntityRecord>,
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

/// The screen cell of a world position (1/64 units) inside `area`, clamped to it.
pub fn cell_of(x: u16, y: u16, arena: (u16, u16), area: Rect) -> Option<(u16, u16)> {
    if area.width == 0 || area.height == 0 {
        return None;
    }
    let scale = |v: u16, extent: u16, cells: u16| -> u16 {
        let world = u64::from(extent.max(1)) * u64::from(POSITION_SCALE);
        ((u64::from(v) * u64::from(cells)) / world).min(u64::from(cells) - 1) as u16
    };
    Some((
        area.x + scale(x, arena.0, area.width),
        area.y + scale(y, arena.1, area.height),
    ))
}

fn glyph(record: &EntityRecord, own: Option<u32>) -> Option<(char, Style, u8)> {
    // The last number orders drawing: a higher one wins a shared cell.
    if Some(record.net_id) == own {
        return Some((
            GLYPH_SELF,
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            3,
        ));
    }
    match record.kind {
        KIND_PLAYER => Some((GLYPH_PLAYER, Style::new().fg(Color::Cyan), 2)),
        KIND_PROJECTILE => Some((GLYPH_PROJECTILE, Style::new().fg(Color::Red), 1)),
        KIND_NPC => Some((GLYPH_NPC, Style::new().fg(Color::Green), 0)),
        _ => None,
    }
}

fn figure(value: Option<f64>, digits: usize, unit: &str) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.digits$}{unit}"))
}

/// The status line's text.
pub fn status_line(model: &ViewModel) -> String {
    let count = |kind| model.entities.iter().filter(|r| r.kind == kind).count();
    let me = model
        .own
        .and_then(|id| model.entities.iter().find(|r| r.net_id == id));
    let you = me.map_or(String::new(), |r| {
        format!(" · you: hp {} score {}", r.health, r.aux)
    });
    format!(
        "tick {} · delivery {} · rtt {} · age {}{you} · players {} npcs {} projectiles {}",
        model.tick.map_or("-".to_string(), |t| t.to_string()),
        figure(model.delivery, 3, ""),
        figure(model.rtt_ms, 1, " ms"),
        figure(model.age_ms, 0, " ms"),
        count(KIND_PLAYER),
        count(KIND_NPC),
        count(KIND_PROJECTILE),
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
    let mut drawn: Vec<(&EntityRecord, char, Style, u8)> = model
        .entities
        .iter()
        .filter_map(|r| glyph(r, model.own).map(|(c, s, rank)| (r, c, s, rank)))
        .collect();
    drawn.sort_by_key(|(r, _, _, rank)| (*rank, r.net_id));
    let buffer = frame.buffer_mut();
    for (record, c, style, _) in drawn {
        if let Some(position) = cell_of(record.x, record.y, model.arena, inner)
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

    fn entity(net_id: u32, kind: u8, x_units: u16, y_units: u16) -> EntityRecord {
        EntityRecord {
            net_id,
            kind,
            health: 100,
            x: x_units * 64,
            y: y_units * 64,
            angle: 0,
            aux: 4,
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
        assert_eq!(cell_of(u16::MAX, u16::MAX, (100, 100), area), Some((10, 6)));
        assert_eq!(cell_of(0, 0, (0, 0), area), Some((1, 2)));
        assert_eq!(cell_of(0, 0, (10, 10), Rect::new(0, 0, 0, 5)), None);
        let model = ViewModel {
            arena: (10, 10),
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
            "tick - · delivery - · rtt - · age - · you: hp 100 score 4 · players 1 npcs 2 projectiles 0"
        );
    }
}
