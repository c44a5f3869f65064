//! The command line, parsed by hand: global options (`--store`, `--json`) anywhere, one
//! `saga <command>` with its arguments and options, `--name value` or `--name=value`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use steadfast_saga::{Phase, SagaId, SagaStatus};

pub(crate) const USAGE: &str = "\
steadfast: operate the sagas in a steadfast saga log (SQLite or PostgreSQL)

USAGE:
    steadfast [--store URL] [--json] saga <COMMAND> [ARGS] [OPTIONS]

COMMANDS:
    saga list [--status S] [--type T] [--limit N]
                              sagas, oldest first (default limit 50); S is one of running,
                              compensating, completed, compensated, needs_attention
    saga show ID              a saga: its row, steps (attempts, last errors) and timeline
    saga history ID           a saga's history, one event per line
    saga resume ID            resume a saga that needs attention where it stopped
    saga retry-step ID STEP [--phase forward|compensation]
                              run a stuck step again (same key) and resume the saga;
                              the phase defaults to the one the saga is in
    saga resolve ID --note TEXT [--step STEP] [--phase P] [--output JSON | --failed REASON]
                              record that the stuck step was done by hand (with its output,
                              default null) or definitively failed, and resume the saga;
                              the step defaults to the one the saga is stuck on
    saga cancel ID --reason TEXT
                              cancel a saga before its pivot: it starts no new step and
                              compensates what it completed (refused after the pivot)

OPTIONS:
    --store URL    the saga log: sqlite://PATH or postgres://USER@HOST/DB[?schema=NAME]
                   (default: the STEADFAST_STORE environment variable)
    --json         print JSON instead of tables (one object; shapes in the crate README)
    -h, --help     print this help
    -V, --version  print the version

Operator actions take the saga's lease over, record the decision, and hand the saga back: an
orchestrator that runs its type picks it up at its next poll.

EXIT STATUS:
    0 done; 1 the store failed (unreachable, or a row it cannot read); 2 bad usage (arguments,
    store URL); 3 no such saga; 4 the action was refused (the saga is not in a state it applies
    to: e.g. cancel after the pivot, resume of a saga that does not need attention).
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    Run(Invocation),
    Help,
    Version,
}

/// A command to run, with the global options.
#[derive(Debug, PartialEq)]
pub(crate) struct Invocation {
    pub(crate) store: Option<String>,
    pub(crate) json: bool,
    pub(crate) command: Command,
}

/// One `saga` command.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    List {
        status: Option<SagaStatus>,
        saga_type: Option<String>,
        limit: u32,
    },
    Show {
        id: SagaId,
    },
    History {
        id: SagaId,
    },
    Resume {
        id: SagaId,
    },
    RetryStep {
        id: SagaId,
        step: String,
        phase: Option<Phase>,
    },
    Resolve {
        id: SagaId,
        note: String,
        step: Option<String>,
        phase: Option<Phase>,
        verdict: Verdict,
    },
    Cancel {
        id: SagaId,
        reason: String,
    },
}

/// How `resolve` says the stuck step ended.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Done by hand, with this output.
    Done(serde_json::Value),
    /// Definitively failed, for this reason.
    Failed(String),
}

/// Bad usage: a one-line message.
#[derive(Debug, PartialEq)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Options that take a value.
const VALUED: &[&str] = &[
    "store", "status", "type", "limit", "note", "reason", "step", "phase", "failed", "output",
];

/// The default `list` limit.
pub(crate) const DEFAULT_LIMIT: u32 = 50;

