//! Images in sandboxes: which tree a sandbox's root is made of, and the
//! image's defaults applied the way docker applies them.
//!
//! [`prepare`] is what every client calls with a spec and what the user
//! gave explicitly ([`Given`]): the CLI's `airlock run` now, the daemon and
//! the API later. For the `host` image it only fills in the user, working
//! directory and command (nothing is read from disk, so `airlock run`'s
//! start-up does not change). For an image in the store it looks the image
//! up and fills in, unless the user gave them:
//!
//! - **Env** under the sandbox's base environment (PATH, HOME, ...) is
//!   overridden by the image's, and `--env` overrides both;
//! - **WorkingDir** (else `/`), unless `--workdir`;
//! - **User** (else root — which still has no capability), unless
//!   `--user`, resolved through the image's own `/etc/passwd` and
//!   `/etc/group` (its home directory becomes `HOME`);
//! - **Entrypoint** and **Cmd**: no command runs Entrypoint + Cmd, a
//!   command runs Entrypoint + the command, `--entrypoint` replaces the
//!   Entrypoint and drops Cmd (`--entrypoint ''` clears it).
//!
//! The image's files are read on the host without following any of its
//! symlinks out of its tree (`openat2(RESOLVE_IN_ROOT)`, regular files
//! only, size-capped): an image cannot make airlock read a host file.

use crate::CoreError;
use airlock_image::{Base, ImageDefaults, ImageRecord, Ownership, Store};
use airlock_jail::ImageRoot;
use airlock_spec::{Image, SandboxSpec, SpecError, User};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// What the user gave explicitly (so that the image's defaults fill only
/// the rest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given {
    /// `--user`: `sandbox`, `root`, `nobody`, `UID[:GID]`, or with an
    /// image `NAME[:GROUP]` from its `/etc/passwd` and `/etc/group`.
    pub user: Option<String>,
    /// `--workdir`.
    pub workdir: Option<PathBuf>,
    /// The command (empty: the image's Cmd).
    pub command: Vec<String>,
    /// `--entrypoint` (`Some("")` clears the image's).
    pub entrypoint: Option<String>,
}

/// A spec ready for [`crate::Sandbox::create`], with the image's root.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub spec: SandboxSpec,
    /// `None` for the host image; pass it in [`crate::CreateOptions`].
    pub image: Option<ImageRoot>,
    /// What the user should hear about (variables of the image's that
    /// were left out).
    pub notes: Vec<String>,
}

fn err(image: &str, why: impl Into<String>) -> CoreError {
    CoreError::ImageUse {
        image: image.to_string(),
        why: why.into(),
    }
}

/// Applies what the user gave and, for an image in the store, the image's
/// defaults (see the module docs) to `spec`; looks the image up in the
/// default store.
pub fn prepare(spec: SandboxSpec, given: &Given) -> Result<Prepared, CoreError> {
    match &spec.image {
        Image::Host => prepare_host(spec, given),
        Image::Store(name) => {
            let name = name.clone();
            // Checked before the store is read.
            airlock_spec::validate_image_name(&name).map_err(|why| SpecError::Image {
                name: name.clone(),
                why,
            })?;
            if spec.isolation.is_plain_child() {
                return Err(SpecError::Unsupported {
                    what: "--image",
                    isolation: spec.isolation.name(),
                    why: "the local tier runs on the host's own filesystem; use --isolation container",
                }
                .into());
            }
            let (store, rec) = lookup(&name)?;
            let tree = usable_tree(&store, &rec)?;
            prepare_tree(spec, given, &name, &tree, &rec.defaults)
        }
    }
}

/// The host image: `--user` (default `sandbox`), `--workdir`, and the
/// command after `--entrypoint`, if any.
fn prepare_host(mut spec: SandboxSpec, given: &Given) -> Result<Prepared, CoreError> {
    spec.user = match &given.user {
        Some(u) => airlock_spec::parse_user(u)?,
        None => User::SANDBOX,
    };
    spec.workdir = given.workdir.clone();
    spec.command = match &given.entrypoint {
        Some(e) if !e.is_empty() => std::iter::once(e.clone())
            .chain(given.command.iter().cloned())
            .collect(),
        _ => given.command.clone(),
    };
    if spec.command.is_empty() {
        return Err(airlock_spec::SpecError::NoCommand.into());
    }
    Ok(Prepared {
        spec,
        image: None,
        notes: Vec::new(),
    })
}

