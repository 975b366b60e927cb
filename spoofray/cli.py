"""Job flags generated from config dataclasses, so each default is written once.

A job adds one flag per field of its config (nested configs flattened:
``ExtractConfig.features.audio.window_s`` is ``--window-s``) and ``--config FILE.yaml``::

    p = argparse.ArgumentParser(...)
    cli.add_config_flags(p, ScoreConfig)
    args = p.parse_args(argv)
    cfg = cli.build_config(ScoreConfig, args)

Precedence: the dataclass default < the ``--config`` file < flags given on the command
line < what the job itself fixes (``overrides``, e.g. for ``--smoke-test``). Generated flags
default to ``None`` ("not given"); ``--help`` shows the dataclass default instead.

Field metadata (set with :func:`spoofray.config.setting`):

``help``           the flag's help text
``flag``           the flag's name when it is not the field's (``kinds`` -> ``--features``)
``default_help``   how ``--help`` words a ``None`` default ("as many as CPUs allow")
``path``           a local path is made absolute (Ray workers run in other folders);
                   ``literal`` lists values left alone (``--bundle latest``)
``cli``            ``False``: no flag (set in the ``--config`` file only)
``repeat``         a tuple field's flag is given once per value (``--member a --member b``)

Value types come from the annotation: ``bool`` fields get ``--x/--no-x``, tuples are
comma-separated, dicts are JSON, ``int``/``float``/``str`` as written; a field whose
constraint is one :class:`~spoofray.config.Options` gets argparse ``choices``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

from spoofray.config import Config, Options
from spoofray.errors import ConfigError

#: Namespace attribute holding the flags a parser got from configs: dest -> field path.
_FLAGS = "_config_flags"


@dataclasses.dataclass(frozen=True)
class Flag:
    """One generated flag: its ``dest``, the field's path in the (nested) config, the field."""

    dest: str
    path: tuple[str, ...]
    field: dataclasses.Field
    kind: str  # bool | int | float | str | tuple | dict


def _kind(field: dataclasses.Field) -> str:
    hint = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    for kind in ("tuple", "dict", "bool", "float", "int"):
        if hint.startswith(kind) or f"{kind} |" in hint or f"| {kind}" in hint:
            return kind
    return "str"


def config_flags(cls: type[Config], *, skip: tuple[str, ...] = (),
                 prefix: tuple[str, ...] = ()) -> list[Flag]:
    """The flags of ``cls`` (nested configs flattened), minus the field names in ``skip``."""
    out: list[Flag] = []
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("cli", True) is False:
            continue
        nested = cls._nested.get(f.name)
        if nested is not None:
            out += config_flags(nested, skip=skip, prefix=(*prefix, f.name))
            continue
        out.append(Flag(dest=f.metadata.get("flag", f.name), path=(*prefix, f.name), field=f,
                        kind=_kind(f)))
    return out


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def show_default(field: dataclasses.Field) -> str:
    """How ``--help`` words a field's default (``(default: ...)``)."""
    value = default_of(field)
    if value is None or value == "":
        return field.metadata.get("default_help", "none" if value is None else "required")
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _help(flag: Flag) -> str:
    text = flag.field.metadata.get("help", "")
    shown = f"default: {show_default(flag.field)}"
    if flag.kind == "tuple":
        shown = "comma-separated; " + shown
    elif flag.kind == "dict":
        shown = "JSON; " + shown
    return (f"{text} ({shown})" if text else f"({shown})").replace("%", "%%")


