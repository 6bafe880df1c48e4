"""The SynthTalk corpus: speakers, sentences, and writing the standard dataset layout."""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ptalker.errors import UserError
from ptalker.fileio import atomic_path, save_npy, save_pickle, save_wav
from ptalker.mesh import load_templates, write_mesh

from .face import Face, FaceShape, build_face
from .motion import SpeakingStyle, animate
from .speech import Synthesizer, Voice
from .splits import CROSS_VOICE_SENTENCES, DEVELOPMENT_SENTENCES, EXTRA_SENTENCES, TRAIN_SUBJECTS

FPS = 30
MANIFEST = "synthtalk.json"

SENTENCES = (
    "The blue boat drifted slowly past the old wooden pier.",
    "My brother baked a warm apple pie for the whole family.",
    "Five quiet foxes jumped over the frozen river at dawn.",
    "Could you move the heavy box onto the bottom shelf?",
    "We watched the moon rise above the misty mountains.",
    "Thirty thousand people waited patiently outside the museum.",
    "She sells fresh peaches and plums at the Sunday market.",
    "Open the window, the room smells of burnt toast.",
    "Bob promised to paint the fence purple before May.",
    "A yellow balloon floated away over the busy square.",
    "The teacher asked us to explain the puzzle in our own words.",
    "Rain poured down while the orchestra played its final piece.",
    "Who would have thought that the map was upside down?",
    "Maybe we should buy more bread and milk on the way home.",
    "The children laughed as the puppy chased its own tail.",
    "Every morning he runs along the beach with his dog.",
    "Please remember to lock the back door before you leave.",
    "Our neighbour grows enormous pumpkins behind the garage.",
    "The pilot announced a short delay because of the storm.",
    "I never imagined that a small mistake could cost so much.",
    "Warm soup is perfect on a cold and windy evening.",
    "The museum opens at nine and closes at half past five.",
    "Mix the butter, sugar and flour in a large bowl.",
    "Why do owls hoot so loudly in the middle of the night?",
    "The bus was packed, so we walked the last mile.",
    "Photographs of the ocean covered every wall of her room.",
    "Thank you for the beautiful flowers and the kind message.",
    "The mechanic fixed the broken engine in about an hour.",
    "Please pass me the pepper and a piece of bread.",
    "Autumn leaves gathered in piles beneath the maple tree.",
    "He measured the room twice before buying the new carpet.",
    "Move quickly, the movie begins in five minutes.",
    "The scientist published a short paper about bumblebees.",
    "Boiling water can burn your hands, so be careful.",
    "My grandmother keeps her old letters in a metal box.",
    "The tiny robot rolled across the floor and beeped twice.",
    "We booked a room with a view of the harbour.",
    "Violins and trumpets filled the hall with joyful music.",
    "Nobody knew where the mysterious blue envelope came from.",
    "Pack your boots, we are hiking up the mountain tomorrow.",
)

# Further texts, spoken only as training sentences 73-104 (see EXTRA_SENTENCES in splits.py).
EXTRA_TEXTS = (
    "A gentle breeze carried the smell of pine through the valley.",
    "Jack forgot his umbrella and came home soaking wet.",
    "The library lends games, puzzles and even fishing rods.",
    "Whisper the answer quietly so nobody else can hear it.",
    "Each winter the lake freezes solid for about six weeks.",
    "Paul ordered a cheese sandwich with extra pickles.",
    "The garden gnome wore a bright red pointed hat.",
    "Shall we take the early train or the later one?",
    "Her voice echoed through the empty concrete tunnel.",
    "Zoe fixed the squeaky gate with a drop of oil.",
    "Thunder rumbled far away as the sky turned grey.",
    "Uncle Ivan collects stamps from over forty countries.",
    "Our kitten sleeps all day and plays all night.",
    "The judge listened carefully to both sides of the story.",
    "Fresh oranges were piled high in a wicker basket.",
    "Watch out for ice on the steps this morning.",
    "The choir rehearsed the chorus again and again.",
    "Mother knitted a woolly scarf for each of us.",
    "A flock of geese flew south in a perfect line.",
    "Bring a torch, the cellar is pitch dark.",
    "The old clock in the hall chimes every quarter hour.",
    "Few things beat a lazy picnic under a shady oak.",
    "He typed the report quickly and emailed it to his boss.",
    "Ruth wants to learn Japanese before her trip to Osaka.",
    "The shop on the corner sells shoes, socks and belts.",
    "Maybe the noise came from the pipes in the attic.",
    "Vera poured hot chocolate into two enormous mugs.",
    "Keep the receipt in case the kettle stops working.",
    "The submarine slowly sank beneath the calm surface.",
    "Oliver showed us how to juggle three oranges at once.",
    "Gusts of wind rattled the shutters all evening.",
    "We chose a quiet table by the window overlooking the bay.",
)

