//! A second seccomp filter: the profile an OCI bundle asks for
//! (`linux.seccomp`), installed *after* airlock's own allowlist, never
//! instead of it. The kernel runs every filter a process has and takes the
//! strictest verdict, so the profile can only narrow what the allowlist
//! lets through: a profile that allows `mount`, `ptrace` or `unshare`
//! changes nothing (the allowlist still answers EPERM), one that denies
//! `mkdir` makes `mkdir` fail.
//!
//! The subset engines send (runc's behaviour, on x86_64):
//!
//! * a default action, and rules of syscall numbers (names resolved by the
//!   caller with [`syscall_nr`]; names this table does not know are
//!   skipped, as runc skips those libseccomp does not know);
//! * actions kill (process or thread), trap, errno N, trace N, log and
//!   allow (a user-notification action is refused by the caller: nothing
//!   would listen);
//! * argument conditions `==`, `!=`, `<`, `<=`, `>`, `>=` and masked `==`
//!   on the full 64-bit argument, all of a rule's conditions together.
//!
//! When several rules of one syscall match, the strictest action wins (the
//! rules are tried strictest first): the same order the kernel applies
//! between filters.
//!
//! Architectures: only x86_64 calls reach the profile's rules. An ia32
//! call is killed and an x32 one refused by the allowlist, whatever the
//! profile says, so the profile lets both through to it.

use super::{
    install, jump, sock_filter, stmt, Dispatch, Leaf, SeccompError, ALU_AND_K, AUDIT_ARCH_X86_64,
    JMP_JA, JMP_JEQ_K, JMP_JGE_K, LD_W_ABS, OFF_ARCH, OFF_ARGS, OFF_NR, RET_ALLOW, RET_K, X32_BIT,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const PROFILE: &str = "bundle profile";
const JMP_JGT_K: u16 = 0x25;

/// The x86_64 number of a syscall name.
pub fn syscall_nr(name: &str) -> Option<u32> {
    super::names::X86_64
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| super::names::X86_64[i].1)
}

/// What the profile does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    KillProcess,
    KillThread,
    Trap,
    Errno(u16),
    /// Without a tracer the call fails with ENOSYS.
    Trace(u16),
    Log,
    Allow,
}

impl Action {
    /// The filter's return value.
    pub fn ret(self) -> u32 {
        match self {
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | u32::from(e),
            Action::Trace(d) => libc::SECCOMP_RET_TRACE | u32::from(d),
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::Allow => RET_ALLOW,
        }
    }

    /// The kernel's precedence: lower is stricter.
    fn rank(self) -> u8 {
        match self {
            Action::KillProcess => 0,
            Action::KillThread => 1,
            Action::Trap => 2,
            Action::Errno(_) => 3,
            Action::Trace(_) => 4,
            Action::Log => 5,
            Action::Allow => 6,
        }
    }
}

/// An argument comparison (64-bit, unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `arg & value == value_two`
    MaskedEq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cond {
    /// 0..=5
    pub arg: u8,
    pub op: Op,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
}

/// One rule: `action` for syscall `nr` when every condition holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub nr: u32,
    pub action: Action,
    pub conds: Vec<Cond>,
}

/// A resolved profile (numbers, not names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub default: Action,
    pub rules: Vec<Rule>,
}

/// The compiled profile, installed after the allowlist.
#[derive(Debug, Clone)]
pub struct ProfileFilter {
    code: Vec<sock_filter>,
}

/// Where a comparison's jump goes.
#[derive(Clone, Copy)]
enum To {
    /// The next instruction.
    Next,
    /// The condition holds: on to the rest of the rule.
    Pass,
    /// It does not: on to the next rule.
    Fail,
}

enum Ins {
    Load(u32),
    And(u32),
    Jump(u16, u32, To, To),
}

