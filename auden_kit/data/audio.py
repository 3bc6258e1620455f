"""Read any audio file as mono float32 at a target rate (soundfile, then torchaudio)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from auden_kit.errors import UserError

log = logging.getLogger(__name__)


def resample(wav: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    """(..., N) float tensor from ``sr_in`` to ``sr_out`` Hz (band-limited sinc)."""
    if sr_in == sr_out:
        return wav
    import torchaudio.functional as AF

    return AF.resample(wav, sr_in, sr_out)


def _promised_frames(path: Path) -> int:
    """Frames the header of a WAV/FLAC file announces (0 when unknown). libsndfile quietly
    shortens a truncated WAV, so the header is read here."""
    import struct

    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] == b"fLaC" and len(head) >= 42:  # STREAMINFO: 36-bit total samples at bytes 21..26
        v = int.from_bytes(head[21:26], "big")
        return v & ((1 << 36) - 1)
    if head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return 0
    pos, block = 12, 0
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if cid == b"fmt " and pos + 22 <= len(head):
            block = struct.unpack("<H", head[pos + 20:pos + 22])[0]
        if cid == b"data":
            return size // block if block and size != 0xFFFFFFFF else 0
        pos += 8 + size + (size & 1)
    return 0


def check_waveform(x: torch.Tensor, name: str, where: str = "") -> None:
    """Refuse samples that are not finite numbers (NaN/inf decode to garbage silently)."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise UserError(f"audio '{name}' holds {bad} non-finite sample(s) (NaN or inf){where}; the file is damaged")


def load_cut_audio(cut, sample_rate: int) -> torch.Tensor:
    """A Lhotse cut's samples as a 1-D float32 tensor at ``sample_rate`` (channels averaged);
    UserError naming the cut when they cannot be read or are not finite."""
    try:
        x = torch.as_tensor(cut.resample(sample_rate).load_audio(), dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - name the cut
        raise UserError(f"cut '{cut.id}': cannot load its audio ({e})") from None
    x = x.mean(0) if x.ndim == 2 else x
    check_waveform(x, f"cut '{cut.id}'")
    return x


def _mono(data: np.ndarray) -> torch.Tensor:
    """(frames, channels) float32 samples as one channel: a single channel as it is (no second
    copy of a long file), more averaged."""
    return torch.from_numpy(np.ascontiguousarray(data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)))


def _warn_if_truncated(path: Path, promised: int, got: int) -> None:
    if 0 < promised < 2 ** 62 and got < promised:
        log.warning("audio file '%s' is truncated: its header promises %d samples, it holds %d; decoding "
                    "what is there", path, promised, got)


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"'{path}' is a folder; give the audio files in it (e.g. '{path}'/*.wav)")
    if not path.is_file():
        raise UserError(f"audio file '{path}' does not exist")
    return path


def float_samples(audio) -> torch.Tensor:
    """A waveform as float32 in [-1, 1]: integer PCM (what ``scipy.io.wavfile.read`` or
    ``torchaudio.load(normalize=False)`` give) scaled by its type's full scale, unsigned 8-bit
    centred, 64-bit integers by the 16- or 32-bit scale their values fit; floats as they are."""
    x = torch.as_tensor(audio)
    if x.dtype == torch.uint8:
        return (x.to(torch.float32) - 128.0) / 128.0
    if x.dtype == torch.int64:  # no PCM width of its own (np.array of Python ints): the one its values fit
        peak = int(x.abs().max()) if x.numel() else 0
        return x.to(torch.float32) / (32768.0 if peak <= 32768 else 2147483648.0)
    if not x.is_floating_point() and x.dtype != torch.bool:
        return x.to(torch.float32) / float(-torch.iinfo(x.dtype).min)
    return x.to(torch.float32)


