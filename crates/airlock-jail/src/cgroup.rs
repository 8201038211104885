//! cgroups: memory, pids and cpu limits through v2 or v1, per controller.
//!
//! Each controller goes where this host offers it: the unified (v2)
//! hierarchy when it has the controller, else the v1 hierarchy for it. Run by
//! root, sandboxes live under `airlock/` in each hierarchy. Rootless, a
//! sandbox uses a delegated v2 subtree if one is writable; otherwise the
//! caller falls back to rlimits and says so.

use crate::JailError;
use std::io;
use std::path::{Path, PathBuf};

pub const PARENT: &str = "airlock";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// Where each controller can be used on this host, for this caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The unified hierarchy's mount point.
    pub v2: Option<PathBuf>,
    /// Controllers the v2 hierarchy offers where we would create our groups.
    pub v2_controllers: Vec<String>,
    /// The parent directory our v2 groups go in.
    pub v2_parent: Option<PathBuf>,
    /// v1 controller → parent directory for our groups.
    pub v1: Vec<(Controller, PathBuf)>,
    /// The v1 freezer's parent directory for our groups (pause and resume
    /// where there is no v2 group).
    pub v1_freezer: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    V2,
    V1,
    Nowhere,
}

impl Layout {
    /// Reads mountinfo and our own cgroup membership.
    pub fn detect() -> Layout {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        Layout::from_texts(
            &mountinfo,
            &own,
            root,
            |p| std::fs::read_to_string(p).ok(),
            writable,
        )
    }

    /// Pure part of [`detect`], with the file system behind two closures.
    pub fn from_texts(
        mountinfo: &str,
        own_cgroup: &str,
        root: bool,
        read: impl Fn(&Path) -> Option<String>,
        can_write: impl Fn(&Path) -> bool,
    ) -> Layout {
        let mut l = Layout::default();
        for line in mountinfo.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let Some(dash) = f.iter().position(|x| *x == "-") else {
                continue;
            };
            let (Some(mnt), Some(fstype), Some(opts)) =
                (f.get(4), f.get(dash + 1), f.get(dash + 3))
            else {
                continue;
            };
            if *fstype == "cgroup2" && l.v2.is_none() {
                l.v2 = Some(PathBuf::from(mnt));
            } else if *fstype == "cgroup" {
                if opts.split(',').any(|o| o == "freezer") && l.v1_freezer.is_none() {
                    l.v1_freezer = Some(Path::new(mnt).join(PARENT));
                }
                for c in [Controller::Memory, Controller::Pids, Controller::Cpu] {
                    if opts.split(',').any(|o| o == c.name()) && !l.v1.iter().any(|(x, _)| *x == c)
                    {
                        l.v1.push((c, Path::new(mnt).join(PARENT)));
                    }
                }
            }
        }
        if let Some(v2) = &l.v2 {
            if root {
                l.v2_parent = Some(v2.join(PARENT));
                l.v2_controllers = read(&v2.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect();
            } else {
                // Rootless: the parent of our own group, if delegated to us.
                let own = own_cgroup
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .map(|p| p.trim_start_matches('/'));
                if let Some(own) = own {
                    let mine = v2.join(own);
                    if let Some(parent) = mine.parent() {
                        if can_write(parent) && can_write(&parent.join("cgroup.procs")) {
                            l.v2_parent = Some(parent.to_path_buf());
                            l.v2_controllers = read(&parent.join("cgroup.subtree_control"))
                                .unwrap_or_default()
                                .split_whitespace()
                                .map(String::from)
                                .collect();
                        }
                    }
                }
            }
        }
        if !root {
            l.v1.retain(|(_, p)| p.parent().is_some_and(&can_write));
            l.v1_freezer = l.v1_freezer.filter(|p| p.parent().is_some_and(&can_write));
        }
        l
    }

    pub fn place(&self, c: Controller) -> Where {
        if self.v2_parent.is_some() && self.v2_controllers.iter().any(|x| x == c.name()) {
            Where::V2
        } else if self.v1.iter().any(|(x, _)| *x == c) {
            Where::V1
        } else {
            Where::Nowhere
        }
    }
}

fn writable(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Limits to enforce through cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    pub cpus: Option<f64>,
    /// Groups even without limits, in every hierarchy that has them, for
    /// usage figures and pause/resume (the service's sandboxes).
    pub always: bool,
}

/// What a sandbox uses now, where a group measures it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// CPU time used so far, in microseconds.
    pub cpu_usec: Option<u64>,
    /// Memory charged now, in bytes.
    pub memory_bytes: Option<u64>,
    /// Tasks now.
    pub pids: Option<u64>,
}

