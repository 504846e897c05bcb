"""The fused kernel's launch gets past Triton's own launcher, for every size and launch
configuration, on this GPU-less machine: the arguments are bound and specialised as on a GPU
(:mod:`kinetix_torch.kernels.precompile`, compile-only CUDA target), which the interpreter never
does. A kernel argument named ``params`` once broke every GPU launch at exactly this point."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

SCRIPT = """
import itertools, sys
import triton.language as tl
from triton.runtime.jit import JITFunction
from kinetix_torch.kernels import precompile, step
from kinetix_torch.params import static_params_for_size

for size, name in itertools.product("sml", step.SWEEP_CONFIGS):
    static = static_params_for_size(size)
    for frame_skip in (1, static.frame_skip):
        precompile.bind_launch(static, frame_skip, step.SWEEP_CONFIGS[name])
print("bound", len("sml") * len(step.SWEEP_CONFIGS) * 2)

# The check can fail: a kernel with an argument named like the launcher's own locals does not bind.
@JITFunction
def bad(x, params, N: tl.constexpr):
    pass

import torch
with precompile.compile_only(90):
    try:
        bad.warmup(torch.zeros(4), torch.zeros(4), N=4, grid=(1,))
    except TypeError as error:
        print("refused:", error)
        sys.exit(0)
sys.exit("a kernel argument named 'params' was bound: the binding check no longer reaches Triton's launcher")
"""


def test_every_launch_binds_in_tritons_launcher(tmp_path):
    script = tmp_path / "bind.py"  # Triton reads a kernel's source from its file
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "bound 24" in out.stdout and "refused:" in out.stdout, out.stdout
