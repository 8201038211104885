//! The trust policy: which tier `--trust own|experimental|untrusted`
//! picks. By default `none`, `container` and `microvm`; overridable in
//! the system file `/etc/airlock/config.toml` and the user's
//! `~/.config/airlock/config.toml` (`$XDG_CONFIG_HOME/airlock/…`), the
//! user's file winning key by key:
//!
//! ```toml
//! [trust]
//! own = "none"               # none | landlock | container | microvm
//! experimental = "container"
//! untrusted = "microvm"
//! ```
//!
//! `AIRLOCK_CONFIG_DIR` replaces `/etc/airlock` (tests use it, so the
//! machine's own file is never touched). A file that is not valid TOML,
//! has an unknown key or names an unknown tier is an error that names the
//! file and the line; a missing file is no error.

use airlock_spec::Isolation;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("{path}: {err}")]
    Read {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("trust {0:?}: own, experimental or untrusted")]
    UnknownTrust(String),
}

/// How far code is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Own,
    Experimental,
    Untrusted,
}

impl Trust {
    pub fn parse(s: &str) -> Result<Trust, ConfigError> {
        match s {
            "own" => Ok(Trust::Own),
            "experimental" => Ok(Trust::Experimental),
            "untrusted" => Ok(Trust::Untrusted),
            o => Err(ConfigError::UnknownTrust(o.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TierName {
    None,
    Landlock,
    Container,
    Microvm,
}

impl From<TierName> for Isolation {
    fn from(t: TierName) -> Isolation {
        match t {
            TierName::None => Isolation::None,
            TierName::Landlock => Isolation::Landlock,
            TierName::Container => Isolation::Container,
            TierName::Microvm => Isolation::Microvm,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustTable {
    own: Option<TierName>,
    experimental: Option<TierName>,
    untrusted: Option<TierName>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    trust: TrustTable,
}

/// The tier of each trust level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustPolicy {
    pub own: Isolation,
    pub experimental: Isolation,
    pub untrusted: Isolation,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        TrustPolicy {
            own: Isolation::None,
            experimental: Isolation::Container,
            untrusted: Isolation::Microvm,
        }
    }
}

impl TrustPolicy {
    pub fn tier(&self, t: Trust) -> Isolation {
        match t {
            Trust::Own => self.own,
            Trust::Experimental => self.experimental,
            Trust::Untrusted => self.untrusted,
        }
    }

    /// The defaults, then the system file, then the user's.
    pub fn load() -> Result<TrustPolicy, ConfigError> {
        let mut p = TrustPolicy::default();
        for f in files() {
            p.apply_file(&f)?;
        }
        Ok(p)
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    err,
                })
            }
        };
        self.apply(&text).map_err(|why| ConfigError::Parse {
            path: path.to_path_buf(),
            why,
        })
    }

    /// Applies one file's text; the error says the line.
    fn apply(&mut self, text: &str) -> Result<(), String> {
        let f: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().trim().to_string();
            match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            }
        })?;
        if let Some(t) = f.trust.own {
            self.own = t.into();
        }
        if let Some(t) = f.trust.experimental {
            self.experimental = t.into();
        }
        if let Some(t) = f.trust.untrusted {
            self.untrusted = t.into();
        }
        Ok(())
    }
}

/// The files read, in order (later wins).
pub fn files() -> Vec<PathBuf> {
    let sys = std::env::var_os("AIRLOCK_CONFIG_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/airlock"));
    let mut v = vec![sys.join("config.toml")];
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        });
    if let Some(u) = user {
        v.push(u.join("airlock/config.toml"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let mut p = TrustPolicy::default();
        assert_eq!(p.tier(Trust::Own), Isolation::None);
        assert_eq!(p.tier(Trust::Experimental), Isolation::Container);
        assert_eq!(p.tier(Trust::Untrusted), Isolation::Microvm);
        p.apply("# comment\n[trust]\nexperimental = \"microvm\"\n")
            .unwrap();
        assert_eq!(p.tier(Trust::Experimental), Isolation::Microvm);
        assert_eq!(p.tier(Trust::Own), Isolation::None);
        p.apply("").unwrap();
        assert_eq!(p.tier(Trust::Experimental), Isolation::Microvm);
    }

    #[test]
    fn errors_name_the_line() {
        let mut p = TrustPolicy::default();
        let e = p
            .apply("[trust]\nown = \"none\"\nuntrusted = \"vm\"\n")
            .unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(e.contains("microvm"), "{e}");
        let e = p.apply("[trust]\n\nparanoid = \"microvm\"\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        let e = p.apply("[trust\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        let e = p.apply("[mounts]\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        // Nothing of a bad file was applied.
        assert_eq!(p, TrustPolicy::default());
    }
}