/// The settings to write, per controller: pure, so it can be tested.
pub fn settings(c: Controller, w: Where, l: &Limits) -> Vec<(&'static str, String)> {
    const PERIOD: u64 = 100_000;
    match (c, w) {
        (Controller::Memory, Where::V2) => l
            .memory
            .map(|m| {
                vec![
                    ("memory.max", m.to_string()),
                    ("memory.swap.max", "0".into()),
                ]
            })
            .unwrap_or_default(),
        (Controller::Memory, Where::V1) => l
            .memory
            .map(|m| {
                vec![
                    ("memory.limit_in_bytes", m.to_string()),
                    ("memory.memsw.limit_in_bytes", m.to_string()),
                ]
            })
            .unwrap_or_default(),
        (Controller::Pids, Where::V2 | Where::V1) => l
            .pids
            .map(|p| vec![("pids.max", p.to_string())])
            .unwrap_or_default(),
        (Controller::Cpu, Where::V2) => l
            .cpus
            .map(|c| {
                vec![(
                    "cpu.max",
                    format!("{} {PERIOD}", ((c * PERIOD as f64) as u64).max(1000)),
                )]
            })
            .unwrap_or_default(),
        (Controller::Cpu, Where::V1) => l
            .cpus
            .map(|c| {
                vec![
                    ("cpu.cfs_period_us", PERIOD.to_string()),
                    (
                        "cpu.cfs_quota_us",
                        ((c * PERIOD as f64) as u64).max(1000).to_string(),
                    ),
                ]
            })
            .unwrap_or_default(),
        (_, Where::Nowhere) => Vec::new(),
    }
}

/// One sandbox's groups.
#[derive(Debug)]
pub struct Cgroup {
    /// Directories created, to remove at the end (deepest last created).
    dirs: Vec<PathBuf>,
    memory: Option<(PathBuf, Where)>,
    pids: Option<PathBuf>,
    /// The v2 group (freeze, cpu.stat).
    v2: Option<PathBuf>,
    /// The v1 freezer group, where there is no v2 group.
    freezer: Option<PathBuf>,
    /// The v1 cpu group (cpuacct.usage when comounted).
    cpu_v1: Option<PathBuf>,
}

/// The result of setting up limits: the group (if any) and the limits that
/// no cgroup could enforce.
pub struct Setup {
    pub cgroup: Option<Cgroup>,
    pub unenforced: Vec<Controller>,
}

