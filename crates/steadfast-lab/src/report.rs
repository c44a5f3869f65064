//! Scenario results: a readable table, or one JSON object per line.
//!
//! The JSON object of a scenario is
//! `{"scenario", "description", "quick", "seed", "config", "variants", "targets", "targets_met",
//! "elapsed_s"}`; each variant is
//! `{"name", "requests", "succeeded", "server_calls", "amplification", "p50_ms", "p99_ms",
//! "p999_ms", ...}` followed by the scenario's own measures. These field names are a published
//! contract: do not rename them. `amplification` is `server_calls / requests`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::load::Summary;
use crate::timeline::Timeline;

/// The value of a scenario-specific measure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A count.
    Count(u64),
    /// A share in `[0, 1]`, shown as a percentage.
    Ratio(f64),
    /// A number shown with this many decimals.
    Number(f64, usize),
}

impl Value {
    /// As a float.
    pub fn as_f64(&self) -> f64 {
        match *self {
            Value::Count(n) => n as f64,
            Value::Ratio(x) | Value::Number(x, _) => x,
        }
    }

    fn display(&self) -> String {
        match *self {
            Value::Count(n) => n.to_string(),
            Value::Ratio(x) => format!("{:.1}%", x * 100.0),
            Value::Number(x, d) => format!("{x:.d$}"),
        }
    }

    fn to_json(self) -> serde_json::Value {
        match self {
            Value::Count(n) => n.into(),
            Value::Ratio(x) => round(x, 4).into(),
            Value::Number(x, d) => round(x, d.max(3)).into(),
        }
    }
}

/// A scenario-specific measure of one variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// JSON field name.
    pub key: &'static str,
    /// Table column header.
    pub header: &'static str,
    /// The value.
    pub value: Value,
    /// Whether the table shows it (JSON always does).
    pub in_table: bool,
}

/// The measure `key` of the variant called `variant` among `reports` (see
/// [`VariantReport::get`]), or NaN when either is missing, so that a target computed from it is
/// not met.
///
/// ```
/// use steadfast_lab::report::value;
/// assert!(value(&[], "hedge", "p99_ms").is_nan());
/// ```
pub fn value(reports: &[VariantReport], variant: &str, key: &str) -> f64 {
    reports
        .iter()
        .find(|r| r.name == variant)
        .and_then(|r| r.get(key))
        .unwrap_or(f64::NAN)
}

/// How one client configuration fared.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantReport {
    /// The variant's name.
    pub name: &'static str,
    /// Logical requests sent.
    pub requests: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Calls that reached the server (every attempt).
    pub server_calls: u64,
    /// Median latency of all requests, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Scenario-specific measures, in order.
    pub metrics: Vec<Metric>,
    /// What the run looked like over time, for the HTML report's plots (not in the JSON).
    pub timeline: Option<Timeline>,
}

impl VariantReport {
    /// The standard fields from a latency [`Summary`] and the server's call count.
    pub fn new(name: &'static str, summary: &Summary, server_calls: u64) -> Self {
        VariantReport {
            name,
            requests: summary.requests,
            succeeded: summary.succeeded,
            server_calls,
            p50_ms: summary.p50_ms,
            p99_ms: summary.p99_ms,
            p999_ms: summary.p999_ms,
            metrics: Vec::new(),
            timeline: None,
        }
    }

    /// Attaches what the run looked like over time (the HTML report plots it; the JSON and the
    /// table do not show it).
    pub fn timeline(mut self, timeline: Timeline) -> Self {
        self.timeline = Some(timeline);
        self
    }

    /// `server_calls / requests` (0 when no request was sent).
    pub fn amplification(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.server_calls as f64 / self.requests as f64
        }
    }

    /// Share of requests that succeeded.
    pub fn success_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.succeeded as f64 / self.requests as f64
        }
    }

    /// Adds a measure shown in the table and the JSON.
    pub fn metric(mut self, key: &'static str, header: &'static str, value: Value) -> Self {
        self.metrics.push(Metric {
            key,
            header,
            value,
            in_table: true,
        });
        self
    }

    /// Adds a measure shown in the JSON only.
    pub fn json_metric(mut self, key: &'static str, value: Value) -> Self {
        self.metrics.push(Metric {
            key,
            header: key,
            value,
            in_table: false,
        });
        self
    }

    /// A measure by JSON key: the standard fields or a scenario-specific one.
    pub fn get(&self, key: &str) -> Option<f64> {
        Some(match key {
            "requests" => self.requests as f64,
            "succeeded" => self.succeeded as f64,
            "server_calls" => self.server_calls as f64,
            "amplification" => self.amplification(),
            "p50_ms" => self.p50_ms,
            "p99_ms" => self.p99_ms,
            "p999_ms" => self.p999_ms,
            _ => {
                return self
                    .metrics
                    .iter()
                    .find(|m| m.key == key)
                    .map(|m| m.value.as_f64())
            }
        })
    }
}

