//! SVG line plots of a run's history: loss, learning rate, and every evaluation metric over
//! optimizer steps.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::log::Record;
use crate::{Result, TrainerError};

/// One line of a plot: a name and its `(step, value)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// Writes `loss.svg`, `lr.svg` and `eval_<metric>.svg` for every evaluation metric into `dir`;
/// returns the files written.
pub fn plot_history(dir: &Path, records: &[Record]) -> Result<Vec<PathBuf>> {
    let mut loss = Vec::new();
    let mut lrs: Vec<Series> = Vec::new();
    let mut evals: Vec<Series> = Vec::new();
    for record in records {
        match record {
            Record::Train { step, loss: l, lr, .. } => {
                loss.push((*step as f64, *l));
                for (group, value) in lr {
                    series_of(&mut lrs, group).push((*step as f64, *value));
                }
            }
            Record::Eval { step, metrics, .. } => {
                for (name, value) in metrics {
                    series_of(&mut evals, name).push((*step as f64, *value));
                }
            }
        }
    }
    let mut written = Vec::new();
    let mut plot = |file: String, title: &str, series: &[Series]| -> Result<()> {
        if series.iter().all(|(_, points)| points.is_empty()) {
            return Ok(());
        }
        let path = dir.join(file);
        line_plot(&path, title, series)?;
        written.push(path);
        Ok(())
    };
    plot("loss.svg".into(), "training loss", &[("loss".into(), loss)])?;
    plot("lr.svg".into(), "learning rate", &lrs)?;
    for series in &evals {
        plot(format!("eval_{}.svg", series.0), &series.0, std::slice::from_ref(series))?;
    }
    Ok(written)
}

fn series_of<'a>(all: &'a mut Vec<Series>, name: &str) -> &'a mut Vec<(f64, f64)> {
    let i = match all.iter().position(|(n, _)| n == name) {
        Some(i) => i,
        None => {
            all.push((name.to_string(), Vec::new()));
            all.len() - 1
        }
    };
    &mut all[i].1
}

/// One SVG with a line per series against the optimizer step, written atomically.
pub fn line_plot(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Ok(());
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let mut svg = String::new();
    {
        let fail = |e: String| TrainerError::Malformed { path: path.to_path_buf(), message: format!("plotting: {e}") };
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| fail(e.to_string()))?;
        chart.configure_mesh().x_desc("optimizer step").draw().map_err(|e| fail(e.to_string()))?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()),
                    color.stroke_width(2),
                ))
                .map_err(|e| fail(e.to_string()))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|e| fail(e.to_string()))?;
        }
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(rag_hf::write_atomic(path, svg.as_bytes())?)
}
