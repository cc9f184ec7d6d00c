//! Playbook validation: the shipped playbooks load, and malformed playbooks report
//! every problem with its line and column.

use orchestrator::playbook::{load_bytes, PlaybookError};
use std::path::Path;

mod support;

use support::minimal::{env, VALID};

fn problems(yaml: &str) -> Vec<(usize, usize, String)> {
    match load_bytes(yaml.as_bytes(), Path::new("t.yaml"), &env) {
        Ok(_) => vec![],
        Err(PlaybookError::Invalid { problems, .. }) => problems.into_iter().map(|p| (p.pos.line, p.pos.col, p.message)).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Appends `extra` to the valid playbook (its own `approvals` replacing the base's)
/// and expects exactly one problem.
fn expect_one(extra: &str, line: usize, col: usize, needle: &str) {
    let base = if extra.starts_with("approvals:") { VALID.replace("approvals:\n  approvers: [alice]\n", "") } else { VALID.to_string() };
    let yaml = format!("{base}{extra}");
    let got = problems(&yaml);
    assert_eq!(got.len(), 1, "expected one problem for {extra:?}, got {got:#?}");
    let (l, c, m) = &got[0];
    assert!(m.contains(needle), "message {m:?} lacks {needle:?}");
    assert_eq!((*l, *c), (line, col), "position of {m:?}");
}

#[test]
fn the_valid_base_loads() {
    assert!(problems(VALID).is_empty());
}

#[test]
fn shipped_playbooks_are_valid() {
    let sandbox = std::fs::read("playbooks/sandbox.yaml").unwrap();
    let none = |_: &str| None;
    load_bytes(&sandbox, Path::new("playbooks/sandbox.yaml"), &none).expect("sandbox.yaml is valid with its defaults");

    let visapi = std::fs::read("playbooks/visapi.yaml").unwrap();
    let all = |name: &str| {
        Some(match name {
            n if n.ends_with("REDIS_URL") && n.contains("PRIMARY") => "rediss://default:pw@primary.example.com:6379".into(),
            n if n.ends_with("REDIS_URL") => "rediss://default:pw@backup.example.com:6379".into(),
            "VISAPI_BASE_URL" => "https://api.visanet.app".into(),
            "SLACK_WEBHOOK_URL" => "https://hooks.slack.com/services/T/B/X".into(),
            _ => "x".into(),
        })
    };
    let pb = load_bytes(&visapi, Path::new("playbooks/visapi.yaml"), &all).expect("visapi.yaml is valid");
    assert_eq!(pb.approvals.steps, vec![orchestrator::model::Step::Flush]);
    // Without its environment, visapi.yaml names every missing variable.
    let err = load_bytes(&visapi, Path::new("playbooks/visapi.yaml"), &none).unwrap_err().to_string();
    for var in [
        "VISAPI_PRIMARY_REDIS_URL",
        "VISAPI_BACKUP_REDIS_URL",
        "VISAPI_BASE_URL",
        "VISAPI_API_KEY",
        "RENDER_API_KEY",
        "RENDER_SERVICE_ID",
        "SLACK_WEBHOOK_URL",
    ] {
        assert!(err.contains(var), "{var} not named in:\n{err}");
    }
}

#[test]
fn unknown_top_level_field() {
    expect_one("colour: blue\n", 15, 1, "unknown field `colour` in the top level");
}

#[test]
fn misspelt_field_gets_a_suggestion() {
    expect_one("cooldwn: 5m\n", 15, 1, "did you mean `cooldown`?");
}

#[test]
fn bad_duration() {
    expect_one("cooldown: 5 minutes\n", 15, 11, "invalid duration");
}

#[test]
fn duration_without_unit() {
    expect_one("thresholds:\n  ping_timeout: 30\n", 16, 17, "has no unit");
}

#[test]
fn zero_duration_refused() {
    expect_one("thresholds:\n  job_timeout: 0s\n", 16, 16, "greater than zero");
}

#[test]
fn number_out_of_range() {
    expect_one("thresholds:\n  confirm_attempts: 0\n", 16, 21, "between 1 and 100");
}

#[test]
fn not_a_number() {
    expect_one("thresholds:\n  confirm_attempts: many\n", 16, 21, "whole number");
}

#[test]
fn unknown_failure_class() {
    expect_one("actions:\n  disk_full: failover\n", 16, 3, "unknown field `disk_full` in `actions`");
}

#[test]
fn unknown_action() {
    expect_one("actions:\n  timeout: reboot\n", 16, 12, "unknown value `reboot`");
}

#[test]
fn unknown_checklist_item() {
    expect_one("verify:\n  required: [health_up, vibes]\n", 16, 25, "`verify.required[1]`: unknown value `vibes`");
}

#[test]
fn unknown_flush_mode_with_suggestion() {
    expect_one("flush:\n  mode: selectiv\n", 16, 9, "did you mean `selective`?");
}

#[test]
fn wildcard_flush_pattern_refused() {
    expect_one("flush:\n  patterns: [\"*\"]\n", 16, 13, "use `mode: flushdb`");
}

#[test]
fn approvals_that_could_never_open() {
    let base = VALID.replace("approvals:\n  approvers: [alice]\n", "");
    let got = problems(&base);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].2.contains("lists nobody"), "{got:?}");
    expect_one("approvals:\n  steps: [flush]\n  approvers: [alice]\n  required: 2\n", 16, 13, "could never open");
}

#[test]
fn wrong_type_for_a_section() {
    expect_one("confirm: yes\n", 15, 10, "`confirm` must be a mapping");
}

#[test]
fn list_expected() {
    expect_one("approvals:\n  approvers: alice\n", 14, 14, "must be a list");
}

#[test]
fn literal_secret_refused() {
    let yaml = VALID.replace("api_key: \"${KEY}\"", "api_key: visapi_literal_key");
    let got = problems(&yaml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (7, 12));
    assert!(got[0].2.contains("must come from an environment variable"));
    assert!(!got[0].2.contains("visapi_literal_key"), "the secret is not echoed");
}

#[test]
fn literal_password_in_redis_url_refused_without_echo() {
    let yaml = VALID.replace("backup: \"${B}\"", "backup: redis://default:s3cr3t@h:6379");
    let got = problems(&yaml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (4, 11));
    assert!(!got[0].2.contains("s3cr3t"));
}

#[test]
fn wrong_redis_scheme() {
    let yaml = VALID.replace("backup: \"${B}\"", "backup: http://127.0.0.1:7002");
    let got = problems(&yaml);
    assert_eq!((got[0].0, got[0].1), (4, 11));
    assert!(got[0].2.contains("redis:// or rediss://"), "{got:?}");
}

#[test]
fn backup_same_as_primary() {
    let yaml = VALID.replace("backup: \"${B}\"", "backup: \"${SAME}\"");
    let got = problems(&yaml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].2.contains("same endpoint"));
    assert_eq!(got[0].0, 4);
}

