//! The command line: argument definitions and one function per command. Every command
//! returns an exit code (see [`exit`]); errors become one clear line on stderr.

pub mod audit;
pub mod exit;
pub mod osuser;
pub mod period;
mod progress;

use crate::executor::{ExecOptions, Executor, RunEnd};
use crate::journal::prelude::*;
use crate::journal::{CommandKind, Journal, JournalError};
use crate::machine::Event;
use crate::playbook::{self, Playbook};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "orchestrator", version, about = "Automated Redis failover: the Redis failover runbook as a journaled state machine.", after_help = exit::TABLE)]
pub struct Cli {
    /// The journal: a SQLite file (a path, or sqlite://PATH) or a PostgreSQL database
    /// (postgres://USER@HOST:PORT/DATABASE; a password is better kept in PGPASSWORD or
    /// ~/.pgpass than in the URL, which other users can read from the process list).
    #[arg(long, global = true, env = "ORCH_DB", hide_env_values = true, default_value = "orchestrator.db")]
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
    /// A post-incident report in Markdown (`report ID`), or a period's summary
    /// (`report --since 7d`: incidents by target and outcome, shadow incidents, false
    /// alarms, time to decision).
    Report(ReportArgs),
    /// Run every probe once and print the checklists: a dry run with no side effects.
    Check(PlaybookArg),
    /// Run the daemon: webhooks, watch loop, approvals API, metrics; resumes open incidents.
    Serve(ServeArgs),
    /// Switch automatic failover off for everyone, or one target (alerts are still journaled).
    Pause(PauseArgs),
    /// Switch automatic failover back on.
    Unpause(PauseArgs),
    /// Per target: which endpoint is active and which the standby, armed or why not,
    /// the open incident, the last outcome, paused.
    Status(StatusArgs),
    /// Move a target's service to its standby on purpose (maintenance, failback after a
    /// repair): the failover's machine with a planned trigger and no Confirm.
    Switchover(SwitchoverArgs),
    /// Say where a target's service is and arm automatic failover again (after a held
    /// or escalated incident, where only a person may).
    Arm(ArmArgs),
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
    /// Shadow mode (as `mode: observe`): Detect, Confirm and Assess for real, then
    /// what would have been done (exit 11 or 12); nothing written, flushed or deployed.
    #[arg(long)]
    pub observe: bool,
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
    /// Only this target's incidents.
    #[arg(long)]
    pub target: Option<String>,
    /// The alerts that matched no target (journaled as `unrouted`) instead.
    #[arg(long)]
    pub unrouted: bool,
}

/// One or more playbooks: files, and every `*.yaml` in folders.
#[derive(Args, Debug, Clone)]
pub struct PlaybooksArg {
    /// A playbook (repeatable): each is one target, named by its `name`.
    #[arg(long, short)]
    pub playbook: Vec<PathBuf>,
    /// Every `*.yaml` in this folder is a playbook (repeatable).
    #[arg(long)]
    pub playbooks: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub playbooks: PlaybooksArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    /// The target (a playbook's name).
    pub target: String,
    #[command(flatten)]
    pub playbooks: PlaybooksArg,
    #[arg(long, default_value = "planned switchover")]
    pub reason: String,
    /// Open it for `serve` to drive instead of running it here.
    #[arg(long)]
    pub detach: bool,
    #[arg(long)]
    pub wait_for_approval: bool,
}

