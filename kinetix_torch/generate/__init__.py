"""Random levels on the levels' device: upstream Kinetix's level distribution, its no-op filter,
the ACCEL mutators, a level sampler for env resets, and level banks."""

from ..validation import check_levels, level_problems
from .bank import load_bank, load_level_json, save_bank, save_level_json
from .level_sampler import RandomLevelSampler
from .mutators import ACCEL_MUTATIONS, MUTATIONS, mutate_levels
from .noop_filter import draw_indices, filter_levels, noop_solved
from .params import UEDParams
from .sampler import sample_levels
from .validate import generator_rule_problems

__all__ = [
    "UEDParams",
    "sample_levels",
    "RandomLevelSampler",
    "MUTATIONS",
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
