//! Task mode's patch: what a command changed in a copy-on-write copy of a
//! repository, as a unified diff in git's format (binary files, new,
//! deleted and renamed files, modes), which `git apply` reproduces on a
//! clean copy.
//!
//! The base is the repository on the host (read without following
//! symlinks); the result is a tar stream of the sandbox's copy (untrusted:
//! only its names, kinds, modes and bytes are used, and names that could
//! not come from a tree are refused).

use sha1_smol::Sha1;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One tracked thing, as git sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// Contents and whether it is executable.
    File(Vec<u8>, bool),
    /// The link's target.
    Link(Vec<u8>),
}

impl Item {
    fn mode(&self) -> &'static str {
        match self {
            Item::File(_, false) => "100644",
            Item::File(_, true) => "100755",
            Item::Link(_) => "120000",
        }
    }
    fn data(&self) -> &[u8] {
        match self {
            Item::File(d, _) | Item::Link(d) => d,
        }
    }
    fn is_link(&self) -> bool {
        matches!(self, Item::Link(_))
    }
}

/// What a diff covers at most (a bigger repository is an error, not a
/// runaway).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_files: usize,
    pub max_bytes: u64,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            max_files: 1_000_000,
            max_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("reading {path}: {err}")]
    Io { path: String, err: io::Error },
    #[error("the sandbox's tree holds a name that cannot be a path: {0:?}")]
    BadName(String),
    #[error("the tree is larger than the patch allows ({0})")]
    TooLarge(&'static str),
}

fn blob_sha(d: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", d.len()).as_bytes());
    h.update(d);
    h.digest().to_string()
}

/// The repository's tracked things (no `.git`), without following
/// symlinks.
fn read_base(root: &Path, caps: Caps) -> Result<BTreeMap<Vec<u8>, Item>, TaskError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    // What is mounted below the root is not in the sandbox's copy (an
    // overlay's lower layer shows no submounts): its directories count
    // as empty here too, or their files would seem deleted (and their
    // content be put into the patch).
    let dev = std::fs::symlink_metadata(root)
        .map_err(|err| TaskError::Io {
            path: root.display().to_string(),
            err,
        })?
        .dev();
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&rel))
        };
        let io = |err| TaskError::Io {
            path: dir.display().to_string(),
            err,
        };
        for e in std::fs::read_dir(&dir).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name();
            if rel.is_empty() && name == ".git" {
                continue;
            }
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name.as_bytes());
            let md = std::fs::symlink_metadata(e.path()).map_err(io)?;
            let ft = md.file_type();
            if ft.is_dir() {
                if md.dev() == dev {
                    stack.push(p);
                }
            } else if ft.is_symlink() {
                let t = std::fs::read_link(e.path()).map_err(io)?;
                out.insert(p, Item::Link(t.as_os_str().as_bytes().to_vec()));
            } else if ft.is_file() {
                total += md.len();
                if total > caps.max_bytes {
                    return Err(TaskError::TooLarge("bytes"));
                }
                let d = std::fs::read(e.path()).map_err(io)?;
                out.insert(p, Item::File(d, md.permissions().mode() & 0o111 != 0));
            }
            if out.len() > caps.max_files {
                return Err(TaskError::TooLarge("files"));
            }
        }
    }
    Ok(out)
}

