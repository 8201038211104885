//! Image archives the tests make themselves: tar layers written byte by
//! byte (so hostile entries can be anything), gzip and zstd, and the three
//! containers: an OCI layout directory, an OCI archive, a `docker save`
//! archive.

#![allow(dead_code)]

use airlock_image::Digest;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hard(String),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

#[derive(Clone, Debug)]
pub struct E {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// A size field that lies about the data.
    pub size_override: Option<u64>,
    pub mtime: u64,
}

fn e(path: &str, kind: Kind, mode: u32) -> E {
    E {
        path: path.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        size_override: None,
        mtime: 1_600_000_000,
    }
}
pub fn f(path: &str, content: &str) -> E {
    e(path, Kind::File(content.as_bytes().to_vec()), 0o644)
}
pub fn d(path: &str) -> E {
    e(path, Kind::Dir, 0o755)
}
pub fn l(path: &str, target: &str) -> E {
    e(path, Kind::Symlink(target.into()), 0o777)
}
pub fn h(path: &str, target: &str) -> E {
    e(path, Kind::Hard(target.into()), 0o644)
}
pub fn fifo(path: &str) -> E {
    e(path, Kind::Fifo, 0o644)
}
pub fn chr(path: &str, ma: u32, mi: u32) -> E {
    e(path, Kind::Char(ma, mi), 0o600)
}
pub fn blk(path: &str) -> E {
    e(path, Kind::Block(8, 0), 0o600)
}
impl E {
    pub fn mode(mut self, m: u32) -> E {
        self.mode = m;
        self
    }
    pub fn owner(mut self, u: u64, g: u64) -> E {
        self.uid = u;
        self.gid = g;
        self
    }
    pub fn claim(mut self, size: u64) -> E {
        self.size_override = Some(size);
        self
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}", v, w = field.len() - 1);
    let s = s.as_bytes();
    if s.len() > field.len() - 1 {
        // base-256 (GNU) for big numbers.
        field.fill(0);
        field[0] = 0x80;
        let bytes = v.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
        return;
    }
    field[..s.len()].copy_from_slice(s);
    field[s.len()] = 0;
}

