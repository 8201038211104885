//! Debian images built with `mmdebstrap` from the archive the host's apt
//! uses, imported as a one-layer image.

use crate::error::{ImageError, Result};
use crate::import::{self, ImportOptions};
use crate::oci::{self, Descriptor, ImageConfig, Manifest};
use crate::store::{self, ImageDefaults, ImageRecord, Store};
use crate::{fsx, Progress};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone)]
pub struct DebianOptions {
    pub import: ImportOptions,
    /// bookworm, trixie, ...
    pub suite: String,
    pub packages: Vec<String>,
    /// mmdebstrap's --variant (apt by default: essential packages and apt).
    pub variant: String,
    /// The archive; `None` reads the host's apt sources.
    pub mirror: Option<String>,
}

impl DebianOptions {
    pub fn new(name: &str, suite: &str) -> DebianOptions {
        DebianOptions {
            import: ImportOptions::new(name),
            suite: suite.to_string(),
            packages: Vec::new(),
            variant: "apt".into(),
            mirror: None,
        }
    }
}

/// The Debian archive the host's apt uses (`/etc/apt/sources.list` and
/// `sources.list.d/*.list` one-line entries, `*.sources` deb822 files):
/// the first `deb` source that is not a security archive.
pub fn host_mirror() -> Result<String> {
    host_mirror_in(Path::new("/etc/apt"))
}

pub fn host_mirror_in(apt: &Path) -> Result<String> {
    let mut texts: Vec<(bool, String)> = Vec::new();
    if let Ok(t) = std::fs::read_to_string(apt.join("sources.list")) {
        texts.push((false, t));
    }
    if let Ok(rd) = std::fs::read_dir(apt.join("sources.list.d")) {
        let mut names: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let n = p.to_string_lossy();
            if n.ends_with(".list") || n.ends_with(".sources") {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    texts.push((n.ends_with(".sources"), t));
                }
            }
        }
    }
    let good = |uri: &str, suites: &[&str]| {
        !uri.contains("security")
            && suites.iter().any(|s| !s.contains('-') && !s.contains('/'))
            && (uri.starts_with("http://")
                || uri.starts_with("https://")
                || uri.starts_with("file:/"))
    };
    for (deb822, t) in &texts {
        if *deb822 {
            for para in t.split("\n\n") {
                let mut types = "";
                let mut uris = "";
                let mut suites = "";
                let mut enabled = true;
                for l in para.lines() {
                    if l.starts_with('#') {
                        continue;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "types" => types = v.trim(),
                            "uris" => uris = v.trim(),
                            "suites" => suites = v.trim(),
                            "enabled" => enabled = v.trim() != "no",
                            _ => {}
                        }
                    }
                }
                if !enabled || !types.split_whitespace().any(|t| t == "deb") {
                    continue;
                }
                let s: Vec<&str> = suites.split_whitespace().collect();
                if let Some(u) = uris.split_whitespace().find(|u| good(u, &s)) {
                    return Ok(u.to_string());
                }
            }
        } else {
            for l in t.lines() {
                let mut w = l.split_whitespace();
                if w.next() != Some("deb") {
                    continue;
                }
                let mut rest: Vec<&str> = w.collect();
                if rest.first().is_some_and(|o| o.starts_with('[')) {
                    let end = rest.iter().position(|x| x.ends_with(']')).unwrap_or(0);
                    rest.drain(..=end);
                }
                if let [uri, suite, ..] = rest.as_slice() {
                    if good(uri, &[suite]) {
                        return Ok(uri.to_string());
                    }
                }
            }
        }
    }
    Err(ImageError::Mirror {
        why: format!(
            "no deb source outside security updates in {}/sources.list or sources.list.d",
            apt.display()
        ),
    })
}

fn check_word(what: &str, w: &str) -> Result<()> {
    if w.is_empty()
        || !w
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.:_".contains(&b))
        || w.starts_with('-')
    {
        return Err(ImageError::Tool {
            tool: "mmdebstrap",
            why: format!("invalid {what} {w:?}"),
        });
    }
    Ok(())
}

