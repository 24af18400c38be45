"""The sandbox's launcher (see ``harness.sandbox``): runs as its own short-lived process so
namespace and privilege changes never touch the harness. Started with ``python -S``.

    python -m harness._sandbox_launch '<json config>'   # run one program
    python -m harness._sandbox_launch --probe           # print the protections that work here

As root: unshare mount, network and PID namespaces; make every mount read-only except the
run directory; fork the namespace's init, which mounts a private /proc, forks the program
under the sandbox uid with rlimits, waits, and exits with the program's status (128 + signal
when killed). When init exits, the kernel kills everything left in the namespace; init dies
with the launcher (PR_SET_PDEATHSIG), and the harness kills the launcher on timeout.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import tempfile

CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY, AT_RECURSIVE, AT_FDCWD, SYS_MOUNT_SETATTR = 0x1, 0x8000, -100, 442
PR_SET_PDEATHSIG = 1

libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags), None), f"mount {target}")


def _set_readonly(path: str, readonly: bool, recursive: bool) -> None:
    attr = _MountAttr(MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else MOUNT_ATTR_RDONLY, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    result = libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr))
    _check(result, f"mount_setattr {path}")


def isolate(workdir: str) -> None:
    """New mount/net/PID namespaces; everything read-only except ``workdir``."""
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount(workdir, workdir, None, MS_BIND)
    _set_readonly("/", True, recursive=True)
    _set_readonly(workdir, False, recursive=False)


def _limit(limits: dict) -> None:
    for name, value in (("RLIMIT_CPU", limits["cpu_s"]), ("RLIMIT_AS", limits["memory_mb"] << 20),
                        ("RLIMIT_NPROC", limits["processes"]), ("RLIMIT_FSIZE", limits["file_bytes"]),
                        ("RLIMIT_NOFILE", limits["open_files"]), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _status(status: int) -> int:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def run(config: dict) -> int:
    workdir, namespaces = config["workdir"], config["namespaces"]
    if namespaces:
        isolate(workdir)
        init = os.fork()
        if init:
            return _status(os.waitpid(init, 0)[1])
        # The namespace's init (pid 1).
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            pass  # the host /proc stays (read-only); the uid switch still hides the harness
    program = os.fork()
    if program == 0:
        try:
            os.chdir(workdir)
            if namespaces:
                _drop_privileges(config["uid"])
            _limit(config["limits"])
            os.execvpe(config["argv"][0], config["argv"], config["env"])
        except OSError as error:
            os.write(2, f"sandbox: cannot run {config['argv'][0]}: {error.strerror}\n".encode())
            os._exit(127)
    code = _status(os.waitpid(program, 0)[1])
    if namespaces:
        os._exit(code)  # init exits: the kernel kills whatever the program left running
    return code


def probe() -> list[str]:
    """Which protections work, tried in a throwaway child (nothing here changes)."""
    workdir = tempfile.mkdtemp(prefix="harness-sandbox-probe-")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        found = []
        try:
            isolate(workdir)
            found += ["netns", "mountns-readonly"]
            grandchild = os.fork()
            if grandchild == 0:
                _drop_privileges(65534)
                os._exit(0 if os.getpid() == 1 else 3)
            if _status(os.waitpid(grandchild, 0)[1]) == 0:
                found += ["pidns", "uid"]
        except OSError:
            pass
        os.write(write, json.dumps(found).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 4096):
        data += chunk
    os.waitpid(child, 0)
    os.rmdir(workdir)
    return json.loads(data or b"[]")


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(probe()))
        sys.exit(0)
    sys.exit(run(json.loads(sys.argv[1])))
