//! Property test over URL masking (issue 10): for generated passwords of any
//! characters, nothing the orchestrator derives from a Redis URL for output (its
//! display, endpoint, parse errors, playbook problems, redacted free text, journal
//! rows) contains the password.

use orchestrator::playbook::{load_bytes, PlaybookError};
use orchestrator::secret::{mask_url, RedisUrl};
use proptest::prelude::*;
use std::path::Path;

/// A password: a distinctive prefix (so "contains the password" is not trivially true
/// of `default` or `127.0.0.1`), then any characters, URL delimiters and `@` favoured.
fn password() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        3 => any::<char>(),
        2 => prop::sample::select(vec!['/', '?', '#', '@', ':', '%', '+', ' ', '"', '\'', '\\', '&', '=', '[', ']', '{', '}']),
        2 => prop::char::range('a', 'z'),
    ];
    prop::collection::vec(ch, 4..24).prop_map(|cs| format!("Zq8{}", cs.into_iter().collect::<String>()))
}

fn leaks(out: &str, pw: &str) -> bool {
    out.contains(pw)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn no_output_derived_from_a_url_contains_its_password(pw in password(), user in prop_oneof![Just(""), Just("default"), Just("u")]) {
        let url = if user.is_empty() { format!("redis://:{pw}@127.0.0.1:6390/0") } else { format!("redis://{user}:{pw}@127.0.0.1:6390/0") };
        // The URL on its own, however it parses.
        match RedisUrl::parse(&url) {
            Ok(u) => {
                for out in [u.to_string(), format!("{u:?}"), u.masked().to_string(), u.endpoint(), u.host()] {
                    prop_assert!(!leaks(&out, &pw), "{out:?}");
                }
            }
            Err(e) => prop_assert!(!leaks(&e, &pw), "{e:?}"),
        }
        if !pw.chars().any(char::is_whitespace) {
            prop_assert!(!leaks(&mask_url(&url), &pw));
        }
        // Through a playbook that takes it from the environment: `playbook check`'s
        // problems, and the playbook's redactor over free text quoting it.
        let env_url = url.clone();
        let lookup = move |n: &str| (n == "SANDBOX_PRIMARY_URL").then(|| env_url.clone());
        let yaml = std::fs::read("playbooks/sandbox.yaml").unwrap();
        match load_bytes(&yaml, Path::new("p.yaml"), &lookup) {
            Ok(pb) => {
                let r = &pb.redactor;
                let texts = [
                    format!("connect {url} failed"),
                    format!("ERR AUTH {pw} invalid"),
                    format!("{{\"url\":\"{url}\"}}"),
                    format!("{}", pb.redis.primary),
                    format!("{}", orchestrator::playbook::Summary(&pb)),
                ];
                for t in texts {
                    let out = r.redact(&t);
                    prop_assert!(!leaks(&out, &pw), "{t:?} → {out:?}");
                }
                let mut v = serde_json::json!({ "observed": format!("platform holds {url}"), "list": [url.clone()] });
                r.redact_json(&mut v);
                prop_assert!(!leaks(&v.to_string(), &pw));
                let as_json = serde_json::json!({ "x": url.clone() }).to_string();
                let out = r.redact_json_text(&as_json);
                prop_assert!(!leaks(&out, &pw), "{out}");
            }
            Err(e @ PlaybookError::Invalid { .. }) => prop_assert!(!leaks(&e.to_string(), &pw), "{e}"),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }
}