/// Parses the arguments after the program name.
pub(crate) fn parse(args: &[String]) -> Result<Parsed, UsageError> {
    let mut opts: BTreeMap<&str, String> = BTreeMap::new();
    let mut flags: Vec<&str> = Vec::new();
    let mut positional: Vec<&str> = Vec::new();
    let mut it = args.iter();
    let mut only_positional = false;
    while let Some(a) = it.next() {
        if only_positional || !a.starts_with('-') || a == "-" {
            positional.push(a);
            continue;
        }
        match a.as_str() {
            "--" => only_positional = true,
            "-h" | "--help" => flags.push("help"),
            "-V" | "--version" => flags.push("version"),
            "--json" => flags.push("json"),
            _ => {
                let Some(body) = a.strip_prefix("--") else {
                    return Err(usage(format!("unknown option {a:?}")));
                };
                let (name, inline) = match body.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (body, None),
                };
                let Some(name) = VALUED.iter().copied().find(|v| *v == name) else {
                    return Err(usage(format!("unknown option --{name}")));
                };
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| usage(format!("--{name} needs a value")))?,
                };
                if opts.insert(name, value).is_some() {
                    return Err(usage(format!("--{name} is given twice")));
                }
            }
        }
    }
    if flags.contains(&"help") {
        return Ok(Parsed::Help);
    }
    if flags.contains(&"version") {
        return Ok(Parsed::Version);
    }
    let json = flags.contains(&"json");
    let store = opts.remove("store");
    let (group, rest) = match positional.split_first() {
        None => return Err(usage("no command given")),
        Some((g, rest)) => (*g, rest),
    };
    if group != "saga" {
        return Err(usage(format!(
            "unknown command {group:?} (commands: saga ...)"
        )));
    }
    let Some((name, args)) = rest.split_first() else {
        return Err(usage("saga: no command given"));
    };
    let name = *name;
    let allowed: &[&str] = match name {
        "list" => &["status", "type", "limit"],
        "show" | "history" | "resume" => &[],
        "retry-step" => &["phase"],
        "resolve" => &["note", "step", "phase", "failed", "output"],
        "cancel" => &["reason"],
        other => return Err(usage(format!("unknown command saga {other:?}"))),
    };
    if let Some(extra) = opts.keys().find(|k| !allowed.contains(k)) {
        return Err(usage(format!("--{extra} does not apply to saga {name}")));
    }
    let want = |n: usize, what: &str| -> Result<(), UsageError> {
        if args.len() == n {
            Ok(())
        } else {
            Err(usage(format!("saga {name} takes {what}")))
        }
    };
    let id = |s: &str| -> Result<SagaId, UsageError> {
        SagaId::from_str(s).map_err(|e| usage(format!("{s:?} is not a saga id: {e}")))
    };
    let phase = |opts: &mut BTreeMap<&str, String>| -> Result<Option<Phase>, UsageError> {
        opts.remove("phase")
            .map(|p| {
                Phase::from_str(&p)
                    .map_err(|_| usage(format!("--phase {p:?}: use forward or compensation")))
            })
            .transpose()
    };
    let command = match name {
        "list" => {
            want(0, "no arguments")?;
            let status = opts
                .remove("status")
                .map(|s| {
                    SagaStatus::from_str(&s.replace('-', "_")).map_err(|_| {
                        let all: Vec<&str> = SagaStatus::ALL.iter().map(|s| s.as_str()).collect();
                        usage(format!("--status {s:?}: use one of {}", all.join(", ")))
                    })
                })
                .transpose()?;
            let limit = match opts.remove("limit") {
                None => DEFAULT_LIMIT,
                Some(l) => match l.parse::<u32>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(usage(format!("--limit {l:?}: use a number from 1"))),
                },
            };
            Command::List {
                status,
                saga_type: opts.remove("type"),
                limit,
            }
        }
        "show" => {
            want(1, "one argument: ID")?;
            Command::Show { id: id(args[0])? }
        }
        "history" => {
            want(1, "one argument: ID")?;
            Command::History { id: id(args[0])? }
        }
        "resume" => {
            want(1, "one argument: ID")?;
            Command::Resume { id: id(args[0])? }
        }
        "retry-step" => {
            want(2, "two arguments: ID STEP")?;
            Command::RetryStep {
                id: id(args[0])?,
                step: args[1].to_string(),
                phase: phase(&mut opts)?,
            }
        }
        "resolve" => {
            want(1, "one argument: ID")?;
            let note = opts.remove("note").ok_or_else(|| {
                usage("saga resolve needs --note TEXT (who resolved it, and how)")
            })?;
            let verdict = match (opts.remove("failed"), opts.remove("output")) {
                (Some(_), Some(_)) => {
                    return Err(usage("--failed and --output exclude each other"));
                }
                (Some(why), None) => Verdict::Failed(why),
                (None, Some(out)) => Verdict::Done(
                    serde_json::from_str(&out)
                        .map_err(|e| usage(format!("--output is not JSON: {e}")))?,
                ),
                (None, None) => Verdict::Done(serde_json::Value::Null),
            };
            Command::Resolve {
                id: id(args[0])?,
                note,
                step: opts.remove("step"),
                phase: phase(&mut opts)?,
                verdict,
            }
        }
        "cancel" => {
            want(1, "one argument: ID")?;
            let reason = opts
                .remove("reason")
                .ok_or_else(|| usage("saga cancel needs --reason TEXT"))?;
            Command::Cancel {
                id: id(args[0])?,
                reason,
            }
        }
        _ => unreachable!("checked above"),
    };
    Ok(Parsed::Run(Invocation {
        store,
        json,
        command,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, UsageError> {
        parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    const ID: &str = "5f0c1d4e-9a51-4c7e-8a3b-2f1e6d7c8b9a";

    #[test]
    fn global_options_go_anywhere_and_values_take_both_forms() {
        let want = Parsed::Run(Invocation {
            store: Some("sqlite://x.db".into()),
            json: true,
            command: Command::List {
                status: Some(SagaStatus::NeedsAttention),
                saga_type: Some("book-trip".into()),
                limit: 5,
            },
        });
        let a = run(&[
            "--store",
            "sqlite://x.db",
            "saga",
            "list",
            "--status",
            "needs_attention",
            "--type",
            "book-trip",
            "--limit",
            "5",
            "--json",
        ]);
        let b = run(&[
            "saga",
            "--json",
            "list",
            "--status=needs-attention",
            "--type=book-trip",
            "--limit=5",
            "--store=sqlite://x.db",
        ]);
        assert_eq!(a, Ok(want));
        assert_eq!(a, b);
        assert_eq!(
            run(&["saga", "list"]),
            Ok(Parsed::Run(Invocation {
                store: None,
                json: false,
                command: Command::List {
                    status: None,
                    saga_type: None,
                    limit: DEFAULT_LIMIT
                },
            }))
        );
    }

    #[test]
    fn every_command_parses() {
        let id: SagaId = ID.parse().unwrap();
        let cmd = |args: &[&str]| match run(args).unwrap() {
            Parsed::Run(i) => i.command,
            other => panic!("{other:?}"),
        };
        assert_eq!(cmd(&["saga", "show", ID]), Command::Show { id });
        assert_eq!(cmd(&["saga", "history", ID]), Command::History { id });
        assert_eq!(cmd(&["saga", "resume", ID]), Command::Resume { id });
        assert_eq!(
            cmd(&[
                "saga",
                "retry-step",
                ID,
                "charge",
                "--phase",
                "compensation"
            ]),
            Command::RetryStep {
                id,
                step: "charge".into(),
                phase: Some(Phase::Compensation)
            }
        );
        assert_eq!(
            cmd(&[
                "saga",
                "resolve",
                ID,
                "--note",
                "refunded by hand",
                "--output",
                "{\"a\":1}"
            ]),
            Command::Resolve {
                id,
                note: "refunded by hand".into(),
                step: None,
                phase: None,
                verdict: Verdict::Done(serde_json::json!({"a": 1})),
            }
        );
        assert_eq!(
            cmd(&["saga", "resolve", ID, "--note", "n", "--step", "s", "--failed", "declined"]),
            Command::Resolve {
                id,
                note: "n".into(),
                step: Some("s".into()),
                phase: None,
                verdict: Verdict::Failed("declined".into()),
            }
        );
        assert_eq!(
            cmd(&["saga", "cancel", ID, "--reason", "customer changed plans"]),
            Command::Cancel {
                id,
                reason: "customer changed plans".into()
            }
        );
        assert_eq!(run(&["saga", "show", ID, "--help"]), Ok(Parsed::Help));
        assert_eq!(run(&["-V"]), Ok(Parsed::Version));
    }

    #[test]
    fn bad_usage_is_a_clear_one_line_error() {
        let err = |args: &[&str]| run(args).unwrap_err().0;
        for (args, want) in [
            (&["saga"][..], "saga: no command given"),
            (&[], "no command given"),
            (&["sagas", "list"], "unknown command \"sagas\""),
            (
                &["saga", "frobnicate"],
                "unknown command saga \"frobnicate\"",
            ),
            (&["saga", "show"], "saga show takes one argument: ID"),
            (&["saga", "show", "42"], "\"42\" is not a saga id"),
            (
                &["saga", "show", ID, "--status", "running"],
                "--status does not apply to saga show",
            ),
            (
                &["saga", "list", "--status", "done"],
                "--status \"done\": use one of running",
            ),
            (
                &["saga", "list", "--limit", "0"],
                "--limit \"0\": use a number from 1",
            ),
            (&["saga", "list", "--limit"], "--limit needs a value"),
            (&["saga", "list", "--frob"], "unknown option --frob"),
            (&["saga", "list", "-x"], "unknown option \"-x\""),
            (
                &["saga", "list", "--type", "a", "--type", "b"],
                "--type is given twice",
            ),
            (&["saga", "cancel", ID], "saga cancel needs --reason TEXT"),
            (&["saga", "resolve", ID], "saga resolve needs --note TEXT"),
            (
                &["saga", "resolve", ID, "--note", "n", "--output", "{"],
                "--output is not JSON",
            ),
            (
                &[
                    "saga", "resolve", ID, "--note", "n", "--output", "1", "--failed", "x",
                ],
                "exclude each other",
            ),
            (
                &["saga", "retry-step", ID, "s", "--phase", "back"],
                "--phase \"back\": use forward or compensation",
            ),
        ] {
            let e = err(args);
            assert!(e.contains(want), "{args:?}: {e:?} lacks {want:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }
}