def _format_hint(e: Exception) -> str:
    """What to do about a file libsndfile does not know (a video, m4a, aac, wma, ...)."""
    if "not recognised" not in str(e) and "not recognized" not in str(e):
        return ""
    return (" (the audio formats read are wav, flac, ogg/opus, mp3 and the others of libsndfile; convert "
            "other files, e.g. `ffmpeg -i IN -f wav - | auden-kit decode --model DIR -`)")


def audio_seconds(path: str | Path) -> float | None:
    """Duration that the header of an audio file announces; None when it cannot be read."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate if info.samplerate > 0 else None
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader
        return None


def read_blocks(path: str | Path, sample_rate: int = 16000, block_seconds: float = 600.0) -> Iterator[torch.Tensor]:
    """:func:`load_audio` in consecutive blocks of about ``block_seconds`` (mono, at
    ``sample_rate``; together the same samples as the whole file resampled at once, up to float
    rounding), so a recording of any length is held one block at a time. The same errors, raised
    when the block that holds the fault is read."""
    import soundfile as sf

    path = _existing_file(path)
    try:
        promised = _promised_frames(path)
        f = sf.SoundFile(str(path))
    except Exception as e:  # noqa: BLE001 - soundfile raises several types for corrupt data
        raise UserError(f"cannot read audio file '{path}': {e}{_format_hint(e)}") from None
    with f:
        rs = StreamResampler(int(f.samplerate), sample_rate)
        frames = max(1, int(block_seconds * f.samplerate))
        got = 0
        while True:
            try:
                data = f.read(frames=frames, dtype="float32", always_2d=True)
            except Exception as e:  # noqa: BLE001
                raise UserError(f"cannot read audio file '{path}' after {got / f.samplerate:.1f} s: {e}") from None
            if data.shape[0] == 0:
                break
            mono = _mono(data)
            check_waveform(mono, str(path), f" between {got / f.samplerate:.1f} and "
                           f"{(got + data.shape[0]) / f.samplerate:.1f} s")
            got += data.shape[0]
            out = rs.accept(mono)
            if out.numel():
                yield out
        if got == 0:
            raise UserError(f"audio file '{path}' holds no samples")
        _warn_if_truncated(path, promised, got)
        out = rs.finish()
        if out.numel():
            yield out


def load_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """Return a 1-D float32 tensor: channels averaged, resampled to ``sample_rate``.

    Formats: whatever libsndfile reads (wav, flac, ogg, mp3 with libsndfile >= 1.1).
    Raises UserError naming the file if it is missing, empty, unreadable or holds non-finite
    samples; warns when the header promises more samples than the file holds (truncated file).
    """
    import soundfile as sf

    path = _existing_file(path)
    try:
        promised = _promised_frames(path)
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for corrupt data
        raise UserError(f"cannot read audio file '{path}': {e}{_format_hint(e)}") from None
    if data.size == 0:
        raise UserError(f"audio file '{path}' holds no samples")
    _warn_if_truncated(path, promised, data.shape[0])
    mono = _mono(data)
    check_waveform(mono, str(path))
    return resample(mono, int(sr), sample_rate)


class StreamResampler:
    """:func:`resample` for audio that arrives in pieces: the output equals resampling the whole
    signal at once (up to float rounding). Output samples are held back until the input that
    their filter window needs has arrived; :meth:`finish` releases the rest."""

    def __init__(self, sr_in: int, sr_out: int, context: int = 64):
        import math

        g = math.gcd(int(sr_in), int(sr_out))
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self.step_in, self.step_out = self.sr_in // g, self.sr_out // g
        # torchaudio's sinc filter spans lowpass_filter_width (6) periods of the lower rate on each side
        half = int(6 * self.sr_in / min(self.sr_in, self.sr_out)) + 1
        self.blocks = -(-(half + context) // self.step_in)  # whole periods of input kept as context
        self.buf = torch.zeros(0)
        self.start = 0  # input index of buf[0], a multiple of step_in
        self.done = 0  # output samples released so far
        self.hold = int(half * self.sr_out / self.sr_in) + 2  # outputs that still need future input

    def _outputs(self, final: bool) -> torch.Tensor:
        if self.buf.numel() == 0:
            return torch.zeros(0)
        y = resample(self.buf, self.sr_in, self.sr_out)
        first = self.start // self.step_in * self.step_out  # output index of y[0]
        end = first + y.numel() - (0 if final else self.hold)
        out = y[self.done - first: max(self.done - first, end - first)]
        self.done += out.numel()
        keep = self.blocks * self.step_in
        if not final and self.buf.numel() > keep + self.step_in:
            cut = (self.buf.numel() - keep) // self.step_in * self.step_in
            self.buf = self.buf[cut:]
            self.start += cut
        return out

    def accept(self, x: torch.Tensor) -> torch.Tensor:
        if self.sr_in == self.sr_out:
            return x
        self.buf = torch.cat([self.buf, x.float()])
        return self._outputs(final=False)

    def finish(self) -> torch.Tensor:
        if self.sr_in == self.sr_out:
            return torch.zeros(0)
        return self._outputs(final=True)


def wav_stream(f, piece_seconds: float = 0.1, name: str = "-") -> Iterator[tuple[torch.Tensor, int]]:
    """Mono float32 pieces of about ``piece_seconds`` and the sample rate, read from a WAV byte
    stream as it arrives (a pipe: ``arecord -t wav``, ``ffmpeg -f wav -``, whose headers carry no
    length): PCM of 8/16/24/32 bits or 32/64-bit float, any rate and channels. A stream that is
    not WAV, or a format other than these, is a UserError naming ``name``."""
    import struct

    def exact(n: int) -> bytes:
        out = b""
        while len(out) < n:
            got = f.read(n - len(out))
            if not got:
                break
            out += got
        return out

    head = exact(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        raise UserError(f"'{name}' is not a WAV stream (it starts {head[:4]!r}): live streaming reads WAV, e.g. "
                        "`arecord -f S16_LE -r 16000 -t wav -` or `ffmpeg -i IN -f wav -`")
    fmt = None
    while True:
        chunk = exact(8)
        if len(chunk) < 8:
            raise UserError(f"'{name}': the WAV stream ended before its audio data began")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt ":
            body = exact(size + (size & 1))
            if len(body) < 16:
                raise UserError(f"'{name}': the WAV stream ended before its audio data began")
            tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the subformat's tag
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits, align)
        elif cid == b"data":
            break
        else:  # LIST, fact, ds64, ...: skipped
            exact(size + (size & 1))
    if fmt is None:
        raise UserError(f"'{name}': the WAV stream has no format chunk before its data")
    tag, channels, rate, bits, align = fmt
    kinds = {(1, 8): "u1", (1, 16): "<i2", (1, 24): None, (1, 32): "<i4", (3, 32): "<f4", (3, 64): "<f8"}
    if (tag, bits) not in kinds or channels < 1 or rate < 1:
        raise UserError(f"'{name}': WAV format {tag} with {bits} bits is not read live (PCM 8/16/24/32 bits or "
                        "32/64-bit float are); convert it, e.g. `ffmpeg -i IN -f wav -acodec pcm_s16le -`")
    frame = align or channels * bits // 8
    per_piece = max(1, int(piece_seconds * rate)) * frame
    read = getattr(f, "read1", f.read)  # what has arrived, without waiting for a whole piece
    rest = b""
    while True:
        got = read(per_piece - len(rest))
        if not got:
            break
        rest += got
        usable = len(rest) - len(rest) % frame
        if usable == 0:
            continue
        raw, rest = rest[:usable], rest[usable:]
        if bits == 24:  # into the top 3 bytes of int32 (the sign with them): 32-bit PCM's full scale
            b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            pcm = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
        else:
            pcm = np.frombuffer(raw, dtype=kinds[(tag, bits)]).copy()
        x = float_samples(pcm).reshape(-1, channels)
        mono = x[:, 0].contiguous() if channels == 1 else x.mean(1)
        check_waveform(mono, name)
        yield mono, int(rate)
