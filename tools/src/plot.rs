//! `tickcast-replay plot`: a PNG of tick time, bytes out per client and clients over
//! time ([`render`]); any series stacked in panels the same way ([`render_panels`], used
//! by `tickcast-chart`). Drawn into an RGB buffer with a built-in 5×7 pixel font, so it
//! needs no system fonts or libraries at run time.

use std::io::Write;

use tickcast_sim::record::{Recording, TickRecord};

/// Image width in pixels.
pub const WIDTH: usize = 960;
/// Height of one panel in pixels.
pub const PANEL_HEIGHT: usize = 200;
const MARGIN_LEFT: usize = 80;
const MARGIN_RIGHT: usize = 20;
const MARGIN_TOP: usize = 24;
const MARGIN_BOTTOM: usize = 24;

/// An RGB image.
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    /// The colour at (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Width and height.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn set(&mut self, x: usize, y: usize, colour: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.pixels[i..i + 3].copy_from_slice(&colour);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: [u8; 3]) {
        // Bresenham.
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            if x >= 0 && y >= 0 {
                self.set(x as usize, y as usize, colour);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, text: &str, colour: [u8; 3]) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        self.set(x + i * 6 + col, y + row, colour);
                    }
                }
            }
        }
    }

    /// Encodes the canvas as PNG.
    pub fn write_png(&self, out: impl Write) -> Result<(), png::EncodingError> {
        let mut encoder = png::Encoder::new(out, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)
    }
}

/// 5×7 glyphs, one byte per row, high bit of the low five = leftmost pixel. Unknown
/// characters draw as a small box.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_lowercase() {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        'a' => [0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e],
        'c' => [0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e],
        'd' => [0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f],
        'e' => [0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e],
        'f' => [0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08],
        'g' => [0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0c],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'm' => [0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e],
        'p' => [0x00, 0x00, 0x1e, 0x11, 0x1e, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0d, 0x13, 0x0f, 0x01, 0x01],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e],
        't' => [0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a],
        'x' => [0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0f, 0x01, 0x0e],
        'z' => [0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0c, 0x0c],
        ',' => [0, 0, 0, 0, 0x0c, 0x04, 0x08],
        ':' => [0, 0x0c, 0x0c, 0, 0x0c, 0x0c, 0],
        '-' => [0, 0, 0, 0x1f, 0, 0, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '_' => [0, 0, 0, 0, 0, 0, 0x1f],
        _ => [0x1f, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1f],
    }
}

/// One series to draw in a panel of its own: a title, a colour and (x, y) points in x
/// order.
#[derive(Debug, Clone)]
pub struct Series {
    /// Drawn above the panel.
    pub title: String,
    /// The line's colour.
    pub colour: [u8; 3],
    /// The points, in x order; consecutive points are joined.
    pub points: Vec<(f64, f64)>,
    /// The y axis starts at 0 (`true`) or at the smallest value (`false`: a flat series
    /// with small changes shows them, and the axis label says where it starts).
    pub from_zero: bool,
}

/// Colours for series in order, then repeating.
pub const PALETTE: [[u8; 3]; 4] = [[200, 40, 40], [40, 90, 200], [30, 150, 60], [150, 60, 170]];

/// Draws the three panels for `recording`.
pub fn render(recording: &Recording) -> Canvas {
    let ticks: Vec<_> = recording.ticks().collect();
    let series = |title: &str, colour, value: &dyn Fn(&TickRecord) -> f64| Series {
        title: title.to_owned(),
        colour,
        points: ticks
            .iter()
            .map(|t| (f64::from(t.tick.get()), value(t)))
            .collect(),
        from_zero: true,
    };
    render_panels(
        "tick",
        &[
            series("tick time (us)", PALETTE[0], &|t| f64::from(t.duration_us)),
            series("bytes out per client per tick", PALETTE[1], &|t| {
                t.bytes_out as f64 / f64::from(t.clients.max(1))
            }),
            series("clients", PALETTE[2], &|t| f64::from(t.clients)),
        ],
    )
}

/// Draws each series in a panel of its own, stacked, over a shared x axis labelled
/// `x_label` at both ends.
pub fn render_panels(x_label: &str, series: &[Series]) -> Canvas {
    let mut canvas = Canvas::new(WIDTH, PANEL_HEIGHT * series.len().max(1));
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let first = xs().fold(f64::INFINITY, f64::min);
    let first = if first.is_finite() { first } else { 0.0 };
    let last = xs().fold(first + 1.0, f64::max);
    for (index, s) in series.iter().enumerate() {
        draw_panel(&mut canvas, index * PANEL_HEIGHT, s, x_label, (first, last));
    }
    canvas
}

fn draw_panel(
    canvas: &mut Canvas,
    top: usize,
    series: &Series,
    x_label: &str,
    (first, last): (f64, f64),
) {
    let grey = [120, 120, 120];
    let (left, right) = (MARGIN_LEFT, WIDTH - MARGIN_RIGHT);
    let (plot_top, bottom) = (top + MARGIN_TOP, top + PANEL_HEIGHT - MARGIN_BOTTOM);
    let values = || series.points.iter().map(|p| p.1);
    let min = if series.from_zero {
        0.0
    } else {
        values().fold(f64::INFINITY, f64::min)
    };
    let min = if min.is_finite() { min } else { 0.0 };
    // A flat series still gets a visible range above its floor.
    let max = values().fold(min, f64::max).max(
        min + if series.from_zero {
            1.0
        } else {
            min.abs() * 0.01 + 1e-9
        },
    );
    canvas.text(left, top + 6, &series.title, [0, 0, 0]);
    // Axes and labels.
    canvas.line(
        (left as i64, plot_top as i64),
        (left as i64, bottom as i64),
        grey,
    );
    canvas.line(
        (left as i64, bottom as i64),
        (right as i64, bottom as i64),
        grey,
    );
    canvas.text(8, plot_top, &format_value(max), grey);
    canvas.text(8, bottom - 7, &format_value(min), grey);
    canvas.text(
        left,
        bottom + 8,
        &format!("{x_label} {}", format_value(first)),
        grey,
    );
    let label = format!("{x_label} {}", format_value(last));
    canvas.text(
        right.saturating_sub(label.len() * 6),
        bottom + 8,
        &label,
        grey,
    );
    // The series, one segment per consecutive pair of points.
    let span = last - first;
    let to_pixel = |(x, value): (f64, f64)| {
        let x = left as f64 + (x - first) / span * (right - left) as f64;
        let y = bottom as f64 - (value - min) / (max - min) * (bottom - plot_top) as f64;
        (x.round() as i64, y.round() as i64)
    };
    let mut previous = None;
    for point in series
        .points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
    {
        let pixel = to_pixel(*point);
        if let Some(prev) = previous {
            canvas.line(prev, pixel, series.colour);
        } else {
            canvas.set(pixel.0 as usize, pixel.1 as usize, series.colour);
        }
        previous = Some(pixel);
    }
}

fn format_value(value: f64) -> String {
    if value.abs() >= 1e6 {
        format!("{:.1}m", value / 1e6)
    } else if value.abs() >= 1e5 {
        format!("{:.0}k", value / 1e3)
    } else if value.fract() == 0.0 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}
