"""What the GPU suite runs on: versions, the device, whether the carried wheels import, and the
device's two ceilings measured (copy bandwidth and FP32 rate), for the engine benchmark's floor.

    python benchmarks/gpu_info.py --out info.json    # everything ("ceilings" feeds engine.py --ceilings)
    python benchmarks/gpu_info.py --imports-only     # exit 1 unless tensordict (with its C++
                                                     # extension), torchrl and kinetix_torch import
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

def imports() -> dict:
    """Version (or the import error) of each package the project needs; tensordict's C++
    extension must load, torchrl's is optional."""
    found = {}
    for name in ("torch", "triton", "jax", "numpy", "tensordict", "torchrl", "safetensors", "imageio", "kinetix_torch"):
        try:
            module = importlib.import_module(name)
            found[name] = getattr(module, "__version__", "imported")
        except Exception as error:  # report every failure, not only the first
            found[name] = f"FAILED: {type(error).__name__}: {error}"
    for name, required in (("tensordict._C", True), ("torchrl._torchrl", False)):
        try:
            importlib.import_module(name)
            found[name] = "loaded"
        except Exception as error:
            found[name] = f"{'FAILED' if required else 'not loaded (optional)'}: {type(error).__name__}: {error}"
    return found


def ceilings(device) -> dict:
    """Device-to-device copy bandwidth (bytes read + written per second) and dense FP32 matrix
    product rate without TF32, each the median of 10 timed runs after 3 warm-ups."""
    import torch

    def median_seconds(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return sorted(times)[len(times) // 2]

    source = torch.rand(2**29 // 4 * 4, device=device)  # 2 GiB of float32, random (never zeros)
    target = torch.empty_like(source)
    copy_s = median_seconds(lambda: target.copy_(source))
    n = 8192
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
    allow = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        matmul_s = median_seconds(lambda: a @ b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow
    return {"copy_bytes_per_s": 2 * source.numel() * 4 / copy_s, "fp32_flops_per_s": 2 * n**3 / matmul_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--imports-only", action="store_true")
    args = parser.parse_args(argv)
    found = imports()
    for name, value in found.items():
        print(f"{name:>18}: {value}")
    failed = [name for name, value in found.items() if str(value).startswith("FAILED")]
    if args.imports_only:
        return 1 if failed else 0
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "date": time.strftime("%Y-%m-%d"),
            "imports": found}
    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda")
        properties = torch.cuda.get_device_properties(device)
        info["device"] = {"name": properties.name, "capability": f"{properties.major}.{properties.minor}",
                          "multiprocessors": properties.multi_processor_count,
                          "memory_gib": round(properties.total_memory / 2**30, 1), "cuda": torch.version.cuda}
        info["ceilings"] = ceilings(device)
        print(f"device {properties.name}: copy {info['ceilings']['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
              f"FP32 matmul {info['ceilings']['fp32_flops_per_s'] / 1e12:.1f} TFLOP/s")
    else:
        info["device"] = {"name": "cpu"}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(info, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
