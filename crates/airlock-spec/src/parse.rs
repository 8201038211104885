//! Parsers for what users type on the command line.

use crate::{validate_target, Mount, MountMode, SpecError, User};
use std::path::PathBuf;
use std::time::Duration;

/// `512M`, `1G`, `1.5GiB`, `100k`, `4096` (bytes). Binary multiples: `1G` is
/// 1024³ bytes, as in docker and cgroups.
pub fn parse_size(input: &str) -> Result<u64, SpecError> {
    let bad = |why| SpecError::Size {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(bad("no number"));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad("unknown unit (use B, K, M, G or T)")),
    };
    let value: f64 = num.parse().map_err(|_| bad("not a number"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(bad("must be greater than zero"));
    }
    let bytes = value * (1u64 << shift) as f64;
    if bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    let bytes = bytes as u64;
    if bytes == 0 {
        return Err(bad("must be at least one byte"));
    }
    Ok(bytes)
}

/// `30s`, `5m`, `1h`, `1500ms`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, SpecError> {
    let bad = |why| SpecError::Duration {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| bad("too large"))?;
        if secs == 0 {
            return Err(bad("must be greater than zero"));
        }
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(bad("a number needs a unit (ms, s, m, h, d)"))?;
        if n_end == 0 {
            return Err(bad("expected a number"));
        }
        let value: f64 = rest[..n_end].parse().map_err(|_| bad("not a number"))?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_secs = match &rest[..u_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad("unknown unit (use ms, s, m, h or d)")),
        };
        rest = &rest[u_end..];
        let part = value * unit_secs;
        if !part.is_finite() || part > 1e9 {
            return Err(bad("too large"));
        }
        total += Duration::from_secs_f64(part);
    }
    if total.is_zero() {
        return Err(bad("must be greater than zero"));
    }
    Ok(total)
}

/// `SRC:DST[:ro|rw|overlay]`. `SRC` is returned as typed (the caller makes it
/// absolute against its working directory and checks it exists).
pub fn parse_mount(input: &str) -> Result<Mount, SpecError> {
    let bad = |why| SpecError::MountSyntax {
        input: input.to_string(),
        why,
    };
    let parts: Vec<&str> = input.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, MountMode::Ro),
        [s, d, m] => {
            let mode = match *m {
                "ro" => MountMode::Ro,
                "rw" => MountMode::Rw,
                "overlay" | "cow" => MountMode::Overlay,
                _ => return Err(bad("the mode must be ro, rw or overlay")),
            };
            (*s, *d, mode)
        }
        _ => return Err(bad("expected SRC:DST or SRC:DST:MODE")),
    };
    if src.is_empty() {
        return Err(bad("empty source"));
    }
    if dst.is_empty() {
        return Err(bad("empty target"));
    }
    let target = PathBuf::from(dst);
    validate_target(&target)?;
    Ok(Mount {
        source: PathBuf::from(src),
        target,
        mode,
        as_owner: false,
    })
}

/// One `--env` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvArg {
    /// `KEY=VALUE`
    Set(String, String),
    /// `KEY`: copy the host's value, if it has one.
    Copy(String),
}

pub fn parse_env(input: &str) -> Result<EnvArg, SpecError> {
    let bad = |why| SpecError::Env {
        input: input.to_string(),
        why,
    };
    if input.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let (key, value) = match input.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (input, None),
    };
    crate::validate_env_key(key).map_err(|_| {
        bad(if key.is_empty() {
            "empty variable name"
        } else {
            "a name is letters, digits and '_', not starting with a digit"
        })
    })?;
    Ok(match value {
        Some(v) => EnvArg::Set(key.to_string(), v.to_string()),
        None => EnvArg::Copy(key.to_string()),
    })
}

/// `sandbox`, `root`, `nobody`, `UID` or `UID:GID` (below 65536).
pub fn parse_user(input: &str) -> Result<User, SpecError> {
    let bad = |why| SpecError::User {
        input: input.to_string(),
        why,
    };
    let num = |s: &str| -> Result<u32, SpecError> {
        let n: u32 = s.parse().map_err(|_| bad("not a name or number"))?;
        if n >= 65536 {
            return Err(bad("ids inside the sandbox are below 65536"));
        }
        Ok(n)
    };
    match input {
        "sandbox" => Ok(User::SANDBOX),
        "root" => Ok(User::ROOT),
        "nobody" => Ok(User {
            uid: 65534,
            gid: 65534,
        }),
        _ => match input.split_once(':') {
            Some((u, g)) => Ok(User {
                uid: num(u)?,
                gid: num(g)?,
            }),
            None => {
                let u = num(input)?;
                Ok(User { uid: u, gid: u })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("100k").unwrap(), 100 * 1024);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        for bad in ["", "G", "-1G", "0", "1X", "1.2.3M", "abc", "1e400", "0.1b"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        for bad in ["", "0", "0s", "5x", "m", "-5s", "5 m", "1.5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts() {
        let m = parse_mount("./repo:/work").unwrap();
        assert_eq!(m.mode, MountMode::Ro);
        assert_eq!(m.target, PathBuf::from("/work"));
        assert_eq!(parse_mount("/a:/b:rw").unwrap().mode, MountMode::Rw);
        assert_eq!(
            parse_mount("/a:/b:overlay").unwrap().mode,
            MountMode::Overlay
        );
        for bad in [
            "/a",
            "/a:/b:xx",
            ":/b",
            "/a:",
            "/a:/proc/x",
            "/a:/w/../etc",
            "/a:b",
            "/a:/b:rw:x",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn envs() {
        assert_eq!(
            parse_env("A=1").unwrap(),
            EnvArg::Set("A".into(), "1".into())
        );
        assert_eq!(parse_env("A=").unwrap(), EnvArg::Set("A".into(), "".into()));
        assert_eq!(
            parse_env("A=b=c").unwrap(),
            EnvArg::Set("A".into(), "b=c".into())
        );
        assert_eq!(parse_env("HOME_X").unwrap(), EnvArg::Copy("HOME_X".into()));
        for bad in ["", "=1", "1A=2", "A B=1", "A-B"] {
            assert!(parse_env(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("sandbox").unwrap(), User::SANDBOX);
        assert_eq!(parse_user("root").unwrap(), User::ROOT);
        assert_eq!(
            parse_user("1234").unwrap(),
            User {
                uid: 1234,
                gid: 1234
            }
        );
        assert_eq!(parse_user("12:34").unwrap(), User { uid: 12, gid: 34 });
        for bad in ["bob", "70000", "1:x", "-1"] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
    }
}
