//! The experiment's plots, as SVG (text as text) and PNG (text drawn with a system font,
//! DejaVu Sans, which Debian's `fonts-dejavu-core` installs; without it only SVG is written).

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Report, Row};

const SIZE: (u32, u32) = (1000, 420);
/// Where Debian keeps the font the PNGs' text is drawn with.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One plot: a series per run (and per provider where asked), y over seconds.
struct Spec {
    file: &'static str,
    title: &'static str,
    y: &'static str,
    lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// Draws every plot into `dir`; the files written, or why none could be.
pub fn draw_all(report: &Report, dir: &Path) -> Result<Vec<String>, String> {
    let png = register_font();
    let mut written = Vec::new();
    for spec in specs(report) {
        let svg = format!("{}.svg", spec.file);
        draw(
            SVGBackend::new(&dir.join(&svg), SIZE).into_drawing_area(),
            &spec,
        )?;
        written.push(svg);
        if png {
            let png = format!("{}.png", spec.file);
            draw(
                BitMapBackend::new(&dir.join(&png), SIZE).into_drawing_area(),
                &spec,
            )?;
            written.push(png);
        }
    }
    Ok(written)
}

/// Registers DejaVu Sans as plotters' sans-serif once; whether PNGs can have text.
fn register_font() -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| match std::fs::read(FONT) {
        Ok(bytes) => {
            // plotters keeps fonts for the process's life.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        }
        Err(e) => {
            tracing::warn!(font = FONT, error = %e, "no font for PNG plots; writing SVG only");
            false
        }
    })
}

fn specs(report: &Report) -> Vec<Spec> {
    let per_run = |f: fn(&Row) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        report
            .runs
            .iter()
            .map(|run| {
                let points = run.rows.iter().map(|r| (r.t as f64, f(r))).collect();
                (run.label.to_string(), points)
            })
            .collect()
    };
    let mut utilisation = Vec::new();
    for run in &report.runs {
        for k in 0..report.opts.providers {
            let p = format!("p{k}");
            if k > 0 && run.label != "with peering" {
                continue;
            }
            let points = run
                .rows
                .iter()
                .map(|r| {
                    let u = r.utilisation.get(&p).copied().unwrap_or(0);
                    (r.t as f64, u as f64 / 10.0)
                })
                .collect();
            utilisation.push((format!("{p}, {}", run.label), points));
        }
    }
    vec![
        Spec {
            file: "latency-p95",
            title: "client latency, p95 of the answers of each second",
            y: "ms",
            lines: per_run(|r| f64::from(r.p95_ms)),
        },
        Spec {
            file: "errors",
            title: "client error rate",
            y: "% of requests",
            lines: per_run(|r| r.error_rate() * 100.0),
        },
        Spec {
            file: "throughput",
            title: "requests answered per second (offered rate dashed)",
            y: "req/s",
            lines: {
                let mut l = per_run(|r| r.ok as f64);
                if let Some(run) = report.runs.first() {
                    l.push((
                        "offered".into(),
                        run.rows
                            .iter()
                            .map(|r| (r.t as f64, r.offered as f64))
                            .collect(),
                    ));
                }
                l
            },
        },
        Spec {
            file: "origin",
            title: "origin requests per second",
            y: "req/s",
            lines: per_run(|r| r.origin_requests as f64),
        },
        Spec {
            file: "utilisation",
            title: "utilisation of each provider (what its nodes serve themselves)",
            y: "% of capacity",
            lines: utilisation,
        },
    ]
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(0x2b, 0x8a, 0x3e),
    RGBColor(0xd9, 0x48, 0x0f),
    RGBColor(0x1c, 0x7e, 0xd6),
    RGBColor(0x86, 0x2e, 0x9c),
    RGBColor(0x59, 0x5f, 0x69),
    RGBColor(0xe6, 0x77, 0x00),
];

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, spec: &Spec) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", spec.file);
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let points = || spec.lines.iter().flat_map(|(_, p)| p.iter());
    let max_x = points().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(spec.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(spec.y)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, line)) in spec.lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                line.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
