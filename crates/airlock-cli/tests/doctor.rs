//! `airlock doctor` and `airlock doctor --json`: the same checks, as text
//! and as data, agreeing with each other and with the machine.

mod common;
use common::*;

fn doctor(who: Who, json: bool) -> Option<Out> {
    let mut a = vec!["doctor"];
    if json {
        a.push("--json");
    }
    run(who, &a)
}

#[test]
fn json_parses_and_agrees_with_the_text() {
    both(|who| {
        let Some(text) = doctor(who, false) else {
            return;
        };
        let json = doctor(who, true).unwrap();
        assert_eq!(text.code, json.code, "{who:?}: same exit code");
        let v: serde_json::Value = serde_json::from_str(&json.stdout)
            .unwrap_or_else(|e| panic!("{who:?}: doctor --json is not JSON ({e}): {json:?}"));
        let checks = v["checks"].as_array().expect("checks");
        let text_checks: Vec<&str> = text
            .stdout
            .lines()
            .filter(|l| l.starts_with("ok  ") || l.starts_with("FAIL"))
            .collect();
        assert_eq!(
            checks.len(),
            text_checks.len(),
            "{who:?}: {text:?} {json:?}"
        );
        assert!(checks.len() >= 8, "{who:?}: {json:?}");
        for (c, line) in checks.iter().zip(&text_checks) {
            let name = c["check"].as_str().unwrap();
            let ok = c["ok"].as_bool().unwrap();
            let detail = c["detail"].as_str().unwrap();
            assert_eq!(line.starts_with("ok  "), ok, "{who:?} {name}: {line}");
            assert!(line[5..].starts_with(name), "{who:?} {name}: {line}");
            assert!(line.contains(detail), "{who:?} {name}: {line}");
            match c["fix"].as_str() {
                Some(fix) if !ok => assert!(line.ends_with(&format!("fix: {fix}")), "{line}"),
                Some(_) => {}
                None => assert!(!line.contains("fix:"), "{line}"),
            }
        }
        let tiers = v["tiers"].as_array().expect("tiers");
        for t in tiers {
            let tier = t["tier"].as_str().unwrap();
            let ready = t["ready"].as_bool().unwrap();
            let want = format!("{tier} tier: {}", if ready { "ready" } else { "NOT ready" });
            assert!(
                text.stdout.lines().any(|l| l.starts_with(&want)),
                "{who:?}: {want:?} not in {text:?}"
            );
            // A tier is ready exactly when every check it needs passed.
            let needs_ok = t["needs"].as_array().unwrap().iter().all(|n| {
                checks
                    .iter()
                    .find(|c| c["check"] == *n)
                    .unwrap_or_else(|| panic!("{tier} needs unknown check {n}"))["ok"]
                    .as_bool()
                    .unwrap()
            });
            if tier != "microvm" || who == Who::Root {
                assert_eq!(ready, needs_ok, "{who:?} {tier}: {json:?}");
            } else {
                // Rootless, the microVM tier is refused.
                assert!(!ready, "{who:?} {tier}: {json:?}");
            }
        }
        // The machine: this one runs the container tier (the whole suite
        // depends on it) and has Landlock; the kernel release is its own.
        let container = tiers.iter().find(|t| t["tier"] == "container").unwrap();
        assert_eq!(container["ready"], true, "{who:?}: {json:?}");
        assert_eq!(json.code, 0, "{who:?}");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(v["kernel"].as_str().unwrap(), release.trim());
        let ll = checks.iter().find(|c| c["check"] == "landlock").unwrap();
        // SAFETY: with a null attr and size 0 this only returns the ABI.
        let abi = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32,
            )
        };
        assert_eq!(ll["ok"].as_bool().unwrap(), abi >= 1, "{json:?}");
    });
}
