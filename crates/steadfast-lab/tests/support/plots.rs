//! Reads the plots back out of the lab's HTML report, as a browser-free check that every plot
//! draws data: each `<svg class="plot">` and its elements with `class="series"` (see
//! `steadfast_lab::html`), their point counts checked against the coordinates they draw.

#![allow(dead_code)]

use steadfast_lab::report::ScenarioReport;

/// One plot: its kind (`latency`, `timeseries`, `breaker`, `amplification`) and series.
#[derive(Debug)]
pub(crate) struct Plot {
    pub(crate) kind: String,
    pub(crate) scenario: String,
    pub(crate) variant: Option<String>,
    pub(crate) series: Vec<Series>,
}

/// One data series of a plot.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: usize,
    pub(crate) total: f64,
}

/// `name="value"` pairs of a tag's text.
fn attrs(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq]
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("")
            .to_owned();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        out.push((name, after[..end].to_owned()));
        rest = &after[end + 1..];
    }
    out
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Every plot of `page`, with its series; panics when a series' declared point count does not
/// match the coordinates it draws.
pub(crate) fn plots(page: &str) -> Vec<Plot> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find("<svg ") {
        let svg = &rest[start..];
        let end = svg.find("</svg>").expect("every <svg> is closed");
        let body = &svg[..end];
        let open_end = body.find('>').expect("the <svg> tag ends");
        let open = attrs(&body[..open_end]);
        assert_eq!(
            attr(&open, "class"),
            Some("plot"),
            "an svg that is not a plot"
        );
        let mut plot = Plot {
            kind: attr(&open, "data-plot").expect("data-plot").to_owned(),
            scenario: attr(&open, "data-scenario")
                .expect("data-scenario")
                .to_owned(),
            variant: attr(&open, "data-variant").map(str::to_owned),
            series: Vec::new(),
        };
        let mut tags = &body[open_end..];
        while let Some(lt) = tags.find('<') {
            let gt = tags[lt..].find('>').expect("tags end") + lt;
            let tag = &tags[lt + 1..gt];
            let a = attrs(tag);
            if attr(&a, "class") == Some("series") {
                let points: usize = attr(&a, "data-points")
                    .and_then(|p| p.parse().ok())
                    .expect("data-points");
                let drawn = if tag.starts_with("polyline") {
                    attr(&a, "points").map_or(0, |p| p.split_whitespace().count())
                } else if tag.starts_with("path") {
                    attr(&a, "d").map_or(0, |d| d.matches(['M', 'L']).count())
                } else {
                    points
                };
                let name = attr(&a, "data-series").expect("data-series").to_owned();
                assert_eq!(
                    drawn, points,
                    "{}/{name}: draws {drawn} points, says {points}",
                    plot.kind
                );
                plot.series.push(Series {
                    name,
                    points,
                    total: attr(&a, "data-total")
                        .and_then(|t| t.parse().ok())
                        .expect("data-total"),
                });
            }
            tags = &tags[gt..];
        }
        out.push(plot);
        rest = &svg[end..];
    }
    out
}

/// Renders `report` alone and checks its page: self-contained, no error marker, and every plot
/// it should have, each with data: a latency curve for every variant, an amplification bar for
/// every variant, a time series chart per variant with something in it, and (when
/// `breaker_lanes` is not empty) a breaker lane for each of those variants.
pub(crate) fn check(
    report: &ScenarioReport,
    server_calls: bool,
    breaker_lanes: &[&str],
) -> Vec<Plot> {
    let page = steadfast_lab::html::render(std::slice::from_ref(report));
    let name = report.scenario;
    assert!(
        !page.contains("class=\"plot-error\""),
        "{name}: the page has an error marker"
    );
    assert!(
        !page.contains("<script"),
        "{name}: the page carries a script"
    );
    assert!(
        !page.contains("src=") && !page.contains("href=\"http"),
        "{name}: the page loads something from elsewhere"
    );
    let plots = plots(&page);
    let variants: Vec<&str> = report.variants.iter().map(|v| v.name).collect();
    let of = |kind: &'static str| plots.iter().filter(move |p| p.kind == kind);
    for p in &plots {
        assert_eq!(p.scenario, name);
        assert!(
            !p.series.is_empty(),
            "{name}: plot {} has no series",
            p.kind
        );
        for s in &p.series {
            assert!(s.points > 0, "{name}: {}/{} is empty", p.kind, s.name);
        }
        assert!(
            p.series.iter().map(|s| s.total).sum::<f64>() > 0.0,
            "{name}: plot {} {:?} draws only zeros",
            p.kind,
            p.variant
        );
    }
    let latency: Vec<&str> = of("latency")
        .flat_map(|p| p.series.iter().map(|s| s.name.as_str()))
        .collect();
    assert_eq!(latency, variants, "{name}: latency curves");
    let bars: Vec<&str> = of("amplification")
        .flat_map(|p| p.series.iter().map(|s| s.name.as_str()))
        .collect();
    assert_eq!(bars, variants, "{name}: amplification bars");
    let charts: Vec<&str> = of("timeseries")
        .filter_map(|p| p.variant.as_deref())
        .collect();
    assert_eq!(charts, variants, "{name}: time series charts");
    for p in of("timeseries") {
        let names: Vec<&str> = p.series.iter().map(|s| s.name.as_str()).collect();
        for s in ["successes", "failures", "refusals"] {
            assert!(names.contains(&s), "{name}: {:?} lacks {s}", p.variant);
        }
        if server_calls {
            let calls = p.series.iter().find(|s| s.name == "server calls");
            assert!(
                calls.is_some_and(|s| s.total > 0.0),
                "{name}: {:?} shows no server calls",
                p.variant
            );
        }
        let requests = p
            .series
            .iter()
            .filter(|s| s.name != "server calls")
            .map(|s| s.total)
            .sum::<f64>();
        let sent = report
            .variants
            .iter()
            .find(|v| Some(v.name) == p.variant.as_deref())
            .map_or(0, |v| v.requests);
        assert!(
            requests >= sent as f64,
            "{name}: {:?} bins {requests} request outcomes of the {sent} measured",
            p.variant
        );
    }
    let lanes: Vec<&str> = of("breaker")
        .flat_map(|p| p.series.iter().map(|s| s.name.as_str()))
        .collect();
    assert_eq!(lanes, breaker_lanes, "{name}: breaker lanes");
    plots
}
