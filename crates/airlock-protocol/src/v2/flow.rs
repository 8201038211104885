//! Credit-based flow control.
//!
//! Every direction of every data stream has a window `W` (the receiver's,
//! announced in the handshake). The sender starts with `W` bytes of credit
//! and spends one per data byte; the receiver grants bytes back with
//! `Credit` as its consumer drains them. The rule, checked on both sides:
//!
//! - a sender never sends more data than the credit it holds;
//! - a receiver treats data beyond what it granted as a violation;
//! - a grant never raises the sender's credit above `W` (the receiver
//!   grants only bytes its consumer drained), so a grant that would is a
//!   violation too;
//! - the receiver re-grants once half the window has been drained
//!   ([`RecvWindow::consume`]), so a grant is never smaller than `W/2`
//!   except when flushed explicitly.
//!
//! Each side thus buffers at most `W` bytes per stream, and a stream whose
//! reader is slow stops only itself: the others keep their own credit.

use std::collections::VecDeque;

/// A flow-control rule broken, by the peer (on receive) or by this side
/// (on send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("{len} bytes of data with only {available} bytes of credit")]
    Exceeded { len: u64, available: u64 },
    #[error("a grant of {grant} bytes would raise the credit above the window of {window} (it holds {available})")]
    Overflow {
        grant: u64,
        available: u64,
        window: u64,
    },
    #[error("consuming {len} bytes, but only {unconsumed} were received and not consumed")]
    OverConsume { len: u64, unconsumed: u64 },
    #[error("granting {grant} bytes, but only {pending} were consumed and not yet granted")]
    OverGrant { grant: u64, pending: u64 },
}

/// The sending side of one stream direction: the credit it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendCredit {
    available: u32,
    window: u32,
}

impl SendCredit {
    /// Full credit for a receiver window of `window` bytes.
    pub fn new(window: u32) -> SendCredit {
        SendCredit {
            available: window,
            window,
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u32 {
        self.available
    }

    pub fn window(&self) -> u32 {
        self.window
    }

    /// Spends credit for `len` bytes about to be sent.
    pub fn consume(&mut self, len: usize) -> Result<(), FlowError> {
        match u32::try_from(len) {
            Ok(n) if n <= self.available => {
                self.available -= n;
                Ok(())
            }
            _ => Err(FlowError::Exceeded {
                len: len as u64,
                available: self.available.into(),
            }),
        }
    }

    /// Adds a grant received from the receiver.
    pub fn grant(&mut self, bytes: u32) -> Result<(), FlowError> {
        let total = u64::from(self.available) + u64::from(bytes);
        if total > u64::from(self.window) {
            return Err(FlowError::Overflow {
                grant: bytes.into(),
                available: self.available.into(),
                window: self.window.into(),
            });
        }
        self.available = total as u32;
        Ok(())
    }
}

/// The receiving side of one stream direction.
///
/// Invariant: `outstanding + unconsumed + pending == window`, where
/// `outstanding` is credit the sender holds or has in flight, `unconsumed`
/// is data received and not yet drained by the consumer, and `pending` is
/// drained data not yet granted back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvWindow {
    window: u32,
    outstanding: u32,
    unconsumed: u32,
    pending: u32,
}

impl RecvWindow {
    pub fn new(window: u32) -> RecvWindow {
        RecvWindow {
            window,
            outstanding: window,
            unconsumed: 0,
            pending: 0,
        }
    }

    pub fn window(&self) -> u32 {
        self.window
    }
    /// Granted and not yet received.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }
    /// Received and not yet consumed.
    pub fn unconsumed(&self) -> u32 {
        self.unconsumed
    }
    /// Consumed and not yet granted back.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Accounts `len` received data bytes; more than was granted is the
    /// sender's violation.
    pub fn on_data(&mut self, len: usize) -> Result<(), FlowError> {
        match u32::try_from(len) {
            Ok(n) if n <= self.outstanding => {
                self.outstanding -= n;
                self.unconsumed += n;
                Ok(())
            }
            _ => Err(FlowError::Exceeded {
                len: len as u64,
                available: self.outstanding.into(),
            }),
        }
    }

    /// The consumer drained `len` bytes. Returns the grant to send now, if
    /// half the window or more has been drained since the last grant (it
    /// is then already counted as outstanding).
    pub fn consume(&mut self, len: usize) -> Result<Option<u32>, FlowError> {
        match u32::try_from(len) {
            Ok(n) if n <= self.unconsumed => {
                self.unconsumed -= n;
                self.pending += n;
            }
            _ => {
                return Err(FlowError::OverConsume {
                    len: len as u64,
                    unconsumed: self.unconsumed.into(),
                })
            }
        }
        if self.pending > 0 && self.pending >= self.window.div_ceil(2) {
            return Ok(self.flush());
        }
        Ok(None)
    }

    /// Grants everything drained so far, whatever the threshold.
    pub fn flush(&mut self) -> Option<u32> {
        if self.pending == 0 {
            return None;
        }
        let g = self.pending;
        self.pending = 0;
        self.outstanding += g;
        Some(g)
    }

    /// Accounts a grant of exactly `bytes` sent by hand (instead of the one
    /// [`RecvWindow::consume`] returns).
    pub fn grant(&mut self, bytes: u32) -> Result<(), FlowError> {
        if bytes > self.pending {
            return Err(FlowError::OverGrant {
                grant: bytes.into(),
                pending: self.pending.into(),
            });
        }
        self.pending -= bytes;
        self.outstanding += bytes;
        Ok(())
    }
}

/// A sender's queue for one stream: bytes the producer handed over that
/// wait for credit, bounded by `capacity`. The producer pushes what fits
/// (and stops reading its source when nothing fits); the channel takes
/// chunks as credit allows.
#[derive(Debug)]
pub struct SendQueue {
    credit: SendCredit,
    queue: VecDeque<u8>,
    capacity: usize,
}

impl SendQueue {
    pub fn new(window: u32, capacity: usize) -> SendQueue {
        SendQueue {
            credit: SendCredit::new(window),
            queue: VecDeque::new(),
            capacity,
        }
    }

    pub fn credit(&self) -> &SendCredit {
        &self.credit
    }
    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
    /// Room left in the queue.
    pub fn space(&self) -> usize {
        self.capacity - self.queue.len()
    }

    /// Takes as much of `data` as fits; returns how much it took.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.space());
        self.queue.extend(&data[..n]);
        n
    }

    /// Adds a grant from the receiver.
    pub fn grant(&mut self, bytes: u32) -> Result<(), FlowError> {
        self.credit.grant(bytes)
    }

    /// The next chunk to send, at most `max` bytes and never beyond the
    /// credit held (the credit is spent).
    pub fn next_chunk(&mut self, max: usize) -> Option<Vec<u8>> {
        let n = self
            .queue
            .len()
            .min(self.credit.available() as usize)
            .min(max);
        if n == 0 {
            return None;
        }
        self.credit.consume(n).ok()?;
        Some(self.queue.drain(..n).collect())
    }
}
