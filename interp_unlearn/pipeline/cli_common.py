"""The grammar every ``interp-unlearn`` command shares: the flags, their one meaning, and
how ``main`` reports errors and keeps quiet.

Shared flags (on every command, nested ones included; each command's ``--help`` says what
they do there, or that the command does not use one):

=============  ============================================================================
``--model``    the model: a built-in name, a checkpoint directory or a hub name
``--out``      the results directory; every command writes one (a default when not given)
               and ends by printing ``results: DIR`` (with ``--json``: an ``"out"`` key)
``--seeds``    which seeds: a comma list ``0,2,5`` or an inclusive range ``0-4``; a single
               number ``3`` is seed 3 alone
``--device``   where the model is loaded and run: ``auto`` (default: the GPU when one is
               visible, else the CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps``
``--dtype``    the weights' dtype: ``float32`` (default), ``bfloat16``, ``float16``
``--json``     print one JSON object on stdout, and nothing else there
``--quiet``    no progress bars, no warnings, no library logging (``--no-progress``: alias)
``--debug``    on an error, raise it with its traceback instead of the one-line message
=============  ============================================================================

Nothing here imports torch or transformers at import time (``--help`` stays fast).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["COMMON_FLAGS", "CLIParser", "SEEDS_FORMS", "UsageError", "add_common_arguments",
           "error_line", "finish_common", "model_slug", "one_seed", "parse_seeds_spec",
           "quiet_mode", "resolve_device"]

PROG = "interp-unlearn"
#: the shared flags, by destination
COMMON_FLAGS = ("model", "out", "seeds", "device", "dtype", "json", "quiet", "debug")
#: what ``--seeds`` accepts, for help texts and error messages
SEEDS_FORMS = ("a comma list (0,2,5) or an inclusive range (0-4) of distinct seeds >= 0; "
               "a single number (3) is that one seed")
DTYPES = ("float32", "bfloat16", "float16", "float64")
NOT_USED = "not used by this command"

_DEFAULTS_KEY = "_common_defaults"
_INT = re.compile(r"\d+")
_RANGE = re.compile(r"(\d+)-(\d+)")


class UsageError(ValueError):
    """A bad command line (argparse's own errors, and the shared flags' checks); a
    ``ValueError``, like the library's own errors for bad values."""


class CLIParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are exceptions, so that ``main`` reports each as
    one line (``interp-unlearn: error: ...``) and returns 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


# -------------------------------------------------------------------------------- seeds


def parse_seeds_spec(spec: str) -> list[int]:
    """``"0,2,5"`` -> ``[0, 2, 5]``; ``"0-4"`` -> ``[0, 1, 2, 3, 4]``; ``"3"`` -> ``[3]``
    (items may mix: ``"0-2,7"``).

    Raises:
        ValueError: an empty item, anything but digits and one ``-`` per range, a range
            whose end is below its start, a repeated seed (the message names the forms).
    """
    text = str(spec).strip()
    seeds: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if _INT.fullmatch(item):
            seeds.append(int(item))
            continue
        m = _RANGE.fullmatch(item)
        if m is None or int(m.group(2)) < int(m.group(1)):
            raise ValueError(f"invalid seeds {spec!r}: use {SEEDS_FORMS}")
        seeds.extend(range(int(m.group(1)), int(m.group(2)) + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"invalid seeds {spec!r}: seed {repeated[0]} repeats; use "
                         f"{SEEDS_FORMS}")
    return seeds


def _seeds_type(spec: str) -> list[int]:
    try:
        return parse_seeds_spec(spec)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _dtype_type(name: str) -> str:
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"invalid dtype {name!r}; valid: {', '.join(DTYPES)}")
    return name


def one_seed(args: argparse.Namespace, command: str) -> int | None:
    """The single seed of a one-seed command: ``--seed`` or a one-seed ``--seeds``
    (both: an error unless they agree; several ``--seeds``: an error)."""
    seeds = getattr(args, "seeds", None)
    seed = getattr(args, "seed", None)
    if seeds is None:
        return seed
    if len(seeds) != 1:
        raise UsageError(f"argument --seeds: {command} runs one seed; give one (--seeds 3), "
                         f"not {len(seeds)}")
    if seed is not None and seed != seeds[0]:
        raise UsageError(f"argument --seeds: --seed {seed} and --seeds {seeds[0]} disagree; "
                         "give one of them")
    return seeds[0]


