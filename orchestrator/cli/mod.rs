//! The command line: argument definitions and one function per command. Every command
//! returns an exit code (see [`exit`]); errors become one clear line on stderr.

pub mod audit;
pub mod exit;
pub mod osuser;
mod progress;

use crate::executor::{ExecOptions, Executor, RunEnd};
use crate::journal::{CommandKind, Journal, JournalError};
use crate::machine::Event;
use crate::playbook::{self, Playbook};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "orchestrator", version, about = "Automated Redis failover: the Redis failover runbook as a journaled state machine.", after_help = exit::TABLE)]
pub struct Cli {
    /// The SQLite journal.
    #[arg(long, global = true, env = "ORCH_DB", default_value = "orchestrator.db")]
    pub db: PathBuf,
    /// Log filter for diagnostics on stderr (e.g. info, debug).
    #[arg(long, global = true, env = "ORCH_LOG", default_value = "warn")]
    pub log: String,
    /// Log format on stderr: text (plain unless stderr is a terminal) or json (one
    /// object a line, for log shippers).
    #[arg(long, global = true, env = "ORCH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate playbooks.
    #[command(subcommand)]
    Playbook(PlaybookCmd),
    /// Open an incident and run it in the foreground to its end or to an approval gate.
    Run(RunArgs),
    /// Open an incident (journal it in Confirm) without running it; `resume` drives it.
    Trigger(TriggerArgs),
    /// Continue an open incident from the journal.
    Resume(ResumeArgs),
    /// Approve the step an incident waits for.
    Approve(CommandArgs),
    /// Reject the step an incident waits for (Aborted, or Rollback after the switch).
    Reject(CommandArgs),
    /// Abort an open incident (after the switch this means Rollback first).
    Abort(CommandArgs),
    /// List incidents.
    Incidents(IncidentsArgs),
    /// Show an incident's timeline: transitions with observations, effects, commands.
    Audit(AuditArgs),
    /// A post-incident report in Markdown.
    Report(AuditArgs),
    /// Run every probe once and print the checklists: a dry run with no side effects.
    Check(PlaybookArg),
    /// Run the daemon: webhooks, watch loop, approvals API, metrics; resumes open incidents.
    Serve(ServeArgs),
    /// Switch automatic failover off for everyone (alerts are still journaled).
    Pause(PauseArgs),
    /// Switch automatic failover back on.
    Unpause(PauseArgs),
    /// The journal itself: verify its hash chains.
    #[command(subcommand)]
    Journal(JournalCmd),
}

#[derive(Subcommand, Debug)]
pub enum JournalCmd {
    /// Re-compute the hash chains (every incident's, alerts', settings'; or one
    /// incident's) and name the first row that differs, a missing row, a row in no
    /// chain, or a dropped trigger. Exit 0 only when all hold.
    Verify {
        /// Only this incident's chain (and the database's triggers).
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlaybookCmd {
    /// Check a playbook: a summary when valid, every problem as FILE:LINE:COLUMN otherwise.
    Check { file: PathBuf },
}

#[derive(Args, Debug)]
pub struct PlaybookArg {
    #[arg(long, short)]
    pub playbook: PathBuf,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long, short)]
    pub playbook: PathBuf,
    /// Why the incident is opened (journaled).
    #[arg(long, default_value = "manual run")]
    pub reason: String,
    /// Wait at approval gates instead of exiting with code 3.
    #[arg(long)]
    pub wait_for_approval: bool,
}

#[derive(Args, Debug)]
pub struct TriggerArgs {
    #[arg(long, short)]
    pub playbook: PathBuf,
    #[arg(long, default_value = "manual trigger")]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    pub id: String,
    #[arg(long, short)]
    pub playbook: PathBuf,
    /// Resume although the playbook changed since the incident pinned it.
    #[arg(long)]
    pub allow_changed_playbook: bool,
    #[arg(long)]
    pub wait_for_approval: bool,
}

#[derive(Args, Debug)]
pub struct CommandArgs {
    pub id: String,
    /// Who is acting (checked against the playbook's approvers for approve/reject).
    #[arg(long = "as", env = "ORCH_USER")]
    pub actor: String,
    /// Why (journaled with the command).
    #[arg(long, short, default_value = "")]
    pub comment: String,
}

