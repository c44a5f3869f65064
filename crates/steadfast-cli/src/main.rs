//! `steadfast`: the operator's command line for steadfast sagas. See `steadfast --help` and the
//! crate README (commands, store URLs, the JSON shapes, exit codes).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use steadfast_saga::store::{ListQuery, SagaRecord, SagaStore, StepState};
use steadfast_saga::{Error, Orchestrator, Phase, Resolution, SagaId, SagaStatus};

mod args;
mod render;
mod store;

use args::{Command, Invocation, Parsed, Verdict};

/// Exit status: the store failed.
pub(crate) const FAILURE: u8 = 1;
/// Exit status: bad usage (arguments, store URL).
pub(crate) const USAGE: u8 = 2;
/// Exit status: no such saga.
pub(crate) const NOT_FOUND: u8 = 3;
/// Exit status: the action does not apply to the saga as it is.
pub(crate) const REFUSED: u8 = 4;

/// A failed command: its exit status and a one-line message.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl CliError {
    pub(crate) fn usage(m: impl Into<String>) -> Self {
        CliError {
            code: USAGE,
            message: m.into(),
        }
    }

    pub(crate) fn failure(m: impl Into<String>) -> Self {
        CliError {
            code: FAILURE,
            message: m.into(),
        }
    }

    fn refused(m: impl Into<String>) -> Self {
        CliError {
            code: REFUSED,
            message: m.into(),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound(_) => NOT_FOUND,
            Error::InvalidOperation(_)
            | Error::CancelRefused(_)
            | Error::CancelRequested(_)
            | Error::Fenced(_)
            | Error::UnknownSagaType(_)
            | Error::DefinitionChanged(_) => REFUSED,
            _ => FAILURE,
        };
        CliError {
            code,
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inv = match args::parse(&args) {
        Ok(Parsed::Run(inv)) => inv,
        Ok(Parsed::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("steadfast {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&CliError::usage(format!("{e} (see steadfast --help)"))),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::failure(format!("cannot start: {e}"))),
    };
    match rt.block_on(run(inv)) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`steadfast saga list | head`) is not an error of ours.
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Prints the error on one line of stderr; returns its exit status.
fn fail(e: &CliError) -> ExitCode {
    let one_line: String = e
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    eprintln!("steadfast: {one_line}");
    ExitCode::from(e.code)
}

/// This process's owner id in leases and history entries.
fn owner() -> String {
    let user = std::env::var("USER").unwrap_or_default();
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(32)
        .collect();
    if user.is_empty() {
        format!("steadfast-cli-{}", std::process::id())
    } else {
        format!("steadfast-cli-{user}-{}", std::process::id())
    }
}

fn to_json(v: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| CliError::failure(format!("cannot write JSON: {e}")))
}

/// Runs one command; returns what to print.
async fn run(inv: Invocation) -> Result<String, CliError> {
    let url = match inv.store.or_else(|| std::env::var("STEADFAST_STORE").ok()) {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(CliError::usage(
                "no store: pass --store URL or set STEADFAST_STORE (see steadfast --help)",
            ))
        }
    };
    let store: Arc<dyn SagaStore> = store::open(&url).await?;
    // No definitions: operator actions record their decision and hand the saga over.
    let orch = Orchestrator::builder(store)
        .owner(owner())
        .build()
        .map_err(|e| CliError::failure(e.to_string()))?;
    let json = inv.json;
    match inv.command {
        Command::List {
            status,
            saga_type,
            limit,
        } => {
            let mut q = ListQuery::new(limit);
            if let Some(s) = status {
                q = q.status(s);
            }
            if let Some(t) = saga_type {
                q = q.saga_type(t);
            }
            let sagas = orch.list(q).await?;
            if json {
                to_json(&render::ListJson {
                    sagas: sagas.iter().map(render::SummaryJson::from).collect(),
                })
            } else {
                Ok(render::list_table(&sagas))
            }
        }
        Command::Show { id } => {
            let rec = orch.get(id).await?;
            let h = orch.history(id).await?;
            if json {
                to_json(&render::ShowJson::new(&rec, &h))
            } else {
                Ok(render::show_text(&rec, &h))
            }
        }
        Command::History { id } => {
            let h = orch.history(id).await?;
            if json {
                to_json(&render::HistoryJson::new(id, &h))
            } else {
                Ok(render::history_table(&h))
            }
        }
        Command::Resume { id } => {
            let rec = orch.get(id).await?;
            orch.resume(id).await?;
            done(
                &orch,
                json,
                id,
                "resume",
                &format!("saga {id} resumed{}", handed(&rec)),
            )
            .await
        }
        Command::RetryStep { id, step, phase } => {
            let rec = orch.get(id).await?;
            let phase = phase.unwrap_or(if rec.compensating {
                Phase::Compensation
            } else {
                Phase::Forward
            });
            orch.retry_step(id, &step, phase).await?;
            let msg = format!(
                "saga {id}: step {step:?} ({phase}) will run again{}",
                handed(&rec)
            );
            done(&orch, json, id, "retry-step", &msg).await
        }
        Command::Resolve {
            id,
            note,
            step,
            phase,
            verdict,
        } => {
            let rec = orch.get(id).await?;
            let (step, phase) = stuck_step(&rec, step, phase)?;
            let resolution = match verdict {
                Verdict::Done(v) => Resolution::Succeeded(v),
                Verdict::Failed(why) => Resolution::Failed(why),
            };
            orch.mark_resolved(id, &step, phase, resolution, &note)
                .await?;
            let msg = format!(
                "saga {id}: step {step:?} ({phase}) resolved{}",
                handed(&rec)
            );
            done(&orch, json, id, "resolve", &msg).await
        }
        Command::Cancel { id, reason } => {
            orch.cancel(id, &reason).await?;
            let rec = orch.get(id).await?;
            let msg = if rec.cancel_requested.as_deref() == Some(reason.as_str()) {
                format!(
                    "saga {id} cancelled: it starts no new step and compensates what it completed"
                )
            } else if rec.cancel_requested.is_some() {
                format!("saga {id} was already cancelled (the first reason stands)")
            } else {
                format!("saga {id} is already compensating")
            };
            done(&orch, json, id, "cancel", &msg).await
        }
    }
}

/// How an operator action's saga goes on.
fn handed(rec: &SagaRecord) -> String {
    format!(
        ": the next poll of an orchestrator that runs {:?} picks it up",
        rec.saga_type
    )
}

/// The answer to an operator action.
async fn done(
    orch: &Orchestrator,
    json: bool,
    id: SagaId,
    action: &str,
    message: &str,
) -> Result<String, CliError> {
    let status = orch.get(id).await.map_or(SagaStatus::Running, |r| r.status);
    if json {
        to_json(&render::ActionJson {
            id: id.to_string(),
            action,
            status: status.as_str(),
            message,
        })
    } else {
        Ok(format!("{message}\n"))
    }
}

/// The step phase `resolve` acts on: the one given, or the one step phase the saga is stuck on
/// (recorded, and neither succeeded nor failed).
fn stuck_step(
    rec: &SagaRecord,
    step: Option<String>,
    phase: Option<Phase>,
) -> Result<(String, Phase), CliError> {
    let default_phase = if rec.compensating {
        Phase::Compensation
    } else {
        Phase::Forward
    };
    if let Some(s) = step {
        return Ok((s, phase.unwrap_or(default_phase)));
    }
    let open: Vec<_> = rec
        .steps
        .iter()
        .filter(|s| !matches!(s.state, StepState::Succeeded | StepState::Failed))
        .filter(|s| phase.is_none_or(|p| s.phase == p))
        .collect();
    match open.as_slice() {
        [one] => Ok((one.step.clone(), one.phase)),
        [] => Err(CliError::refused(format!(
            "saga {} has no step left unresolved: name it with --step, or use saga resume",
            rec.id
        ))),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|s| format!("{} ({})", s.step, s.phase))
                .collect();
            Err(CliError::usage(format!(
                "saga {} has several unresolved steps ({}): pick one with --step",
                rec.id,
                names.join(", ")
            )))
        }
    }
}
