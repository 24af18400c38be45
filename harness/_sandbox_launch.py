"""The sandbox's launcher (see ``harness.sandbox``): runs as its own short-lived process so
namespace and privilege changes never touch the harness. Started with ``python -S``.

    python -m harness._sandbox_launch '<json config>'   # run one program
    python -m harness._sandbox_launch --probe           # print the protections that work here

As root: unshare mount, network and PID namespaces; build the program's whole file system
as a minimal tree and pivot_root into it (a read-only tmpfs root holding read-only binds of
the toolchain paths it is allowed to read, a synthetic /etc/passwd, a minimal /dev, a private
/tmp, the run directory at its own path and writable, and /proc); fork the namespace's init,
which mounts a private /proc, forks the program under the sandbox uid with rlimits, waits,
and exits with the program's status (128 + signal when killed). When init exits, the kernel
kills everything left in the namespace; init dies with the launcher (PR_SET_PDEATHSIG), and
the harness kills the launcher on timeout.

The tree is built here with pivot_root rather than by bubblewrap: this launcher already owns
the namespaces, the PID-namespace init and the switch to the sandbox uid, and bubblewrap run
as root can only change the uid inside a user namespace (files then show up as owned by the
overflow uid); a tree is one tmpfs and a list of bind mounts.
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
MNT_DETACH = 2
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY, AT_RECURSIVE, AT_FDCWD, SYS_MOUNT_SETATTR = 0x1, 0x8000, -100, 442
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}.get(os.uname().machine, 155)
PR_SET_PDEATHSIG = 1

libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
                      data and data.encode()), f"mount {target}")


def _set_readonly(path: str, readonly: bool, recursive: bool) -> None:
    attr = _MountAttr(MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else MOUNT_ATTR_RDONLY, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    result = libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr))
    _check(result, f"mount_setattr {path}")


# The only users a program's tools can look up (getpwuid): root and the sandbox's uid.
PASSWD = "root:x:0:0:root:/:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
DEVICES = ("null", "zero", "random", "urandom", "full")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _bind_readonly(source: str, root: str) -> None:
    """``source`` at the same path in the tree, read-only; a symlink (Debian's /bin ->
    usr/bin) is recreated as the same symlink."""
    target = _inside(root, source)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        open(target, "a").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    _set_readonly(target, True, recursive=True)


def build_tree(root: str, workdir: str, reads: list[str], tmp_bytes: int) -> None:
    """The program's file system under ``root`` (an empty folder): nothing but ``reads``."""
    _mount("tmpfs", root, "tmpfs", MS_NOSUID, f"mode=0755,size={1 << 20}")
    for source in reads:
        if os.path.lexists(source):
            _bind_readonly(source, root)
    etc = _inside(root, "etc")
    os.makedirs(etc, exist_ok=True)
    for name, text in (("passwd", PASSWD), ("group", GROUP)):
        if not os.path.lexists(os.path.join(etc, name)):
            with open(os.path.join(etc, name), "w") as handle:
                handle.write(text)
    dev = _inside(root, "dev")
    os.makedirs(dev, exist_ok=True)
    for name in DEVICES:
        open(os.path.join(dev, name), "a").close()
        _mount(f"/dev/{name}", os.path.join(dev, name), None, MS_BIND)
    for name, target in DEV_LINKS.items():
        os.symlink(target, os.path.join(dev, name))
    os.makedirs(_inside(root, "proc"), exist_ok=True)
    tmp = _inside(root, "tmp")
    os.makedirs(tmp, exist_ok=True)
    _mount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_bytes}")
    os.makedirs(_inside(root, workdir), exist_ok=True)
    _mount(workdir, _inside(root, workdir), None, MS_BIND)


def isolate(workdir: str, root: str | None = None, reads: list[str] | None = None, tmp_bytes: int = 64 << 20) -> None:
    """New mount/net/PID namespaces. With ``root`` (an empty folder), the file system becomes
    the minimal tree built there; without, everything is read-only except ``workdir``."""
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if root is None:
        _mount(workdir, workdir, None, MS_BIND)
        _set_readonly("/", True, recursive=True)
        _set_readonly(workdir, False, recursive=False)
        return
    build_tree(root, workdir, reads or [], tmp_bytes)
    old = os.path.join(root, ".old-root")
    os.mkdir(old)
    _check(libc.syscall(SYS_PIVOT_ROOT, root.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old-root", MNT_DETACH), "umount old root")
    os.rmdir("/.old-root")
    _set_readonly("/", True, recursive=False)  # the tree's own folders; /tmp and the run directory stay writable


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
        isolate(workdir, config.get("root"), config.get("reads"), config["limits"]["file_bytes"])
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


def _probe_child(workdir: str, root: str | None) -> list[str]:
    """In a forked child: the protections that ``isolate`` gives (with the tree when ``root``)."""
    found = []
    try:
        isolate(workdir, root, ["/usr"] if root else None)
        found += ["netns", "mountns-readonly"] + (["minimal-root"] if root else [])
        grandchild = os.fork()
        if grandchild == 0:
            _drop_privileges(65534)
            os._exit(0 if os.getpid() == 1 else 3)
        if _status(os.waitpid(grandchild, 0)[1]) == 0:
            found += ["pidns", "uid"]
    except OSError:
        return []
    return found


def probe() -> list[str]:
    """Which protections work, tried in throwaway children (nothing here changes): the
    minimal tree first, then the read-only host tree where the tree cannot be built."""
    workdir = tempfile.mkdtemp(prefix="harness-sandbox-probe-")
    root = tempfile.mkdtemp(prefix="harness-sandbox-probe-root-")
    try:
        for tree in (root, None):
            read, write = os.pipe()
            child = os.fork()
            if child == 0:
                os.close(read)
                os.write(write, json.dumps(_probe_child(workdir, tree)).encode())
                os._exit(0)
            os.close(write)
            data = b""
            while chunk := os.read(read, 4096):
                data += chunk
            os.close(read)
            os.waitpid(child, 0)
            found = json.loads(data or b"[]")
            if found:
                return found
        return []
    finally:
        os.rmdir(workdir)
        os.rmdir(root)


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(probe()))
        sys.exit(0)
    sys.exit(run(json.loads(sys.argv[1])))
