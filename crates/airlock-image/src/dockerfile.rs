//! The Dockerfile front end: parser directives (`# escape=`), comments,
//! line continuations, and the instructions FROM, RUN, COPY, ADD, ENV, ARG,
//! WORKDIR, USER, ENTRYPOINT, CMD, LABEL. Anything else is an error naming
//! the instruction and its line. Also `.dockerignore` and the word
//! expansion (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`).

use std::collections::HashMap;

/// A command: `["exec", "form"]` or a shell string (`/bin/sh -c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdForm {
    Exec(Vec<String>),
    Shell(String),
}

impl CmdForm {
    pub fn argv(&self) -> Vec<String> {
        match self {
            CmdForm::Exec(v) => v.clone(),
            CmdForm::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inst {
    From {
        image: String,
        alias: Option<String>,
    },
    Run(CmdForm),
    /// COPY (`add: false`) and ADD (`add: true`); words still unexpanded.
    Copy {
        add: bool,
        srcs: Vec<String>,
        dest: String,
        chown: Option<String>,
        chmod: Option<String>,
    },
    /// Raw `KEY=VALUE` words (values unexpanded, quotes kept).
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Workdir(String),
    User(String),
    Entrypoint(CmdForm),
    Cmd(CmdForm),
    Label(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction as written (continuations joined).
    pub text: String,
    pub inst: Inst,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub escape: char,
    pub instructions: Vec<Instruction>,
}

/// A parse error: line and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub why: String,
}

fn perr<T>(line: usize, why: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        why: why.into(),
    })
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut i = 0;
    // Parser directives: only at the very top, `# key=value`.
    while i < lines.len() {
        let l = lines[i].trim();
        let Some(rest) = l.strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty() || k.contains(char::is_whitespace) {
            break;
        }
        let v = v.trim();
        match k.as_str() {
            "escape" => {
                escape = match v {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return perr(
                            i + 1,
                            format!("invalid escape directive {v:?}: must be \\ or `"),
                        )
                    }
                }
            }
            "syntax" | "check" => {}
            _ => break,
        }
        i += 1;
    }
    let mut out = Vec::new();
    while i < lines.len() {
        let start = i;
        let first = lines[i].trim_start();
        i += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        // Join continuation lines (comment and empty lines inside are skipped).
        let mut logical = String::new();
        let mut cur = first.to_string();
        loop {
            let t = cur.trim_end();
            if let Some(body) = t.strip_suffix(escape) {
                logical.push_str(body);
                // Next non-comment line.
                let mut next = None;
                while i < lines.len() {
                    let n = lines[i].trim_start();
                    i += 1;
                    if n.starts_with('#') || n.is_empty() {
                        continue;
                    }
                    next = Some(n.to_string());
                    break;
                }
                match next {
                    Some(n) => cur = n,
                    None => break,
                }
            } else {
                logical.push_str(t);
                break;
            }
        }
        out.push(parse_instruction(start + 1, &logical, escape)?);
    }
    if out.is_empty() {
        return perr(1, "the Dockerfile has no instructions");
    }
    Ok(Dockerfile {
        escape,
        instructions: out,
    })
}

