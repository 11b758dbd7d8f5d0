//! Loss curves of several runs on one PNG (`retro plot`): each run's training loss per step as a
//! thin line, its validation loss as a thick line with points, one colour per run.
//!
//! Text is drawn with ab_glyph from a TrueType font read at run time (DejaVu Sans, Debian's
//! fonts-dejavu-core, or the file in RETRO_PLOT_FONT), which keeps fontconfig and freetype out of
//! the build.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

use crate::metrics::{read_eval_metrics, read_step_metrics};

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// One curve set: a label and a run directory (or a metrics.jsonl file).
pub struct PlotRun {
    pub label: String,
    pub path: PathBuf,
}

fn register_font() -> Result<()> {
    let path = std::env::var_os("RETRO_PLOT_FONT")
        .map(PathBuf::from)
        .or_else(|| FONT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()))
        .context("no TrueType font for the plot's text: install fonts-dejavu-core or set RETRO_PLOT_FONT to a .ttf file")?;
    let bytes = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{}: not a usable TrueType font", path.display()))
}

/// Draws the runs' losses into `out` (PNG, written atomically).
pub fn plot_losses(runs: &[PlotRun], title: &str, out: &Path) -> Result<()> {
    if runs.is_empty() {
        bail!("nothing to plot: give at least one run");
    }
    let mut series = Vec::new();
    for r in runs {
        if !r.path.exists() {
            bail!(
                "{}: no such run directory or metrics.jsonl",
                r.path.display()
            );
        }
        let metrics = if r.path.is_dir() {
            r.path.join("metrics.jsonl")
        } else {
            r.path.clone()
        };
        let steps: Vec<(f64, f64)> = read_step_metrics(&metrics)?
            .iter()
            .map(|m| (m.step as f64, m.loss))
            .collect();
        let evals: Vec<(f64, f64)> = read_eval_metrics(&metrics)?
            .iter()
            .map(|m| (m.step as f64, m.val_loss))
            .collect();
        if steps.is_empty() {
            bail!("{}: no training steps recorded", metrics.display());
        }
        series.push((r.label.clone(), steps, evals));
    }
    let all = series.iter().flat_map(|(_, s, e)| s.iter().chain(e.iter()));
    let (mut x_max, mut y_min, mut y_max) = (1f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        if y.is_finite() {
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    register_font()?;

    // The image encoder picks the format from the extension, so the temporary name ends in .png.
    let tmp = out.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1100, 700)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e}", out.display());
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, (y_min - pad)..(y_max + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (nats/token)")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(err)?;
        for (i, (label, steps, evals)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    steps.iter().copied(),
                    color.mix(0.45).stroke_width(1),
                ))
                .map_err(err)?
                .label(format!("{label} (train)"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.mix(0.45)));
            if !evals.is_empty() {
                chart
                    .draw_series(LineSeries::new(
                        evals.iter().copied(),
                        color.stroke_width(3),
                    ))
                    .map_err(err)?
                    .label(format!("{label} (valid)"))
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3))
                    });
                chart
                    .draw_series(evals.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("{}: cannot rename into place", out.display()))
}
