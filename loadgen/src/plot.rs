//! `--plot FILE.svg`: latency against percentile, one line per operation,
//! with the percentile axis stretched towards the tail (x = -log10(1 - q))
//! so p99, p99.9 and p99.99 are as far apart as p0, p90 and p99.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{LoadgenError, Result};
use crate::report::{Recorder, PLOT_QUANTILES};

/// The tail is cut at p99.999 (x = 5) so the log scale stays finite.
const TAIL_X: f64 = 5.0;

fn tail_x(q: f64) -> f64 {
    (-(1.0 - q).max(10f64.powf(-TAIL_X)).log10()).min(TAIL_X)
}

/// Draws the latency-percentile plot of `rec` to `path` (SVG).
pub fn draw(rec: &Recorder, title: &str, path: &Path) -> Result<()> {
    let fail = |message: String| LoadgenError::Plot {
        path: path.to_path_buf(),
        message,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => {}
        other => {
            return Err(fail(format!(
                "only .svg plots are drawn (got {:?}); convert to PNG with any SVG tool",
                other.unwrap_or("")
            )))
        }
    }
    let series: Vec<(String, Vec<(f64, f64)>)> = rec
        .ops()
        .iter()
        .filter(|(_, s)| s.count() > 0)
        .map(|(name, s)| {
            let points = PLOT_QUANTILES
                .iter()
                .map(|&q| (tail_x(q), s.quantile_ms(q).max(0.001)))
                .collect();
            (name.clone(), points)
        })
        .collect();
    let max_ms = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..TAIL_X, (0.001f64..max_ms * 1.5).log_scale())
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            format!("p{}", (p * 1000.0).round() / 1000.0)
        })
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (i, (name, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tail_axis() {
        assert_eq!(tail_x(0.0), 0.0);
        assert!((tail_x(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(tail_x(1.0), TAIL_X);
    }

    #[test]
    fn draws_svg_and_refuses_other_formats() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Recorder::new();
        for ms in 1..200 {
            rec.record("put", Duration::from_micros(ms * 37));
        }
        let svg = dir.path().join("p.svg");
        draw(&rec, "put", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg") && text.contains("put"));
        assert!(draw(&rec, "put", &dir.path().join("p.png")).is_err());
    }
}
