"""The compiled-kernel cache of CPU trainers: made once per version of the trainer code, handed to its runs.

`mx.compile` on CPU turns each fused elementwise graph into C++ that MLX compiles with g++ and caches under
`$TMPDIR/mlx/<version>/cpu` (`<name>.cpp`, `lib<name>.so`): 44 kernels and 10-20 s for the default model, far
more than the start-up allowance of a run. So `experiment.compile_kernels` runs the trainer once per code version
with `ARX_COMPILE_ONLY=1` (a sandboxed compile phase with its own deadline, outside the training budget), and
every run of that code starts with a copy of what it compiled.

A cache is state that outlives a run: a hostile trainer that could put trained weights into "kernels" would keep
training in its re-run on another seed, or hand them to another candidate. What a run reads is therefore made
here, by trusted code, never taken from the phase that ran candidate code:

1. The compile phase sees no training data (its prepared folder holds a meta.json the daemon wrote: the
   vocabulary size) and writes only into a fresh folder. Its `g++` (STUB_COMPILER) makes MLX a stub library
   per kernel, so it traces the step without compiling anything for real.
2. Of what it wrote, only kernel sources are read (`<name>.cpp`, regular files, at most MAX_SOURCE_BYTES), and
   only those that parse exactly as MLX's code generator writes them (`parse`): one fixed header, argument and
   loop lines, then one typed assignment per graph node, whose right side is an input, a numeric literal, a
   cast, or one of MLX's elementwise functors (OPS) applied to earlier nodes. The kernel's name must be the one
   MLX derives from that body (`lib_name`, with libstdc++'s std::hash), so the name carries nothing of its own.
   Every compiled library the phase left (its `.so` files) and every other file is ignored.
3. The kept sources are compiled here, by g++ with MLX's own command (plus flags that let g++ vectorise the
   loops, and AVX2/FMA where the CPU has them: `cache_flags`), in a sandbox that runs no candidate code
   (`python -m orchestrator.measure.kernels --compile`), into the published cache.
4. Caps: at most MAX_KERNELS kernels, MAX_NODES graph nodes and MAX_CONSTANTS literals in all (the default
   model uses 44, 432 and 50). So whatever the phase computed, what reaches its runs is the graphs of at
   most MAX_KERNELS elementwise kernels: `capacity_bits` bounds that: about 6 KB at the caps, 1.6 KB for
   the default model.
5. The key (`cache_key`) is the content of every file of the worktree's trainer/, the vocabulary, MLX's
   version, the compiler and its flags, and the trusted code: changed trainer code gets a compile phase of its
   own, and no run reads a cache that other code made.
6. Each run gets a copy of the published cache as its TMPDIR: what a run writes there dies with it.

Not prevented: the compile phase reads what every jail shows, which for the `stdlib` dataset includes the Python
sources the interpreter runs from (training material) and `prepare.py` (to rebuild the tokenizer with); it may
compute on them until its deadline. Point 4 is what keeps that from mattering: a few KB of kernel graph is all
that leaves the phase.

A kernel refused here costs only time: the run compiles it itself, into its own TMPDIR.

    python -m orchestrator.measure.kernels --check DIR   # which sources under DIR a compile phase would keep, and why
    python -m orchestrator.measure.kernels --publish TMPDIR OUT   # the same, compiled as the daemon does (benchmarks)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STUB_COMPILER = Path(__file__).with_name("jit")  # the compile phase's `g++`: MLX gets stub libraries (see the file)
MANIFEST = "manifest.json"  # written last into a published cache: what it holds and what was refused, and why
MAX_KERNELS = 128
MAX_NODES = 1024  # graph nodes (inputs and tape) of all kernels together
MAX_CONSTANTS = 128  # literals of all kernels together
MAX_ENTRIES = 4 * MAX_KERNELS  # files of a compile phase's folder looked at (a source and a library per kernel)
MAX_SOURCE_BYTES = 64 << 10  # one kernel source (the default model's largest is under 2 KB)
MAX_NAME = 245  # MLX clips longer kernel names in file names (compiled.cpp: max_file_name_length)
MLX_FLAGS = ("-std=c++17", "-O3", "-Wall", "-fPIC")  # MLX's JitCompiler::build_command on Linux, without -shared
X86_FLAGS = ("-mavx2", "-mfma", "-mf16c")  # what MLX adds itself when built for AVX2, on a CPU that has all three
VECTOR_FLAGS = ("-fno-trapping-math", "-finline-limit=10000")  # g++ then inlines MLX's simd functors (its exp) and
#   vectorises 29 of the default model's 35 kernel loops (none without): the same operations per element in SIMD
#   lanes, so the same bits (no reassociation, NaN and infinities kept); +6% tokens per CPU-second (docs/results.md)
HASH_SEED = 0xC70F6907  # libstdc++'s std::hash<std::string> = _Hash_bytes(s, len, this seed)
PREAMBLE = "mlx/backend/cpu/compiled_preamble.h"
HEADER = (
    f'#include "{PREAMBLE}"\n'
    "\n"
    "#ifndef INFINITY\n"
    "#define INFINITY (std::numeric_limits<float>::infinity())\n"
    "#endif\n"
    "#ifndef NAN\n"
    "#define NAN (std::numeric_limits<float>::quiet_NaN())\n"
    "#endif\n"
    "using namespace mlx::core;\n"
    "using namespace mlx::core::detail;\n"
    'extern "C"  {\n'
)
TYPES = {  # C++ type -> MLX's kind letter and item size, as the kernel name spells them
    "bool": "b1",
    "uint8_t": "u1",
    "uint16_t": "u2",
    "uint32_t": "u4",
    "uint64_t": "u8",
    "int8_t": "i1",
    "int16_t": "i2",
    "int32_t": "i4",
    "int64_t": "i8",
    "float16_t": "f2",
    "float": "f4",
    "double": "f8",
    "bfloat16_t": "V2",
    "complex64_t": "c8",
}
OPS = frozenset(  # the functors of MLX's CPU preamble that a fused elementwise kernel may call
    """Abs ArcCos ArcCosh ArcSin ArcSinh ArcTan ArcTanh BitwiseInvert Ceil Conjugate Cos Cosh Erf ErfInv Exp Expm1
    Floor Imag Log Log2 Log10 Log1p LogicalNot Negative Real Round Rsqrt Sigmoid Sign Sin Sinh Sqrt Square Tan Tanh
    Add ArcTan2 Divide Multiply Subtract LogicalAnd LogicalOr BitwiseAnd BitwiseOr BitwiseXor LeftShift RightShift
    Remainder Maximum Minimum Power Equal NaNEqual NotEqual Greater GreaterEqual Less LessEqual LogAddExp
    Select""".split()
)
NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
LITERAL = re.compile(rf"{NUMBER}|-?INFINITY|NAN|true|false|complex64_t\({NUMBER}, {NUMBER}\)")
NAME = r"[A-Z]+"
TYPE = "|".join(re.escape(t) for t in TYPES)


class Refused(ValueError):
    """A file of the compile phase that the cache will not hold; the message says why."""


@dataclass(frozen=True)
class Kernel:
    """One kernel source that parsed: its name, and the numbers the caps count."""

    name: str
    file_name: str
    source: str
    nodes: int
    constants: int


# ---------------------------------------------------------------------------------------------
# The name MLX gives a kernel (mlx/compile.cpp Compiled::Compiled, mlx/backend/cpu/compiled.cpp compile)
# ---------------------------------------------------------------------------------------------
def std_hash(data: bytes) -> int:
    """libstdc++'s std::hash<std::string> on 64-bit Linux (_Hash_bytes in libsupc++/hash_bytes.cc)."""
    mask, mul = (1 << 64) - 1, (0xC6A4A793 << 32) + 0x5BD1E995

    def shift_mix(v: int) -> int:
        return v ^ (v >> 47)

    aligned = len(data) & ~7
    h = (HASH_SEED ^ (len(data) * mul)) & mask
    for at in range(0, aligned, 8):
        h = ((h ^ ((shift_mix((int.from_bytes(data[at : at + 8], "little") * mul) & mask) * mul) & mask)) * mul) & mask
    if len(data) & 7:
        h = ((h ^ int.from_bytes(data[aligned:], "little")) * mul) & mask
    return shift_mix((shift_mix(h) * mul) & mask)


