"""Random levels on the levels' device: upstream Kinetix's level distribution and its no-op
filter (:mod:`.sampling`, :mod:`.noop_filter`), the level edits it and the ACCEL mutators share
(:mod:`.edits`), and the mutators (:mod:`.mutators`). Level banks live with the other level files
in :mod:`kinetix_torch.levels` and are re-exported here."""

from ..levels import load_bank, load_level_json, save_bank, save_level_json
from ..validation import check_levels, level_problems
from .mutators import ACCEL_MUTATIONS, MUTATIONS, MUTATOR_WEIGHTS, mutate_levels
from .noop_filter import draw_indices, filter_levels, noop_solved
from .params import UEDParams
from .sampling import RandomLevelSampler, sample_levels
from .validate import generator_rule_problems

__all__ = [
    "UEDParams",
    "sample_levels",
    "RandomLevelSampler",
    "MUTATIONS",
    "MUTATOR_WEIGHTS",
    "ACCEL_MUTATIONS",
    "mutate_levels",
    "noop_solved",
    "draw_indices",
    "filter_levels",
    "save_bank",
    "load_bank",
    "save_level_json",
    "load_level_json",
    "level_problems",
    "generator_rule_problems",
    "check_levels",
]
