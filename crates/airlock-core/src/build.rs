//! The RUN steps of a Dockerfile build, each in a container sandbox: the
//! builder's [`StepRunner`] (`airlock_image::build`).
//!
//! A step runs in a sandbox whose root is the image built so far (one
//! overlay, as `airlock run --image` makes it), with the step's Env, ARGs,
//! WorkingDir and User, and with the network off — only the sandbox's own
//! loopback — unless the build names hosts (`--allow-host`): then the
//! step's sandbox has an allowlist, enforced by an egress proxy in this
//! process exactly as `airlock run --allow-host` does, and what the proxy
//! refused is said on the build's output. Its overlay's upper and work directories are the ones the
//! builder handed over (on the store's filesystem, id-mapped like the tree
//! when run by root, so that files keep the ids the step gave them): what
//! the step changed stays there for the builder to turn into the step's
//! layer. What airlock itself needs in the root is kept out of it:
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` are bound over the
//! image's own instead of written, and the `/proc` and `/dev` mount points
//! airlock had to make are removed from the changes afterwards.

use crate::image::{self, Given};
use crate::sandbox::{CreateOptions, Event, ProcessSpec, Sandbox};
use crate::{CoreError, OutStream, Stage, StreamKind};
use airlock_image::{Base, ImageDefaults, RunOutcome, RunStep, RunnerError, StepRunner};
use airlock_jail::mount::{CAPTURE_UPPER, CAPTURE_WORK};
use airlock_protocol::v2::ExitStatus;
use airlock_spec::{Image, SandboxSpec};
use std::time::{Duration, Instant};

/// How long one RUN step may take by default.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// Runs RUN steps in sandboxes.
pub struct SandboxRunner<'a> {
    /// Where the steps' stdout and stderr go, as they come.
    pub output: &'a dyn Fn(&[u8]),
    /// How long a step may run (then it is killed and the build fails).
    pub timeout: Duration,
}

impl<'a> SandboxRunner<'a> {
    pub fn new(output: &'a dyn Fn(&[u8])) -> SandboxRunner<'a> {
        SandboxRunner {
            output,
            timeout: STEP_TIMEOUT,
        }
    }
}

impl StepRunner for SandboxRunner<'_> {
    fn run(&self, step: &RunStep) -> Result<RunOutcome, RunnerError> {
        if step.base == Base::Host {
            return Err("RUN on an image built FROM host cannot run yet (its tree sits on the host image); build FROM an image or debian:<suite>".into());
        }
        let capture = match (step.upper.parent(), step.work.parent()) {
            (Some(a), Some(b))
                if a == b
                    && step.upper.file_name() == Some(CAPTURE_UPPER.as_ref())
                    && step.work.file_name() == Some(CAPTURE_WORK.as_ref()) =>
            {
                a.to_path_buf()
            }
            _ => {
                return Err(format!(
                    "the step's upper and work directories must be {CAPTURE_UPPER} and {CAPTURE_WORK} of one directory"
                )
                .into())
            }
        };
        // Mount points airlock makes where the tree has none: not the step's.
        let stubs: Vec<&str> = ["proc", "dev"]
            .into_iter()
            .filter(|n| std::fs::symlink_metadata(step.rootfs.join(n)).is_err())
            .collect();
        let mut spec = SandboxSpec::new(Vec::new());
        spec.image = Image::Store("build-step".into());
        spec.limits.timeout = self.timeout;
        let defaults = ImageDefaults {
            env: step.env.clone(),
            working_dir: Some(step.workdir.clone()),
            user: Some(step.user.clone()),
            entrypoint: None,
            cmd: Some(step.argv.clone()),
            ..ImageDefaults::default()
        };
        let prepared = image::prepare_tree(
            spec,
            &Given::default(),
            "being built",
            &step.rootfs,
            &defaults,
        )?;
        for n in &prepared.notes {
            (self.output)(format!("airlock: note: {n}\n").as_bytes());
        }
        let Some(mut root) = prepared.image else {
            return Err("no image root for the step".into());
        };
        root.capture = Some(capture);
        let mut spec = prepared.spec;
        if !step.allow_hosts.is_empty() {
            spec.network = airlock_spec::Network {
                mode: airlock_spec::NetMode::Allowlist,
                allow: step.allow_hosts.clone(),
                ..airlock_spec::Network::default()
            };
            spec.validate()?;
        }
        let code = run_one(&spec, root, self.output)?;
        for n in stubs {
            let p = step.upper.join(n);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                // Only if empty: a step that put something there keeps it.
                let _ = std::fs::remove_dir(&p);
            }
        }
        Ok(RunOutcome { exit_code: code })
    }
}

/// Runs `spec`'s command in a new sandbox whose root is `root`; its output
/// goes to `output`. The exit code (128+N for signal N, 126/127 when the
/// command cannot be run / is not found).
fn run_one(
    spec: &SandboxSpec,
    root: airlock_jail::ImageRoot,
    output: &dyn Fn(&[u8]),
) -> Result<i32, CoreError> {
    // What the egress proxy refused goes out with the step's output (the
    // step's own error is often only "connection refused" or a 403).
    let denied = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let egress_audit: Option<airlock_egress::Audit> =
        if spec.network.mode == airlock_spec::NetMode::None {
            None
        } else {
            let d = denied.clone();
            Some(std::sync::Arc::new(move |x: airlock_egress::Decision| {
                if !x.allowed {
                    d.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                        "airlock: egress denied ({}) {}:{}: {}\n",
                        x.via, x.host, x.port, x.reason
                    ));
                }
            }))
        };
    let flush_denied = || {
        for l in denied.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            output(l.as_bytes());
        }
    };
    let mut sb = Sandbox::create(
        spec,
        CreateOptions {
            one_shot: true,
            window: Some(1 << 20),
            image: Some(root),
            egress_audit,
            ..CreateOptions::default()
        },
    )?;
    for n in sb.take_notes() {
        output(format!("airlock: note: {n}\n").as_bytes());
    }
    let id = sb.start(&ProcessSpec::new(spec.command.clone()))?;
    let deadline = Instant::now() + spec.limits.timeout;
    let mut code = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            sb.kill();
            return Err(CoreError::ImageUse {
                image: "being built".into(),
                why: format!(
                    "the step ran longer than {} and was killed",
                    crate::human_duration(spec.limits.timeout)
                ),
            });
        }
        let ev = sb.wait(Some(left))?;
        flush_denied();
        match ev {
            Some(Event::Output { data, stream, .. }) => {
                output(&data);
                let kind = match stream {
                    OutStream::Stdout => StreamKind::Stdout,
                    OutStream::Stderr => StreamKind::Stderr,
                };
                sb.consumed(id, kind, data.len())?;
            }
            Some(Event::Exited { status, .. }) => {
                code = Some(match status {
                    ExitStatus::Code(c) => i32::from(c),
                    ExitStatus::Signal(s) => 128 + i32::from(s),
                });
            }
            Some(Event::StartFailed { stage, errno, .. }) => {
                if stage != Stage::Exec {
                    return Err(CoreError::Setup {
                        stage,
                        errno,
                        detail: std::io::Error::from_raw_os_error(errno).to_string(),
                    });
                }
                output(
                    format!(
                        "airlock: cannot run {:?} in the sandbox: {}\n",
                        spec.command.first().map(String::as_str).unwrap_or(""),
                        std::io::Error::from_raw_os_error(errno)
                    )
                    .as_bytes(),
                );
                code = Some(if errno == libc::ENOENT || errno == libc::ENOTDIR {
                    127
                } else {
                    126
                });
            }
            Some(Event::SetupFailed {
                stage,
                errno,
                detail,
            }) => {
                return Err(CoreError::Setup {
                    stage,
                    errno,
                    detail,
                })
            }
            Some(Event::AgentGone) | None => break,
            Some(_) => {}
        }
    }
    let proxy = sb.egress_proxy().cloned();
    sb.close();
    if let Some(p) = proxy {
        p.wait_idle(Duration::from_secs(2));
    }
    flush_denied();
    // An agent gone without a word was killed (from outside, or by the
    // OOM killer).
    Ok(code.unwrap_or(128 + libc::SIGKILL))
}
