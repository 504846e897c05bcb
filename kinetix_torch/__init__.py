"""kinetix-torch: Kinetix physics-based RL environments in PyTorch.

``make_env`` and ``KinetixEnv`` (the TorchRL environment) load on first use, so importing the
package stays light.
"""

__all__ = ["make_env", "KinetixEnv"]


def __getattr__(name: str):
    if name in __all__:
        from . import env

        return getattr(env, name)
    raise AttributeError(f"module 'kinetix_torch' has no attribute {name!r}")
