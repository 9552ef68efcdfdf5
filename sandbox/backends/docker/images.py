"""Building the runner and controller images, online or fully air-gapped.

Air-gapped builds are a feature for isolated GPU clusters, not a workaround:
 - the base image comes from `debootstrap --variant=minbase bookworm` (python3, venv, the
   host's CA bundle) and `docker import`, so no registry is needed;
 - Python packages come from a wheelhouse downloaded on the host with pip (or one the user
   brought in on a disk) and served to the build on 127.0.0.1 only, installed with
   `--no-index`: no layer ever holds the wheels.
Images carry a hash of their inputs as a label and are rebuilt only when it changes.

What a build can reach, honestly: to let RUN steps fetch from a server bound to the host's
loopback, the build runs with `network_mode="host"`, so its RUN steps share the host's whole
network namespace (every interface and route the host has, and any service listening on the
host's loopback), not only the wheel server. That is acceptable because nothing untrusted
runs at build time: the Dockerfiles are this repository's own, pip runs with `--no-index`
against the loopback wheelhouse (it never consults an index, on the network or elsewhere),
and no generated code or job ever runs during a build; those run only in containers created
from the finished image, under a policy (`network_mode: none` by default). The wheel server
itself listens on 127.0.0.1 only, so it is never exposed beyond the host.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from docker.errors import NotFound

from sandbox.backends import RUNNER_IMAGE
from sandbox.backends.docker.engine import docker_host, engine_error_text
from sandbox.errors import ImageBuildError, SandboxUnavailableError

Progress = Callable[[str], None]
log = structlog.get_logger("sandlab.sandbox")

CONTROLLER_IMAGE = "sandlab-controller:latest"
OFFLINE_BASE_IMAGE = "sandlab-base:bookworm"
DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
HASH_LABEL = "sandlab.inputs-hash"
BASE_LABEL = "sandlab.base-image"
TORCH_VERSION = "2.14.1"
TORCHVISION_VERSION = "0.29.1"
RUNNER_PACKAGES = (
    f"torch=={TORCH_VERSION}", f"torchvision=={TORCHVISION_VERSION}", "numpy", "scikit-learn", "pytest",
)  # fmt: skip
DEBIAN_MIRROR_ENV = "SANDLAB_DEBIAN_MIRROR"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def sandlab_home() -> Path:
    """Folder holding Dockerfiles, policies and pyproject: the repo, or $SANDLAB_HOME."""
    env = os.environ.get("SANDLAB_HOME")
    return Path(env) if env else Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class ImageSpec:
    """One image sandlab builds."""

    tag: str
    dockerfile: str
    context_paths: tuple[str, ...]
    """Paths under sandlab_home() copied into the build context (and hashed)."""
    build_args: tuple[tuple[str, str], ...] = ()

    def context_files(self, home: Path) -> list[tuple[str, Path]]:
        """(archive name, host path) for every context file, sorted, no caches."""
        files: list[tuple[str, Path]] = [(self.dockerfile, home / self.dockerfile)]
        for rel in self.context_paths:
            path = home / rel
            if path.is_file():
                files.append((rel, path))
                continue
            for child in sorted(path.rglob("*")):
                if child.is_file() and "__pycache__" not in child.parts and child.suffix != ".pyc":
                    files.append((f"{rel}/{child.relative_to(path).as_posix()}", child))
        return sorted(files)

    def inputs_hash(self, home: Path | None = None) -> str:
        """sha256 of the Dockerfile, the context and the build args."""
        home = home or sandlab_home()
        digest = hashlib.sha256()
        for name, path in self.context_files(home):
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        for key, value in self.build_args:
            digest.update(f"{key}={value}\0".encode())
        return digest.hexdigest()[:32]


RUNNER = ImageSpec(
    RUNNER_IMAGE,
    "Dockerfile.runner",
    ("sandbox/harness",),
    (("TORCH_VERSION", TORCH_VERSION), ("TORCHVISION_VERSION", TORCHVISION_VERSION)),
)
CONTROLLER = ImageSpec(
    CONTROLLER_IMAGE,
    "Dockerfile.controller",
    ("pyproject.toml", "controller", "sandbox", "policies", "Dockerfile.runner"),
)


@dataclass(frozen=True)
class ImageState:
    """Whether an image exists and matches its inputs, or why that could not be told."""

    tag: str
    present: bool
    current: bool
    expected_hash: str
    found_hash: str | None
    base_image: str | None
    error: str | None = None
    """Set when the engine failed to answer (unreachable, or another engine error): then
    `present` is False because it is unknown, not because the image is missing."""
    required: bool = True
    """Whether runs need it; the controller's image only runs the controller in a container."""


