"""Curricula (DR, PLR, ACCEL, SFL): score functions on hand-worked rollouts, the PLR buffer's rules
(rank and staleness probabilities, replacement, timestamps), SFL's learnability ranking, valid
edited levels, every curriculum end to end against a fake scorer, and exact resumes."""

import dataclasses
import io
import math

import pytest
import torch
from tensordict import TensorDict

from kinetix_torch.commands.args import field_docs, parse_dataclass
from kinetix_torch.curricula import (
    ACCEL,
    CURRICULA,
    EDITED,
    NEW,
    PLR,
    REPLAY,
    SFL,
    ACCELConfig,
    DomainRandomisation,
    DRConfig,
    LevelBuffer,
    LevelSource,
    PLRConfig,
    ScoredLevelSource,
    SFLConfig,
    learnability,
    make_level_source,
    max_mc,
    max_returns,
    positive_value_loss,
    solve_rates,
)
from kinetix_torch.params import EnvParams, static_params_for_size
from kinetix_torch.train.config import TrainConfig
from kinetix_torch.validation import check_levels

STATIC = static_params_for_size("s")
FAST = dict(noop_filter=False)


def same_levels(a, b) -> bool:
    return a.batch_size == b.batch_size and all(torch.equal(a[k], b[k]) for k in a.keys(True, True))


def level_scores(levels) -> torch.Tensor:
    """A fake scorer: a deterministic number per level, from its shapes' positions."""
    return torch.frac(levels["polygon", "position"].sum((1, 2)) * 7.3).abs()


def fake_rollout(n: int, steps: int = 12, seed: int = 0):
    """done every 4th step, random rewards, values, advantages and goals."""
    g = torch.Generator().manual_seed(seed)
    done = torch.zeros(n, steps, dtype=torch.bool)
    done[:, 3::4] = True
    rand = lambda: torch.randn(n, steps, generator=g)  # noqa: E731
    return done, rand(), rand(), rand()


# --------------------------------------------------------------------------------------------------
# Scores