fn halves(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// One condition, as compare-and-jump steps.
fn cond_steps(c: &Cond) -> Vec<Ins> {
    let lo = OFF_ARGS + 8 * u32::from(c.arg);
    let hi = lo + 4;
    let (vh, vl) = halves(c.value);
    use Ins::*;
    use To::*;
    match c.op {
        Op::Eq => vec![
            Load(hi),
            Jump(JMP_JEQ_K, vh, Next, Fail),
            Load(lo),
            Jump(JMP_JEQ_K, vl, Pass, Fail),
        ],
        Op::Ne => vec![
            Load(hi),
            Jump(JMP_JEQ_K, vh, Next, Pass),
            Load(lo),
            Jump(JMP_JEQ_K, vl, Fail, Pass),
        ],
        Op::MaskedEq => {
            let (dh, dl) = halves(c.value_two);
            vec![
                Load(hi),
                And(vh),
                Jump(JMP_JEQ_K, dh, Next, Fail),
                Load(lo),
                And(vl),
                Jump(JMP_JEQ_K, dl, Pass, Fail),
            ]
        }
        Op::Gt | Op::Ge => vec![
            Load(hi),
            Jump(JMP_JGT_K, vh, Pass, Next),
            Jump(JMP_JEQ_K, vh, Next, Fail),
            Load(lo),
            Jump(
                if c.op == Op::Gt { JMP_JGT_K } else { JMP_JGE_K },
                vl,
                Pass,
                Fail,
            ),
        ],
        // Not (>=), not (>).
        Op::Lt | Op::Le => vec![
            Load(hi),
            Jump(JMP_JGT_K, vh, Fail, Next),
            Jump(JMP_JEQ_K, vh, Next, Pass),
            Load(lo),
            Jump(
                if c.op == Op::Lt { JMP_JGE_K } else { JMP_JGT_K },
                vl,
                Fail,
                Pass,
            ),
        ],
    }
}

/// The block of one syscall's rules (strictest first), ending in returns.
fn block(rules: &[&Rule], default: Action) -> Result<Vec<sock_filter>, SeccompError> {
    let mut code: Vec<sock_filter> = Vec::new();
    // `ja`s to patch to the start of the next rule.
    let mut to_next: Vec<usize> = Vec::new();
    let mut ended = false;
    for r in rules {
        for j in to_next.drain(..) {
            code[j].k = (code.len() - j - 1) as u32;
        }
        for c in &r.conds {
            if c.arg > 5 {
                return Err(SeccompError::ArgumentIndex { index: c.arg });
            }
            let steps = cond_steps(c);
            let n = steps.len();
            // Layout: the steps, then `ja <next rule>` (Fail lands on it);
            // Pass lands just after it.
            let base = code.len();
            for (i, s) in steps.into_iter().enumerate() {
                let off = |t: To| -> u8 {
                    match t {
                        To::Next => 0,
                        To::Fail => (n - i - 1) as u8,
                        To::Pass => (n - i) as u8,
                    }
                };
                code.push(match s {
                    Ins::Load(k) => stmt(LD_W_ABS, k),
                    Ins::And(k) => stmt(ALU_AND_K, k),
                    Ins::Jump(op, k, t, f) => jump(op, k, off(t), off(f)),
                });
            }
            debug_assert_eq!(code.len(), base + n);
            to_next.push(code.len());
            code.push(stmt(JMP_JA, 0));
        }
        code.push(stmt(RET_K, r.action.ret()));
        if r.conds.is_empty() {
            ended = true;
            break;
        }
    }
    for j in to_next.drain(..) {
        code[j].k = (code.len() - j - 1) as u32;
    }
    if !ended {
        code.push(stmt(RET_K, default.ret()));
    }
    Ok(code)
}

impl Profile {
    /// Compiles the profile into one program.
    pub fn compile(&self) -> Result<ProfileFilter, SeccompError> {
        let mut by_nr: BTreeMap<u32, Vec<&Rule>> = BTreeMap::new();
        for r in &self.rules {
            if r.nr < X32_BIT {
                by_nr.entry(r.nr).or_default().push(r);
            }
        }
        let default = Leaf::Ret(self.default.ret());
        let mut blocks: Vec<Vec<sock_filter>> = Vec::new();
        let mut segs: Vec<(u32, Leaf)> = Vec::new();
        let push = |segs: &mut Vec<(u32, Leaf)>, start: u32, leaf: Leaf| {
            if segs.last().is_none_or(|(_, l)| *l != leaf) {
                segs.push((start, leaf));
            }
        };
        let mut next = 0u32;
        for (nr, mut rules) in by_nr {
            if nr > next {
                push(&mut segs, next, default);
            }
            // Strictest first; stable, so the profile's order otherwise.
            rules.sort_by_key(|r| r.action.rank());
            let leaf = if rules[0].conds.is_empty() {
                Leaf::Ret(rules[0].action.ret())
            } else {
                let code = block(&rules, self.default)?;
                let id = match blocks.iter().position(|b| *b == code) {
                    Some(i) => i,
                    None => {
                        blocks.push(code);
                        blocks.len() - 1
                    }
                };
                Leaf::Block(id)
            };
            push(&mut segs, nr, leaf);
            next = nr + 1;
        }
        push(&mut segs, next, default);
        let mut d = Dispatch::new(vec![
            stmt(LD_W_ABS, OFF_ARCH),
            jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            // Not x86_64: the allowlist kills it.
            stmt(RET_K, RET_ALLOW),
            stmt(LD_W_ABS, OFF_NR),
            // x32: the allowlist refuses it.
            jump(JMP_JGE_K, X32_BIT, 0, 1),
            stmt(RET_K, RET_ALLOW),
        ]);
        d.tree(&segs);
        Ok(ProfileFilter {
            code: d.link(&blocks, PROFILE)?,
        })
    }
}

impl ProfileFilter {
    /// Installs it into the calling thread (after the allowlist, which set
    /// `no_new_privs`). Does not allocate.
    pub fn apply(&self) -> Result<(), SeccompError> {
        install(PROFILE, &self.code)
    }

    pub fn instructions(&self) -> &[sock_filter] {
        &self.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_le_bytes());
        d[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        d
    }

    fn run(p: &[sock_filter], d: &[u8; 64]) -> u32 {
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = p[pc];
            pc += 1;
            let j = |t: bool| usize::from(if t { i.jt } else { i.jf });
            match i.code {
                0x20 => {
                    let k = i.k as usize;
                    acc = u32::from_le_bytes(d[k..k + 4].try_into().unwrap());
                }
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x15 => pc += j(acc == i.k),
                0x25 => pc += j(acc > i.k),
                0x35 => pc += j(acc >= i.k),
                0x06 => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn eval(f: &ProfileFilter, nr: u32, args: [u64; 6]) -> u32 {
        run(f.instructions(), &data(AUDIT_ARCH_X86_64, nr, args))
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn names_resolve() {
        assert_eq!(syscall_nr("read"), Some(0));
        assert_eq!(syscall_nr("mkdir"), Some(libc::SYS_mkdir as u32));
        assert_eq!(syscall_nr("mkdirat"), Some(libc::SYS_mkdirat as u32));
        assert_eq!(syscall_nr("mseal"), Some(462));
        assert_eq!(syscall_nr("arm_fadvise64_64"), None);
        let names = super::super::names::X86_64;
        assert!(names.windows(2).all(|w| w[0].0 < w[1].0), "sorted, unique");
    }

    #[test]
    fn deny_one_syscall() {
        let p = Profile {
            default: Action::Allow,
            rules: vec![Rule {
                nr: libc::SYS_mkdir as u32,
                action: Action::Errno(libc::EPERM as u16),
                conds: vec![],
            }],
        };
        let f = p.compile().unwrap();
        assert_eq!(eval(&f, libc::SYS_mkdir as u32, [0; 6]), EPERM);
        assert_eq!(eval(&f, libc::SYS_mkdirat as u32, [0; 6]), RET_ALLOW);
        assert_eq!(eval(&f, 0, [0; 6]), RET_ALLOW);
        assert_eq!(eval(&f, 400, [0; 6]), RET_ALLOW);
        // Other architectures and x32 are the allowlist's to refuse.
        assert_eq!(
            run(f.instructions(), &data(0x4000_0003, 83, [0; 6])),
            RET_ALLOW
        );
        assert_eq!(eval(&f, X32_BIT | 83, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn default_deny_with_conditions() {
        let p = Profile {
            default: Action::Errno(libc::ENOSYS as u16),
            rules: vec![
                Rule {
                    nr: 1,
                    action: Action::Allow,
                    conds: vec![],
                },
                // personality(0) and personality(8) only.
                Rule {
                    nr: 135,
                    action: Action::Allow,
                    conds: vec![Cond {
                        arg: 0,
                        op: Op::Eq,
                        value: 0,
                        value_two: 0,
                    }],
                },
                Rule {
                    nr: 135,
                    action: Action::Allow,
                    conds: vec![Cond {
                        arg: 0,
                        op: Op::Eq,
                        value: 8,
                        value_two: 0,
                    }],
                },
                // clone without CLONE_NEWUSER.
                Rule {
                    nr: 56,
                    action: Action::Allow,
                    conds: vec![Cond {
                        arg: 0,
                        op: Op::MaskedEq,
                        value: 0x1000_0000,
                        value_two: 0,
                    }],
                },
            ],
        };
        let f = p.compile().unwrap();
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(eval(&f, 1, [0; 6]), RET_ALLOW);
        assert_eq!(eval(&f, 2, [0; 6]), enosys);
        assert_eq!(eval(&f, 135, [0, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&f, 135, [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&f, 135, [9, 0, 0, 0, 0, 0]), enosys);
        // The high half counts.
        assert_eq!(eval(&f, 135, [1 << 32, 0, 0, 0, 0, 0]), enosys);
        assert_eq!(eval(&f, 56, [0x11, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&f, 56, [0x1000_0011, 0, 0, 0, 0, 0]), enosys);
    }

    #[test]
    fn comparisons_on_64_bits() {
        let v: u64 = (5 << 32) | 100;
        type Truth = fn(u64, u64) -> bool;
        let cases: [(Op, Truth); 6] = [
            (Op::Eq, |a, b| a == b),
            (Op::Ne, |a, b| a != b),
            (Op::Lt, |a, b| a < b),
            (Op::Le, |a, b| a <= b),
            (Op::Gt, |a, b| a > b),
            (Op::Ge, |a, b| a >= b),
        ];
        let probes = [
            0,
            99,
            100,
            101,
            (4 << 32) | 200,
            (5 << 32) | 99,
            v,
            (5 << 32) | 101,
            (6 << 32),
            u64::MAX,
        ];
        for (op, truth) in cases {
            let p = Profile {
                default: Action::Allow,
                rules: vec![Rule {
                    nr: 7,
                    action: Action::Errno(1),
                    conds: vec![Cond {
                        arg: 3,
                        op,
                        value: v,
                        value_two: 0,
                    }],
                }],
            };
            let f = p.compile().unwrap();
            for a in probes {
                let want = if truth(a, v) { EPERM } else { RET_ALLOW };
                assert_eq!(eval(&f, 7, [0, 0, 0, a, 0, 0]), want, "{op:?} {a:#x}");
            }
        }
    }

    #[test]
    fn strictest_matching_rule_wins_and_all_conditions_must_hold() {
        let p = Profile {
            default: Action::Allow,
            rules: vec![
                Rule {
                    nr: 9,
                    action: Action::Allow,
                    conds: vec![],
                },
                Rule {
                    nr: 9,
                    action: Action::Errno(1),
                    conds: vec![
                        Cond {
                            arg: 0,
                            op: Op::Eq,
                            value: 1,
                            value_two: 0,
                        },
                        Cond {
                            arg: 1,
                            op: Op::Eq,
                            value: 2,
                            value_two: 0,
                        },
                    ],
                },
                Rule {
                    nr: 9,
                    action: Action::KillProcess,
                    conds: vec![Cond {
                        arg: 2,
                        op: Op::Eq,
                        value: 3,
                        value_two: 0,
                    }],
                },
            ],
        };
        let f = p.compile().unwrap();
        assert_eq!(eval(&f, 9, [1, 2, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&f, 9, [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            eval(&f, 9, [1, 2, 3, 0, 0, 0]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn a_docker_sized_profile_fits() {
        let rules = super::super::names::X86_64
            .iter()
            .map(|(_, nr)| Rule {
                nr: *nr,
                action: Action::Allow,
                conds: if nr % 7 == 0 {
                    vec![Cond {
                        arg: 0,
                        op: Op::MaskedEq,
                        value: 0xff,
                        value_two: 1,
                    }]
                } else {
                    vec![]
                },
            })
            .collect();
        let f = Profile {
            default: Action::Errno(1),
            rules,
        }
        .compile()
        .unwrap();
        assert!(f.instructions().len() < 2000, "{}", f.instructions().len());
    }
}
