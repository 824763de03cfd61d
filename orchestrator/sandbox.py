"""PLACEHOLDER until the sandbox branch lands: same API, no isolation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class SandboxUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Jail:
    writable: tuple[Path, ...] = ()
    visible: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    network: bool = False


@dataclass(frozen=True)
class Backend:
    name: str
    detail: str


def backend() -> Backend:
    return Backend("none", "placeholder")


def command(cmd: list[str], jail: Jail) -> list[str]:
    return list(cmd)


def environment(extra: dict[str, str]) -> dict[str, str]:
    keep = ("PATH", "LANG", "TERM", "HOME")
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith("LC_")} | extra
