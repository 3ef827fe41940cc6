"""Small helpers shared across the engine (one copy each).

Checked files: :func:`atomic_torch_save` writes a ``torch.save`` zip whose zip comment (the last
bytes of the file, which zip readers and ``torch.load`` skip) is ``nasviz-sha256:<hex>``, the
SHA-256 of every byte before it; :func:`read_checked` verifies it. So a file changed after it was
written, by a single flipped byte anywhere, is refused, and the file is still a plain torch file.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch
from torch import nn

from nasviz.errors import CorruptFileError, NasvizError

__all__ = [
    "atomic_torch_save",
    "device_of",
    "mha_fastpath_off",
    "parameter_users",
    "read_checked",
    "signature_of",
    "training_flags",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_HASH_MAGIC = b"nasviz-sha256:"
_TRAILER_LEN = len(_HASH_MAGIC) + 64
_EOCD_SIG = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes, then the comment
_EOCD_LEN = 22
#: temp files of the previous format (``tempfile.mkstemp``) are removed once this old (seconds)
_LEGACY_TMP_AGE = 600.0


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def signature_of(source: Callable[_P, object]) -> Callable[[Callable[..., _R]], Callable[_P, _R]]:
    """Decorator: a function that passes ``*args, **kwargs`` on to ``source`` takes ``source``'s
    parameters (a class: its ``__init__``'s), for the type checker and for ``inspect.signature``
    and ``help()``, without writing the parameter list out a second time.

    Example::

        >>> @signature_of(Distiller)
        ... def distill(*args: Any, **kwargs: Any) -> DistillResult:
        ...     return Distiller(*args, **kwargs).run()
    """

    def apply(fn: Callable[..., _R]) -> Callable[_P, _R]:
        returns = inspect.signature(fn).return_annotation
        # mypy: a Callable has no __signature__; inspect reads it from any function
        fn.__signature__ = inspect.signature(source).replace(return_annotation=returns)  # type: ignore[attr-defined]
        return fn

    return apply


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and set it straight back)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, it is someone else's
        return True
    return True


def _clean_orphans(target: Path) -> None:
    """Remove temp files that interrupted saves to ``target`` left behind: ours whose process is
    gone, and ``mkstemp`` ones of the previous format once they are old.
    """
    ours = re.compile(re.escape(f".{target.name}.nasviz-") + r"(\d+)-[0-9a-f]+\.tmp")
    legacy = re.compile(re.escape(f".{target.name}.") + r"[a-z0-9_]{8}\.tmp")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        m = ours.fullmatch(entry.name)
        try:
            if (m and not _pid_alive(int(m.group(1)))) or (
                legacy.fullmatch(entry.name)
                and now - entry.stat(follow_symlinks=False).st_mtime > _LEGACY_TMP_AGE
            ):
                os.unlink(entry.path)
        except OSError:
            pass  # removed meanwhile, or not ours to remove


def _append_hash(f: io.BufferedRandom) -> None:
    """Give the zip ``torch.save`` just wrote to ``f`` its content-hash comment."""
    f.seek(-_EOCD_LEN, os.SEEK_END)
    eocd = f.read(_EOCD_LEN)
    if eocd[:4] != _EOCD_SIG or eocd[-2:] != b"\x00\x00":
        msg = "torch.save wrote no zip end record without a comment; cannot hash it"
        raise NasvizError(msg)
    f.seek(-2, os.SEEK_END)
    f.write(_TRAILER_LEN.to_bytes(2, "little"))
    f.seek(0)
    digest = hashlib.sha256()
    while chunk := f.read(1 << 20):
        digest.update(chunk)
    f.seek(0, os.SEEK_END)
    f.write(_HASH_MAGIC + digest.hexdigest().encode("ascii"))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically, with a content hash (see the module docstring).

    A temp file in the target's directory is written, flushed to disk and moved into place, so
    an existing file survives any failure. A symlink is written through (the link stays), the
    mode of an existing target is kept (a new file gets the umask's), and temp files left by
    earlier interrupted saves to the same target are removed. Errors name ``path``.
    """
    target = Path(path)
    real = Path(os.path.realpath(target))
    _clean_orphans(real)
    tmp = real.parent / f".{real.name}.nasviz-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        try:
            mode = real.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w+b") as f:
            torch.save(obj, f)
            _append_hash(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, real)
        _fsync_dir(real.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _naming(e, target) from e
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        _add_note(e, f"nasviz was saving to {os.fspath(target)!r} (left unchanged)")
        raise


def _naming(e: OSError, target: Path) -> OSError:
    """``e`` with ``target`` as its file name (not the temp file), same type and errno."""
    try:
        if e.errno is not None:
            return type(e)(e.errno, f"could not save (nothing changed): {e.strerror}", str(target))
        return type(e)(f"could not save to {os.fspath(target)!r} (nothing changed): {e}")
    except Exception:  # an OSError subclass with another constructor
        _add_note(e, f"nasviz was saving to {os.fspath(target)!r} (left unchanged)")
        return e


def _add_note(e: BaseException, note: str) -> None:
    """``e.add_note(note)`` (shown under the traceback on Python >= 3.11)."""
    e.__notes__ = [*getattr(e, "__notes__", []), note]  # type: ignore[attr-defined]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checked(path: str | os.PathLike[str]) -> tuple[bytes, bool]:
    """The bytes of ``path`` and whether they carry a content hash (verified).

    Raises :class:`CorruptFileError` when the hash is there and does not match; a file without
    one (written by ``torch.save``, or by nasviz <= 0.1) is returned with ``False``.
    """
    data = Path(path).read_bytes()
    eocd_at = len(data) - _TRAILER_LEN - _EOCD_LEN
    if eocd_at < 0 or data[eocd_at : eocd_at + 4] != _EOCD_SIG:
        return data, False
    if data[eocd_at + _EOCD_LEN - 2 : eocd_at + _EOCD_LEN] != _TRAILER_LEN.to_bytes(2, "little"):
        return data, False
    trailer = data[-_TRAILER_LEN:]
    if not trailer.startswith(_HASH_MAGIC):
        return data, False
    body = data[:-_TRAILER_LEN]
    if hashlib.sha256(body).hexdigest().encode("ascii") != trailer[len(_HASH_MAGIC) :]:
        msg = (
            f"{os.fspath(path)!r} does not match its content hash: the file was changed or "
            "damaged after nasviz wrote it. Use another copy, or save the model again"
        )
        raise CorruptFileError(msg)
    return data, True


def parameter_users(model: nn.Module) -> dict[int, list[tuple[str, str]]]:
    """``id(parameter)`` -> every ``(module name, parameter name)`` holding it (tied weights
    have several).
    """
    users: dict[int, list[tuple[str, str]]] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        for pname, p in m.named_parameters(recurse=False):
            users.setdefault(id(p), []).append((mname, pname))
    return users


@contextlib.contextmanager
def training_flags(*models: nn.Module, mode: bool | None = None) -> Iterator[None]:
    """Run the body with every module's ``training`` flag set to ``mode`` (``None``: as they are),
    then put every flag back, also after an exception.

    Flags are set directly, not through ``train()``, so a patched ``train`` (a mode's post-eval
    hook) never fires. Example::

        >>> with training_flags(model, mode=False):
        ...     model(x)          # eval-mode pass; model.training is what it was afterwards
    """
    flags = {m: m.training for model in models for m in model.modules()}
    try:
        if mode is not None:
            for m in flags:
                m.training = mode
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


@contextlib.contextmanager
def mha_fastpath_off() -> Iterator[None]:
    """Switch off torch's fused fast path of ``nn.MultiheadAttention`` and the
    ``nn.Transformer*Layer`` s meanwhile (the previous setting is put back).

    In eval mode without grad torch replaces their forward by one fused kernel: FlopCounterMode
    does not count it, and a tracer sees one opaque op. The regular path computes the same
    outputs with ordinary ops.
    """
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
