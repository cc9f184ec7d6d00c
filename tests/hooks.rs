//! Hooks with veto against real parts: redis-server processes, the sandbox service and
//! platform (its own counts of env writes and deploys), real hook processes, and the
//! real binary SIGKILLed between a hook's intent and outcome.

mod support;

use orchestrator::journal::prelude::*;
use orchestrator::journal::{EffectRow, Journal};
use orchestrator::playbook::{load_bytes, PlaybookError};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::world::{outcome, wait_until, World, WorldOptions};

const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];

/// The sandbox playbook (fast windows) with a `hooks:` section.
fn with_hooks(hooks: &str) -> Vec<(&'static str, String)> {
    let mut e: Vec<(&'static str, String)> = FAST.iter().map(|(a, b)| (*a, b.to_string())).collect();
    e.push(("\nname: sandbox\n", format!("\nname: sandbox\nhooks:\n{hooks}")));
    e
}

fn edits<'a>(e: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    e.iter().map(|(a, b)| (*a, b.as_str())).collect()
}

/// One hook in block YAML: `sh -c SCRIPT` with a timeout.
fn sh_hook(point: &str, script: &str, timeout: &str) -> String {
    format!("  {point}:\n    command: [\"sh\", \"-c\", {script:?}]\n    timeout: {timeout}\n")
}

async fn hook_effects(j: &Journal, id: &str) -> Vec<EffectRow> {
    j.effects(id).await.unwrap().into_iter().filter(|e| e.kind == "hook").collect()
}

