"""The Kinetix environment for TorchRL: a batched ``EnvBase`` over the engine's state TensorDict.

``KinetixEnv`` holds ``num_envs`` environments as one state TensorDict on ``device`` (fields as in
:mod:`kinetix_torch.schema`) and steps them together through :func:`kinetix_torch.engine.step`.
It behaves as upstream kinetix-env's ``KinetixEnv`` (``frame_skip`` substeps per step, upstream's
action encodings and observations, reward and termination), with TorchRL conventions:

* ``reward`` ``(N, 1)``: +1 when green touches blue, -1 when green touches red, plus the dense
  term ``-(distance - last_distance) * dense_reward_scale``;
* ``terminated`` (goal or red contact, or a NaN anywhere in the state), ``truncated`` (the step
  reaches ``max_timesteps`` without terminating) and ``done`` = either, each ``(N, 1)`` bool;
* ``goal_reached`` ``(N, 1)`` bool (upstream's ``info["GoalR"]``): **the solve signal**, true on
  the step where green touches blue. ``reward >= 1`` is not one: the goal step's reward is 1 plus
  the shaping term, which can be negative;
* ``outcome_reward`` ``(N, 1)``: the sparse part of ``reward`` (+1, -1 or 0), without shaping;
* ``distance`` ``(N,)`` (``info["distance"]``; after a reset, the level's green-blue distance);
* ``level_id`` ``(N, 1)`` int64: the level of each environment's episode (its bank index, or the id
  its level source gave it);
* ``observation``: a tensor or TensorDict, see :mod:`kinetix_torch.observations`.

Episodes start from one level, a uniform draw from a bank of levels (stacked once on the device),
a level sampler ``sampler(num_levels) -> TensorDict`` (batch ``[num_levels]``, every schema field at
the env's sizes; its levels get fresh ids) or a level source ``source.levels(num_levels) ->
(TensorDict, ids)``. Resets follow TorchRL's ``"_reset"`` mask: only the masked environments get a
new level. Fixed levels and banks reset without host synchronisation. Sampled levels are made
``sampler_chunk`` at a time (default ``num_envs``) and each is handed to one reset only, so the
sampler's fixed cost per call is shared by many resets; counting the levels a reset needs reads
the mask on the host (TorchRL's collectors already read ``done`` there before calling reset).

A reset can also be given its levels, as TorchRL's custom envs take parameters through the reset
TensorDict::

    env.reset(TensorDict({"level": levels, "level_id": ids, "_reset": mask}, batch_size=[N]))

starts the masked environments (all without ``"_reset"``) on their rows of ``levels`` (batch
``[N]``; ``level_id`` ``(N, 1)``, -1 when left out). With ``restart="same"`` an environment whose
episode ends restarts the level it last started (replay) instead of drawing a new one; such an env
may have no levels of its own and take every level through ``reset``.

On the Triton backends the state stays in the kernels' packed layout between steps
(:class:`~kinetix_torch.kernels.packed.PackedState`): the kernel advances it in place, resets copy
columns from the bank (or sampler chunk) packed once, and :attr:`KinetixEnv.state` is a TensorDict
of views into it, read by the observations and rewards without copies. The bank is packed at the
first reset: assign a new ``level_bank`` rather than editing it in place afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from . import engine
from .actions import ACTION_TYPES, action_spec, check_raw_actions, process_actions, random_actions
from .levels import Level, level_bank_to_tensordict, load_level
from .observations import check_observation_type, observation_spec, observe
from .params import EnvParams, StaticEnvParams, static_params_for_size
from .rewards import combine_substeps, dense_shaping, green_blue_distance
from .validation import check_levels

if TYPE_CHECKING:
    from .kernels.step import LaunchConfig

__all__ = ["KinetixEnv", "make_env", "LevelSampler", "RESTART_MODES"]

LevelSampler = Callable[[int], TensorDictBase]
"""``sampler(num_levels)`` -> TensorDict of batch ``[num_levels]`` with every state field."""

RESTART_MODES = ("fresh", "same")
"""What an environment whose episode ended starts next: a new level, or the one it last started."""


class KinetixEnv(EnvBase):
    """Batched Kinetix environments (batch size ``[num_envs]``) on ``device``.

    Args:
        levels: where episodes start: a :class:`~kinetix_torch.levels.Level`, a level JSON path, a
            state TensorDict (batch ``[]`` for one level or ``[K]`` for a bank), or a sequence of
            Levels / paths (stacked into a bank, padded to the largest or to ``static_env_params``).
            Exclusive with ``sampler`` and ``level_source``.
        sampler: ``sampler(num_levels) -> TensorDict`` making fresh levels for resets (ids counted
            from 0).
        level_source: instead of a sampler, anything with ``levels(num_levels) -> (TensorDict, ids)``
            (ids int64 ``[num_levels]``), e.g. a curriculum of :mod:`kinetix_torch.curricula`.
        sampler_chunk: levels made per sampler (or source) call (default ``num_envs``; 1 samples on demand).
        restart: one of :data:`RESTART_MODES`: ``"fresh"`` (done environments draw a new level) or
            ``"same"`` (they replay the level they last started; no ``levels``, ``sampler`` nor
            ``level_source`` needed when every first level comes with ``reset``).
        num_envs: batch size.
        observation_type: one of :data:`~kinetix_torch.observations.OBSERVATION_TYPES`.
        action_type: one of :data:`~kinetix_torch.actions.ACTION_TYPES`.
        static_env_params: sizes; default: those of the levels (required without ``levels`` or
            with a TensorDict of levels).
        env_params: default: the first Level's params, else :class:`EnvParams()`.
        frame_skip, max_timesteps: override ``static_env_params.frame_skip`` /
            ``env_params.max_timesteps``.
        backend: engine backend (see :mod:`kinetix_torch.engine`); ``None`` picks the default.
        check_action_range: raise on out-of-range integer actions. It reads the actions on the
            host, so the default (``None``) checks on CPU only.
        seed: seed of the level draws from a bank.
        cycle_levels: environment ``i`` always starts from bank level ``i % K`` instead of a
            uniform draw (as upstream's evaluation assigns levels to environments).
        pixel_format: layout of the ``"pixels"`` image: ``"float_hwc"`` (upstream's float32
            ``(N, X, Y, 3)`` in [0, 1]) or ``"uint8_chw"`` (uint8 ``(N, 3, X, Y)``, channels first
            for CNNs, a quarter of the memory); see :mod:`kinetix_torch.observations`.
        launch_config: Triton backends: how the kernel is launched
            (:class:`~kinetix_torch.kernels.step.LaunchConfig`); default: the one in force at the
            first reset (:func:`~kinetix_torch.kernels.step.current_launch_config`).
    """

    def __init__(
        self,
        levels=None,
        *,
        sampler: LevelSampler | None = None,
        level_source=None,
        sampler_chunk: int | None = None,
        restart: str = "fresh",
        num_envs: int = 1,
        observation_type: str = "symbolic_flat",
        action_type: str = "multi_discrete",
        static_env_params: StaticEnvParams | None = None,
        env_params: EnvParams | None = None,
        frame_skip: int | None = None,
        max_timesteps: int | None = None,
        device="cpu",
        backend: str | None = None,
        check_action_range: bool | None = None,
        seed: int | None = None,
        cycle_levels: bool = False,
        pixel_format: str = "float_hwc",
        launch_config: LaunchConfig | None = None,
    ):
        device = torch.device(device)
        if restart not in RESTART_MODES:
            raise ValueError(f"KinetixEnv: restart must be one of {RESTART_MODES}, got {restart!r}")
        given = [value for value in (levels, sampler, level_source) if value is not None]
        if len(given) > 1 or (not given and restart != "same"):
            raise ValueError(
                "KinetixEnv: give exactly one of levels= and sampler= (or level_source=); none only with "
                "restart='same', every first level then coming with reset()"
            )
        if action_type not in ACTION_TYPES:
            raise ValueError(f"unknown action_type {action_type!r}; expected one of {ACTION_TYPES}")
        check_observation_type(observation_type, pixel_format)
        for name, value in (("num_envs", num_envs), ("sampler_chunk", sampler_chunk or 1)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"KinetixEnv: {name} must be a positive int, got {value!r}")
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.num_envs = num_envs
        self.observation_type, self.action_type = observation_type, action_type
        self.pixel_format = pixel_format
        self.backend = backend
        self.check_action_range = device.type == "cpu" if check_action_range is None else check_action_range
        self.sampler = sampler if sampler is not None else level_source
        """The level sampler or source given (seeded and checkpointed with the env), else ``None``."""
        self._source = _FreshIds(sampler) if sampler is not None else level_source
        self.restart = restart
        self.cycle_levels = cycle_levels
        self.sampler_chunk = num_envs if sampler_chunk is None else sampler_chunk
        self._pool, self._pool_ids, self._pool_next = None, None, 0
        self._level_ids: torch.Tensor | None = None  # [N]: the level of each environment's episode
        self._start_levels: TensorDictBase | None = None  # [N], restart="same": the level each last started
        if levels is not None:
            self.level_bank, static, first_params = _level_bank(levels, static_env_params, env_params, device)
        else:
            if static_env_params is None:
                raise ValueError("KinetixEnv: without levels= the env needs static_env_params")
            sampler_static = getattr(self.sampler, "static", None)
            if isinstance(sampler_static, StaticEnvParams) and _size_text(sampler_static) != _size_text(static_env_params):
                raise ValueError(
                    f"KinetixEnv: the level sampler makes levels of {_size_text(sampler_static)} but the env "
                    f"has {_size_text(static_env_params)}: build the sampler with the env's size"
                )
            self.level_bank, static, first_params = None, static_env_params, None
        env_params = env_params or first_params or EnvParams()
        if frame_skip is not None:
            static = static.replace(frame_skip=frame_skip)
        if max_timesteps is not None:
            env_params = env_params.replace(max_timesteps=max_timesteps)
        self.static_env_params, self.env_params = static, env_params
        self._closed = False
        self._generator = torch.Generator(device=device)
        self._action_generator = torch.Generator(device=device)
        self._set_seed(seed)
        self._state: TensorDictBase | None = None
        self.launch_config = launch_config
        self._packed = None  # the PackedState on the Triton backends
        self._packed_levels = None  # (bank or sampler chunk, its PackedLevels)
        self._make_specs()

    # --------------------------------------------------------------------------------------------
    # Specs

    def _make_specs(self) -> None:
        batch, device, static = tuple(self.batch_size), self.device, self.static_env_params
        self.action_spec = action_spec(self.action_type, static, batch, device)
        self.observation_spec = Composite(
            observation=observation_spec(
                self.observation_type, static, self.env_params, batch, device, pixel_format=self.pixel_format
            ),
            goal_reached=Categorical(2, shape=batch + (1,), dtype=torch.bool, device=device),
            outcome_reward=Unbounded(shape=batch + (1,), dtype=torch.float32, device=device),
            distance=Unbounded(shape=batch, dtype=torch.float32, device=device),
            level_id=Unbounded(shape=batch + (1,), dtype=torch.int64, device=device),
            shape=batch,
            device=device,
        )
        self.reward_spec = Unbounded(shape=batch + (1,), dtype=torch.float32, device=device)
        flag = Categorical(2, shape=batch + (1,), dtype=torch.bool, device=device)
        self.done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=batch, device=device
        )

    # --------------------------------------------------------------------------------------------
    # State and resets

    def close(self, *, raise_if_closed: bool = True) -> None:
        """Release the episodes and the level pool. As TorchRL's batched envs do after ``close()``
        (which collectors call on shutdown), the env refuses to step until ``reset()`` starts it again."""
        self._closed = True
        self._state, self._pool, self._packed, self._packed_levels = None, None, None, None
        super().close(raise_if_closed=raise_if_closed)

    @property
    def state(self) -> TensorDictBase:
        """The current batched state TensorDict (schema fields; read-only use). On the Triton
        backends it is a live view of the packed state: the same TensorDict, whose entries
        change with every step and reset (``clone()`` it to keep a copy)."""
        if self._state is None:
            raise RuntimeError("KinetixEnv: call reset() before reading the state")
        return self._state

    def _set_seed(self, seed: int | None) -> None:
        """One seed for everything random in the env: the level draws from a bank, the level
        sampler (through its ``manual_seed(seed)`` or its ``generator``; unused sampled levels are
        dropped and a sampler's level ids start again from 0) and :meth:`rand_action`. ``None``
        draws a seed from torch's global generator and leaves the sampler's own seed alone."""
        if seed is not None and self.sampler is not None:
            sampler_seed = seed + 1
            if callable(getattr(self.sampler, "manual_seed", None)):
                self.sampler.manual_seed(sampler_seed)
            elif isinstance(getattr(self.sampler, "generator", None), torch.Generator):
                self.sampler.generator.manual_seed(sampler_seed)
            self._pool, self._pool_ids, self._pool_next = None, None, 0
            if isinstance(self._source, _FreshIds):
                self._source.next_id = 0
        seed = int(torch.randint(2**62, ())) if seed is None else seed
        self._generator.manual_seed(seed)
        self._action_generator.manual_seed(seed + 2)

    def rand_action(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        """Uniform random actions from the env's own seeded generator (see :meth:`_set_seed`)."""
        action = random_actions(self.num_envs, self.static_env_params, self.action_type, self._action_generator)
        if tensordict is None:
            tensordict = TensorDict({}, batch_size=self.batch_size, device=self.device)
        tensordict.set(self.action_key, action)
        return tensordict

    def _reset_mask(self, tensordict: TensorDictBase | None) -> torch.Tensor | None:
        """TorchRL's ``"_reset"`` entry as ``(N,)`` bool, ``None`` when absent."""
        if tensordict is None or "_reset" not in tensordict.keys():
            return None
        mask = tensordict.get("_reset")
        if mask.dtype != torch.bool or mask.numel() != self.num_envs:
            raise ValueError(
                f"KinetixEnv: '_reset' must be a bool tensor of {self.num_envs} entries (shape [N, 1]), "
                f"got {mask.dtype} of shape {list(mask.shape)}"
            )
        return mask.reshape(self.num_envs)

    def _given_levels(self, tensordict: TensorDictBase | None) -> tuple[TensorDictBase, torch.Tensor] | None:
        """The reset's own levels and ids (``"level"``, ``"level_id"``) checked, ``None`` when absent."""
        if tensordict is None or "level" not in tensordict.keys():
            return None
        levels = tensordict.get("level")
        if not isinstance(levels, TensorDictBase) or tuple(levels.batch_size) != (self.num_envs,):
            raise ValueError(
                f"KinetixEnv: a reset's 'level' must be a TensorDict of batch [{self.num_envs}] (one level per "
                f"environment), got {type(levels).__name__} {list(getattr(levels, 'batch_size', []))}"
            )
        levels = levels.to(self.device)
        check_levels(levels, self.static_env_params, self.env_params, where="reset 'level'")
        ids = tensordict.get("level_id", None)
        if ids is None:
            return levels, torch.full((self.num_envs,), -1, dtype=torch.int64, device=self.device)
        if ids.numel() != self.num_envs or ids.is_floating_point():
            raise ValueError(f"KinetixEnv: a reset's 'level_id' must be {self.num_envs} integers (shape [N, 1]), "
                             f"got {ids.dtype} of shape {list(ids.shape)}")
        return levels, ids.reshape(self.num_envs).to(self.device, torch.int64)

    def _level_picks(self) -> torch.Tensor | None:
        """The bank level each environment would start from (no host sync); ``None`` for a single level."""
        bank = self.level_bank
        if bank.shape[0] == 1:
            return None
        if self.cycle_levels:
            return torch.arange(self.num_envs, device=self.device) % bank.shape[0]
        return torch.randint(bank.shape[0], (self.num_envs,), generator=self._generator, device=self.device)

    def _start(self, packed, table: TensorDictBase, picks: torch.Tensor | None, ids: torch.Tensor,
               mask: torch.Tensor | None) -> None:
        """Environments where ``mask`` (all when ``None``) start from ``table[picks]`` (``table[0]``
        for all when ``picks`` is ``None``) with level ids ``ids`` ``[N]``; no host sync."""
        if packed is not None:
            packed.reset(self._packed_source(table), picks, mask)
        remember = self.restart == "same" and table is not self._start_levels
        if packed is None or remember:
            starts = table.expand(self.num_envs) if picks is None else table[picks]
            if packed is None:
                self._state = starts.clone() if mask is None else _select(mask, starts, self._state)
            if remember:
                self._start_levels = starts.clone() if mask is None else _select(mask, starts, self._start_levels)
        self._level_ids = ids.clone() if mask is None else torch.where(mask, ids, self._level_ids)

    def _start_sampled(self, packed, mask: torch.Tensor | None) -> None:
        """Environments where ``mask`` (all when ``None``) start from unused pool levels (reads the
        mask on the host to count them)."""
        rows = torch.arange(self.num_envs, device=self.device) if mask is None else mask.nonzero().squeeze(-1)
        if not len(rows):
            return
        start = self._take_from_pool(len(rows))
        levels, ids = self._pool[start : start + len(rows)], self._pool_ids[start : start + len(rows)]
        if packed is not None:
            packed.reset_rows(rows, self._packed_source(self._pool), start)
        if mask is None:
            self._level_ids = ids.clone()
        else:
            self._level_ids = self._level_ids.index_copy(0, rows, ids)
        kept = [("_state", packed is None), ("_start_levels", self.restart == "same")]
        for name, keep in kept:
            if keep:
                if mask is None or getattr(self, name) is None:
                    setattr(self, name, levels.clone())
                else:
                    updated = getattr(self, name).clone()
                    updated[rows] = levels
                    setattr(self, name, updated)

    def _take_from_pool(self, count: int) -> int:
        """Where ``count`` unused levels start in the pool, refilled by one sampler call when it
        runs short. Each call's levels are checked by :func:`~kinetix_torch.validation.check_levels`
        on the env's device: one host synchronisation per sampler call, not per reset."""
        if self._pool is None or self._pool_next + count > self._pool.shape[0]:
            made = max(count, self.sampler_chunk)
            levels, ids = self._source.levels(made)
            levels, ids = levels.to(self.device), ids.to(self.device)
            if tuple(levels.batch_size) != (made,) or tuple(ids.shape) != (made,):
                raise ValueError(f"level sampler output: asked for {made} levels, got batch "
                                 f"{list(levels.batch_size)} with ids of shape {list(ids.shape)}")
            check_levels(levels, self.static_env_params, self.env_params, where="level sampler output")
            self._pool, self._pool_ids, self._pool_next = levels, ids, 0
        start, self._pool_next = self._pool_next, self._pool_next + count
        return start

    def _packed_state(self):
        """The :class:`~kinetix_torch.kernels.packed.PackedState` on the Triton backends (made on
        first use), ``None`` on the others."""
        backend = engine.resolve_backend(self.backend, self.device)
        if self._packed is None and backend in engine.TRITON_BACKENDS:
            from .kernels import packed, step

            interpret = backend == "triton-interpret"
            engine.check_triton(interpret, self.device, self.static_env_params)
            config = self.launch_config or step.current_launch_config(self.static_env_params, interpret)
            self._packed = packed.PackedState(self.static_env_params, self.num_envs, self.device, config, interpret)
        return self._packed

    def _packed_source(self, levels: TensorDictBase):
        """``levels`` (the bank or the sampler pool) packed, once per object."""
        if self._packed_levels is None or self._packed_levels[0] is not levels:
            from .kernels.packed import PackedLevels

            self._packed_levels = (levels, PackedLevels(levels, self.static_env_params, self.device))
        return self._packed_levels[1]

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        self._closed = False
        mask = None if self._state is None else self._reset_mask(tensordict)  # a first reset starts all
        given = self._given_levels(tensordict)
        rows = torch.arange(self.num_envs, device=self.device)
        packed = self._packed_state()
        if given is not None:
            self._start(packed, given[0], rows, given[1], mask)
        elif self.restart == "same" and self._start_levels is not None:
            self._start(packed, self._start_levels, rows, self._level_ids, mask)
        elif self.level_bank is not None:
            picks = self._level_picks()
            ids = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device) if picks is None else picks
            self._start(packed, self.level_bank, picks, ids, mask)
        elif self._source is not None:
            self._start_sampled(packed, mask)
        else:
            raise ValueError("KinetixEnv: no level to start from: this env has no levels of its own; "
                             "pass them to reset() as the TensorDict entry 'level'")
        if packed is not None:
            self._state = packed.view
        state = self._state
        no = torch.zeros(self.batch_size + (1,), dtype=torch.bool, device=self.device)
        out = TensorDict(
            {
                "observation": self._observe(state),
                "goal_reached": no,
                "outcome_reward": torch.zeros(self.batch_size + (1,), device=self.device),
                "distance": green_blue_distance(state, self.static_env_params),
                "level_id": self._level_ids.unsqueeze(-1).clone(),
                "done": no,
                "terminated": no.clone(),
                "truncated": no.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )
        if given is not None:  # handed back, so that TorchRL's partial-reset merge leaves the caller's levels be
            out.set("level", tensordict.get("level"))
        return out

    def _observe(self, state):
        observation = observe(state, self.static_env_params, self.env_params, self.observation_type, self.pixel_format)
        return observation if self._packed is None else self._packed.unshared(observation)

    def reset_where_done(self, tensordict: TensorDictBase) -> TensorDictBase:
        """TorchRL's ``maybe_reset`` without reading ``done`` on the host: environments whose
        ``tensordict["done"]`` is set start a new episode, the others keep their entries. For
        rollout loops on CUDA; fixed levels, banks and replays (``restart="same"``) need no host
        sync (a level sampler reads the mask to count the levels it hands out). On the CPU, where
        reading the mask is free, a step where no episode ended skips the reset."""
        done = tensordict.get("done").reshape(self.num_envs)
        if self.device.type == "cpu" and not done.any():
            return tensordict
        fresh = self._reset(TensorDict({"_reset": done}, batch_size=self.batch_size, device=self.device))
        out = tensordict.clone(False)
        out.update(_select(done, fresh, tensordict.select(*fresh.keys())))
        return out

    # --------------------------------------------------------------------------------------------
    # Saving and restoring (exact resume of a training run). Not ``state_dict``: that name is
    # ``nn.Module``'s, which TorchRL's wrappers call with its own arguments.

    def checkpoint_state(self) -> dict:
        """Everything that decides the env's future, tensors on the CPU: the current episodes and
        their level ids, the levels replayed on ``restart="same"``, the level-draw generator, the
        unused sampled levels and the sampler's (or level source's) own generator (its
        ``state_dict()`` when it has one)."""
        sampler_state = None
        if hasattr(self.sampler, "state_dict"):
            sampler_state = self.sampler.state_dict()
        elif isinstance(getattr(self.sampler, "generator", None), torch.Generator):
            sampler_state = self.sampler.generator.get_state()
        return {
            "state": None if self._state is None else self._state.cpu().clone().to_dict(),
            "generator": self._generator.get_state(),
            "action_generator": self._action_generator.get_state(),
            "pool": None if self._pool is None else self._pool.cpu().to_dict(),
            "pool_ids": None if self._pool_ids is None else self._pool_ids.cpu(),
            "pool_next": self._pool_next,
            "sampler": sampler_state,
            "next_level_id": self._source.next_id if isinstance(self._source, _FreshIds) else None,
            "level_ids": None if self._level_ids is None else self._level_ids.cpu(),
            "start_levels": None if self._start_levels is None else self._start_levels.cpu().clone().to_dict(),
        }

    def load_checkpoint_state(self, saved: dict) -> None:
        """Restore what :meth:`checkpoint_state` returned (from an env built with the same options)."""

        def tensordict(fields):
            if fields is None:
                return None
            rows = next(iter(TensorDict(fields).values(True, True))).shape[0]
            return TensorDict(fields, batch_size=[rows]).to(self.device)

        state = tensordict(saved["state"])
        if state is not None and state.shape[0] != self.num_envs:
            raise ValueError(f"KinetixEnv: saved state has {state.shape[0]} environments, this env has {self.num_envs}")
        packed = self._packed_state()
        if packed is not None and state is not None:
            packed.load(state)
            state = packed.view
        self._state = state
        self._generator.set_state(saved["generator"])
        if "action_generator" in saved:
            self._action_generator.set_state(saved["action_generator"])
        self._pool, self._pool_next = tensordict(saved["pool"]), saved["pool_next"]
        self._start_levels = tensordict(saved.get("start_levels"))
        optional = {name: saved.get(name) for name in ("pool_ids", "level_ids")}
        self._pool_ids, self._level_ids = (None if ids is None else ids.to(self.device) for ids in optional.values())
        if self._level_ids is None and state is not None:  # saved before level ids existed
            self._level_ids = torch.full((self.num_envs,), -1, dtype=torch.int64, device=self.device)
        if self._pool is not None and self._pool_ids is None:
            self._pool_ids = torch.full((self._pool.shape[0],), -1, dtype=torch.int64, device=self.device)
        if saved.get("next_level_id") is not None:
            self._source.next_id = saved["next_level_id"]
        if saved["sampler"] is not None:
            if hasattr(self.sampler, "load_state_dict"):
                self.sampler.load_state_dict(saved["sampler"])
            else:
                self.sampler.generator.set_state(saved["sampler"])

    # --------------------------------------------------------------------------------------------
    # Step

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._closed:
            raise RuntimeError("KinetixEnv: this env was closed; call reset() to start it again")
        static, params = self.static_env_params, self.env_params
        action = tensordict.get(self.action_key)
        check_raw_actions(action, self.num_envs, static, self.action_type, self.check_action_range)
        state = self.state
        processed = process_actions(action.to(self.device), state, static, self.action_type)
        if self._packed is not None:  # the kernel advances the packed state, so `state`, in place
            info, nan = self._packed.step(processed, params)
        else:
            state, info = engine.step(state, processed, params, static, backend=self.backend)
            nan = _has_nan(state)
        outcome, distance, ended = combine_substeps(info)
        goal_reached = outcome > 0
        timestep = state["timestep"] + 1
        terminated = ended | nan
        truncated = (timestep >= params.max_timesteps) & ~terminated
        done = terminated | truncated
        reward = outcome + dense_shaping(distance, state["last_distance"], params.dense_reward_scale)
        last_distance = torch.where(done, torch.full_like(distance, -1.0), distance)
        if self._packed is not None:
            state["timestep"].copy_(timestep)
            state["last_distance"].copy_(last_distance)
        else:
            state["timestep"], state["last_distance"] = timestep, last_distance
            self._state = state
        return TensorDict(
            {
                "observation": self._observe(state),
                "reward": reward.unsqueeze(-1),
                "outcome_reward": outcome.unsqueeze(-1),
                "goal_reached": goal_reached.unsqueeze(-1),
                "distance": distance,
                "level_id": self._level_ids.unsqueeze(-1).clone(),
                "done": done.unsqueeze(-1),
                "terminated": terminated.unsqueeze(-1),
                "truncated": truncated.unsqueeze(-1),
            },
            batch_size=self.batch_size,
            device=self.device,
        )


class _FreshIds:
    """A level sampler as a level source: its levels get ids 0, 1, 2, ... in the order made."""

    def __init__(self, sampler: LevelSampler):
        self.sampler, self.next_id = sampler, 0

    def levels(self, count: int) -> tuple[TensorDictBase, torch.Tensor]:
        levels = self.sampler(count)
        ids = torch.arange(self.next_id, self.next_id + count, device=levels.device)
        self.next_id += count
        return levels, ids


def _size_text(static: StaticEnvParams) -> str:
    """The sizes that fix a level's array shapes, in words."""
    return (f"{static.num_polygons} polygons, {static.num_circles} circles, {static.num_joints} joints, "
            f"{static.num_thrusters} thrusters, {static.max_polygon_vertices} vertices, "
            f"{static.num_motor_bindings}/{static.num_thruster_bindings} motor/thruster bindings")


def _select(mask: torch.Tensor, fresh: TensorDictBase, old: TensorDictBase) -> TensorDictBase:
    """Per environment: ``fresh`` where ``mask``, else ``old`` (no host sync)."""

    def pick(current, new):
        return torch.where(mask.reshape(mask.shape + (1,) * (current.ndim - 1)), new, current)

    return old.apply(pick, fresh)


def _has_nan(state: TensorDictBase) -> torch.Tensor:
    """``(N,)``: any NaN in any float field of each environment's state (upstream's rule, which
    ends the episode). The packed state's kernel applies the same rule to its state rows, which
    hold every float field (:mod:`kinetix_torch.kernels.layout`)."""
    floats = [v.reshape(v.shape[0], -1) for v in state.values(True, True) if v.is_floating_point()]
    return torch.cat(floats, dim=1).isnan().any(-1)


def _level_bank(levels, static: StaticEnvParams | None, env_params: EnvParams | None, device):
    """Stack the ``levels`` argument into a ``[K]`` state TensorDict on ``device``, checked by
    :func:`~kinetix_torch.validation.check_levels` under ``env_params`` (default: the first Level's).
    Returns ``(bank, static, env params of the first Level or None)``."""
    if isinstance(levels, TensorDictBase):
        if static is None:
            raise ValueError("KinetixEnv: levels given as a TensorDict need static_env_params")
        bank = levels.unsqueeze(0) if levels.batch_dims == 0 else levels
        if bank.batch_dims != 1:
            raise ValueError(
                f"KinetixEnv: a TensorDict of levels must have batch [] or [K], got {list(levels.batch_size)}"
            )
        bank = bank.to(device)
        check_levels(bank, static, env_params, where="levels TensorDict")
        return bank, static, None
    loaded = _as_levels(levels)
    bank, static = level_bank_to_tensordict(loaded, device=device, static=static)
    check_levels(bank, static, env_params or loaded[0].env_params, names=[level.name for level in loaded])
    return bank, static, loaded[0].env_params


def _as_levels(levels):
    """A TensorDict of levels unchanged; otherwise a non-empty list of :class:`Level` (paths loaded)."""
    if isinstance(levels, TensorDictBase):
        return levels
    if isinstance(levels, (Level, str, Mapping)) or hasattr(levels, "__fspath__"):
        levels = [levels]
    if not isinstance(levels, Sequence) or not levels:
        raise ValueError(
            f"KinetixEnv: levels must be a Level, a path, a TensorDict or a non-empty list, got {levels!r}"
        )
    return [lvl if isinstance(lvl, Level) else load_level(lvl) for lvl in levels]


def make_env(
    observation_type: str = "symbolic_flat",
    action_type: str = "multi_discrete",
    env_size: str | StaticEnvParams = "m",
    levels=None,
    num_envs: int = 1,
    **kwargs,
) -> KinetixEnv:
    """A :class:`KinetixEnv` with upstream's option names: ``observation_type`` and ``action_type``
    as strings, ``env_size`` ``"s"``/``"m"``/``"l"`` (upstream's presets) or custom
    :class:`StaticEnvParams`, ``levels`` (see :class:`KinetixEnv`; padded to ``env_size``) or
    ``sampler=``, ``dense_reward_scale`` and any other :class:`EnvParams` field; the remaining
    keyword arguments go to :class:`KinetixEnv`."""
    static = static_params_for_size(env_size) if isinstance(env_size, str) else env_size
    param_names = set(EnvParams().to_dict())
    param_changes = {k: kwargs.pop(k) for k in list(kwargs) if k in param_names}
    env_params = kwargs.pop("env_params", None)
    if levels is not None:
        levels = _as_levels(levels)
    if param_changes:
        level_params = levels[0].env_params if isinstance(levels, list) else None
        env_params = (env_params or level_params or EnvParams()).replace(**param_changes)
    return KinetixEnv(
        levels,
        num_envs=num_envs,
        observation_type=observation_type,
        action_type=action_type,
        static_env_params=static,
        env_params=env_params,
        **kwargs,
    )