#[derive(Args, Debug)]
pub struct ArmArgs {
    pub target: String,
    /// The target's playbook (the platform is asked where the service is).
    #[command(flatten)]
    pub playbooks: PlaybooksArg,
    /// Arm although the platform does not hold the named side's URL.
    #[arg(long)]
    pub force: bool,
    /// Where the service is now: the playbook's `primary` or `backup`.
    #[arg(long, value_parser = ["primary", "backup"])]
    pub active: String,
    #[arg(long = "as", env = "ORCH_USER")]
    pub actor: String,
    #[arg(long, short, default_value = "")]
    pub comment: String,
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
pub struct ReportArgs {
    /// One incident's post-incident report.
    #[arg(required_unless_present = "since", conflicts_with = "since")]
    pub id: Option<String>,
    /// Summarise the incidents opened in this period up to now (e.g. 7d, 24h, 90m).
    #[arg(long, value_parser = parse_period_arg)]
    pub since: Option<std::time::Duration>,
    #[arg(long)]
    pub json: bool,
}

/// A period: the playbook durations plus days and hours (`7d`, `36h`).
fn parse_period_arg(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let per = match unit {
        "d" => Some(86_400),
        "h" => Some(3_600),
        "w" => Some(7 * 86_400),
        _ => None,
    };
    match (num.parse::<u64>(), per) {
        (Ok(n), Some(per)) if n > 0 => Ok(std::time::Duration::from_secs(n * per)),
        _ => crate::duration::parse_duration(t).map_err(|e| format!("{e} (or a number of days, hours or weeks: 7d, 36h, 2w)")),
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Shadow mode for every target (as `mode: observe` in each playbook): incidents
    /// end after Assess in what would have been done; nothing written, flushed or deployed.
    #[arg(long)]
    pub observe: bool,
    #[command(flatten)]
    pub playbooks: PlaybooksArg,
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
    /// On a PostgreSQL journal shared by several instances: how long the leader lease
    /// lives on the database's clock without renewal (a follower takes over at most
    /// this long after the leader's last renewal). See README "Several instances".
    #[arg(long, default_value = "15s", value_parser = parse_duration_arg)]
    pub leader_ttl: std::time::Duration,
    /// How often the leader renews its lease (and a follower tries to take it).
    #[arg(long, default_value = "3s", value_parser = parse_duration_arg)]
    pub leader_renew: std::time::Duration,
    /// How long one renewal or takeover attempt may take. Must hold:
    /// renew + 2 × retry-timeout + margin (ttl/10, at least 200ms) ≤ ttl.
    #[arg(long, default_value = "4s", value_parser = parse_duration_arg)]
    pub leader_retry_timeout: std::time::Duration,
    /// How long a new leader waits before reconciling an effect that was in flight
    /// under an earlier leadership (its last request may still be landing): at least
    /// the platform's request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub leader_takeover_grace: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[arg(long = "as", env = "ORCH_USER", default_value = "operator")]
    pub actor: String,
    /// Only this target (default: everyone).
    #[arg(long)]
    pub target: Option<String>,
    /// `pause` only: a maintenance window; the pause lifts itself after this long
    /// (e.g. `2h`, `45m`), journaled as "orchestrator (maintenance window expired)".
    #[arg(long = "for", value_parser = parse_duration_arg)]
    pub for_: Option<std::time::Duration>,
    /// `pause` only: why (shown in `status`, `/metrics`' labels do not carry it).
    #[arg(long)]
    pub reason: Option<String>,
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

/// Every playbook named: the files, then each folder's `*.yaml` in name order. Every
/// file's problems are reported, not only the first file's.
pub fn load_playbooks(a: &PlaybooksArg) -> Result<Vec<Playbook>, Failure> {
    let mut files = a.playbook.clone();
    for dir in &a.playbooks {
        let entries = std::fs::read_dir(dir).map_err(|e| usage(format!("cannot read the playbook folder {}: {e}", dir.display())))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml") && p.is_file())
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(usage(format!("no *.yaml playbook in {}", dir.display())));
        }
        files.extend(found);
    }
    if files.is_empty() {
        return Err(usage("no playbook: pass --playbook FILE (repeatable) or --playbooks DIR"));
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for f in &files {
        match playbook::load(f) {
            Ok(pb) => out.push(pb),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(usage(problems.join("\n")));
    }
    let mut seen = std::collections::BTreeMap::new();
    for pb in &out {
        if let Some(first) = seen.insert(pb.name.clone(), pb.source.display().to_string()) {
            return Err(usage(format!(
                "two playbooks are named {:?} ({first} and {}): a target's name must be unique",
                pb.name,
                pb.source.display()
            )));
        }
    }
    Ok(out)
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
            let mut pb = load_playbook(&a.playbook)?;
            if a.observe {
                pb.mode = crate::model::Mode::Observe;
            }
            let journal = Journal::open(&cli.db).await?;
            if let Some(open) = journal.open_incident_for(&pb.name).await? {
                return Err(usage(format!(
                    "incident {} is already open for {} (state {}); `orchestrator resume {} --playbook ...` continues it",
                    open.id, open.target, open.state, open.id
                )));
            }
            let (t, lead) = driving_target(journal, pb, a.wait_for_approval, false).await?;
            let exec = t.executor_now().await?;
            let id = exec.open("manual", &a.reason).await?;
            eprintln!("incident {id} opened (journal {})", crate::journal::backend::mask_db(cli.db.as_os_str()));
            finish_leading(&exec, &id, lead).await
        }
        Command::Trigger(a) => {
            let pb = load_playbook(&a.playbook)?;
            let journal = Journal::open(&cli.db).await?;
            if let Some(open) = journal.open_incident_for(&pb.name).await? {
                println!("{}", open.id);
                eprintln!("incident {} is already open for {} (state {}); not opening another", open.id, open.target, open.state);
                return Ok(exit::OK);
            }
            let exec = target(journal, pb, false, false).executor_now().await?;
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
            if inc.target != pb.name && !(inc.target.contains(':') && inc.playbook_name == pb.name) {
                return Err(usage(format!(
                    "incident {} belongs to target {:?}, not to {:?} ({})",
                    inc.id,
                    inc.target,
                    pb.name,
                    a.playbook.display()
                )));
            }
            let (t, lead) = driving_target(journal, pb, a.wait_for_approval, a.allow_changed_playbook).await?;
            let exec = t.executor_for(&a.id).await?;
            exec.check_pinned(&a.id).await.map_err(|e| usage(e.to_string()))?;
            eprintln!("resuming incident {} from {}", a.id, inc.state);
            finish_leading(&exec, &a.id, lead).await
        }
        Command::Approve(a) => person_command(&cli.db, CommandKind::Approve, a).await,
        Command::Reject(a) => person_command(&cli.db, CommandKind::Reject, a).await,
        Command::Abort(a) => person_command(&cli.db, CommandKind::Abort, a).await,
        Command::Incidents(a) => {
            let journal = existing_journal(&cli.db).await?;
            if a.unrouted {
                let rows = journal.unrouted_alerts(a.limit).await?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else if rows.is_empty() {
                    println!("no unrouted alerts in {}", crate::journal::backend::mask_db(cli.db.as_os_str()));
                } else {
                    println!("{:<25} {:<13} {:<18} {:<9} SUMMARY", "RECEIVED", "SOURCE", "NAMED TARGET", "STATUS");
                    for r in rows {
                        let named = if r.target.is_empty() { "(none)" } else { r.target.as_str() };
                        println!("{:<25} {:<13} {:<18} {:<9} {}", r.received_at, r.source, named, r.status, r.summary);
                    }
                }
                return Ok(exit::OK);
            }
            let rows: Vec<_> =
                journal.incidents(a.limit).await?.into_iter().filter(|r| a.target.as_ref().is_none_or(|t| &r.target == t)).collect();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no incidents in {}", crate::journal::backend::mask_db(cli.db.as_os_str()));
            } else {
                println!("{:<27} {:<16} {:<18} {:<25} OUTCOME", "ID", "TARGET", "STATE", "OPENED");
                for r in rows {
                    println!(
                        "{:<27} {:<16} {:<18} {:<25} {}",
                        r.id,
                        r.target,
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
        Command::Report(ReportArgs { since: Some(since), json, .. }) => {
            let journal = existing_journal(&cli.db).await?;
            let to = chrono::Utc::now();
            let from = to - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::MAX);
            let summary = crate::cli::period::Summary::load(&journal, from, to).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.render());
            }
            Ok(exit::OK)
        }
        Command::Report(a) => {
            let journal = existing_journal(&cli.db).await?;
            let id = a.id.unwrap_or_default();
            let audit = audit::load(&journal, &id).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&audit)?);
            } else {
                print!("{}", audit::report(&audit));
            }
            Ok(exit::OK)
        }
        Command::Check(a) => {
            let mut pb = load_playbook(&a.playbook)?;
            // Judge the endpoint the service is on now: after a failover, the playbook's
            // backup is the active (the journal's topology says so).
            let journal_named = match crate::journal::Db::parse(cli.db.as_os_str()) {
                Ok(crate::journal::Db::Sqlite(p)) => p.exists(),
                Ok(crate::journal::Db::Postgres(_)) => true,
                Err(e) => return Err(usage(e.to_string())),
            };
            if journal_named {
                let topo = existing_journal(&cli.db).await?.topology(&pb.name).await?;
                if topo.active != crate::model::Side::Primary {
                    eprintln!("{}: the {} is active (journal topology); checking it as the primary", pb.name, topo.active);
                    pb = pb.oriented(topo.active);
                }
            }
            let pb = Arc::new(pb);
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
        Command::Pause(a) | Command::Unpause(a) if a.target.as_ref().is_some_and(|t| t.is_empty()) => {
            Err(usage("--target must not be empty"))
        }
        Command::Unpause(a) if a.for_.is_some() || a.reason.is_some() => Err(usage("--for and --reason are options of `pause`")),
        Command::Pause(a) if a.for_.is_some_and(|d| d.is_zero() || d > std::time::Duration::from_secs(366 * 86_400)) => {
            Err(usage("--for must be more than zero and at most a year"))
        }
        Command::Pause(a) => {
            let journal = Journal::open(&cli.db).await?;
            let now = chrono::Utc::now();
            let until = a.for_.map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
            journal
                .set_pause(a.target.as_deref(), until, a.reason.as_deref(), &a.actor, Some(&osuser::OsUser::current().describe()), now)
                .await?;
            let whom = a.target.as_deref().map(|t| format!(" for {t}")).unwrap_or_else(|| " for every target".into());
            if let Some(t) = &a.target {
                warn_if_unknown(&journal, t).await?;
            }
            let window = match (until, a.for_) {
                (Some(u), Some(d)) => {
                    format!(" until {} ({} from now; `serve` lifts it then)", crate::journal::ts(u), crate::duration::format_duration(d))
                }
                _ => String::new(),
            };
            println!("automatic failover paused{whom}{window} by {} (alerts are still journaled)", a.actor);
            Ok(exit::OK)
        }
        Command::Unpause(a) => {
            let journal = Journal::open(&cli.db).await?;
            journal
                .set_paused(a.target.as_deref(), false, &a.actor, Some(&osuser::OsUser::current().describe()), chrono::Utc::now())
                .await?;
            let whom = a.target.as_deref().map(|t| format!(" for {t}")).unwrap_or_default();
            if let Some(t) = &a.target {
                warn_if_unknown(&journal, t).await?;
                if journal.paused().await? {
                    println!("{t} unpaused by {}, but automatic failover stays paused for every target (`orchestrator unpause`)", a.actor);
                    return Ok(exit::OK);
                }
            }
            println!("automatic failover resumed{whom} by {}", a.actor);
            Ok(exit::OK)
        }
        Command::Status(a) => status(&cli.db, a).await,
        Command::Switchover(a) => switchover(&cli.db, a).await,
        Command::Arm(a) => arm(&cli.db, a).await,
    }
}

