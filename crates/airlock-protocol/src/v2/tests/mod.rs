//! Tests of protocol v2. Strategies here generate every message with
//! random, valid contents.

mod agent;
mod fd;
mod flow;
mod fuzz;
mod host;
mod props;
mod wire;

use std::net::IpAddr;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Bytes with no NUL.
fn no_nul(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(1u8..=255, 0..=max)
}

/// Whether strategies include maximum sizes (slow to generate in debug
/// builds) or only small values.
#[derive(Clone, Copy)]
pub(crate) enum Size {
    Small,
    UpToMax,
}

pub(crate) fn path_s(size: Size) -> BoxedStrategy<Vec<u8>> {
    let small = vec(1u8..=255, 1..64);
    match size {
        Size::Small => small.boxed(),
        Size::UpToMax => prop_oneof![
            8 => small,
            1 => vec(1u8..=255, MAX_PATH..=MAX_PATH),
        ]
        .boxed(),
    }
}

fn data_s(size: Size) -> BoxedStrategy<Vec<u8>> {
    let small = vec(any::<u8>(), 1..300);
    match size {
        Size::Small => small.boxed(),
        Size::UpToMax => prop_oneof![
            8 => small,
            1 => vec(any::<u8>(), MAX_DATA..=MAX_DATA),
        ]
        .boxed(),
    }
}

/// Text of at most `max` bytes (the longest exactly `max`).
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}".prop_map(move |mut s: String| {
            while s.len() > max {
                s.pop();
            }
            s
        }),
        Just("é".repeat(max / 2)),
    ]
}

fn stage() -> impl Strategy<Value = Stage> {
    proptest::sample::select(Stage::ALL)
}

fn errno(zero_ok: bool) -> impl Strategy<Value = i32> {
    (if zero_ok { 0 } else { 1 })..=4095i32
}

fn signal() -> impl Strategy<Value = u8> {
    1u8..=64
}

fn winsize() -> impl Strategy<Value = WinSize> {
    (1u16.., 1u16..).prop_map(|(rows, cols)| WinSize { rows, cols })
}

fn host_id() -> impl Strategy<Value = u32> {
    1u32..AGENT_ID_BIT
}

fn agent_id() -> impl Strategy<Value = u32> {
    AGENT_ID_BIT..=u32::MAX
}

fn any_id() -> impl Strategy<Value = u32> {
    1u32..
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn stat() -> impl Strategy<Value = Stat> {
    (
        proptest::sample::select(
            &[
                FileKind::File,
                FileKind::Dir,
                FileKind::Symlink,
                FileKind::Other,
            ][..],
        ),
        0u32..=0o7777,
        any::<u64>(),
        any::<i64>(),
        0u32..1_000_000_000,
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(kind, mode, size, mtime_sec, mtime_nsec, uid, gid)| Stat {
            kind,
            mode,
            size,
            mtime_sec,
            mtime_nsec,
            uid,
            gid,
        })
}

fn entry_name() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 1..=MAX_NAME).prop_filter_map("valid name", |mut n| {
        for c in n.iter_mut() {
            if *c == 0 || *c == b'/' {
                *c = b'x';
            }
        }
        (n != b"." && n != b"..").then_some(n)
    })
}

fn hostname() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,20}(\\.[a-z0-9_-]{1,20}){0,4}"
}

fn env_entry() -> impl Strategy<Value = Vec<u8>> {
    (vec(1u8..=255, 1..16), no_nul(64)).prop_map(|(mut k, v)| {
        for c in k.iter_mut() {
            if *c == b'=' {
                *c = b'K';
            }
        }
        k.push(b'=');
        k.extend(v);
        k
    })
}

fn argv() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (vec(1u8..=255, 1..32), vec(no_nul(64), 0..16)).prop_map(|(a0, mut rest)| {
        rest.insert(0, a0);
        rest
    })
}

/// A ProcStart big enough to need several frames.
pub(crate) fn big_proc_start() -> impl Strategy<Value = Message> {
    proc_start_up_to(40_000)
}

/// A ProcStart with up to 5 arguments of up to `max_arg` bytes.
fn proc_start_up_to(max_arg: usize) -> impl Strategy<Value = Message> {
    (host_id(), 1usize..6, 1usize..max_arg).prop_map(|(id, n, len)| Message::ProcStart {
        id,
        argv: (0..n).map(|i| vec![b'a' + i as u8; len]).collect(),
        env: vec![b"K=V".to_vec(); n * 100],
        cwd: b"/".to_vec(),
        uid: 1000,
        gid: 1000,
        pty: None,
        stdin: StdinMode::Pipe,
    })
}

/// Any message of any kind, with valid random contents, up to the
/// maximum sizes.
pub(crate) fn message() -> impl Strategy<Value = Message> {
    message_s(Size::UpToMax)
}

