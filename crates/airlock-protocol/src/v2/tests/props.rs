//! Round trips of every message, through both framers, with arbitrary
//! chunk boundaries and fragmentation.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cfg(1500))]

    /// encode → decode is the identity for every message, and a message
    /// takes one frame exactly when its body fits one.
    #[test]
    fn round_trip(m in message()) {
        let b = enc(&m);
        let mut body = Vec::new();
        m.encode_body(&mut body).unwrap();
        let frames = body.len().div_ceil(MAX_BODY).max(1);
        prop_assert_eq!(b.len(), body.len() + frames * HEADER_LEN);
        prop_assert!(frames == 1 || m.kind().fragmentable());
        prop_assert_eq!(dec_all(&b).unwrap(), vec![m.clone()]);
        // Through the seqpacket framer: one frame per packet.
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        let mut rest = &b[..];
        while !rest.is_empty() {
            let n = frame::frame_size(rest).unwrap().unwrap();
            let f = SeqpacketFramer.decode(&rest[..n]).unwrap();
            prop_assert!(f.body.len() <= MAX_BODY);
            if let Some(m) = r.push(f).unwrap() {
                got.push(m);
            }
            rest = &rest[n..];
        }
        prop_assert_eq!(got, vec![m]);
    }

    /// A single frame that decodes re-encodes to exactly its bytes, so a
    /// change to either side of the codec shows up here.
    #[test]
    fn canonical(m in message(), pos in any::<prop::sample::Index>(), v in any::<u8>()) {
        let mut b = enc(&m);
        if b.len() > MAX_FRAME { return Ok(()); }
        let i = pos.index(b.len() - 4) + 4;
        b[i] = v;
        if let Ok(f) = Frame::decode(&b) {
            if f.flags == 0 {
                if let Ok(m2) = Message::decode(f.kind, f.id, f.body) {
                    prop_assert_eq!(enc(&m2), b);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(cfg(300))]

    /// Many messages back to back, cut into arbitrary chunks, come out of
    /// the stream framer whole and in order, and the framer never holds
    /// more than a frame plus the chunk just pushed.
    #[test]
    fn stream_chunks(ms in vec(message(), 1..8), cuts in vec(1usize..9000, 1..40)) {
        let mut b = Vec::new();
        for m in &ms {
            encode(m, &mut b).unwrap();
        }
        let mut sf = StreamFramer::new();
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < b.len() {
            let n = cuts[i % cuts.len()].min(b.len() - pos);
            i += 1;
            sf.push(&b[pos..pos + n]);
            pos += n;
            while let Some(f) = sf.next_frame().unwrap() {
                if let Some(m) = r.push(f).unwrap() {
                    got.push(m);
                }
            }
            prop_assert!(sf.buffered() < MAX_FRAME);
        }
        prop_assert_eq!(got, ms);
    }

    /// Single-frame messages between the fragments of a big one are
    /// delivered at once; the big one when its last fragment arrives.
    #[test]
    fn interleaved_fragments(big in big_proc_start(), small in vec(message(), 1..6), at in vec(any::<prop::sample::Index>(), 1..6)) {
        let small: Vec<Message> = small
            .into_iter()
            .filter(|m| enc(m).len() <= MAX_FRAME)
            .collect();
        let bb = enc(&big);
        let mut frames = Vec::new();
        let mut rest = &bb[..];
        while !rest.is_empty() {
            let n = frame::frame_size(rest).unwrap().unwrap();
            frames.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        prop_assume!(frames.len() > 1);
        // Insert each small message after some fragment but the last.
        let mut slots: Vec<Vec<Vec<u8>>> = vec![Vec::new(); frames.len()];
        for (j, m) in small.iter().enumerate() {
            let s = at[j % at.len()].index(frames.len() - 1);
            slots[s].push(enc(m));
        }
        let mut stream = Vec::new();
        let mut expect = Vec::new();
        for (k, f) in frames.iter().enumerate() {
            stream.extend_from_slice(f);
            for s in &slots[k] {
                stream.extend_from_slice(s);
            }
        }
        for slot in &slots {
            for s in slot {
                expect.push(dec_all(s).unwrap().remove(0));
            }
        }
        expect.push(big);
        prop_assert_eq!(dec_all(&stream).unwrap(), expect);
    }

    /// Random bytes: the stream framer and decoder answer, never panic,
    /// and never buffer beyond what was pushed.
    #[test]
    fn random_bytes(b in vec(any::<u8>(), 0..3000), cut in 1usize..300) {
        let mut sf = StreamFramer::new();
        let mut r = Reassembler::default();
        'outer: for piece in b.chunks(cut) {
            sf.push(piece);
            loop {
                match sf.next_frame() {
                    Ok(Some(f)) => { let _ = r.push(f); }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
        prop_assert!(sf.buffered() <= b.len());
        let _ = Frame::decode(&b);
    }
}
