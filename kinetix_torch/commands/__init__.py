"""One module per ``kinetix-torch`` command. Each owns an ``Args`` dataclass (a line of doc per
field) and a ``main(argv) -> int``; :mod:`kinetix_torch.cli` only dispatches."""
