//! The flags of the proxy's TLS-terminating part, shared by `airlock run`
//! and `airlock create`: secrets, inspected hosts, HTTP rules and the CAs
//! trusted for upstream servers.

use airlock_spec::net::{parse_secret_arg, random_placeholder, SecretBinding, SecretValue};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Clone, Default, Debug)]
pub struct BrokerArgs {
    /// NAME@HOST[,HOST...]: inside, NAME holds a random placeholder; the
    /// egress proxy terminates TLS to those hosts (HOST or *.SUFFIX) and
    /// swaps the placeholder in request headers for the value of airlock's
    /// own environment variable NAME. Never over plain HTTP. The hosts
    /// must also be allowed (--allow-host). Repeatable.
    #[arg(long = "secret", value_name = "NAME@HOST[,HOST...]")]
    pub secret: Vec<String>,
    /// NAME@HOST[,HOST...]=PATH: as --secret, the value read from the file
    /// PATH (one trailing newline dropped). Repeatable.
    #[arg(long = "secret-file", value_name = "NAME@HOST[,HOST...]=PATH")]
    pub secret_file: Vec<String>,
    /// The egress proxy terminates TLS to NAME (or *.SUFFIX) without a
    /// secret: --allow-http rules and the Host check apply there.
    /// Repeatable.
    #[arg(long = "inspect-host", value_name = "NAME|*.SUFFIX")]
    pub inspect_host: Vec<String>,
    /// 'METHODS HOST/PATH-GLOB', e.g. 'GET,HEAD api.github.com/repos/acme/*'
    /// ("*" for any method; "*" in the path matches anything, "/" too): on
    /// a host named by some rule (its TLS is then terminated), a request
    /// passes only when one of them matches; others get a 403. Repeatable.
    #[arg(long = "allow-http", value_name = "'METHODS HOST/PATH'")]
    pub allow_http: Vec<String>,
    /// PEM certificates the egress proxy trusts, besides the system's
    /// roots, for the servers whose TLS it terminates. Repeatable.
    #[arg(long = "upstream-ca", value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
}

impl BrokerArgs {
    pub fn any(&self) -> bool {
        !(self.secret.is_empty()
            && self.secret_file.is_empty()
            && self.inspect_host.is_empty()
            && self.allow_http.is_empty()
            && self.upstream_ca.is_empty())
    }

    /// The secrets with their values (from the environment or files) and
    /// fresh placeholders. No error message carries a value.
    pub fn secrets(&self) -> Result<Vec<SecretBinding>> {
        let mut out = Vec::new();
        for s in &self.secret {
            let (name, hosts) = parse_secret_arg(s)?;
            let Some(v) = std::env::var_os(&name) else {
                bail!("--secret {s}: airlock's environment has no variable {name} (set it, or use --secret-file)");
            };
            let Ok(value) = v.into_string() else {
                bail!("--secret {s}: the value of {name} is not UTF-8");
            };
            out.push(SecretBinding {
                name,
                hosts,
                placeholder: random_placeholder().context("a placeholder for a secret")?,
                value: SecretValue(value),
            });
        }
        for s in &self.secret_file {
            let Some((spec, path)) = s.split_once('=') else {
                bail!("--secret-file {s:?}: expected NAME@HOST[,HOST...]=PATH");
            };
            let (name, hosts) = parse_secret_arg(spec)?;
            let bytes = std::fs::read(path)
                .with_context(|| format!("--secret-file {name}: cannot read {path}"))?;
            let Ok(mut value) = String::from_utf8(bytes) else {
                bail!("--secret-file {name}: {path} is not UTF-8 text");
            };
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            out.push(SecretBinding {
                name,
                hosts,
                placeholder: random_placeholder().context("a placeholder for a secret")?,
                value: SecretValue(value),
            });
        }
        Ok(out)
    }

    pub fn upstream_ca_pem(&self) -> Result<Vec<String>> {
        self.upstream_ca
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("--upstream-ca: cannot read {}", p.display()))
            })
            .collect()
    }

    /// Puts all of it into a network.
    pub fn apply(&self, n: &mut airlock_spec::Network) -> Result<()> {
        n.secrets = self.secrets()?;
        n.inspect = self.inspect_host.clone();
        n.allow_http = self.allow_http.clone();
        n.upstream_ca = self.upstream_ca_pem()?;
        Ok(())
    }

    /// The API's form (the values go to the service once, at creation).
    pub fn api_fields(&self, net: &mut serde_json::Value) -> Result<()> {
        let secrets: Vec<serde_json::Value> = self
            .secrets()?
            .into_iter()
            .map(|s| serde_json::json!({"name": s.name, "hosts": s.hosts, "value": s.value.0}))
            .collect();
        net["secrets"] = serde_json::json!(secrets);
        net["inspect"] = serde_json::json!(self.inspect_host);
        net["allow_http"] = serde_json::json!(self.allow_http);
        net["upstream_ca"] = serde_json::json!(self.upstream_ca_pem()?);
        Ok(())
    }
}

/// Notes for secrets bound to names that no `--allow-host` rule lets
/// through (on 443): the value would never be used.
pub fn unreachable_secret_hosts(n: &airlock_spec::Network) -> Vec<String> {
    let Ok(p) = airlock_spec::net::Policy::compile(n) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in &n.secrets {
        for h in &s.hosts {
            if h.starts_with("*.") {
                continue;
            }
            let Ok(airlock_spec::net::Host::Name(name)) = airlock_spec::net::canonical_host(h)
            else {
                continue;
            };
            if p.check_name(&name, 443).is_err() {
                out.push(format!(
                    "--secret {}@{h}: no --allow-host rule lets the sandbox reach {name}:443, so the secret is never used there",
                    s.name
                ));
            }
        }
    }
    out
}