# ------------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class _Flag:
    names: tuple[str, ...]
    kw: Mapping[str, Any]
    generic: str  # the flag's meaning, the same on every command


_FLAGS: dict[str, _Flag] = {
    "model": _Flag(("--model",), {"metavar": "MODEL"},
                   "the model: built-in name (organism, organism-twin, organism-micro, "
                   "organism-micro-twin), a checkpoint directory or a hub name"),
    "out": _Flag(("--out",), {"type": Path, "metavar": "DIR"},
                 "results directory (always written; the command ends with 'results: DIR')"),
    "seeds": _Flag(("--seeds",), {"type": _seeds_type, "metavar": "SEEDS"},
                   f"seeds: {SEEDS_FORMS}"),
    "device": _Flag(("--device",), {"metavar": "DEVICE"},
                    "torch device for the model: auto (default: the GPU when one is "
                    "visible, else cpu), cpu, cuda, cuda:1, mps"),
    "dtype": _Flag(("--dtype",), {"type": _dtype_type, "metavar": "DTYPE"},
                   f"weights dtype: {', '.join(DTYPES)} (default float32)"),
    "json": _Flag(("--json",), {"action": "store_true"},
                  "print one JSON object on stdout (with an \"out\" key), nothing else there"),
    "quiet": _Flag(("--quiet", "--no-progress"), {"action": "store_true"},
                   "no progress bars, warnings or library logging"),
    "debug": _Flag(("--debug",), {"action": "store_true"},
                   "on an error, raise it with its traceback instead of one line"),
    "accept_incomplete": _Flag(("--accept-incomplete",), {"action": "store_true"},
                               "use a checkpoint whose unlearning run stopped (non-finite) "
                               "or diverged; refused by default"),
}

_BASE_DEFAULTS: dict[str, Any] = {"model": None, "out": None, "seeds": None,
                                  "device": "auto", "dtype": None, "json": False,
                                  "quiet": False, "debug": False, "accept_incomplete": False}


def add_common_arguments(p: argparse.ArgumentParser, *, unused: tuple[str, ...] = (),
                         required: tuple[str, ...] = (), defaults: Mapping[str, Any] | None = None,
                         **helps: str) -> argparse.ArgumentParser:
    """Add the shared flags to ``p`` (a command's parser), as one help section.

    ``helps[name]``: what the flag does on this command (appended to its common meaning);
    ``unused``: flags this command accepts but does not use (said so in the help, and a
    warning when one is given); ``required``: flags the command needs; ``defaults``: this
    command's defaults (``model``, ``seeds`` ...), applied by :func:`finish_common`.

    Every flag's argparse default is ``SUPPRESS``, so a flag given on a command group
    (``organism --quiet train``) survives its subcommand's parse.
    """
    bad = (set(unused) | set(required) | set(helps) | set(defaults or {})) - set(_FLAGS)
    if bad:
        raise ValueError(f"unknown shared flags {sorted(bad)}")
    g = p.add_argument_group("shared options (the same meaning on every command)")
    for name, flag in _FLAGS.items():
        if name in unused:
            text = f"{NOT_USED}{': ' + helps[name] if name in helps else ''}"
        else:
            text = flag.generic + (f"; {helps[name]}" if name in helps else "")
        g.add_argument(*flag.names, dest=name, default=argparse.SUPPRESS,
                       required=name in required, help=text.replace("%", "%%"), **flag.kw)
    p.set_defaults(**{_DEFAULTS_KEY: {**_BASE_DEFAULTS, **(defaults or {}),
                                      "_unused": tuple(unused)}})
    return p


def _looks_local(model: str) -> bool:
    # the rule of interp_unlearn.data.loading.resolve: these are never hub names
    return model.startswith((".", "/", "~"))


def finish_common(args: argparse.Namespace, command: str) -> argparse.Namespace:
    """Fill in the command's defaults of the shared flags not given, warn about given ones
    the command does not use, and check ``--model`` paths (cheaply, before any import)."""
    defaults = dict(getattr(args, _DEFAULTS_KEY, _BASE_DEFAULTS))
    unused = defaults.pop("_unused", ())
    for name in COMMON_FLAGS:
        if not hasattr(args, name):
            setattr(args, name, defaults.get(name, _BASE_DEFAULTS[name]))
        elif name in unused and getattr(args, name) not in (None, False):
            warnings.warn(f"--{name} is {NOT_USED} ({command}); ignored", UserWarning,
                          stacklevel=2)
    if hasattr(args, _DEFAULTS_KEY):
        delattr(args, _DEFAULTS_KEY)
    if "device" not in unused:
        args.device = resolve_device(args.device, args.dtype)
    else:
        args.device = "cpu" if args.device == "auto" else args.device
    model = args.model
    if model is not None and "model" not in unused and _looks_local(str(model)):
        if not Path(str(model)).expanduser().exists():
            raise UsageError(f"argument --model: no such checkpoint directory: {model}")
    return args


