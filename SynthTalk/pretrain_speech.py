"""Pretrain the demo's small wav2vec2-architecture speech encoder from scratch on frame-level phoneme
classification of espeak-ng speech, whose phoneme timings are exact.

    python SynthTalk/pretrain_speech.py OUT_DIR [--utterances N] [--epochs E] [--seed S] [--threads T]

OUT_DIR becomes an HF folder (the base Wav2Vec2Model, no classification head), usable as
`main.py --audio_model OUT_DIR`.

Why: trained jointly with the face model on a couple of hundred sentences, a randomly initialised
encoder overfits and its CNN stays at random weights. Here the whole encoder, CNN included, first
learns which sound is heard at every motion frame, from thousands of utterances by many voices.

Phonemes, not viseme classes: the viseme of a frame is a function of its phoneme (visemes.py), so the
finer labels lose nothing the face needs, and they keep distinctions (t/k/n, s/z, vowel qualities)
that tell the face model where it is within a word and what comes next, which coarticulation and the
stress-dependent jaw motion depend on. The class inventory is visemes.PHONEME_VISEMES plus silence
and one class for unlisted symbols; the printed viseme accuracy maps both prediction and label to
their viseme sequence in that table.

Time grid: training runs through models.audio.SpeechEncoder(ratio=1), the very module the face model
uses, so the transformer and its positional convolution see 30 fps steps. The label of a step is the
phoneme sounding at the centre of the CNN window that the encoder's linear interpolation reads that
step from (within 1/30 s of i/30 s, the time of face frame i).

Data: whole training sentences (1-32; 33-40 are held out for the face model) and random word
sequences from their vocabulary, spoken by voices drawn more widely than SynthTalk's speakers: eight
English accents, pitch, rate and pitch range beyond the speakers' ranges. Held-out utterances use
voice variants never heard in training (m2, m6, f5). Batches group utterances of similar length, each
randomly cropped to the shortest of its batch.

Deterministic for a seed and thread count.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path

import numpy as np

# Threads that spin while waiting stall badly when other processes share the CPU. Set before torch
# loads; torch is imported inside the functions that use it, as the synthesis workers need none of it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ptalker.audio import SAMPLE_RATE, load_audio  # noqa: E402
from ptalker.datasets import SYNTHTALK_HELDOUT_TRAIN_SENTENCES  # noqa: E402
from ptalker.errors import UserError, print_user_error  # noqa: E402
from ptalker.fileio import atomic_folder, save_wav  # noqa: E402
from SynthTalk.corpus import FPS, SENTENCES  # noqa: E402
from SynthTalk.speech import Synthesizer, Voice, is_pause  # noqa: E402
from SynthTalk.visemes import PHONEME_VISEMES  # noqa: E402

# Only the face model's training sentences: their text is all the encoder ever hears.
TEXTS = tuple(SENTENCES[i - 1] for i in SYNTHTALK_HELDOUT_TRAIN_SENTENCES)
VOCABULARY = tuple(sorted({w.strip(",.?!").lower() for text in TEXTS for w in text.split()}))

ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbcwmd",
           "en-gb-x-gbclan")
# Every variant of SynthTalk's speakers (corpus.VOICE_VARIANTS) is among the training ones.
TRAIN_VARIANTS = ("m1", "m3", "m4", "m5", "m7", "m8", "f1", "f2", "f3", "f4")
HELDOUT_VARIANTS = ("m2", "m6", "f5")
# Speakers draw pitch 35-65, rate 150-185 wpm and range 35-80; these are wider on both sides.
PITCH, RATE, RANGE = (20, 81), (125, 226), (10, 101)
WHOLE_SENTENCES = 0.3    # fraction of utterances that are whole sentences; the rest are word sequences

SILENCE, OTHER = "(silence)", "(other)"
PHONEMES = (SILENCE, *PHONEME_VISEMES, OTHER)            # class id = index
_CLASS = {symbol: i for i, symbol in enumerate(PHONEMES)}
_VISEME = {**PHONEME_VISEMES, SILENCE: ("rest",), OTHER: ("other",)}
VISEME_OF_CLASS = np.unique([" ".join(_VISEME[p]) for p in PHONEMES], return_inverse=True)[1]


def phoneme_class(symbol: str) -> int:
    if is_pause(symbol):
        return _CLASS[SILENCE]
    return _CLASS.get(symbol, _CLASS[OTHER])


@dataclass(frozen=True)
class Clip:
    audio: np.ndarray     # (S,) float32, 16 kHz
    starts: np.ndarray    # (P,) phone start times, seconds
    ends: np.ndarray      # (P,) phone end times, seconds
    classes: np.ndarray   # (P,) phoneme class ids

    @property
    def frames(self) -> int:
        return round(len(self.audio) / SAMPLE_RATE * FPS)   # the face model's frame count for this audio


def random_voice(rng: np.random.Generator, variants: tuple[str, ...]) -> Voice:
    return Voice(f"{rng.choice(ACCENTS)}+{rng.choice(variants)}", pitch=int(rng.integers(*PITCH)),
                 rate=int(rng.integers(*RATE)), range=int(rng.integers(*RANGE)))


def random_text(rng: np.random.Generator) -> str:
    """A training sentence, or 4-12 random words of their vocabulary with maybe a comma (a pause)."""
    if rng.random() < WHOLE_SENTENCES:
        return TEXTS[rng.integers(len(TEXTS))]
    words = [str(w) for w in rng.choice(VOCABULARY, rng.integers(4, 13))]
    if rng.random() < 0.5:
        words[rng.integers(len(words) - 1)] += ","
    return " ".join(words).capitalize() + str(rng.choice([".", "?", "!"]))


@lru_cache(maxsize=1)
def _synthesizer() -> Synthesizer:
    return Synthesizer()


def make_clip(seed: int, heldout: bool, index: int) -> Clip:
    """Utterance `index` of the training (or held-out) set for a seed: random text by a random voice.

    It goes through a wav file and ptalker.audio.load_audio, the face model's own decoding and
    resampling, so the encoder gets exactly the kind of input it will get from the corpus."""
    rng = np.random.default_rng([seed, int(heldout), index])
    voice = random_voice(rng, HELDOUT_VARIANTS if heldout else TRAIN_VARIANTS)
    utterance = _synthesizer().speak(random_text(rng), voice)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        save_wav(wav, utterance.audio, utterance.sample_rate)
        audio = load_audio(wav)
    phones = utterance.phones
    return Clip(audio, np.array([p.start for p in phones]), np.array([p.end for p in phones]),
                np.array([phoneme_class(p.symbol) for p in phones]))


def synthesize(count: int, seed: int, heldout: bool, workers: int = 1, progress: bool = True) -> list[Clip]:
    """Clips 0..count-1 (see make_clip), made in `workers` spawned processes. speech.py forks for
    every utterance, and forking slows down as a process grows, so the one holding the clips never forks."""
    from tqdm import tqdm

    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        clips = pool.map(make_clip, repeat(seed), repeat(heldout), range(count), chunksize=16)
        return list(tqdm(clips, total=count, desc="held-out speech" if heldout else "training speech",
                         unit="utt", disable=not progress))


def step_times(samples: int, frames: int, config) -> np.ndarray:
    """(frames,) time in seconds of each aligned step SpeechEncoder makes of `samples` audio samples:
    the centre of the CNN window its linear interpolation (align_corners) reads the step from."""
    from models.audio import conv_geometry

    field, jump, steps = conv_geometry(config.conv_kernel, config.conv_stride, samples)
    position = np.arange(frames) * (steps - 1) / max(frames - 1, 1)
    return (position * jump + field / 2) / SAMPLE_RATE


def frame_labels(clip: Clip, offset: int, samples: int, config) -> np.ndarray:
    """(frames,) phoneme class at every 30 fps step of clip.audio[offset:offset + samples]."""
    frames = round(samples / SAMPLE_RATE * FPS)
    t = offset / SAMPLE_RATE + step_times(samples, frames, config)
    k = np.searchsorted(clip.starts, t, side="right") - 1
    inside = (k >= 0) & (t < clip.ends[np.maximum(k, 0)])
    return np.where(inside, clip.classes[np.maximum(k, 0)], _CLASS[SILENCE])


def length_buckets(clips: list[Clip], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of clip indices of similar length, in random order. A random jitter of up to half a
    second in the sort key changes which clips share a batch from one epoch to the next."""
    lengths = np.array([len(c.audio) for c in clips]) + rng.uniform(0, SAMPLE_RATE / 2, len(clips))
    order = np.argsort(lengths, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def make_batch(clips: list[Clip], rng: np.random.Generator, config):
    """Clips -> audio (B, S) float32 and labels (B, frames) int64: each clip randomly cropped to the
    shortest one's length, so no padding is needed."""
    import torch

    samples = min(len(c.audio) for c in clips)
    offsets = [int(rng.integers(len(c.audio) - samples + 1)) for c in clips]
    audio = np.stack([c.audio[o:o + samples] for c, o in zip(clips, offsets)])
    labels = np.stack([frame_labels(c, o, samples, config) for c, o in zip(clips, offsets)])
    return torch.from_numpy(audio), torch.from_numpy(labels).long()


def build(hidden: int, layers: int, heads: int, conv_dim: int, seed: int):
    """The scratch speech model (ptalker.scratch_speech's settings and initialisation), wrapped as the
    face model wraps it, with the CNN unfrozen, and a linear phoneme head -> (encoder, head)."""
    import torch

    from models.audio import SpeechEncoder, load_speech_model
    from ptalker.scratch_speech import save_scratch_speech_model

    with tempfile.TemporaryDirectory() as tmp:
        save_scratch_speech_model(tmp, hidden=hidden, layers=layers, heads=heads, conv_dim=conv_dim, seed=seed)
        model = load_speech_model(tmp)
    encoder = SpeechEncoder(model, ratio=1)
    # SpeechEncoder freezes the CNN for the face model; learning it is the point here.
    for p in model.feature_extractor.parameters():
        p.requires_grad = True
    model.feature_extractor._requires_grad = True
    torch.manual_seed(seed)
    return encoder, torch.nn.Linear(model.config.hidden_size, len(PHONEMES))


def train_step(encoder, head, optimizer, audio, labels) -> float:
    """One AdamW step on audio (B, S) with labels (B, frames) -> the batch's cross-entropy."""
    import torch
    import torch.nn.functional as F

    logits = head(encoder(audio, labels.shape[1]))                      # (B, frames, classes)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], 1.0)
    optimizer.step()
    return loss.item()


def evaluate(encoder, head, clips: list[Clip]) -> dict[str, float]:
    """Frame accuracies over whole clips, each encoded alone as the face model encodes a sentence."""
    import torch

    encoder.eval()
    correct = viseme_correct = silence = total = 0
    with torch.no_grad():
        for clip in clips:
            labels = frame_labels(clip, 0, len(clip.audio), encoder.model.config)
            audio = torch.from_numpy(clip.audio)[None]
            predicted = head(encoder(audio, len(labels)))[0].argmax(-1).numpy()
            correct += int((predicted == labels).sum())
            viseme_correct += int((VISEME_OF_CLASS[predicted] == VISEME_OF_CLASS[labels]).sum())
            silence += int((labels == _CLASS[SILENCE]).sum())
            total += len(labels)
    encoder.train()
    return {"phoneme_accuracy": correct / total, "viseme_accuracy": viseme_correct / total,
            "silence_fraction": silence / total, "frames": total}


def train(encoder, head, clips: list[Clip], epochs: int, batch_size: int, lr: float, seed: int,
          progress: bool = True) -> float:
    """AdamW with a linear warm-up and cosine decay -> the mean loss of the last epoch."""
    import torch
    from tqdm import tqdm

    rng = np.random.default_rng([seed, 2])
    config = encoder.model.config
    parameters = [p for p in [*encoder.parameters(), *head.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    total = epochs * math.ceil(len(clips) / batch_size)
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    encoder.train()
    head.train()
    mean = float("nan")
    for epoch in range(1, epochs + 1):
        losses = []
        bar = tqdm(length_buckets(clips, batch_size, rng), desc=f"epoch {epoch}/{epochs}", unit="batch",
                   disable=not progress)
        for batch in bar:
            losses.append(train_step(encoder, head, optimizer, *make_batch([clips[i] for i in batch], rng, config)))
            schedule.step()
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        mean = float(np.mean(losses))
    return mean


def save_atomically(model, out: Path, info: dict) -> None:
    """model.save_pretrained(out) plus pretraining.json, through a temp folder renamed into place."""
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        (tmp / "pretraining.json").write_text(json.dumps(info, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (replaced if it exists)")
    parser.add_argument("--utterances", type=int, default=4000, help="training utterances (default 4000)")
    parser.add_argument("--heldout", type=int, default=100, help="held-out utterances (default 100)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training utterances (default 3)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for training (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="speech synthesis processes (default 1)")
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--conv_dim", type=int, default=64)
    args = parser.parse_args(argv)
    if min(args.utterances, args.heldout, args.epochs, args.batch_size, args.threads, args.workers) < 1:
        parser.error("--utterances, --heldout, --epochs, --batch_size, --threads and --workers must be at least 1")
    import torch

    torch.set_num_threads(args.threads)
    seconds = {}
    started = time.perf_counter()
    try:
        clips = synthesize(args.utterances, args.seed, heldout=False, workers=args.workers)
        heldout = synthesize(args.heldout, args.seed, heldout=True, workers=args.workers)
    except UserError as exc:
        return print_user_error(exc)
    seconds["synthesis"] = time.perf_counter() - started

    stage = time.perf_counter()
    encoder, head = build(args.hidden, args.layers, args.heads, args.conv_dim, args.seed)
    loss = train(encoder, head, clips, args.epochs, args.batch_size, args.lr, args.seed)
    seconds["training"] = time.perf_counter() - stage

    stage = time.perf_counter()
    scores = evaluate(encoder, head, heldout)
    seconds["evaluation"] = time.perf_counter() - stage

    stage = time.perf_counter()
    info = {"task": "frame-level phoneme classification at 30 fps through models.audio.SpeechEncoder",
            "args": {k: v for k, v in vars(args).items() if k != "out"}, "final_train_loss": round(loss, 4),
            "heldout": {k: round(v, 4) for k, v in scores.items()}, "phonemes": list(PHONEMES)}
    save_atomically(encoder.model, Path(args.out), info)
    seconds["saving"] = time.perf_counter() - stage

    speech = sum(len(c.audio) for c in clips) / SAMPLE_RATE
    print(f"{len(clips)} training utterances ({speech / 60:.0f} min of speech), last-epoch loss {loss:.3f}")
    print(f"held-out voices ({len(heldout)} utterances, {scores['frames']} frames, "
          f"{scores['silence_fraction']:.0%} silence): phoneme accuracy {scores['phoneme_accuracy']:.1%}, "
          f"viseme accuracy {scores['viseme_accuracy']:.1%}")
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
          + f", total {time.perf_counter() - started:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