/// The image `name` in the default store (nothing is created if there is
/// no store).
pub fn lookup(name: &str) -> Result<(Store, ImageRecord), CoreError> {
    let state = airlock_image::default_state_dir()?;
    let store = Store::open_existing(&state)?.ok_or_else(|| {
        CoreError::Image(airlock_image::ImageError::NotFound {
            name: name.to_string(),
        })
    })?;
    let rec = store.get(name)?;
    Ok((store, rec))
}

/// The image's tree, if this caller can run it: the tree is a whole root
/// (not one that sits on the host image) and its files belong to what this
/// caller maps (root: the archive's owners, `Preserved`; rootless: the
/// caller's own).
pub fn usable_tree(store: &Store, rec: &ImageRecord) -> Result<PathBuf, CoreError> {
    if rec.base == Base::Host {
        return Err(err(
            &rec.name,
            "it is built FROM host (its tree sits on the host image), which cannot be a sandbox's root yet; build it FROM an image or debian:<suite>",
        ));
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    match rec.ownership {
        Ownership::Preserved if me == 0 => {}
        Ownership::Caller { uid, .. } if me != 0 && uid == me => {}
        Ownership::Preserved => {
            return Err(err(
                &rec.name,
                "it was stored by root (its files keep their owners): run it as root",
            ))
        }
        Ownership::Caller { uid, .. } => {
            return Err(err(
                &rec.name,
                format!("its files belong to uid {uid}, who stored it: run it as that user, or import it as root"),
            ))
        }
    }
    Ok(store.rootfs_path(rec))
}

/// Applies an image's defaults (the tree at `tree`) to `spec` under what
/// the user gave. Also what a build's RUN step uses, with the step's Env,
/// WorkingDir, User and command as `defaults`.
pub fn prepare_tree(
    mut spec: SandboxSpec,
    given: &Given,
    name: &str,
    tree: &Path,
    defaults: &ImageDefaults,
) -> Result<Prepared, CoreError> {
    let mut notes = Vec::new();
    let user_spec = given
        .user
        .as_deref()
        .or(defaults.user.as_deref())
        .unwrap_or("");
    let who = resolve_user(tree, user_spec).map_err(|why| err(name, why))?;
    spec.user = who.user;

    // The environment: the image's under the base one's (PATH, HOME, USER,
    // LANG, TERM), --env (already in spec.env) over both.
    let mut env: Vec<(String, String)> = vec![("HOME".into(), who.home.display().to_string())];
    if let Some(n) = &who.name {
        env.push(("USER".into(), n.clone()));
    }
    for e in &defaults.env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        if airlock_spec::validate_env_key(k).is_err() || v.contains('\0') {
            notes.push(format!(
                "the image's variable {k:?} is left out (not a name a shell can use)"
            ));
            continue;
        }
        env.retain(|(x, _)| x != k);
        env.push((k.to_string(), v.to_string()));
    }
    for (k, v) in std::mem::take(&mut spec.env) {
        env.retain(|(x, _)| *x != k);
        env.push((k, v));
    }
    spec.env = env;

    spec.workdir = Some(match &given.workdir {
        Some(w) => w.clone(),
        None => match defaults.working_dir.as_deref() {
            Some(w) if !w.is_empty() => clean_abs(w),
            _ => PathBuf::from("/"),
        },
    });

    let entry: Vec<String> = match &given.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => defaults.entrypoint.clone().unwrap_or_default(),
    };
    let rest: Vec<String> = if !given.command.is_empty() {
        given.command.clone()
    } else if given.entrypoint.is_some() {
        // As docker: --entrypoint drops the image's Cmd.
        Vec::new()
    } else {
        defaults.cmd.clone().unwrap_or_default()
    };
    spec.command = entry.into_iter().chain(rest).collect();
    if spec.command.is_empty() {
        return Err(err(
            name,
            "it has no Entrypoint or Cmd: give the command after --",
        ));
    }
    Ok(Prepared {
        spec,
        image: Some(ImageRoot {
            tree: tree.to_path_buf(),
            home: who.home,
            capture: None,
            premapped: false,
        }),
        notes,
    })
}