def letters(n: int) -> str:
    """MLX's NodeNamer: the n-th name (1-based) of A..Z, AA, AB, ..."""
    out = ""
    while n > 0:
        out = chr(ord("A") + (n - 1) % 26) + out
        n = (n - 1) // 26
    return out


def file_name(kernel_name: str) -> str:
    """The file stem MLX uses for a kernel: long names clipped, with a hash of the rest in hex, width 16."""
    if len(kernel_name) <= MAX_NAME:
        return kernel_name
    cut = MAX_NAME - 16
    return f"{kernel_name[:cut]}_{std_hash(kernel_name[cut:].encode()):>16x}"


# ---------------------------------------------------------------------------------------------
# Parsing a kernel source as MLX writes it (build_kernel in mlx/backend/cpu/compiled.cpp)
# ---------------------------------------------------------------------------------------------
def parse(source: str, stem: str) -> Kernel:
    """The kernel in `source` (its file stem `stem`), or Refused: anything MLX's generator would not write."""
    if not source.startswith(HEADER):
        raise Refused("the header is not MLX's")
    lines = source[len(HEADER) :].split("\n")
    if lines[-3:] != ["}", "}", ""]:
        raise Refused("the kernel does not end as MLX's do")
    lines = lines[:-3]
    at = 0

    def take(pattern: str) -> re.Match | None:
        nonlocal at
        if at < len(lines) and (m := re.fullmatch(pattern, lines[at])):
            at += 1
            return m
        return None

    head = take(r"void (\w+)\(int\* shape, int64_t\*\* strides, void\*\* args\) \{")
    if head is None:
        raise Refused("no kernel signature")
    name = head.group(1)
    contiguous = name.endswith("_contiguous")
    strided = re.search(r"_strided_(\d+)$", name)
    if not (contiguous or strided):
        raise Refused("the name ends in neither _contiguous nor _strided_N")
    ndim = int(strided.group(1)) if strided else 0
    if file_name(name) != stem:
        raise Refused("the file name is not the kernel's")

    args: list[tuple[str, str, bool]] = []  # (name, type, has strides) in argument order
    n_strides = 0
    while m := take(rf"  ({TYPE})\* ({NAME}) = \(\1\*\)args\[(\d+)\];"):
        if int(m.group(3)) != len(args):
            raise Refused("arguments out of order")
        has = take(rf"  const int64_t\* {m.group(2)}_strides = strides\[(\d+)\];")
        if has and (contiguous or int(has.group(1)) != n_strides + 1):
            raise Refused("strides out of order")
        n_strides += bool(has)
        args.append((m.group(2), m.group(1), bool(has)))
    if contiguous:
        if not take(rf"  const size_t size = \(size_t\)args\[{len(args)}\];"):
            raise Refused("no size argument")
        if not take(r"  for \(size_t i = 0; i < size; \+\+i\) \{"):
            raise Refused("no loop")
    else:
        for d in range(ndim):
            if not take(rf"  for \(int i{d} = 0; i{d} < shape\[{d}\]; \+\+i{d}\) \{{"):
                raise Refused("no loop")

    arg_types = {n: t for n, t, _ in args}
    types: dict[str, str] = {}  # body name -> C++ type, of every input and node
    inputs: list[tuple[str, str]] = []  # (body name, kind C/S/V) in input order
    constants: list[str] = []
    while m := take(rf"  ({TYPE}) tmp_({NAME}) = (.+);"):
        ctype, var, rhs = m.groups()
        if var in types:
            raise Refused(f"{var} assigned twice")
        if LITERAL.fullmatch(rhs) and var not in arg_types:
            if not canonical(ctype, rhs):
                raise Refused(f"the literal {rhs[:40]} is not written as MLX writes it")
            inputs.append((var, "C"))
            constants.append(rhs)
        elif arg_types.get(var) == ctype and rhs in (f"{var}[i]" if contiguous else f"*{var}", f"{var}[0]"):
            inputs.append((var, "S" if rhs == f"{var}[0]" else "V"))
        else:
            at -= 1
            break
        types[var] = ctype
    readers = {v for v, kind in inputs if kind != "C"}
    tape: list[tuple[str, str, str, list[str]]] = []  # (body name, type, op, inputs)
    while m := take(rf"  ({TYPE}) tmp_({NAME}) = (.+);"):
        ctype, var, rhs = m.groups()
        if var in types:
            raise Refused(f"{var} assigned twice")
        if cast := re.fullmatch(rf"static_cast<({TYPE})>\(tmp_({NAME})\)", rhs):
            if cast.group(1) != ctype or cast.group(2) not in types:
                raise Refused("a cast of an unknown node")
            source_type = types[cast.group(2)]
            op, operands = ("Broadcast" if source_type == ctype else "AsType"), [cast.group(2)]
        elif call := re.fullmatch(rf"(\w+)\(\)\((tmp_{NAME}(?:, tmp_{NAME}){{0,2}})\)", rhs):
            op, operands = call.group(1), [o.removeprefix("tmp_") for o in call.group(2).split(", ")]
            if op not in OPS or any(o not in types for o in operands):
                raise Refused(f"{op}() is not one of MLX's functors, or reads an unknown node")
        else:
            raise Refused("a line MLX does not write")
        types[var] = ctype
        tape.append((var, ctype, op, operands))

    outputs = [n for n, _, _ in args if n not in readers]
    if not outputs or not tape or [n for n, _, _ in args][: len(readers)] != [v for v, k in inputs if k != "C"]:
        raise Refused("inputs and outputs out of order")
    for out in outputs:
        if not take(rf"  {out}\[i\] = tmp_{out};" if contiguous else rf"  \*{out}\+\+ = tmp_{out};"):
            raise Refused("an output is not written")
        if arg_types[out] != types.get(out) or any(has for n, _, has in args if n == out):
            raise Refused("an output's type or strides are wrong")
    for n, _, has in args:
        if n in readers and not contiguous and has != (dict(inputs)[n] == "V"):
            raise Refused("strides of an input are wrong")
    if contiguous:
        if not take(r"  \}"):
            raise Refused("the loop is not closed")
    else:
        movers = [n for n, _, has in args if has]
        for d in range(ndim - 1, -1, -1):
            for n in movers:
                if not take(rf"  {n} \+= {n}_strides\[{d}\];"):
                    raise Refused("pointer updates out of order")
                if d < ndim - 1 and not take(rf"  {n} -= {n}_strides\[{d + 1}\] \* shape\[{d + 1}\];"):
                    raise Refused("pointer updates out of order")
            if not take(r"  \}"):
                raise Refused("the loop is not closed")
    if at != len(lines):
        raise Refused("lines after the kernel")
    if not body_names(args, inputs, outputs, tape):
        raise Refused("the body names its nodes in an order MLX does not")
    expected = lib_name(inputs, outputs, tape, constants, types, arg_types) + (
        "_contiguous" if contiguous else f"_strided_{ndim}"
    )
    if expected != name:
        raise Refused("the kernel's name is not the one MLX derives from its body")
    return Kernel(name, stem, source, len(inputs) + len(tape), len(constants))


