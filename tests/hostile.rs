//! Hostile input, property-tested: the webhook parsers, the playbook loader and the
//! duration parser never panic, and their errors are clear and placed.

use orchestrator::duration::parse_duration;
use orchestrator::playbook::{load_bytes, PlaybookError};
use orchestrator::server::alerts::{parse_generic, parse_group};
use proptest::prelude::*;
use std::path::Path;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
        prop_oneof![Just("firing"), Just("resolved"), Just("alerts"), Just("labels")].prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("status".to_string()),
                    Just("alerts".to_string()),
                    Just("labels".to_string()),
                    Just("annotations".to_string()),
                    Just("fingerprint".to_string()),
                    Just("summary".to_string()),
                    ".{0,8}".prop_map(String::from)
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn sandbox_yaml() -> String {
    std::fs::read_to_string("playbooks/sandbox.yaml").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn webhook_parsers_never_panic_on_bytes(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_group(&body);
        let _ = parse_generic(&body);
    }

    #[test]
    fn webhook_parsers_never_panic_on_json(v in json_value()) {
        let body = serde_json::to_vec(&v).unwrap();
        if let Ok(alerts) = parse_group(&body) {
            prop_assert!(!alerts.is_empty());
            for a in alerts {
                prop_assert!(a.fingerprint.len() <= 210 && a.summary.len() <= 510);
            }
        }
        let _ = parse_generic(&body);
    }

    #[test]
    fn durations_never_panic(s in ".{0,30}") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn valid_durations_round_trip(n in 0u64..100_000, unit in prop_oneof![Just("ms"), Just("s"), Just("m"), Just("h")]) {
        let d = parse_duration(&format!("{n}{unit}")).unwrap();
        let ms = match unit { "ms" => n, "s" => n * 1000, "m" => n * 60_000, _ => n * 3_600_000 };
        prop_assert_eq!(d.as_millis() as u64, ms);
    }

    #[test]
    fn playbook_loader_never_panics_on_text(s in "\\PC{0,400}") {
        let none = |_: &str| None;
        let _ = load_bytes(s.as_bytes(), Path::new("fuzz.yaml"), &none);
    }

    /// Mutations of the shipped playbook (a byte deleted, replaced or inserted) load or
    /// fail with problems placed inside the file.
    #[test]
    fn mutated_playbooks_fail_with_positions_inside_the_file(pos in 0usize..4000, op in 0u8..3, c in prop_oneof![Just(b':'), Just(b' '), Just(b'\n'), Just(b'-'), Just(b'"'), Just(b'{'), Just(b'x'), Just(b'1'), Just(b'$')]) {
        let mut bytes = sandbox_yaml().into_bytes();
        let at = pos % bytes.len();
        match op {
            0 => { bytes.remove(at); }
            1 => bytes[at] = c,
            _ => bytes.insert(at, c),
        }
        let lines = bytes.split(|b| *b == b'\n').count();
        let none = |_: &str| None;
        match load_bytes(&bytes, Path::new("m.yaml"), &none) {
            Ok(_) => {}
            Err(PlaybookError::Invalid { problems, .. }) => {
                prop_assert!(!problems.is_empty());
                for p in problems {
                    prop_assert!(p.pos.line >= 1 && p.pos.line <= lines + 1, "line {} of {lines}: {}", p.pos.line, p.message);
                    prop_assert!(!p.message.is_empty());
                }
            }
            Err(e) => prop_assert!(false, "unexpected error kind: {e}"),
        }
    }
}