/// Any message of any kind, with valid random contents of small sizes.
pub(crate) fn small_message() -> impl Strategy<Value = Message> {
    message_s(Size::Small)
}

fn message_s(size: Size) -> impl Strategy<Value = Message> {
    use Message as M;
    let path = move || path_s(size);
    let data = move || data_s(size);
    let big = matches!(size, Size::UpToMax);
    let session = prop_oneof![
        (1u16..10, 0u16..10, any::<u64>(), MIN_WINDOW..=MAX_WINDOW).prop_map(
            |(min_version, d, features, window)| M::Hello {
                min_version,
                max_version: min_version + d,
                features,
                window
            }
        ),
        (
            1u16..,
            any::<u64>(),
            MIN_WINDOW..=MAX_WINDOW,
            text(MAX_AGENT_VERSION)
        )
            .prop_map(|(version, features, window, agent_version)| M::HelloAck {
                version,
                features,
                window,
                agent_version
            }),
        (
            vec(any::<u8>(), 0..200),
            any::<bool>(),
            70_000usize..140_000
        )
            .prop_map(move |(mut data, long, n)| {
                if big && long {
                    data.resize(n, 7);
                }
                M::Plan { data }
            }),
        Just(M::Ready),
        text(MAX_DETAIL).prop_map(|text| M::Notice { text }),
        (stage(), errno(true), text(MAX_DETAIL)).prop_map(|(stage, errno, detail)| {
            M::SetupFailed {
                stage,
                errno,
                detail,
            }
        }),
        any::<u64>().prop_map(|nonce| M::Ping { nonce }),
        any::<u64>().prop_map(|nonce| M::Pong { nonce }),
        Just(M::Shutdown),
        Just(M::ShutdownDone),
        (
            any_id(),
            proptest::sample::select(
                &[
                    StreamKind::Stdin,
                    StreamKind::Stdout,
                    StreamKind::Stderr,
                    StreamKind::File,
                    StreamKind::Tcp
                ][..]
            ),
            1u32..=MAX_WINDOW
        )
            .prop_map(|(id, stream, bytes)| M::Credit { id, stream, bytes }),
    ];
    let procs = prop_oneof![
        (
            host_id(),
            argv(),
            vec(env_entry(), 0..16),
            path(),
            0u32..u32::MAX,
            0u32..u32::MAX,
            proptest::option::of(winsize()),
            any::<bool>()
        )
            .prop_map(|(id, argv, env, cwd, uid, gid, pty, pipe)| M::ProcStart {
                id,
                argv,
                env,
                cwd,
                uid,
                gid,
                pty,
                stdin: if pipe {
                    StdinMode::Pipe
                } else {
                    StdinMode::Null
                },
            }),
        proc_start_up_to(if big { 40_000 } else { 100 }),
        (host_id(), 1u32..=PID_MAX).prop_map(|(id, pid)| M::ProcStarted { id, pid }),
        (host_id(), stage(), errno(true)).prop_map(|(id, stage, errno)| M::ProcStartFailed {
            id,
            stage,
            errno
        }),
        (host_id(), data()).prop_map(|(id, data)| M::ProcStdin { id, data }),
        host_id().prop_map(|id| M::ProcCloseStdin { id }),
        (host_id(), any::<bool>(), data()).prop_map(|(id, e, data)| M::ProcOutput {
            id,
            stream: if e {
                OutStream::Stderr
            } else {
                OutStream::Stdout
            },
            data
        }),
        (host_id(), any::<bool>()).prop_map(|(id, e)| M::ProcEof {
            id,
            stream: if e {
                OutStream::Stderr
            } else {
                OutStream::Stdout
            },
        }),
        (host_id(), signal()).prop_map(|(id, signo)| M::ProcSignal { id, signo }),
        (host_id(), winsize()).prop_map(|(id, size)| M::ProcResize { id, size }),
        (
            host_id(),
            prop_oneof![
                any::<u8>().prop_map(ExitStatus::Code),
                signal().prop_map(ExitStatus::Signal)
            ],
            any::<u64>()
        )
            .prop_map(|(id, status, max_rss_kib)| M::ProcExited {
                id,
                status,
                max_rss_kib
            }),
        host_id().prop_map(|id| M::ProcList { id }),
        (
            host_id(),
            prop_oneof![
                vec((host_id(), 1u32..=PID_MAX, any::<[bool; 4]>()), 0..50),
                vec(
                    (host_id(), 1u32..=PID_MAX, any::<[bool; 4]>()),
                    MAX_LIST_PROCS..=MAX_LIST_PROCS
                ),
            ]
        )
            .prop_map(|(id, v)| M::ProcListResult {
                id,
                procs: v
                    .into_iter()
                    .map(|(id, pid, f)| ProcInfo {
                        id,
                        pid,
                        pty: f[0],
                        stdin_open: f[1],
                        stdout_open: f[2],
                        stderr_open: f[3],
                    })
                    .collect()
            }),
    ];
    let files = prop_oneof![
        (host_id(), path(), 0..=i64::MAX as u64, any::<u64>()).prop_map(
            |(id, path, offset, len)| M::FileRead {
                id,
                path,
                offset,
                len
            }
        ),
        (host_id(), path(), 0u32..=0o7777, any::<[bool; 4]>()).prop_map(|(id, path, mode, f)| {
            M::FileWrite {
                id,
                path,
                mode,
                flags: WriteFlags {
                    create: f[0],
                    truncate: f[1],
                    append: f[2],
                    exclusive: f[3],
                },
            }
        }),
        (host_id(), path(), any::<bool>()).prop_map(|(id, path, follow)| M::FileStat {
            id,
            path,
            follow
        }),
        (host_id(), path()).prop_map(|(id, path)| M::FileList { id, path }),
        (host_id(), path(), 0u32..=0o7777, any::<bool>()).prop_map(|(id, path, mode, parents)| {
            M::FileMkdir {
                id,
                path,
                mode,
                parents,
            }
        }),
        (host_id(), path(), any::<bool>()).prop_map(|(id, path, recursive)| M::FileRemove {
            id,
            path,
            recursive
        }),
        (host_id(), path(), path()).prop_map(|(id, from, to)| M::FileRename { id, from, to }),
        (host_id(), path(), 0u32..=0o7777).prop_map(|(id, path, mode)| M::FileChmod {
            id,
            path,
            mode
        }),
        (host_id(), path()).prop_map(|(id, path)| M::TarOut { id, path }),
        (host_id(), path()).prop_map(|(id, path)| M::TarIn { id, path }),
        (host_id(), data()).prop_map(|(id, data)| M::FileData { id, data }),
        host_id().prop_map(|id| M::FileEnd { id }),
        host_id().prop_map(|id| M::FileCancel { id }),
        (
            host_id(),
            prop_oneof![
                any::<u64>().prop_map(Ok),
                (errno(false), text(MAX_ERROR_TEXT))
                    .prop_map(|(errno, text)| Err(FsError { errno, text }))
            ]
        )
            .prop_map(|(id, result)| M::FileDone { id, result }),
        (host_id(), stat()).prop_map(|(id, stat)| M::FileStatResult { id, stat }),
        (
            host_id(),
            vec((entry_name(), stat()), 1..if big { 100 } else { 4 })
        )
            .prop_map(|(id, v)| {
                let mut entries: Vec<DirEntry> = v
                    .into_iter()
                    .map(|(name, stat)| DirEntry { name, stat })
                    .collect();
                while message::entries_body_len(&entries) > MAX_BODY {
                    entries.pop();
                }
                M::FileEntries { id, entries }
            }),
    ];
    let tcp = prop_oneof![
        (host_id(), ip(), 1u16..).prop_map(|(id, addr, port)| M::TcpConnect { id, addr, port }),
        host_id().prop_map(|id| M::TcpOpened { id }),
        (host_id(), errno(false)).prop_map(|(id, errno)| M::TcpFailed { id, errno }),
        (any_id(), data()).prop_map(|(id, data)| M::TcpData { id, data }),
        any_id().prop_map(|id| M::TcpShutdownWrite { id }),
        (any_id(), any::<bool>()).prop_map(|(id, reset)| M::TcpClose { id, reset }),
        (
            agent_id(),
            prop_oneof![
                ip().prop_map(Destination::Ip),
                hostname().prop_map(Destination::Name)
            ],
            1u16..
        )
            .prop_map(|(id, dest, port)| M::TcpOffer { id, dest, port }),
        agent_id().prop_map(|id| M::TcpAccept { id }),
        (
            agent_id(),
            proptest::sample::select(
                &[
                    RefuseReason::Policy,
                    RefuseReason::Unresolvable,
                    RefuseReason::Unreachable,
                    RefuseReason::Limit
                ][..]
            )
        )
            .prop_map(|(id, reason)| M::TcpRefuse { id, reason }),
    ];
    prop_oneof![session, procs, files, tcp]
}

/// Encodes a message, panicking on failure (tests only).
pub(crate) fn enc(m: &Message) -> Vec<u8> {
    encode_to_vec(m).unwrap()
}

/// Decodes back-to-back frames from a byte string into messages.
pub(crate) fn dec_all(bytes: &[u8]) -> Result<Vec<Message>, WireError> {
    let mut f = StreamFramer::new();
    f.push(bytes);
    let mut r = Reassembler::default();
    let mut out = Vec::new();
    while let Some(fr) = f.next_frame()? {
        if let Some(m) = r.push(fr)? {
            out.push(m);
        }
    }
    Ok(out)
}
