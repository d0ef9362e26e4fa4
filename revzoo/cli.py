"""The `revzoo` command line: parses arguments and calls the public functions.

Bad input ends with one line on stderr and exit code 2, never a traceback. The core commands
name no architecture; plugins add theirs (an image generator, say) through the
`register_commands` hook. Each core command imports what it needs when it runs, so
`revzoo --version` and `revzoo CORE-COMMAND --help` start without torch; `revzoo --help` and
a plugin's command load the plugins first (their commands are listed, and run, from them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import warnings
from collections.abc import Sequence

from ._version import __version__
from .errors import CheckpointWarning, PluginWarning, RevzooError

__all__ = ["main"]

EXIT_BAD_INPUT = 2
EXIT_CLOSED_PIPE = 128 + 13  # what a shell reports for a tool ended by SIGPIPE (`revzoo list | head -1`)


def _models(pattern: str) -> list[dict[str, object]]:
    """Returns one record per listed name; an architecture that needs a sub-name is shown as NAME/<KEY>."""
    from . import registry

    records = []
    for name in registry.list_models(pattern):
        spec, form, _ = registry.resolve(name)
        record = {"name": name, "architecture": spec.name, "form": form or registry.default_form(spec),
                  "description": spec.description}
        if spec.subname_key:
            record["name"] = f"{name}/<{spec.subname_key}>"
            record["hint"] = f"`{name}` alone cannot be created; it needs a {spec.subname_key}: {spec.description}"
        records.append(record)
    return records


def _cmd_list(args: argparse.Namespace) -> None:
    records = _models(args.pattern)
    if args.json:
        print(json.dumps(records, indent=2))
        return
    for record in records:
        print(record["name"] + (f"    # {record['hint']}" if "hint" in record else ""))


def _cmd_info(args: argparse.Namespace) -> None:
    from . import registry

    spec, form, subname = registry.resolve(args.name)
    layout = spec.layout
    origin = registry.provenance(spec.name)
    section = registry.card_section(args.name)
    info = {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "description": spec.description,
        "forms": list(spec.forms),
        "form of this name": form or registry.default_form(spec),
        "defaults": dict(spec.defaults),
        "routes": dict(spec.routes) or "none (only the stream reaches f and g)",  # checked on every create
        "stream layout": (
            "a single tensor" if layout is None else {"stream": layout.stream, "fields": layout.fields or "dict"}
        ),
        "card": section.location if section else (f"{spec.card} (not found)" if spec.card else None),
        "plugin": origin["plugin"],
        "package": " ".join(filter(None, (origin["distribution"], origin["plugin_version"]))) or "registered at run time",
        "file schema": origin["schema"],
    }
    if subname:
        info["subname"] = {spec.subname_key: subname}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    width = max(map(len, info))
    for key, value in info.items():
        shown = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
        print(f"{key:<{width}}  {shown}")


def _cmd_plugins(args: argparse.Namespace) -> None:
    from . import registry

    print(json.dumps(registry.plugins_info(), indent=2))


def _cmd_convert(args: argparse.Namespace) -> None:
    from . import checkpoints

    if args.preserve:
        _convert_preserving(args)
        return
    if args.scale is not None or args.adapter_dim is not None or args.no_exact:
        raise RevzooError("--scale, --adapter-dim and --no-exact only apply with --preserve")
    meta = checkpoints.read_metadata(args.src)
    if meta.get("coupling") and args.to == "sequential":
        print("note: the adapters stay in the file, unused by the sequential form (the pretrained blocks' function); "
              "converting back to reversible restores them")
    # the probe runs first, on the input in the output's dtype (the same two forms): a refused one writes nothing
    probe = checkpoints.probe_forms(args.src, dtype=args.dtype or "auto") if args.probe else None
    path = checkpoints.convert(args.src, args.dst, args.to, overwrite=args.overwrite, max_shard_size=args.max_shard_size,
                               dtype=args.dtype)
    unchanged = f"the tensors are cast to {args.dtype}" if args.dtype else "the tensors are unchanged"
    if meta.get("form") == args.to:
        print(f"wrote {path} (form {args.to}, as {args.src} already recorded: the same function); {unchanged}")
    else:
        print(f"wrote {path} (form {args.to}); {unchanged}, but the two forms compute different functions")
    state = checkpoints.training_state_beside(path)
    if state.is_file() and state.resolve() != checkpoints.training_state_beside(args.src).resolve():
        print(f"wrote {state} (the training state beside {args.src}, same parameter names)")
    if probe is not None:
        print(f"probe: max |reversible - sequential| output difference = {probe:.3e}")


def _convert_preserving(args: argparse.Namespace) -> None:
    from . import checkpoints

    if args.to != "reversible":
        raise RevzooError("--preserve converts a trained sequential model to the reversible form: use --to reversible")
    adapter_dim = 16 if args.adapter_dim is None else args.adapter_dim
    path, change = checkpoints.convert_preserving(
        args.src, args.dst, scale=args.scale, adapter_dim=adapter_dim, exact=not args.no_exact,
        overwrite=args.overwrite, max_shard_size=args.max_shard_size,
    )
    scale = next(iter(checkpoints.read_metadata(path)["coupling"].values()))["scales"][0]
    chosen = " (chosen for this model)" if args.scale is None else ""
    measured = "" if change is None else f"; max |output change| on the example call = {change:.3e}"
    print(f"wrote {path} (reversible, preserving: λ = β = {scale:g}{chosen}, adapters of width {adapter_dim}, "
          f"exact={not args.no_exact}){measured}")


def _option(text: str) -> tuple[str, object]:
    """Parses KEY=VALUE, the value as JSON when it is JSON (numbers, booleans), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except RecursionError:
        raise argparse.ArgumentTypeError(f"{key}: the value is JSON nested too deep to read") from None
    except ValueError:
        return key, value