impl Cgroup {
    /// Creates `name` in every hierarchy that a requested limit needs.
    pub fn create(layout: &Layout, name: &str, limits: &Limits) -> Result<Setup, JailError> {
        let mut wanted = Vec::new();
        if limits.memory.is_some() || limits.always {
            wanted.push(Controller::Memory);
        }
        if limits.pids.is_some() || limits.always {
            wanted.push(Controller::Pids);
        }
        if limits.cpus.is_some() || limits.always {
            wanted.push(Controller::Cpu);
        }
        let mut cg = Cgroup {
            dirs: Vec::new(),
            memory: None,
            pids: None,
            v2: None,
            freezer: None,
            cpu_v1: None,
        };
        let mut unenforced = Vec::new();
        let err = |path: &Path, e: io::Error| JailError::Cgroup {
            path: path.to_path_buf(),
            err: e,
        };
        let mut v2_dir: Option<PathBuf> = None;
        for c in wanted {
            let w = layout.place(c);
            let dir = match w {
                Where::Nowhere => {
                    unenforced.push(c);
                    continue;
                }
                Where::V2 => match &v2_dir {
                    Some(d) => d.clone(),
                    None => {
                        let parent = layout.v2_parent.clone().ok_or_else(|| {
                            err(
                                Path::new("cgroup2"),
                                io::Error::from_raw_os_error(libc::ENOENT),
                            )
                        })?;
                        ensure_parent(&parent, true, &layout.v2_controllers)
                            .map_err(|e| err(&parent, e))?;
                        let d = parent.join(name);
                        std::fs::create_dir(&d).map_err(|e| err(&d, e))?;
                        cg.dirs.push(d.clone());
                        v2_dir = Some(d.clone());
                        d
                    }
                },
                Where::V1 => {
                    let parent = layout
                        .v1
                        .iter()
                        .find(|(x, _)| *x == c)
                        .map(|(_, p)| p.clone())
                        .ok_or_else(|| {
                            err(
                                Path::new(c.name()),
                                io::Error::from_raw_os_error(libc::ENOENT),
                            )
                        })?;
                    ensure_parent(&parent, false, &[]).map_err(|e| err(&parent, e))?;
                    let d = parent.join(name);
                    std::fs::create_dir(&d).map_err(|e| err(&d, e))?;
                    cg.dirs.push(d.clone());
                    d
                }
            };
            if c == Controller::Pids {
                cg.pids = Some(dir.clone());
            }
            if c == Controller::Cpu && w == Where::V1 {
                cg.cpu_v1 = Some(dir.clone());
            }
            for (file, value) in settings(c, w, limits) {
                let p = dir.join(file);
                match crate::sys::write_file(&p, value.as_bytes()) {
                    Ok(()) => {}
                    // Swap accounting is optional.
                    Err(e) if file.contains("swap") || file.contains("memsw") => {
                        if e.kind() != io::ErrorKind::NotFound {
                            return Err(err(&p, e));
                        }
                    }
                    Err(e) => return Err(err(&p, e)),
                }
            }
            if c == Controller::Memory {
                cg.memory = Some((dir, w));
            }
        }
        if limits.always {
            // Usage is not enforcement: a missing controller is no note.
            unenforced.clear();
            // A v2 group for freezing and CPU time even without controllers
            // there; else the v1 freezer.
            if v2_dir.is_none() {
                if let Some(parent) = layout.v2_parent.clone() {
                    if ensure_parent(&parent, true, &layout.v2_controllers).is_ok() {
                        let d = parent.join(name);
                        if std::fs::create_dir(&d).is_ok() {
                            cg.dirs.push(d.clone());
                            v2_dir = Some(d);
                        }
                    }
                }
            }
            if v2_dir.is_none() {
                if let Some(parent) = layout.v1_freezer.clone() {
                    if ensure_parent(&parent, false, &[]).is_ok() {
                        let d = parent.join(name);
                        if std::fs::create_dir(&d).is_ok() {
                            cg.dirs.push(d.clone());
                            cg.freezer = Some(d);
                        }
                    }
                }
            }
        }
        cg.v2 = v2_dir;
        let cgroup = (!cg.dirs.is_empty()).then_some(cg);
        Ok(Setup { cgroup, unenforced })
    }

    /// Moves `pid` into every group.
    pub fn add(&self, pid: libc::pid_t) -> Result<(), JailError> {
        let s = pid.to_string();
        for d in &self.dirs {
            let p = d.join("cgroup.procs");
            crate::sys::write_file(&p, s.as_bytes())
                .map_err(|e| JailError::Cgroup { path: p, err: e })?;
        }
        Ok(())
    }

