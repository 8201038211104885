//! The fuzz target's body (`fuzz/fuzz_targets/host_stream.rs`) on stable
//! Rust, over a few thousand generated inputs: random bytes, and streams
//! of valid agent frames for the fixture's ids with random damage.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::v2::fuzzing::host_stream;

/// Agent messages aimed at the ids the fuzz fixture opened.
fn agent_message() -> impl Strategy<Value = Message> {
    (small_message(), 1u32..14, any::<bool>()).prop_filter_map("agent kinds", |(m, id, agent)| {
        if m.kind().direction() == Direction::HostToAgent {
            return None;
        }
        let mut b = enc(&m);
        // Point its header id at the fixture's objects (the frame layer
        // re-checks the id rule, so some become BadId: also worth feeding).
        if m.kind().id_rule() != IdRule::Zero && b.len() <= MAX_FRAME {
            let id = if agent { id | AGENT_ID_BIT } else { id };
            b[6..10].copy_from_slice(&id.to_le_bytes());
        }
        dec_all(&b).ok().and_then(|mut v| v.pop())
    })
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    Flip(prop::sample::Index, u8),
    Cut(prop::sample::Index),
    Splice(prop::sample::Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => Just(Damage::None),
        2 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, v)| Damage::Flip(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Damage::Cut),
        1 => (any::<prop::sample::Index>(), vec(any::<u8>(), 1..20))
            .prop_map(|(i, v)| Damage::Splice(i, v)),
    ]
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..2000),
        3 => (any::<u8>(), vec(agent_message(), 0..20), vec(damage(), 1..4)).prop_map(
            |(chunk, ms, damage)| {
                let mut b = vec![chunk];
                for m in &ms {
                    encode(m, &mut b).unwrap();
                }
                for d in damage {
                    if b.len() < 2 {
                        break;
                    }
                    match d {
                        Damage::None => {}
                        Damage::Flip(i, v) => {
                            let i = 1 + i.index(b.len() - 1);
                            b[i] ^= v;
                        }
                        Damage::Cut(i) => b.truncate(1 + i.index(b.len() - 1)),
                        Damage::Splice(i, v) => {
                            let i = 1 + i.index(b.len() - 1);
                            b.splice(i..i, v);
                        }
                    }
                }
                b
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_body_on_generated_inputs(b in input()) {
        host_stream(&b);
    }
}

/// Inputs that reach deep states: a valid script for the fixture.
#[test]
fn fuzz_body_on_a_valid_script() {
    let script = [
        Message::ProcStarted { id: 1, pid: 2 },
        Message::ProcOutput {
            id: 1,
            stream: OutStream::Stdout,
            data: vec![1; 10],
        },
        Message::FileData {
            id: 5,
            data: vec![1; 10],
        },
        Message::TcpOpened { id: 11 },
        Message::TcpOffer {
            id: AGENT_ID_BIT | 1,
            dest: Destination::Name("a.example".into()),
            port: 1,
        },
        Message::Pong { nonce: 7 },
        Message::Ready,
        Message::ProcExited {
            id: 1,
            status: ExitStatus::Code(0),
            max_rss_kib: 0,
        },
    ];
    let mut b = vec![3];
    for m in &script {
        encode(m, &mut b).unwrap();
    }
    host_stream(&b);
    // The same, with every byte flipped in turn.
    for i in 1..b.len() {
        let mut c = b.clone();
        c[i] ^= 0x41;
        host_stream(&c);
    }
}