impl Serialize for VariantReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(8 + self.metrics.len()))?;
        map.serialize_entry("name", self.name)?;
        map.serialize_entry("requests", &self.requests)?;
        map.serialize_entry("succeeded", &self.succeeded)?;
        map.serialize_entry("server_calls", &self.server_calls)?;
        map.serialize_entry("amplification", &round(self.amplification(), 4))?;
        map.serialize_entry("p50_ms", &round(self.p50_ms, 3))?;
        map.serialize_entry("p99_ms", &round(self.p99_ms, 3))?;
        map.serialize_entry("p999_ms", &round(self.p999_ms, 3))?;
        for m in &self.metrics {
            map.serialize_entry(m.key, &m.value.to_json())?;
        }
        map.end()
    }
}

/// One target of a scenario and whether it was met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// What was expected and what was measured, in words.
    pub description: String,
    /// Whether it held.
    pub met: bool,
}

impl Target {
    /// A target `description` that `met` or not.
    pub fn new(met: bool, description: impl Into<String>) -> Self {
        Target {
            description: description.into(),
            met,
        }
    }
}

/// What a scenario's own code finds: its configuration lines, one row per variant and its
/// targets. [`Scenario::run`](crate::scenarios::Scenario::run) adds the header every report
/// shares (the scenario's name and summary, the mode, the seed) and the time the run took.
#[derive(Debug)]
pub(crate) struct Findings {
    /// The configuration, as (label, description) lines.
    pub(crate) config: Vec<(&'static str, String)>,
    /// One row per client configuration.
    pub(crate) variants: Vec<VariantReport>,
    /// The scenario's targets.
    pub(crate) targets: Vec<Target>,
}

/// Everything one scenario run found.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: &'static str,
    /// One line: what the scenario shows.
    pub description: String,
    /// Whether it ran in quick mode.
    pub quick: bool,
    /// The seed it ran with.
    pub seed: u64,
    /// The configuration, as (label, description) lines.
    pub config: Vec<(&'static str, String)>,
    /// One row per client configuration.
    pub variants: Vec<VariantReport>,
    /// The scenario's targets.
    pub targets: Vec<Target>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl ScenarioReport {
    /// Whether every target held.
    pub fn targets_met(&self) -> bool {
        self.targets.iter().all(|t| t.met)
    }

    /// The variant called `name`.
    pub fn variant(&self, name: &str) -> Option<&VariantReport> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The JSON object, on one line.
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// The readable report: header, configuration, table, targets.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mode = if self.quick { ", quick" } else { "" };
        let _ = writeln!(out, "== {} (seed {}{mode}) ==", self.scenario, self.seed);
        let _ = writeln!(out, "{}", self.description);
        let label_width = self.config.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.config {
            let _ = writeln!(out, "  {k:<label_width$}  {v}");
        }
        let _ = writeln!(out);
        out.push_str(&self.table());
        let _ = writeln!(out);
        if !self.targets.is_empty() {
            let _ = writeln!(out, "  targets:");
            for t in &self.targets {
                let mark = if t.met { "[met]   " } else { "[MISSED]" };
                let _ = writeln!(out, "    {mark} {}", t.description);
            }
        }
        let _ = writeln!(out, "  took {:.1} s", self.elapsed.as_secs_f64());
        out
    }

    /// The table's header and rows, as the text report shows them (the HTML report too).
    pub fn table_cells(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let mut headers: Vec<&'static str> = vec![
            "variant",
            "requests",
            "succeeded",
            "server_calls",
            "amplif.",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
        ];
        let extra: Vec<&'static str> = self
            .variants
            .iter()
            .flat_map(|v| v.metrics.iter().filter(|m| m.in_table).map(|m| m.header))
            .fold(Vec::new(), |mut acc, h| {
                if !acc.contains(&h) {
                    acc.push(h);
                }
                acc
            });
        headers.extend(extra.iter().copied());
        let rows: Vec<Vec<String>> = self
            .variants
            .iter()
            .map(|v| {
                let mut row = vec![
                    v.name.to_owned(),
                    v.requests.to_string(),
                    v.succeeded.to_string(),
                    v.server_calls.to_string(),
                    format!("{:.2}", v.amplification()),
                    format!("{:.1}", v.p50_ms),
                    format!("{:.1}", v.p99_ms),
                    format!("{:.1}", v.p999_ms),
                ];
                for h in &extra {
                    let cell = v
                        .metrics
                        .iter()
                        .find(|m| m.in_table && m.header == *h)
                        .map(|m| m.value.display())
                        .unwrap_or_else(|| "-".to_owned());
                    row.push(cell);
                }
                row
            })
            .collect();
        (headers, rows)
    }