def canonical(ctype: str, text: str) -> bool:
    """True when a literal is written the one way MLX's print_constant writes its value (so its text carries no
    more than the value): floats with 9 significant digits (17 for double), integers plainly."""
    if text in ("true", "false", "NAN", "INFINITY", "-INFINITY"):
        return True
    if text.startswith("complex64_t("):
        return all(canonical("float", part) for part in text[len("complex64_t(") : -1].split(", "))
    if ctype in ("float", "float16_t", "bfloat16_t", "double"):
        value = float(text)
        return math.isfinite(value) and format(value, ".17g" if ctype == "double" else ".9g") == text
    return re.fullmatch(r"-?\d+", text) is not None and str(int(text)) == text


def body_names(args, inputs, outputs, tape) -> bool:
    """True when the body's names are MLX's NodeNamer order: arguments, then constants, then the tape."""
    order = [n for n, _, _ in args] + [v for v, k in inputs if k == "C"] + [v for v, *_ in tape if v not in outputs]
    return order == [letters(i + 1) for i in range(len(order))]


def lib_name(inputs, outputs, tape, constants, types, arg_types) -> str:
    """The kernel's name as Compiled::Compiled builds it, from the parsed body (names relettered inputs-first)."""
    rename = {v: letters(i + 1) for i, (v, _) in enumerate(inputs)}
    for var, *_ in tape:
        rename[var] = letters(len(rename) + 1)
    text = "".join(
        rename[var] + TYPES[ctype] + ("O" if var in outputs else "I") + op + "".join(rename[o] for o in operands)
        for var, ctype, op, operands in tape
    )
    kinds = "".join(kind for _, kind in inputs)
    dtypes = "".join(TYPES[types[v]] for v, kind in inputs if kind != "C")
    return f"{text}_{kinds}_{dtypes}_{std_hash(''.join(constants).encode())}"


