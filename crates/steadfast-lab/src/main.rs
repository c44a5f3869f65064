//! `steadfast-lab`: runs the lab's fault scenarios against real local HTTP servers and prints what
//! each client configuration achieved. See `steadfast-lab --help` and the `steadfast_lab`
//! library docs.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use steadfast_lab::chaos::ChaosSpec;
use steadfast_lab::metrics::PrometheusMetrics;
use steadfast_lab::scenarios::{self, Scenario};
use steadfast_lab::{Options, DEFAULT_SEED};

const USAGE: &str = "\
steadfast-lab: fault scenarios for the steadfast layers, against real HTTP servers on 127.0.0.1

USAGE:
    steadfast-lab [OPTIONS]

OPTIONS:
    --scenario NAME   run only NAME (repeat, or separate names with commas; default: all)
    --quick           small runs, for CI (the whole quick run takes about 45 s)
    --seed N          seed of every injected fault, jitter and arrival process (default: 1)
    --json            print one JSON object per scenario per line on stdout, nothing else
    --html FILE       also write one self-contained HTML report to FILE: the tables and, per
                      scenario, plots of latency by percentile, successes, failures, refusals
                      and server calls per 100 ms (fault windows shaded), breaker state over
                      time and amplification (inline SVG: no script, no network)
    --check           exit non-zero if any scenario's target is not met
    --list            list the scenarios and exit
    --store NAME      saga log of the saga scenario: sqlite (default, in a temp dir) or
                      postgres (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test;
                      a schema of its own, dropped at the end)
    --crash           saga scenario: run the orchestrator in a child process, SIGKILL it at
                      random points and restart it
    --chaos SPEC      add client-side faults to every scenario with steadfast's ChaosLayer:
                      SPEC is a comma list of error=P (fail before sending), abort=P (lose the
                      response after it was served), latency=P:D (send D late, e.g. 0.1:250ms);
                      seeded by --seed. Targets are calibrated without it.
    --metrics-addr HOST:PORT
                      while the scenarios run, serve the layers' metrics as Prometheus text
                      on http://HOST:PORT/metrics (port 0: the OS picks; the address is
                      printed on stderr), for a Prometheus and a dashboard to watch the run;
                      at the end, waits (at most 30 s) for one more scrape, if anyone scraped
    -h, --help        print this help and exit

Progress goes to stderr. Set RUST_LOG (e.g. RUST_LOG=steadfast=debug) for the layers' traces.";

#[derive(Debug)]
enum Command {
    Help,
    List,
    Run(Args),
}

#[derive(Debug)]
struct Args {
    scenarios: Vec<&'static Scenario>,
    quick: bool,
    seed: u64,
    json: bool,
    check: bool,
    html: Option<PathBuf>,
    store: Option<String>,
    crash: bool,
    chaos: Option<ChaosSpec>,
    metrics_addr: Option<SocketAddr>,
}

