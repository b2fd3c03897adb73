"""Where an expert's parameters live: in memory, in a memory-mapped safetensors file, or as exact low-rank deltas.

`ExpertState` is the read-only name -> tensor mapping a `MergingProblem` keeps per expert. It reads each tensor
when asked, from whichever source holds it, so that code reading experts (task vectors, Fisher merging, RegMean,
evaluation of an expert) sees plain tensors, while memory holds only what the source must:

- in memory: the tensors given (references, no copy);
- a safetensors file: nothing until read; `safe_open` maps the file, so a read tensor's pages are loaded when
  touched and dropped with the tensor;
- low-rank deltas theta_t = theta_0 + B A (LoRA adapters): theta_0 is the pretrained model's own tensor, and a
  dense theta_t is formed only when read; `factors(name)` gives (B, A) to code that merges in factored form.

`release(keep)` drops what a merging model will not read again (everything outside its up-scaled modules);
reading a released name afterwards raises a KeyError saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


@dataclass(frozen=True)
class LowRankExpert:
    """An expert given as exact low-rank deltas of the pretrained model: theta_t[n] = theta_0[n] + B_n A_n for each
    name n of `factors` (B: (d_out, r), A: (r, d_in), the scale already folded into B), theta_0 elsewhere."""

    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]


class ExpertState(Mapping[str, torch.Tensor]):
    """One expert's parameters by the pretrained model's names, read on demand from their source (module docstring).

    Args:
        names: the parameter names and shapes (the pretrained model's), in order.
        pretrained: name -> theta_0 tensor, read when a low-rank delta is formed (the pretrained module's own).
        tensors: tensors held in memory.
        path: a safetensors file holding the tensors not in `tensors` under the same names.
        factors: name -> (B, A) low-rank deltas over `pretrained`.
        dtype, device: what a tensor read from `path` or formed from `factors` is cast to.
    """

    def __init__(
        self,
        names: Mapping[str, torch.Size],
        pretrained: Callable[[str], torch.Tensor],
        tensors: Mapping[str, torch.Tensor] | None = None,
        path: str | Path | None = None,
        factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.shapes = dict(names)
        self._pretrained = pretrained
        self._tensors = dict(tensors or {})
        self._path = None if path is None else Path(path)
        self._factors = dict(factors or {})
        self.dtype, self.device = dtype, torch.device(device)
        self.released: set[str] = set()
        self.released_by: str | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self.released:
            raise KeyError(
                f"parameter {name!r} of this expert was released after {self.released_by} merged it once "
                "(release_experts=True); build the problem again to read it"
            )
        if name in self._tensors:
            return self._tensors[name]
        if name not in self.shapes:
            raise KeyError(name)
        if self._path is not None:
            with safe_open(str(self._path), framework="pt") as file:  # memory-mapped: pages load when touched
                return file.get_tensor(name).to(device=self.device, dtype=self.dtype)
        theta_0 = self._pretrained(name).detach()  # a low-rank expert: theta_0 + B A, or theta_0 where it has no delta
        if name in self._factors:
            b, a = self._factors[name]
            return theta_0.to(self.dtype) + (b @ a).to(self.dtype)
        return theta_0

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(B, A) with theta_t[name] - theta_0[name] = B A exactly, when this expert holds `name` low-rank."""
        return None if name in self.released else self._factors.get(name)

    def resident(self) -> list[torch.Tensor]:
        """The tensors this state holds in memory (not counting a file's mapped pages or theta_0)."""
        return [*self._tensors.values(), *(t for pair in self._factors.values() for t in pair)]

    def hold(self, names: Collection[str]) -> None:
        """Keep the tensors of `names` at hand (read once: a file's are memory-mapped, a low-rank delta formed)."""
        self._tensors.update({name: self[name] for name in names if name not in self._tensors})

    def release(self, keep: Collection[str], by: str) -> None:
        """Drop every parameter outside `keep`: later reads of them raise a KeyError naming `by`."""
        keep = set(keep)
        self.released |= set(self.shapes) - keep
        self.released_by = by
        self._tensors = {n: t for n, t in self._tensors.items() if n in keep}
        self._factors = {n: f for n, f in self._factors.items() if n in keep}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ExpertState:
        """Move (and cast floating-point tensors of) this state in place; reads from its file follow."""
        self.device, self.dtype = torch.device(device or self.device), dtype or self.dtype
        self._tensors = {n: t.to(device=self.device, dtype=self.dtype) for n, t in self._tensors.items()}
        self._factors = {
            n: (b.to(device=self.device, dtype=self.dtype), a.to(device=self.device, dtype=self.dtype))
            for n, (b, a) in self._factors.items()
        }
        return self


def file_shapes(path: str | Path) -> dict[str, torch.Size]:
    """The tensor names and shapes of a safetensors file, read from its header (no tensor data is read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expert checkpoint {path} does not exist; pass a .safetensors file or a state dict")
    try:
        with safe_open(str(path), framework="pt") as file:
            return {name: torch.Size(file.get_slice(name).get_shape()) for name in file.keys()}  # noqa: SIM118
    except SafetensorError as error:
        raise ValueError(
            f"{path} is not a readable safetensors file ({error}); pass one written by save_file"
        ) from error
