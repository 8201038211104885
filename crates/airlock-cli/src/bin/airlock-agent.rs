//! `airlock-agent`: the sandbox's agent, its own small static program (the
//! container's PID 1, the local tier's parent, a microVM guest's /init).
//! Airlock opens it before any sandbox exists and execs it from that fd;
//! it starts with an empty environment and learns its job from its plan.

fn main() {
    airlock_agent::main();
}
