//! Throughput against record size, as SVG.

use std::path::Path;

use plotters::prelude::*;

use super::member::{Codec, Op};
use super::records::Keys;
use super::shuffle::{Report, Row};

/// Draws MB/s against record size: Riffle's exchange and the timely baseline per
/// (processes, workers), and the TCP ceiling (loopback, or between the hosts).
pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_mb = report.rows.iter().chain(&report.baselines).map(|r| r.mb_per_s).fold(report.tcp_mb_per_s, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("Shuffle throughput by record size", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((8f64..8192f64).log_scale(), 0f64..max_mb * 1.1)?;
    chart.configure_mesh().x_desc("record size (bytes)").y_desc("MB/s").draw()?;
    let mut configs: Vec<(usize, usize)> = report
        .rows
        .iter()
        .map(|r| (r.spec.processes, r.spec.workers))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    configs.sort();
    let series = |rows: &[Row], procs: usize, w: usize, riffle: bool| -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.spec.processes == procs && r.spec.workers == w && r.spec.keys == Keys::Uniform)
            .filter(|r| !riffle || (r.spec.op == Op::Exchange && r.spec.codec == Codec::Pod))
            .map(|r| (r.spec.size as f64, r.mb_per_s))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts
    };
    for (i, (procs, w)) in configs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let riffle = series(&report.rows, *procs, *w, true);
        chart
            .draw_series(LineSeries::new(riffle.clone(), color.stroke_width(2)))?
            .label(format!("riffle exchange (pod), {procs} proc x {w} w"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(riffle.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        let timely = series(&report.baselines, *procs, *w, false);
        chart
            .draw_series(LineSeries::new(timely, color.stroke_width(1)))?
            .label(format!("timely (bincode), {procs} proc x {w} w"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1)));
    }
    let tcp = report.tcp_mb_per_s;
    chart
        .draw_series(LineSeries::new(vec![(8.0, tcp), (8192.0, tcp)], BLACK.stroke_width(1)))?
        .label(if report.hosts.is_some() { "TCP ceiling between the hosts" } else { "loopback TCP ceiling" })
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
