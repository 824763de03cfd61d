"""`arx-daemon service install`: keep a campaign running across reboots (systemd user unit or launchd)."""

from __future__ import annotations

import plistlib
import sys
from pathlib import Path

from .programs import ROOT

SYSTEMD = """[Unit]
Description=arx campaign {title}
After=network-online.target

[Service]
Type=simple
WorkingDirectory={root}
ExecStart={command}
Restart=on-failure
RestartSec=30
{env}
[Install]
WantedBy=default.target
"""


def install(program: str, tag: str, start_args: list[str], home: Path, system: str = sys.platform) -> tuple[Path, str]:
    """Write the unit file; return its path and the commands that enable it.

    The service runs `start --foreground`, restarts it only when it fails (a campaign that stops
    by request or reaches its limits stays stopped), and resumes the campaign after a reboot.
    """
    argv = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "start",
        "--program",
        program,
        "--tag",
        tag,
        *start_args,
        "--foreground",
    ]
    name = f"arx-{program}-{tag}"
    if system == "darwin":
        label = f"com.arx.{program}-{tag}"
        path = home / "Library" / "LaunchAgents" / f"{label}.plist"
        log = ROOT / "state" / "logs" / f"{program}-{tag}.log"
        log.parent.mkdir(parents=True, exist_ok=True)  # launchd does not create it, and cannot start the job without it
        text = launchd_plist(label, argv, log)
        how = f"launchctl load -w {path}"
    else:
        path = home / ".config" / "systemd" / "user" / f"{name}.service"
        env = (
            "# ANTHROPIC_API_KEY=... in this optional file lets Claude propose "
            "experiments\nEnvironmentFile=-%h/.config/arx.env\n"
        )
        text = SYSTEMD.format(title=f"{program}/{tag}", root=ROOT, command=" ".join(argv), env=env)
        how = (
            f"systemctl --user daemon-reload && systemctl --user enable --now {name}.service && loginctl "
            "enable-linger $USER"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path, how


def launchd_plist(label: str, argv: list[str], log: Path) -> str:
    """A launchd agent that runs `argv` at login and again if it fails (plistlib escapes the values)."""
    return plistlib.dumps(
        {
            "Label": label,
            "WorkingDirectory": str(ROOT),
            "ProgramArguments": argv,
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "StandardOutPath": str(log),
            "StandardErrorPath": str(log),
        }
    ).decode()