/// The sandbox's copy, from a tar stream of it (paths relative to its
/// root).
fn read_tar<R: Read>(r: &mut R, caps: Caps) -> Result<BTreeMap<Vec<u8>, Item>, TaskError> {
    let io = |err| TaskError::Io {
        path: "the sandbox's tree".into(),
        err,
    };
    let mut ar = tar::Archive::new(r);
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    for e in ar.entries().map_err(io)? {
        let mut e = e.map_err(io)?;
        let raw = e.path_bytes().into_owned();
        // Normalise "./a/b" and refuse anything that is not a plain
        // relative path.
        let mut parts = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => return Err(TaskError::BadName(String::from_utf8_lossy(&raw).into())),
                c => parts.push(c),
            }
        }
        if parts.is_empty() {
            continue;
        }
        if parts[0] == b".git" {
            continue;
        }
        let p = parts.join(&b'/');
        let kind = e.header().entry_type();
        if kind.is_file() {
            let mode = e.header().mode().unwrap_or(0o644);
            // Counted from the header, before a byte is held (a sparse
            // file of a terabyte is a header and a few blocks).
            let size = e.header().size().map_err(io)?;
            total = total.saturating_add(size);
            if total > caps.max_bytes {
                return Err(TaskError::TooLarge("bytes"));
            }
            let mut d = Vec::with_capacity(size.min(1 << 20) as usize);
            (&mut e).take(size).read_to_end(&mut d).map_err(io)?;
            out.insert(p, Item::File(d, mode & 0o111 != 0));
        } else if kind.is_symlink() {
            let t = e
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            out.insert(p, Item::Link(t));
        }
        if out.len() > caps.max_files {
            return Err(TaskError::TooLarge("files"));
        }
    }
    Ok(out)
}

/// Git's quoting of a path in a patch header.
fn quote(prefix: &str, p: &[u8]) -> String {
    let needs = p
        .iter()
        .any(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\');
    if !needs {
        return format!("{prefix}{}", String::from_utf8_lossy(p));
    }
    let mut s = String::from("\"");
    s.push_str(prefix);
    for &b in p {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\r' => s.push_str("\\r"),
            0x07 => s.push_str("\\a"),
            0x08 => s.push_str("\\b"),
            0x0b => s.push_str("\\v"),
            0x0c => s.push_str("\\f"),
            b if !(0x20..0x7f).contains(&b) => s.push_str(&format!("\\{b:03o}")),
            b => s.push(b as char),
        }
    }
    s.push('"');
    s
}

/// Files larger than this go as binary literals (a line diff of them
/// could take minutes and gigabytes).
const TEXT_MAX: usize = 4 << 20;

fn is_binary(d: &[u8]) -> bool {
    d.len() > TEXT_MAX
        || d[..d.len().min(8000)].contains(&0)
        || std::str::from_utf8(d).is_err()
        // A lone CR: the line diff would split there and git would not.
        || d
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\r' && d.get(i + 1) != Some(&b'\n'))
}

const B85: &[u8] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

