"""`arx-daemon service install`: keep a campaign running across reboots (systemd user unit or launchd)."""

from __future__ import annotations

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

LAUNCHD = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>{label}</string>
  <key>WorkingDirectory</key><string>{root}</string>
  <key>ProgramArguments</key>
  <array>
{args}
  </array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>StandardOutPath</key><string>{log}</string>
  <key>StandardErrorPath</key><string>{log}</string>
</dict>
</plist>
"""


def install(program: str, tag: str, start_args: list[str], home: Path, system: str = sys.platform) -> tuple[Path, str]:
    """Write the unit file; return its path and the commands that enable it.

    The service runs `start --foreground`, restarts it only when it fails (a campaign that stops
    by request or reaches its limits stays stopped), and resumes the campaign after a reboot.
    """
    argv = [sys.executable, "-m", "orchestrator.cli", "start", "--program", program, "--tag", tag, *start_args, "--foreground"]
    name = f"arx-{program}-{tag}"
    if system == "darwin":
        label = f"com.arx.{program}-{tag}"
        path = home / "Library" / "LaunchAgents" / f"{label}.plist"
        args = "\n".join(f"    <string>{a}</string>" for a in argv)
        text = LAUNCHD.format(label=label, root=ROOT, args=args, log=ROOT / "state" / "logs" / f"{program}-{tag}.log")
        how = f"launchctl load -w {path}"
    else:
        path = home / ".config" / "systemd" / "user" / f"{name}.service"
        env = "# ANTHROPIC_API_KEY=... in this optional file lets Claude propose experiments\nEnvironmentFile=-%h/.config/arx.env\n"
        text = SYSTEMD.format(title=f"{program}/{tag}", root=ROOT, command=" ".join(argv), env=env)
        how = f"systemctl --user daemon-reload && systemctl --user enable --now {name}.service && loginctl enable-linger $USER"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path, how
