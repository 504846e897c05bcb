"""Make upstream kinetix-env / jax2d importable on the GPU machine, for side-by-side benchmarks.

``../shared/upstream-kit`` holds upstream's wheels and ``upstream_stubs.py`` (stubs for the modules
upstream imports but never uses on the engine, env and generator paths, and a patch for the JAX
API that jax2d 1.0.1 still calls). ``benchmarks/gpu_suite.sh`` installs the wheels and points
``$KINETIX_UPSTREAM_KIT`` at the kit; :func:`enable` then prepares the imports. Without that
variable it does nothing (upstream is found only if it is installed). Never used by the library.
"""

from __future__ import annotations

import os
import sys


def enable() -> None:
    kit = os.environ.get("KINETIX_UPSTREAM_KIT")
    if not kit or "upstream_stubs" in sys.modules:
        return
    sys.path.insert(0, kit)
    import upstream_stubs

    upstream_stubs.install("auto")  # stub only what is missing: matplotlib and safetensors stay real
    upstream_stubs.patch_jax_compat()