/// `WorkingDir` made absolute and normal (docker takes a relative one as
/// relative to `/`).
fn clean_abs(w: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(w).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Who a sandbox runs as, from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    pub user: User,
    /// The name in the image's `/etc/passwd`, if it has one.
    pub name: Option<String>,
    /// The home directory in the image's `/etc/passwd`; else `/root` for
    /// root and `/` for anyone else (as docker).
    pub home: PathBuf,
}

/// Resolves a docker `USER` (`name`, `uid`, `name:group`, `uid:gid`, ...;
/// empty: root) through the image's `/etc/passwd` and `/etc/group`. Names
/// the image does not have fall back to airlock's own (`root`, `nobody`,
/// `sandbox`); a numeric uid it does not have gets group 0, as with docker.
pub fn resolve_user(tree: &Path, spec: &str) -> Result<ImageUser, String> {
    let passwd = read_in_tree(tree, "etc/passwd").unwrap_or_default();
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "root" } else { u };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 6)
        .collect();
    let id = |s: &str| -> Option<u32> { s.parse::<u32>().ok() };
    let found = match id(u) {
        Some(n) => entries.iter().find(|f| id(f[2]) == Some(n)),
        None => entries.iter().find(|f| f[0] == u),
    };
    let (uid, mut gid, name, home) = match (found, id(u)) {
        (Some(f), _) => (
            id(f[2]).ok_or_else(|| format!("user {u:?}: bad uid in its /etc/passwd"))?,
            id(f[3]).unwrap_or(0),
            Some(f[0].to_string()),
            (!f[5].is_empty()).then(|| PathBuf::from(f[5])),
        ),
        (None, Some(n)) => (n, 0, None, None),
        (None, None) => match u {
            "root" | "nobody" | "sandbox" => {
                let x = airlock_spec::parse_user(u).map_err(|e| e.to_string())?;
                (x.uid, x.gid, Some(u.to_string()), None)
            }
            _ => return Err(format!("no user {u:?} in the image's /etc/passwd")),
        },
    };
    if let Some(g) = g {
        gid = match id(g) {
            Some(n) => n,
            None => {
                let group = read_in_tree(tree, "etc/group").unwrap_or_default();
                group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .and_then(|f| id(f[2]))
                    .ok_or_else(|| format!("no group {g:?} in the image's /etc/group"))?
            }
        };
    }
    if uid >= airlock_spec::MAX_ID || gid >= airlock_spec::MAX_ID {
        return Err(format!(
            "user {spec:?} is {uid}:{gid}: ids inside the sandbox are below 65536"
        ));
    }
    let home = match home {
        Some(h) if h.is_absolute() => clean_abs(&h.to_string_lossy()),
        _ if uid == 0 => PathBuf::from("/root"),
        _ => PathBuf::from("/"),
    };
    Ok(ImageUser {
        user: User { uid, gid },
        name,
        home,
    })
}

/// The most of an image's `/etc/passwd` or `/etc/group` that is read.
const MAX_READ: u64 = 4 << 20;