def capacity_bits(kernels: list[Kernel]) -> int:
    """An upper bound of the bits a set of kernels can carry: for each node its op (or literal), its type and up
    to three operands among the kernel's nodes; 64 bits per literal; the kernel's shape (contiguous or ndim)."""
    bits = 0
    for k in kernels:
        per_node = math.log2(len(OPS) + 3) + math.log2(len(TYPES)) + 3 * math.log2(k.nodes + 1)
        bits += k.nodes * per_node + 64 * k.constants + 8
    return math.ceil(bits)


# ---------------------------------------------------------------------------------------------
# From a compile phase's folder to a published cache
# ---------------------------------------------------------------------------------------------
def mlx_version() -> str:
    return importlib.metadata.version("mlx")


def cache_dir(root: Path) -> Path:
    """Where MLX looks for its CPU kernels under a TMPDIR of `root`."""
    return root / "mlx" / mlx_version() / "cpu"


def mlx_include() -> Path | None:
    """MLX's C++ headers in this environment (found, not imported: the daemon never imports MLX)."""
    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        return None
    include = Path(next(iter(spec.submodule_search_locations))) / "include"
    return include if (include / PREAMBLE).exists() else None


@functools.cache
def backend() -> str:
    """cpu, metal or cuda (asked once per process): only the CPU backend compiles kernels to files."""
    from .. import fingerprint

    return fingerprint.backend()