def test_scores_on_a_hand_worked_rollout():
    """Env 0: episodes [0, 1] and [2, 4] finish, step 5 is cut off; env 1 finishes none."""
    done = torch.tensor([[0, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    reward = torch.tensor([[0.0, 1, 0, 0, -1, 5], [1, 1, 1, 1, 1, 1]])
    value = torch.tensor([[0.5, 0.5, 1, 1, 1, 9], [0, 0, 0, 0, 0, 0]])
    advantage = torch.tensor([[1.0, -1, 2, 2, -4, 7], [1, 1, 1, 1, 1, 1]])
    goal = torch.tensor([[0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)

    best = max_returns(done, reward)
    assert best.tolist() == [1.0, 0.0]  # episode returns 1 and -1; none finished -> 0
    mc = max_mc(done, value, best)
    assert mc[0].item() == pytest.approx((0.5 + 0.0) / 2)  # episode means of 1 - V: 0.5 and 0
    assert mc[1].item() == -math.inf
    pvl = positive_value_loss(done[..., None], advantage[..., None])  # [B, T, 1] as TorchRL's
    assert pvl[0].item() == pytest.approx((0.5 + 4 / 3) / 2)
    assert pvl[1].item() == -math.inf
    rate = solve_rates(done, goal)
    assert rate[0].item() == 0.5 and math.isnan(rate[1].item())
    assert learnability(rate)[0].item() == 0.25


def test_scores_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        max_returns(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 4))


# --------------------------------------------------------------------------------------------------
# The PLR buffer


def tiny_levels(values) -> TensorDict:
    values = torch.as_tensor(values, dtype=torch.float32)
    return TensorDict({"x": values, "nested": {"y": values[:, None].repeat(1, 2)}}, batch_size=[len(values)])


def filled_buffer(scores, timestamps, episode_count, capacity=4, staleness_coeff=0.3, temperature=1.0):
    buffer = LevelBuffer(capacity, staleness_coeff, temperature)
    size = len(scores)
    buffer.insert(tiny_levels(range(size)), torch.arange(size), torch.tensor(scores), torch.zeros(size))
    order = buffer.ids[:size]  # the slot of each id may differ from insertion order; set by id
    buffer.scores[:size] = torch.tensor(scores)[order]
    buffer.timestamps[:size] = torch.tensor(timestamps)[order]
    buffer.episode_count.fill_(episode_count)
    return buffer, order


def by_id(buffer, values, count):
    return {int(i): float(v) for i, v in zip(buffer.ids[:count], values[:count])}


def test_rank_and_staleness_probabilities_match_a_hand_computed_example():
    """Scores 3, 1, 2 rank 1, 3, 2: (1/rank) normalised = 6/11, 2/11, 3/11. Staleness 10 - (7, 9, 4)
    = 3, 1, 6 normalised = .3, .1, .6. Mixed 0.7 / 0.3."""
    buffer, _ = filled_buffer([3.0, 1.0, 2.0], [7, 9, 4], 10)
    expected = {0: 0.7 * 6 / 11 + 0.3 * 0.3, 1: 0.7 * 2 / 11 + 0.3 * 0.1, 2: 0.7 * 3 / 11 + 0.3 * 0.6}
    assert by_id(buffer, buffer.weights(), 3) == pytest.approx(expected)
    assert buffer.weights()[3].item() == 0.0  # the empty slot

    cold, _ = filled_buffer([3.0, 1.0, 2.0], [7, 9, 4], 10, temperature=0.5)  # (1/rank)^2: 36, 4, 9 / 49
    assert by_id(cold, cold.score_weights(), 3) == pytest.approx({0: 36 / 49, 1: 4 / 49, 2: 9 / 49})

    fresh, _ = filled_buffer([3.0, 1.0, 2.0], [10, 10, 10], 10)  # no staleness yet: uniform
    assert by_id(fresh, fresh.staleness_weights(), 3) == pytest.approx({0: 1 / 3, 1: 1 / 3, 2: 1 / 3})


def test_replay_draws_follow_the_weights_and_refresh_staleness():
    buffer, _ = filled_buffer([3.0, 1.0, 2.0], [7, 9, 4], 10)
    weights = buffer.weights()
    slots = buffer.sample(20000, torch.Generator().manual_seed(0))
    frequency = torch.bincount(slots, minlength=4).float() / 20000
    assert torch.allclose(frequency, weights, atol=0.015)
    assert buffer.episode_count.item() == 10 + 20000
    last_draw = {int(s): i for i, s in enumerate(slots.tolist())}
    for slot, position in last_draw.items():  # a replayed level's timestamp: the episode of its last draw
        assert buffer.timestamps[slot].item() == 10 + position + 1

    small, _ = filled_buffer([3.0, 1.0, 2.0], [7, 9, 4], 10)
    before = small.timestamps.clone()
    slots = small.sample(1, torch.Generator().manual_seed(1))
    assert small.timestamps[slots].item() == 11
    untouched = torch.ones(4, dtype=torch.bool)
    untouched[slots] = False
    assert torch.equal(small.timestamps[untouched], before[untouched])
    stale = small.episode_count - small.timestamps[:3]
    assert stale[slots].item() == 0 and (stale[untouched[:3]] > 0).all()


def test_insertion_fills_then_replaces_the_lowest_weight_entry_when_beaten():
    buffer = LevelBuffer(3, staleness_coeff=0.3, temperature=1.0)
    inserted = buffer.insert(tiny_levels([10, 11, 12]), torch.tensor([10, 11, 12]), torch.tensor([1.0, 5.0, 3.0]),
                             torch.tensor([0.5, 0.6, 0.7]))
    assert inserted.all() and buffer.size.item() == 3 and buffer.episode_count.item() == 3
    assert by_id(buffer, buffer.scores, 3) == {10: 1.0, 11: 5.0, 12: 3.0}
    assert by_id(buffer, buffer.timestamps, 3) == {10: 1, 11: 2, 12: 3}  # episode of each attempt
    assert by_id(buffer, buffer.levels["x"], 3) == {10: 10.0, 11: 11.0, 12: 12.0}
    assert by_id(buffer, buffer.levels["nested", "y"][:, 1], 3) == {10: 10.0, 11: 11.0, 12: 12.0}

    # Weights now: id 10 (rank 3, staleness 2) .327, id 11 (rank 1, staleness 1) .482, id 12 (rank 2,
    # staleness 0) .191: id 12 goes first although id 10 scores lower, as in jaxued.
    inserted = buffer.insert(tiny_levels([20, 21]), torch.tensor([20, 21]), torch.tensor([4.0, 0.5]),
                             torch.tensor([0.0, 0.0]))
    assert inserted.tolist() == [True, False]  # 4 beats 3; 0.5 does not beat 1
    assert by_id(buffer, buffer.scores, 3) == {10: 1.0, 11: 5.0, 20: 4.0}
    assert by_id(buffer, buffer.timestamps, 3)[20] == 4 and buffer.episode_count.item() == 5
    assert by_id(buffer, buffer.levels["x"], 3)[20] == 20.0

    by_score = LevelBuffer(3, staleness_coeff=0.0, temperature=1.0)  # without staleness: the lowest score
    by_score.insert(tiny_levels([10, 11, 12]), torch.tensor([10, 11, 12]), torch.tensor([1.0, 5.0, 3.0]),
                    torch.zeros(3))
    by_score.insert(tiny_levels([20, 21]), torch.tensor([20, 21]), torch.tensor([4.0, 0.5]), torch.zeros(2))
    assert sorted(by_score.ids.tolist()) == [11, 12, 20]

    unfinished = LevelBuffer(3, staleness_coeff=0.3, temperature=1.0)  # -inf: no finished episode
    assert not unfinished.insert(tiny_levels([1]), torch.tensor([1]), torch.tensor([-math.inf]), torch.zeros(1)).any()
    assert unfinished.size.item() == 0


def test_replay_scores_replace_the_old_ones_and_best_returns_only_grow():
    buffer = LevelBuffer(3, staleness_coeff=0.3, temperature=1.0)
    buffer.insert(tiny_levels([0, 1, 2]), torch.arange(3), torch.tensor([3.0, 2.0, 1.0]), torch.tensor([3.0, 0.0, 0.0]))
    slot = {int(i): s for s, i in enumerate(buffer.ids.tolist())}
    slots = torch.tensor([slot[0], slot[2], slot[0]])  # level 0 replayed twice: the last one counts
    buffer.update(slots, torch.tensor([7.0, 8.0, 9.0]), torch.tensor([1.0, 2.0, 0.5]))
    assert by_id(buffer, buffer.scores, 3) == {0: 9.0, 1: 2.0, 2: 8.0}
    assert by_id(buffer, buffer.max_returns, 3) == {0: 3.0, 1: 0.0, 2: 2.0}


# --------------------------------------------------------------------------------------------------
# Curricula end to end


def run_scored(source, n, batches, rollout_seed=0):
    """Play ``batches`` batches, scoring each through score_rollout on a fake rollout; returns the
    kinds, ids and levels of every batch."""
    out = []
    for b in range(batches):
        levels, ids = source.levels(n)
        kind = source.kinds
        out.append((kind.clone(), ids.clone(), levels, source.train_mask.clone()))
        done, reward, value, advantage = fake_rollout(n, seed=rollout_seed + b)
        value = value + level_scores(levels)[:, None]  # scores depend on the levels
        scores, best = source.score_rollout(done, reward, value, advantage)
        source.update(ids, scores, best)
    return out


def test_domain_randomisation_hands_out_fresh_levels_and_works_as_an_env_sampler():
    filtered = DomainRandomisation(DRConfig(noop_filter_ratio=3, noop_filter_steps=8), STATIC).sampler
    assert (filtered.noop_filter, filtered.filter_ratio, filtered.filter_steps) == (True, 3, 8)
    dr = DomainRandomisation(DRConfig(**FAST), STATIC, seed=0)
    assert isinstance(dr, LevelSource) and not isinstance(dr, ScoredLevelSource)
    levels, ids = dr.levels(3)
    assert levels.batch_size == (3,) and ids.tolist() == [0, 1, 2]
    assert dr.kinds.tolist() == [NEW] * 3 and dr.train_mask.all()
    check_levels(levels, STATIC, EnvParams(), where="DR levels")
    assert dr(2).batch_size == (2,) and dr.levels(2)[1].tolist() == [5, 6]


def test_plr_replays_trains_on_replays_only_and_fills_its_buffer_by_score():
    config = PLRConfig(**FAST, buffer_capacity=8, minimum_fill_ratio=0.5)
    plr = PLR(config, STATIC, seed=3)
    assert isinstance(plr, ScoredLevelSource) and plr.updates_per_batch == 4
    seen = set()
    batches = run_scored(plr, 4, 8)
    kinds = [int(k[0]) for k, *_ in batches]
    assert kinds[0] == NEW and REPLAY in kinds and NEW in kinds[2:], kinds
    for kind, ids, levels, train in batches:
        assert (kind == kind[0]).all(), "a batch is one kind"
        assert torch.equal(train, kind == REPLAY), "robust PLR trains on replays only"
        if kind[0] == NEW:
            assert not seen & set(ids.tolist()), "new levels get fresh ids"
        else:
            assert set(ids.tolist()) <= seen, "replays are levels seen before"
        seen |= set(ids.tolist())
    assert plr.buffer.size.item() == 8
    stats = plr.buffer.stats()
    assert stats["size"].item() == 8 and math.isfinite(stats["max_score"].item())

    exploratory = PLR(PLRConfig(**FAST, buffer_capacity=8, exploratory_grad_updates=True), STATIC)
    exploratory.levels(2)
    assert exploratory.train_mask.all()


def test_plr_new_levels_enter_the_buffer_only_once_scored():
    plr = PLR(PLRConfig(**FAST, buffer_capacity=8), STATIC)
    levels, ids = plr.levels(4)
    assert plr.buffer.size.item() == 0
    with pytest.raises(RuntimeError, match="update"):
        plr.levels(4)
    with pytest.raises(ValueError, match="ids"):
        plr.update(ids + 1, torch.ones(4))
    scores = torch.tensor([1.0, -math.inf, 2.0, 3.0])  # the second finished no episode
    plr.update(ids, scores)
    assert sorted(plr.buffer.ids[:3].tolist()) == [0, 2, 3] and plr.buffer.size.item() == 3
    with pytest.raises(RuntimeError, match="levels"):
        plr.update(ids, scores)


def test_plr_replay_updates_the_scores_of_the_replayed_levels():
    plr = PLR(PLRConfig(**FAST, buffer_capacity=4, replay_prob=1.0), STATIC)
    _, ids = plr.levels(4)
    plr.update(ids, torch.tensor([1.0, 2.0, 3.0, 4.0]), max_returns=torch.full((4,), 5.0))
    levels, ids = plr.levels(3)
    assert plr.kinds.tolist() == [REPLAY] * 3 and plr.train_mask.all()
    done, reward, value, advantage = fake_rollout(3)
    scores, best = plr.score_rollout(done, reward * 0.01, value, advantage)
    assert best.tolist() == [5.0] * 3, "MaxMC's best return counts the best seen before"
    assert torch.allclose(scores, max_mc(done, value, best))
    plr.config.score_function = "pvl"
    assert torch.equal(plr.score_rollout(done, reward, value, advantage)[0], positive_value_loss(done, advantage))
    plr.update(ids, torch.tensor([10.0, 20.0, 30.0]))
    stored = by_id(plr.buffer, plr.buffer.scores, 4)
    last = {int(i): s for i, s in zip(ids.tolist(), (10.0, 20.0, 30.0))}
    assert all(stored[i] == s for i, s in last.items())
    assert sum(s >= 10 for s in stored.values()) == len(last)


def test_accel_edits_each_replay_batch_into_valid_new_levels():
    config = ACCELConfig(**FAST, buffer_capacity=8, replay_prob=1.0, num_edits=2)
    accel = ACCEL(config, STATIC, seed=1)
    batches = run_scored(accel, 8, 5)  # batches of 8, the mutator tests' size: JAX compiles the edits once
    assert [int(k[0]) for k, *_ in batches] == [NEW, REPLAY, EDITED, REPLAY, EDITED]
    for before, after in ((1, 2), (3, 4)):
        _, parent_ids, parents, _ = batches[before]
        _, ids, edited, train = batches[after]
        check_levels(edited, STATIC, EnvParams(), where="ACCEL edited levels")
        assert not train.any(), "edited levels are scored, not trained on"
        earlier = {i for _, batch_ids, _, _ in batches[:after] for i in batch_ids.tolist()}
        assert not set(ids.tolist()) & earlier, "edited levels get fresh ids"
        changed = [not same_levels(parents[i : i + 1], edited[i : i + 1]) for i in range(8)]
        assert sum(changed) >= 4, f"edits change levels: {changed}"


def make_sfl(rates_by_call=None, **options):
    """An SFL whose solve_rates is a fake: fixed rates per call, else a function of each level."""
    calls = []

    def solve(levels, steps):
        calls.append((levels, steps))
        if rates_by_call is not None:
            return rates_by_call[len(calls) - 1]
        return level_scores(levels)

    config = SFLConfig(**FAST, **options)
    return SFL(config, STATIC, solve, seed=0), calls


def test_sfl_keeps_the_most_learnable_levels():
    """Learnability p(1-p) + 0.001 p of 0, .5, 1, .2, .8, .4 | .45, 0, ...: the best three are
    .5 (.2505), .45 (.2479) and .4 (.2404), across both scoring batches."""
    rates = [torch.tensor([0.0, 0.5, 1.0, 0.2, 0.8, 0.4]), torch.tensor([0.45, 0.0, 0.0, 0.0, 0.0, 0.0])]
    sfl, calls = make_sfl(rates, scoring_batch=6, scoring_batches=2, learnable_levels=3, scoring_steps=32)
    sfl.refresh()
    assert [steps for _, steps in calls] == [32, 32]
    scored = torch.cat([levels for levels, _ in calls])
    assert same_levels(sfl.buffer_levels, scored[torch.tensor([5, 6, 1])])
    assert sfl.buffer_learnability.tolist() == pytest.approx([0.24, 0.2475, 0.25])
    assert sfl.scored_learnability.shape == (12,)


def test_sfl_breaks_learnability_ties_towards_the_more_solvable_level():
    """.8 and .2 have the same learnability; upstream's + 0.001 p keeps .8."""
    sfl, calls = make_sfl([torch.tensor([0.0, 0.5, 1.0, 0.8, 0.2, 0.4])], scoring_batch=6, scoring_batches=1,
                          learnable_levels=3)
    sfl.refresh()
    assert same_levels(sfl.buffer_levels, calls[0][0][torch.tensor([3, 5, 1])])


def test_sfl_refreshes_periodically_and_mixes_buffer_and_fresh_levels():
    sfl, calls = make_sfl(scoring_batch=8, scoring_batches=2, learnable_levels=4, refresh_every=2, scoring_steps=16)
    for batch in range(5):
        levels, ids = sfl.levels(6)
        assert levels.batch_size == (6,) and sfl.train_mask.all()
        assert sfl.kinds.tolist() == [NEW] * 3 + [REPLAY] * 3
        assert set(ids[3:].tolist()) <= set(sfl.buffer_ids.tolist())
        assert same_levels(levels[3:], sfl.buffer_levels[torch.searchsorted(sfl.buffer_ids, ids[3:])])
        assert len(calls) == 2 * (batch // 2 + 1), "refresh at batches 0, 2, 4"
    assert sfl.updates_per_batch == 1


def test_sfl_scale_and_bad_solve_rates():
    sfl, calls = make_sfl(scoring_batch=16, learnable_levels=8, scoring_batches=1, sfl_scale=0.25)
    sfl.levels(2)
    assert calls[0][0].batch_size == (4,) and sfl.buffer_ids.shape == (2,)
    broken, _ = make_sfl([torch.tensor([0.5, math.nan])], scoring_batch=2, scoring_batches=1, learnable_levels=1)
    with pytest.raises(ValueError, match="scoring-steps"):
        broken.levels(2)


# --------------------------------------------------------------------------------------------------
# Exact resume


def play(source, batches, n=8):
    """``batches`` batches (scored with the fake level scorer where the source takes scores)."""
    out = []
    for _ in range(batches):
        levels, ids = source.levels(n)
        out.append((levels, ids, source.kinds.clone(), source.train_mask.clone()))
        if isinstance(source, ScoredLevelSource):
            source.update(ids, level_scores(levels))
    return out


def round_trip(state):
    file = io.BytesIO()
    torch.save(state, file)
    file.seek(0)
    return torch.load(file)


@pytest.mark.parametrize("name", ["dr", "plr", "accel", "sfl"])
def test_a_restored_curriculum_draws_the_same_future(name):
    configs = {
        "dr": DRConfig(**FAST),
        "plr": PLRConfig(**FAST, buffer_capacity=8, minimum_fill_ratio=0.25),
        "accel": ACCELConfig(**FAST, buffer_capacity=16, minimum_fill_ratio=0.25, replay_prob=1.0, num_edits=1),
        "sfl": SFLConfig(**FAST, scoring_batch=8, scoring_batches=1, learnable_levels=4, refresh_every=2),
    }
    solve = (lambda levels, steps: level_scores(levels)) if name == "sfl" else None
    build = lambda seed: make_level_source(name, configs[name], STATIC, seed=seed, solve_rates=solve)  # noqa: E731
    source = build(0)
    play(source, 2)  # accel: new, replay; the next batch edits the replayed one
    saved = round_trip(source.state_dict())
    expected = play(source, 3)
    restored = build(123)
    restored.load_state_dict(saved)
    got = play(restored, 3)
    for (levels, ids, kinds, train), (levels2, ids2, kinds2, train2) in zip(expected, got):
        assert same_levels(levels, levels2)
        assert torch.equal(ids, ids2) and torch.equal(kinds, kinds2) and torch.equal(train, train2)
    if name == "accel":
        assert [int(k[0]) for _, _, k, _ in expected] == [EDITED, REPLAY, EDITED]


# --------------------------------------------------------------------------------------------------
# Configs


def test_configs_have_upstream_defaults_unique_documented_flags_and_checks():
    assert dataclasses.asdict(PLRConfig()) == dict(
        noop_filter=True, noop_filter_ratio=2, noop_filter_steps=64, score_function="MaxMC", buffer_capacity=4000,
        replay_prob=0.5, staleness_coeff=0.3, temperature=1.0, minimum_fill_ratio=0.5,
        exploratory_grad_updates=False, outer_rollout_steps=4,
    )
    assert ACCELConfig().num_edits == 5
    sfl = SFLConfig()
    assert (sfl.buffer_fraction, sfl.scoring_steps, sfl.learnable_levels, sfl.refresh_every) == (0.5, 512, 1024, 128)
    assert sfl.scoring_batch * sfl.scoring_batches == 12288

    owners = {}
    for config_class, _ in CURRICULA.values():
        docs = field_docs(config_class)
        for field in dataclasses.fields(config_class):
            assert docs.get(field.name), f"{config_class.__name__}.{field.name} has no docstring"
            owners.setdefault(field.name, set()).add(field.default)
    assert all(len(defaults) == 1 for defaults in owners.values()), "one default per flag across curricula"
    assert not set(owners) & {f.name for f in dataclasses.fields(TrainConfig)}, "no clash with train's flags"

    assert parse_dataclass(SFLConfig, ["--sfl-scale", "0.25", "--no-noop-filter"], "t").sfl_scale == 0.25
    with pytest.raises(ValueError, match="--replay-prob"):
        PLR(PLRConfig(replay_prob=2.0), STATIC)
    with pytest.raises(ValueError, match="--learnable-levels"):
        SFLConfig(scoring_batch=4, scoring_batches=1, learnable_levels=5).validate()
    with pytest.raises(ValueError, match="--curriculum"):
        make_level_source("paired", DRConfig(), STATIC)
    with pytest.raises(ValueError, match="solve_rates"):
        make_level_source("sfl", SFLConfig(), STATIC)
