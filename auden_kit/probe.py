"""Probes of a frozen encoder (X-ARES / SUPERB style): how much of a label can be read from its
representations without fine-tuning it.

    features  the encoder of any model folder (or the same architecture freshly initialised:
              the baseline), run once over the train and test cuts; every layer tap
              (``return_layers``; the output alone for encoders without taps), clip level
              (masked mean pool) or frame level (every ``frame_stride``-th frame, labelled
              with its cut's label)
    probes    ``knn``: training-free, cosine similarity, the k nearest training items vote with
              weight exp(similarity / temperature); ``linear``: logistic regression;
              ``mlp``: one hidden layer (ReLU). Linear and MLP train with Adam on standardised
              features, a fixed number of epochs and seed.
    layers    ``last`` (the encoder output), ``weighted`` (SUPERB: a learned softmax-weighted sum
              of the taps, trained with the probe; kNN uses the plain mean of the taps) or
              ``all`` (one row per tap)

Labels: any supervision field (``speaker``, ``gender``, ``language``, ``text``) or ``custom.<key>``;
``alignment.<kind>``, always probed per frame (e.g. ``alignment.phone``: each frame labelled with the
aligned phone under it, as SUPERB's phone probe; the synthesized corpora and ``lhotse prepare
librispeech`` with alignments provide them); cuts without the label are left out; test labels
never seen in training count as errors.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from torch import Tensor, nn

from auden_kit.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ProbeFeatures:
    """``layers``: [L] tensors (N, C_l) (clip level) or (M, C_l) (frame level); ``labels``: [N or M]."""

    layers: list
    labels: list
    cut_ids: list


def load_encoder(model_dir: str, random_init: bool = False, seed: int = 0):
    """(encoder module in eval mode, LoadedModel). ``random_init``: same architecture, fresh weights."""
    from auden_kit.hub import load_pretrained

    lm = load_pretrained(model_dir)
    if random_init:
        torch.manual_seed(seed)
        lm.model = lm.task.build_model().eval()
    enc = getattr(lm.model, "encoder", None)
    if enc is None:
        raise UserError(f"the model in '{model_dir}' (task {lm.task.name}) has no 'encoder' to probe")
    return enc, lm


def _encode(enc, x: Tensor, lens: Tensor) -> tuple[list[Tensor], Tensor]:
    try:
        out, out_lens, layers = enc(x, lens, return_layers=True)
        return list(layers) + [out], out_lens
    except TypeError:  # an encoder without taps
        out, out_lens = enc(x, lens)
        return [out], out_lens


def cut_batches(cuts_path: str, features, max_duration: float = 100.0, progress: bool = True, task=None):
    """Inference batches (batch contract of :mod:`auden_kit.tasks.base`) of a cut manifest in its
    order of buckets, with a progress bar: precomputed features when the cuts have them, else
    fbank computed on the fly with ``features`` (a model folder's feature settings)."""
    from tqdm import tqdm

    from auden_kit.data.datamodule import DataConfig, load_cuts, make_loader

    cuts = load_cuts(cuts_path)
    first = next(iter(cuts), None)
    if first is None:
        raise UserError(f"manifest '{cuts_path}' holds no cuts")
    cfg = DataConfig(max_duration=max_duration, num_workers=0, spec_augment=False, min_cut_duration=0,
                     max_cut_duration=1e9, on_the_fly_feats=not first.has_features, fbank=features)
    loader, _ = make_loader(cfg, [cuts_path], train=False, task=task)
    with tqdm(total=sum(1 for _ in cuts), desc=f"encoding {str(cuts_path).split('/')[-1]}", unit="cut",
              disable=not progress) as bar:
        for batch in loader:
            if "error" in batch:
                raise UserError(batch["error"])
            yield batch
            bar.update(len(batch["cut_ids"]))


def _frame_symbols(items: list, times: list[float]) -> list:
    """The symbol of ``items`` that covers each time (None in gaps)."""
    import bisect

    starts = [x[1] for x in items]
    out = []
    for t in times:
        j = bisect.bisect_right(starts, t) - 1
        out.append(items[j][0] if j >= 0 and t < items[j][2] else None)
    return out


def output_frame_times(idx: Tensor, num_in: int, num_out: int, features) -> list[float]:
    """Centre (seconds) of the input span under each encoder output frame in ``idx``: output frame
    k covers input frames [r k, r (k + 1)) with r = round(num_in / num_out), shifted by half of the
    frames the front end consumed (a valid convolution's context, e.g. 3.5 input frames for
    Zipformer's (T - 7) / 4), each input frame centred half a window after its start. For the
    Zipformer this puts the labels where a probe of a trained ASR encoder reads phones best."""
    r = max(1, round(num_in / max(num_out, 1)))
    c = (num_in - r * num_out) / 2
    return [(r * k + (r - 1) / 2 + c) * features.frame_shift + features.frame_length / 2 for k in idx.tolist()]


@torch.no_grad()
def extract(enc, lm, cuts_path: str, label_key: str, level: str = "clip", frame_stride: int = 4,
            max_duration: float = 100.0, progress: bool = True) -> ProbeFeatures:
    """Encoder features of the cuts in ``cuts_path`` that carry ``label_key``. ``alignment.<kind>``
    (always frame level) labels each frame with the aligned symbol under its centre (SUPERB's
    phone-classification probe with ``alignment.phone``); frames in gaps are left out."""
    from auden_kit.heads.pooling import MeanPooling
    from auden_kit.metrics.timing import aligned_items
    from auden_kit.tasks.classify import cut_label

    kind = label_key[len("alignment."):] if label_key.startswith("alignment.") else None
    level = "frame" if kind is not None else level
    layers: list[list[Tensor]] = []
    labels, ids = [], []
    pool = MeanPooling()
    for batch in cut_batches(cuts_path, lm.features, max_duration, progress):
        cl = list(batch["cuts"])
        if kind is None:
            keep = [i for i, c in enumerate(cl) if cut_label(c, label_key) is not None]
        else:
            keep = [i for i, c in enumerate(cl) if aligned_items(c, kind)]
        if not keep:
            continue
        outs, lens = _encode(enc, batch["inputs"], batch["input_lens"])
        if not layers:
            layers = [[] for _ in outs]
        for i in keep:
            n = int(lens[i])
            if level == "clip":
                for li, o in enumerate(outs):
                    layers[li].append(pool(o[i:i + 1, :n], lens[i:i + 1].clamp(max=n)))
                labels.append(cut_label(cl[i], label_key))
                ids.append(cl[i].id)
                continue
            idx = torch.arange(0, n, frame_stride)
            if kind is None:
                frame_labels = [cut_label(cl[i], label_key)] * len(idx)
            else:
                times = output_frame_times(idx, int(batch["input_lens"][i]), n, lm.features)
                frame_labels = _frame_symbols(aligned_items(cl[i], kind), times)
                idx = idx[[j for j, v in enumerate(frame_labels) if v is not None]]
                frame_labels = [v for v in frame_labels if v is not None]
            for li, o in enumerate(outs):
                layers[li].append(o[i, idx])
            labels += frame_labels
            ids += [cl[i].id] * len(idx)
    if not labels and kind is not None:
        raise UserError(f"no cut of '{cuts_path}' has a '{kind}' alignment (supervision.alignment['{kind}']): the "
                        "synthesized corpora store word and phone alignments (`auden-kit data synth --format lhotse`), "
                        "`lhotse prepare librispeech` attaches word alignments when LibriSpeech-Alignments (MFA) "
                        "files sit next to the transcripts")
    if not labels:
        raise UserError(f"no cut of '{cuts_path}' has the label '{label_key}' (a supervision field such as speaker, "
                        "gender, text, custom.<key>, or alignment.<kind> such as alignment.phone)")
    return ProbeFeatures([torch.cat(ls).float() for ls in layers], labels, ids)


def _pad_stack(layers: list[Tensor]) -> Tensor:
    """(N, L, C_max): the taps zero-padded to the widest."""
    C = max(t.shape[1] for t in layers)
    return torch.stack([nn.functional.pad(t, (0, C - t.shape[1])) for t in layers], dim=1)


def knn_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, k: int = 10,
              temperature: float = 0.07) -> Tensor:
    """Predicted classes of ``test_x``: cosine kNN with exp(sim / T)-weighted votes."""
    a = nn.functional.normalize(train_x, dim=-1)
    b = nn.functional.normalize(test_x, dim=-1)
    k = min(k, a.shape[0])
    preds = []
    for s in range(0, b.shape[0], 1024):
        sim = b[s:s + 1024] @ a.t()
        top, idx = sim.topk(k, dim=-1)
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, train_y[idx], (top / temperature).exp())
        preds.append(votes.argmax(-1))
    return torch.cat(preds)