/// A `literal` hunk of git's binary patch: the data, deflated, in base85
/// lines of up to 52 bytes.
fn binary_literal(d: &[u8]) -> String {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = z.write_all(d);
    let z = z.finish().unwrap_or_default();
    let mut s = format!("literal {}\n", d.len());
    for chunk in z.chunks(52) {
        let n = chunk.len();
        s.push(if n <= 26 {
            (b'A' + n as u8 - 1) as char
        } else {
            (b'a' + n as u8 - 27) as char
        });
        for quad in chunk.chunks(4) {
            let mut b = [0u8; 4];
            b[..quad.len()].copy_from_slice(quad);
            let mut v = u32::from_be_bytes(b);
            let mut out = [0u8; 5];
            for i in (0..5).rev() {
                out[i] = B85[(v % 85) as usize];
                v /= 85;
            }
            s.push_str(std::str::from_utf8(&out).unwrap_or(""));
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

fn text_hunks(old: &[u8], new: &[u8]) -> String {
    let (o, n) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    let diff = similar::TextDiff::configure()
        .timeout(std::time::Duration::from_secs(10))
        .diff_lines(o.as_ref(), n.as_ref());
    let mut s = String::new();
    for h in diff.unified_diff().context_radius(3).iter_hunks() {
        s.push_str(&h.to_string());
    }
    s
}

/// One file's patch from `old` to `new` (either absent).
fn file_patch(path: &[u8], from: Option<(&[u8], &Item)>, to: Option<&Item>) -> String {
    let old_path = from.map(|(p, _)| p).unwrap_or(path);
    let old = from.map(|(_, i)| i);
    let mut s = format!(
        "diff --git {} {}\n",
        quote("a/", old_path),
        quote("b/", path)
    );
    let zero = "0000000000000000000000000000000000000000";
    let (osha, nsha) = (
        old.map(|i| blob_sha(i.data()))
            .unwrap_or_else(|| zero.into()),
        to.map(|i| blob_sha(i.data()))
            .unwrap_or_else(|| zero.into()),
    );
    match (old, to) {
        (None, Some(n)) => s += &format!("new file mode {}\n", n.mode()),
        (Some(o), None) => s += &format!("deleted file mode {}\n", o.mode()),
        (Some(o), Some(n)) if o.mode() != n.mode() => {
            s += &format!("old mode {}\nnew mode {}\n", o.mode(), n.mode())
        }
        _ => {}
    }
    if old_path != path {
        s += &format!(
            "similarity index 100%\nrename from {}\nrename to {}\n",
            quote("", old_path),
            quote("", path)
        );
    }
    let (od, nd) = (
        old.map(|i| i.data()).unwrap_or(&[]),
        to.map(|i| i.data()).unwrap_or(&[]),
    );
    if od == nd && old.is_some() && to.is_some() {
        // A mode change or a pure rename: no content.
        return s;
    }
    let same_mode = match (old, to) {
        (Some(o), Some(n)) if o.mode() == n.mode() => format!(" {}", o.mode()),
        _ => String::new(),
    };
    if is_binary(od) || is_binary(nd) {
        s += &format!("index {osha}..{nsha}{same_mode}\nGIT binary patch\n");
        s += &binary_literal(nd);
        s += &binary_literal(od);
        return s;
    }
    s += &format!("index {}..{}{same_mode}\n", &osha[..7], &nsha[..7]);
    if od.is_empty() && nd.is_empty() {
        return s;
    }
    s += &format!(
        "--- {}\n+++ {}\n",
        if old.is_some() {
            quote("a/", old_path)
        } else {
            "/dev/null".into()
        },
        if to.is_some() {
            quote("b/", path)
        } else {
            "/dev/null".into()
        }
    );
    s += &text_hunks(od, nd);
    s
}

/// The patch from the repository at `base` to the tree in the tar stream
/// `result` (empty when nothing changed).
pub fn patch(base: &Path, mut result: impl Read, caps: Caps) -> Result<String, TaskError> {
    let new = read_tar(&mut result, caps)?;
    // The archive's end marker is not the end of the stream: whoever
    // produced it reports its outcome after it (a tar that failed half way
    // still ends its archive). Read to the real end, so that a failure is
    // an error here and never a tree with files missing.
    std::io::copy(&mut result, &mut std::io::sink()).map_err(|err| TaskError::Io {
        path: "the sandbox's tree".into(),
        err,
    })?;
    let old = read_base(base, caps)?;
    // Exact renames: a deleted path whose item reappears under a new one.
    let deleted: Vec<&Vec<u8>> = old.keys().filter(|p| !new.contains_key(*p)).collect();
    let added: BTreeSet<&Vec<u8>> = new.keys().filter(|p| !old.contains_key(*p)).collect();
    let mut by_content: BTreeMap<(&[u8], &'static str), Vec<&Vec<u8>>> = BTreeMap::new();
    for p in &deleted {
        let i = &old[*p];
        by_content.entry((i.data(), i.mode())).or_default().push(p);
    }
    let mut renamed_from: BTreeMap<&Vec<u8>, &Vec<u8>> = BTreeMap::new();
    let mut used: BTreeSet<&Vec<u8>> = BTreeSet::new();
    for p in &added {
        let i = &new[*p];
        if i.data().is_empty() {
            continue;
        }
        if let Some(cands) = by_content.get_mut(&(i.data(), i.mode())) {
            if let Some(from) = cands.pop() {
                renamed_from.insert(p, from);
                used.insert(from);
            }
        }
    }
    let mut paths: BTreeSet<&Vec<u8>> = old.keys().chain(new.keys()).collect();
    paths.retain(|p| !used.contains(p));
    let mut out = String::new();
    for p in paths {
        match (old.get(p), new.get(p)) {
            (Some(o), Some(n)) if o == n => {}
            // A symlink that became a file, or the reverse: git applies a
            // type change only as a deletion and an addition.
            (Some(o), Some(n)) if o.is_link() != n.is_link() => {
                out += &file_patch(p, Some((p, o)), None);
                out += &file_patch(p, None, Some(n));
            }
            (Some(o), Some(n)) => out += &file_patch(p, Some((p, o)), Some(n)),
            (Some(o), None) => out += &file_patch(p, Some((p, o)), None),
            (None, Some(n)) => match renamed_from.get(&p) {
                Some(from) => out += &file_patch(p, Some((from, &old[*from])), Some(n)),
                None => out += &file_patch(p, None, Some(n)),
            },
            (None, None) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base85_and_quoting() {
        assert_eq!(quote("a/", b"plain/x.txt"), "a/plain/x.txt");
        assert_eq!(quote("a/", b"sp\"q\n"), "\"a/sp\\\"q\\n\"");
        assert_eq!(quote("b/", "é".as_bytes()), "\"b/\\303\\251\"");
        // Empty data deflates to 8 bytes: one line of length 'H'.
        assert!(binary_literal(b"").starts_with("literal 0\nH"));
        assert_eq!(binary_literal(b"").lines().nth(1).unwrap().len(), 1 + 10);
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn repo(files: &[(&str, &[u8])]) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "airlock-task-unit-{}-{}",
            std::process::id(),
            crate::unique()
        ));
        std::fs::create_dir(&d).unwrap();
        for (n, data) in files {
            std::fs::write(d.join(n), data).unwrap();
        }
        d
    }

    /// A complete archive followed by its producer's failure is an error,
    /// never a tree with files missing (which would show them deleted, with
    /// the host's content of them in the patch).
    #[test]
    fn a_failure_after_the_archive_is_an_error() {
        struct ThenFail(std::io::Cursor<Vec<u8>>);
        impl Read for ThenFail {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                match self.0.read(b)? {
                    0 => Err(io::Error::other("tar: secret.txt: Permission denied")),
                    n => Ok(n),
                }
            }
        }
        let d = repo(&[("a.txt", b"a\n"), ("secret.txt", b"TOP SECRET\n")]);
        let r = patch(
            &d,
            ThenFail(std::io::Cursor::new(tar_of(&[("a.txt", b"a\n")]))),
            Caps::default(),
        );
        let _ = std::fs::remove_dir_all(&d);
        let e = r
            .expect_err("a failed stream must fail the patch")
            .to_string();
        assert!(e.contains("Permission denied"), "{e}");
    }

    /// A huge entry is refused from its header, before its data is read.
    #[test]
    fn sizes_are_checked_before_reading() {
        let mut h = tar::Header::new_gnu();
        h.set_path("sparse").unwrap();
        h.set_size(1 << 40);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        // The header alone: reading any data would fail with an early EOF.
        let d = repo(&[]);
        let r = patch(&d, &h.as_bytes()[..], Caps::default());
        let _ = std::fs::remove_dir_all(&d);
        assert!(matches!(r, Err(TaskError::TooLarge("bytes"))), "{r:?}");
    }

    /// A lone CR would split a line for the line diff and not for git:
    /// such a file goes as a binary literal.
    #[test]
    fn lone_carriage_returns_go_as_binary() {
        assert!(is_binary(b"a\rb\nc\n"));
        assert!(!is_binary(b"a\r\nb\r\n"));
        assert!(is_binary(&vec![b'x'; TEXT_MAX + 1]));
    }
}
