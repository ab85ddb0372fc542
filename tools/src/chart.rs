//! `tickcast-chart`: a PNG of columns of a CSV time series, one panel per column, drawn
//! with [`crate::plot`]. `scripts/bench.py --soak` uses it for RSS and tick time over
//! time, so the benchmark needs no plotting library.
//!
//! The CSV is the simple kind the benchmark writes: a header row of column names, then
//! rows of numbers separated by commas. An empty cell is a missing point.

use crate::plot::{PALETTE, Series};

/// A parsed CSV: column names and, per row, one value per column (`NaN` if empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names from the header row.
    pub columns: Vec<String>,
    /// Rows of values, each as long as `columns`.
    pub rows: Vec<Vec<f64>>,
}

/// Why a CSV could not be charted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChartError {
    /// The text has no header row.
    #[error("the CSV is empty (no header row)")]
    Empty,
    /// A row has a different number of cells than the header.
    #[error("line {line}: {found} cells, the header has {expected}")]
    RowLength {
        /// 1-based line number.
        line: usize,
        /// Cells in the header.
        expected: usize,
        /// Cells in this row.
        found: usize,
    },
    /// A cell is not a number.
    #[error("line {line}, column {column}: `{cell}` is not a number")]
    NotANumber {
        /// 1-based line number.
        line: usize,
        /// Column name.
        column: String,
        /// The cell as written.
        cell: String,
    },
    /// A column asked for is not in the header.
    #[error("no column `{0}` (the header has: {1})")]
    NoColumn(String, String),
}

/// Parses `text`: a header row, then rows of numbers. Blank lines are skipped.
pub fn parse_csv(text: &str) -> Result<Table, ChartError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    let (_, header) = lines.next().ok_or(ChartError::Empty)?;
    let columns: Vec<String> = header.split(',').map(|c| c.trim().to_owned()).collect();
    let mut rows = Vec::new();
    for (index, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != columns.len() {
            return Err(ChartError::RowLength {
                line: index + 1,
                expected: columns.len(),
                found: cells.len(),
            });
        }
        let row = cells
            .iter()
            .zip(&columns)
            .map(|(cell, column)| {
                if cell.is_empty() {
                    return Ok(f64::NAN);
                }
                cell.parse::<f64>().map_err(|_| ChartError::NotANumber {
                    line: index + 1,
                    column: column.clone(),
                    cell: (*cell).to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    Ok(Table { columns, rows })
}

impl Table {
    fn column(&self, name: &str) -> Result<usize, ChartError> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| ChartError::NoColumn(name.to_owned(), self.columns.join(", ")))
    }

    /// One series per column of `ys` against column `x`, coloured in palette order;
    /// rows with a missing x or y leave that point out. The columns in `zoom` get a y
    /// axis from their smallest value instead of from 0.
    pub fn series(&self, x: &str, ys: &[&str], zoom: &[&str]) -> Result<Vec<Series>, ChartError> {
        let x = self.column(x)?;
        ys.iter()
            .enumerate()
            .map(|(i, name)| {
                let y = self.column(name)?;
                Ok(Series {
                    title: (*name).to_owned(),
                    colour: PALETTE[i % PALETTE.len()],
                    points: self
                        .rows
                        .iter()
                        .map(|row| (row[x], row[y]))
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .collect(),
                    from_zero: !zoom.contains(name),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::{PANEL_HEIGHT, render_panels};

    const SOAK: &str = "t_s,rss_mib,tick_p99_us\n0,20.0,300\n1,20.5,\n\n2,21.0,310\n";

    #[test]
    fn parses_a_header_and_numbers_with_gaps() {
        let table = parse_csv(SOAK).unwrap();
        assert_eq!(table.columns, ["t_s", "rss_mib", "tick_p99_us"]);
        assert_eq!(table.rows.len(), 3);
        assert_eq!(table.rows[2], [2.0, 21.0, 310.0]);
        assert!(table.rows[1][2].is_nan());
        // The gap is left out of its series only.
        let series = table
            .series("t_s", &["rss_mib", "tick_p99_us"], &[])
            .unwrap();
        assert_eq!(series[0].points.len(), 3);
        assert!(series[0].from_zero && series[1].from_zero);
        assert_eq!(series[1].points, [(0.0, 300.0), (2.0, 310.0)]);
    }

    #[test]
    fn bad_csv_names_the_line_and_the_cell() {
        assert_eq!(parse_csv(""), Err(ChartError::Empty));
        assert_eq!(
            parse_csv("a,b\n1,2\n3\n"),
            Err(ChartError::RowLength {
                line: 3,
                expected: 2,
                found: 1
            })
        );
        let error = parse_csv("a,b\n1,x\n").unwrap_err().to_string();
        assert!(error.contains("line 2, column b: `x`"), "{error}");
        let table = parse_csv("a,b\n1,2\n").unwrap();
        let error = table.series("a", &["c"], &[]).unwrap_err().to_string();
        assert!(error.contains("no column `c`"), "{error}");
    }

    #[test]
    fn draws_one_panel_per_column_in_its_colour() {
        let table = parse_csv(SOAK).unwrap();
        let series = table
            .series("t_s", &["rss_mib", "tick_p99_us"], &["rss_mib"])
            .unwrap();
        let canvas = render_panels("s", &series);
        let (width, height) = canvas.size();
        assert_eq!(height, 2 * PANEL_HEIGHT);
        let coloured = |panel: usize, colour: [u8; 3]| {
            (panel * PANEL_HEIGHT..(panel + 1) * PANEL_HEIGHT)
                .flat_map(|y| (0..width).map(move |x| (x, y)))
                .filter(|&(x, y)| canvas.pixel(x, y) == colour)
                .count()
        };
        // A line across the plot in each panel, each in its own colour only.
        assert!(coloured(0, PALETTE[0]) > 800);
        assert!(coloured(1, PALETTE[1]) > 800);
        assert_eq!(coloured(0, PALETTE[1]), 0);
        assert_eq!(coloured(1, PALETTE[0]), 0);
    }
}
