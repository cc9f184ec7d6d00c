//! Second step of loading: the marked YAML tree compiled into a typed [`Playbook`],
//! every problem collected with its position. Defaults come from the runbook.

use super::decode::{Decoder, Fields};
use super::model::*;
use super::yaml::{Kind, Node};
use crate::model::{Action, ConfirmItem, FailureClass, FlushMode, Step, VerifyItem};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const TOP: &[&str] = &[
    "name",
    "redis",
    "service",
    "thresholds",
    "confirm",
    "verify",
    "actions",
    "flush",
    "approvals",
    "platform",
    "notifications",
    "cooldown",
    "watch",
    "routing",
    "topology",
    "console_url",
    "mode",
    "hooks",
    "allow_insecure_http",
];

/// The failure classes the runbook says a switch to a backup can fix; everything else
/// needs a person by default (switching away from an out-of-memory primary, say, would
/// strand its data).
fn default_action(class: FailureClass) -> Action {
    match class {
        FailureClass::Network | FailureClass::ConnectionRefused | FailureClass::Timeout => Action::Failover,
        // A server that is loading its dataset or running a long script is working:
        // wait for it, never fail over from it.
        FailureClass::Busy | FailureClass::Loading => Action::Wait,
        _ => Action::Escalate,
    }
}

pub fn compile(root: &Node, source: PathBuf, hash: String, d: &mut Decoder<'_>) -> Option<Playbook> {
    if matches!(root.kind, Kind::Null) {
        d.problem(root.pos, "the playbook is empty");
        return None;
    }
    let top = d.map(root, "", TOP)?;
    let name = d.required(&top, "name").and_then(|n| d.string(n, "name"));
    let allow_insecure = top.get("allow_insecure_http").map(|n| d.boolean(n, "allow_insecure_http")).unwrap_or(Some(false));
    let redis = d.required(&top, "redis").and_then(|n| redis_section(n, d));
    let service = d.required(&top, "service").and_then(|n| service_section(n, d));
    let thresholds = match top.get("thresholds") {
        Some(n) => thresholds(n, d),
        None => Some(default_thresholds()),
    };
    let confirm =
        opt_section(&top, "confirm", d, confirm_policy, || ConfirmPolicy { required: vec![ConfirmItem::PingFailed], min_signals: 2 });
    let verify =
        opt_section(&top, "verify", d, verify_policy, || VerifyPolicy { required: VerifyItem::ALL.to_vec(), restart_on_stall: true });
    let actions = match top.get("actions") {
        Some(n) => actions(n, d),
        None => Some(FailureClass::ALL.iter().filter(|c| **c != FailureClass::Local).map(|c| (*c, default_action(*c))).collect()),
    };
    let flush = opt_section(&top, "flush", d, flush_policy, default_flush);
    let approvals = opt_section(&top, "approvals", d, approval_policy, || ApprovalPolicy {
        steps: vec![Step::Flush],
        approvers: vec![],
        required: 1,
        ttl: Duration::from_secs(30 * 60),
        os_users: BTreeMap::new(),
    });
    let platform = d.required(&top, "platform").and_then(|n| platform(n, d));
    let notifications = opt_section(&top, "notifications", d, notifications, Notifications::default);
    let cooldown = top.get("cooldown").map(|n| d.duration(n, "cooldown")).unwrap_or(Some(Duration::from_secs(600)));
    let watch = opt_section(&top, "watch", d, watch_policy, default_watch);
    let routing = opt_section(&top, "routing", d, routing, Routing::default);
    let topology = opt_section(&top, "topology", d, topology_policy, || TopologyPolicy { rearm_after: Duration::from_secs(600) });
    // The name is the target's: in webhook URLs (`/webhooks/grafana/NAME`), labels and
    // the journal. A path segment and a label value, so plain characters only.
    let name = match (name, top.get("name")) {
        (Some(n), Some(node)) if n.is_empty() || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
            d.problem(
                node.pos,
                format!("`name` {n:?} must be 1 to 64 letters, digits, `-`, `_` or `.`: it names the target in webhook URLs and labels"),
            );
            None
        }
        (n, _) => n,
    };
    // Where people reach `serve`'s web console; only a link in messages, never fetched.
    let console_url = match top.get("console_url") {
        Some(n) => d.http_url(n, "console_url").map(Some),
        None => Some(None),
    };

    let mode = match top.get("mode") {
        Some(n) => d.name(n, "mode", crate::model::Mode::parse, &crate::model::Mode::names()),
        None => Some(crate::model::Mode::Act),
    };

    let hooks = opt_section(&top, "hooks", d, super::hooks::hooks, BTreeMap::new);

    let pb = Playbook {
        name: name?,
        source,
        hash,
        redis: redis?,
        service: service?,
        thresholds: thresholds?,
        confirm: confirm?,
        verify: verify?,
        actions: actions?,
        flush: flush?,
        approvals: approvals?,
        platform: platform?,
        notifications: notifications?,
        cooldown: cooldown?,
        watch: watch?,
        routing: routing?,
        topology: topology?,
        console_url: console_url?,
        mode: mode?,
        hooks: hooks?,
        redactor: std::sync::Arc::new(d.redactor.clone()),
    };
    cross_checks(&pb, root, allow_insecure?, d);
    Some(pb)
}