/// A pause for a name the journal has never seen is most likely a typo: say so.
async fn warn_if_unknown(journal: &Journal, target: &str) -> Result<(), Failure> {
    let seen = journal.incidents(10_000).await?.iter().any(|i| i.target == target || i.playbook_name == target)
        || journal.topologies().await?.iter().any(|t| t.target == target);
    if !seen {
        eprintln!(
            "warning: this journal has no incident or topology for {target:?} yet; check the name (`orchestrator status --playbooks DIR`)"
        );
    }
    Ok(())
}

/// `status`: per target, from the journal (and the playbooks, for the endpoints).
async fn status(db: &Path, a: StatusArgs) -> Result<i32, Failure> {
    let journal = existing_journal(db).await?;
    // On a shared journal, who acts: the lease as the database sees it.
    if !a.json {
        use crate::journal::leader::LeaderStore;
        if let Some(l) = journal.leader().await? {
            if l.expires_in_ms > 0 {
                println!(
                    "leader   term {} held by {} ({}), since {}, lease valid {} ms more",
                    l.term, l.holder, l.address, l.acquired_at, l.expires_in_ms
                );
            } else {
                println!(
                    "leader   NONE: the lease of term {} ({}) expired {} ms ago; no instance is acting",
                    l.term, l.holder, -l.expires_in_ms
                );
            }
        } else if journal.backend() == crate::journal::Backend::Postgres {
            println!("leader   none yet: no instance has taken the lease");
        }
    }
    let named = !a.playbooks.playbook.is_empty() || !a.playbooks.playbooks.is_empty();
    let rows = if named {
        let mut rows = Vec::new();
        for pb in load_playbooks(&a.playbooks)? {
            rows.push(crate::daemon::TargetStatus::read(&journal, &pb).await?);
        }
        rows
    } else {
        Vec::new()
    };
    if a.json {
        if named {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&journal.topologies().await?)?);
        }
        return Ok(exit::OK);
    }
    if !named {
        if let Some(p) = journal.pause(None, chrono::Utc::now()).await? {
            println!("automatic failover PAUSED for every target: {}", pause_line(&p));
        }
        let topologies = journal.topologies().await?;
        if topologies.is_empty() {
            println!(
                "no target has failed over in {}: every target is on its playbook's primary, armed (pass --playbook for more)",
                crate::journal::backend::mask_db(db.as_os_str())
            );
        }
        for t in topologies {
            println!("{:<18} active {:<8} {:<9} {}", t.target, t.active.as_str(), if t.armed { "ARMED" } else { "DISARMED" }, t.reason);
        }
        return Ok(exit::OK);
    }
    for r in rows {
        println!("{}{}", r.target, if r.paused { "  [PAUSED]" } else { "" });
        println!(
            "  active   {} {}{}",
            r.active,
            r.active_endpoint,
            if r.since.is_empty() { String::new() } else { format!("  since {}", r.since) }
        );
        println!("  standby  {} {}", r.standby, r.standby_endpoint);
        println!(
            "  {:<8} {}{}",
            if r.armed { "ARMED" } else { "DISARMED" },
            r.reason,
            r.through.as_deref().map(|i| format!(" (through {i})")).unwrap_or_default()
        );
        match (&r.open_incident, &r.open_state) {
            (Some(id), Some(state)) => println!("  open     {id} in {state}"),
            _ => println!("  open     none"),
        }
        println!("  last     {}", r.last_outcome.as_deref().unwrap_or("none"));
        if let Some(p) = &r.pause {
            println!("  paused   {}", pause_line(p));
        }
    }
    Ok(exit::OK)
}