def image_state(client: Any, spec: ImageSpec) -> ImageState:
    """Look the image up and compare its hash label with the inputs."""
    expected = spec.inputs_hash()
    try:
        image = client.images.get(spec.tag)
    except NotFound:
        return ImageState(spec.tag, False, False, expected, None, None)
    except Exception as exc:
        error = engine_error_text(exc)
        log.warning("images.lookup_failed", tag=spec.tag, reason=error)
        return ImageState(spec.tag, False, False, expected, None, None, error=error)
    image_labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    found = image_labels.get(HASH_LABEL)
    return ImageState(spec.tag, True, found == expected, expected, found, image_labels.get(BASE_LABEL))


def _image_present(client: Any, tag: str) -> bool:
    """Whether the engine has the image; an engine that cannot say raises, never reads as 'missing'."""
    try:
        client.images.get(tag)
    except NotFound:
        return False
    except Exception as exc:
        raise _unavailable(tag, exc) from exc
    return True


def _unavailable(tag: str, exc: BaseException) -> SandboxUnavailableError:
    msg = (
        f"the docker engine at {docker_host()} failed while looking up {tag} ({engine_error_text(exc)}); "
        "check that it is running, or run `controller doctor`"
    )
    return SandboxUnavailableError(msg)


def resolve_base(client: Any, base_image: str | None, offline: bool | None, progress: Progress) -> str:
    """Pick the base image: the given one, or pull the default, or build the offline base."""
    if base_image:
        if not _image_present(client, base_image) and not offline:
            progress(f"pulling {base_image}")
            try:
                client.images.pull(base_image)
            except Exception as exc:
                msg = f"cannot pull base image {base_image}; pass --offline to build without a registry"
                raise ImageBuildError(msg) from exc
        return base_image
    if offline is not True:
        if _image_present(client, DEFAULT_BASE_IMAGE):
            return DEFAULT_BASE_IMAGE
        progress(f"pulling {DEFAULT_BASE_IMAGE}")
        try:
            client.images.pull(DEFAULT_BASE_IMAGE)
        except Exception as exc:
            progress(
                f"cannot pull {DEFAULT_BASE_IMAGE}: no registry reachable ({engine_error_text(exc)}), "
                "switching to offline mode"
            )
        else:
            return DEFAULT_BASE_IMAGE
    if not _image_present(client, OFFLINE_BASE_IMAGE):
        build_offline_base(client, progress)
    return OFFLINE_BASE_IMAGE


