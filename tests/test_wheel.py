"""The built wheel is a working install: ``python -m build``, ``pip install dist/*.whl``.

An editable install reads templates, static files, the starter config and the Lua
scripts from the clone, so a file missing from ``package-data`` goes unnoticed until
someone installs the wheel: the dashboard has no pages, ``relay init`` has nothing to
write, and every Redis script fails to load. This builds the sdist and the wheel from it
(as ``python -m build`` does), compares the wheel with the source tree, installs it
into a fresh virtualenv and runs the commands a new user runs first.

Offline-friendly: the build uses this environment's setuptools (``--no-isolation``, the
dev extra pins a recent enough one) and the install is ``--no-deps``, with this
environment's site-packages appended to the new venv's path for the dependencies. The
new venv's own site-packages comes first, so ``relay`` is imported from the wheel.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What the package reads at run time besides its modules (pyproject's package-data).
DATA_DIRS = ["relay/dashboard/templates", "relay/dashboard/static", "relay/state/lua"]
DATA_FILES = ["relay/cli/starter.yaml", "relay/py.typed", "workers/py.typed"]


@dataclass
class Installed:
    wheel: Path
    venv: Path

    def run(self, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.pop("PYTHONPATH", None)
        return subprocess.run(
            [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )


def data_files_in_tree() -> set[str]:
    found = set(DATA_FILES)
    for folder in DATA_DIRS:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def fresh_clone(into: Path) -> Path:
    """The working tree's files as a clone has them: no ``*.egg-info`` left by an editable
    install, whose stale file list would otherwise put missing files into the build."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    dist = tmp_path_factory.mktemp("dist")
    clone = fresh_clone(tmp_path_factory.mktemp("clone"))
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(clone)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("*.whl")
    assert list(dist.glob("*.tar.gz")), "python -m build also makes the sdist"

    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
        + ["--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies come from this environment, after the wheel's own files.
    Path(purelib, "zz_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    yield Installed(wheel, venv)


def test_the_wheel_carries_every_data_file_of_the_tree(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    missing = sorted(data_files_in_tree() - names)
    assert not missing, f"not in the wheel: {missing}"
    assert any(n.startswith("relay/state/lua/lib/") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    extra = {n.split("/")[0] for n in names} - {"relay", "workers"}
    assert all(top.endswith(".dist-info") for top in extra), (
        f"installed besides the packages: {extra}"
    )


def test_relay_runs_from_the_installed_wheel(installed: Installed, tmp_path: Path) -> None:
    bin_dir = installed.venv / "bin"
    where = installed.run(
        bin_dir / "python",
        "-c",
        "import relay, workers; print(relay.__file__, workers.__file__)",
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(str(installed.venv)) for p in where.stdout.split()), where.stdout

    version = installed.run(bin_dir / "relay", "--version", cwd=tmp_path)
    assert version.returncode == 0 and "relay, version" in version.stdout, version

    init = installed.run(bin_dir / "relay", "init", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "sources:" in (tmp_path / "relay.yaml").read_text()

    check = installed.run(bin_dir / "relay", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "ok (1 sources, 1 targets, 1 routes)" in check.stdout


def test_the_installed_package_loads_its_scripts_and_serves_its_dashboard(
    installed: Installed, tmp_path: Path, redis_url: str
) -> None:
    """Every Lua script (with its ``lib/`` includes) runs on a real Redis, and the dashboard
    renders its login page and serves its static files, all from the installed copy."""
    probe = f"""
import redis
from importlib.resources import files
from pathlib import Path
from relay import create_app
from relay.settings import Settings
from relay.state import lua

client = redis.Redis.from_url({redis_url!r})
folder = files("relay.state").joinpath("lua")
names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".lua"))
for name in names:
    client.script_load(lua.script_text(name))  # compiles it; a missing include fails here
print("scripts", len(names))

app = create_app(Settings(redis_url={redis_url!r}, config=Path("relay.yaml"),
                          state_dir=Path(".relay")))
web = app.test_client()
for url in ("/dashboard/login", "/dashboard/static/dashboard.css",
            "/dashboard/static/dashboard.js"):
    answer = web.get(url)
    print(url, answer.status_code, len(answer.data))
"""
    assert installed.run(installed.venv / "bin" / "relay", "init", cwd=tmp_path).returncode == 0
    result = installed.run(installed.venv / "bin" / "python", "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    scripts = sum(1 for p in (ROOT / "relay/state/lua").glob("*.lua"))
    assert lines[0] == f"scripts {scripts}"
    for line in lines[1:]:
        url, status, size = line.split()
        assert status == "200" and int(size) > 0, line
