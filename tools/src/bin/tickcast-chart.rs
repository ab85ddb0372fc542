//! `tickcast-chart`: draws columns of a CSV time series as a PNG, one panel per column
//! (`tickcast_tools::chart`). `scripts/bench.py --soak` charts RSS and tick time with it.

#![allow(clippy::print_stdout)] // A command-line tool: it says what it wrote.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tickcast_tools::chart::parse_csv;
use tickcast_tools::plot::render_panels;

/// Draw columns of a CSV as stacked line charts in a PNG.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The CSV: a header row, then rows of numbers (an empty cell is a missing point).
    csv: PathBuf,
    /// The PNG to write.
    #[arg(long, short)]
    output: PathBuf,
    /// The x column (default: the first).
    #[arg(long)]
    x: Option<String>,
    /// The columns to draw, comma-separated (default: every column but x).
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// Columns whose y axis starts at their smallest value instead of 0, so small
    /// changes in a large value show (the axis labels say where it starts).
    #[arg(long, value_delimiter = ',')]
    zoom: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.csv)
        .with_context(|| format!("reading {}", args.csv.display()))?;
    let table = parse_csv(&text).with_context(|| format!("in {}", args.csv.display()))?;
    let x = args
        .x
        .clone()
        .unwrap_or_else(|| table.columns.first().cloned().unwrap_or_default());
    let columns: Vec<&str> = if args.columns.is_empty() {
        table
            .columns
            .iter()
            .map(String::as_str)
            .filter(|c| *c != x)
            .collect()
    } else {
        args.columns.iter().map(String::as_str).collect()
    };
    anyhow::ensure!(!columns.is_empty(), "no column to draw besides x ({x})");
    let zoom: Vec<&str> = args.zoom.iter().map(String::as_str).collect();
    let series = table.series(&x, &columns, &zoom)?;
    let canvas = render_panels(&x, &series);
    let out = std::fs::File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    canvas
        .write_png(std::io::BufWriter::new(out))
        .with_context(|| format!("writing {}", args.output.display()))?;
    let (w, h) = canvas.size();
    println!("wrote {} ({w}x{h})", args.output.display());
    Ok(())
}
