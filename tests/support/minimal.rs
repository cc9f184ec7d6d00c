//! The smallest valid playbook and the environment it reads, for tests that validate
//! playbook text (each edits it to show one problem or one section).

pub const VALID: &str = r#"name: t
redis:
  primary: "${P}"
  backup: "${B}"
service:
  base_url: http://127.0.0.1:3000
  api_key: "${KEY}"
platform:
  kind: render
  base_url: http://127.0.0.1:3001
  api_key: "${TOKEN}"
  service_id: srv-1
approvals:
  approvers: [alice]
"#;

/// The variables [`VALID`] (and the tests' edits of it) name.
pub fn env(name: &str) -> Option<String> {
    match name {
        "P" => Some("redis://127.0.0.1:7001".into()),
        "B" => Some("redis://127.0.0.1:7002".into()),
        "KEY" => Some("service-key".into()),
        "TOKEN" => Some("platform-token".into()),
        "SAME" => Some("redis://localhost:7001".into()),
        "FREEZE_TOKEN" => Some("frz-secret-77".into()),
        _ => None,
    }
}