    /// Peak memory use of the whole sandbox, in bytes.
    pub fn peak_memory(&self) -> Option<u64> {
        let (dir, w) = self.memory.as_ref()?;
        let file = if *w == Where::V2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the kernel's OOM killer killed something in the sandbox.
    pub fn oom_killed(&self) -> bool {
        let Some((dir, w)) = self.memory.as_ref() else {
            return false;
        };
        let file = if *w == Where::V2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines().any(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    }

    /// Freezes (`true`) or thaws every process of the sandbox, and waits
    /// (at most 2 s) until the kernel says it is done.
    pub fn freeze(&self, on: bool) -> io::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        if let Some(d) = &self.v2 {
            crate::sys::write_file(&d.join("cgroup.freeze"), if on { b"1" } else { b"0" })?;
            let want = if on { "frozen 1" } else { "frozen 0" };
            loop {
                let ev = std::fs::read_to_string(d.join("cgroup.events")).unwrap_or_default();
                if ev.lines().any(|l| l.trim() == want) {
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        if let Some(d) = &self.freezer {
            let (set, want) = if on {
                ("FROZEN", "FROZEN")
            } else {
                ("THAWED", "THAWED")
            };
            crate::sys::write_file(&d.join("freezer.state"), set.as_bytes())?;
            loop {
                let st = std::fs::read_to_string(d.join("freezer.state")).unwrap_or_default();
                if st.trim() == want {
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// What the sandbox uses now.
    pub fn usage(&self) -> Usage {
        let num =
            |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
        let cpu_usec = self
            .v2
            .as_ref()
            .and_then(|d| {
                std::fs::read_to_string(d.join("cpu.stat"))
                    .ok()?
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .or_else(|| {
                self.cpu_v1
                    .as_ref()
                    .and_then(|d| num(d.join("cpuacct.usage")).map(|ns| ns / 1000))
            });
        let memory_bytes = self.memory.as_ref().and_then(|(d, w)| {
            num(d.join(if *w == Where::V2 {
                "memory.current"
            } else {
                "memory.usage_in_bytes"
            }))
        });
        let pids = self.pids.as_ref().and_then(|d| num(d.join("pids.current")));
        Usage {
            cpu_usec,
            memory_bytes,
            pids,
        }
    }

    /// Changes the limits of a running sandbox's groups (`airlock oci
    /// update`): each limit that is `Some` is written where its group is;
    /// one whose controller this sandbox has no group for is an error.
    pub fn update(&self, l: &Limits) -> Result<(), JailError> {
        let err = |path: &Path, e: io::Error| JailError::Cgroup {
            path: path.to_path_buf(),
            err: e,
        };
        let missing = |c: Controller| {
            err(
                Path::new(c.name()),
                io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            )
        };
        let write_all = |dir: &Path, set: Vec<(&'static str, String)>| -> Result<(), JailError> {
            // v1's memsw limit must stay at or above the memory limit: the
            // order that works depends on the direction, so try both.
            let once = |set: &[(&'static str, String)]| -> Result<(), JailError> {
                for (file, value) in set {
                    let p = dir.join(file);
                    match crate::sys::write_file(&p, value.as_bytes()) {
                        Ok(()) => {}
                        Err(e)
                            if (file.contains("swap") || file.contains("memsw"))
                                && e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(err(&p, e)),
                    }
                }
                Ok(())
            };
            once(&set).or_else(|_| {
                let mut rev = set.clone();
                rev.reverse();
                once(&rev)
            })
        };
        if l.memory.is_some() {
            let (dir, w) = self
                .memory
                .as_ref()
                .ok_or_else(|| missing(Controller::Memory))?;
            write_all(dir, settings(Controller::Memory, *w, l))?;
        }
        if l.pids.is_some() {
            let dir = self
                .pids
                .as_ref()
                .ok_or_else(|| missing(Controller::Pids))?;
            let w = if self.v2.as_deref() == Some(dir.as_path()) {
                Where::V2
            } else {
                Where::V1
            };
            write_all(dir, settings(Controller::Pids, w, l))?;
        }
        if l.cpus.is_some() {
            match (&self.cpu_v1, &self.v2) {
                (Some(d), _) => write_all(d, settings(Controller::Cpu, Where::V1, l))?,
                (None, Some(d)) => write_all(d, settings(Controller::Cpu, Where::V2, l))?,
                (None, None) => return Err(missing(Controller::Cpu)),
            }
        }
        Ok(())
    }

    /// Every process in the sandbox's groups (host pids, deduplicated).
    pub fn procs(&self) -> Vec<i32> {
        let mut out: Vec<i32> = Vec::new();
        for d in &self.dirs {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills every process in the groups (they stay, for [`destroy`]).
    pub fn kill_all(&self) {
        for d in &self.dirs {
            kill_in(d);
        }
    }

    /// Removes the groups; any process left is killed first.
    pub fn destroy(self) {
        for d in self.dirs.iter().rev() {
            remove_group(d);
        }
    }
}

fn ensure_parent(parent: &Path, v2: bool, controllers: &[String]) -> io::Result<()> {
    match std::fs::create_dir(parent) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if v2 {
        // Let our groups use the controllers: enable them on the way down.
        let want: Vec<String> = ["memory", "pids", "cpu"]
            .iter()
            .filter(|c| controllers.iter().any(|x| x == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if let Some(top) = parent.parent() {
            for w in &want {
                let _ = crate::sys::write_file(&top.join("cgroup.subtree_control"), w.as_bytes());
            }
        }
        for w in &want {
            crate::sys::write_file(&parent.join("cgroup.subtree_control"), w.as_bytes())?;
        }
    }
    Ok(())
}

/// Kills every process in the group `d` (`cgroup.kill`, or one by one).
fn kill_in(d: &Path) {
    if crate::sys::write_file(&d.join("cgroup.kill"), b"1").is_err() {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .lines()
            .filter_map(|p| p.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill with a pid read from the group we own.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Kills whatever is left in a group and removes it.
fn remove_group(d: &Path) {
    for attempt in 0..50 {
        match std::fs::remove_dir(d) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => {
                kill_in(d);
                std::thread::sleep(std::time::Duration::from_millis(if attempt < 10 {
                    2
                } else {
                    20
                }));
            }
        }
    }
}

/// Group names are `airlock-<pid of the airlock process>-<unique hex>`.
pub fn group_name(unique: u64) -> String {
    format!("airlock-{}-{unique:016x}", std::process::id())
}

/// The airlock pid a group name carries, if it is one of our names.
fn group_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("airlock-")?;
    let (pid, unique) = rest.split_once('-')?;
    (unique.len() == 16 && unique.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| pid.parse().ok())
        .flatten()
}

/// Removes groups left by airlock processes that no longer exist (killed
/// with SIGKILL, say). Only *empty* groups go: a group's processes died with
/// its airlock (the parent-death signal), and a group that still has some
/// may belong to an airlock this process cannot see (another PID
/// namespace) — so nothing is ever killed here. Returns how many went.
pub fn reap_stale(layout: &Layout) -> usize {
    let mut parents: Vec<PathBuf> = layout.v1.iter().map(|(_, p)| p.clone()).collect();
    if let Some(p) = &layout.v2_parent {
        parents.push(p.clone());
    }
    let mut n = 0;
    for parent in parents {
        let Ok(rd) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = group_owner(&name) else {
                continue;
            };
            if e.path().is_dir()
                && !Path::new(&format!("/proc/{pid}")).exists()
                && std::fs::remove_dir(e.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
35 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
38 30 0:34 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
    const MOUNTINFO_V2: &str = "31 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn hybrid_host_uses_v1_for_missing_v2_controllers() {
        let l = Layout::from_texts(
            MOUNTINFO_HYBRID,
            "0::/\n",
            true,
            |_| Some("hugetlb\n".into()),
            |_| true,
        );
        assert_eq!(l.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(l.place(Controller::Memory), Where::V1);
        assert_eq!(l.place(Controller::Pids), Where::V1);
        assert_eq!(l.place(Controller::Cpu), Where::V1);
        assert!(l.v1.contains(&(
            Controller::Memory,
            PathBuf::from("/sys/fs/cgroup/memory/airlock")
        )));
    }

    #[test]
    fn v2_only_host_uses_v2() {
        let l = Layout::from_texts(
            MOUNTINFO_V2,
            "0::/\n",
            true,
            |_| Some("cpu memory pids io\n".into()),
            |_| true,
        );
        assert_eq!(l.place(Controller::Memory), Where::V2);
        assert_eq!(l.v2_parent, Some(PathBuf::from("/sys/fs/cgroup/airlock")));
    }

    #[test]
    fn rootless_uses_a_delegated_subtree_or_nothing() {
        let own = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n";
        let l = Layout::from_texts(
            MOUNTINFO_V2,
            own,
            false,
            |_| Some("memory pids\n".into()),
            |_| true,
        );
        assert_eq!(
            l.v2_parent,
            Some(PathBuf::from(
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice"
            ))
        );
        assert_eq!(l.place(Controller::Memory), Where::V2);
        assert_eq!(l.place(Controller::Cpu), Where::Nowhere);
        let l = Layout::from_texts(
            MOUNTINFO_HYBRID,
            own,
            false,
            |_| Some("memory\n".into()),
            |_| false,
        );
        assert_eq!(l.place(Controller::Memory), Where::Nowhere);
        assert_eq!(l.place(Controller::Pids), Where::Nowhere);
    }

    #[test]
    fn only_our_group_names_are_considered() {
        let n = group_name(0xabc);
        assert!(n.starts_with("airlock-"), "{n}");
        assert_eq!(group_owner(&n), Some(std::process::id()));
        assert_eq!(group_owner("airlock-42-00000000000000ff"), Some(42));
        for other in [
            "42-ff",
            "airlock-42-ff",
            "airlock-x-00000000000000ff",
            "user-42-00000000000000ff",
            "1234",
        ] {
            assert_eq!(group_owner(other), None, "{other}");
        }
    }

    #[test]
    fn settings_per_version() {
        let l = Limits {
            memory: Some(1 << 30),
            pids: Some(64),
            cpus: Some(1.5),
            always: false,
        };
        assert_eq!(
            settings(Controller::Memory, Where::V2, &l),
            vec![
                ("memory.max", "1073741824".into()),
                ("memory.swap.max", "0".into())
            ]
        );
        assert_eq!(
            settings(Controller::Pids, Where::V1, &l),
            vec![("pids.max", "64".into())]
        );
        assert_eq!(
            settings(Controller::Cpu, Where::V2, &l),
            vec![("cpu.max", "150000 100000".into())]
        );
        assert_eq!(
            settings(Controller::Cpu, Where::V1, &l),
            vec![
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", "150000".into())
            ]
        );
        assert!(settings(Controller::Cpu, Where::Nowhere, &l).is_empty());
        assert!(settings(Controller::Memory, Where::V1, &Limits::default()).is_empty());
    }
}