def _cmd_import(args: argparse.Namespace) -> None:
    from . import checkpoints

    options = dict(args.option or [])
    if args.model:
        options["model"] = args.model
    path = checkpoints.import_checkpoint(args.format, args.src, args.dst, overwrite=args.overwrite,
                                         training_state=args.training_state, **options)
    print(f"wrote {path}")
    state_path = args.training_state or checkpoints.training_state_beside(path)
    if os.path.isfile(state_path):
        state = checkpoints.read_training_state(state_path)
        print(f"wrote {state_path} (optimizer state of {len(state.parameter_names)} parameters, epoch {state.epoch})")


def _cmd_export(args: argparse.Namespace) -> None:
    from . import checkpoints

    path = checkpoints.export_checkpoint(args.format, args.src, args.dst, overwrite=args.overwrite,
                                         training_state=args.training_state)
    print(f"wrote {path}")


def _cmd_create(args: argparse.Namespace) -> None:
    import torch

    from . import checkpoints
    from .checkpoints._io import check_output

    if not 0 <= args.seed < 2**64:
        raise RevzooError(f"--seed must be an integer from 0 to 2**64 - 1, got {args.seed}")
    state = checkpoints.training_state_beside(args.dst)
    check_output(None, args.dst, args.overwrite)  # before any work, as convert does
    check_output(None, state, args.overwrite)
    torch.manual_seed(args.seed)
    model = checkpoints.create(args.name, **dict(args.option or []))
    path = checkpoints.save(model, args.dst)
    count = sum(parameter.numel() for parameter in model.parameters())
    print(f"wrote {path}: a fresh {args.name!r} model (form {checkpoints.read_metadata(path)['form']}, seed "
          f"{args.seed}), {count:,} parameters")
    if state.is_file():  # the training state of the model just replaced: it must not be paired with this one
        state.unlink()
        print(f"removed {state} (the training state of the model replaced)")


def _cmd_bench(args: argparse.Namespace) -> None:
    from .bench._bench import main as bench_main

    bench_main(args.own_options)


