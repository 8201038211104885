//! The sandbox's network namespace: loopback only, brought up.

use crate::sys;
use std::io;

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