/// How `--store` and `--crash` reach the saga scenario (read by `scenarios/saga.rs`).
const SAGA_STORE_ENV: &str = "STEADFAST_LAB_SAGA_STORE";
const SAGA_CRASH_ENV: &str = "STEADFAST_LAB_SAGA_CRASH";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut names: Vec<String> = Vec::new();
    let mut quick = false;
    let mut seed = DEFAULT_SEED;
    let mut json = false;
    let mut check = false;
    let mut html = None;
    let mut list = false;
    let mut store = None;
    let mut crash = false;
    let mut chaos = None;
    let mut metrics_addr = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs {what}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--list" => list = true,
            "--quick" => quick = true,
            "--json" => json = true,
            "--check" => check = true,
            "--crash" => crash = true,
            "--store" => {
                let v = value("sqlite or postgres")?;
                if v != "sqlite" && v != "postgres" {
                    return Err(format!("--store takes sqlite or postgres, got {v:?}"));
                }
                store = Some(v);
            }
            "--html" => html = Some(PathBuf::from(value("a file name")?)),
            "--chaos" => chaos = Some(value("a fault list such as error=0.05")?.parse()?),
            "--metrics-addr" => {
                let v = value("HOST:PORT")?;
                let addr = v
                    .to_socket_addrs()
                    .map_err(|e| format!("--metrics-addr takes HOST:PORT, got {v:?}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("--metrics-addr {v:?} resolves to no address"))?;
                metrics_addr = Some(addr);
            }
            "--scenario" => {
                let v = value("a scenario name")?;
                names.extend(
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty()),
                );
            }
            "--seed" => {
                let v = value("a number")?;
                seed = v
                    .parse()
                    .map_err(|_| format!("--seed needs a non-negative integer, got {v:?}"))?;
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
        if inline.is_some()
            && !matches!(
                flag.as_str(),
                "--scenario" | "--seed" | "--store" | "--chaos" | "--html" | "--metrics-addr"
            )
        {
            return Err(format!("{flag} takes no value"));
        }
    }
    if list {
        return Ok(Command::List);
    }
    let scenarios = if names.is_empty() || names.iter().any(|n| n == "all") {
        scenarios::ALL.iter().collect()
    } else {
        let mut chosen: Vec<&'static Scenario> = Vec::new();
        for n in &names {
            let s = scenarios::find(n).ok_or_else(|| {
                let known: Vec<&str> = scenarios::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario {n:?} (known: {}, all)", known.join(", "))
            })?;
            if !chosen.iter().any(|c| c.name() == s.name()) {
                chosen.push(s);
            }
        }
        chosen
    };
    Ok(Command::Run(Args {
        scenarios,
        quick,
        seed,
        json,
        check,
        html,
        store,
        crash,
        chaos,
        metrics_addr,
    }))
}

fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::List) => {
            let width = scenarios::ALL
                .iter()
                .map(|s| s.name().len())
                .max()
                .unwrap_or(0);
            for s in scenarios::ALL {
                println!("{:<width$}  {}", s.name(), s.summary());
            }
            ExitCode::SUCCESS
        }
        Ok(Command::Run(args)) => run(&args),
        Err(msg) => {
            eprintln!("error: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> ExitCode {
    // Before any thread starts (edition 2021: `set_var` is safe, but not thread-safe).
    if let Some(store) = &args.store {
        std::env::set_var(SAGA_STORE_ENV, store);
    }
    if args.crash {
        std::env::set_var(SAGA_CRASH_ENV, "1");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before the first layer is built: the layers capture the global meter when built.
    let metrics_server = match args.metrics_addr {
        None => None,
        Some(addr) => {
            let served = PrometheusMetrics::install_global()
                .and_then(|metrics| runtime.block_on(metrics.serve(addr)));
            match served {
                Ok(server) => {
                    eprintln!("serving metrics on http://{}/metrics", server.local_addr());
                    Some(server)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let opts = Options {
        quick: args.quick,
        seed: args.seed,
        progress: true,
        chaos: args.chaos,
    };
    // Created before the run, so that a path that cannot be written fails at once, not after it.
    let mut html = match &args.html {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Some((path, file)),
            Err(e) => {
                eprintln!(
                    "error: cannot write the HTML report to {}: {e}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut errors = 0;
    let mut missed: Vec<String> = Vec::new();
    let mut reports = Vec::new();
    for scenario in &args.scenarios {
        let report = match runtime.block_on(scenario.run(opts)) {
            Ok(report) => report,
            Err(e) => {
                eprintln!("error: scenario {} could not run: {e}", scenario.name());
                errors += 1;
                continue;
            }
        };
        let mut out = std::io::stdout().lock();
        let written = if args.json {
            match report.to_json_line() {
                Ok(line) => writeln!(out, "{line}"),
                Err(e) => {
                    eprintln!(
                        "error: scenario {}: cannot encode JSON: {e}",
                        scenario.name()
                    );
                    errors += 1;
                    continue;
                }
            }
        } else {
            writeln!(out, "{}", report.render())
        };
        if let Err(e) = written.and_then(|()| out.flush()) {
            eprintln!("error: cannot write to stdout: {e}");
            return ExitCode::FAILURE;
        }
        missed.extend(
            report
                .targets
                .iter()
                .filter(|t| !t.met)
                .map(|t| format!("{}: {}", report.scenario, t.description)),
        );
        if html.is_some() {
            reports.push(report);
        }
    }
    // Written whatever the targets say: a report is most useful when one was missed.
    if let Some((path, file)) = &mut html {
        let page = steadfast_lab::html::render(&reports);
        if let Err(e) = file.write_all(page.as_bytes()).and_then(|()| file.flush()) {
            eprintln!(
                "error: cannot write the HTML report to {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        eprintln!("HTML report written to {}", path.display());
    }
    if let Some(server) = &metrics_server {
        // The run's last values reach the scraper before the process (and its /metrics) ends.
        if server.scrapes() > 0 {
            eprintln!("waiting for a final scrape of /metrics");
            if !runtime.block_on(server.final_scrape(std::time::Duration::from_secs(30))) {
                eprintln!("warning: no scrape of /metrics in the last 30 s");
            }
        }
    }
    if errors > 0 {
        return ExitCode::FAILURE;
    }
    if args.check {
        if !missed.is_empty() {
            eprintln!("check failed: {} target(s) not met:", missed.len());
            for m in &missed {
                eprintln!("  {m}");
            }
            return ExitCode::FAILURE;
        }
        eprintln!("check passed: every target met");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_run_everything() {
        let Ok(Command::Run(args)) = parse(&[]) else {
            panic!("expected a run");
        };
        assert_eq!(args.scenarios.len(), scenarios::ALL.len());
        assert_eq!(args.seed, DEFAULT_SEED);
        assert!(!args.quick && !args.json && !args.check && args.html.is_none());
        assert!(args.store.is_none() && !args.crash && args.chaos.is_none());
        assert!(args.metrics_addr.is_none());
    }

    #[test]
    fn flags_parse() {
        let Ok(Command::Run(args)) = parse(&[
            "--scenario",
            "overload,flaky",
            "--quick",
            "--seed=7",
            "--json",
            "--check",
            "--scenario=flaky",
        ]) else {
            panic!("expected a run");
        };
        let names: Vec<&str> = args.scenarios.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["overload", "flaky"]);
        assert_eq!(args.seed, 7);
        assert!(args.quick && args.json && args.check);
        let Ok(Command::Run(args)) = parse(&["--html", "r.html"]) else {
            panic!("expected a run");
        };
        assert_eq!(args.html, Some(PathBuf::from("r.html")));
        let Ok(Command::Run(args)) = parse(&["--store=postgres", "--crash"]) else {
            panic!("expected a run");
        };
        assert_eq!(args.store.as_deref(), Some("postgres"));
        assert!(args.crash);
        let Ok(Command::Run(args)) = parse(&["--chaos", "error=0.1,abort=0.05"]) else {
            panic!("expected a run");
        };
        let chaos = args.chaos.expect("chaos");
        assert_eq!((chaos.error, chaos.abort, chaos.latency), (0.1, 0.05, None));
        let Ok(Command::Run(args)) = parse(&["--chaos=latency=0.5:20ms"]) else {
            panic!("expected a run");
        };
        assert!(args.chaos.expect("chaos").latency.is_some());
        let Ok(Command::Run(args)) = parse(&["--metrics-addr", "127.0.0.1:9464"]) else {
            panic!("expected a run");
        };
        assert_eq!(
            args.metrics_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        let Ok(Command::Run(args)) = parse(&["--metrics-addr=127.0.0.1:0"]) else {
            panic!("expected a run");
        };
        assert_eq!(args.metrics_addr.map(|a| a.port()), Some(0));
    }

    #[test]
    fn errors_are_reported() {
        assert!(parse(&["--scenario", "nope"]).is_err_and(|e| e.contains("known:")));
        assert!(parse(&["--seed"]).is_err());
        assert!(parse(&["--seed", "-1"]).is_err());
        assert!(parse(&["--quick=yes"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(parse(&["--store", "mysql"]).is_err());
        assert!(parse(&["--crash=yes"]).is_err());
        assert!(parse(&["--chaos"]).is_err());
        assert!(parse(&["--html"]).is_err());
        assert!(parse(&["--metrics-addr"]).is_err());
        assert!(parse(&["--metrics-addr", "9464"]).is_err_and(|e| e.contains("HOST:PORT")));
        assert!(parse(&["--chaos", "error=2"]).is_err_and(|e| e.contains("probability")));
        assert!(matches!(parse(&["--quick", "-h"]), Ok(Command::Help)));
        assert!(matches!(parse(&["--list"]), Ok(Command::List)));
    }
}