fn parse_instruction(line: usize, text: &str, escape: char) -> Result<Instruction, ParseError> {
    let (kw, rest) = match text.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim()),
        None => (text, ""),
    };
    let kwu = kw.to_ascii_uppercase();
    let need = |what: &str| -> Result<(), ParseError> {
        if rest.is_empty() {
            perr(line, format!("{kwu} needs {what}"))
        } else {
            Ok(())
        }
    };
    let (flags, args) = take_flags(rest);
    let no_flags = |allowed: &[&str]| -> Result<(), ParseError> {
        for (f, _) in &flags {
            if !allowed.contains(&f.as_str()) {
                return perr(line, format!("{kwu} does not support the flag --{f}"));
            }
        }
        Ok(())
    };
    let flag = |name: &str| {
        flags
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
    };
    let inst = match kwu.as_str() {
        "FROM" => {
            no_flags(&["platform"])?;
            if let Some(p) = flag("platform") {
                if p != "linux/amd64" {
                    return perr(line, format!("FROM --platform={p}: only linux/amd64 is supported"));
                }
            }
            let w: Vec<&str> = args.split_whitespace().collect();
            match w.as_slice() {
                [img] => Inst::From {
                    image: img.to_string(),
                    alias: None,
                },
                [img, as_, alias] if as_.eq_ignore_ascii_case("as") => Inst::From {
                    image: img.to_string(),
                    alias: Some(alias.to_string()),
                },
                _ => return perr(line, "FROM takes IMAGE [AS NAME]"),
            }
        }
        "RUN" => {
            no_flags(&[])?;
            need("a command")?;
            if args.contains("<<") && args.trim_start().starts_with("<<") {
                return perr(line, "RUN heredocs are not supported");
            }
            Inst::Run(cmd_form(args))
        }
        "CMD" => {
            no_flags(&[])?;
            need("a command")?;
            Inst::Cmd(cmd_form(args))
        }
        "ENTRYPOINT" => {
            no_flags(&[])?;
            need("a command")?;
            Inst::Entrypoint(cmd_form(args))
        }
        "COPY" | "ADD" => {
            if flag("from").is_some() {
                return perr(line, format!("{kwu} --from (multi-stage builds) is not supported"));
            }
            no_flags(&["chown", "chmod", "link"])?;
            let words = match json_array(args) {
                Some(v) => v,
                None => args.split_whitespace().map(String::from).collect(),
            };
            if words.len() < 2 {
                return perr(line, format!("{kwu} needs at least one source and a destination"));
            }
            if words.iter().any(|w| w.starts_with("<<")) {
                return perr(line, format!("{kwu} heredocs are not supported"));
            }
            let (dest, srcs) = match words.split_last() {
                Some((d, s)) => (d.clone(), s.to_vec()),
                None => return perr(line, "no destination"),
            };
            Inst::Copy {
                add: kwu == "ADD",
                srcs,
                dest,
                chown: flag("chown"),
                chmod: flag("chmod"),
            }
        }
        "ENV" => {
            no_flags(&[])?;
            need("KEY=VALUE")?;
            Inst::Env(name_values(line, args, escape, true)?)
        }
        "LABEL" => {
            no_flags(&[])?;
            need("KEY=VALUE")?;
            Inst::Label(name_values(line, args, escape, false)?)
        }
        "ARG" => {
            no_flags(&[])?;
            need("a NAME[=default]")?;
            let mut v = Vec::new();
            for w in split_words(args, escape) {
                match w.split_once('=') {
                    Some((k, d)) => v.push((check_key(line, k)?, Some(d.to_string()))),
                    None => v.push((check_key(line, &w)?, None)),
                }
            }
            Inst::Arg(v)
        }
        "WORKDIR" => {
            no_flags(&[])?;
            need("a directory")?;
            Inst::Workdir(args.to_string())
        }
        "USER" => {
            no_flags(&[])?;
            need("a user")?;
            Inst::User(args.to_string())
        }
        _ => {
            return perr(
                line,
                format!(
                    "unsupported instruction {kwu} (supported: FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, ENTRYPOINT, CMD, LABEL)"
                ),
            )
        }
    };
    Ok(Instruction {
        line,
        text: text.to_string(),
        inst,
    })
}

fn check_key(line: usize, k: &str) -> Result<String, ParseError> {
    if k.is_empty() || k.contains(['"', '\'', '$']) {
        return perr(line, format!("invalid name {k:?}"));
    }
    Ok(k.to_string())
}

/// Leading `--name=value` flags.
fn take_flags(s: &str) -> (Vec<(String, String)>, &str) {
    let mut flags = Vec::new();
    let mut rest = s;
    while let Some(r) = rest.strip_prefix("--") {
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        let f = &r[..end];
        match f.split_once('=') {
            Some((k, v)) => flags.push((k.to_ascii_lowercase(), v.to_string())),
            None => flags.push((f.to_ascii_lowercase(), String::new())),
        }
        rest = r[end..].trim_start();
    }
    (flags, rest)
}

fn json_array(s: &str) -> Option<Vec<String>> {
    if !s.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(s).ok()
}

fn cmd_form(s: &str) -> CmdForm {
    match json_array(s) {
        Some(v) => CmdForm::Exec(v),
        None => CmdForm::Shell(s.to_string()),
    }
}

/// `KEY=VALUE ...` pairs (values unexpanded, quotes kept); with `legacy`,
/// also `KEY VALUE WITH SPACES`.
fn name_values(
    line: usize,
    s: &str,
    escape: char,
    legacy: bool,
) -> Result<Vec<(String, String)>, ParseError> {
    let words = split_words(s, escape);
    if let Some(first) = words.first() {
        if !first.contains('=') {
            if !legacy {
                return perr(line, format!("expected KEY=VALUE, got {first:?}"));
            }
            let (k, v) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
            if v.trim().is_empty() {
                return perr(line, format!("ENV {k} needs a value (ENV KEY=VALUE)"));
            }
            return Ok(vec![(check_key(line, k)?, v.trim().to_string())]);
        }
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return perr(line, format!("expected KEY=VALUE, got {w:?}"));
        };
        let k = if k.len() >= 2 && k.starts_with('"') && k.ends_with('"') {
            k[1..k.len() - 1].to_string()
        } else {
            k.to_string()
        };
        out.push((check_key(line, &k)?, v.to_string()));
    }
    Ok(out)
}