# Development texts, sentences 105-120 (DEVELOPMENT_SENTENCES in splits.py): held out from training,
# spoken by the training speakers in their own voices, to compare training recipes on more
# sequences than the four validation sentences give, without touching the test sentences.
DEVELOPMENT_TEXTS = (
    "The farmer loaded twelve sacks of potatoes onto the cart.",
    "Could anybody lend me a pencil and some paper?",
    "Bright fireworks lit up the harbour at midnight.",
    "My cousin Eva plays the cello in a jazz band.",
    "The waiter spilled lemonade all over the menu.",
    "Seven sailors rowed the lifeboat back to the ship.",
    "Why does the toaster always burn the first slice?",
    "A fox crept quietly along the edge of the meadow.",
    "Turn left at the bakery and follow the canal.",
    "Grandpa told funny stories about his school days.",
    "The hikers shared a flask of tea at the summit.",
    "Wet paint, please do not touch the railings.",
    "Her brother finally passed his driving test on Friday.",
    "Bees buzzed lazily around the lavender bushes.",
    "Our flight to Lisbon was cancelled without warning.",
    "The magician pulled a white rabbit out of his top hat.",
)

# espeak-ng voice + variant per speaker; further speakers reuse them with other pitch and rate.
VOICE_VARIANTS = ("en-us+m3", "en+f2", "en-gb-x-rp+m1", "en-us+f4", "en-gb-scotland+m7", "en-029+f1",
                  "en-us+m5", "en+f3")


@dataclass(frozen=True)
class Speaker:
    name: str
    voice: Voice
    style: SpeakingStyle
    shape: FaceShape


def make_speakers(count: int, seed: int) -> list[Speaker]:
    """Speakers synth01.., each with its own voice, speaking style and face; deterministic for a seed."""
    speakers = []
    for index in range(count):
        rng = np.random.default_rng([seed, 1, index])
        voice = Voice(VOICE_VARIANTS[index % len(VOICE_VARIANTS)], pitch=int(rng.integers(35, 66)),
                      rate=int(rng.integers(150, 186)), range=int(rng.integers(35, 81)))
        speakers.append(Speaker(f"synth{index + 1:02d}", voice, SpeakingStyle.random(rng), FaceShape.random(rng)))
    return speakers


def sequence_name(speaker: str, sentence: int) -> str:
    return f"{speaker}_sentence{sentence:02d}"


# Training-only sentences of the first six speakers (the training speakers), moved with the speaker's
# own style and face but spoken in another of those six speakers' voices: 41-72 are the texts of
# sentences 1-32 again, 73-104 are the further EXTRA_TEXTS. With one voice per speaker the speech
# alone would tell the style, and a model could learn to ignore the speaker condition and a
# reference clip's motion; the further texts add words and phoneme contexts.
TRAINING_ONLY = ((CROSS_VOICE_SENTENCES, SENTENCES), (EXTRA_SENTENCES, EXTRA_TEXTS))


def _crossing(speakers: int) -> int:
    """How many speakers of a roster lend each other their voices: the first six at most."""
    return min(speakers, len(TRAIN_SUBJECTS))


def sentences_of(speaker_index: int, sentences: int, speakers: int) -> list[int]:
    """The sentence numbers a speaker records: 1..`sentences`, then, when the speaker is one of at
    least two crossing speakers, the first `sentences` (at most) of each training-only range and of
    the development sentences."""
    own = list(range(1, sentences + 1))
    crossing = _crossing(speakers)
    if speaker_index >= crossing or crossing < 2:
        return own
    more = [numbers for numbers, _ in TRAINING_ONLY] + [DEVELOPMENT_SENTENCES]
    return own + [n for numbers in more for n in numbers[:sentences]]


def _training_only_index(sentence: int) -> int | None:
    """k (from 1) for the k-th sentence of a training-only range, None for the others."""
    for numbers, _ in TRAINING_ONLY:
        if sentence in numbers:
            return sentence - numbers.start + 1
    return None


def text_of(sentence: int) -> str:
    """The text a sentence number speaks."""
    for numbers, texts in (*TRAINING_ONLY, (DEVELOPMENT_SENTENCES, DEVELOPMENT_TEXTS)):
        if sentence in numbers:
            return texts[sentence - numbers.start]
    return SENTENCES[sentence - 1]


def voice_of(speaker_index: int, sentence: int, speakers: int) -> int:
    """Whose voice speaks a sentence: the speaker's own; for the training-only sentences the other
    crossing speakers' in turn."""
    k = _training_only_index(sentence)
    if k is None:
        return speaker_index
    crossing = _crossing(speakers)
    return (speaker_index + 1 + (k - 1) % (crossing - 1)) % crossing


@lru_cache(maxsize=None)
def _face(shape: FaceShape) -> Face:
    return build_face(shape)


# The breath noise state the corpus was made in (see Synthesizer._synthesize): libpulse's 12 draws,
# as make_dataset.py was the first process after a fresh boot in train_demo_model.sh. It keeps the
# corpus byte for byte. (pretrain_speech.py ran after it, from rand()'s initial state: default 0.)
NOISE_START = 12


@lru_cache(maxsize=1)
def _synthesizer() -> Synthesizer:
    return Synthesizer(noise_start=NOISE_START)


