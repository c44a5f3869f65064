//! The lab's report as one self-contained HTML page (`steadfast-lab --html FILE`).
//!
//! The page carries, per scenario, what the text report says (configuration, table, targets)
//! and plots drawn as inline SVG by this module: no script, no stylesheet or font from
//! elsewhere, nothing fetched, so it opens the same from a CI artefact, an e-mail or a browser
//! with no network.
//!
//! Per scenario:
//!
//! - **latency**: each variant's latency by percentile, on a "nines" axis (p50, p90, p99, p99.9
//!   equally spaced) and a log scale, so that the tail is as visible as the median;
//! - **over time**, one chart per variant on shared axes: the requests that ended in a success,
//!   a failure or a refusal, and the calls that reached the server, per 100 ms bin, with the
//!   server's outage or slowdown window shaded;
//! - **breaker state** over time, one lane per variant with a breaker;
//! - **amplification**: server calls per request for each variant, with its extra load.
//!
//! The data comes from each variant's [`Timeline`]. Each plot is an
//! `<svg class="plot" data-plot="...">` whose data series are elements with `class="series"`,
//! `data-series` (its name), `data-points` (how many data points it draws) and `data-total` (the
//! sum of its values), so a test or a script can check that no plot is empty without a browser.
//! When a plot cannot be drawn (a variant recorded no timeline, a scenario no latency) the page
//! says so in an element with `class="plot-error"`; `scripts/render-report.sh` fails on it.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_lab::load::{Outcome, Record};
//! use steadfast_lab::report::{ScenarioReport, VariantReport};
//! use steadfast_lab::load::Summary;
//! use steadfast_lab::timeline::Timeline;
//!
//! let t0 = tokio::time::Instant::now();
//! let records: Vec<Record> = (0..50)
//!     .map(|i| Record {
//!         id: i,
//!         latency: Duration::from_millis(1 + i % 7),
//!         ended: t0 + Duration::from_millis(10 * i),
//!         outcome: Outcome::Succeeded,
//!     })
//!     .collect();
//! let summary = Summary::of(&records);
//! let variant = VariantReport::new("none", &summary, 50)
//!     .timeline(Timeline::from_records(t0, &records).server_calls(vec![10; 5]));
//! let report = ScenarioReport {
//!     scenario: "demo",
//!     description: "A demo.".to_owned(),
//!     quick: true,
//!     seed: 1,
//!     config: vec![],
//!     variants: vec![variant],
//!     targets: vec![],
//!     elapsed: Duration::from_secs(1),
//! };
//! let page = steadfast_lab::html::render(&[report]);
//! assert!(page.starts_with("<!DOCTYPE html>"));
//! assert!(page.contains(r#"data-plot="latency""#) && page.contains(r#"data-plot="timeseries""#));
//! assert!(!page.contains(r#"class="plot-error""#) && !page.contains("<script"));
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use steadfast_layers::breaker::BreakerState;

use crate::report::ScenarioReport;
use crate::timeline::{Timeline, Window, WindowKind, BIN};

/// One colour per variant, in the order a scenario lists them (Tableau 10, readable on white
/// and for most colour-blind readers).
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f", "#edc948",
];

/// The time series' colours: successes, failures, refusals, server calls.
const SUCCESS: &str = "#59a14f";
const FAILURE: &str = "#e15759";
const REFUSAL: &str = "#f28e2b";
const SERVER: &str = "#4e79a7";

