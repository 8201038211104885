//! Flow control: random interleavings never exceed the window, and a
//! draining consumer never deadlocks.

use std::collections::VecDeque;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Produce(usize),
    Send(usize),
    DeliverData,
    DeliverCredit,
    Consume(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..20_000).prop_map(Op::Produce),
        (1usize..=MAX_DATA).prop_map(Op::Send),
        Just(Op::DeliverData),
        Just(Op::DeliverCredit),
        (0usize..100_000).prop_map(Op::Consume),
    ]
}

/// One stream direction: a sender's queue, the wire both ways, a receiver.
struct Model {
    tx: SendQueue,
    rx: RecvWindow,
    data: VecDeque<Vec<u8>>,
    credits: VecDeque<u32>,
    produced: u64,
    delivered: Vec<u8>,
    consumed: usize,
    next_byte: u8,
}

impl Model {
    fn new(window: u32, cap: usize) -> Model {
        Model {
            tx: SendQueue::new(window, cap),
            rx: RecvWindow::new(window),
            data: VecDeque::new(),
            credits: VecDeque::new(),
            produced: 0,
            delivered: Vec::new(),
            consumed: 0,
            next_byte: 0,
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Produce(n) => {
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        self.next_byte = self.next_byte.wrapping_add(1);
                        self.next_byte
                    })
                    .collect();
                let took = self.tx.push(&bytes);
                // Un-take the rest: the producer keeps it.
                self.next_byte = self.next_byte.wrapping_sub((n - took) as u8);
                self.produced += took as u64;
            }
            Op::Send(max) => {
                if let Some(c) = self.tx.next_chunk(max) {
                    prop_assert!(c.len() <= max);
                    self.data.push_back(c);
                }
            }
            Op::DeliverData => {
                if let Some(c) = self.data.pop_front() {
                    // The receiver never sees data beyond its grants.
                    prop_assert!(self.rx.on_data(c.len()).is_ok());
                    self.delivered.extend_from_slice(&c);
                }
            }
            Op::DeliverCredit => {
                if let Some(g) = self.credits.pop_front() {
                    // A grant never overflows the sender's window.
                    prop_assert!(self.tx.grant(g).is_ok());
                }
            }
            Op::Consume(n) => {
                let n = n.min(self.rx.unconsumed() as usize);
                if let Some(g) = self.rx.consume(n).unwrap() {
                    prop_assert!(g >= self.rx.window() / 2);
                    self.credits.push_back(g);
                }
                self.consumed += n;
            }
        }
        self.invariants()
    }

    fn invariants(&self) -> Result<(), TestCaseError> {
        let w = self.rx.window() as u64;
        let rx = &self.rx;
        prop_assert_eq!(
            rx.outstanding() as u64 + rx.unconsumed() as u64 + rx.pending() as u64,
            w
        );
        let in_flight: u64 = self.data.iter().map(|c| c.len() as u64).sum();
        let credit_in_flight: u64 = self.credits.iter().map(|&g| g as u64).sum();
        prop_assert_eq!(
            self.tx.credit().available() as u64 + in_flight + credit_in_flight,
            rx.outstanding() as u64
        );
        prop_assert!(rx.unconsumed() as u64 <= w);
        prop_assert!(in_flight <= w);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any interleaving keeps every bound; then, with the consumer
    /// draining, everything produced arrives, in order, in bounded steps.
    #[test]
    fn credit_never_exceeds_window_and_never_deadlocks(
        window in MIN_WINDOW..=(1u32 << 20),
        cap in 1usize..100_000,
        ops in vec(op(), 0..300),
    ) {
        let mut m = Model::new(window, cap);
        for op in &ops {
            m.apply(op)?;
        }
        let mut steps = 0;
        loop {
            m.apply(&Op::Send(MAX_DATA))?;
            m.apply(&Op::DeliverData)?;
            m.apply(&Op::Consume(usize::MAX))?;
            m.apply(&Op::DeliverCredit)?;
            if m.tx.queued() == 0 && m.data.is_empty() && m.rx.unconsumed() == 0 {
                break;
            }
            steps += 1;
            prop_assert!(steps < 100_000, "stalled: {:?} {:?}", m.tx.credit(), m.rx);
        }
        prop_assert_eq!(m.delivered.len() as u64, m.produced);
        let mut b = 0u8;
        for &x in &m.delivered {
            b = b.wrapping_add(1);
            prop_assert_eq!(x, b);
        }
    }
}

#[test]
fn violations_are_typed() {
    let mut rx = RecvWindow::new(MIN_WINDOW);
    assert!(rx.on_data(MIN_WINDOW as usize).is_ok());
    assert_eq!(
        rx.on_data(1),
        Err(FlowError::Exceeded {
            len: 1,
            available: 0
        })
    );
    assert!(matches!(
        rx.consume(MIN_WINDOW as usize + 1),
        Err(FlowError::OverConsume { .. })
    ));
    assert!(matches!(rx.grant(1), Err(FlowError::OverGrant { .. })));
    // Half the window drained: a grant of exactly that.
    assert_eq!(rx.consume(MIN_WINDOW as usize / 2 - 1), Ok(None));
    assert_eq!(rx.consume(1), Ok(Some(MIN_WINDOW / 2)));
    let mut tx = SendCredit::new(MIN_WINDOW);
    assert!(matches!(tx.grant(1), Err(FlowError::Overflow { .. })));
    assert!(tx.consume(MIN_WINDOW as usize).is_ok());
    assert!(matches!(tx.consume(1), Err(FlowError::Exceeded { .. })));
    assert!(tx.grant(MIN_WINDOW).is_ok());
    assert!(tx.grant(1).is_err());
    // usize lengths past u32 are refused, not truncated.
    assert!(tx.consume(usize::MAX).is_err());
    assert!(rx.on_data(usize::MAX).is_err());
}

#[test]
fn send_queue_is_bounded() {
    let mut q = SendQueue::new(MIN_WINDOW, 10_000);
    assert_eq!(q.push(&[1; 30_000]), 10_000);
    assert_eq!(q.push(&[1]), 0);
    let c = q.next_chunk(usize::MAX).unwrap();
    assert_eq!(c.len(), MIN_WINDOW as usize);
    assert_eq!(q.next_chunk(usize::MAX), None, "no credit left");
    assert_eq!(q.queued(), 10_000 - MIN_WINDOW as usize);
}