def synthesize(speaker: Speaker, speaker_index: int, sentence: int, seed: int, voice: Voice):
    """One sequence of `speaker`, spoken in `voice` -> (int16 audio, sample rate, (frames, V*3)
    float32 vertices)."""
    utterance = _synthesizer().speak(text_of(sentence), voice)
    rng = np.random.default_rng([seed, 2, speaker_index, sentence])
    controls = animate(utterance, speaker.style, rng, FPS)
    vertices = _face(speaker.shape).pose(controls)
    return utterance.audio, utterance.sample_rate, vertices.reshape(len(vertices), -1)


def _write_sequence(out: str, speaker_index: int, sentence: int, count: int, seed: int) -> tuple[str, float]:
    roster = make_speakers(count, seed)
    speaker = roster[speaker_index]
    name = sequence_name(speaker.name, sentence)
    audio, rate, vertices = synthesize(speaker, speaker_index, sentence, seed,
                                       roster[voice_of(speaker_index, sentence, count)].voice)
    save_npy(Path(out) / "vertices_npy" / f"{name}.npy", vertices)
    save_wav(Path(out) / "wav" / f"{name}.wav", audio, rate)
    return name, len(audio) / rate


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _texts() -> dict[int, str]:
    """Sentence number -> text, for every text once: 1-40, the further texts 73-104 and the
    development texts 105-120."""
    return {n: text_of(n) for n in (*range(1, len(SENTENCES) + 1), *EXTRA_SENTENCES, *DEVELOPMENT_SENTENCES)}


def _check_manifest(out: Path, seed: int) -> dict:
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if manifest.get("seed") != seed:
        raise UserError(f"{out} holds a SynthTalk corpus made with --seed {manifest.get('seed')}, not {seed}: "
                        "use that seed, another --out, or delete the folder's generated files")
    texts = _texts()
    stale = [key for key, text in manifest.get("sentences", {}).items() if texts.get(int(key)) != text]
    if stale:
        raise UserError(f"{out} holds a SynthTalk corpus with other sentences (sentence {stale[0]} differs): "
                        "delete its wav/, vertices_npy/ and synthtalk.json, or use another --out")
    return manifest


@dataclass
class Summary:
    written: int
    skipped: int
    seconds: float
    audio_seconds: float


def generate(out: str | os.PathLike, speakers: int = 8, sentences: int = len(SENTENCES), seed: int = 0,
             workers: int = 1, progress: bool = True) -> Summary:
    """Write (or complete) a corpus in the standard layout; finished sequences are kept as they are."""
    from tqdm import tqdm

    if not 1 <= sentences <= len(SENTENCES):
        raise UserError(f"--sentences must be 1..{len(SENTENCES)}, got {sentences}")
    if speakers < 1:
        raise UserError(f"--speakers must be at least 1, got {speakers}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    started = time.perf_counter()
    manifest = _check_manifest(out, seed)
    roster = make_speakers(speakers, seed)
    _synthesizer()   # fail early, before any file is written, when espeak-ng is missing

    base = build_face()
    write_mesh(out / "templates" / "face.ply", base.vertices, base.faces)
    _write_text(out / "regions" / "lve.txt", ", ".join(map(str, base.regions["lips"])) + "\n")
    _write_text(out / "regions" / "fdd.txt", ", ".join(map(str, base.regions["upper_face"])) + "\n")
    templates_path = out / "templates.pkl"
    templates = load_templates(templates_path) if templates_path.is_file() else {}
    templates.update({s.name: _face(s.shape).vertices for s in roster})
    save_pickle(templates_path, templates)
    manifest_speakers = manifest.get("speakers", {})
    manifest_speakers.update({s.name: {"voice": asdict(s.voice), "style": s.style.as_dict(),
                                       "shape": {k: round(v, 4) for k, v in asdict(s.shape).items()},
                                       "cross_voice": {f"{n:02d}": roster[voice_of(i, n, speakers)].name
                                                       for n in sentences_of(i, sentences, speakers)
                                                       if _training_only_index(n) is not None}}
                              for i, s in enumerate(roster)})
    manifest.update(seed=seed, fps=FPS, speakers=manifest_speakers,
                    sentences={f"{n:02d}": text for n, text in _texts().items()})
    _write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")

    todo, skipped = [], 0
    for index, speaker in enumerate(roster):
        for sentence in sentences_of(index, sentences, speakers):
            name = sequence_name(speaker.name, sentence)
            if (out / "wav" / f"{name}.wav").is_file() and (out / "vertices_npy" / f"{name}.npy").is_file():
                skipped += 1
            else:
                todo.append((str(out), index, sentence, speakers, seed))
    audio_seconds = 0.0
    with tqdm(total=len(todo), desc="SynthTalk", unit="seq", disable=not progress) as bar:
        if workers == 1 or len(todo) <= 1:
            for task in todo:
                audio_seconds += _write_sequence(*task)[1]
                bar.update()
        else:
            # spawn: every worker loads its own libespeak-ng, which keeps global state
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for _, seconds in pool.map(_write_sequence, *zip(*todo), chunksize=4):
                    audio_seconds += seconds
                    bar.update()
    return Summary(len(todo), skipped, time.perf_counter() - started, audio_seconds)