@functools.cache
def compiler() -> str | None:
    """The C++ compiler MLX calls (`g++` on the PATH) and its version line, or None without one."""
    found = shutil.which("g++")
    if found is None:
        return None
    done = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    return f"{found} {done.stdout.splitlines()[0] if done.stdout else ''}"


@functools.cache
def cache_flags() -> tuple[str, ...]:
    """The flags of the trusted compile: MLX's, the vectoriser's, plus AVX2/FMA/F16C where this CPU has them all.
    The Linux wheel is built without them, so its kernels call the C library's software fma in every step of
    MLX's exp polynomial; with them that exp is 2.4x faster, the soft-capped loss 2.5x (docs/results.md)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return MLX_FLAGS + VECTOR_FLAGS
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return MLX_FLAGS + VECTOR_FLAGS + (X86_FLAGS if {"avx2", "fma", "f16c"} <= set(line.split()) else ())


def cache_key(worktree: Path, vocab_size: int, trusted: str) -> str:
    """Names a cache: every file of the worktree's trainer/ (path and bytes), the vocabulary, MLX, the compiler,
    the trusted code (`trusted`: its version hash). Any change to any of them is a new compile phase."""
    h = hashlib.sha256()
    folder = worktree / "trainer"
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(f"|{vocab_size}|{mlx_version()}|{compiler()}|{' '.join(cache_flags())}|{trusted}".encode())
    return h.hexdigest()[:20]


def read_regular(path: Path, limit: int) -> str | None:
    """The text of `path` if it is a regular file of at most `limit` bytes (never following a link), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def select(folder: Path) -> tuple[list[Kernel], dict[str, str]]:
    """The kernel sources in a compile phase's MLX folder that the cache may hold (in name order, within the
    caps), and every other entry with the reason it was left out."""
    kept: list[Kernel] = []
    refused: dict[str, str] = {}
    nodes = constants = 0
    entries = sorted(os.listdir(folder)) if folder.is_dir() else []
    for entry in entries[:MAX_ENTRIES]:
        if not entry.endswith(".cpp"):
            if not (entry.startswith("lib") and entry.endswith(".so")):
                refused[entry] = "not a kernel source"
            continue  # the phase's own libraries are never used: the cache's are compiled here
        source = read_regular(folder / entry, MAX_SOURCE_BYTES)
        if source is None:
            refused[entry] = f"not a regular UTF-8 file of at most {MAX_SOURCE_BYTES} bytes"
            continue
        try:
            kernel = parse(source, entry.removesuffix(".cpp"))
        except Refused as e:
            refused[entry] = str(e)
            continue
        if len(kept) == MAX_KERNELS or nodes + kernel.nodes > MAX_NODES or constants + kernel.constants > MAX_CONSTANTS:
            refused[entry] = f"over the caps ({MAX_KERNELS} kernels, {MAX_NODES} nodes, {MAX_CONSTANTS} literals)"
            continue
        kept.append(kernel)
        nodes, constants = nodes + kernel.nodes, constants + kernel.constants
    return kept, refused