/// A pause in one line: by whom, since when, until when (or until unpaused), why.
fn pause_line(p: &crate::journal::Pause) -> String {
    let until = match p.until {
        Some(u) => {
            let left = std::time::Duration::from_secs((u - chrono::Utc::now()).num_seconds().max(0) as u64);
            format!("until {} ({} left; lifted automatically)", crate::journal::ts(u), crate::duration::format_duration(left))
        }
        None => "until unpaused".into(),
    };
    let why = p.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    format!("by {} since {}, {until}{why}", p.by, p.at)
}

/// `switchover TARGET`: a planned move of the service to its standby.
async fn switchover(db: &Path, a: SwitchoverArgs) -> Result<i32, Failure> {
    let mut pbs = load_playbooks(&a.playbooks)?;
    let Some(pos) = pbs.iter().position(|p| p.name == a.target) else {
        let names: Vec<&str> = pbs.iter().map(|p| p.name.as_str()).collect();
        return Err(usage(format!("no playbook is named {:?} (targets: {})", a.target, names.join(", "))));
    };
    let pb = pbs.swap_remove(pos);
    let journal = Journal::open(db).await?;
    if let Some(open) = journal.open_incident_for(&pb.name).await? {
        return Err(usage(format!(
            "incident {} is open for {} (state {}); a switchover waits for it to end",
            open.id, open.target, open.state
        )));
    }
    let topo = journal.topology(&pb.name).await?;
    // Detached, the leader (a `serve`) drives it: opening it decides only its trigger.
    let (t, lead) =
        if a.detach { (target(journal, pb, false, false), None) } else { driving_target(journal, pb, a.wait_for_approval, false).await? };
    let exec = t.executor_now().await?;
    eprintln!(
        "switchover of {}: from the {} {} to the {} {}",
        a.target,
        topo.active,
        exec.playbook.redis.primary.endpoint(),
        topo.standby(),
        exec.playbook.redis.backup.endpoint()
    );
    let id = exec.open_switchover(crate::executor::SWITCHOVER_SOURCE, &a.reason).await?;
    if a.detach {
        exec.journal.release(&id).await?;
        println!("{id}");
        eprintln!("switchover {id} opened; the `serve` running {} drives it", a.target);
        return Ok(exit::OK);
    }
    eprintln!("switchover {id} opened (journal {})", crate::journal::backend::mask_db(db.as_os_str()));
    finish_leading(&exec, &id, lead).await
}