/// Splits on whitespace outside quotes; quotes and escapes are kept.
pub fn split_words(s: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c == escape && quote != Some('\'') {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            any = true;
            continue;
        }
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c);
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.push(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Expands variables in one word and removes its quotes: `$V`, `${V}`,
/// `${V:-default}`, `${V:+alt}`; nothing inside single quotes; the escape
/// character makes the next character literal.
pub fn expand(word: &str, vars: &HashMap<String, String>, escape: char) -> Result<String, String> {
    let cs: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut dq = false;
    while i < cs.len() {
        let c = cs[i];
        if c == escape {
            if let Some(&n) = cs.get(i + 1) {
                if dq && !['$', '"', escape].contains(&n) {
                    out.push(c);
                }
                out.push(n);
                i += 2;
            } else {
                out.push(c);
                i += 1;
            }
            continue;
        }
        if c == '\'' && !dq {
            let end = cs[i + 1..]
                .iter()
                .position(|&x| x == '\'')
                .ok_or("unterminated single quote")?;
            out.extend(&cs[i + 1..i + 1 + end]);
            i += end + 2;
            continue;
        }
        if c == '"' {
            dq = !dq;
            i += 1;
            continue;
        }
        if c == '$' {
            if cs.get(i + 1) == Some(&'{') {
                let end = cs[i + 2..]
                    .iter()
                    .position(|&x| x == '}')
                    .ok_or("unterminated ${")?;
                let inner: String = cs[i + 2..i + 2 + end].iter().collect();
                i += end + 3;
                let (name, op, arg) = if let Some((n, a)) = inner.split_once(":-") {
                    (n.to_string(), "-", a.to_string())
                } else if let Some((n, a)) = inner.split_once(":+") {
                    (n.to_string(), "+", a.to_string())
                } else {
                    (inner.clone(), "", String::new())
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("unsupported variable expression ${{{inner}}}"));
                }
                let val = vars.get(&name).filter(|v| !v.is_empty());
                match op {
                    "-" => match val {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&expand(&arg, vars, escape)?),
                    },
                    "+" => {
                        if val.is_some() {
                            out.push_str(&expand(&arg, vars, escape)?)
                        }
                    }
                    _ => out.push_str(vars.get(&name).map(String::as_str).unwrap_or("")),
                }
                continue;
            }
            let mut j = i + 1;
            while j < cs.len() && (cs[j].is_ascii_alphanumeric() || cs[j] == '_') {
                j += 1;
            }
            if j == i + 1 {
                out.push('$');
                i += 1;
                continue;
            }
            let name: String = cs[i + 1..j].iter().collect();
            out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    if dq {
        return Err("unterminated double quote".into());
    }
    Ok(out)
}

/// `.dockerignore` rules: patterns with `*`, `?`, `[...]`, `**`, and `!`
/// exceptions; the last matching rule wins; a pattern that matches a
/// directory also excludes what is inside it.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for l in text.lines() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (neg, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let comps: Vec<String> = p
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(String::from)
                .collect();
            if !comps.is_empty() {
                rules.push((neg, comps));
            }
        }
        Ignore { rules }
    }

    /// Whether the context-relative path `rel` (`a/b/c`) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let mut ex = false;
        for (neg, pat) in &self.rules {
            let p: Vec<&str> = pat.iter().map(String::as_str).collect();
            // The path itself or one of its parents.
            let hit = (1..=parts.len()).any(|n| match_path(&p, &parts[..n]));
            if hit {
                ex = !neg;
            }
        }
        ex
    }
}

/// Matches path components against pattern components (`**` = any number
/// of components).
pub fn match_path(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|k| match_path(rest, &path[k..])),
        Some((p, rest)) => match path.split_first() {
            Some((c, prest)) => glob(p, c) && match_path(rest, prest),
            None => false,
        },
    }
}

/// One component: `*`, `?`, `[abc]`, `[a-z]`, `[^x]`, `\x`.
pub fn glob(p: &str, s: &str) -> bool {
    let p: Vec<char> = p.chars().collect();
    let s: Vec<char> = s.chars().collect();
    glob_at(&p, &s)
}