def _cmd_cards(args: argparse.Namespace) -> int:
    from .bench._cards import main as cards_main

    return cards_main(args.own_options)


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Returns the parser of revzoo's commands, and of the plugins' unless `argv` starts with a core command or
    --version (those start without loading the plugins)."""
    parser = argparse.ArgumentParser(prog="revzoo", description="A model zoo of reversible networks for PyTorch.")
    parser.add_argument("--version", action="version", version=f"revzoo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_core_commands(commands)
    for sub in commands.choices.values():
        sub.set_defaults(_command_parser=sub)
    if not argv or argv[0] not in {*commands.choices, "--version"}:
        _add_plugin_commands(commands)
    return parser


def _add_core_commands(commands: argparse._SubParsersAction) -> None:

    sub = commands.add_parser("list", help="list registered models (fnmatch pattern)")
    sub.add_argument("pattern", nargs="?", default="*")
    sub.add_argument("--json", action="store_true", help="one JSON record per name: form, architecture, description")
    sub.set_defaults(_run=_cmd_list)

    sub = commands.add_parser("info", help="show an architecture's spec: config, forms, routes, layout, card")
    sub.add_argument("name")
    sub.add_argument("--json", action="store_true", help="the same as one JSON object")
    sub.set_defaults(_run=_cmd_info)

    sub = commands.add_parser("plugins", help="show plugins as JSON: name, version, hooks, models, status")
    sub.set_defaults(_run=_cmd_plugins)

    sub = commands.add_parser("convert", help="convert a revzoo checkpoint to the other form")
    sub.add_argument("src")
    sub.add_argument("dst")
    sub.add_argument("--to", required=True, choices=("reversible", "sequential"))
    sub.add_argument("--probe", action="store_true", help="run both forms on a seeded input and print the difference")
    sub.add_argument("--preserve", action="store_true",
                     help="keep the trained sequential function: MEFT coupling with zero adapters (revzoo.reversibilize)")
    sub.add_argument("--scale", type=float, help="with --preserve: λ = β (exact needs 1/2 ... 1/256; default: the "
                     "largest of those moving the example call's outputs by at most 2e-2, see reversibilize)")
    sub.add_argument("--adapter-dim", type=int, help="with --preserve: the adapters' bottleneck width (default 16)")
    sub.add_argument("--no-exact", action="store_true", help="with --preserve: float inversion instead of exact")
    sub.add_argument("--dtype", choices=("float32", "bfloat16", "float16", "float64"),
                     help="cast the floating-point tensors (default: keep the file's)")
    sub.add_argument("--max-shard-size", metavar="SIZE",
                     help="write Hugging Face-style shards of at most SIZE (KB, MB, GB or TB, e.g. 500MB) plus an index")
    sub.add_argument("--overwrite", action="store_true")
    sub.set_defaults(_run=_cmd_convert)

    sub = commands.add_parser("import", help="import a foreign checkpoint (see `revzoo plugins` for formats)")
    sub.add_argument("format")
    sub.add_argument("src")
    sub.add_argument("dst")
    sub.add_argument("--model", help="the foreign model name, where the format needs one")
    sub.add_argument("--option", type=_option, action="append", metavar="KEY=VALUE",
                     help="an option of the format's reader, e.g. heads=4 (repeatable)")
    sub.add_argument("--training-state", metavar="PATH",
                     help="where the file's optimizer/scheduler state and epoch go (default: DST's NAME.training."
                          "safetensors)")
    sub.add_argument("--overwrite", action="store_true")
    sub.set_defaults(_run=_cmd_import)

    sub = commands.add_parser("export", help="export a revzoo checkpoint back to a foreign format")
    sub.add_argument("format")
    sub.add_argument("src")
    sub.add_argument("dst")
    sub.add_argument("--training-state", metavar="PATH",
                     help="training state to carry where the format can (default: SRC's NAME.training.safetensors, "
                          "if present)")
    sub.add_argument("--overwrite", action="store_true")
    sub.set_defaults(_run=_cmd_export)

    sub = commands.add_parser("create", help="write a fresh, seeded checkpoint of a named architecture")
    sub.add_argument("name", help="a registered model name (see revzoo list), e.g. NAME-rev for the reversible form")
    sub.add_argument("dst", metavar="OUT", help="the safetensors file to write (NAME.index.json: shards)")
    sub.add_argument("--option", type=_option, action="append", metavar="KEY=VALUE",
                     help="a config option overriding the architecture's default, e.g. depth=4 (repeatable)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0: the same each time)")
    sub.add_argument("--overwrite", action="store_true")
    sub.set_defaults(_run=_cmd_create)

    sub = commands.add_parser("bench", help="measure memory against depth and step time of the forms (--help: its options)",
                              add_help=False)
    sub.set_defaults(_run=_cmd_bench, _passes_options_on=True)

    sub = commands.add_parser("cards", help="write the model cards from the registry and bench results (--help: its "
                              "options)", add_help=False)
    sub.set_defaults(_run=_cmd_cards, _passes_options_on=True)


def _add_plugin_commands(commands: argparse._SubParsersAction) -> None:
    """Adds the commands plugins registered; one whose name is taken, or whose `configure` raises, is left out with a
    warning (as a plugin that fails to register is), and the others are still added."""
    from . import registry

    loaded = registry.loaded_registry()
    for name, command in sorted(loaded.commands.items()):
        plugin = loaded.owners.get(("command", name))
        if name in commands.choices:
            warnings.warn(f"plugin {plugin!r} registers command {name!r}, which is one of revzoo's own; the plugin's "
                          "is left out", PluginWarning, stacklevel=2)
            continue
        # configured on a parser of its own first, so that a failure leaves nothing half-added to revzoo's
        own = argparse.ArgumentParser(prog=f"revzoo {name}", description=command.help)
        try:
            if command.configure is not None:
                command.configure(own)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: B036 -- a plugin's SystemExit must not end the user's command either
            text = str(err).strip().splitlines()
            warnings.warn(f"plugin {plugin!r}: command {name!r} is left out: configuring its arguments raised "
                          f"{type(err).__name__}{': ' + text[0] if text else ''}", PluginWarning, stacklevel=2)
            continue
        sub = commands.add_parser(name, help=command.help, parents=[own], add_help=False, description=own.description,
                                  epilog=own.epilog, formatter_class=own.formatter_class)
        sub.set_defaults(_run=command.run, _command_parser=sub)


@contextlib.contextmanager
def _warnings_as_lines():
    """Shows a Plugin- or CheckpointWarning as one `revzoo: warning:` line on stderr, not Python's path:line form.

    They stay lines under PYTHONWARNINGS=error or -W error too: a command's own notice is not a failure of it.
    """
    show = warnings.showwarning

    def show_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (PluginWarning, CheckpointWarning)):
            print(f"revzoo: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.filterwarnings("default", category=PluginWarning)
        warnings.filterwarnings("default", category=CheckpointWarning)
        warnings.showwarning = show_line  # restored by catch_warnings
        yield


def _error_line(message: str) -> None:
    """Prints `message` as one `revzoo: error:` line: a newline inside it (a path may hold one) is shown as \\n."""
    print("revzoo: error: " + message.replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr)


def _quiet_closed_pipe() -> int:
    """The reader of stdout went away: stop quietly, as Unix tools do, with nothing left to flush at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if sys.stdout is None:  # started with stdout closed (`>&-`): what it would print goes nowhere, as to /dev/null
        sys.stdout = open(os.devnull, "w")  # it lives as long as the process
    if isinstance(sys.stdout, io.TextIOWrapper):  # a file name that is not UTF-8 is printed as its bytes, as ls does
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        with _warnings_as_lines():
            args, unparsed = _parser(argv).parse_known_args(argv)
            if getattr(args, "_passes_options_on", False):
                args.own_options = unparsed
            elif unparsed:  # the chosen command's usage, not the top level's
                args._command_parser.error(f"unrecognized arguments: {' '.join(unparsed)}")
            code = args._run(args) or 0  # a command returns None, or an exit code (`cards --check`: 1 when stale)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
    except RevzooError as err:
        _error_line(str(err))
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return _quiet_closed_pipe()
    except OSError as err:  # the environment failed a write or a read: a full disk, stdout on /dev/full
        _error_line(f"{err.strerror or err}" + (f": {err.filename}" if err.filename else ""))
        _quiet_closed_pipe()  # what stdout still buffers would fail again at exit
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("revzoo: interrupted", file=sys.stderr)
        return 130
    return code