/// One ustar header (+ data, padded).
pub fn entry(out: &mut Vec<u8>, x: &E) {
    let mut hd = [0u8; 512];
    assert!(x.path.len() <= 100, "test paths fit ustar");
    hd[..x.path.len()].copy_from_slice(&x.path);
    octal(&mut hd[100..108], x.mode as u64);
    octal(&mut hd[108..116], x.uid);
    octal(&mut hd[116..124], x.gid);
    let (flag, data, link): (u8, &[u8], &[u8]) = match &x.kind {
        Kind::File(c) => (b'0', c, b""),
        Kind::Dir => (b'5', b"", b""),
        Kind::Symlink(t) => (b'2', b"", t.as_bytes()),
        Kind::Hard(t) => (b'1', b"", t.as_bytes()),
        Kind::Fifo => (b'6', b"", b""),
        Kind::Char(..) => (b'3', b"", b""),
        Kind::Block(..) => (b'4', b"", b""),
    };
    octal(
        &mut hd[124..136],
        x.size_override.unwrap_or(data.len() as u64),
    );
    octal(&mut hd[136..148], x.mtime);
    hd[156] = flag;
    hd[157..157 + link.len()].copy_from_slice(link);
    hd[257..263].copy_from_slice(b"ustar\0");
    hd[263..265].copy_from_slice(b"00");
    if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = x.kind {
        octal(&mut hd[329..337], ma as u64);
        octal(&mut hd[337..345], mi as u64);
    }
    hd[148..156].fill(b' ');
    let sum: u32 = hd.iter().map(|b| *b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    hd[148..156].copy_from_slice(s.as_bytes());
    out.extend_from_slice(&hd);
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for x in entries {
        entry(&mut out, x);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

pub fn tar_files(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut v: Vec<E> = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for name in files.keys() {
        let mut p = String::new();
        for c in name.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            p = if p.is_empty() {
                c.to_string()
            } else {
                format!("{p}/{c}")
            };
            dirs.insert(p.clone());
        }
    }
    for dname in &dirs {
        v.push(d(&format!("{dname}/")));
    }
    for (name, data) in files {
        v.push(E {
            path: name.as_bytes().to_vec(),
            kind: Kind::File(data.clone()),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size_override: None,
            mtime: 0,
        });
    }
    tar(&v)
}

pub fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn zst(b: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(b, ruzstd::encoding::CompressionLevel::Fastest)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// An image: layer blobs as stored, their diff ids, and the config.
#[derive(Clone)]
pub struct Img {
    pub blobs: Vec<(Vec<u8>, &'static str)>,
    pub config: serde_json::Value,
}

pub fn img(layers: &[(Vec<u8>, Comp)], container_config: serde_json::Value) -> Img {
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for (t, c) in layers {
        diff_ids.push(Digest::of(t).to_string());
        blobs.push(match c {
            Comp::None => (t.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Comp::Gzip => (gz(t), "application/vnd.oci.image.layer.v1.tar+gzip"),
            Comp::Zstd => (zst(t), "application/vnd.oci.image.layer.v1.tar+zstd"),
        });
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": container_config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    Img { blobs, config }
}

pub fn blob_name(b: &[u8]) -> String {
    format!("blobs/sha256/{}", Digest::of(b).hex())
}

/// The files of an OCI image layout.
pub fn oci_files(i: &Img) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let cfg = serde_json::to_vec(&i.config).unwrap();
    let mut layers = Vec::new();
    for (b, mt) in &i.blobs {
        files.insert(blob_name(b), b.clone());
        layers.push(serde_json::json!({"mediaType": mt, "digest": Digest::of(b).to_string(), "size": b.len()}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&cfg).to_string(), "size": cfg.len()},
        "layers": layers,
    });
    let m = serde_json::to_vec(&manifest).unwrap();
    files.insert(blob_name(&cfg), cfg);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(&m).to_string(), "size": m.len(),
             "platform": {"architecture": "amd64", "os": "linux"},
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}
        ],
    });
    files.insert(blob_name(&m), m);
    files.insert("index.json".into(), serde_json::to_vec(&index).unwrap());
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    files
}

/// The files of a (legacy) `docker save` archive.
pub fn docker_files(i: &Img) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let cfg = serde_json::to_vec(&i.config).unwrap();
    let chex = Digest::of(&cfg).hex().to_string();
    let mut layers = Vec::new();
    for (n, (b, _)) in i.blobs.iter().enumerate() {
        let p = format!("{:064x}/layer.tar", n + 1);
        files.insert(p.clone(), b.clone());
        files.insert(format!("{:064x}/VERSION", n + 1), b"1.0".to_vec());
        layers.push(p);
    }
    files.insert(format!("{chex}.json"), cfg);
    let m = serde_json::json!([{ "Config": format!("{chex}.json"), "RepoTags": ["test:latest"], "Layers": layers }]);
    files.insert("manifest.json".into(), serde_json::to_vec(&m).unwrap());
    files
}

pub fn write_dir(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (n, b) in files {
        let p = dir.join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    }
}

/// A tree, one line per entry: `kind mode uid:gid path [content|-> target]`.
pub fn snapshot(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(root.join(&rel))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let t = m.file_type();
            let (k, extra) = if t.is_dir() {
                stack.push(r.clone());
                ("d", String::new())
            } else if t.is_symlink() {
                (
                    "l",
                    format!(" -> {}", std::fs::read_link(&p).unwrap().display()),
                )
            } else if t.is_file() {
                (
                    "f",
                    format!(" ={}", String::from_utf8_lossy(&std::fs::read(&p).unwrap())),
                )
            } else {
                use std::os::unix::fs::FileTypeExt;
                if t.is_fifo() {
                    ("p", String::new())
                } else {
                    ("?", String::new())
                }
            };
            let mode = if t.is_symlink() {
                0o777
            } else {
                m.mode() & 0o7777
            };
            out.push(format!(
                "{k} {mode:o} {}:{} {}{extra}",
                m.uid(),
                m.gid(),
                r.display()
            ));
        }
    }
    out.sort();
    out
}
