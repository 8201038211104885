//! Dockerfile builds through the RUN seam, with a stand-in runner that
//! writes its changes into the upper directory as overlayfs would: two RUN
//! steps, COPY and ENV; all cache hits the second time; a changed copied
//! file invalidates from its step on.

use airlock_image::{
    build, BuildOptions, RunOutcome, RunStep, RunnerError, Silent, StepRunner, Store,
};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

struct Tmp(PathBuf);
impl Tmp {
    fn new() -> Tmp {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "airlock-build-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Understands `put NAME VALUE...` (writes the file NAME in the upper
/// directory, `$V` expanded from the step's env) and `fail`.
#[derive(Default)]
struct FakeRunner {
    calls: RefCell<Vec<RunStep>>,
}

impl StepRunner for FakeRunner {
    fn run(&self, step: &RunStep) -> Result<RunOutcome, RunnerError> {
        self.calls.borrow_mut().push(step.clone());
        let script = step.argv.last().cloned().unwrap_or_default();
        let mut w = script.split_whitespace();
        match w.next() {
            Some("put") => {
                let name = w.next().ok_or("put NAME")?;
                let mut val: Vec<String> = w.map(String::from).collect();
                for v in val.iter_mut() {
                    if let Some(k) = v.strip_prefix('$') {
                        *v = step
                            .env
                            .iter()
                            .find_map(|e| e.strip_prefix(&format!("{k}=")).map(String::from))
                            .unwrap_or_default();
                    }
                }
                // What the step sees of its base tree goes into the file too.
                let seen = std::fs::read_to_string(step.rootfs.join("f")).unwrap_or_default();
                std::fs::write(
                    step.upper.join(name),
                    format!("{} (f={seen})", val.join(" ")),
                )?;
                Ok(RunOutcome { exit_code: 0 })
            }
            Some("fail") => Ok(RunOutcome { exit_code: 3 }),
            _ => Err(format!("unknown script {script:?}").into()),
        }
    }
}

fn setup(dir: &Path, f: &str, v: &str) {
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM scratch\nENV V={v}\nCOPY f /f\nRUN put a $V\nRUN [\"/bin/sh\", \"-c\", \"put b two\"]\nWORKDIR /w\n"),
    )
    .unwrap();
    std::fs::write(dir.join("f"), f).unwrap();
}

#[test]
fn run_steps_through_the_seam_are_cached_and_invalidated() {
    let t = Tmp::new();
    let store = Store::open(&t.0.join("state")).unwrap();
    let ctx = t.0.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    setup(&ctx, "one", "1");
    let opts = BuildOptions::new("img", &ctx.join("Dockerfile"), &ctx);
    let r = FakeRunner::default();

    let rep = build(&store, &opts, Some(&r), None, &Silent).unwrap();
    {
        let calls = r.calls.borrow();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].argv, vec!["/bin/sh", "-c", "put a $V"]);
        assert_eq!(calls[1].argv, vec!["/bin/sh", "-c", "put b two"]);
        assert_eq!(calls[0].env, vec!["V=1"]);
        assert_eq!(calls[0].workdir, "/");
        assert_eq!(calls[0].line, 4);
        assert!(
            calls[0].upper.starts_with(store.root()),
            "upper on the store's filesystem"
        );
        assert_eq!(calls[0].upper.parent(), calls[0].work.parent());
    }
    assert_eq!(rep.steps.iter().filter(|s| s.layer).count(), 4);
    assert!(rep.steps.iter().all(|s| !s.cached));
    let root = store.rootfs_path(&rep.image);
    assert_eq!(
        std::fs::read_to_string(root.join("a")).unwrap(),
        "1 (f=one)"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("b")).unwrap(),
        "two (f=one)"
    );
    assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "one");
    assert!(root.join("w").is_dir());

    // Second build: every layer step from the cache, no run.
    r.calls.borrow_mut().clear();
    let rep2 = build(&store, &opts, Some(&r), None, &Silent).unwrap();
    assert_eq!(r.calls.borrow().len(), 0);
    assert!(rep2.steps.iter().filter(|s| s.layer).all(|s| s.cached));
    assert_eq!(rep2.image.chain_id, rep.image.chain_id);

    // The copied file changes: COPY and both RUNs again.
    setup(&ctx, "two", "1");
    r.calls.borrow_mut().clear();
    let rep3 = build(&store, &opts, Some(&r), None, &Silent).unwrap();
    assert_eq!(r.calls.borrow().len(), 2);
    let cached: Vec<(usize, bool)> = rep3
        .steps
        .iter()
        .filter(|s| s.layer)
        .map(|s| (s.line, s.cached))
        .collect();
    assert_eq!(cached, vec![(3, false), (4, false), (5, false), (6, false)]);
    let root3 = store.rootfs_path(&rep3.image);
    assert_eq!(
        std::fs::read_to_string(root3.join("a")).unwrap(),
        "1 (f=two)"
    );

    // An ENV change re-keys everything after it.
    setup(&ctx, "two", "2");
    r.calls.borrow_mut().clear();
    let rep4 = build(&store, &opts, Some(&r), None, &Silent).unwrap();
    assert_eq!(r.calls.borrow().len(), 2);
    assert_eq!(
        std::fs::read_to_string(store.rootfs_path(&rep4.image).join("a")).unwrap(),
        "2 (f=two)"
    );

    // A failing step is an error naming its line; nothing is recorded.
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nRUN fail\n").unwrap();
    let o = BuildOptions::new("bad", &ctx.join("Dockerfile"), &ctx);
    let e = build(&store, &o, Some(&r), None, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":2: RUN: \"RUN fail\" exited with code 3"),
        "{e}"
    );
    assert!(store.get("bad").is_err());
    // Without a runner, RUN says so.
    let e = build(&store, &o, None, None, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("RUN steps need the sandbox runner: not wired yet"),
        "{e}"
    );
}
