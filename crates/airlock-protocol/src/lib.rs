//! Host ↔ agent protocol. [`v2`] is the one protocol: one channel per
//! sandbox (a `SOCK_SEQPACKET` socketpair, or a byte stream such as
//! virtio-console or vsock) carrying many processes, files and TCP streams
//! under credit-based flow control. See the module docs for the frame
//! layout, the messages and the rules.
//!
//! The host never trusts the agent: untrusted code may have taken it over.
//! Decoding is total (every byte string gives a message or an error, never
//! a panic) and bounded, and every field has a checked range.

pub mod v2;
