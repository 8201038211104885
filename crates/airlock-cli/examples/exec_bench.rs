//! `bench/exec.sh`'s measuring program: the core as a library, one running
//! container sandbox.
//!
//! 1. Round trip of `true` through the API (start → Started → Exited), N
//!    times: p50/p90/p99, beside nothing else (the sandbox is already up).
//! 2. Stdout throughput: `head -c SIZE /dev/zero` inside, every byte
//!    through the channel, against the same command on the host read
//!    through a plain pipe, in the same run.
//!
//! Usage: exec_bench AIRLOCK_BINARY [ROUND_TRIPS] [MIB]

use airlock_core::{CreateOptions, Event, ProcessSpec, Sandbox, StreamKind};
use airlock_spec::SandboxSpec;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).expect("usage: exec_bench AIRLOCK [N] [MIB]");
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
    let mib: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1024);
    airlock_core::use_agent_binary(Path::new(bin)).expect("agent binary");

    let mut spec = SandboxSpec::new(vec!["true".into()]);
    spec.limits.timeout = Duration::from_secs(3600);
    let t = Instant::now();
    // The window `airlock run` uses (the library's default is 256 KiB).
    let window: u32 = std::env::var("WINDOW")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2 << 20);
    let mut sb = Sandbox::create(
        &spec,
        CreateOptions {
            window: Some(window),
            ..Default::default()
        },
    )
    .expect("create");
    loop {
        match sb.wait(Some(Duration::from_secs(30))).expect("wait") {
            Some(Event::Ready) => break,
            Some(Event::Notice(_)) => {}
            other => panic!("waiting for Ready: {other:?}"),
        }
    }
    println!("sandbox ready in {:.2} ms", t.elapsed().as_secs_f64() * 1e3);

    // 1. Round trips.
    let p = ProcessSpec::new(vec!["/bin/true".into()]);
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        let id = sb.start(&p).expect("start");
        loop {
            match sb.wait(Some(Duration::from_secs(30))).expect("wait") {
                Some(Event::Exited { id: x, .. }) if x == id => break,
                Some(Event::StartFailed { .. }) | Some(Event::AgentGone) | None => {
                    panic!("round trip {i} failed")
                }
                _ => {}
            }
        }
        if i >= 20 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    let pct = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "round trip of /bin/true via the library: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  (n={n}; goal p50 <= 1 ms)",
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );

    // 2. Throughput: channel and plain pipe alternately, three times each
    // (this host is noisy); medians.
    let cmd = format!("head -c {} /dev/zero", mib << 20);
    let mut chan = Vec::new();
    let mut pipe = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let id = sb
            .start(&ProcessSpec::new(vec![
                "sh".into(),
                "-c".into(),
                cmd.clone(),
            ]))
            .expect("start");
        let mut got: u64 = 0;
        loop {
            match sb.wait(Some(Duration::from_secs(60))).expect("wait") {
                Some(Event::Output { id: x, data, .. }) if x == id => {
                    got += data.len() as u64;
                    sb.consumed(id, StreamKind::Stdout, data.len())
                        .expect("credit");
                }
                Some(Event::Exited { id: x, .. }) if x == id => break,
                Some(Event::AgentGone) | None => panic!("throughput run failed"),
                _ => {}
            }
        }
        chan.push(t.elapsed().as_secs_f64());
        assert_eq!(got, mib << 20, "bytes through the channel");
        let t = Instant::now();
        let mut child = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("host head");
        let mut out = child.stdout.take().expect("pipe");
        let mut buf = vec![0u8; 64 * 1024];
        let mut host: u64 = 0;
        loop {
            let k = out.read(&mut buf).expect("read");
            if k == 0 {
                break;
            }
            host += k as u64;
        }
        child.wait().expect("wait");
        pipe.push(t.elapsed().as_secs_f64());
        assert_eq!(host, mib << 20);
    }
    chan.sort_by(f64::total_cmp);
    pipe.sort_by(f64::total_cmp);
    let (chan, pipe) = (chan[1], pipe[1]);
    let mb = (mib << 20) as f64 / 1e6;
    println!(
        "stdout of {mib} MiB (median of 3, window {} KiB): channel {:.0} MB/s, plain pipe {:.0} MB/s, ratio {:.2} (goal >= 0.5)",
        window >> 10,
        mb / chan,
        mb / pipe,
        pipe / chan
    );
    sb.close();
}