fn opt_section<T>(
    top: &Fields<'_>,
    key: &str,
    d: &mut Decoder<'_>,
    read: fn(&Node, &mut Decoder<'_>) -> Option<T>,
    default: impl FnOnce() -> T,
) -> Option<T> {
    match top.get(key) {
        Some(n) => read(n, d),
        None => Some(default()),
    }
}

/// Checks that span several sections, reported at the place a person would fix them.
fn cross_checks(pb: &Playbook, root: &Node, allow_insecure: bool, d: &mut Decoder<'_>) {
    // The place of a field, or the start of the file when the field is absent.
    let find = |path: &[&str]| -> super::yaml::Pos {
        let mut node = root;
        for key in path {
            match &node.kind {
                Kind::Map(entries) => match entries.iter().find(|(k, _, _)| k == key) {
                    Some((_, _, n)) => node = n,
                    None => return super::yaml::Pos { line: 1, col: 1 },
                },
                _ => break,
            }
        }
        node.pos
    };
    if pb.redis.primary.endpoint() == pb.redis.backup.endpoint() {
        d.problem(
            find(&["redis", "backup"]),
            format!(
                "`redis.backup` is the same endpoint as `redis.primary` ({}): a failover to it cannot help",
                pb.redis.backup.endpoint()
            ),
        );
    }
    let a = &pb.approvals;
    if !a.steps.is_empty() && a.approvers.is_empty() {
        d.problem(
            find(&["approvals"]),
            format!("{} is behind an approval gate (the default gates flush) but `approvals.approvers` lists nobody; list approvers or set `approvals.steps: []`", a.steps.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
        );
    } else if !a.steps.is_empty() && (a.approvers.len() as u32) < a.required {
        d.problem(
            find(&["approvals", "required"]),
            format!(
                "`approvals.required` is {} but only {} approver(s) are listed: the gate could never open",
                a.required,
                a.approvers.len()
            ),
        );
    }
    if pb.flush.mode == FlushMode::Selective && pb.flush.patterns.is_empty() {
        d.problem(find(&["flush"]), "`flush.mode` is selective but `flush.patterns` is empty");
    }
    if pb.thresholds.verify_latency > pb.thresholds.latency {
        d.problem(find(&["thresholds", "verify_latency"]), "`thresholds.verify_latency` must not exceed `thresholds.latency`");
    }
    if !allow_insecure {
        // Tokens sent over plain HTTP to another host can be read on the way.
        let mut check = |url: &url::Url, path: &[&str], what: &str| {
            let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1"));
            if url.scheme() == "http" && !loopback {
                d.problem(
                    find(path),
                    format!(
                        "`{what}` sends a secret over plain http:// to {}; use https:// or set `allow_insecure_http: true`",
                        url.host_str().unwrap_or("")
                    ),
                );
            }
        };
        check(&pb.service.base_url, &["service", "base_url"], "service.base_url");
        if let PlatformConfig::Render(r) = &pb.platform {
            check(&r.base_url, &["platform", "base_url"], "platform.base_url");
        }
        // The Slack URL is itself the credential: the same rule as every outbound URL.
        if let Some(slack) = &pb.notifications.slack {
            if let Ok(u) = url::Url::parse(slack.webhook_url.expose()) {
                check(&u, &["notifications", "slack", "webhook_url"], "notifications.slack.webhook_url");
            }
        }
        // The routing key travels in the body.
        if let Some(pd) = &pb.notifications.pagerduty {
            check(&pd.url, &["notifications", "pagerduty", "url"], "notifications.pagerduty.url");
        }
    }
}

fn redis_section(node: &Node, d: &mut Decoder<'_>) -> Option<RedisSection> {
    let f = d.map(node, "redis", &["primary", "backup"])?;
    let primary = d.required(&f, "primary").and_then(|n| d.redis_url(n, "redis.primary"));
    let backup = d.required(&f, "backup").and_then(|n| d.redis_url(n, "redis.backup"));
    Some(RedisSection { primary: primary?, backup: backup? })
}

fn service_section(node: &Node, d: &mut Decoder<'_>) -> Option<ServiceSection> {
    let f = d.map(node, "service", &["base_url", "api_key", "paths", "synthetic_queue", "request_timeout", "error_patterns"])?;
    let base_url = d.required(&f, "base_url").and_then(|n| d.http_url(n, "service.base_url"));
    let api_key = d.required(&f, "api_key").and_then(|n| d.secret(n, "service.api_key"));
    let mut paths = [
        ("health", "/api/v1/health".to_string()),
        ("queue_metrics", "/api/v1/queue/metrics".to_string()),
        ("logs", "/api/v1/logs".to_string()),
        ("trigger", "/api/v1/triggers/redis-recovery-test".to_string()),
    ];
    let mut ok = true;
    if let Some(pn) = f.get("paths") {
        if let Some(pf) = d.map(pn, "service.paths", &["health", "queue_metrics", "logs", "trigger"]) {
            for (key, value) in paths.iter_mut() {
                if let Some(n) = pf.get(key) {
                    match d.string(n, &format!("service.paths.{key}")) {
                        Some(s) if s.starts_with('/') => *value = s,
                        Some(s) => {
                            d.problem(n.pos, format!("`service.paths.{key}` must start with `/`, found {s:?}"));
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
            }
        } else {
            ok = false;
        }
    }
    let synthetic_queue = f.get("synthetic_queue").map(|n| d.string(n, "service.synthetic_queue")).unwrap_or(Some("default".into()));
    let request_timeout =
        f.get("request_timeout").map(|n| d.positive_duration(n, "service.request_timeout")).unwrap_or(Some(Duration::from_secs(5)));
    let error_patterns = f.get("error_patterns").map(|n| d.strings(n, "service.error_patterns")).unwrap_or_else(|| {
        // The runbook's phrases, and what an ioredis client logs while it cannot reach
        // Redis (a real BullMQ service's errors).
        Some(
            [
                "Redis connection failed",
                "ECONNREFUSED",
                "Connection timeout",
                "Redis ping exceeded timeout",
                "Redis ping failed",
                "Stream isn't writeable",
                "Connection is closed",
                "ETIMEDOUT",
            ]
            .map(String::from)
            .to_vec(),
        )
    });
    let [health, metrics, logs, trigger] = paths.map(|(_, v)| v);
    if !ok {
        return None;
    }
    Some(ServiceSection {
        base_url: base_url?,
        api_key: api_key?,
        health_path: health,
        queue_metrics_path: metrics,
        logs_path: logs,
        trigger_path: trigger,
        synthetic_queue: synthetic_queue?,
        request_timeout: request_timeout?,
        error_patterns: error_patterns?,
    })
}

fn default_thresholds() -> Thresholds {
    Thresholds {
        ping_timeout: Duration::from_secs(1),
        latency: Duration::from_millis(1000),
        verify_latency: Duration::from_millis(100),
        job_timeout: Duration::from_secs(5),
        confirm_window: Duration::from_secs(30),
        confirm_attempts: 3,
        verify_window: Duration::from_secs(120),
        verify_interval: Duration::from_secs(2),
        deploy_timeout: Duration::from_secs(600),
        deploy_poll: Duration::from_secs(5),
        latency_samples: 5,
        deploy_retries: 2,
        busy_wait: Duration::from_secs(30),
        busy_interval: Duration::from_secs(2),
    }
}

fn thresholds(node: &Node, d: &mut Decoder<'_>) -> Option<Thresholds> {
    let keys = [
        "ping_timeout",
        "latency",
        "verify_latency",
        "job_timeout",
        "confirm_window",
        "confirm_attempts",
        "verify_window",
        "verify_interval",
        "deploy_timeout",
        "deploy_poll",
        "latency_samples",
        "deploy_retries",
        "busy_wait",
        "busy_interval",
    ];
    let f = d.map(node, "thresholds", &keys)?;
    let mut t = default_thresholds();
    let mut ok = true;
    {
        let mut dur = |key: &str, slot: &mut Duration| {
            if let Some(n) = f.get(key) {
                match d.positive_duration(n, &format!("thresholds.{key}")) {
                    Some(v) => *slot = v,
                    None => ok = false,
                }
            }
        };
        dur("ping_timeout", &mut t.ping_timeout);
        dur("latency", &mut t.latency);
        dur("verify_latency", &mut t.verify_latency);
        dur("job_timeout", &mut t.job_timeout);
        dur("confirm_window", &mut t.confirm_window);
        dur("verify_window", &mut t.verify_window);
        dur("verify_interval", &mut t.verify_interval);
        dur("deploy_timeout", &mut t.deploy_timeout);
        dur("deploy_poll", &mut t.deploy_poll);
        dur("busy_wait", &mut t.busy_wait);
        dur("busy_interval", &mut t.busy_interval);
    }
    if let Some(n) = f.get("deploy_retries") {
        match d.uint(n, "thresholds.deploy_retries", 0, 10) {
            Some(v) => t.deploy_retries = v as u32,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("confirm_attempts") {
        match d.uint(n, "thresholds.confirm_attempts", 1, 100) {
            Some(v) => t.confirm_attempts = v as u32,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("latency_samples") {
        match d.uint(n, "thresholds.latency_samples", 1, 1000) {
            Some(v) => t.latency_samples = v as u32,
            None => ok = false,
        }
    }
    ok.then_some(t)
}

fn confirm_policy(node: &Node, d: &mut Decoder<'_>) -> Option<ConfirmPolicy> {
    let f = d.map(node, "confirm", &["required", "min_signals"])?;
    let required = f
        .get("required")
        .map(|n| d.names(n, "confirm.required", ConfirmItem::parse, &ConfirmItem::names()))
        .unwrap_or(Some(vec![ConfirmItem::PingFailed]));
    let min = f.get("min_signals").map(|n| d.uint(n, "confirm.min_signals", 1, ConfirmItem::ALL.len() as u64)).unwrap_or(Some(2));
    let required = required?;
    let min = min? as u32;
    if (required.len() as u32) > min {
        if let Some(n) = f.get("min_signals") {
            d.problem(n.pos, format!("`confirm.min_signals` ({min}) is below the number of required items ({})", required.len()));
            return None;
        }
    }
    let min_signals = min.max(required.len() as u32);
    Some(ConfirmPolicy { required, min_signals })
}

fn verify_policy(node: &Node, d: &mut Decoder<'_>) -> Option<VerifyPolicy> {
    let f = d.map(node, "verify", &["required", "restart_on_stall"])?;
    let restart = f.get("restart_on_stall").map(|n| d.boolean(n, "verify.restart_on_stall")).unwrap_or(Some(true));
    let required = f
        .get("required")
        .map(|n| d.names(n, "verify.required", VerifyItem::parse, &VerifyItem::names()))
        .unwrap_or(Some(VerifyItem::ALL.to_vec()))?;
    if required.is_empty() {
        d.problem(f.pos, "`verify.required` is empty: recovery would be declared without evidence");
        return None;
    }
    Some(VerifyPolicy { required, restart_on_stall: restart? })
}

/// The action per failure class. `local` (the orchestrator's own trouble) is not a
/// class a playbook can act on: it is never evidence about Redis. `wait` only makes
/// sense for a server that is working (`busy`, `loading`).
fn actions(node: &Node, d: &mut Decoder<'_>) -> Option<BTreeMap<FailureClass, Action>> {
    let classes: Vec<FailureClass> = FailureClass::ALL.iter().copied().filter(|c| *c != FailureClass::Local).collect();
    let known: Vec<&str> = classes.iter().map(|c| c.as_str()).collect();
    let f = d.map(node, "actions", &known)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for class in classes {
        let action = match f.get(class.as_str()) {
            Some(n) => match d.name(n, &format!("actions.{class}"), Action::parse, &Action::names()) {
                Some(Action::Wait) if !matches!(class, FailureClass::Busy | FailureClass::Loading) => {
                    d.problem(
                        n.pos,
                        format!("`actions.{class}: wait` waits for a server that is working; only `busy` and `loading` can wait (use failover or escalate)"),
                    );
                    None
                }
                other => other,
            },
            None => Some(default_action(class)),
        };
        match action {
            Some(a) => {
                out.insert(class, a);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn default_flush() -> FlushPolicy {
    FlushPolicy {
        mode: FlushMode::Selective,
        patterns: vec!["bull:*".into(), "idempotent:*".into()],
        batch: 500,
        max_latency: Duration::from_millis(50),
        critical_queues: vec!["critical".into()],
        guard_wait: Duration::from_secs(60),
    }
}

fn flush_policy(node: &Node, d: &mut Decoder<'_>) -> Option<FlushPolicy> {
    let f = d.map(node, "flush", &["mode", "patterns", "batch", "max_latency", "guards"])?;
    let mut p = default_flush();
    let mode = f.get("mode").map(|n| d.name(n, "flush.mode", FlushMode::parse, &FlushMode::names())).unwrap_or(Some(p.mode));
    let patterns = f.get("patterns").map(|n| d.strings(n, "flush.patterns")).unwrap_or(Some(p.patterns.clone()));
    let batch = f.get("batch").map(|n| d.uint(n, "flush.batch", 1, 100_000)).unwrap_or(Some(p.batch as u64));
    let max_latency = f.get("max_latency").map(|n| d.positive_duration(n, "flush.max_latency")).unwrap_or(Some(p.max_latency));
    let mut guards_ok = true;
    if let Some(g) = f.get("guards") {
        match d.map(g, "flush.guards", &["critical_queues", "wait"]) {
            Some(gf) => {
                if let Some(n) = gf.get("critical_queues") {
                    match d.strings(n, "flush.guards.critical_queues") {
                        Some(v) => p.critical_queues = v,
                        None => guards_ok = false,
                    }
                }
                if let Some(n) = gf.get("wait") {
                    match d.duration(n, "flush.guards.wait") {
                        Some(v) => p.guard_wait = v,
                        None => guards_ok = false,
                    }
                }
            }
            None => guards_ok = false,
        }
    }
    if let Some(pats) = &patterns {
        if let Some(n) = f.get("patterns") {
            if pats.iter().any(|p| p.trim() == "*") {
                d.problem(n.pos, "`flush.patterns` contains `*`; use `mode: flushdb` if you really mean every key");
                return None;
            }
        }
    }
    p.mode = mode?;
    p.patterns = patterns?;
    p.batch = batch? as u32;
    p.max_latency = max_latency?;
    guards_ok.then_some(p)
}

fn approval_policy(node: &Node, d: &mut Decoder<'_>) -> Option<ApprovalPolicy> {
    let f = d.map(node, "approvals", &["steps", "approvers", "required", "ttl", "os_users"])?;
    let steps = f.get("steps").map(|n| d.names(n, "approvals.steps", Step::parse, &Step::names())).unwrap_or(Some(vec![Step::Flush]));
    let approvers = f.get("approvers").map(|n| d.strings(n, "approvals.approvers")).unwrap_or(Some(vec![]));
    let required = f.get("required").map(|n| d.uint(n, "approvals.required", 1, 100)).unwrap_or(Some(1));
    let ttl = f.get("ttl").map(|n| d.positive_duration(n, "approvals.ttl")).unwrap_or(Some(Duration::from_secs(1800)));
    let mut os_users = Some(BTreeMap::new());
    if let Some(n) = f.get("os_users") {
        // Each approver acts only as the OS user named here (`approve --as NAME` from
        // anyone else is refused): one shell cannot be two approvers.
        match &n.kind {
            Kind::Map(entries) => {
                let mut map = BTreeMap::new();
                for (name, pos, value) in entries {
                    if let Some(list) = &approvers {
                        if !list.contains(name) {
                            d.problem(*pos, format!("`approvals.os_users.{name}`: {name:?} is not in `approvals.approvers`"));
                        }
                    }
                    if let Some(user) = d.string(value, &format!("approvals.os_users.{name}")) {
                        map.insert(name.clone(), user);
                    }
                }
                os_users = Some(map);
            }
            _ => {
                d.problem(n.pos, "`approvals.os_users` must be a mapping of approver name to OS user");
                os_users = None;
            }
        }
    }
    Some(ApprovalPolicy { steps: steps?, approvers: approvers?, required: required? as u32, ttl: ttl?, os_users: os_users? })
}

fn platform(node: &Node, d: &mut Decoder<'_>) -> Option<PlatformConfig> {
    // Read `kind` first: which other fields are allowed depends on it.
    let kind = match &node.kind {
        Kind::Map(entries) => entries.iter().find(|(k, _, _)| k == "kind").map(|(_, _, n)| n),
        _ => None,
    };
    let Some(kind_node) = kind else {
        d.map(node, "platform", &["kind"])?;
        d.problem(node.pos, "missing required field `platform.kind` (render, command or env-file)");
        return None;
    };
    let kind = d.name(
        kind_node,
        "platform.kind",
        |s| ["render", "command", "env-file"].into_iter().find(|k| *k == s),
        "render, command, env-file",
    )?;
    match kind {
        "render" => {
            let f =
                d.map(node, "platform", &["kind", "base_url", "api_key", "service_id", "env_key", "request_timeout", "retry_deadline"])?;
            let base_url = f
                .get("base_url")
                .map(|n| d.http_url(n, "platform.base_url"))
                .unwrap_or_else(|| url::Url::parse("https://api.render.com").ok());
            let api_key = d.required(&f, "api_key").and_then(|n| d.secret(n, "platform.api_key"));
            let service_id = d.required(&f, "service_id").and_then(|n| d.string(n, "platform.service_id"));
            let env_key = f.get("env_key").map(|n| d.string(n, "platform.env_key")).unwrap_or(Some("REDIS_URL".into()));
            let request_timeout = f
                .get("request_timeout")
                .map(|n| d.positive_duration(n, "platform.request_timeout"))
                .unwrap_or(Some(Duration::from_secs(10)));
            let retry_deadline = f
                .get("retry_deadline")
                .map(|n| d.positive_duration(n, "platform.retry_deadline"))
                .unwrap_or(Some(Duration::from_secs(120)));
            Some(PlatformConfig::Render(RenderConfig {
                base_url: base_url?,
                api_key: api_key?,
                service_id: service_id?,
                env_key: env_key?,
                request_timeout: request_timeout?,
                retry_deadline: retry_deadline?,
            }))
        }
        "command" => {
            let f = d.map(node, "platform", &["kind", "read", "switch", "deploy", "status", "timeout"])?;
            let read = d.required(&f, "read").and_then(|n| d.script(n, "platform.read"));
            let switch = d.required(&f, "switch").and_then(|n| d.script(n, "platform.switch"));
            let deploy = d.required(&f, "deploy").and_then(|n| d.script(n, "platform.deploy"));
            let status = d.required(&f, "status").and_then(|n| d.script(n, "platform.status"));
            let timeout = f.get("timeout").map(|n| d.positive_duration(n, "platform.timeout")).unwrap_or(Some(Duration::from_secs(60)));
            Some(PlatformConfig::Command(CommandConfig {
                read: read?,
                switch: switch?,
                deploy: deploy?,
                status: status?,
                timeout: timeout?,
            }))
        }
        _ => {
            let f = d.map(node, "platform", &["kind", "path", "key", "restart", "timeout"])?;
            let path = d.required(&f, "path").and_then(|n| d.string(n, "platform.path"));
            let key = f.get("key").map(|n| d.string(n, "platform.key")).unwrap_or(Some("REDIS_URL".into()));
            let restart = d.required(&f, "restart").and_then(|n| d.script(n, "platform.restart"));
            let timeout = f.get("timeout").map(|n| d.positive_duration(n, "platform.timeout")).unwrap_or(Some(Duration::from_secs(120)));
            Some(PlatformConfig::EnvFile(EnvFileConfig { path: PathBuf::from(path?), key: key?, restart: restart?, timeout: timeout? }))
        }
    }
}

fn notifications(node: &Node, d: &mut Decoder<'_>) -> Option<Notifications> {
    let f = d.map(node, "notifications", &["slack", "pagerduty"])?;
    let slack = match f.get("slack") {
        Some(sn) => slack(sn, d).map(Some),
        None => Some(None),
    };
    let pagerduty = match f.get("pagerduty") {
        Some(pn) => pagerduty(pn, d).map(Some),
        None => Some(None),
    };
    Some(Notifications { slack: slack?, pagerduty: pagerduty? })
}

fn slack(sn: &Node, d: &mut Decoder<'_>) -> Option<SlackConfig> {
    let sf = d.map(sn, "notifications.slack", &["webhook_url", "channel", "attempts", "timeout"])?;
    let webhook_url = d.required(&sf, "webhook_url").and_then(|n| d.secret(n, "notifications.slack.webhook_url"));
    let channel = match sf.get("channel") {
        Some(n) => d.string(n, "notifications.slack.channel").map(Some),
        None => Some(None),
    };
    let attempts = sf.get("attempts").map(|n| d.uint(n, "notifications.slack.attempts", 1, 10)).unwrap_or(Some(3));
    let timeout = sf.get("timeout").map(|n| d.positive_duration(n, "notifications.slack.timeout")).unwrap_or(Some(Duration::from_secs(5)));
    Some(SlackConfig { webhook_url: webhook_url?, channel: channel?, attempts: attempts? as u32, timeout: timeout? })
}

fn pagerduty(pn: &Node, d: &mut Decoder<'_>) -> Option<PagerDutyConfig> {
    let pf = d.map(pn, "notifications.pagerduty", &["routing_key", "url", "attempts", "timeout"])?;
    let routing_key = d.required(&pf, "routing_key").and_then(|n| d.secret(n, "notifications.pagerduty.routing_key"));
    let url = match pf.get("url") {
        Some(n) => d.http_url(n, "notifications.pagerduty.url"),
        None => Some(url::Url::parse("https://events.pagerduty.com/v2/enqueue").expect("the default URL parses")),
    };
    let attempts = pf.get("attempts").map(|n| d.uint(n, "notifications.pagerduty.attempts", 1, 10)).unwrap_or(Some(3));
    let timeout =
        pf.get("timeout").map(|n| d.positive_duration(n, "notifications.pagerduty.timeout")).unwrap_or(Some(Duration::from_secs(5)));
    Some(PagerDutyConfig { routing_key: routing_key?, url: url?, attempts: attempts? as u32, timeout: timeout? })
}

fn default_watch() -> WatchPolicy {
    WatchPolicy {
        enabled: true,
        interval: Duration::from_secs(5),
        ping_fail_for: Duration::from_secs(30),
        latency_threshold: Duration::from_millis(1000),
        latency_for: Duration::from_secs(120),
        queue_depth: 1000,
        failed_jobs: 50,
        failed_window: Duration::from_secs(300),
    }
}

fn watch_policy(node: &Node, d: &mut Decoder<'_>) -> Option<WatchPolicy> {
    let keys = ["enabled", "interval", "ping_fail_for", "latency_threshold", "latency_for", "queue_depth", "failed_jobs", "failed_window"];
    let f = d.map(node, "watch", &keys)?;
    let mut w = default_watch();
    let mut ok = true;
    if let Some(n) = f.get("enabled") {
        match d.boolean(n, "watch.enabled") {
            Some(v) => w.enabled = v,
            None => ok = false,
        }
    }
    {
        let mut dur = |key: &str, slot: &mut Duration| {
            if let Some(n) = f.get(key) {
                match d.positive_duration(n, &format!("watch.{key}")) {
                    Some(v) => *slot = v,
                    None => ok = false,
                }
            }
        };
        dur("interval", &mut w.interval);
        dur("ping_fail_for", &mut w.ping_fail_for);
        dur("latency_threshold", &mut w.latency_threshold);
        dur("latency_for", &mut w.latency_for);
        dur("failed_window", &mut w.failed_window);
    }
    for (key, slot) in [("queue_depth", &mut w.queue_depth), ("failed_jobs", &mut w.failed_jobs)] {
        if let Some(n) = f.get(key) {
            match d.uint(n, &format!("watch.{key}"), 1, u32::MAX as u64) {
                Some(v) => *slot = v,
                None => ok = false,
            }
        }
    }
    ok.then_some(w)
}

fn routing(node: &Node, d: &mut Decoder<'_>) -> Option<Routing> {
    let f = d.map(node, "routing", &["labels"])?;
    let mut labels = BTreeMap::new();
    if let Some(n) = f.get("labels") {
        match &n.kind {
            Kind::Map(entries) if !entries.is_empty() => {
                for (key, _, value) in entries {
                    if let Some(v) = d.string(value, &format!("routing.labels.{key}")) {
                        labels.insert(key.clone(), v);
                    }
                }
            }
            _ => {
                d.problem(n.pos, "`routing.labels` must be a mapping of label name to value, e.g. `service: visapi`");
                return None;
            }
        }
    }
    Some(Routing { labels })
}

fn topology_policy(node: &Node, d: &mut Decoder<'_>) -> Option<TopologyPolicy> {
    let f = d.map(node, "topology", &["rearm_after"])?;
    let rearm_after = match f.get("rearm_after") {
        Some(n) => d.positive_duration(n, "topology.rearm_after")?,
        None => Duration::from_secs(600),
    };
    Some(TopologyPolicy { rearm_after })
}