const STYLE: &str = "
body { font-family: 'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif; margin: 24px 32px; color: #222; max-width: 1340px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 28px 0 4px; padding-top: 12px; border-top: 2px solid #ddd; }
h3 { font-size: 14px; margin: 14px 0 4px; color: #444; }
p.lead { margin: 2px 0 10px; color: #444; }
.verdict { font-size: 13px; padding: 2px 8px; border-radius: 10px; margin-left: 8px; vertical-align: middle; }
.met { background: #e3f1df; color: #2b6a22; }
.missed { background: #fbe3e4; color: #9b1c23; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
dl.config { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 12px; margin: 6px 0; }
dl.config dt { font-weight: bold; color: #555; }
dl.config dd { margin: 0; }
ul.targets { font-size: 12px; margin: 6px 0; padding-left: 18px; }
ul.targets li.met { background: none; }
ul.targets li.missed { background: none; font-weight: bold; }
.plots { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: flex-start; }
svg.plot { background: #fff; border: 1px solid #e4e4e4; }
svg text { font-family: 'DejaVu Sans', Arial, sans-serif; fill: #333; }
.plot-error { color: #9b1c23; font-weight: bold; }
";

/// The whole page for `reports`, in their order.
pub fn render(reports: &[ScenarioReport]) -> String {
    let mut out = String::with_capacity(256 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        out,
        "<meta name=\"steadfast-report-height\" content=\"{}\">",
        page_height(reports).round()
    );
    out.push_str("<title>steadfast lab report</title>\n<style>");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<h1>steadfast lab</h1>\n");
    let met = reports.iter().filter(|r| r.targets_met()).count();
    let mode = match reports.first() {
        Some(r) if r.quick => "quick mode",
        Some(_) => "full runs",
        None => "no scenario run",
    };
    let seed = reports.first().map_or(crate::DEFAULT_SEED, |r| r.seed);
    let _ = writeln!(
        out,
        "<p class=\"lead\">{} scenario(s), {mode}, seed {seed}: {met} with every target met. Each scenario runs its client configurations (variants) against real HTTP servers on 127.0.0.1; time on the plots runs from each variant's server start.</p>",
        reports.len()
    );
    out.push_str("<table class=\"index\"><tr><th>scenario</th><th>targets</th><th>took</th><th style=\"text-align:left\">what it shows</th></tr>\n");
    for r in reports {
        let met = r.targets.iter().filter(|t| t.met).count();
        let class = if r.targets_met() { "met" } else { "missed" };
        let _ = writeln!(
            out,
            "<tr><td><a href=\"#{}\">{}</a></td><td><span class=\"verdict {class}\">{met} / {}</span></td><td>{:.1} s</td><td style=\"text-align:left\">{}</td></tr>",
            esc(r.scenario),
            esc(r.scenario),
            r.targets.len(),
            r.elapsed.as_secs_f64(),
            esc(&r.description)
        );
    }
    out.push_str("</table>\n");
    for r in reports {
        scenario(&mut out, r);
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// About how tall the page lays out, in CSS pixels, at the width the stylesheet allows (1340 px
/// of content): `scripts/render-report.sh` sizes its screenshot window from it (headless
/// Chromium captures the window, not the page).
fn page_height(reports: &[ScenarioReport]) -> f64 {
    // Lines a text of `chars` characters wraps to in `width` pixels of 12 px text.
    let lines = |chars: usize, width: f64| (chars as f64 * 6.8 / width).ceil().max(1.0);
    let mut h = 150.0 + 25.0 * (reports.len() + 1) as f64;
    for r in reports {
        h += 90.0;
        h += r
            .config
            .iter()
            .map(|(_, v)| 17.0 * lines(v.len(), 1150.0))
            .sum::<f64>();
        h += 25.0 * (r.variants.len() + 1) as f64 + 16.0;
        h += r
            .targets
            .iter()
            .map(|t| 17.0 * lines(t.description.len() + 8, 1300.0))
            .sum::<f64>()
            + 16.0;
        let n = r.variants.len();
        h += (80.0 + 42.0 * n as f64).max(330.0) + 12.0;
        let with_timeline = r.variants.iter().filter(|v| v.timeline.is_some()).count();
        if with_timeline > 0 {
            let per_row = if with_timeline <= 2 { 2 } else { 3 };
            h += 40.0 + 258.0 * with_timeline.div_ceil(per_row) as f64;
        }
        let lanes = r
            .variants
            .iter()
            .filter(|v| v.timeline.as_ref().is_some_and(|t| !t.breaker.is_empty()))
            .count();
        if lanes > 0 {
            h += 40.0 + 82.0 + 36.4 * lanes as f64 + 8.0;
        }
    }
    h + 60.0
}

fn scenario(out: &mut String, r: &ScenarioReport) {
    let met = r.targets.iter().filter(|t| t.met).count();
    let (class, verdict) = if r.targets_met() {
        ("met", format!("{met} of {} targets met", r.targets.len()))
    } else {
        (
            "missed",
            format!(
                "{} of {} targets missed",
                r.targets.len() - met,
                r.targets.len()
            ),
        )
    };
    let _ = writeln!(
        out,
        "<section class=\"scenario\" id=\"{0}\">\n<h2>{0}<span class=\"verdict {class}\">{verdict}</span></h2>\n<p class=\"lead\">{1}</p>",
        esc(r.scenario),
        esc(&r.description)
    );
    if !r.config.is_empty() {
        out.push_str("<dl class=\"config\">");
        for (k, v) in &r.config {
            let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
        }
        out.push_str("</dl>\n");
    }
    let (headers, rows) = r.table_cells();
    out.push_str("<table class=\"variants\"><tr>");
    for h in &headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>\n");
    for (k, row) in rows.iter().enumerate() {
        out.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            if i == 0 {
                let color = PALETTE[k % PALETTE.len()];
                let _ = write!(
                    out,
                    "<td><span style=\"color:{color}\">&#9632;</span> {}</td>",
                    esc(c)
                );
            } else {
                let _ = write!(out, "<td>{}</td>", esc(c));
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    if !r.targets.is_empty() {
        out.push_str("<ul class=\"targets\">");
        for t in &r.targets {
            let (class, mark) = if t.met {
                ("met", "met")
            } else {
                ("missed", "MISSED")
            };
            let _ = write!(
                out,
                "<li class=\"{class}\">[{mark}] {}</li>",
                esc(&t.description)
            );
        }
        out.push_str("</ul>\n");
    }
    plots(out, r);
    out.push_str("</section>\n");
}

/// A variant's name, colour and timeline.
struct Line<'a> {
    name: &'a str,
    color: &'static str,
    timeline: &'a Timeline,
}

fn plots(out: &mut String, r: &ScenarioReport) {
    let mut lines = Vec::new();
    for (i, v) in r.variants.iter().enumerate() {
        match &v.timeline {
            Some(t) => lines.push(Line {
                name: v.name,
                color: PALETTE[i % PALETTE.len()],
                timeline: t,
            }),
            None if v.requests > 0 => plot_error(
                out,
                r.scenario,
                &format!("variant {} recorded no timeline", v.name),
            ),
            None => {}
        }
    }
    out.push_str("<div class=\"plots\">\n");
    latency_plot(out, r.scenario, &lines);
    let rows: Vec<(&str, &'static str, f64, f64)> = r
        .variants
        .iter()
        .enumerate()
        .filter(|(_, v)| v.requests > 0)
        .map(|(i, v)| {
            let amp = v.amplification();
            let extra = v.get("extra_load").unwrap_or(amp - 1.0);
            (v.name, PALETTE[i % PALETTE.len()], amp, extra)
        })
        .collect();
    amplification_plot(out, r.scenario, &rows);
    out.push_str("</div>\n");

    let bins = lines.iter().map(|l| l.timeline.bins()).max().unwrap_or(0);
    if bins > 0 {
        out.push_str("<h3>Over time, per 100 ms: requests that ended in a success, a failure or a refusal, and calls that reached the server</h3>\n<div class=\"plots\">\n");
        let ymax = lines
            .iter()
            .flat_map(|l| {
                let t = l.timeline;
                [&t.successes, &t.failures, &t.refusals, &t.server_calls]
                    .into_iter()
                    .flat_map(|s| s.iter().copied())
            })
            .max()
            .unwrap_or(0);
        let width = if lines.len() <= 2 { 660.0 } else { 430.0 };
        for l in &lines {
            timeseries_plot(out, r.scenario, l, bins, ymax as f64, width);
        }
        out.push_str("</div>\n");
        let lanes: Vec<&Line<'_>> = lines
            .iter()
            .filter(|l| !l.timeline.breaker.is_empty())
            .collect();
        if !lanes.is_empty() {
            out.push_str("<h3>Breaker state over time</h3>\n<div class=\"plots\">\n");
            let windows = &lanes[0].timeline.windows;
            breaker_plot(out, r.scenario, &lanes, bins, windows);
            out.push_str("</div>\n");
        }
    }
}

fn plot_error(out: &mut String, scenario: &str, what: &str) {
    let _ = writeln!(
        out,
        "<p class=\"plot-error\" data-error=\"{0}\">{1}: cannot plot: {0}</p>",
        esc(what),
        esc(scenario)
    );
}

/// How a plot's axis maps values to `[0, 1]`.
#[derive(Clone, Copy, Debug)]
enum Scale {
    Linear(f64, f64),
    Log(f64, f64),
}

impl Scale {
    fn frac(self, v: f64) -> f64 {
        let f = match self {
            Scale::Linear(lo, hi) => (v - lo) / (hi - lo),
            Scale::Log(lo, hi) => (v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln()),
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    fn ticks(self) -> Vec<f64> {
        match self {
            Scale::Linear(lo, hi) => {
                let raw = (hi - lo) / 5.0;
                if !(raw.is_finite() && raw > 0.0) {
                    return vec![lo];
                }
                let mag = 10f64.powf(raw.log10().floor());
                let step = [1.0, 2.0, 2.5, 5.0, 10.0]
                    .into_iter()
                    .map(|m| m * mag)
                    .find(|s| *s >= raw)
                    .unwrap_or(10.0 * mag);
                let mut v = (lo / step).ceil() * step;
                let mut out = Vec::new();
                while v <= hi + step * 1e-9 {
                    out.push(v);
                    v += step;
                }
                out
            }
            Scale::Log(lo, hi) => {
                let mut out = Vec::new();
                let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
                for k in a..=b {
                    for m in [1.0, 2.0, 5.0] {
                        let v = m * 10f64.powi(k);
                        if v >= lo * 0.999 && v <= hi * 1.001 {
                            out.push(v);
                        }
                    }
                }
                out
            }
        }
    }
}

/// A plot's frame: its size and the margins around the plotting area.
#[derive(Clone, Copy, Debug)]
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn x(&self, frac: f64) -> f64 {
        self.left + frac * (self.w - self.left - self.right)
    }

    fn y(&self, frac: f64) -> f64 {
        self.h - self.bottom - frac * (self.h - self.top - self.bottom)
    }

    fn open(&self, out: &mut String, scenario: &str, plot: &str, extra: &str, title: &str) {
        let _ = writeln!(
            out,
            "<svg class=\"plot\" data-plot=\"{plot}\" data-scenario=\"{}\"{extra} xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\"><title>{}</title>",
            esc(scenario),
            esc(title),
            w = self.w,
            h = self.h
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>",
            self.left,
            esc(title)
        );
    }

    /// Grid lines, ticks and labels of both axes, and the axis titles.
    fn axes(
        &self,
        out: &mut String,
        x: (Scale, &[(f64, String)], &str),
        y: (Scale, &[(f64, String)], &str),
    ) {
        let (x0, x1, y0, y1) = (self.x(0.0), self.x(1.0), self.y(0.0), self.y(1.0));
        for (v, label) in y.1 {
            let py = self.y(y.0.frac(*v));
            let _ = writeln!(
                out,
                "<line x1=\"{x0:.1}\" x2=\"{x1:.1}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
                x0 - 4.0,
                py + 3.5,
                esc(label)
            );
        }
        for (v, label) in x.1 {
            let px = self.x(x.0.frac(*v));
            let _ = writeln!(
                out,
                "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{y0:.1}\" y2=\"{y1:.1}\" stroke=\"#eee\"/><text x=\"{px:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                y0 + 13.0,
                esc(label)
            );
        }
        let _ = writeln!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{y1:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#999\"/>",
            x1 - x0,
            y0 - y1
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            (x0 + x1) / 2.0,
            self.h - 6.0,
            esc(x.2)
        );
        if !y.2.is_empty() {
            let (cx, cy) = (12.0, (y0 + y1) / 2.0);
            let _ = writeln!(
                out,
                "<text x=\"{cx}\" y=\"{cy:.1}\" font-size=\"11\" text-anchor=\"middle\" transform=\"rotate(-90 {cx} {cy:.1})\">{}</text>",
                esc(y.2)
            );
        }
    }

    /// A legend in one row above the plotting area, right-aligned.
    fn legend(&self, out: &mut String, items: &[(&str, &str, bool)]) {
        let widths: Vec<f64> = items
            .iter()
            .map(|(name, _, _)| 26.0 + 6.2 * name.chars().count() as f64)
            .collect();
        let mut x = self.w - self.right - widths.iter().sum::<f64>();
        let y = self.top - 8.0;
        for ((name, color, dashed), w) in items.iter().zip(&widths) {
            let dash = if *dashed {
                " stroke-dasharray=\"4 2\""
            } else {
                ""
            };
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"3\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10.5\">{}</text>",
                x + 16.0,
                x + 20.0,
                y + 3.5,
                esc(name)
            );
            x += w;
        }
        out.push('\n');
    }

    fn shade(&self, out: &mut String, windows: &[Window], x: Scale) {
        for w in windows {
            let (fill, label) = match w.kind {
                WindowKind::Outage => ("#e15759", "outage"),
                WindowKind::Slowdown => ("#edc948", "slowdown"),
            };
            let (a, b) = (
                self.x(x.frac(w.start.as_secs_f64())),
                self.x(x.frac(w.end.as_secs_f64())),
            );
            if b <= a {
                continue;
            }
            let _ = writeln!(
                out,
                "<rect class=\"window\" data-window=\"{label}\" x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" fill-opacity=\"0.13\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#9b1c23\">{label}</text>",
                self.y(1.0),
                b - a,
                self.y(0.0) - self.y(1.0),
                a + 3.0,
                self.y(1.0) + 11.0
            );
        }
    }
}

/// A number for an axis label or an annotation: three significant digits at most.
fn num(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn labelled(scale: Scale) -> Vec<(f64, String)> {
    scale.ticks().into_iter().map(|v| (v, num(v))).collect()
}

/// The percentile plot: latency against `-log10(1 - p)`.
fn latency_plot(out: &mut String, scenario: &str, lines: &[Line<'_>]) {
    let with_data: Vec<&Line<'_>> = lines
        .iter()
        .filter(|l| !l.timeline.latencies_ms.is_empty())
        .collect();
    if with_data.is_empty() {
        plot_error(out, scenario, "no latency recorded");
        return;
    }
    // How far each variant's samples reach: p99.9 at most (as in the table).
    let reach = |n: usize| (n as f64).log10().min(3.0);
    let umax = with_data
        .iter()
        .map(|l| reach(l.timeline.latencies_ms.len()))
        .fold(0.0, f64::max)
        .max(1.0);
    let all = with_data
        .iter()
        .flat_map(|l| l.timeline.latencies_ms.iter());
    let lo = all
        .clone()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min)
        .max(0.01);
    let hi = all.copied().fold(0.0, f64::max).max(lo * 10.0);
    let x = Scale::Linear(0.0, umax);
    let y = Scale::Log(lo / 1.15, hi * 1.15);
    let frame = Frame {
        w: 660.0,
        h: 330.0,
        left: 58.0,
        right: 14.0,
        top: 44.0,
        bottom: 36.0,
    };
    frame.open(
        out,
        scenario,
        "latency",
        "",
        "Latency by percentile, per variant (log scale)",
    );
    let xticks: Vec<(f64, String)> = [
        (0.0, "min"),
        (0.301, "p50"),
        (1.0, "p90"),
        (2.0, "p99"),
        (3.0, "p99.9"),
    ]
    .into_iter()
    .filter(|(u, _)| *u <= umax + 1e-9)
    .map(|(u, l)| (u, l.to_owned()))
    .collect();
    frame.axes(
        out,
        (x, &xticks, "percentile of requests (failed ones included)"),
        (y, &labelled(y), "latency, ms"),
    );
    const STEPS: usize = 160;
    for l in &with_data {
        let lat = &l.timeline.latencies_ms;
        let n = lat.len();
        let reach = reach(n);
        let mut d = String::new();
        let mut points = 0;
        for i in 0..=STEPS {
            let u = reach * i as f64 / STEPS as f64;
            let p = 1.0 - 10f64.powf(-u);
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            let v = lat[rank - 1];
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                frame.x(x.frac(u)),
                frame.y(y.frac(v))
            );
            points += 1;
        }
        let _ = writeln!(
            out,
            "<path class=\"series\" data-series=\"{}\" data-points=\"{points}\" data-total=\"{}\" d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
            esc(l.name),
            num(lat.iter().sum::<f64>()),
            d.trim_end(),
            l.color
        );
    }
    let items: Vec<(&str, &str, bool)> =
        with_data.iter().map(|l| (l.name, l.color, false)).collect();
    frame.legend(out, &items);
    out.push_str("</svg>\n");
}

/// Server calls per request, one bar per variant, annotated with the extra load.
fn amplification_plot(out: &mut String, scenario: &str, rows: &[(&str, &'static str, f64, f64)]) {
    if rows.is_empty() {
        plot_error(out, scenario, "no variant sent requests");
        return;
    }
    let max = rows.iter().map(|r| r.2).fold(0.0, f64::max);
    // Room on the right of the longest bar for its label.
    let x = Scale::Linear(0.0, (max * 1.75).max(1.75));
    let bar = 30.0;
    let frame = Frame {
        w: 640.0,
        h: 80.0 + bar * rows.len() as f64 * 1.4,
        left: 120.0,
        right: 14.0,
        top: 30.0,
        bottom: 36.0,
    };
    frame.open(
        out,
        scenario,
        "amplification",
        "",
        "Amplification: server calls per request (load added + or spared -)",
    );
    frame.axes(
        out,
        (x, &labelled(x), "server calls per request"),
        (Scale::Linear(0.0, 1.0), &[], ""),
    );
    let one = frame.x(x.frac(1.0));
    let _ = writeln!(
        out,
        "<line x1=\"{one:.1}\" x2=\"{one:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#555\" stroke-dasharray=\"3 3\"/>",
        frame.y(0.0),
        frame.y(1.0)
    );
    for (i, (name, color, amp, extra)) in rows.iter().enumerate() {
        let top = frame.y(1.0) + 10.0 + i as f64 * bar * 1.4;
        let (x0, x1) = (frame.x(0.0), frame.x(x.frac(*amp)));
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text><rect class=\"series\" data-series=\"{}\" data-points=\"1\" data-total=\"{}\" x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{bar}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{:.2} calls/request, {}{:.1}% load</text>",
            x0 - 6.0,
            top + bar / 2.0 + 4.0,
            esc(name),
            esc(name),
            num(*amp),
            (x1 - x0).max(1.0),
            x1 + 5.0,
            top + bar / 2.0 + 4.0,
            amp,
            if *extra >= 0.0 { "+" } else { "" },
            extra * 100.0
        );
    }
    out.push_str("</svg>\n");
}

/// One variant's time series on axes shared by the scenario's variants.
fn timeseries_plot(
    out: &mut String,
    scenario: &str,
    line: &Line<'_>,
    bins: usize,
    ymax: f64,
    width: f64,
) {
    let t = line.timeline;
    let secs = bins as f64 * BIN.as_secs_f64();
    let x = Scale::Linear(0.0, secs);
    let y = Scale::Linear(0.0, (ymax * 1.1).max(1.0));
    let frame = Frame {
        w: width,
        h: 250.0,
        left: 46.0,
        right: 12.0,
        top: 44.0,
        bottom: 36.0,
    };
    frame.open(
        out,
        scenario,
        "timeseries",
        &format!(" data-variant=\"{}\"", esc(line.name)),
        line.name,
    );
    frame.shade(out, &t.windows, x);
    frame.axes(
        out,
        (x, &labelled(x), "seconds since the server started"),
        (y, &labelled(y), "per 100 ms"),
    );
    let mut items = Vec::new();
    let series: [(&str, &str, &Vec<u64>, bool); 4] = [
        ("server calls", SERVER, &t.server_calls, true),
        ("successes", SUCCESS, &t.successes, false),
        ("failures", FAILURE, &t.failures, false),
        ("refusals", REFUSAL, &t.refusals, false),
    ];
    for (name, color, values, dashed) in series {
        if values.is_empty() && name == "server calls" {
            continue;
        }
        let mut pts = String::new();
        for i in 0..bins {
            let v = values.get(i).copied().unwrap_or(0) as f64;
            let mid = (i as f64 + 0.5) * BIN.as_secs_f64();
            let _ = write!(
                pts,
                "{:.1},{:.1} ",
                frame.x(x.frac(mid)),
                frame.y(y.frac(v))
            );
        }
        let dash = if dashed {
            " stroke-dasharray=\"4 2\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<polyline class=\"series\" data-series=\"{name}\" data-points=\"{bins}\" data-total=\"{}\" points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\"{dash}/>",
            values.iter().sum::<u64>(),
            pts.trim_end()
        );
        items.push((name, color, dashed));
    }
    frame.legend(out, &items);
    out.push_str("</svg>\n");
}

fn state_color(state: BreakerState) -> (&'static str, &'static str) {
    match state {
        BreakerState::Closed => ("#59a14f", "closed"),
        BreakerState::Open => ("#e15759", "open"),
        BreakerState::HalfOpen => ("#edc948", "half-open"),
        BreakerState::ForcedOpen => ("#9b1c23", "forced open"),
        _ => ("#bab0ac", "disabled"),
    }
}

/// One lane per variant with a breaker: its state from each change to the next.
fn breaker_plot(
    out: &mut String,
    scenario: &str,
    lanes: &[&Line<'_>],
    bins: usize,
    windows: &[Window],
) {
    let secs = bins as f64 * BIN.as_secs_f64();
    let end = Duration::from_secs_f64(secs);
    let x = Scale::Linear(0.0, secs);
    let lane = 26.0;
    let frame = Frame {
        w: 1320.0,
        h: 82.0 + lane * 1.4 * lanes.len() as f64,
        left: 130.0,
        right: 14.0,
        top: 44.0,
        bottom: 36.0,
    };
    frame.open(
        out,
        scenario,
        "breaker",
        "",
        "Breaker state over time, per variant",
    );
    frame.shade(out, windows, x);
    frame.axes(
        out,
        (x, &labelled(x), "seconds since the server started"),
        (Scale::Linear(0.0, 1.0), &[], ""),
    );
    for (i, l) in lanes.iter().enumerate() {
        let top = frame.y(1.0) + 16.0 + i as f64 * lane * 1.4;
        let changes = &l.timeline.breaker;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text><g class=\"series\" data-series=\"{}\" data-points=\"{}\" data-total=\"{}\">",
            frame.x(0.0) - 6.0,
            top + lane / 2.0 + 4.0,
            esc(l.name),
            esc(l.name),
            changes.len(),
            changes.len()
        );
        for (j, (at, state)) in changes.iter().enumerate() {
            let until = changes.get(j + 1).map_or(end, |(next, _)| *next).min(end);
            let (a, b) = (
                frame.x(x.frac(at.as_secs_f64())),
                frame.x(x.frac(until.as_secs_f64())),
            );
            let (color, label) = state_color(*state);
            let _ = write!(
                out,
                "<rect x=\"{a:.1}\" y=\"{top:.1}\" width=\"{:.2}\" height=\"{lane}\" fill=\"{color}\"><title>{label} from {:.2} s</title></rect>",
                (b - a).max(0.6),
                at.as_secs_f64()
            );
        }
        out.push_str("</g>\n");
    }
    let items: Vec<(&str, &str, bool)> = [
        BreakerState::Closed,
        BreakerState::HalfOpen,
        BreakerState::Open,
    ]
    .into_iter()
    .map(|s| {
        let (c, l) = state_color(s);
        (l, c, false)
    })
    .collect();
    frame.legend(out, &items);
    out.push_str("</svg>\n");
}

/// `s` escaped for HTML text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(250.0), "250");
        assert_eq!(num(0.05), "0.05");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            Scale::Linear(0.0, 10.0).ticks(),
            [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(
            Scale::Log(1.0, 100.0).ticks(),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(Scale::Linear(0.0, 0.0).ticks(), [0.0]);
        assert_eq!(Scale::Log(1.0, 10.0).frac(0.5), 0.0);
        assert_eq!(Scale::Linear(0.0, 10.0).frac(20.0), 1.0);
    }
}