/// Builds `opts.suite` with `mmdebstrap` and stores it as `opts.import.name`.
pub fn build_debian(
    store: &Store,
    opts: &DebianOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    store::validate_name(&opts.import.name)?;
    check_word("suite", &opts.suite)?;
    check_word("variant", &opts.variant)?;
    for p in &opts.packages {
        check_word("package", p)?;
    }
    let mirror = match &opts.mirror {
        Some(m) => m.clone(),
        None => host_mirror()?,
    };
    let mut txn = store.begin()?;
    let work = txn.scratch("debian-")?;
    let out = work.join("rootfs.tar");
    let mode = if fsx::is_root() {
        "--mode=root"
    } else {
        "--mode=unshare"
    };
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(mode)
        .arg(format!("--variant={}", opts.variant))
        .arg("--format=tar")
        // No device nodes in the tarball: images may not hold any.
        .arg("--skip=output/dev")
        .arg("--quiet");
    if !opts.packages.is_empty() {
        cmd.arg(format!("--include={}", opts.packages.join(",")));
    }
    cmd.arg(&opts.suite).arg(&out).arg(&mirror);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    progress.phase(
        &format!("mmdebstrap {} from {mirror} (a few minutes)", opts.suite),
        None,
    );
    let res = cmd.output().map_err(|e| ImageError::Tool {
        tool: "mmdebstrap",
        why: if e.kind() == std::io::ErrorKind::NotFound {
            "not installed (apt-get install mmdebstrap)".into()
        } else {
            e.to_string()
        },
    })?;
    progress.done();
    if !res.status.success() {
        let err = String::from_utf8_lossy(&res.stderr);
        let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        return Err(ImageError::Tool {
            tool: "mmdebstrap",
            why: format!("failed ({}): {tail}", res.status),
        });
    }
    let f = File::open(&out).map_err(|e| ImageError::io("open", &out, e))?;
    let (digest, size) = txn.put_blob(f, None, "mmdebstrap output")?;
    fsx::remove_tree(&work)?;
    let defaults = ImageDefaults {
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cmd: Some(vec!["bash".into()]),
        ..Default::default()
    };
    let mut config = ImageConfig::from_defaults(&defaults);
    config.created = Some(store::now_rfc3339());
    config.rootfs.diff_ids = vec![digest.to_string()];
    config.history = vec![oci::History {
        created: config.created.clone(),
        created_by: Some(format!(
            "mmdebstrap --variant={} --include={} {} {mirror}",
            opts.variant,
            opts.packages.join(","),
            opts.suite
        )),
        empty_layer: false,
    }];
    let cbytes = serde_json::to_vec(&config).map_err(|e| ImageError::Format {
        what: "config".into(),
        why: e.to_string(),
    })?;
    let cdigest = txn.put_blob_bytes(&cbytes, None, "config")?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MT_OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: oci::MT_OCI_CONFIG.into(),
            digest: cdigest.to_string(),
            size: cbytes.len() as i64,
            platform: None,
            annotations: None,
        },
        layers: vec![Descriptor {
            media_type: oci::MT_OCI_LAYER.into(),
            digest: digest.to_string(),
            size: size as i64,
            platform: None,
            annotations: None,
        }],
    };
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Format {
        what: "manifest".into(),
        why: e.to_string(),
    })?;
    let mdigest = txn.put_blob_bytes(&mbytes, None, "manifest")?;
    let rec = import::finish(
        &mut txn,
        &mbytes,
        mdigest,
        &opts.import,
        &format!("debian {} +{}", opts.suite, opts.packages.join(",")),
        progress,
    )?;
    txn.commit()?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors() {
        let d = std::env::temp_dir().join(format!("airlock-apt-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sources.list.d")).unwrap();
        std::fs::write(
            d.join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb deb-src\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(host_mirror_in(&d).unwrap(), "http://mirror.example/debian");
        std::fs::write(
            d.join("sources.list"),
            "# x\ndeb [signed-by=/k.gpg arch=amd64] http://ftp.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(host_mirror_in(&d).unwrap(), "http://ftp.example/debian");
        std::fs::remove_dir_all(&d).unwrap();
        assert!(host_mirror_in(Path::new("/nonexistent")).is_err());
        assert!(check_word("package", "python3").is_ok());
        assert!(check_word("package", "--evil").is_err());
        assert!(check_word("package", "a b").is_err());
    }
}