    fn table(&self) -> String {
        let (headers, rows) = self.table_cells();
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain(std::iter::once(headers[i].len()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut s = String::from(" ");
            for (i, c) in cells.iter().enumerate() {
                let w = widths[i];
                if i == 0 {
                    let _ = write!(s, " {c:<w$}");
                } else {
                    let _ = write!(s, "  {c:>w$}");
                }
            }
            s.push('\n');
            s
        };
        let mut out = line(&headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&rule));
        for r in &rows {
            out.push_str(&line(r));
        }
        out
    }
}

impl Serialize for ScenarioReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Config<'a>(&'a [(&'static str, String)]);
        impl Serialize for Config<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
        struct Targets<'a>(&'a [Target]);
        impl Serialize for Targets<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for t in self.0 {
                    seq.serialize_element(&serde_json::json!({
                        "target": t.description,
                        "met": t.met,
                    }))?;
                }
                seq.end()
            }
        }
        let mut map = s.serialize_map(Some(9))?;
        map.serialize_entry("scenario", self.scenario)?;
        map.serialize_entry("description", &self.description)?;
        map.serialize_entry("quick", &self.quick)?;
        map.serialize_entry("seed", &self.seed)?;
        map.serialize_entry("config", &Config(&self.config))?;
        map.serialize_entry("variants", &self.variants)?;
        map.serialize_entry("targets", &Targets(&self.targets))?;
        map.serialize_entry("targets_met", &self.targets_met())?;
        map.serialize_entry("elapsed_s", &round(self.elapsed.as_secs_f64(), 3))?;
        map.end()
    }
}

/// `x` rounded to `decimals` places (non-finite values become 0, which JSON can carry).
fn round(x: f64, decimals: usize) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    let scale = 10f64.powi(i32::try_from(decimals).unwrap_or(6));
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ScenarioReport {
        let summary = Summary {
            requests: 1000,
            succeeded: 990,
            p50_ms: 4.12345,
            p99_ms: 20.0,
            p999_ms: 40.0,
        };
        ScenarioReport {
            scenario: "demo",
            description: "A demo.".to_owned(),
            quick: true,
            seed: 1,
            config: vec![("server", "20% 503s".to_owned())],
            variants: vec![VariantReport::new("naive_retry", &summary, 1240)
                .metric("success_rate", "success", Value::Ratio(0.99))
                .json_metric("retries", Value::Count(240))],
            targets: vec![Target::new(true, "it works")],
            elapsed: Duration::from_millis(1500),
        }
    }

    #[test]
    fn json_has_the_contract_fields() -> Result<(), serde_json::Error> {
        let line = sample().to_json_line()?;
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["scenario"], "demo");
        let variant = &v["variants"][0];
        for key in [
            "name",
            "requests",
            "succeeded",
            "server_calls",
            "amplification",
            "p50_ms",
            "p99_ms",
            "p999_ms",
        ] {
            assert!(variant.get(key).is_some(), "missing {key}");
        }
        assert_eq!(variant["amplification"], 1.24);
        assert_eq!(variant["p50_ms"], 4.123);
        assert_eq!(variant["success_rate"], 0.99);
        assert_eq!(variant["retries"], 240);
        assert_eq!(v["targets_met"], true);
        assert_eq!(v["config"]["server"], "20% 503s");
        Ok(())
    }

    #[test]
    fn table_lines_up() {
        let text = sample().render();
        assert!(text.contains("== demo (seed 1, quick) =="), "{text}");
        assert!(text.contains("success"), "{text}");
        assert!(!text.contains("retries"), "{text}");
        assert!(text.contains("[met]"), "{text}");
        let table: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("naive_retry") || l.contains("variant"))
            .collect();
        assert_eq!(table.len(), 2);
        assert_eq!(table[0].len(), table[1].len(), "{text}");
    }

    #[test]
    fn get_reads_standard_and_extra_fields() {
        let r = sample();
        let v = r.variant("naive_retry").expect("variant");
        assert_eq!(v.get("amplification"), Some(1.24));
        assert_eq!(v.get("success_rate"), Some(0.99));
        assert_eq!(v.get("nope"), None);
    }
}