fn glob_at(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|k| glob_at(&p[1..], &s[k..])),
        Some('?') => !s.is_empty() && glob_at(&p[1..], &s[1..]),
        Some('[') => {
            let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|e| e + 1) else {
                return s.first() == Some(&'[') && glob_at(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let mut set = &p[1..end];
            let neg = matches!(set.first(), Some('^') | Some('!'));
            if neg {
                set = &set[1..];
            }
            let mut ok = false;
            let mut k = 0;
            while k < set.len() {
                if k + 2 < set.len() && set[k + 1] == '-' {
                    ok |= set[k] <= c && c <= set[k + 2];
                    k += 3;
                } else {
                    ok |= set[k] == c;
                    k += 1;
                }
            }
            ok != neg && glob_at(&p[end + 1..], &s[1..])
        }
        Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob_at(&p[2..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob_at(&p[1..], &s[1..]),
    }
}

/// Whether a COPY source has glob characters.
pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Inst {
        let d = parse(text).unwrap();
        d.instructions[0].inst.clone()
    }

    fn err(text: &str) -> ParseError {
        parse(text).unwrap_err()
    }

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn from_forms() {
        assert_eq!(
            one("FROM debian:bookworm"),
            Inst::From {
                image: "debian:bookworm".into(),
                alias: None
            }
        );
        assert_eq!(
            one("from host AS base"),
            Inst::From {
                image: "host".into(),
                alias: Some("base".into())
            }
        );
        assert_eq!(
            one("FROM --platform=linux/amd64 x"),
            Inst::From {
                image: "x".into(),
                alias: None
            }
        );
        assert!(err("FROM --platform=linux/arm64 x")
            .why
            .contains("linux/amd64"));
        assert!(err("FROM a b").why.contains("FROM takes"));
        assert!(err("FROM").why.contains("FROM takes"));
    }

    #[test]
    fn run_cmd_entrypoint_forms() {
        assert_eq!(
            one("RUN echo hi"),
            Inst::Run(CmdForm::Shell("echo hi".into()))
        );
        assert_eq!(
            one(r#"RUN ["/bin/echo", "a b"]"#),
            Inst::Run(CmdForm::Exec(vec!["/bin/echo".into(), "a b".into()]))
        );
        // Not valid JSON: shell form, as docker does.
        assert_eq!(
            one("RUN [ -f x ] && echo y"),
            Inst::Run(CmdForm::Shell("[ -f x ] && echo y".into()))
        );
        assert_eq!(
            one(r#"CMD ["python3"]"#),
            Inst::Cmd(CmdForm::Exec(vec!["python3".into()]))
        );
        assert_eq!(
            one("ENTRYPOINT exec top"),
            Inst::Entrypoint(CmdForm::Shell("exec top".into()))
        );
        assert_eq!(
            CmdForm::Shell("x".into()).argv(),
            vec!["/bin/sh", "-c", "x"]
        );
        assert!(err("RUN").why.contains("RUN needs a command"));
        assert!(err("CMD").why.contains("CMD needs"));
        assert!(err("ENTRYPOINT").why.contains("ENTRYPOINT needs"));
        assert!(err("RUN --mount=type=cache,target=/x make")
            .why
            .contains("--mount"));
        assert!(err("RUN <<EOF\necho\nEOF").why.contains("heredoc"));
    }

    #[test]
    fn copy_add() {
        assert_eq!(
            one("COPY --chown=1000:1000 --chmod=755 a b /dst/"),
            Inst::Copy {
                add: false,
                srcs: vec!["a".into(), "b".into()],
                dest: "/dst/".into(),
                chown: Some("1000:1000".into()),
                chmod: Some("755".into())
            }
        );
        assert_eq!(
            one(r#"ADD ["a file", "/d"]"#),
            Inst::Copy {
                add: true,
                srcs: vec!["a file".into()],
                dest: "/d".into(),
                chown: None,
                chmod: None
            }
        );
        assert!(err("COPY onlyone").why.contains("at least one source"));
        assert!(err("COPY --from=builder /a /b").why.contains("multi-stage"));
        assert!(err("COPY --nope a b").why.contains("--nope"));
    }

    #[test]
    fn env_label_arg() {
        assert_eq!(
            one("ENV A=1 B=\"two words\""),
            Inst::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into())
            ])
        );
        assert_eq!(
            one("ENV A legacy value"),
            Inst::Env(vec![("A".into(), "legacy value".into())])
        );
        assert!(err("ENV A").why.contains("needs a value"));
        assert_eq!(
            one("LABEL a=b \"c d\"=e"),
            Inst::Label(vec![("a".into(), "b".into()), ("c d".into(), "e".into())])
        );
        assert!(err("LABEL justaword").why.contains("KEY=VALUE"));
        assert_eq!(
            one("ARG V=1 W"),
            Inst::Arg(vec![("V".into(), Some("1".into())), ("W".into(), None)])
        );
        assert!(err("ARG").why.contains("ARG needs"));
        assert_eq!(one("WORKDIR /app"), Inst::Workdir("/app".into()));
        assert!(err("WORKDIR").why.contains("WORKDIR needs"));
        assert_eq!(one("USER 1000:1000"), Inst::User("1000:1000".into()));
        assert!(err("USER").why.contains("USER needs"));
    }

    #[test]
    fn unsupported_names_line() {
        let e = err("FROM host\n\n# c\nEXPOSE 80\n");
        assert_eq!(e.line, 4);
        assert!(e.why.contains("unsupported instruction EXPOSE"), "{e:?}");
        for k in [
            "VOLUME /x",
            "HEALTHCHECK NONE",
            "ONBUILD RUN x",
            "SHELL [\"bash\"]",
            "STOPSIGNAL 9",
            "MAINTAINER me",
        ] {
            let e = err(&format!("FROM host\n{k}"));
            assert_eq!(e.line, 2);
            assert!(e.why.contains("unsupported instruction"), "{k}: {e:?}");
        }
        assert!(err("").why.contains("no instructions"));
        assert!(err("# only a comment\n").why.contains("no instructions"));
    }

    #[test]
    fn continuations_comments_escape() {
        let d =
            parse("FROM host\nRUN echo a \\\n  # inner comment\n\n  && echo b\nENV X=1\n").unwrap();
        assert_eq!(d.instructions.len(), 3);
        assert_eq!(d.instructions[1].line, 2);
        assert_eq!(
            d.instructions[1].inst,
            Inst::Run(CmdForm::Shell("echo a && echo b".into()))
        );
        assert_eq!(d.instructions[2].line, 6);
        let d = parse("# escape=`\nFROM host\nRUN dir c:\\ `\n  && echo x\n").unwrap();
        assert_eq!(d.escape, '`');
        assert_eq!(
            d.instructions[1].inst,
            Inst::Run(CmdForm::Shell("dir c:\\ && echo x".into()))
        );
        assert!(err("# escape=x\nFROM host").why.contains("invalid escape"));
        // A directive after a comment is just a comment.
        let d = parse("# hello\n# escape=`\nFROM host\n").unwrap();
        assert_eq!(d.escape, '\\');
    }

    #[test]
    fn expansion() {
        let v = vars(&[("A", "1"), ("E", "")]);
        let x = |s: &str| expand(s, &v, '\\').unwrap();
        assert_eq!(x("$A"), "1");
        assert_eq!(x("${A}x"), "1x");
        assert_eq!(x("${B:-def}"), "def");
        assert_eq!(x("${E:-def}"), "def");
        assert_eq!(x("${A:+alt}"), "alt");
        assert_eq!(x("${B:+alt}"), "");
        assert_eq!(x("'$A'"), "$A");
        assert_eq!(x("\"$A b\""), "1 b");
        assert_eq!(x("\\$A"), "$A");
        assert_eq!(x("a$"), "a$");
        assert!(expand("${A", &v, '\\').is_err());
        assert!(expand("\"open", &v, '\\').is_err());
        assert_eq!(
            split_words("a=\"b c\" d='e f' g\\ h", '\\'),
            vec!["a=\"b c\"", "d='e f'", "g\\ h"]
        );
    }

    #[test]
    fn ignore_rules() {
        let i = Ignore::parse("# c\n*.log\n!keep.log\nbuild\n**/tmp\n/abs/x\n");
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("keep.log"));
        assert!(
            !i.excluded("d/a.log"),
            "*.log is top-level only, as in docker"
        );
        assert!(i.excluded("build"));
        assert!(i.excluded("build/out/x"));
        assert!(i.excluded("x/y/tmp/z"));
        assert!(i.excluded("abs/x"));
        assert!(!i.excluded("src/main.rs"));
        assert!(glob("[a-c]?", "bz"));
        assert!(!glob("[^a]", "a"));
        assert!(match_path(&["**", "*.rs"], &["a", "b", "c.rs"]));
    }
}