def compile_sources(src: Path, out: Path, pch: Path | None, workers: int) -> dict[str, str]:
    """g++ on every `<name>.cpp` in `src` into `out/lib<name>.so` with `cache_flags()`; {file: error} of those that
    failed. Runs inside a sandbox (`python -m orchestrator.measure.kernels --compile`): sources only, no candidate code.
    `pch`: a folder holding the preamble precompiled with the same flags (g++ finds it before MLX's header)."""
    include = mlx_include()
    if include is None:
        return {p.name: "MLX's headers are not installed" for p in src.glob("*.cpp")}
    search = [*(["-I", str(pch)] if pch else []), "-I", str(include)]

    def one(path: Path) -> tuple[str, str | None]:
        lib = out / f"lib{path.stem}.so"
        cmd = ["g++", *cache_flags(), "-shared", *search, str(path), "-o", str(lib)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return path.name, (done.stdout + done.stderr)[-500:] if done.returncode else None

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(one, sorted(src.glob("*.cpp"))))
    return {name: error for name, error in results if error}


def ensure_pch(folder: Path | None = None, flags: tuple[str, ...] = MLX_FLAGS) -> Path | None:
    """`folder` (default: MLX's include folder) with MLX's preamble precompiled for `flags`, made once: a kernel
    then compiles in about 0.12 s instead of 0.5 s, g++ finding `<header>.gch` before the header by itself (a
    .gch made with other flags is ignored). Beside MLX's header it serves MLX's own compiles (the compile phase,
    a run's missing kernels); in the cache root, the trusted compile. Trusted output, read-only in every
    sandbox; None where it cannot be made (no g++, a read-only environment)."""
    include = mlx_include()
    if include is None or compiler() is None:
        return None
    folder = folder or include
    pch = folder / f"{PREAMBLE}.gch"
    if pch.exists():
        return folder
    pch.parent.mkdir(parents=True, exist_ok=True)
    partial = pch.with_name(f".{pch.name}.{os.getpid()}.partial")
    cmd = ["g++", *flags, "-I", str(include), "-x", "c++-header", str(include / PREAMBLE), "-o", str(partial)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            os.replace(partial, pch)
    except OSError:
        pass
    finally:
        partial.unlink(missing_ok=True)
    return folder if pch.exists() else None


def trusted_pch(root: Path) -> Path | None:
    """The precompiled preamble of the trusted compile, in the cache root, named by what makes it valid."""
    name = hashlib.sha256(f"{mlx_version()}|{compiler()}|{' '.join(cache_flags())}".encode()).hexdigest()[:12]
    return ensure_pch(root / f"pch-{name}", cache_flags())


def publish(raw: Path, src: Path, out: Path, root: Path, compile_with: Callable) -> dict:
    """Turn a compile phase's TMPDIR `raw` into a cache folder `out` and return its manifest (not yet written):
    the sources `select` keeps are written anew into `src` (nothing the phase left is copied as it is) and
    compiled into `out` by `compile_with(argv, visible folders, writable folder) -> {source: error}`, which runs
    the argv in a sandbox (or, for a benchmark of one's own code, as it is)."""
    if cache_dir(raw).resolve() != cache_dir(raw.resolve()):  # a folder on the way is a link the phase made
        kept, refused = [], {str(cache_dir(raw).relative_to(raw)): "a link, not MLX's folder"}
    else:
        kept, refused = select(cache_dir(raw))
    src.mkdir(parents=True, exist_ok=True)
    for kernel in kept:
        (src / f"{kernel.file_name}.cpp").write_text(kernel.source)
    libs = cache_dir(out)
    libs.mkdir(parents=True)
    cmd = [sys.executable, "-m", "orchestrator.measure.kernels", "--compile", str(src), str(libs)]
    pch = trusted_pch(root)
    failed = compile_with(cmd + (["--pch", str(pch)] if pch else []), (src, *([pch] if pch else [])), libs)
    return {
        "kernels": sorted(k.file_name for k in kept if f"{k.file_name}.cpp" not in failed),
        "refused": refused | failed,
        "nodes": sum(k.nodes for k in kept),
        "constants": sum(k.constants for k in kept),
        "capacity_bytes": capacity_bits(kept) // 8,
        "flags": " ".join(cache_flags()),
    }


def compile_here(cmd: list[str], visible: tuple[Path, ...], out: Path) -> dict[str, str]:
    """`publish`'s compile without a sandbox: for benchmarks of the checkout's own trainer."""
    from ..programs import ROOT

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.measure.kernels",
        description="Check or compile MLX CPU kernel sources for the kernel cache (see the module docstring).",
    )
    parser.add_argument("--check", type=Path, metavar="DIR", help="print (JSON) what a cache would keep of DIR")
    parser.add_argument("--compile", nargs=2, type=Path, metavar=("SRC", "OUT"), help="(internal) g++ SRC/*.cpp")
    parser.add_argument("--pch", type=Path, help="(internal) a folder with the preamble precompiled for --compile")
    parser.add_argument(
        "--publish",
        nargs=2,
        type=Path,
        metavar=("TMPDIR", "OUT"),
        help="what the daemon makes of a compile phase's TMPDIR, unsandboxed, into the new folder OUT (benchmarks)",
    )
    args = parser.parse_args(argv)
    if args.publish:
        raw, out = args.publish
        ensure_pch()
        print(json.dumps(publish(raw, out / "src", out, out.parent, compile_here), indent=2))
        return 0
    if args.compile:
        failed = compile_sources(*args.compile, pch=args.pch, workers=os.cpu_count() or 1)
        print(json.dumps(failed))
        return 0
    if args.check:
        kept, refused = select(args.check)
        report = {
            "kept": len(kept),
            "nodes": sum(k.nodes for k in kept),
            "constants": sum(k.constants for k in kept),
            "capacity_bytes": capacity_bits(kept) // 8,
            "refused": refused,
        }
        print(json.dumps(report, indent=2))
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