/// `arm TARGET --active SIDE`: a person says where the service is; armed at once. The
/// platform is asked first: arming with the wrong side active would make the next
/// failover flush the Redis production uses.
async fn arm(db: &Path, a: ArmArgs) -> Result<i32, Failure> {
    if a.actor.trim().is_empty() {
        return Err(usage("--as NAME must not be empty"));
    }
    let active = crate::model::Side::parse(&a.active).ok_or_else(|| usage("--active must be primary or backup"))?;
    let mut pbs = load_playbooks(&a.playbooks)?;
    let Some(pos) = pbs.iter().position(|p| p.name == a.target) else {
        let names: Vec<&str> = pbs.iter().map(|p| p.name.as_str()).collect();
        return Err(usage(format!("no playbook is named {:?} (targets: {})", a.target, names.join(", "))));
    };
    let pb = Arc::new(pbs.swap_remove(pos));
    let ports = crate::wiring::real_ports(&pb);
    let url = pb.endpoint(active);
    match tokio::time::timeout(std::time::Duration::from_secs(10), ports.platform.read_url()).await {
        Ok(Ok(Some(v))) if v == url.expose() => {}
        other if !a.force => {
            let seen = match other {
                Ok(Ok(Some(v))) => format!("holds {}", crate::secret::mask_url(&v)),
                Ok(Ok(None)) => "holds no value".into(),
                Ok(Err(e)) => format!("did not answer ({e})"),
                Err(_) => "did not answer within 10 s".into(),
            };
            return Err(usage(pb.redactor.redact(&format!(
                "refused: the platform {seen}, not the {active}'s URL {url}; move the service first, or pass --force if you know better"
            ))));
        }
        _ => eprintln!("warning: the platform does not hold the {active}'s URL; arming anyway (--force)"),
    }
    let journal = Journal::open(db).await?;
    let before = journal.topology(&a.target).await?;
    let me = osuser::OsUser::current().describe();
    let change = crate::topology::Change {
        kind: crate::topology::ChangeKind::Set,
        active,
        moved: active != before.active,
        incident: None,
        armed: true,
        needs_person: false,
        standby_ok_since: None,
        reason: format!(
            "armed by {} ({me}) with the {active} active{}",
            a.actor,
            if a.comment.is_empty() { String::new() } else { format!(": {}", a.comment) }
        ),
        actor: a.actor.clone(),
    };
    if !journal.change_topology(&a.target, &before, &change, true, chrono::Utc::now()).await? {
        return Err(usage(format!(
            "refused: {} has an open incident, or its topology changed just now; look at `orchestrator status` and try again",
            a.target
        )));
    }
    println!("{}: the {active} ({}) is active, automatic failover armed (by {})", a.target, url.endpoint(), a.actor);
    Ok(exit::OK)
}

