//! The OCI (and docker schema 2) documents we read and write.

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::store::ImageDefaults;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type we accept from a registry.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    MT_OCI_MANIFEST,
    MT_OCI_INDEX,
    MT_DOCKER_MANIFEST,
    MT_DOCKER_LIST,
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn digest(&self, what: &str) -> Result<Digest> {
        Digest::parse(&self.digest).map_err(|_| ImageError::Format {
            what: what.to_string(),
            why: format!("unsupported or malformed digest {:?}", self.digest),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest-like document: an image manifest or an index / manifest list.
#[derive(Debug)]
pub enum Doc {
    Manifest(Manifest),
    Index(Index),
}

pub fn parse_doc(bytes: &[u8], what: &str) -> Result<Doc> {
    let fmt = |why: String| ImageError::Format {
        what: what.to_string(),
        why,
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| fmt(format!("not JSON: {e}")))?;
    let mt = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    let is_index = mt == MT_OCI_INDEX
        || mt == MT_DOCKER_LIST
        || (mt.is_empty() && v.get("manifests").is_some());
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err(fmt(
            "schemaVersion is not 2 (docker schema 1 is not supported)".into(),
        ));
    }
    if is_index {
        Ok(Doc::Index(
            serde_json::from_value(v).map_err(|e| fmt(format!("bad index: {e}")))?,
        ))
    } else if mt.is_empty() || mt == MT_OCI_MANIFEST || mt == MT_DOCKER_MANIFEST {
        Ok(Doc::Manifest(
            serde_json::from_value(v).map_err(|e| fmt(format!("bad manifest: {e}")))?,
        ))
    } else {
        Err(fmt(format!("unsupported media type {mt:?}")))
    }
}

/// The entry of an index for linux/amd64 (or the only image entry when no
/// platform is given).
pub fn pick_platform<'a>(idx: &'a Index, what: &str) -> Result<&'a Descriptor> {
    let images: Vec<&Descriptor> = idx
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_none_or(|p| !(p.os == "unknown" && p.architecture == "unknown"))
        })
        .collect();
    if let Some(d) = images.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    }) {
        return Ok(d);
    }
    match images.as_slice() {
        // No platform anywhere (a `docker save` of several images): the first.
        [first, ..] if images.iter().all(|d| d.platform.is_none()) => Ok(first),
        _ => Err(ImageError::Format {
            what: what.to_string(),
            why: format!(
                "no linux/amd64 image in it (it has: {})",
                idx.manifests
                    .iter()
                    .map(|d| d
                        .platform
                        .as_ref()
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                        .unwrap_or_else(|| "no platform".into()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8], what: &str) -> Result<ImageConfig> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::Format {
            what: what.to_string(),
            why: format!("bad image config: {e}"),
        })
    }

    pub fn diff_ids(&self, what: &str) -> Result<Vec<Digest>> {
        self.rootfs
            .diff_ids
            .iter()
            .map(|d| {
                Digest::parse(d).map_err(|_| ImageError::Format {
                    what: what.to_string(),
                    why: format!("unsupported diff_id {d:?}"),
                })
            })
            .collect()
    }

    pub fn defaults(&self) -> ImageDefaults {
        let c = self.config.clone().unwrap_or_default();
        ImageDefaults {
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            labels: c.labels.unwrap_or_default(),
        }
    }

    pub fn from_defaults(d: &ImageDefaults) -> ImageConfig {
        ImageConfig {
            created: None,
            architecture: "amd64".into(),
            os: "linux".into(),
            config: Some(ContainerConfig {
                env: (!d.env.is_empty()).then(|| d.env.clone()),
                working_dir: d.working_dir.clone(),
                user: d.user.clone(),
                entrypoint: d.entrypoint.clone(),
                cmd: d.cmd.clone(),
                labels: (!d.labels.is_empty()).then(|| d.labels.clone()),
            }),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: Vec::new(),
            },
            history: Vec::new(),
        }
    }
}

/// One entry of a `docker save` archive's `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DockerSaveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(plats: &[Option<(&str, &str)>]) -> Index {
        Index {
            schema_version: 2,
            media_type: None,
            manifests: plats
                .iter()
                .enumerate()
                .map(|(i, p)| Descriptor {
                    media_type: MT_OCI_MANIFEST.into(),
                    digest: format!("sha256:{i:064x}"),
                    size: 1,
                    platform: p.map(|(os, arch)| Platform {
                        architecture: arch.into(),
                        os: os.into(),
                        variant: None,
                    }),
                    annotations: None,
                })
                .collect(),
        }
    }

    #[test]
    fn platforms() {
        let pick = |i: &Index| pick_platform(i, "t").map(|d| d.digest.clone());
        let i = idx(&[
            Some(("linux", "arm64")),
            Some(("unknown", "unknown")),
            Some(("linux", "amd64")),
        ]);
        assert_eq!(pick(&i).unwrap(), format!("sha256:{:064x}", 2));
        assert_eq!(
            pick(&idx(&[None, None])).unwrap(),
            format!("sha256:{:064x}", 0)
        );
        let e = pick(&idx(&[
            Some(("linux", "arm64")),
            Some(("windows", "amd64")),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("linux/arm64, windows/amd64"), "{e}");
    }

    #[test]
    fn documents() {
        assert!(matches!(
            parse_doc(br#"{"schemaVersion":2,"manifests":[]}"#, "t"),
            Ok(Doc::Index(_))
        ));
        assert!(parse_doc(br#"{"schemaVersion":1,"fsLayers":[]}"#, "t")
            .unwrap_err()
            .to_string()
            .contains("schema 1"));
        assert!(parse_doc(b"nope", "t").is_err());
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(matches!(parse_doc(m, "t"), Ok(Doc::Manifest(_))));
    }
}
