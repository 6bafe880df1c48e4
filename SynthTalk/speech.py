"""Speech synthesis with libespeak-ng through ctypes, with per-phoneme timings.

The library's synchronous mode hands back the waveform together with PHONEME and WORD events whose
`sample` field is the position in that same waveform, so the timings are exact for the audio we save.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
from dataclasses import dataclass

import numpy as np

from ptalker.errors import UserError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Voice:
    name: str           # an espeak-ng voice with an optional variant, e.g. "en-us+m3"
    pitch: int = 50     # 0..100
    rate: int = 175     # words per minute
    range: int = 50     # pitch range, 0..100 (0 = monotone)


@dataclass(frozen=True)
class Phone:
    symbol: str         # espeak-ng phoneme mnemonic, e.g. "p", "aI", "_:" (pause)
    start: float        # seconds
    end: float
    word: int           # index into Utterance.words, -1 for pauses


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray   # int16 mono
    sample_rate: int
    phones: tuple[Phone, ...]
    words: tuple[Word, ...]

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def is_pause(symbol: str) -> bool:
    return symbol.startswith("_") or symbol in (";", "")


class Synthesizer:
    """One per process: libespeak-ng keeps global state. Linux/Unix only (utterances run in forks).

    `noise_start`: where every utterance's breath noise starts (see _synthesize): the C library's
    rand() seeded with 1, then this many numbers drawn."""

    def __init__(self, noise_start: int = 0):
        path = ctypes.util.find_library("espeak-ng")
        if path is None:
            raise UserError("libespeak-ng not found: install it (Debian/Ubuntu: apt-get install espeak-ng)")
        lib = ctypes.CDLL(path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                 _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            raise UserError("libespeak-ng failed to initialise (is espeak-ng-data installed?)")
        lib.srand.argtypes = [ctypes.c_uint]
        lib.srand.restype = None
        self._lib = lib
        self.noise_start = noise_start
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, int, str]] = []
        self._callback = _Callback(self._collect)   # kept referenced: the library calls it later
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, count, events):
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        k = 0
        while events[k].type != _EVENT_LIST_TERMINATED:
            e = events[k]
            if e.type == _EVENT_PHONEME:
                self._events.append((e.type, e.sample, e.text_position, e.length,
                                     bytes(e.id.string).split(b"\0")[0].decode("ascii", "replace")))
            elif e.type == _EVENT_WORD:
                self._events.append((e.type, e.sample, e.text_position, e.length, ""))
            k += 1
        return 0

    def speak(self, text: str, voice: Voice) -> Utterance:
        """Synthesize `text`. Each utterance runs in a forked child of the freshly initialised library:
        libespeak-ng keeps state from one utterance to the next (its pitch flutter phase), which would
        make the audio and timings depend on what was spoken before."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                result = self._synthesize(text, voice)
            except BaseException as exc:  # handed to the parent, which raises it
                result = exc
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(pickle.dumps(result))
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            payload = pipe.read()
        os.waitpid(pid, 0)
        if not payload:
            raise UserError(f"espeak-ng failed while speaking {text!r}")
        result = pickle.loads(payload)
        if isinstance(result, BaseException):
            raise result
        return _timeline(text, *result)

    def _synthesize(self, text: str, voice: Voice):
        lib = self._lib
        # The breathy variants (+f2, +f3) draw their breath noise from the C library's rand(), whose
        # state is global to the process and inherited by this fork. libespeak-ng connects to
        # PulseAudio when it initialises, even in synchronous mode, and libpulse draws 12 numbers from
        # rand() to name a new runtime folder (/tmp/pulse-XXXXXXXXXXXX) when ~/.config/pulse has none
        # yet (the first process after a fresh boot or home), none later: the audio depended on which
        # process came first. So every utterance starts from the same state.
        lib.srand(1)
        for _ in range(self.noise_start):
            lib.rand()
        if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise UserError(f"espeak-ng has no voice {voice.name!r} (see `espeak-ng --voices`)")
        for parameter, value in ((_PARAM_RATE, voice.rate), (_PARAM_PITCH, voice.pitch), (_PARAM_RANGE, voice.range)):
            lib.espeak_SetParameter(parameter, int(value), 0)
        data = text.encode("utf-8")
        lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if not self._chunks:
            raise UserError(f"espeak-ng produced no audio for {text!r}")
        return np.concatenate(self._chunks).astype(np.int16), self.sample_rate, self._events


def _timeline(text, audio, sample_rate, events) -> Utterance:
    """Events -> phones (each lasting until the next phone starts) and words (first to last phone)."""
    data = text.encode("utf-8")
    words_raw: list[str] = []
    phones_raw: list[tuple[str, int, int]] = []
    for kind, sample, position, length, symbol in events:
        if kind == _EVENT_WORD:
            # text_position counts from 1, in bytes of the input; the end of the text comes as an empty word
            word = data[position - 1:position - 1 + length].decode("utf-8", "replace")
            if word.strip():
                words_raw.append(word)
        else:
            phones_raw.append((symbol, sample, -1 if is_pause(symbol) or not words_raw else len(words_raw) - 1))
    bounds = [s for _, s, _ in phones_raw[1:]] + [len(audio)]
    phones = tuple(Phone(sym, start / sample_rate, max(start, end) / sample_rate, word)
                   for (sym, start, word), end in zip(phones_raw, bounds))
    words = []
    for index, word in enumerate(words_raw):
        own = [p for p in phones if p.word == index] or [Phone("", 0.0, 0.0, index)]
        words.append(Word(word, own[0].start, own[-1].end))
    return Utterance(audio, sample_rate, phones, tuple(words))
