//! Cutting frames out of what a transport delivers.
//!
//! - [`SeqpacketFramer`]: a `SOCK_SEQPACKET` socketpair delivers one frame
//!   per packet; the packet must be exactly the frame its length field
//!   announces.
//! - [`StreamFramer`]: a byte stream (pipe, virtio-serial, vsock, a
//!   `SOCK_STREAM` socket) delivers arbitrary chunks; frames are reassembled
//!   across chunk boundaries. Any framing error is fatal for the channel:
//!   after one, the framer returns it forever, since the stream can no
//!   longer be resynchronised.

use super::error::WireError;
use super::frame::{frame_size, Frame};

/// One frame per packet.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqpacketFramer;

impl SeqpacketFramer {
    /// Decodes the packet as exactly one frame: a packet whose length field
    /// disagrees with its size is refused.
    pub fn decode<'a>(&self, packet: &'a [u8]) -> Result<Frame<'a>, WireError> {
        Frame::decode(packet)
    }
}

/// Frames from a byte stream.
///
/// It holds at most the bytes pushed and not yet returned as frames; an
/// fd reader that pushes at most [`super::MAX_FRAME`] bytes at a time and
/// drains every complete frame before reading again keeps it under two
/// frames. A length field above the maximum is refused as soon as its four
/// bytes arrive, before any of the body is waited for.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    start: usize,
    failed: Option<WireError>,
}

impl StreamFramer {
    pub fn new() -> StreamFramer {
        StreamFramer::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether the stream stopped inside a frame (EOF now would cut one).
    pub fn mid_frame(&self) -> bool {
        self.buffered() > 0
    }

    /// Whether a whole frame (or a framing error) is buffered, so that
    /// [`StreamFramer::next_frame`] answers without more bytes.
    pub fn has_frame(&self) -> bool {
        match frame_size(&self.buf[self.start..]) {
            None => false,
            Some(Err(_)) => true,
            Some(Ok(total)) => self.buffered() >= total,
        }
    }

    /// The error that killed this stream, if one did.
    pub fn failed(&self) -> Option<&WireError> {
        self.failed.as_ref()
    }

    /// The next whole frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let avail = &self.buf[self.start..];
        let total = match frame_size(avail) {
            None => return Ok(None),
            Some(Err(e)) => {
                self.failed = Some(e.clone());
                return Err(e);
            }
            Some(Ok(t)) => t,
        };
        if avail.len() < total {
            return Ok(None);
        }
        // Check first (a failure is sticky), then borrow for the caller.
        if let Err(e) = Frame::decode(&avail[..total]) {
            self.failed = Some(e.clone());
            return Err(e);
        }
        let s = self.start;
        self.start += total;
        Frame::decode(&self.buf[s..s + total]).map(Some)
    }
}