def _tuple(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


_TYPES = {"int": int, "float": float, "str": str, "tuple": _tuple, "dict": _json}


def add_config_flags(parser: argparse.ArgumentParser, cls: type[Config], *,
                     skip: tuple[str, ...] = (), group: str | None = None) -> list[Flag]:
    """Add ``--config`` and one flag per field of ``cls`` (see the module docstring).

    ``skip``: field names the job sets itself or exposes differently.
    """
    flags = config_flags(cls, skip=skip)
    dests = [f.dest for f in flags]
    if len(set(dests)) != len(dests):
        raise ValueError(f"{cls.__name__}: two fields would get the same flag among {dests}; "
                         "give one a metadata 'flag' name")
    target = parser.add_argument_group(group) if group else parser
    parser.add_argument("--config", metavar="FILE.yaml",
                        help=f"{cls.__name__} as YAML (keys as in its to_dict(); nested "
                        "configs as mappings); flags given on the command line override it")
    for flag in flags:
        name = "--" + flag.dest.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": None, "help": _help(flag)}
        if flag.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif flag.kind == "tuple" and flag.field.metadata.get("repeat"):
            kwargs.update(action="append", metavar=flag.field.metadata.get("metavar"))
            kwargs["help"] = kwargs["help"].replace("comma-separated;", "repeatable;")
        else:
            kwargs["type"] = _TYPES[flag.kind]
            allowed = _constraints(cls, flag.path)
            if len(allowed) == 1 and isinstance(allowed[0], Options):
                kwargs["choices"] = allowed[0].values
            if flag.kind in ("tuple", "dict"):
                kwargs["metavar"] = flag.field.name.upper()
        target.add_argument(name, **kwargs)
    parser.set_defaults(**{_FLAGS: {f.dest: f for f in flags}})
    return flags


def _constraints(cls: type[Config], path: tuple[str, ...]) -> list[Any]:
    for name in path[:-1]:
        cls = cls._nested[name]
    return list(cls._constraints.get(path[-1], []))


def load_config_file(uri: str) -> dict[str, Any]:
    """A config file (YAML or JSON, local or s3://) as a mapping."""
    import yaml

    from spoofray import storage

    try:
        data = yaml.safe_load(storage.read_bytes(uri).decode())
    except FileNotFoundError:
        raise ConfigError(f"--config {uri}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {uri} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {uri} must hold a mapping of settings, got "
                          f"{type(data).__name__}")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        data = data.setdefault(name, {})
    data[path[-1]] = value


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(data, dict) or name not in data:
            return None
        data = data[name]
    return data


def absolute(uri: str | None) -> str | None:
    """Local paths made absolute (Ray workers, and jobs under ``ray job submit``, run in
    other folders); URIs such as ``s3://`` are left as they are."""
    if uri is None or "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


#: Set by ``ray job submit`` in the environment of the job's entrypoint (Ray's job config).
JOB_SUBMIT_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def under_job_submit() -> bool:
    """True when this process is the entrypoint of a ``ray job submit`` job, which runs in
    a temporary unpacked copy of its ``--working-dir``."""
    return bool(os.environ.get(JOB_SUBMIT_ENV))


def _check_submitted_path(flag: Flag, value: str) -> None:
    """Under ``ray job submit`` a relative path resolves inside the job's unpacked working
    directory, a temporary copy: an output written there is lost and an input is not the
    user's. Refused, except an input that is really part of the working directory
    (``--rules audit_rules/default.yaml``)."""
    if "://" in value or os.path.isabs(os.path.expanduser(value)):
        return
    name = "--" + flag.dest.replace("_", "-")
    if flag.path[-1] != "output" and os.path.exists(value):
        return
    raise ConfigError(
        f"{name} {value}: a relative path under `ray job submit` names a place inside the "
        "job's temporary copy of --working-dir, not on your machine; use an absolute path "
        "(on the cluster's nodes) or s3://")


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given by ``--config`` and flags (flags win), as a nested dict; local
    paths made absolute. Fields given nowhere are absent (their dataclass default holds).

    Under ``ray job submit`` a relative output path, or a relative input path that is not
    part of the uploaded working directory, is a :class:`ConfigError`."""
    flags: dict[str, Flag] = getattr(args, _FLAGS, {})
    data = load_config_file(args.config) if getattr(args, "config", None) else {}
    for dest, flag in flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            _set(data, flag.path, tuple(value) if isinstance(value, list) else value)
    submitted = under_job_submit()
    for flag in flags.values():
        value = _get(data, flag.path)
        keep = flag.field.metadata.get("literal", ())
        if flag.field.metadata.get("path") and isinstance(value, str) and value not in keep:
            if submitted:
                _check_submitted_path(flag, value)
            _set(data, flag.path, absolute(value))
    return data


def build_config(cls: type[Config], args: argparse.Namespace,
                 overrides: dict[str, Any] | None = None) -> Config:
    """``cls`` from its defaults, ``--config``, the flags given and ``overrides`` (nested
    dict), in that order of precedence."""
    return cls.from_dict(_merge(given(args), overrides or {}))


def require(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Exit with a usage error (code 2) unless every field in ``names`` is given by a flag
    or the ``--config`` file, or when that file cannot be read."""
    try:
        data = given(args)
    except ConfigError as exc:  # one line, like the jobs' other refusals
        parser.exit(2, f"error: {exc}\n")
    missing = [n for n in names if not data.get(n)]
    if missing:
        dests = {f.path: d for d, f in getattr(args, _FLAGS, {}).items()}
        flags = " and ".join("--" + dests.get((n,), n).replace("_", "-") for n in names)
        parser.error(f"{flags} {'is' if len(names) == 1 else 'are'} required (or use "
                     "--smoke-test); they may also come from the --config file")


# --- the ``spoofray`` command ----------------------------------------------------------------

#: ``spoofray <command>`` → the job it runs, ``jobs/<job>.py`` (the jobs stay the entry points
#: of ``ray job submit``; the command is their one front door on a workstation).
COMMANDS = {"score": "score_archive", "extract": "extract_features", "tune": "tune_ml",
            "train": "train_dl", "bundle": "bundle", "audit": "nightly_audit",
            "evaluate": "evaluate", "export": "export_scores", "make-spoofs": "make_spoofs",
            "explain": "explain", "demo": "demo"}


def jobs_folder() -> str:
    """The checkout's ``jobs/`` folder (jobs are not installed with the package)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = os.path.join(here, "jobs")
    if not os.path.isfile(os.path.join(folder, "_bootstrap.py")):
        raise ConfigError(f"the spoofray command runs the jobs of a spoofray checkout, and "
                          f"there is none at {folder}: install spoofray from its sources "
                          "(pip install -e <checkout>) or run python jobs/<job>.py there")
    return folder


def main(argv: list[str] | None = None) -> int:
    """``spoofray <command> [flags]``: run the job of :data:`COMMANDS` with those flags
    (``spoofray score --help`` is ``python jobs/score_archive.py --help``)."""
    import importlib.util
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: spoofray {" + ",".join(COMMANDS) + "} [flags]\n"
             + "".join(f"  {c:<12} jobs/{j}.py\n" for c, j in COMMANDS.items())
             + "spoofray <command> --help shows a command's flags.")
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"spoofray: unknown command {command!r}\n{usage}", file=sys.stderr)
        return 2
    try:
        folder = jobs_folder()
    except ConfigError as exc:
        print(f"spoofray: {exc}", file=sys.stderr)
        return 2
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the jobs import _bootstrap and each other
    name = COMMANDS[command]
    module = sys.modules.get(name)
    if module is None or os.path.dirname(getattr(module, "__file__", "") or "") != folder:
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    prog, sys.argv[0] = sys.argv[0], f"spoofray {command}"  # argparse's prog in --help
    try:
        return int(module.main(rest) or 0)
    finally:
        sys.argv[0] = prog
