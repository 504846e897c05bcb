"""Command line: ``kinetix-torch <command> [flags]`` (also ``python -m kinetix_torch``).

This module only dispatches: each command is a module of :mod:`kinetix_torch.commands` (or the
conformance tools) with its own flags and ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("kinetix_torch.commands.train", "train a PPO agent on levels or a curriculum"),
    "pretrain": ("kinetix_torch.commands.pretrain", "pretrain with SFL on random levels (upstream's setup, scaled)"),
    "finetune": ("kinetix_torch.commands.finetune", "fine-tune a pretrained agent on one level (or train from scratch)"),
    "eval": ("kinetix_torch.commands.eval", "evaluate a checkpoint (or a random policy) on levels"),
    "curves": ("kinetix_torch.commands.curves", "plot evaluation solve rate against frames of several runs"),
    "render": ("kinetix_torch.commands.render", "write a GIF of a policy playing a level"),
    "demo": ("kinetix_torch.commands.demo", "the README's main job: train on a shipped level, evaluate, render"),
    "conformance": ("kinetix_torch.conformance", "check an engine against upstream's golden data"),
    "models-conformance": ("kinetix_torch.models.conformance", "check networks against upstream's golden outputs"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: kinetix-torch <command> [flags]   (kinetix-torch <command> --help)\n\ncommands:\n" + "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kinetix-torch: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