class _Head(nn.Module):
    def __init__(self, num_layers: int, dim: int, num_classes: int, hidden: int, weighted: bool):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers)) if weighted else None
        self.net = (nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)) if hidden
                    else nn.Linear(dim, num_classes))

    def forward(self, x: Tensor) -> Tensor:  # x: (N, L, C) or (N, C)
        if self.layer_logits is not None:
            x = (x * self.layer_logits.softmax(0).view(1, -1, 1)).sum(1)
        return self.net(x)


def trained_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, hidden: int = 0,
                  epochs: int = 100, lr: float = 1e-2, weight_decay: float = 1e-4, batch_size: int = 256,
                  seed: int = 0) -> tuple[Tensor, list | None]:
    """Logistic regression (``hidden`` 0) or an MLP on standardised features; inputs (N, C) or
    (N, L, C) for the layer-weighted sum. Returns test predictions and the learned layer weights."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mu = train_x.mean(0, keepdim=True)
    sd = train_x.std(0, keepdim=True).clamp(min=1e-5)
    xa, xb = (train_x - mu) / sd, (test_x - mu) / sd
    weighted = xa.dim() == 3
    head = _Head(xa.shape[1] if weighted else 1, xa.shape[-1], num_classes, hidden, weighted)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = xa.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            i = perm[s:s + batch_size]
            loss = nn.functional.cross_entropy(head(xa[i]), train_y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        pred = head(xb).argmax(-1)
        w = head.layer_logits.softmax(0).tolist() if weighted else None
    return pred, w


def run_probes(train: ProbeFeatures, test: ProbeFeatures, methods=("knn", "linear"), layers: str = "last",
               k: int = 10, temperature: float = 0.07, hidden: int = 256, epochs: int = 100, seed: int = 0) -> list[dict]:
    """Accuracy of every (method, layer choice); one dict per row."""
    classes = sorted(set(train.labels))
    if len(classes) < 2:
        raise UserError(f"the probe's training cuts have {len(classes)} distinct label(s); need at least 2")
    index = {c: i for i, c in enumerate(classes)}
    ytr = torch.tensor([index[v] for v in train.labels])
    yte = torch.tensor([index.get(v, -1) for v in test.labels])  # unseen labels: always wrong
    unseen = int((yte < 0).sum())
    if layers == "last":
        choices = [("last", train.layers[-1], test.layers[-1])]
    elif layers == "all":
        choices = [(str(i), a, b) for i, (a, b) in enumerate(zip(train.layers, test.layers))]
    elif layers == "weighted":
        choices = [("weighted", _pad_stack(train.layers), _pad_stack(test.layers))]
    else:
        raise UserError(f"--layers must be last, weighted or all, got '{layers}'")
    rows = []
    for name, a, b in choices:
        for m in methods:
            w = None
            if m == "knn":
                a2, b2 = (a.mean(1), b.mean(1)) if a.dim() == 3 else (a, b)
                pred = knn_probe(a2, ytr, b2, len(classes), k=k, temperature=temperature)
            elif m in ("linear", "mlp"):
                pred, w = trained_probe(a, ytr, b, len(classes), hidden=hidden if m == "mlp" else 0, epochs=epochs,
                                        seed=seed)
            else:
                raise UserError(f"unknown probe '{m}' (choose from knn, linear, mlp)")
            acc = float((pred == yte).float().mean())
            row = {"method": m, "layer": name, "accuracy": round(100 * acc, 2), "classes": len(classes),
                   "train": len(train.labels), "test": len(test.labels), "unseen_test_labels": unseen}
            if w is not None:
                row["layer_weights"] = [round(v, 3) for v in w]
            rows.append(row)
    return rows
