"""A stand-in for SGLang's `sgl_kernel` package, for the CPU engine in toolkit's tests.

PyPI's `sgl-kernel`/`sglang-kernel` wheels hold CUDA libraries only and have no source
distribution, so SGLang's CPU kernels cannot be installed from PyPI. SGLang 0.5.23 falls back
to plain torch on CPU when `torch.ops.sgl_kernel.*` is absent (with
`--attention-backend torch_native`), but it still imports names from `sgl_kernel` at module
level. This module answers every such import with a placeholder that fails loudly when
called, and implements in plain torch the one kernel the torch-native path calls.

Installed by scripts/setup-engines.sh into the SGLang engine venv only; never part of toolkit.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

import torch

__version__ = "0.0.0+toolkit.stub"


class Placeholder:
    """Any `sgl_kernel` name SGLang imports but the CPU torch-native path never calls."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{self._name}: a CPU kernel the toolkit test stub lacks")

    def __getattr__(self, attr: str) -> Placeholder:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Placeholder(f"{self._name}.{attr}")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        # Some modules subclass a kernel class at import time; a plain base keeps that working.
        return (object,)

    def __repr__(self) -> str:
        return f"<sgl_kernel placeholder {self._name}>"


def copy_all_layer_kv_cache_cpu(
    k_buffers: list[torch.Tensor],
    v_buffers: list[torch.Tensor],
    src_loc: torch.Tensor,
    dst_loc: torch.Tensor,
    *args: Any,
    **kwargs: Any,
) -> None:
    """Move KV slots src_loc -> dst_loc in every layer (the memory pool's defragmenting copy)."""
    for buffer in (*k_buffers, *v_buffers):
        buffer[dst_loc] = buffer[src_loc]


def __getattr__(name: str) -> Placeholder:
    if name.startswith("__"):
        raise AttributeError(name)
    return Placeholder(f"sgl_kernel.{name}")


class _Submodule(types.ModuleType):
    def __getattr__(self, name: str) -> Placeholder:
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder(f"{self.__name__}.{name}")


class _SubmoduleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import sgl_kernel.<anything>` succeed with a module of placeholders."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(__name__ + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _Submodule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


sys.meta_path.append(_SubmoduleFinder())