#[derive(Args, Debug)]
pub struct IncidentsArgs {
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
    /// Print transitions as they are journaled until the incident ends, then the
    /// whole timeline (for watching an incident that `serve` runs).
    #[arg(long, conflicts_with = "json")]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long, short)]
    pub playbook: PathBuf,
    /// Listen address. Anything but loopback needs ORCH_WEBHOOK_TOKEN (or
    /// ORCH_WEBHOOK_HMAC_SECRET) and ORCH_APPROVER_TOKENS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Resume open incidents although the playbook changed since they pinned it.
    #[arg(long)]
    pub allow_changed_playbook: bool,
    /// Do not run the watch loop (alerts only).
    #[arg(long)]
    pub no_watch: bool,
    /// A request's headers must arrive within this (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub header_timeout: std::time::Duration,
    /// A request's body must arrive within this.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub body_timeout: std::time::Duration,
    /// A web console session (sign-in with an approver token from
    /// ORCH_APPROVER_TOKENS, or a read-only one from ORCH_VIEWER_TOKENS) ends this long
    /// after sign-in.
    #[arg(long, default_value = "12h", value_parser = parse_duration_arg)]
    pub console_session_ttl: std::time::Duration,
    /// Mark the console's session cookie `Secure` always (behind a TLS proxy that does
    /// not send `X-Forwarded-Proto: https`; with it, the cookie is `Secure` anyway).
    #[arg(long)]
    pub console_secure_cookies: bool,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[arg(long = "as", env = "ORCH_USER", default_value = "operator")]
    pub actor: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// A command's failure, already worded for the user, with its exit code.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { code: exit::FAILURE, message: e.to_string() }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { code: exit::USAGE, message: message.into() }
}

fn load_playbook(path: &Path) -> Result<Playbook, Failure> {
    playbook::load(path).map_err(|e| usage(e.to_string()))
}

async fn existing_journal(path: &Path) -> Result<Journal, Failure> {
    Journal::open_existing(path).await.map_err(Failure::from)
}

pub async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Playbook(PlaybookCmd::Check { file }) => {
            let pb = load_playbook(&file)?;
            println!("{}", playbook::Summary(&pb));
            Ok(exit::OK)
        }
        Command::Run(a) => {
            let pb = load_playbook(&a.playbook)?;
            let journal = Journal::open(&cli.db).await?;
            if let Some(open) = journal.open_incident_for(&pb.redis.primary.endpoint()).await? {
                return Err(usage(format!(
                    "incident {} is already open for {} (state {}); `orchestrator resume {} --playbook ...` continues it",
                    open.id, open.target, open.state, open.id
                )));
            }
            let exec = executor(journal, pb, a.wait_for_approval, false);
            let id = exec.open("manual", &a.reason).await?;
            eprintln!("incident {id} opened (journal {})", cli.db.display());
            finish(&exec, &id).await
        }
        Command::Trigger(a) => {
            let pb = load_playbook(&a.playbook)?;
            let journal = Journal::open(&cli.db).await?;
            if let Some(open) = journal.open_incident_for(&pb.redis.primary.endpoint()).await? {
                println!("{}", open.id);
                eprintln!("incident {} is already open for {} (state {}); not opening another", open.id, open.target, open.state);
                return Ok(exit::OK);
            }
            let exec = executor(journal, pb, false, false);
            let id = exec.open_for_others("manual", &a.reason).await?;
            println!("{id}");
            Ok(exit::OK)
        }
        Command::Resume(a) => {
            let pb = load_playbook(&a.playbook)?;
            let journal = existing_journal(&cli.db).await?;
            let inc = journal.incident(&a.id).await?;
            if let Some(outcome) = &inc.outcome {
                eprintln!("incident {} has already ended: {outcome}", inc.id);
                return Ok(crate::model::Outcome::parse(outcome).map(exit::for_outcome).unwrap_or(exit::OK));
            }
            let exec = executor(journal, pb, a.wait_for_approval, a.allow_changed_playbook);
            exec.check_pinned(&a.id).await.map_err(|e| usage(e.to_string()))?;
            eprintln!("resuming incident {} from {}", a.id, inc.state);
            finish(&exec, &a.id).await
        }
        Command::Approve(a) => person_command(&cli.db, CommandKind::Approve, a).await,
        Command::Reject(a) => person_command(&cli.db, CommandKind::Reject, a).await,
        Command::Abort(a) => person_command(&cli.db, CommandKind::Abort, a).await,
        Command::Incidents(a) => {
            let journal = existing_journal(&cli.db).await?;
            let rows = journal.incidents(a.limit).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no incidents in {}", cli.db.display());
            } else {
                println!("{:<27} {:<14} {:<18} {:<25} OUTCOME", "ID", "PLAYBOOK", "STATE", "OPENED");
                for r in rows {
                    println!(
                        "{:<27} {:<14} {:<18} {:<25} {}",
                        r.id,
                        r.playbook_name,
                        r.state,
                        r.opened_at,
                        r.outcome.as_deref().unwrap_or("(open)")
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Audit(a) => {
            let journal = existing_journal(&cli.db).await?;
            if a.follow {
                audit::follow(&journal, &a.id, std::time::Duration::from_millis(200)).await?;
            }
            let audit = audit::load(&journal, &a.id).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&audit)?);
            } else {
                print!("{}", audit::render(&audit));
            }
            Ok(match (a.follow, audit.incident.outcome.as_deref().and_then(crate::model::Outcome::parse)) {
                (true, Some(o)) => exit::for_outcome(o),
                _ => exit::OK,
            })
        }
        Command::Report(a) => {
            let journal = existing_journal(&cli.db).await?;
            let audit = audit::load(&journal, &a.id).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&audit)?);
            } else {
                print!("{}", audit::report(&audit));
            }
            Ok(exit::OK)
        }
        Command::Check(a) => {
            let pb = Arc::new(load_playbook(&a.playbook)?);
            let ports = crate::wiring::real_ports(&pb);
            let report = crate::dryrun::check(&pb, &ports).await;
            // What the service echoes in its health or log text is output like any other.
            print!("{}", pb.redactor.redact(&report.render()));
            Ok(if report.all_reachable() { exit::OK } else { exit::FAILURE })
        }
        Command::Serve(a) => serve(&cli.db, a).await,
        Command::Journal(JournalCmd::Verify { id, json }) => {
            let journal = existing_journal(&cli.db).await?;
            if let Some(id) = &id {
                journal.incident(id).await?;
            }
            let report = journal.verify(id.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.ok() { exit::OK } else { exit::TAMPERED })
        }
        Command::Pause(a) => {
            let journal = Journal::open(&cli.db).await?;
            journal.set_setting_as("paused", "1", &a.actor, Some(&osuser::OsUser::current().describe()), chrono::Utc::now()).await?;
            println!("automatic failover paused by {} (alerts are still journaled)", a.actor);
            Ok(exit::OK)
        }
        Command::Unpause(a) => {
            let journal = Journal::open(&cli.db).await?;
            journal.set_setting_as("paused", "0", &a.actor, Some(&osuser::OsUser::current().describe()), chrono::Utc::now()).await?;
            println!("automatic failover resumed by {}", a.actor);
            Ok(exit::OK)
        }
    }
}

