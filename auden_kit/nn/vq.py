"""Multi-codebook (residual) vector quantisation of feature frames, to store distillation
targets as a few bytes per frame (icefall's MVQ distillation stores HuBERT layers as codes for
the same reason). Frames are standardised per dimension, then M codebooks of K centroids each
are fitted in turn by k-means on what the earlier ones left (residual VQ): frame ~ mean + std *
sum_m C_m[code_m]. With K <= 256 a frame costs M bytes instead of 4 x dim.

    q = ResidualVQ.fit(frames, codebooks=8, size=256)
    codes = q.encode(frames)          # (T, 8) int64
    approx = q.decode(codes)          # (T, dim)
    q.save(path); ResidualVQ.load(path)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def kmeans(x: Tensor, k: int, iters: int = 20, seed: int = 0) -> Tensor:
    """Lloyd's k-means on (N, d) from a k-means++ start (each next centroid drawn with probability
    proportional to the squared distance to the nearest one so far); an emptied centroid is
    reseeded at the frame farthest from its centroid. Returns (k, d)."""
    g = torch.Generator().manual_seed(seed)
    k = min(k, x.shape[0])
    c = x.new_empty(k, x.shape[1])
    c[0] = x[int(torch.randint(x.shape[0], (1,), generator=g))]
    near = ((x - c[0]) ** 2).sum(1)
    for j in range(1, k):
        c[j] = x[int(torch.multinomial(near + 1e-12, 1, generator=g))]
        near = torch.minimum(near, ((x - c[j]) ** 2).sum(1))
    for _ in range(iters):
        d, a = torch.cdist(x, c).min(1)
        sums = torch.zeros_like(c).index_add_(0, a, x)
        n = torch.bincount(a, minlength=k)
        c = torch.where(n[:, None] > 0, sums / n.clamp(min=1)[:, None].to(x.dtype), c)
        for j in (n == 0).nonzero().flatten().tolist():  # each emptied centroid: the next farthest frame
            far = int(d.argmax())
            c[j], d[far] = x[far], -1.0
    return c


class ResidualVQ:
    def __init__(self, mean: Tensor, std: Tensor, codebooks: Tensor):
        self.mean, self.std, self.codebooks = mean.float(), std.float(), codebooks.float()  # (d), (d), (M, K, d)

    @classmethod
    def fit(cls, x: Tensor, codebooks: int, size: int = 256, iters: int = 20, seed: int = 0) -> "ResidualVQ":
        x = x.float()
        mean, std = x.mean(0), x.std(0).clamp(min=1e-5)
        r = (x - mean) / std
        books = []
        for m in range(codebooks):
            c = kmeans(r, size, iters, seed + m)
            if c.shape[0] < size:  # fewer frames than codes: pad with copies (never chosen twice)
                c = torch.cat([c, c[:1].expand(size - c.shape[0], -1)])
            books.append(c)
            r = r - c[torch.cdist(r, c).argmin(1)]
        return cls(mean, std, torch.stack(books))

    @property
    def num_codebooks(self) -> int:
        return self.codebooks.shape[0]

    def encode(self, x: Tensor, chunk: int = 4096) -> Tensor:
        """(T, d) -> (T, M) codes, chunked (bounded memory)."""
        out = []
        for part in x.float().split(chunk):
            r = (part - self.mean) / self.std
            codes = []
            for c in self.codebooks:
                k = torch.cdist(r, c).argmin(1)
                r = r - c[k]
                codes.append(k)
            out.append(torch.stack(codes, 1))
        return torch.cat(out) if out else torch.zeros(0, self.num_codebooks, dtype=torch.long)

    def decode(self, codes: Tensor) -> Tensor:
        """(T, M) codes -> (T, d) frames."""
        codes = codes.long()
        z = sum(self.codebooks[m][codes[:, m]] for m in range(self.num_codebooks))
        return self.mean + self.std * z

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        from auden_kit.io import atomic_path

        with atomic_path(Path(path)) as tmp:
            save_file({"mean": self.mean, "std": self.std, "codebooks": self.codebooks.contiguous()}, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> "ResidualVQ":
        from safetensors.torch import load_file

        t = load_file(str(path))
        return cls(t["mean"], t["std"], t["codebooks"])
