"""A sub-model that rides along without being part of the model (a distillation teacher, a
frozen language model): not in ``parameters()``, ``state_dict()`` or ``named_modules()``, so the
optimizer, the running average, checkpoints and saved model folders never see it, and no trainer
code needs to know about it. It always runs in eval mode without gradients and follows the
owner's ``.to(device)``. ``no_grad=False``: gradients still flow *through* it to what feeds it
(a frozen language model under trained adapters); its own weights stay frozen.

    self.teacher = Frozen(load_pretrained(teacher_dir).model)
    feats = self.teacher(x, x_lens)
"""

from __future__ import annotations

import torch
from torch import nn


class Frozen(nn.Module):
    def __init__(self, module: nn.Module, no_grad: bool = True):
        super().__init__()
        module.eval().requires_grad_(False)
        self.no_grad = no_grad
        object.__setattr__(self, "_hidden", [module])  # a list: nn.Module does not register it

    @property
    def module(self) -> nn.Module:
        return self._hidden[0]

    def _apply(self, fn, recurse=True):
        self.module._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, *args, **kwargs):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.no_grad):
            return self.module(*args, **kwargs)