/// Reads the regular file `rel` of the tree at `tree` on the host: every
/// symlink resolves inside the tree (`RESOLVE_IN_ROOT`, no magic links),
/// nothing but a regular file is opened (a FIFO or a device would block or
/// act), and at most [`MAX_READ`] bytes are read. `None` if there is no
/// such file.
pub fn read_in_tree(tree: &Path, rel: &str) -> Option<String> {
    use std::io::Read;
    let t = airlock_sys::cpath(tree).ok()?;
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let dir = unsafe {
        libc::open(
            t.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return None;
    }
    // SAFETY: a new fd that nothing else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    let r = airlock_sys::cpath(Path::new(rel)).ok()?;
    let f = airlock_sys::openat2(
        dir.as_raw_fd(),
        &r,
        libc::O_PATH,
        0,
        airlock_sys::RESOLVE_IN_ROOT | airlock_sys::RESOLVE_NO_MAGICLINKS,
    )
    .ok()?;
    let st = airlock_sys::fstat(f.as_raw_fd()).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    // Opened for reading through the magic link to that very inode.
    let via = airlock_sys::cpath(Path::new(&format!("/proc/self/fd/{}", f.as_raw_fd()))).ok()?;
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let fd = unsafe {
        libc::open(
            via.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd that nothing else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut out = Vec::new();
    file.take(MAX_READ).read_to_end(&mut out).ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The root of a sandbox whose spec names an image in the default store,
/// for a caller that did not [`prepare`] it: the user's home from the
/// image's `/etc/passwd` by uid.
pub fn root_for(spec: &SandboxSpec) -> Result<Option<ImageRoot>, CoreError> {
    let Image::Store(name) = &spec.image else {
        return Ok(None);
    };
    let (store, rec) = lookup(name)?;
    let tree = usable_tree(&store, &rec)?;
    let home = resolve_user(&tree, &spec.user.uid.to_string())
        .map(|u| u.home)
        .unwrap_or_else(|_| spec.user.home());
    Ok(Some(ImageRoot {
        tree,
        home,
        capture: None,
        premapped: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let p = std::env::temp_dir()
                .join(format!("airlock-core-image-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(p.join("etc")).unwrap();
            Tmp(p)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tree() -> Tmp {
        let t = Tmp::new(&format!("{:?}", std::thread::current().id()).replace(['(', ')'], ""));
        std::fs::write(
            t.0.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\nsvc:x:998:998::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            t.0.join("etc/group"),
            "root:x:0:\nstaff:x:50:app\napp:x:1002:\n",
        )
        .unwrap();
        t
    }

    #[test]
    fn users_resolve_through_the_images_passwd_and_group() {
        let t = tree();
        let r = |s: &str| resolve_user(&t.0, s);
        let u = r("").unwrap();
        assert_eq!(
            (u.user, u.home.clone()),
            (User::ROOT, PathBuf::from("/root"))
        );
        let u = r("app").unwrap();
        assert_eq!(
            u.user,
            User {
                uid: 1001,
                gid: 1002
            }
        );
        assert_eq!(u.name.as_deref(), Some("app"));
        assert_eq!(u.home, PathBuf::from("/home/app"));
        assert_eq!(r("app:staff").unwrap().user, User { uid: 1001, gid: 50 });
        assert_eq!(
            r("1001").unwrap().user,
            User {
                uid: 1001,
                gid: 1002
            }
        );
        assert_eq!(r("1001:7").unwrap().user, User { uid: 1001, gid: 7 });
        // A uid the image does not have: group 0 and home / (docker's way).
        let u = r("4242").unwrap();
        assert_eq!(
            (u.user, u.home),
            (User { uid: 4242, gid: 0 }, PathBuf::from("/"))
        );
        // airlock's own names where the image has none.
        assert_eq!(
            r("nobody").unwrap().user,
            User {
                uid: 65534,
                gid: 65534
            }
        );
        assert!(r("ghost").unwrap_err().contains("no user \"ghost\""));
        assert!(r("app:ghosts").unwrap_err().contains("no group \"ghosts\""));
        assert!(r("70000").unwrap_err().contains("below 65536"));
    }

    /// The image's /etc/passwd is read inside its tree: a symlink to the
    /// host's /etc/shadow leads to the tree's own etc/shadow, a FIFO is
    /// not opened (nor waited on).
    #[test]
    fn image_files_are_read_inside_the_tree() {
        let t = tree();
        std::fs::remove_file(t.0.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", t.0.join("etc/passwd")).unwrap();
        std::fs::write(
            t.0.join("etc/shadow"),
            "leak:x:7:7::/in-the-image:/bin/sh\n",
        )
        .unwrap();
        let u = resolve_user(&t.0, "leak").unwrap();
        assert_eq!(u.home, PathBuf::from("/in-the-image"));
        std::fs::remove_file(t.0.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../../../../../etc/hostname",
            t.0.join("etc/passwd"),
        )
        .unwrap();
        assert_eq!(read_in_tree(&t.0, "etc/passwd"), None);
        std::fs::remove_file(t.0.join("etc/passwd")).unwrap();
        let c = airlock_sys::cpath(&t.0.join("etc/passwd")).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert_eq!(read_in_tree(&t.0, "etc/passwd"), None);
    }

    fn spec() -> SandboxSpec {
        let mut s = SandboxSpec::new(Vec::new());
        s.image = Image::Store("img".into());
        s
    }

    fn defaults() -> ImageDefaults {
        ImageDefaults {
            env: vec![
                "PATH=/opt/bin:/bin".into(),
                "GREETING=hi".into(),
                "bad-key=1".into(),
            ],
            working_dir: Some("work/../app".into()),
            user: Some("app".into()),
            entrypoint: Some(vec!["/ep".into(), "-x".into()]),
            cmd: Some(vec!["serve".into()]),
            ..ImageDefaults::default()
        }
    }

    #[test]
    fn image_defaults_fill_only_what_was_not_given() {
        let t = tree();
        let mut s = spec();
        s.env = vec![("GREETING".into(), "yo".into())];
        let p = prepare_tree(s, &Given::default(), "img", &t.0, &defaults()).unwrap();
        assert_eq!(p.spec.command, ["/ep", "-x", "serve"]);
        assert_eq!(p.spec.workdir, Some(PathBuf::from("/app")));
        assert_eq!(
            p.spec.user,
            User {
                uid: 1001,
                gid: 1002
            }
        );
        assert_eq!(
            p.spec.env,
            [
                ("HOME".to_string(), "/home/app".to_string()),
                ("USER".into(), "app".into()),
                ("PATH".into(), "/opt/bin:/bin".into()),
                ("GREETING".into(), "yo".into()),
            ]
        );
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
        let img = p.image.unwrap();
        assert_eq!(
            (img.tree, img.home),
            (t.0.clone(), PathBuf::from("/home/app"))
        );

        // A command: Entrypoint + the command; --user and --workdir win.
        let g = Given {
            user: Some("root".into()),
            workdir: Some("/w".into()),
            command: vec!["a".into(), "b".into()],
            entrypoint: None,
        };
        let p = prepare_tree(spec(), &g, "img", &t.0, &defaults()).unwrap();
        assert_eq!(p.spec.command, ["/ep", "-x", "a", "b"]);
        assert_eq!(
            (p.spec.user, p.spec.workdir),
            (User::ROOT, Some("/w".into()))
        );
        // --entrypoint replaces it and drops Cmd; '' clears it.
        let g = Given {
            entrypoint: Some("/bin/sh".into()),
            ..Given::default()
        };
        let p = prepare_tree(spec(), &g, "img", &t.0, &defaults()).unwrap();
        assert_eq!(p.spec.command, ["/bin/sh"]);
        let g = Given {
            entrypoint: Some(String::new()),
            command: vec!["ls".into()],
            ..Given::default()
        };
        let p = prepare_tree(spec(), &g, "img", &t.0, &defaults()).unwrap();
        assert_eq!(p.spec.command, ["ls"]);
        // Nothing to run at all.
        let e = prepare_tree(
            spec(),
            &Given::default(),
            "img",
            &t.0,
            &ImageDefaults::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no Entrypoint or Cmd"), "{e}");
        // No WorkingDir: /.
        let d = ImageDefaults {
            cmd: Some(vec!["x".into()]),
            ..ImageDefaults::default()
        };
        let p = prepare_tree(spec(), &Given::default(), "img", &t.0, &d).unwrap();
        assert_eq!(p.spec.workdir, Some(PathBuf::from("/")));
        assert_eq!(p.spec.user, User::ROOT);
    }

    #[test]
    fn host_image_keeps_airlocks_own_defaults() {
        let g = Given {
            command: vec!["true".into()],
            ..Given::default()
        };
        let p = prepare(SandboxSpec::new(Vec::new()), &g).unwrap();
        assert_eq!(p.spec.user, User::SANDBOX);
        assert_eq!(p.spec.workdir, None);
        assert!(p.image.is_none());
        let g = Given {
            entrypoint: Some("env".into()),
            command: vec!["-i".into()],
            user: Some("root".into()),
            ..Given::default()
        };
        let p = prepare(SandboxSpec::new(Vec::new()), &g).unwrap();
        assert_eq!(p.spec.command, ["env", "-i"]);
        assert_eq!(p.spec.user, User::ROOT);
        assert!(prepare(SandboxSpec::new(Vec::new()), &Given::default()).is_err());
    }
}