fn executor(journal: Journal, pb: Playbook, wait_for_approval: bool, allow_changed: bool) -> Executor {
    let pb = Arc::new(pb);
    let ports = crate::wiring::real_ports(&pb);
    let opts = ExecOptions {
        wait_for_approval,
        allow_changed_playbook: allow_changed,
        reporter: Some(progress::terminal()),
        os_user: Some(osuser::OsUser::current().describe()),
        ..ExecOptions::default()
    };
    let (_tx, rx) = crate::wiring::shutdown_on_signals();
    Executor::new(journal, ports, pb, opts, rx)
}

async fn finish(exec: &Executor, id: &str) -> Result<i32, Failure> {
    let end = exec.run(id).await;
    exec.flush_notifications(std::time::Duration::from_secs(10)).await;
    match end? {
        RunEnd::Finished(outcome) => {
            eprintln!("incident {id} ended: {outcome}  (timeline: orchestrator audit {id})");
            Ok(exit::for_outcome(outcome))
        }
        RunEnd::AwaitingApproval(step) => {
            eprintln!("incident {id} awaits approval for {step}: `orchestrator approve {id} --as NAME`, then `orchestrator resume {id} --playbook ...`");
            Ok(exit::AWAITING_APPROVAL)
        }
        RunEnd::Interrupted => {
            eprintln!("interrupted; incident {id} is resumable: orchestrator resume {id} --playbook ...");
            Ok(exit::INTERRUPTED)
        }
    }
}