fn notes(path: &[orchestrator::journal::TransitionRow]) -> String {
    path.iter().filter_map(|t| t.note.clone()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoing_pre_switch_escalates_with_no_platform_write() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let e = with_hooks(&sh_hook("pre_switch", "echo 'change freeze in effect until Monday'; exit 3", "5s"));
    let exec = w.executor(&edits(&e)).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "escalated");

    let stats = w.sandbox.platform().stats();
    assert!(stats.env_writes.is_empty(), "no platform write: {:?}", stats.env_writes);
    assert_eq!(stats.deploy_count, 0, "no deploy");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let hooks = hook_effects(&j, &id).await;
    assert_eq!(hooks.len(), 1, "one hook run: {hooks:?}");
    assert_eq!(hooks[0].key, format!("{id}:hook:pre_switch"));
    assert_eq!(hooks[0].outcome.as_deref(), Some("failed"));
    let result = hooks[0].result.clone().unwrap_or_default();
    assert!(result.contains("exited with status 3") && result.contains("change freeze in effect"), "{result}");
    assert!(j.effects(&id).await.unwrap().iter().all(|e| e.kind != "set_env"), "no platform write intent");
    let t = j.transitions(&id).await.unwrap();
    let last = t.last().unwrap();
    assert_eq!((last.from_state.as_str(), last.to_state.as_str(), last.event.as_str()), ("switch", "escalated", "hook_vetoed"));
    assert!(notes(&t).contains("the pre_switch hook vetoed the switch"), "{}", notes(&t));
    // Never switched: the target is not disarmed.
    assert!(j.topology("sandbox").await.unwrap().armed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoing_pre_flush_rolls_back_to_the_live_primary() {
    // A planned switchover: the primary is alive, so the give-up after the switch
    // restores it (the usual rule: roll back only to a live primary).
    let w = World::start().await;
    let e = with_hooks(&sh_hook("pre_flush", "echo 'flush window closed' >&2; exit 1", "5s"));
    let exec = w.executor(&edits(&e)).await;
    let id = exec.open_switchover("switchover", "maintenance").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "rolled_back");

    let writes = w.env_writes();
    assert_eq!(writes.len(), 2, "the switch, then the restore: {writes:?}");
    assert_eq!(writes[0].1, w.backup.url());
    assert_eq!(writes[1].1, w.primary.url(), "env restored to the primary");
    assert_eq!(w.sandbox.platform().stats().deploy_count, 0, "never deployed the backup, so no rollback deploy");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    assert!(j.effects(&id).await.unwrap().iter().all(|e| e.kind != "flush"), "nothing flushed");
    let t = j.transitions(&id).await.unwrap();
    let vetoed = t.iter().find(|t| t.event == "hook_vetoed").expect("the veto is a transition");
    assert_eq!((vetoed.from_state.as_str(), vetoed.to_state.as_str()), ("flush", "rollback"));
    assert!(vetoed.note.as_deref().unwrap().contains("flush window closed"), "{:?}", vetoed.note);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoing_pre_flush_with_the_primary_dead_holds() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let e = with_hooks(&sh_hook("pre_flush", "echo no; exit 1", "5s"));
    let exec = w.executor(&edits(&e)).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "held");
    assert_eq!(w.env_writes().len(), 1, "the switch only: never restore a dead primary");
    assert_eq!(w.sandbox.platform().stats().deploy_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoing_pre_rollback_holds_where_the_switch_left_it() {
    // The deploy of the backup fails (twice: one retry), so the incident gives up into
    // Rollback with the primary alive (a planned switchover); the hook vetoes it.
    let w = World::start().await;
    w.sandbox
        .platform()
        .set_faults(sandbox::FaultsPatch { fail_next_deploys: Some(2), fail_status: Some("build_failed".into()), ..Default::default() })
        .unwrap();
    let e = with_hooks(&sh_hook("pre_rollback", "echo 'keep it on the backup'; exit 2", "5s"));
    let exec = w.executor(&edits(&e)).await;
    let id = exec.open_switchover("switchover", "maintenance").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "held");
    assert_eq!(w.env_writes().len(), 1, "no restore after the veto");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let t = j.transitions(&id).await.unwrap();
    let last = t.last().unwrap();
    assert_eq!((last.from_state.as_str(), last.to_state.as_str(), last.event.as_str()), ("rollback", "held", "hook_vetoed"));
    assert!(last.note.as_deref().unwrap().contains("keep it on the backup"));
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not reaped yet by whoever adopted it) is not running.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_hook_is_killed_at_its_timeout_with_its_children() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let dir = w.dir.path().display().to_string();
    let script = format!("echo $$ > {dir}/hook.pid; sleep 1000 & echo $! > {dir}/child.pid; wait");
    let e = with_hooks(&sh_hook("pre_switch", &script, "1s"));
    let exec = w.executor(&edits(&e)).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "escalated", "a timeout vetoes");
    assert!(started.elapsed() < Duration::from_secs(30), "bounded by the hook's timeout");

    let pid = |f: &str| std::fs::read_to_string(w.dir.path().join(f)).unwrap().trim().parse::<i32>().unwrap();
    let (hook, child) = (pid("hook.pid"), pid("child.pid"));
    wait_until(Duration::from_secs(5), "the hook and its sleeping child are gone", || async move { !alive(hook) && !alive(child) }).await;
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let hooks = hook_effects(&j, &id).await;
    let result = hooks[0].result.clone().unwrap_or_default();
    assert!(result.contains("timed out after 1s"), "{result}");
    assert!(w.env_writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_post_recovered_leaves_the_incident_recovered() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let e = with_hooks(&sh_hook("post_recovered", "echo 'cmdb update failed' >&2; exit 1", "5s"));
    let exec = w.executor(&edits(&e)).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "recovered");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    assert_eq!(j.incident(&id).await.unwrap().outcome.as_deref(), Some("recovered"));
    let hooks = hook_effects(&j, &id).await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].key, format!("{id}:hook:post_recovered"));
    assert_eq!(hooks[0].outcome.as_deref(), Some("failed"));
    assert!(hooks[0].result.as_deref().unwrap().contains("exited with status 1: cmdb update failed"), "{:?}", hooks[0].result);
}

const SECRET: &str = "hooktok-5f1d9c2ab7";
const PRIMARY_PASSWORD: &str = "prim-pw-8c1e4d";

