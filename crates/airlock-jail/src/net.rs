//! The sandbox's network namespace: loopback only, brought up.

use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation.
    let fd =
        sys::cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    let r = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            -1
        } else {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr)
        }
    };
    let res = sys::cvt(r).map(|_| ());
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
    res
}

/// `ioctl` on a socket: a new fd for the socket's network namespace.
const SIOCGSKNS: usize = 0x894C;

/// Makes a sandbox's network namespace (only `lo`, up) beside the rest of
/// the start-up: creating one costs more than every other namespace
/// together (0.66 ms of the kernel's time here), so it is made by a
/// helper that shares our memory and fd table while the agent execs and
/// we work out the plan. The helper sends the namespace to the agent on
/// `ctl` ([`NETNS_TAG`], then an errno byte, with the namespace's fd when
/// that is 0) and exits. The namespace belongs to the initial user
/// namespace (we are root): nothing in the sandbox can reconfigure it.
pub struct NetnsMaker {
    pid: libc::pid_t,
    /// The helper's stack: freed only once it has exited.
    stack: Vec<u8>,
}

/// The tag of the helper's message on the control socket.
pub const NETNS_TAG: u8 = b'N';

const MAKER_STACK: usize = 16 * 1024;

impl NetnsMaker {
    /// Starts the helper (run by root). Cheap for the caller: the
    /// namespace is created in the helper's own time.
    pub fn spawn(ctl: std::os::fd::RawFd) -> io::Result<NetnsMaker> {
        let mut stack = vec![0u8; MAKER_STACK];
        // SAFETY: the helper runs `maker_main` on its own stack (freed only
        // after it is reaped, in Drop) and makes raw system calls only: it
        // touches no memory of ours but its stack (no errno, no heap).
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(MAKER_STACK - 64);
            let top = top.sub(top as usize % 16);
            libc::clone(
                maker_main,
                top.cast(),
                libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
                ctl as usize as *mut libc::c_void,
            )
        };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NetnsMaker { pid, stack })
    }
}

impl Drop for NetnsMaker {
    fn drop(&mut self) {
        // SAFETY: reaps our own helper, which exits on its own soon after
        // it starts; its stack is freed after this.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), libc::__WALL) };
        let _ = self.stack.len();
    }
}

