//! `airlock image pull`: the OCI distribution API v2 through `oci-client`
//! (token auth via `WWW-Authenticate`, basic credentials, manifest lists
//! resolved to linux/amd64), with every digest checked here again.

use crate::digest::{Digest, HashWriter};
use crate::error::{ImageError, Result};
use crate::import::{self, ImportOptions};
use crate::oci::{self, Doc};
use crate::store::{self, ImageRecord, Store, Txn};
use crate::Progress;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// How to reach the registry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PullOptions {
    pub import: ImportOptions,
    /// Username and password (e.g. from `--username` + `--password-stdin`).
    pub credentials: Option<(String, String)>,
    /// Plain HTTP, for loopback registries only.
    pub insecure: bool,
    /// Registries (`host[:port]`) to reach over plain HTTP, named explicitly.
    pub insecure_registries: Vec<String>,
    /// Docker's config.json to read credentials from (default
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
}

impl PullOptions {
    pub fn new(name: &str) -> PullOptions {
        PullOptions {
            import: ImportOptions::new(name),
            credentials: None,
            insecure: false,
            insecure_registries: Vec::new(),
            docker_config: None,
        }
    }
}

/// Parses a reference the way docker does (`debian` = `docker.io/library/debian:latest`).
pub fn parse_reference(s: &str) -> Result<Reference> {
    s.parse::<Reference>()
        .map_err(|e| ImageError::BadReference {
            input: s.to_string(),
            why: e.to_string(),
        })
}

fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(registry)
    };
    if host == "localhost" {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Credentials for `registry` from docker's config.json (`auths`), if any.
pub fn docker_config_auth(
    path: Option<&PathBuf>,
    registry: &str,
) -> Result<Option<(String, String)>> {
    let p = match path {
        Some(p) => p.clone(),
        None => match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => PathBuf::from(d).join("config.json"),
            None => match std::env::var_os("HOME") {
                Some(h) => PathBuf::from(h).join(".docker/config.json"),
                None => return Ok(None),
            },
        },
    };
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("read", p, e)),
    };
    let cerr = |why: String| ImageError::Credentials {
        registry: registry.to_string(),
        why,
    };
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| cerr(format!("{}: {e}", p.display())))?;
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let docker_hub = ["index.docker.io", "docker.io", "registry-1.docker.io"].contains(&registry);
    for (k, entry) in auths {
        let host = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        let matches = host == registry
            || (docker_hub
                && ["index.docker.io", "docker.io", "registry-1.docker.io"].contains(&host));
        if !matches {
            continue;
        }
        if let Some(a) = entry.get("auth").and_then(|a| a.as_str()) {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|e| cerr(format!("{}: bad auth: {e}", p.display())))?;
            let s = String::from_utf8(raw)
                .map_err(|_| cerr(format!("{}: auth is not UTF-8", p.display())))?;
            let (u, pw) = s
                .split_once(':')
                .ok_or_else(|| cerr(format!("{}: auth is not user:password", p.display())))?;
            return Ok(Some((u.to_string(), pw.to_string())));
        }
        if let (Some(u), Some(pw)) = (
            entry.get("username").and_then(|x| x.as_str()),
            entry.get("password").and_then(|x| x.as_str()),
        ) {
            return Ok(Some((u.to_string(), pw.to_string())));
        }
    }
    Ok(None)
}