def build_offline_base(client: Any, progress: Progress, mirror: str | None = None) -> str:
    """debootstrap a minimal bookworm with python3 and import it as sandlab-base:bookworm."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        msg = "debootstrap is not installed; run `apt-get install -y debootstrap` (or `make run`)"
        raise ImageBuildError(msg)
    if os.geteuid() != 0:
        msg = "the offline base image needs root for debootstrap; rerun as root or pass --base-image"
        raise ImageBuildError(msg)
    mirror = mirror or os.environ.get(DEBIAN_MIRROR_ENV, DEFAULT_DEBIAN_MIRROR)
    with tempfile.TemporaryDirectory(prefix="sandlab-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        progress(f"debootstrap bookworm from {mirror} (about a minute)")
        cmd = [
            debootstrap,
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            mirror,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            msg = f"debootstrap failed: {' | '.join(tail)}; set {DEBIAN_MIRROR_ENV} to a reachable mirror"
            raise ImageBuildError(msg)
        # The host's bundle carries any site CA (a TLS-intercepting proxy, say).
        if HOST_CA_BUNDLE.is_file():
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        archive = Path(scratch) / "rootfs.tar"
        progress("packing the root filesystem")
        with tarfile.open(archive, "w") as tar:
            tar.add(str(rootfs), arcname=".")
        progress(f"docker import -> {OFFLINE_BASE_IMAGE}")
        repo, _, tag = OFFLINE_BASE_IMAGE.partition(":")
        client.api.import_image(
            src=str(archive),
            repository=repo,
            tag=tag,
            changes=["ENV LANG=C.UTF-8", 'CMD ["python3"]'],
        )
    return OFFLINE_BASE_IMAGE


def wheelhouse_dir() -> Path:
    """Host cache of wheels: $SANDLAB_WHEELHOUSE or .cache/wheelhouse in the repo."""
    env = os.environ.get("SANDLAB_WHEELHOUSE")
    return Path(env) if env else sandlab_home() / ".cache" / "wheelhouse"


def fill_wheelhouse(dest: Path, requirements: list[str], progress: Progress) -> None:
    """`pip download` the requirements (no-op for what is there already)."""
    dest.mkdir(parents=True, exist_ok=True)
    stamp = dest / (".done-" + hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16])
    if stamp.exists():
        return
    progress(f"pip download into {dest}: {' '.join(requirements)}")
    cmd = [_host_python(), "-m", "pip", "download", "--quiet", "--dest", str(dest), *requirements]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-2:])
        msg = (
            f"pip download failed ({tail}); on an air-gapped host copy a wheelhouse in and set "
            "SANDLAB_WHEELHOUSE to its folder"
        )
        raise ImageBuildError(msg)
    stamp.touch()


def _host_python() -> str:
    return sys.executable


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve a folder read-only on 127.0.0.1 for the duration of a build; yield its URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def build_image(client: Any, spec: ImageSpec, base: str, wheelhouse_url: str, progress: Progress) -> None:
    """docker build from a minimal context; stream the steps to `progress`."""
    home = sandlab_home()
    with tempfile.TemporaryDirectory(prefix="sandlab-ctx-") as ctx:
        for name, path in spec.context_files(home):
            target = Path(ctx) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        buildargs = {"BASE_IMAGE": base, "WHEELHOUSE_URL": wheelhouse_url, **dict(spec.build_args)}
        stream = client.api.build(
            path=ctx,
            dockerfile=spec.dockerfile,
            tag=spec.tag,
            buildargs=buildargs,
            labels={HASH_LABEL: spec.inputs_hash(home), BASE_LABEL: base},
            # Host networking lets RUN reach the wheelhouse on 127.0.0.1; it also gives RUN
            # the host's whole network namespace, which is acceptable only because the
            # Dockerfiles are trusted and pip runs --no-index (see the module docstring).
            network_mode="host",
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                msg = f"building {spec.tag} failed: {chunk['error'].strip()}"
                raise ImageBuildError(msg)
            line = str(chunk.get("stream", "")).strip()
            if line.startswith("Step ") or line.startswith("Successfully tagged"):
                progress(f"{spec.tag}: {line}")


def build_all(
    client: Any,
    *,
    offline: bool | None = None,
    base_image: str | None = None,
    force: bool = False,
    progress: Progress = print,
    only: tuple[ImageSpec, ...] = (RUNNER, CONTROLLER),
) -> list[tuple[str, str]]:
    """Build what is missing or stale; return (tag, 'built'|'up to date') per image."""
    outcome: list[tuple[str, str]] = []
    todo = []
    for spec in only:
        state = image_state(client, spec)
        if state.error is not None:
            msg = (
                f"cannot tell whether {spec.tag} is built: the docker engine at {docker_host()} failed "
                f"({state.error}); check that it is running, or run `controller doctor`"
            )
            raise SandboxUnavailableError(msg)
        wanted_base = base_image or state.base_image
        if state.current and not force and (base_image is None or wanted_base == state.base_image):
            outcome.append((spec.tag, "up to date"))
        else:
            todo.append(spec)
    if not todo:
        return outcome
    base = resolve_base(client, base_image, offline, progress)
    house = wheelhouse_dir()
    for spec in todo:
        sub = house / ("runner" if spec is RUNNER else "controller")
        if spec is CONTROLLER:
            _wheel_sandlab(sub, progress)
        else:
            fill_wheelhouse(sub, list(RUNNER_PACKAGES), progress)
        with serve_directory(sub) as url:
            build_image(client, spec, base, url, progress)
        outcome.append((spec.tag, "built"))
    return outcome


def _wheel_sandlab(dest: Path, progress: Progress) -> None:
    """Build sandlab's own wheel and fetch its dependencies' wheels into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("sandlab-*.whl"):
        old.unlink()
    progress("pip wheel sandlab and its dependencies")
    cmd = [_host_python(), "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest), str(sandlab_home())]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-2:])
        msg = f"pip wheel failed: {tail}"
        raise ImageBuildError(msg)