extern "C" fn maker_main(arg: *mut libc::c_void) -> libc::c_int {
    use airlock_sys::raw::syscall6 as sc;
    let ctl = arg as usize;
    // SAFETY: raw system calls on integers and on buffers of this stack
    // frame only (see NetnsMaker::spawn).
    unsafe {
        let mut ns: isize = -1;
        let mut code = sc(
            libc::SYS_unshare,
            [libc::CLONE_NEWNET as usize, 0, 0, 0, 0, 0],
        );
        if code == 0 {
            let sk = sc(
                libc::SYS_socket,
                [
                    libc::AF_INET as usize,
                    (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            );
            if sk < 0 {
                code = sk;
            } else {
                let mut ifr: libc::ifreq = std::mem::zeroed();
                ifr.ifr_name[0] = b'l' as libc::c_char;
                ifr.ifr_name[1] = b'o' as libc::c_char;
                let p = &mut ifr as *mut libc::ifreq as usize;
                code = sc(
                    libc::SYS_ioctl,
                    [sk as usize, libc::SIOCGIFFLAGS as usize, p, 0, 0, 0],
                );
                if code == 0 {
                    let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                    ifr.ifr_ifru.ifru_flags |= up;
                    let p = &mut ifr as *mut libc::ifreq as usize;
                    code = sc(
                        libc::SYS_ioctl,
                        [sk as usize, libc::SIOCSIFFLAGS as usize, p, 0, 0, 0],
                    );
                }
                if code == 0 {
                    ns = sc(libc::SYS_ioctl, [sk as usize, SIOCGSKNS, 0, 0, 0, 0]);
                    if ns < 0 {
                        code = ns;
                    }
                }
                sc(libc::SYS_close, [sk as usize, 0, 0, 0, 0, 0]);
            }
        }
        let msg = [NETNS_TAG, (-code).clamp(0, 255) as u8];
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        // One header and one fd, aligned as the kernel wants.
        let mut cbuf = [0u64; 4];
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        if ns >= 0 {
            m.msg_control = cbuf.as_mut_ptr().cast();
            m.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&m);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            *(libc::CMSG_DATA(c) as *mut i32) = ns as i32;
        }
        sc(
            libc::SYS_sendmsg,
            [
                ctl,
                &m as *const libc::msghdr as usize,
                libc::MSG_NOSIGNAL as usize,
                0,
                0,
                0,
            ],
        );
        if ns >= 0 {
            // Our fd table is airlock's: the message holds the namespace.
            sc(libc::SYS_close, [ns as usize, 0, 0, 0, 0, 0]);
        }
        sc(libc::SYS_exit, [0, 0, 0, 0, 0, 0]);
    }
    0
}

// ----------------------------------------------------------------------
// Transparent egress: the DNS stub's address pool made local.

/// Adds `local ADDR/PREFIX dev lo` to the local table of the current
/// network namespace (what `ip route add local …` does): every address of
/// the pool is then this host's own, so that a listener may be bound to
/// any of them (the "AnyIP" trick). An existing route is fine.
pub fn add_local_route(addr: std::net::Ipv4Addr, prefix: u8) -> io::Result<()> {
    // SAFETY: a constant C string.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if lo == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket creation.
    let fd = sys::cvt(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let msg = route_msg(addr, prefix, lo);
    // SAFETY: sockaddr_nl is plain data; zero is the kernel.
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sends our buffer to the kernel's address.
    sys::cvt(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    } as i32)?;
    let mut ack = [0u8; 256];
    // SAFETY: reads into our buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), ack.as_mut_ptr().cast(), ack.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // nlmsghdr (16 bytes) of type NLMSG_ERROR, then the error (0: done).
    if n >= 20 && u16::from_ne_bytes([ack[4], ack[5]]) == libc::NLMSG_ERROR as u16 {
        let err = i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
        if err == 0 || -err == libc::EEXIST {
            return Ok(());
        }
        return Err(io::Error::from_raw_os_error(-err));
    }
    Err(io::Error::from_raw_os_error(libc::EPROTO))
}

/// The RTM_NEWROUTE request for [`add_local_route`].
fn route_msg(addr: std::net::Ipv4Addr, prefix: u8, oif: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(44);
    let len: u32 = 16 + 12 + 8 + 8;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
                                              // struct rtmsg
    m.extend_from_slice(&[
        libc::AF_INET as u8,
        prefix,
        0, // src_len
        0, // tos
        libc::RT_TABLE_LOCAL,
        libc::RTPROT_BOOT,
        libc::RT_SCOPE_HOST,
        libc::RTN_LOCAL,
    ]);
    m.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
                                              // RTA_DST
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&libc::RTA_DST.to_ne_bytes());
    m.extend_from_slice(&addr.octets());
    // RTA_OIF
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&libc::RTA_OIF.to_ne_bytes());
    m.extend_from_slice(&oif.to_ne_bytes());
    m
}

/// Run by root, for a sandbox whose network namespace belongs to the
/// initial user namespace (its agent cannot change it): from a thread of
/// its own that joins the namespace of `pid`, makes the transparent pool
/// local ([`add_local_route`]) and lets unprivileged processes bind low
/// ports there (`net.ipv4.ip_unprivileged_port_start = 0`, in that
/// namespace only), so that the agent may serve DNS on port 53 and catch
/// ports 80 and 443. Nothing outside the namespace changes.
pub fn prepare_transparent(
    pid: libc::pid_t,
    addr: std::net::Ipv4Addr,
    prefix: u8,
) -> io::Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // Never the namespace airlock itself is in (were `pid` ever not the
    // sandbox's: the route and the port bound would be the host's).
    {
        use std::os::unix::fs::MetadataExt;
        let (theirs, ours) = (ns.metadata()?, std::fs::metadata("/proc/self/ns/net")?);
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the sandbox's network namespace is airlock's own",
            ));
        }
    }
    let t = std::thread::Builder::new()
        .name("airlock-netns".into())
        .spawn(move || -> io::Result<()> {
            // SAFETY: setns on a namespace fd we hold, in this thread only
            // (a network namespace may be joined by one thread).
            sys::cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
            add_local_route(addr, prefix)?;
            // /proc/sys/net is the namespace of the thread that opens it.
            std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", b"0")?;
            Ok(())
        })?;
    t.join()
        .unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::EIO)))
}

#[cfg(test)]
mod route_tests {
    #[test]
    fn route_message_layout() {
        let m = super::route_msg(std::net::Ipv4Addr::new(198, 18, 0, 0), 15, 1);
        assert_eq!(m.len(), 44);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), 44);
        assert_eq!(&m[16..24], &[2, 15, 0, 0, 255, 3, 254, 2]);
        assert_eq!(&m[32..36], &[198, 18, 0, 0]);
        assert_eq!(u32::from_ne_bytes([m[40], m[41], m[42], m[43]]), 1);
    }
}