/// Pulls `reference` into the store as `opts.import.name`.
pub fn pull(
    store: &Store,
    reference: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    store::validate_name(&opts.import.name)?;
    let r = parse_reference(reference)?;
    let registry = r.resolve_registry().to_string();
    let plain = if opts
        .insecure_registries
        .iter()
        .any(|x| *x == registry || *x == r.registry())
    {
        true
    } else if opts.insecure {
        if !is_loopback(&registry) {
            return Err(ImageError::Insecure { registry });
        }
        true
    } else {
        false
    };
    let protocol = if plain {
        ClientProtocol::HttpsExcept(vec![registry.clone()])
    } else {
        ClientProtocol::Https
    };
    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => docker_config_auth(opts.docker_config.as_ref(), &registry)?,
    };
    let auth = match creds {
        Some((u, p)) => RegistryAuth::Basic(u, p),
        None => RegistryAuth::Anonymous,
    };
    let config = ClientConfig {
        protocol,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(300)),
        ..Default::default()
    };
    let client = Client::try_from(config)
        .map_err(|e| rerr(&registry, format!("cannot set up the client: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ImageError::io("start runtime", "tokio", e))?;
    let mut txn = store.begin()?;
    let (bytes, digest) = rt.block_on(fetch(
        &client, &r, &auth, &registry, &mut txn, opts, progress,
    ))?;
    drop(rt);
    let rec = import::finish(
        &mut txn,
        &bytes,
        digest,
        &opts.import,
        &format!("pull {reference}"),
        progress,
    )?;
    txn.commit()?;
    Ok(rec)
}

fn rerr(registry: &str, why: String) -> ImageError {
    ImageError::Registry {
        registry: registry.to_string(),
        why,
    }
}

/// One line for a client error, with its causes.
fn describe(e: &oci_client::errors::OciDistributionError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    if matches!(
        e,
        oci_client::errors::OciDistributionError::UnauthorizedError { .. }
    ) {
        s.push_str(" (the registry refused the token or credentials)");
    }
    s.replace('\n', " ")
}

async fn manifest(
    client: &Client,
    r: &Reference,
    auth: &RegistryAuth,
    registry: &str,
) -> Result<(Vec<u8>, Digest)> {
    use oci_client::errors::{DigestError, OciDistributionError};
    let (body, got) = client
        .pull_manifest_raw(r, auth, oci::ACCEPTED_MANIFESTS)
        .await
        .map_err(|e| match e {
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => ImageError::DigestMismatch {
                what: format!("manifest of {r}"),
                expected,
                actual,
            },
            e => rerr(
                registry,
                format!("cannot fetch the manifest of {r}: {}", describe(&e)),
            ),
        })?;
    let body = body.to_vec();
    let actual = Digest::of(&body);
    if let Some(want) = r.digest() {
        if want != actual.as_str() {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {r}"),
                expected: want.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    if got.starts_with("sha256:") && got != actual.as_str() {
        return Err(ImageError::DigestMismatch {
            what: format!("manifest of {r} (against the registry's Docker-Content-Digest)"),
            expected: got,
            actual: actual.to_string(),
        });
    }
    Ok((body, actual))
}

async fn fetch(
    client: &Client,
    r: &Reference,
    auth: &RegistryAuth,
    registry: &str,
    txn: &mut Txn<'_>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<(Vec<u8>, Digest)> {
    // Authenticate first: a refused token or password is an error here,
    // not an anonymous retry.
    client
        .auth(r, auth, RegistryOperation::Pull)
        .await
        .map_err(|e| rerr(registry, format!("authentication failed: {}", describe(&e))))?;
    let (mut bytes, mut digest) = manifest(client, r, auth, registry).await?;
    for _ in 0..4 {
        match oci::parse_doc(&bytes, &format!("manifest of {r}"))? {
            Doc::Manifest(m) => {
                txn.put_blob_bytes(&bytes, Some(&digest), "manifest")?;
                let mut descs = vec![m.config.clone()];
                descs.extend(m.layers.iter().cloned());
                for d in descs {
                    let dg = d.digest(&format!("manifest of {r}"))?;
                    if txn.has_blob(&dg) {
                        continue;
                    }
                    blob(client, r, registry, &d, &dg, txn, opts, progress).await?;
                }
                return Ok((bytes, digest));
            }
            Doc::Index(i) => {
                let d = oci::pick_platform(&i, &format!("index of {r}"))?
                    .digest(&format!("index of {r}"))?;
                let child = r.clone_with_digest(d.to_string());
                let (b, dg) = manifest(client, &child, auth, registry).await?;
                if dg != d {
                    return Err(ImageError::DigestMismatch {
                        what: format!("manifest of {child}"),
                        expected: d.to_string(),
                        actual: dg.to_string(),
                    });
                }
                bytes = b;
                digest = dg;
            }
        }
    }
    Err(rerr(registry, "indexes nested too deep".into()))
}

#[allow(clippy::too_many_arguments)]
async fn blob(
    client: &Client,
    r: &Reference,
    registry: &str,
    d: &oci::Descriptor,
    dg: &Digest,
    txn: &mut Txn<'_>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let part = txn.blob_part();
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&part)
        .map_err(|e| ImageError::io("create", &part, e))?;
    let mut w = HashWriter::new(io::BufWriter::new(f));
    let max = (d.size.max(0) as u64).min(opts.import.limits.max_bytes);
    progress.phase(&format!("pulling {}", dg.short()), Some(max));
    let mut stream = client
        .pull_blob_stream(
            r,
            &oci_client::manifest::OciDescriptor {
                media_type: d.media_type.clone(),
                digest: d.digest.clone(),
                size: d.size,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            rerr(
                registry,
                format!("cannot fetch blob {dg}: {}", describe(&e)),
            )
        })?;
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| rerr(registry, format!("blob {dg}: {e}")))?;
        n += chunk.len() as u64;
        if n > max {
            return Err(ImageError::Limit {
                what: format!("blob {dg} from {registry}"),
                limit: max,
                hint: "its size in the manifest (or --max-size)",
            });
        }
        w.write_all(&chunk)
            .map_err(|e| ImageError::io("write", &part, e))?;
        progress.advance(chunk.len() as u64);
    }
    let (bw, got, _) = w.finish();
    bw.into_inner()
        .map_err(|e| ImageError::io("write", &part, e.into_error()))?;
    progress.done();
    txn.adopt_blob(&part, got, Some(dg), &format!("blob {} of {r}", dg.short()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn docker_config() {
        let d = std::env::temp_dir().join(format!("airlock-dc-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("config.json");
        std::fs::write(&p, r#"{"auths":{"127.0.0.1:5000":{"auth":"dTpw"},"https://index.docker.io/v1/":{"username":"a","password":"b"}}}"#).unwrap();
        assert_eq!(
            docker_config_auth(Some(&p), "127.0.0.1:5000").unwrap(),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(
            docker_config_auth(Some(&p), "index.docker.io").unwrap(),
            Some(("a".into(), "b".into()))
        );
        assert_eq!(docker_config_auth(Some(&p), "other:1").unwrap(), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