fn target(journal: Journal, pb: Playbook, wait_for_approval: bool, allow_changed: bool) -> crate::fleet::Target {
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
    crate::fleet::Target::new(journal, ports, pb, opts, rx)
}

/// A target whose executors this process may drive: on a journal of its own, as is; on
/// a PostgreSQL journal other instances may share, only as the leader — this process
/// takes the lease (fenced on its term like a `serve`) or refuses when another leads.
async fn driving_target(
    journal: Journal,
    pb: Playbook,
    wait_for_approval: bool,
    allow_changed: bool,
) -> Result<(crate::fleet::Target, Option<Arc<crate::leadership::Leadership>>), Failure> {
    use crate::journal::leader::LeaderStore;
    if journal.backend() != crate::journal::Backend::Postgres {
        return Ok((target(journal, pb, wait_for_approval, allow_changed), None));
    }
    let settings = crate::leadership::LeaseSettings::default();
    let l = crate::leadership::Leadership::new(journal.clone(), settings, &crate::journal::process_owner(), "cli").taking_from_dead_here();
    if l.try_lead().await?.is_none() {
        let who = match journal.leader().await? {
            Some(r) => format!("term {} is held by {} ({})", r.term, r.holder, r.address),
            None => "another instance holds the lease".into(),
        };
        return Err(usage(format!(
            "the instances sharing this journal have a leader ({who}): it drives incidents. `orchestrator trigger` or `switchover --detach` hands this one to it; `approve`/`abort` steer it"
        )));
    }
    let (_tx, rx) = crate::wiring::shutdown_on_signals();
    tokio::spawn(l.clone().run(rx));
    let t = target(journal, pb, wait_for_approval, allow_changed);
    t.set_leadership(l.clone());
    Ok((t, Some(l)))
}