def resolve_device(spec: str | None, dtype: str | None = None) -> str:
    """``--device`` as a torch device string: ``auto`` (or None) -> ``cuda`` when a GPU is
    visible, else ``cpu``; a device that is not there, or a dtype it cannot hold, is a
    :class:`UsageError` (one line, before any model is loaded)."""
    import torch  # only once a command runs (--help stays fast)

    spec = "auto" if spec is None else str(spec).strip()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UsageError(f"argument --device: {spec!r} is not a torch device (auto, cpu, "
                         "cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"argument --device: {spec!r} but no CUDA GPU is visible "
                             "(torch.cuda.is_available() is False); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"argument --device: {spec!r} but only "
                             f"{torch.cuda.device_count()} GPU(s) are visible (cuda:0.."
                             f"cuda:{torch.cuda.device_count() - 1})")
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            raise UsageError("argument --dtype: bfloat16 is not supported on this GPU; use "
                             "float16 or float32")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"argument --device: {spec!r} but MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"argument --device: {spec!r}: only cpu, cuda and mps are supported")
    return spec


def model_slug(model: Any) -> str:
    """The last path component of a model name or directory (``runs/rmu/`` -> ``rmu``,
    ``org/name`` -> ``name``), for default output directories."""
    s = str(model).rstrip("/\\")
    name = Path(s).name
    if not name or name in (".", ".."):
        name = Path(s or ".").expanduser().resolve().name
    return name or "model"


def default_out(command: str, model: Any, *parts: str) -> Path:
    """``runs/<command>[-<part>...]-<model basename>``."""
    return Path("runs") / "-".join((command, *parts, model_slug(model)))


# ------------------------------------------------------------------------ errors, quiet


def error_line(exc: BaseException) -> str:
    """``interp-unlearn: error: <message>`` on one line."""
    msg = " ".join(str(exc).split())
    if isinstance(exc, KeyError) and msg.startswith("'"):
        msg = f"KeyError: {msg}"
    elif not isinstance(exc, (UsageError, ValueError, OSError)):
        msg = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return f"{PROG}: error: {msg or type(exc).__name__}"


_QUIET_ENV = {"TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error",
              "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
              "PYTHONWARNINGS": "ignore"}


@contextlib.contextmanager
def quiet_mode(enabled: bool) -> Iterator[None]:
    """With ``enabled``: no progress bars and no warnings until the block ends.

    * tqdm: ``TQDM_DISABLE=1`` (read when tqdm is first imported; also seen by worker
      processes) and, when tqdm is already imported, bars default to ``disable=True``;
    * transformers: ``set_verbosity_error()`` and ``disable_progress_bar()`` (its
      "Loading weights" / "Writing model shards" bars and the hub's download bars);
    * Python: ``warnings.simplefilter("ignore")`` (``PYTHONWARNINGS=ignore`` for child
      processes) and logging below ERROR.

    Everything is restored afterwards (``main`` may be called in-process, e.g. by tests).
    The toolkit's own bars are also turned off by the commands (``progress=False``).
    """
    if not enabled:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in _QUIET_ENV}
    os.environ.update(_QUIET_ENV)
    saved_disable = logging.root.manager.disable
    undo: list[Any] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            undo.append(_quiet_transformers())
            undo.append(_quiet_tqdm())
            yield
    finally:
        for fn in reversed(undo):
            if fn is not None:
                fn()
        logging.disable(saved_disable)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _quiet_transformers():
    try:
        tlog = importlib.import_module("transformers.utils.logging")
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()

    def undo() -> None:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()
    return undo


def _quiet_tqdm():
    std = sys.modules.get("tqdm.std")
    if std is None:  # not imported yet: TQDM_DISABLE takes effect on import
        return None
    import functools

    cls = std.tqdm
    original = cls.__dict__["__init__"]
    cls.__init__ = functools.partialmethod(original, disable=True)

    def undo() -> None:
        cls.__init__ = original
    return undo
