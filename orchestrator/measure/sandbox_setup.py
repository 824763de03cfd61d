"""The trusted first process inside the `namespaces` sandbox: build the jail, drop every privilege, run the command.

`orchestrator.measure.sandbox.command()` starts this file as `unshare --user --map-root-user --mount --pid --fork
--kill-child --ipc [--net] -- env ARX_JAIL_SPEC=SPEC python -I -S sandbox_setup.py --jail -- CMD`, so it begins as
uid 0 of a fresh user namespace, holding every capability over a private copy of the mount table, as PID 1 of a
fresh PID namespace. The spec (every path to hide) is in its environment, not its command line: every process of
the jail can read /proc/1/cmdline, none /proc/1/environ (this process becomes undumpable).
It then:

1. makes every mount read-only, nosuid and nodev (device nodes open only from the minimal /dev below);
2. mounts a read-only /proc of the new PID namespace, a minimal /dev (null, zero, full, random, urandom, tty and
   the NVIDIA nodes, if any), and fresh tmpfs at /tmp and /dev/shm (SCRATCH_MB each);
3. covers each `hidden` path (an empty read-only tmpfs over a folder, /dev/null over a file), then binds the
   `visible` paths read-only and the `writable` paths read-write at their real paths, inside the covers if need be;
   the hidden files under a mask root vanish behind one read-only overlay of that root, whose top layer holds a
   whiteout for each (built on a tmpfs that is detached afterwards): the mount table names the root, not them;
4. drops every capability for good (bounding set, ambient, inheritable, securebits locked, no_new_privs), so that
   neither the command nor anything it starts can remount, unmount or mount anything, becomes undumpable, and
   installs a seccomp filter (no unix sockets, no io_uring, no memfd or System V memory, no mount, no other ABI),
   inherited by everything it starts;
5. forks the command and waits. PID 1 of a namespace ignores signals it has no handler for, so signals reach the
   command, not this process. When the command ends this process exits with its status, and the kernel kills
   whatever else is still running in the namespace. When `unshare` is killed, `--kill-child` kills this process,
   with the same effect.

Run with `-I -S`: no site, no environment variables read by Python, no import from the working directory. It
imports only the standard library and never imports orchestrator (the file is run by path). Exit status 125 and
one line on stderr when the jail cannot be built: it never runs the command in a half-built jail. Inside a jail
built by bwrap, `sandbox_setup.py --filter-only -- CMD` only installs the seccomp filter and runs the command.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import re
import signal
import stat
import sys

TMP = "/tmp"
HOME = "/tmp/home"
PYCACHE = "/tmp/pycache"
# /tmp and /dev/shm are RAM that no process's RSS shows, so the watchdog's memory cap cannot see them: each is
# capped here instead (the trainer's bulky scratch, compiled kernels and checkpoint, goes to its run folder).
SCRATCH_MB = 1024
SCRATCH = f"mode=1777,size={SCRATCH_MB}m"
SETUP_FAILED = 125
# LD_PRELOAD travels under this name and becomes LD_PRELOAD only for the command: a preloaded OpenBLAS starts
# threads in every process it is loaded into, and unshare(CLONE_NEWUSER) fails in a process with threads.
DEFERRED_PRELOAD = "ARX_SANDBOX_LD_PRELOAD"
JAIL_SPEC = "ARX_JAIL_SPEC"  # the jail's spec, in this process's environment (unreadable inside: it is undumpable)
FILTER_ONLY = "--filter-only"
LAYERS = "/dev/.arx-masks"  # where the overlays' top layers are built; detached once the overlays are mounted
MNT_DETACH = 2
DEVICES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"]
GPU_DEVICES = "/dev/nvidia*"
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
KEPT_FLAGS = 1 | 2 | 4 | 8 | 16 | 1024 | 2048 | 4096  # statvfs ST_* bits = MS_* bits; the kernel may lock these
LOCKED_DOWN = MS_RDONLY | MS_NOSUID | MS_NODEV

PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 4, 24, 28, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE, each with its lock, and KEEP_CAPS locked off.
SECUREBITS = 0b11101111
CAP_VERSION_3 = 0x20080522
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # audit arch
REFUSED = {  # system call: its number on x86_64, on aarch64
    "io_uring_setup": (425, 425),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "sched_setaffinity": (203, 122),
    "memfd_create": (319, 279),
    "memfd_secret": (447, 447),
    "shmget": (29, 194),
    "msgget": (68, 186),
    "mount": (165, 40),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "mount_setattr": (442, 442),
    # whether a page of a file is cached is a bit one jail can set (read it, evict it) and another can read: the
    # model processes of one evaluation share the read-only files of the venv and the worktree
    "mincore": (27, 232),
    "fadvise64": (221, 223),
    "cachestat": (451, 451),
    "process_madvise": (440, 440),
}
# system calls refused for some values of one argument: (its numbers on x86_64, aarch64), argument index, test, values
ARGUMENT_CHECKS = {
    "socket": ((41, 198), 0, "equals", (1,)),  # AF_UNIX
    "madvise": ((28, 233), 2, "equals", (20, 21)),  # MADV_COLD, MADV_PAGEOUT: evict a shared file's pages
    "preadv2": ((327, 286), 5, "has bits", (8,)),  # RWF_NOWAIT: fails when the page is not cached
}
X32_BIT = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    result = libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    check(result, f"mount {source or ''} on {target}")


def remount(target: str, add: int, remove: int = 0) -> None:
    """Change the flags of the mount at `target` alone, keeping the ones the kernel locked (nosuid, nodev, atime...)."""
    flags = (os.statvfs(target).f_flag & KEPT_FLAGS | add) & ~remove
    mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])  # \040 is a space
            if point not in points:
                points.append(point)
    return points


def lock_down_all_mounts() -> None:
    """Every mount read-only, nosuid, nodev. A mount this process cannot reach, the command cannot reach either."""
    for point in mount_points():
        try:
            flags = os.statvfs(point).f_flag
        except OSError:
            continue  # shadowed by a later mount, or out of this user's reach (and so out of the command's)
        if flags & LOCKED_DOWN != LOCKED_DOWN:
            remount(point, LOCKED_DOWN)


def bind(fd: int, target: str, add: int, remove: int = 0) -> None:
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    remount(target, add, remove)


def make_mount_point(target: str, like_fd: int) -> None:
    """Create an empty folder or file at `target` (inside a cover or the private /tmp) to bind onto."""
    if os.path.lexists(target):
        return
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if stat.S_ISDIR(os.fstat(like_fd).st_mode):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError as e:
        raise SetupError(f"cannot expose {target}: no place to mount it ({e.strerror})") from None


def build_dev(fds: dict[str, int]) -> None:
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for path, fd in fds.items():
        make_mount_point(path, fd)
        bind(fd, path, MS_RDONLY | MS_NOSUID | MS_NOEXEC, remove=MS_NODEV)
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/shm")
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, SCRATCH)
    os.mkdir(LAYERS)
    remount("/dev", MS_RDONLY)


def build_layers(masks: dict[str, list[str]]) -> dict[str, str]:
    """For each mask root, a folder (on a tmpfs at LAYERS) holding a whiteout for each of its hidden files, its
    folders with the real ones' modes and times: the top layer of the root's overlay."""
    mount("tmpfs", LAYERS, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=16m")
    layers = {}
    for i, (root, files) in enumerate(sorted(masks.items())):
        layer = f"{LAYERS}/{i}"
        folders = sorted({os.path.dirname(rel) for rel in files} | {""}, key=lambda f: -f.count("/"))
        for folder in folders:
            os.makedirs(os.path.join(layer, folder), exist_ok=True)
        for rel in files:
            try:
                os.mknod(os.path.join(layer, rel), stat.S_IFCHR | 0o000, os.makedev(0, 0))  # a whiteout: absent
            except OSError:  # a kernel that refuses whiteouts to a user namespace (before 5.8): empty instead
                os.close(os.open(os.path.join(layer, rel), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        for folder in {p for f in folders for p in parents(f)}:
            real = os.stat(os.path.join(root, folder))
            os.chmod(os.path.join(layer, folder), stat.S_IMODE(real.st_mode))
            os.utime(os.path.join(layer, folder), ns=(real.st_atime_ns, real.st_mtime_ns))
        layers[root] = layer
    remount(LAYERS, MS_RDONLY)
    return layers


def parents(folder: str) -> list[str]:
    """'a/b' -> ['a/b', 'a', '']"""
    found = [folder]
    while folder:
        folder = os.path.dirname(folder)
        found.append(folder)
    return found


def overlay(root: str, layer: str, files: list[str], null: int) -> None:
    """Hide `files` under `root` with one read-only overlay whose top layer holds whiteouts for them: the mount
    table then names `root` only. Where the kernel or the file system refuses the overlay, one /dev/null bind per
    file instead (which the mount table names)."""
    if not any(c in root for c in ":,\\"):  # the separators of overlay's options
        try:
            mount("overlay", root, "overlay", LOCKED_DOWN, f"lowerdir={layer}:{root}")
            return
        except SetupError:
            pass
    for rel in files:
        path = os.path.join(root, rel)
        if os.path.lexists(path):
            bind(null, path, MS_RDONLY | MS_NOSUID | MS_NOEXEC, remove=MS_NODEV)


def open_path(path: str) -> int:
    return os.open(path, os.O_PATH | os.O_CLOEXEC)


def depth_order(paths: list[str]) -> list[str]:
    return sorted(paths, key=lambda p: (p.count("/"), p))


def build_jail(spec: dict) -> None:
    devices = {p: open_path(p) for p in [*DEVICES, *sorted(glob.glob(GPU_DEVICES))] if os.path.exists(p)}
    visible = {p: open_path(p) for p in depth_order(spec["visible"]) if os.path.exists(p)}
    writable = {p: open_path(p) for p in depth_order(spec["writable"])}  # must exist: the caller checked
    null = devices["/dev/null"]

    lock_down_all_mounts()
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    forbid_nested_user_namespaces()
    # uid 0 inside is the owner of root's sysctls (kernel.core_pattern runs a program as host root) when the
    # daemon is root: nothing under /proc is writable
    remount("/proc", MS_RDONLY)
    build_dev(devices)
    masks = spec.get("masks", {})
    layers = build_layers(masks) if masks else {}
    mount("tmpfs", TMP, "tmpfs", MS_NOSUID | MS_NODEV, SCRATCH)
    os.mkdir(HOME, 0o700)

    # The deepest entry wins: covers, re-exposures, writable binds and masks are applied shallow to deep, so a
    # hidden path inside a visible one (the state folder or a masked stdlib file inside an exposed checkout or
    # Python) stays hidden, and a visible path inside a hidden one shows through.
    covers = []
    order = {"hidden": 0, "visible": 1, "writable": 2, "masked": 3}
    entries = [(p, kind) for kind in order for p in (masks if kind == "masked" else spec[kind])]
    for path, kind in sorted(entries, key=lambda e: (e[0].count("/"), order[e[1]], e[0])):
        if kind == "hidden":
            if not os.path.lexists(path):
                continue  # absent, or already under a cover
            if os.path.isdir(path) and not os.path.islink(path):
                mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k")
                covers.append(path)
            else:
                bind(null, path, MS_RDONLY | MS_NOSUID | MS_NOEXEC, remove=MS_NODEV)
        elif kind == "visible" and path in visible:
            make_mount_point(path, visible[path])
            bind(visible[path], path, LOCKED_DOWN)
        elif kind == "writable":
            make_mount_point(path, writable[path])
            bind(writable[path], path, MS_NOSUID | MS_NODEV, remove=MS_RDONLY)
        elif kind == "masked" and os.path.isdir(path):
            overlay(path, layers[path], masks[path], null)
    for path in covers:
        remount(path, MS_RDONLY)
    if masks:  # out of reach from now on: the overlays hold their own references to the layers
        check(libc.umount2(LAYERS.encode(), MNT_DETACH), f"detach {LAYERS}")
    for fd in [*devices.values(), *visible.values(), *writable.values()]:
        os.close(fd)


def forbid_nested_user_namespaces() -> None:
    """Defence in depth: inherited mounts are locked in a nested user namespace anyway, so this may fail quietly."""
    try:
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
    except OSError:
        pass


def drop_privileges() -> None:
    check(libc.prctl(PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0), "lock securebits")
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):
        check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap} from the bounding set")
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable for capabilities 0-31 and 32-63: all zero
    check(libc.capset(header, data), "clear capabilities")
    check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "become undumpable")


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def filter_syscalls() -> None:
    """A seccomp filter: no unix socket, no io_uring, no kernel keyrings, no CPU affinity change, no anonymous
    shared memory, no mount, no probe or eviction of the page cache, no other ABI.

    A unix socket on the host is reached by its path, and a read-only mount does not stop a connect(): the
    daemon's user (root, or the user with its session bus and `systemd --user`) would be a connect() away from
    running anything outside. socketpair() stays allowed (pipes between processes of the phase). io_uring's
    operations bypass seccomp; the session keyring inherited from the daemon may hold its user's secrets. A Ray
    slot pins its phase to the slot's cores: a candidate that widened its own CPU set would train on its siblings'.
    A memfd, a secret memfd, a System V segment or message queue, written and unmapped, is RAM in no process's
    RSS and on no capped mount; so would be a tmpfs of any size mounted in a nested user namespace (where
    mounting is allowed again, over locked copies of the jail's mounts). mincore, cachestat, posix_fadvise,
    madvise(MADV_PAGEOUT or MADV_COLD), process_madvise and preadv2(RWF_NOWAIT) read or reset whether a page of a
    shared read-only file is in the page cache: a channel between two model processes that carried 360 bits.
    Honest MLX, numpy and Python use none of them (the evaluation tests run in this filter).
    """
    machine = os.uname().machine
    if machine not in ARCHES:
        raise SetupError(f"no system call filter for {machine}")
    column = list(ARCHES).index(machine)
    program = assemble(ARCHES[machine], [numbers[column] for numbers in REFUSED.values()], column)
    filters = (SockFilter * len(program))(*[SockFilter(*op) for op in program])
    prog = SockFprog(len(program), filters)
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "install the system call filter")


def assemble(arch: int, denied: list[int], column: int) -> list[tuple[int, int, int, int]]:
    """The classic-BPF program of `filter_syscalls`, jumps resolved from labels."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ/JGE/JSET|BPF_K
    allow, kill, deny = 0x7FFF0000, 0x80000000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, _KILL_PROCESS, _ERRNO(EPERM)
    # (op, jump if true, jump if false, k): a jump is a label or None (the next instruction)
    code: list[tuple] = [
        (ld, None, None, 4),
        (jeq, None, "kill", arch),
        (ld, None, None, 0),
        (jge, "deny", None, X32_BIT),
    ]
    code += [(jeq, "deny", None, nr) for nr in denied]
    code += [(jeq, name, None, numbers[column]) for name, (numbers, *_) in ARGUMENT_CHECKS.items()]
    code.append((ret, None, None, allow))
    for name, (_, index, test, values) in ARGUMENT_CHECKS.items():
        code.append(name)  # a label
        code.append((ld, None, None, 16 + 8 * index))  # seccomp_data.args[index], its low 32 bits (little-endian)
        code += [(jset if test == "has bits" else jeq, "deny", None, value) for value in values]
        code.append((ret, None, None, allow))
    code += ["kill", (ret, None, None, kill), "deny", (ret, None, None, deny)]
    at, count = {}, 0
    for entry in code:
        if isinstance(entry, str):
            at[entry] = count
        else:
            count += 1
    program = []
    for entry in (e for e in code if not isinstance(e, str)):
        op, jt, jf, k = entry
        here = len(program) + 1  # jumps count from the next instruction
        program.append((op, 0 if jt is None else at[jt] - here, 0 if jf is None else at[jf] - here, k))
    return program


def exec_command(cmd: list[str]) -> None:
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    if DEFERRED_PRELOAD in os.environ:
        os.environ["LD_PRELOAD"] = os.environ.pop(DEFERRED_PRELOAD)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print(f"arx sandbox: cannot run {cmd[0]}: {e.strerror}", file=sys.stderr)
        os._exit(127)


def run(cmd: list[str]) -> int:
    """Fork the command and wait for it, reaping orphans; its exit status becomes ours (128 + n for signal n)."""
    child = os.fork()
    if child == 0:
        exec_command(cmd)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return SETUP_FAILED
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--" or sys.argv[1] not in ("--jail", FILTER_ONLY):
        sys.exit(f"usage: {JAIL_SPEC}=SPEC_JSON sandbox_setup.py --jail -- COMMAND...  |  --filter-only -- COMMAND...")
    mode, cmd = sys.argv[1], sys.argv[3:]
    spec = os.environ.pop(JAIL_SPEC, None)  # never passed on to the command
    if mode == FILTER_ONLY:  # inside a jail built by bwrap, which already set no_new_privs
        try:
            filter_syscalls()
        except SetupError as e:
            print(f"arx sandbox: cannot build the jail: {e}", file=sys.stderr)
            os._exit(SETUP_FAILED)
        exec_command(cmd)
    # PID 1 is not killed by signals it does not handle; Python's own SIGINT handler would make it the exception.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        cwd = os.getcwd()
        if spec is None:
            raise SetupError(f"no {JAIL_SPEC} in the environment")
        build_jail(json.loads(spec))
        drop_privileges()
        filter_syscalls()
        os.chdir(cwd)  # through the new mounts: the old cwd could still see a covered folder
    except (SetupError, OSError) as e:
        print(f"arx sandbox: cannot build the jail: {e}", file=sys.stderr)
        os._exit(SETUP_FAILED)
    os._exit(run(cmd))


if __name__ == "__main__":
    main()
