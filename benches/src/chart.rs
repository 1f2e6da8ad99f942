//! The results chart: throughput of every server relative to etcd 3.4, one
//! group of bars per scenario (SVG, drawn with plotters).

use std::path::Path;

use plotters::prelude::*;

use crate::error::{BenchError, Result};
use crate::results::Results;

/// Draws `path` from `results`. Scenarios without an etcd 3.4 figure are
/// left out (nothing to be relative to).
pub fn throughput(results: &Results<'_>, path: &Path) -> Result<()> {
    let fail = |message: String| BenchError::Chart {
        path: path.to_path_buf(),
        message,
    };
    let Some(base) = results.servers.iter().find(|s| s.slug == "etcd-3.4") else {
        return Err(fail("no etcd 3.4 in the run".into()));
    };
    // Servers that did not serve have no bars and no legend entry.
    let servers: Vec<_> = results.servers.iter().filter(|s| s.serving).collect();
    let groups: Vec<(&str, Vec<f64>)> = results
        .scenarios
        .iter()
        .filter_map(|sc| {
            let reference = results.cell(sc.id, &base.name)?.run.report.throughput_ops_s;
            (reference > 0.0).then(|| {
                let bars = servers
                    .iter()
                    .map(|s| {
                        results
                            .cell(sc.id, &s.name)
                            .map_or(0.0, |c| c.run.report.throughput_ops_s / reference)
                    })
                    .collect();
                (sc.id, bars)
            })
        })
        .collect();
    let top = groups
        .iter()
        .flat_map(|(_, b)| b.iter().copied())
        .fold(1.0f64, f64::max)
        * 1.2;
    let n_servers = servers.len().max(1);
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "throughput relative to etcd 3.4 (higher is better)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..groups.len().max(1) as f64, 0f64..top)
        .map_err(|e| fail(e.to_string()))?;
    let names: Vec<String> = groups.iter().map(|(id, _)| id.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("× etcd 3.4")
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    let width = 0.8 / n_servers as f64;
    for (si, server) in servers.iter().enumerate() {
        let color = Palette99::pick(si).to_rgba();
        let bars: Vec<Rectangle<(f64, f64)>> = groups
            .iter()
            .enumerate()
            .map(|(gi, (_, values))| {
                let x0 = gi as f64 + 0.1 + si as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, values[si])], color.filled())
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| fail(e.to_string()))?
            .label(server.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
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
