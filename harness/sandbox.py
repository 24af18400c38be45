"""Running model-written programs safely (code-repair tasks; DistiLRR, PAPERS.md §6).

``execute(command, files)`` runs one command in a fresh temporary directory and returns an
``Execution``. Every run gets, where the kernel and privileges allow (see ``isolation()``):

- its own network namespace with no interfaces up: connections fail;
- its own mount namespace whose whole file system is a minimal tree: read-only binds of
  ``BASE_READS`` (the toolchains under /usr, the loader's and TLS files) and of what the
  caller declares the program may read (a language's /etc entries, next to its toolchain in
  ``tasks.code_languages``), a synthetic /etc/passwd, /dev with null, zero, random, urandom
  and full, a private /proc, a private /tmp (tmpfs), and the run's directory at its own path,
  the only writable place on disk. No home folders, no checkout, no run store, no cache, no
  data mirror: what the program prints (and so what lands in samples and repair prompts)
  cannot hold the host's files. Where the tree cannot be built, the host's file system is
  mounted read-only instead (``isolation()`` lacks ``minimal-root``);
- its own PID namespace whose init is the program's launcher, tied to the harness by
  PR_SET_PDEATHSIG: when the run ends or is killed, every process it started dies with it
  (fork bombs, daemons, `setsid` escapes);
- an unprivileged uid (nobody's, 65534) with RLIMIT_NPROC: it cannot signal, ptrace or read
  the /proc of the harness, and a fork bomb hits the process cap;
- rlimits on CPU seconds, address space, file size, open files and core dumps; a wall-clock
  timeout that kills the whole process group; stdout and stderr capped (the run is killed
  when a cap is hit);
- a scrubbed environment (PATH, HOME and TMPDIR inside the run's directory, LANG; nothing
  of the harness's environment).

Without root (or without namespace support) the namespaces and the uid switch are skipped;
``isolation()`` and each ``Execution.isolation`` say what was applied, so a result never
claims more safety than it had. Without the network namespace a program *can* open network
connections; without the mount namespace it can write wherever the harness's user can.

Pass/fail follows the paper: a run passes only with exit code 0, empty stderr, no timeout
and no truncated output. Written by hand because no maintained PyPI sandbox does namespaces
plus rlimits without a container runtime (nsjail, firejail and bubblewrap are not on PyPI).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, cast

SANDBOX_UID = 65534  # nobody
# What every program may read: the toolchains (Debian puts them all under /usr; /bin, /lib
# and friends are symlinks into it, recreated as such), the dynamic loader's cache, the TLS
# roots, the alternatives links (java, node, ... resolve through /etc/alternatives), the
# time zone. A language adds its own /etc entries (``execute(reads=...)``).
BASE_READS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/etc/ld.so.conf",
              "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/ssl", "/etc/ca-certificates", "/etc/localtime",
              "/etc/nsswitch.conf")
# Every protection a root user gets on a capable kernel; ``missing_isolation()`` names the rest.
FULL_ISOLATION = ("rlimits", "process-group", "scrubbed-env", "private-tmpdir", "netns", "mountns-readonly",
                  "minimal-root", "pidns", "uid")


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0  # the paper's timeout
    cpu_s: int = 10
    memory_mb: int = 2048  # address space; Go and the JVM reserve a lot of virtual memory
    processes: int = 64
    output_bytes: int = 1 << 20  # per stream
    file_bytes: int = 64 << 20
    open_files: int = 256


@dataclass(frozen=True)
class Execution:
    exit_code: int | None  # None when killed by a signal
    stdout: str
    stderr: str
    timed_out: bool
    output_truncated: bool
    signal: int | None
    wall_s: float
    isolation: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.stderr.strip() and not self.timed_out and not self.output_truncated

    @property
    def error(self) -> str:
        """What a repair prompt shows the model: stderr, or why the run failed without one."""
        if self.timed_out:
            return "Timeout: the program did not finish in time."
        if self.output_truncated:
            return "Output limit exceeded."
        if self.stderr.strip():
            return self.stderr.strip()
        if self.exit_code not in (0, None):
            return f"Exited with code {self.exit_code}."
        if self.signal is not None:
            return f"Killed by signal {self.signal}."
        return ""

    def as_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


@cache
def isolation() -> tuple[str, ...]:
    """The protections this machine gives every run (probed once)."""
    applied = ["rlimits", "process-group", "scrubbed-env", "private-tmpdir"]
    if os.geteuid() != 0:
        return tuple(applied)
    probe = subprocess.run([sys.executable, "-S", "-m", "harness._sandbox_launch", "--probe"], capture_output=True, text=True)
    if probe.returncode == 0:
        applied += json.loads(probe.stdout)
    return tuple(applied)


def missing_isolation() -> tuple[str, ...]:
    """The protections this machine cannot give a program (empty when fully isolated)."""
    applied = set(isolation())
    return tuple(p for p in FULL_ISOLATION if p not in applied)


def _reads(extra: Sequence[str]) -> list[str]:
    """``BASE_READS`` and ``extra`` with globs expanded (``/etc/java-*-openjdk``), existing only."""
    import glob

    paths = [match for pattern in (*BASE_READS, *extra) for match in (sorted(glob.glob(pattern)) or [pattern])]
    return list(dict.fromkeys(p for p in paths if os.path.lexists(p)))


def _env(workdir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir / ".tmp"),
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", **extra,
    }


def execute(
    command: Sequence[str],
    files: Mapping[str, str | bytes] | None = None,
    limits: Limits = Limits(),
    stdin: str = "",
    env: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
    reads: Sequence[str] = (),
) -> Execution:
    """Run ``command`` (argv) in a new temporary directory holding ``files``. The program's
    file system holds ``BASE_READS``, ``reads`` (paths or globs, read-only) and its directory."""
    applied = isolation()
    workdir = Path(tempfile.mkdtemp(prefix="harness-sandbox-", dir=base_dir))
    tree = Path(tempfile.mkdtemp(prefix="harness-sandbox-root-")) if "minimal-root" in applied else None
    try:
        (workdir / ".tmp").mkdir()
        for name, content in (files or {}).items():
            path = workdir / name
            if path.resolve().parent != workdir.resolve() and workdir.resolve() not in path.resolve().parents:
                raise ValueError(f"sandbox file name escapes the run directory: {name}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        namespaces = "netns" in applied
        if namespaces:
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, SANDBOX_UID, SANDBOX_UID, follow_symlinks=False)
        config = {"workdir": str(workdir), "limits": asdict(limits), "namespaces": namespaces, "uid": SANDBOX_UID,
                  "argv": list(command), "env": _env(workdir, env or {}),
                  "root": str(tree) if tree else None, "reads": _reads(reads)}
        launcher = [sys.executable, "-S", "-m", "harness._sandbox_launch", json.dumps(config)]
        return _supervise(launcher, stdin, limits, applied)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if tree is not None:
            shutil.rmtree(tree, ignore_errors=True)  # only ever a mount point, in the launcher's namespace


def _supervise(launcher: list[str], stdin: str, limits: Limits, applied: tuple[str, ...]) -> Execution:
    began = time.monotonic()
    root = str(Path(__file__).resolve().parents[1])
    process = subprocess.Popen(
        launcher, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        cwd="/", env={"PATH": "/usr/bin:/bin", "PYTHONPATH": root},
    )
    assert process.stdin and process.stdout and process.stderr  # all three are pipes
    try:
        process.stdin.write(stdin.encode())
        process.stdin.close()
    except BrokenPipeError:
        pass
    streams: dict[IO[bytes], bytearray] = {process.stdout: bytearray(), process.stderr: bytearray()}
    selector = selectors.DefaultSelector()
    for stream in streams:
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
    timed_out = truncated = False
    while selector.get_map():
        remaining = limits.wall_s - (time.monotonic() - began)
        if remaining <= 0:
            timed_out = True
            break
        for key, _ in selector.select(timeout=min(remaining, 0.1)):
            stream = cast(IO[bytes], key.fileobj)
            chunk = stream.read(65536)
            if not chunk:
                selector.unregister(stream)
                continue
            buffer = streams[stream]
            buffer += chunk
            if len(buffer) > limits.output_bytes:
                del buffer[limits.output_bytes:]
                truncated = True
        if truncated:
            break
    _kill_group(process)
    selector.close()
    code = process.wait()
    wall = time.monotonic() - began
    stdout, stderr = (bytes(b).decode("utf-8", errors="replace") for b in streams.values())
    exit_code: int | None = code if code >= 0 else None
    killed: int | None = None if code >= 0 else -code
    if code >= 128 + 1 and "pidns" in applied:  # the launcher reports a signal as 128+n
        exit_code, killed = None, code - 128
    return Execution(exit_code, stdout, stderr, timed_out, truncated, killed, wall, applied)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
