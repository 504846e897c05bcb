"""Dataclass fields as command-line flags: ``field_name`` becomes ``--field-name``, its type
decides the parser, and the attribute docstring under the field becomes the ``--help`` text."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path


def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal right under each field) of a dataclass."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _unwrap_optional(tp):
    """``X | None`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls`` (bools take ``--flag``/``--no-flag``; lists take several values)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        tp, optional = _unwrap_optional(hints[field.name])
        help_text = f"{docs.get(field.name, '')} (default: {default})"
        kwargs: dict = {"dest": field.name, "default": default, "help": help_text}
        origin = typing.get_origin(tp)
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if origin in (list, tuple):
            (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis} or {str}
            kwargs.update(nargs="+", type=_scalar_parser(item))
        elif origin is typing.Literal:
            kwargs.update(choices=typing.get_args(tp), type=type(typing.get_args(tp)[0]))
        else:
            kwargs["type"] = _scalar_parser(tp)
        if optional:
            kwargs["metavar"] = field.name.upper()
        parser.add_argument(flag, **kwargs)


def _scalar_parser(tp):
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str, Path):
        return tp
    raise TypeError(f"no command-line parser for field type {tp!r}")


def dataclass_from_namespace(cls, namespace: argparse.Namespace, **overrides):
    """Build ``cls`` from the parsed flags (fields not on the namespace keep their defaults)."""
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)}
    values.update(overrides)
    return cls(**values)


def parse_dataclass(cls, argv, prog: str, description: str = ""):
    """Parse ``argv`` into an instance of ``cls``."""
    parser = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").strip())
    add_dataclass_arguments(parser, cls)
    return dataclass_from_namespace(cls, parser.parse_args(argv))