/// Records approve/reject/abort for the executor driving the incident to apply, and
/// says now whether the incident's pinned policy will accept it.
async fn person_command(db: &Path, kind: CommandKind, a: CommandArgs) -> Result<i32, Failure> {
    if a.actor.trim().is_empty() {
        return Err(usage("--as NAME must not be empty"));
    }
    let journal = existing_journal(db).await?;
    let inc = journal.incident(&a.id).await.map_err(|e| match e {
        JournalError::UnknownIncident(_) => usage(e.to_string()),
        other => other.into(),
    })?;
    if let Some(outcome) = &inc.outcome {
        return Err(usage(format!("incident {} has already ended ({outcome}); nothing to {}", inc.id, kind.as_str())));
    }
    // `--as` is a claim; the OS user is a fact. Where the playbook maps approvers to OS
    // users, the claim must match it: one shell cannot be two approvers.
    let me = osuser::OsUser::current();
    if kind != CommandKind::Abort {
        let map = journal.approver_os_users(&a.id).await?;
        if !map.is_empty() {
            match map.get(&a.actor) {
                Some(user) if me.is(user) => {}
                Some(user) => {
                    return Err(usage(format!(
                        "refused: approver {:?} is OS user {user:?} in the playbook, and you are {}",
                        a.actor,
                        me.describe()
                    )))
                }
                None => {
                    return Err(usage(format!(
                        "refused: {:?} is not mapped to an OS user in `approvals.os_users` (you are {})",
                        a.actor,
                        me.describe()
                    )))
                }
            }
        }
    }
    let machine = journal.machine(&a.id).await?;
    let event = match kind {
        CommandKind::Approve => Event::Approve { approver: a.actor.clone(), comment: a.comment.clone() },
        CommandKind::Reject => Event::Reject { approver: a.actor.clone(), comment: a.comment.clone() },
        CommandKind::Abort => Event::Abort { actor: a.actor.clone(), reason: a.comment.clone() },
    };
    let predicted = machine.clone().handle(&event);
    let cmd = journal.add_command_as(&a.id, kind, &a.actor, &a.comment, "cli", Some(&me.describe()), chrono::Utc::now()).await?;
    match predicted.rejected {
        Some(reason) => {
            eprintln!("{} by {} on {} is journaled (#{cmd}) but will be refused: {reason}", kind.as_str(), a.actor, a.id);
            Ok(exit::USAGE)
        }
        None => {
            println!(
                "{} by {} on {} journaled (#{cmd}): {} → {}; the orchestrator driving the incident applies it (or run `orchestrator resume {} --playbook ...`)",
                kind.as_str(),
                a.actor,
                a.id,
                predicted.from.name(),
                predicted.to.name(),
                a.id
            );
            Ok(exit::OK)
        }
    }
}

async fn serve(db: &Path, a: ServeArgs) -> Result<i32, Failure> {
    let mut pb = load_playbook(&a.playbook)?;
    let auth = crate::server::auth::AuthConfig::from_env().map_err(usage)?;
    auth.check_for(a.listen.ip().is_loopback()).map_err(usage)?;
    // The daemon's own tokens are secrets of this run like the playbook's.
    let mut redactor = (*pb.redactor).clone();
    for s in auth.secrets() {
        redactor.add_secret(&s);
    }
    crate::redact::install(&redactor);
    pb.redactor = Arc::new(redactor);
    let pb = Arc::new(pb);
    // A shorter busy timeout than the CLI's: a webhook sender waits on us.
    let journal = Journal::open_with(db, true, std::time::Duration::from_secs(2)).await?;
    let (_tx, shutdown) = crate::wiring::shutdown_on_signals();
    let ports = crate::wiring::real_ports(&pb);
    let opts =
        ExecOptions { wait_for_approval: true, allow_changed_playbook: a.allow_changed_playbook, reporter: None, ..ExecOptions::default() };
    let exec = Arc::new(Executor::new(journal, ports, pb.clone(), opts, shutdown.clone()));
    let hmac_configured = auth.hmac_secret.is_some();
    let daemon = crate::daemon::Daemon::new(exec, auth, shutdown.clone());
    let loopback = a.listen.ip().is_loopback();
    daemon.require_signed_timestamp.store(!loopback, std::sync::atomic::Ordering::Relaxed);
    if hmac_configured && loopback {
        tracing::warn!(
            "HMAC signatures without X-Grafana-Alerting-Signature-Timestamp are accepted on loopback: each once, but remembered only while this process runs"
        );
    }
    let resumed = daemon.resume_open().await?;
    for id in &resumed {
        eprintln!("resuming open incident {id}");
    }
    if !a.no_watch {
        tokio::spawn(daemon.clone().watch_loop());
    }
    tokio::spawn(daemon.clone().adopt_loop(std::time::Duration::from_secs(2)));
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| Failure { code: exit::FAILURE, message: format!("cannot listen on {}: {e}", a.listen) })?;
    let addr = listener.local_addr()?;
    println!("{}", serde_json::json!({ "listening": addr.to_string(), "playbook": pb.name, "resumed": resumed }));
    eprintln!("orchestrator serving playbook {} on http://{addr} (journal {})", pb.name, db.display());
    let mut stop = shutdown.clone();
    let signal = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    let limits = crate::server::listen::Limits {
        header_timeout: a.header_timeout,
        body_timeout: a.body_timeout,
        ..crate::server::listen::Limits::default()
    };
    let console = crate::server::console::ConsoleOptions {
        session_ttl: a.console_session_ttl,
        secure_cookies: a.console_secure_cookies,
        shutdown: Some(shutdown.clone()),
        ..Default::default()
    };
    crate::server::serve_console(listener, daemon.clone(), console, limits, signal).await?;
    eprintln!("shutting down: waiting for incident runners to reach a resumable point");
    daemon.drain(std::time::Duration::from_secs(30)).await;
    daemon.exec.journal.close().await;
    Ok(exit::OK)
}