async fn orchestrator(w: &World, args: &[&str], crash_at: Option<&str>) -> std::process::ExitStatus {
    w.cli(args, crash_at, &[("HOOK_TOKEN", SECRET), ("ORCH_LEAK_CANARY", "canary-value-not-for-hooks")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_gets_its_context_and_mapped_secret_only_and_its_output_is_redacted() {
    let w = World::start_with(WorldOptions { primary_password: Some(PRIMARY_PASSWORD), ..Default::default() }).await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let dir = w.dir.path().display().to_string();
    let mut hooks = format!(
        "  pre_switch:\n    command: [\"sh\", \"-c\", \"env > {dir}/hook.env; echo token is $TOKEN and $ORCH_PRIMARY\"]\n    env:\n      TOKEN: \"${{HOOK_TOKEN}}\"\n      MODE: strict\n"
    );
    hooks.push_str(&sh_hook("post_recovered", "echo done", "5s"));
    let e = with_hooks(&hooks);
    let playbook = w.playbook_file(&edits(&e));
    let status = orchestrator(&w, &["run", "--playbook", playbook.to_str().unwrap(), "--reason", "drill"], None).await;
    assert_eq!(status.code(), Some(0), "recovered");

    let env = std::fs::read_to_string(w.dir.path().join("hook.env")).unwrap();
    let vars: std::collections::BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    // Nothing of the orchestrator's own environment but PATH.
    for leaked in ["HOOK_TOKEN", "ORCH_LEAK_CANARY", "SANDBOX_PLATFORM_API_KEY", "SANDBOX_SERVICE_API_KEY", "SANDBOX_PRIMARY_URL", "HOME"] {
        assert!(!vars.contains_key(leaked), "{leaked} reached the hook: {env}");
    }
    for value in [support::world::PLATFORM_KEY, support::world::SERVICE_KEY, PRIMARY_PASSWORD, "canary-value-not-for-hooks"] {
        assert!(!env.contains(value), "{value} reached the hook's environment");
    }
    assert_eq!(vars.get("TOKEN"), Some(&SECRET), "mapped in explicitly");
    assert_eq!(vars.get("MODE"), Some(&"strict"));
    assert!(vars.contains_key("PATH"));
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let id = j.incidents(1).await.unwrap()[0].id.clone();
    assert_eq!(vars.get("ORCH_INCIDENT"), Some(&id.as_str()));
    assert_eq!(vars.get("ORCH_HOOK_KEY").copied(), Some(format!("{id}:hook:pre_switch").as_str()));
    assert_eq!(vars.get("ORCH_HOOK"), Some(&"pre_switch"));
    assert_eq!(vars.get("ORCH_TARGET"), Some(&"sandbox"));
    assert_eq!(vars.get("ORCH_STATE"), Some(&"switch"));
    assert_eq!(vars.get("ORCH_TRIGGER_SOURCE"), Some(&"manual"));
    assert!(vars["ORCH_PRIMARY"].contains("***@127.0.0.1"), "masked: {}", vars["ORCH_PRIMARY"]);
    assert_eq!(vars.get("ORCH_PRIMARY_ENDPOINT").copied(), Some(format!("127.0.0.1:{}/0", w.primary.port()).as_str()));

    let hooks = hook_effects(&j, &id).await;
    assert_eq!(hooks.iter().map(|h| h.outcome.as_deref()).collect::<Vec<_>>(), [Some("ok"), Some("ok")]);
    let pre = hooks.iter().find(|h| h.key.ends_with(":pre_switch")).unwrap();
    let result = pre.result.clone().unwrap();
    assert!(result.contains("token is *** and"), "the mapped secret is redacted in the journal: {result}");
    // Nothing secret anywhere in the journal's text.
    let dump = format!("{:?}{:?}", j.effects(&id).await.unwrap(), j.transitions(&id).await.unwrap());
    for value in [SECRET, PRIMARY_PASSWORD] {
        assert!(!dump.contains(value), "{value} is in the journal");
    }
}

/// Crash between a hook's intent and outcome, then `resume`: at least once. An intent
/// without outcome is run again (the hook sees the same `ORCH_HOOK_KEY`); a completed
/// run is not repeated. Either way one platform write per value.
async fn crash_then_resume(point: &str, runs_after: usize) {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let dir = w.dir.path().display().to_string();
    let e = with_hooks(&sh_hook("pre_switch", &format!("echo \"$ORCH_HOOK_KEY\" >> {dir}/runs.txt"), "5s"));
    let playbook = w.playbook_file(&edits(&e));
    let pb = playbook.to_str().unwrap();
    let status = orchestrator(&w, &["run", "--playbook", pb, "--reason", point], Some(point)).await;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "killed at {point}");
    let status = orchestrator(&w, &["resume", &latest(&w).await, "--playbook", pb], None).await;
    assert_eq!(status.code(), Some(0), "resume after {point} recovers");

    let id = latest(&w).await;
    let runs = std::fs::read_to_string(w.dir.path().join("runs.txt")).unwrap_or_default();
    let runs: Vec<&str> = runs.lines().collect();
    assert_eq!(runs.len(), runs_after, "hook runs after a crash at {point}: {runs:?}");
    assert!(runs.iter().all(|k| *k == format!("{id}:hook:pre_switch")), "the same key each time: {runs:?}");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let hooks = hook_effects(&j, &id).await;
    assert_eq!(hooks.len(), 1, "one effect row per key");
    assert_eq!(hooks[0].outcome.as_deref(), Some("ok"));
    let writes = w.env_writes();
    assert_eq!(writes.len(), 1, "one platform write: {writes:?}");
}

async fn latest(w: &World) -> String {
    Journal::open_existing(&w.journal_path()).await.unwrap().incidents(1).await.unwrap()[0].id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_hook_ran_but_before_its_outcome_reruns_it() {
    crash_then_resume("outcome:hook:pre_switch", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_hooks_intent_before_it_ran_runs_it_once() {
    crash_then_resume("intent:hook:pre_switch", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_hook_is_not_rerun_on_resume() {
    crash_then_resume("intent:set_env", 1).await;
}

// ------------------------------------------------------------ playbook validation

use support::minimal::{env, VALID};

fn problems(hooks: &str) -> Vec<(usize, usize, String)> {
    let yaml = format!("{VALID}hooks:\n{hooks}");
    match load_bytes(yaml.as_bytes(), Path::new("t.yaml"), &env) {
        Ok(_) => vec![],
        Err(PlaybookError::Invalid { problems, .. }) => problems.into_iter().map(|p| (p.pos.line, p.pos.col, p.message)).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Line of the first hooks line in the document (1-based).
const H: usize = 16;

fn expect(hooks: &str, want: &[(usize, usize, &str)]) {
    let got = problems(hooks);
    assert_eq!(got.len(), want.len(), "problems for {hooks:?}: {got:#?}");
    for ((l, c, m), (wl, wc, needle)) in got.iter().zip(want) {
        assert!(m.contains(needle), "message {m:?} lacks {needle:?}");
        assert_eq!((*l, *c), (*wl, *wc), "position of {m:?}");
    }
}

#[test]
fn a_valid_hooks_section_loads_with_defaults_and_its_secrets_redacted() {
    let yaml = format!(
        "{VALID}hooks:\n  pre_switch: {{ command: [\"/usr/local/bin/check-change-freeze\", \"--strict\"], timeout: 10s, env: {{ TOKEN: \"${{FREEZE_TOKEN}}\" }} }}\n  post_recovered:\n    command: [notify-cmdb]\n"
    );
    let pb = load_bytes(yaml.as_bytes(), Path::new("t.yaml"), &env).unwrap();
    use orchestrator::model::HookPoint;
    let pre = &pb.hooks[&HookPoint::PreSwitch];
    assert_eq!(pre.command, ["/usr/local/bin/check-change-freeze", "--strict"]);
    assert_eq!(pre.timeout, Duration::from_secs(10));
    assert_eq!(pre.env["TOKEN"].expose(), "frz-secret-77");
    assert_eq!(pb.hooks[&HookPoint::PostRecovered].timeout, Duration::from_secs(30), "the default timeout");
    assert_eq!(pb.redactor.redact("said frz-secret-77"), "said ***");
}

#[test]
fn an_unknown_hook_name_is_reported_with_a_suggestion() {
    expect("  pre_swtich:\n    command: [x]\n", &[(H, 3, "unknown field `pre_swtich` in `hooks`; did you mean `pre_switch`?")]);
}

#[test]
fn a_command_must_be_a_non_empty_argv() {
    expect("  pre_switch:\n    command: \"check --strict\"\n", &[(H + 1, 14, "must be a list (the program and its arguments, no shell)")]);
    expect("  pre_switch:\n    command: []\n", &[(H + 1, 14, "`hooks.pre_switch.command` is empty")]);
    expect("  pre_flush:\n    command: [\"\", \"-x\"]\n", &[(H + 1, 14, "`hooks.pre_flush.command[0]` is empty")]);
    expect("  pre_flush:\n    timeout: 5s\n", &[(H + 1, 12, "missing required field `hooks.pre_flush.command`")]);
}

#[test]
fn a_timeout_must_be_a_bounded_duration() {
    expect("  pre_switch:\n    command: [x]\n    timeout: 0s\n", &[(H + 2, 14, "must be greater than zero")]);
    expect("  pre_switch:\n    command: [x]\n    timeout: 11m\n", &[(H + 2, 14, "must be at most 10m")]);
    expect("  pre_switch:\n    command: [x]\n    timeout: soon\n", &[(H + 2, 14, "`hooks.pre_switch.timeout`")]);
}

#[test]
fn every_problem_of_the_section_is_reported_at_once() {
    let got = problems("  pre_switch:\n    command: []\n    timeout: 1h\n    env:\n      PATH: /tmp\n      1BAD: x\n      T: \"${UNSET}\"\n    shell: true\n");
    let places: Vec<(usize, usize)> = got.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(places, [(H + 1, 14), (H + 2, 14), (H + 4, 7), (H + 5, 7), (H + 6, 10), (H + 7, 5)], "{got:#?}");
    assert!(got[2].2.contains("`PATH` and `ORCH_*` are set by the orchestrator"));
    assert!(got[3].2.contains("not a valid environment variable name"));
    assert!(got[4].2.contains("`UNSET` is not set"));
    assert!(got[5].2.contains("unknown field `shell`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_veto_journals_its_output_cut_and_post_escalated_runs_after_the_close() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let dir = w.dir.path().display().to_string();
    let mut hooks = sh_hook("pre_switch", "printf '\\033[31m'; yes x | head -c 10000; exit 1", "5s");
    hooks.push_str(&sh_hook("post_escalated", &format!("echo \"$ORCH_OUTCOME $ORCH_STATE\" > {dir}/post.txt"), "5s"));
    let e = with_hooks(&hooks);
    let exec = w.executor(&edits(&e)).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "escalated");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let hooks = hook_effects(&j, &id).await;
    let pre = hooks.iter().find(|h| h.key.ends_with(":pre_switch")).unwrap();
    let result = pre.result.clone().unwrap();
    assert!(result.contains("x\\nx\\nx") && result.contains("output cut at 4 KiB"), "{}", &result[..200.min(result.len())]);
    let error = serde_json::from_str::<serde_json::Value>(&result).unwrap()["error"].as_str().unwrap().to_string();
    assert!(error.len() < 4096 + 200, "cut: {} bytes", error.len());
    assert!(!result.contains("\\u001b"), "control characters (a terminal escape) are not journaled: {}", &result[..80]);
    let post = hooks.iter().find(|h| h.key.ends_with(":post_escalated")).expect("post_escalated ran");
    assert_eq!(post.outcome.as_deref(), Some("ok"));
    assert_eq!(std::fs::read_to_string(w.dir.path().join("post.txt")).unwrap().trim(), "escalated escalated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_cannot_start_vetoes() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let e = with_hooks("  pre_switch:\n    command: [\"/nonexistent/check-freeze\"]\n");
    let exec = w.executor(&edits(&e)).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "escalated");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let result = hook_effects(&j, &id).await[0].result.clone().unwrap();
    assert!(result.contains("could not be started") && result.contains("/nonexistent/check-freeze"), "{result}");
    assert!(w.env_writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_incidents_run_no_hooks() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let dir = w.dir.path().display().to_string();
    let mut hooks = sh_hook("pre_switch", &format!("touch {dir}/ran; exit 1"), "5s");
    hooks.push_str(&sh_hook("post_escalated", &format!("touch {dir}/ran"), "5s"));
    let mut e = with_hooks(&hooks);
    e.push(("\nhooks:\n", "\nmode: observe\nhooks:\n".to_string()));
    let exec = w.executor(&edits(&e)).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "would_fail_over");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    assert!(hook_effects(&j, &id).await.is_empty());
    assert!(!w.dir.path().join("ran").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hook_stops_at_once_kills_it_and_resume_runs_it_again() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let dir = w.dir.path().display().to_string();
    let script =
        format!("echo \"$ORCH_HOOK_KEY\" >> {dir}/runs.txt; [ -e {dir}/release ] && exit 0; sleep 1000 & echo $! > {dir}/child.pid; wait");
    let e = with_hooks(&sh_hook("pre_switch", &script, "10m"));
    let playbook = w.playbook_file(&edits(&e));
    let pb = playbook.to_str().unwrap().to_string();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["run", "--playbook", &pb, "--reason", "drill"])
        .envs(&w.env)
        .env_remove("ORCH_FAULT_CRASH_AT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = w.dir.path().join("child.pid");
    wait_until(Duration::from_secs(30), "the hook to hang", || {
        let f = pid_file.clone();
        async move { std::fs::read_to_string(&f).is_ok_and(|s| s.ends_with('\n')) }
    })
    .await;
    let sleeper: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output()).await.expect("stops at once").unwrap();
    assert_eq!(out.status.code(), Some(8), "interrupted, resumable");
    wait_until(Duration::from_secs(5), "the hook's group to be killed", || async move { !alive(sleeper) }).await;
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let id = latest(&w).await;
    assert_eq!(hook_effects(&j, &id).await[0].outcome, None, "the intent stays open");
    assert!(w.env_writes().is_empty());

    std::fs::write(w.dir.path().join("release"), "").unwrap();
    let status = orchestrator(&w, &["resume", &id, "--playbook", &pb], None).await;
    assert_eq!(status.code(), Some(0), "resume runs the hook again and recovers");
    let runs = std::fs::read_to_string(w.dir.path().join("runs.txt")).unwrap();
    assert_eq!(runs.lines().count(), 2, "at least once: {runs}");
    assert_eq!(hook_effects(&j, &id).await[0].outcome.as_deref(), Some("ok"));
    assert_eq!(w.env_writes().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_veto_whose_outcome_a_crash_lost_is_asked_again_and_still_escalates() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let dir = w.dir.path().display().to_string();
    let e = with_hooks(&sh_hook("pre_switch", &format!("echo \"$ORCH_HOOK_KEY\" >> {dir}/runs.txt; echo frozen; exit 1"), "5s"));
    let playbook = w.playbook_file(&edits(&e));
    let pb = playbook.to_str().unwrap();
    let status = orchestrator(&w, &["run", "--playbook", pb, "--reason", "drill"], Some("outcome:hook:pre_switch")).await;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let status = orchestrator(&w, &["resume", &latest(&w).await, "--playbook", pb], None).await;
    assert_eq!(status.code(), Some(5), "escalated");
    assert_eq!(std::fs::read_to_string(w.dir.path().join("runs.txt")).unwrap().lines().count(), 2, "asked again");
    assert!(w.env_writes().is_empty(), "never written");
}