/// [`finish`], then gives up the lease this process took (if it did), so a `serve`
/// takes over at once rather than after the lease's ttl.
async fn finish_leading(exec: &Executor, id: &str, lead: Option<Arc<crate::leadership::Leadership>>) -> Result<i32, Failure> {
    let r = finish(exec, id).await;
    if let Some(l) = lead {
        l.resign_and_stop().await;
    }
    r
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
    let playbooks = load_playbooks(&a.playbooks)?;
    let auth = crate::server::auth::AuthConfig::from_env().map_err(usage)?;
    auth.check_for(a.listen.ip().is_loopback()).map_err(usage)?;
    // A shorter busy timeout than the CLI's: a webhook sender waits on us.
    let journal = Journal::open_with(db, true, std::time::Duration::from_secs(2)).await?;
    let (_tx, shutdown) = crate::wiring::shutdown_on_signals();
    let opts =
        ExecOptions { wait_for_approval: true, allow_changed_playbook: a.allow_changed_playbook, reporter: None, ..ExecOptions::default() };
    let mut secrets: Vec<String> = auth.secrets();
    // The journal's password (a PostgreSQL URL's) is a secret of this run too.
    if let Some(pw) = crate::journal::Db::parse(db.as_os_str()).ok().and_then(|d| d.password()) {
        secrets.push(pw);
    }
    let mut targets = Vec::new();
    for mut pb in playbooks {
        if a.observe {
            pb.mode = crate::model::Mode::Observe;
        }
        // The daemon's own tokens are secrets of this run like the playbooks' own.
        let mut redactor = (*pb.redactor).clone();
        for s in &secrets {
            redactor.add_secret(s);
        }
        pb.redactor = Arc::new(redactor);
        let pb = Arc::new(pb);
        let ports = crate::wiring::real_ports(&pb);
        targets.push(crate::fleet::Target::new(journal.clone(), ports, pb, opts.clone(), shutdown.clone()));
    }
    let registry = crate::fleet::Registry::new(targets).map_err(|e| usage(e.to_string()))?;
    let names = registry.names();
    let leases = crate::leadership::LeaseSettings {
        ttl: a.leader_ttl,
        renew_every: a.leader_renew,
        retry_timeout: a.leader_retry_timeout,
        takeover_grace: a.leader_takeover_grace,
    };
    leases.validate().map_err(usage)?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| Failure { code: exit::FAILURE, message: format!("cannot listen on {}: {e}", a.listen) })?;
    let addr = listener.local_addr()?;
    let shared = journal.backend() == crate::journal::Backend::Postgres;
    let daemon = crate::daemon::Daemon::new(journal, registry, &secrets, shutdown.clone());
    if shared {
        // Several instances may share this journal: only the leader acts.
        let l = crate::leadership::Leadership::new(daemon.journal.clone(), leases, &crate::journal::process_owner(), &addr.to_string());
        daemon.metrics.following();
        daemon.set_leadership(l.clone());
        tokio::spawn(l.run(shutdown.clone()));
    }
    let hmac_configured = auth.hmac_secret.is_some();
    let app = crate::server::App::new(daemon.clone(), auth);
    let loopback = a.listen.ip().is_loopback();
    app.require_signed_timestamp.store(!loopback, std::sync::atomic::Ordering::Relaxed);
    if hmac_configured && loopback {
        tracing::warn!(
            "HMAC signatures without X-Grafana-Alerting-Signature-Timestamp are accepted on loopback: each once, but remembered only while this process runs"
        );
    }
    daemon.load_topology().await?;
    let resumed = daemon.resume_open().await?;
    for id in &resumed {
        eprintln!("resuming open incident {id}");
    }
    daemon.start_loops(!a.no_watch);
    tokio::spawn(daemon.clone().adopt_loop(std::time::Duration::from_secs(if shared { 1 } else { 2 })));
    println!("{}", serde_json::json!({ "listening": addr.to_string(), "targets": names, "resumed": resumed, "shared": shared }));
    eprintln!(
        "orchestrator serving {} target(s) ({}) on http://{addr} (journal {}{})",
        names.len(),
        names.join(", "),
        daemon.journal.location(),
        if shared { "; shared: acting only while leader, see /leader" } else { "" }
    );
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
    crate::server::serve_console(listener, app, console, limits, signal).await?;
    eprintln!("shutting down: waiting for incident runners to reach a resumable point");
    daemon.drain(std::time::Duration::from_secs(30)).await;
    // Only now, with nothing of ours in flight, may another instance take over at once.
    if let Some(l) = daemon.leadership() {
        l.resign_and_stop().await;
    }
    daemon.journal.close().await;
    Ok(exit::OK)
}
