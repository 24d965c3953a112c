"""``parcelscan <verb>``: a thin layer that parses arguments and calls one function per verb.

Each verb lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``. Only the
verb on the command line is imported (``parcelscan --help`` imports none): this lazy per-verb dispatch is
why ``parcelscan inspect`` never imports PyTorch, and why a verb module may import what it needs at its
top. Optional heavy dependencies (PyTorch, fastapi, uvicorn) stay inside the functions that need them, so
a verb without its extra installed still shows ``--help`` and says which extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable

from parcelscan import __version__
from parcelscan.errors import ParcelscanError

# verb -> (module, one-line help naming every command of the verb; tests/test_cli.py checks it)
VERBS: dict[str, tuple[str, str]] = {
    "physics": ("parcelscan.datasets.physics.physics_cli", "attenuation A_low, A_high and R of a material"),
    "simulate": ("parcelscan.datasets.simulator.simulate_cli", "simulate parcel scans or the test phantom"),
    "render": ("parcelscan.datasets.scans.render_cli", "render a scan as a pseudo-colour image"),
    "data": ("parcelscan.datasets.data_cli", "dataset tools: check, split, import, convert, merge, stats"),
    "train": ("parcelscan.training.train_cli", "train the CNN"),
    "evaluate": ("parcelscan.training.evaluate_cli", "evaluate a model at screening operating points"),
    "export": ("parcelscan.model.export_cli", "export a checkpoint to ONNX"),
    "inspect": ("parcelscan.inference.inspect_cli", "inspect scans with the ONNX model (station CLI)"),
    "calibrate": ("parcelscan.inference.calibrate_cli", "set a station's threshold from its own cleared traffic"),
    "review": ("parcelscan.inference.review_cli", "inspector review web app: serve, ingest, add-user, export, migrate"),
    "retrain": ("parcelscan.training.retrain_cli", "fine-tune on new seizures"),
    "models": ("parcelscan.model.registry_cli", "model registry: list, show, register, promote, rollback, keygen"),
}

# Top-level import name -> the extra that installs it. The station install (`pip install parcelscan`) has
# none of these; a verb that needs one says which extra to install instead of ending in a traceback.
# tests/test_station_install.py checks that every dependency of the `sim`, `train` and `review` extras is here.
# `sim` (the physics: simulate, physics, phantom, a profile whose physics no shipped table covers) brings
# scipy and matplotlib too (spekpy needs them) and sqlalchemy (xraydb); our code imports none of those three
# for the physics, so a missing one is named by the extra whose code imports it (scipy: the training's tile
# augmentation).
EXTRA_OF_MODULE: dict[str, str] = {
    **dict.fromkeys(("xraydb", "spekpy"), "sim"),
    **dict.fromkeys(("torch", "torchvision", "albumentations", "onnx", "onnxscript", "matplotlib", "scipy"), "train"),
    **dict.fromkeys(("fastapi", "starlette", "uvicorn", "jinja2", "multipart", "python_multipart", "argon2",
                     "sqlalchemy", "alembic", "psycopg", "psycopg_binary", "psycopg_pool"), "review"),
    "cryptography": "signing",
}


def missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """The one-line advice for an optional dependency that is not installed, or None when ``error`` is not
    about one (a missing module of our own is a bug and keeps its traceback)."""
    top = (error.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return f"this needs the optional package {top!r}, which is not installed: pip install 'parcelscan[{extra}]'"


def _available_verbs() -> dict[str, tuple[str, str]]:
    """Verbs whose module exists in this install (later issues add the rest)."""
    found = {}
    for verb, (module, help_text) in VERBS.items():
        if importlib.util.find_spec(module) is not None:
            found[verb] = (module, help_text)
    return found


def requested_verb(argv: list[str]) -> str | None:
    """The verb on a command line: the first word that is not an option (the top-level options, ``-h``
    and ``--version``, take no value)."""
    return next((token for token in argv if not token.startswith("-")), None)


def build_parser(verbs: Iterable[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser, with the full arguments of ``verbs`` (None: all; their modules are imported) and the
    one-line help of every verb. Returns the parser and {verb: module name} of the verbs built in full."""
    wanted = None if verbs is None else set(verbs)
    parser = argparse.ArgumentParser(
        prog="parcelscan",
        description="Dual-energy X-ray inspection of postal parcels for concealed critical minerals.",
    )
    parser.add_argument("--version", action="version", version=f"parcelscan {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    modules = {}
    for verb, (module_name, help_text) in _available_verbs().items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        if wanted is None or verb in wanted:
            importlib.import_module(module_name).add_arguments(verb_parser)
            modules[verb] = module_name
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = requested_verb(argv)
    parser, modules = build_parser([verb] if verb else [])
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    module = importlib.import_module(modules[args.verb])
    try:
        return int(module.run(args) or 0)
    except ParcelscanError as error:
        print(f"parcelscan {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # station install without the verb's extra
        message = missing_extra_message(error)
        if message is None:
            raise
        print(f"parcelscan {args.verb}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `parcelscan ... | head`: the reader went away; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"parcelscan {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
