"""Confine a sandbox session process: resource limits, kernel filesystem/network rules, an audit policy.

Layers, each catching what the others miss (the start-up self-test checks they hold on this OS):

1. ``setrlimit``: address space (memory bombs → ``MemoryError``), CPU time, file size, core dumps off,
   process count (effective for non-root users; root ignores ``RLIMIT_NPROC``).
2. Landlock (Linux ≥ 5.13, when the kernel has it): writes only beneath the session's temp dir, no TCP
   bind/connect (ABI ≥ 4), no signals to processes outside the session (ABI ≥ 6). Enforced by the kernel
   even for code that calls libc through ``ctypes``.
3. A Python audit hook (PEP 578), installed last and impossible to remove from Python: no process
   creation (``os.fork``, ``subprocess``, ``os.system``, ``posix_spawn``, ``exec*``), no sockets, no
   signals to other processes, no file writes outside the temp dir, no ``setrlimit``, and ``ctypes`` may
   not look up libc's process/file/network/signal functions.

Landlock's kernel interface is used through ``ctypes`` (there is no maintained Python binding); the
constants are from the kernel's ``include/uapi/linux/landlock.h``.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from dataclasses import dataclass

# --- resource limits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 1024
    """Address space the session may add on top of what the warm process already maps."""
    file_mb: int = 16
    max_processes: int = 64
    open_files: int = 256


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def apply_rlimits(limits: Limits) -> None:
    """Static limits for the session process (CPU time is budgeted per call with ``ITIMER_PROF``)."""
    address_space = _vm_size_bytes() + limits.memory_mb * 1024 * 1024
    for res, value in (
        (resource.RLIMIT_AS, address_space),
        (resource.RLIMIT_FSIZE, limits.file_mb * 1024 * 1024),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_NOFILE, limits.open_files),
    ):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            # e.g. NOFILE above the current hard limit: keep the lower existing one
            _, hard = resource.getrlimit(res)
            if hard == resource.RLIM_INFINITY or value < hard:
                resource.setrlimit(res, (value, hard if hard != resource.RLIM_INFINITY else value))


# --- landlock -------------------------------------------------------------------------------------

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on x86_64 and aarch64
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_FS_WRITE_ACCESS = {  # access right -> first ABI that has it
    1 << 1: 1,  # WRITE_FILE
    1 << 4: 1,  # REMOVE_DIR
    1 << 5: 1,  # REMOVE_FILE
    1 << 6: 1,  # MAKE_CHAR
    1 << 7: 1,  # MAKE_DIR
    1 << 8: 1,  # MAKE_REG
    1 << 9: 1,  # MAKE_SOCK
    1 << 10: 1,  # MAKE_FIFO
    1 << 11: 1,  # MAKE_BLOCK
    1 << 12: 1,  # MAKE_SYM
    1 << 13: 2,  # REFER
    1 << 14: 3,  # TRUNCATE
}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unavailable (old kernel, disabled, or blocked)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                                  ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def apply_landlock(writable_dir: str) -> int:
    """Restrict this process (and its future children) to writing beneath ``writable_dir``.

    Returns the ABI version applied (0: not available, nothing done).
    """
    abi = landlock_abi()
    if abi <= 0:
        return 0
    libc = _libc()
    fs = 0
    for right, since in _FS_WRITE_ACCESS.items():
        if abi >= since:
            fs |= right
    attr = _RulesetAttr(handled_access_fs=fs,
                        handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
                        scoped=(_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset_fd = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset_fd < 0:
        return 0
    try:
        dir_fd = os.open(writable_dir, os.O_PATH | os.O_DIRECTORY)
        try:
            rule = _PathBeneathAttr(allowed_access=fs, parent_fd=dir_fd)
            if libc.syscall(_SYS_ADD_RULE, ruleset_fd, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)):
                return 0
        finally:
            os.close(dir_fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
            return 0
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset_fd, ctypes.c_uint32(0)):
            return 0
    finally:
        os.close(ruleset_fd)
    return abi


# --- audit policy -----------------------------------------------------------------------------------

_BLOCKED_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile",
    "subprocess.Popen", "pty.spawn", "socket.__new__", "socket.socketpair", "socket.connect",
    "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "resource.setrlimit",
    "resource.prlimit", "os.setuid", "os.setgid", "os.chroot",
})
_PATH_EVENTS = {  # event -> indexes of path arguments that must stay inside the temp dir
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
    "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
    "shutil.rmtree": (0,), "shutil.move": (0, 1), "shutil.copyfile": (1,), "shutil.copytree": (1,),
    "os.mkfifo": (0,), "os.mknod": (0,),
}
_CTYPES_DENY = frozenset({
    "fork", "vfork", "clone", "clone3", "__clone", "system", "popen", "execv", "execve", "execvp",
    "execvpe", "execl", "execlp", "execle", "fexecve", "posix_spawn", "posix_spawnp", "kill", "killpg",
    "tgkill", "tkill", "raise_", "sigaction", "signal", "sigprocmask", "pthread_sigmask", "setrlimit",
    "prlimit", "prlimit64", "prctl", "ptrace", "syscall", "seccomp", "socket", "connect", "bind", "open",
    "open64", "openat", "openat64", "creat", "creat64", "fopen", "fopen64", "freopen", "unlink",
    "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "symlink", "symlinkat",
    "link", "linkat", "truncate", "truncate64", "chmod", "fchmodat", "chown", "setuid", "setgid",
    "unshare", "setns", "mount", "umount", "umount2", "chroot", "pivot_root", "daemon", "dlopen",
})
_OPEN_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _inside(path: object, root: str) -> bool:
    if isinstance(path, int):
        return True  # an already-open descriptor
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        return False
    full = os.path.realpath(os.path.abspath(os.fspath(path)))
    return full == root or full.startswith(root + os.sep) or full == os.devnull


def install_audit_policy(root: str) -> None:
    """Install the audit hook. ``root`` is the session's temp dir (writes are allowed beneath it)."""
    root = os.path.realpath(root)
    me = os.getpid()

    def deny(event: str, detail: str = "") -> None:
        raise PermissionError(f"sandbox: {event} is not allowed{': ' + detail if detail else ''}")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _OPEN_WRITE_FLAGS)
            if writing and not _inside(path, root):
                deny("writing", str(path))
        elif event in _BLOCKED_EVENTS:
            deny(event)
        elif event in ("os.kill", "os.killpg", "signal.pthread_kill"):
            if event == "os.kill" and args[0] in (me, 0):
                return
            deny(event)
        elif event == "ctypes.dlsym":
            name = args[1] if len(args) > 1 else ""
            if isinstance(name, bytes):
                name = name.decode("ascii", "replace")
            if isinstance(name, str) and name.lstrip("_") in _CTYPES_DENY | {n.lstrip("_") for n in _CTYPES_DENY}:
                deny("ctypes lookup", name)
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args) and not _inside(args[i], root):
                    deny(event, str(args[i]))

    sys.addaudithook(hook)