#[test]
fn missing_required_fields() {
    let got = problems("name: t\nplatform:\n  kind: render\n");
    let text: Vec<&str> = got.iter().map(|p| p.2.as_str()).collect();
    assert!(text.iter().any(|m| m.contains("missing required field `redis`")), "{text:?}");
    assert!(text.iter().any(|m| m.contains("missing required field `service`")), "{text:?}");
    assert!(text.iter().any(|m| m.contains("missing required field `platform.api_key`")), "{text:?}");
}

#[test]
fn unknown_platform_kind() {
    let yaml = VALID.replace("kind: render", "kind: heroku");
    let got = problems(&yaml);
    assert!(got[0].2.contains("unknown value `heroku`"), "{got:?}");
    assert_eq!((got[0].0, got[0].1), (9, 9));
}

#[test]
fn fields_of_another_platform_kind_are_unknown() {
    let yaml = VALID.replace("  service_id: srv-1\n", "  service_id: srv-1\n  restart: docker compose restart\n");
    let got = problems(&yaml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].2.contains("unknown field `restart` in `platform`"));
}

#[test]
fn plain_http_to_a_remote_host_refused() {
    let yaml = VALID.replace("base_url: http://127.0.0.1:3000", "base_url: http://api.example.com");
    let got = problems(&yaml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].2.contains("plain http://"));
    let allowed = format!("{yaml}allow_insecure_http: true\n");
    assert!(problems(&allowed).is_empty());
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let got = problems("name: t\nredis: [unclosed\n");
    assert_eq!(got.len(), 1);
    assert!(got[0].2.contains("YAML syntax error"), "{got:?}");
    assert!(got[0].0 >= 2);
}

#[test]
fn duplicate_keys_are_reported() {
    let got = problems(&format!("{VALID}name: again\n"));
    assert!(got.iter().any(|p| p.2.contains("duplicate key `name`") && p.0 == 15), "{got:?}");
}

#[test]
fn unknown_field_bad_duration_and_missing_env_all_at_once() {
    let yaml = VALID.replace("primary: \"${P}\"", "primary: \"${NOT_SET_ANYWHERE}\"") + "thresholds:\n  verify_window: soon\nwatchh: {}\n";
    let got = problems(&yaml);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got[0].2.contains("NOT_SET_ANYWHERE") && got[0].0 == 3);
    assert!(got[1].2.contains("invalid duration") && got[1].0 == 16);
    assert!(got[2].2.contains("unknown field `watchh`") && got[2].0 == 17);
}

#[test]
fn empty_and_non_utf8_files() {
    assert!(problems("")[0].2.contains("empty"));
    let err = load_bytes(&[0xff, 0xfe, 0x00], Path::new("x.yaml"), &env).unwrap_err().to_string();
    assert!(err.contains("not UTF-8"));
}

#[test]
fn console_url_must_be_an_http_url() {
    expect_one("console_url: ftp://orchestrator.example.com\n", 15, 14, "`console_url` must be an http:// or https:// URL");
    let yaml = format!("{VALID}console_url: https://orchestrator.example.com/\n");
    let pb = load_bytes(yaml.as_bytes(), Path::new("t.yaml"), &env).expect("valid");
    assert_eq!(pb.console_url.unwrap().as_str(), "https://orchestrator.example.com/");
}

#[test]
fn mode_is_act_or_observe() {
    expect_one("mode: watch\n", 15, 7, "`mode`: unknown value `watch` (expected one of: act, observe)");
    let pb = load_bytes(VALID.as_bytes(), Path::new("t.yaml"), &env).expect("valid");
    assert_eq!(pb.mode, orchestrator::model::Mode::Act, "acting is the default");
    let yaml = format!("{VALID}mode: observe\n");
    let pb = load_bytes(yaml.as_bytes(), Path::new("t.yaml"), &env).expect("valid");
    assert_eq!(pb.mode, orchestrator::model::Mode::Observe);
}

#[test]
fn pagerduty_section_is_validated_every_problem_at_once() {
    let yaml = format!(
        "{VALID}notifications:\n  pagerduty:\n    routing_key: r0ut1ng-literal\n    url: http://events.example.com/v2/enqueue\n    attempts: 0\n    timout: 5s\n"
    );
    let got = problems(&yaml);
    let find = |needle: &str| got.iter().find(|(_, _, m)| m.contains(needle)).map(|(l, c, _)| (*l, *c));
    assert_eq!(
        find("`notifications.pagerduty.routing_key` is a secret and must come from an environment variable"),
        Some((17, 18)),
        "{got:#?}"
    );
    assert_eq!(find("`notifications.pagerduty.attempts`"), Some((19, 15)), "{got:#?}");
    assert_eq!(find("unknown field `timout`"), Some((20, 5)), "{got:#?}");
    assert!(got.iter().all(|(_, _, m)| !m.contains("r0ut1ng-literal")), "the literal is never echoed: {got:#?}");

    // A missing variable is named; plain http to another host is refused.
    let yaml = format!("{VALID}notifications:\n  pagerduty:\n    routing_key: \"${{PD_KEY}}\"\n");
    assert!(problems(&yaml).iter().any(|(l, _, m)| *l == 17 && m.contains("PD_KEY")), "{:#?}", problems(&yaml));
    let env_pd = |n: &str| if n == "PD_KEY" { Some("pd-key-123456".to_string()) } else { env(n) };
    let yaml =
        format!("{VALID}notifications:\n  pagerduty:\n    routing_key: \"${{PD_KEY}}\"\n    url: http://events.example.com/v2/enqueue\n");
    let err = load_bytes(yaml.as_bytes(), Path::new("t.yaml"), &env_pd).unwrap_err().to_string();
    assert!(err.contains("t.yaml:18:10") && err.contains("`notifications.pagerduty.url` sends a secret over plain http://"), "{err}");
    // Defaults: PagerDuty's own endpoint, three attempts, 5 s each.
    let yaml = format!("{VALID}notifications:\n  pagerduty:\n    routing_key: \"${{PD_KEY}}\"\n");
    let pb = load_bytes(yaml.as_bytes(), Path::new("t.yaml"), &env_pd).expect("valid");
    let pd = pb.notifications.pagerduty.unwrap();
    assert_eq!(
        (pd.url.as_str(), pd.attempts, pd.timeout),
        ("https://events.pagerduty.com/v2/enqueue", 3, std::time::Duration::from_secs(5))
    );
    assert!(!format!("{pd:?}").contains("pd-key-123456"), "Debug never prints the key");
    assert_eq!(pb.redactor.redact("key pd-key-123456"), "key ***", "the key is one of the playbook's secrets");
}
