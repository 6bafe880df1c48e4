"""Animate speech over a WebSocket: clients stream 16 kHz audio in, animated frames come back as the
look-ahead makes them final (see `ptalker.streaming`). `serve.py` is the command line.

Protocol (one WebSocket connection = one client with its own stream; all clients share one model):

1. On connect the server sends a text message, the hello, a JSON object:
   {"sample_rate": 16000, "fps": 30, "vertices": V, "faces": [[a, b, c], ...], "condition": "synth01",
    "subject": "synth01", "lookahead_ms": 200.0, "context_ms": 1000.0, "conditions": [...], "subjects": [...]}
   `faces` are the mesh's triangles (vertex indices), so the frames can be drawn as they are.
2. The client may configure its stream with a text message, a JSON object with any of
   {"condition": a training subject, or null for an unseen speaker (style from the audio),
    "subject": whose neutral face to animate, "lookahead_ms": 0-5000, "context_ms": 0-10000};
   keys left out take their defaults (the first training subject; its face, or the first stored one;
   200 ms; 1000 ms). The server answers with a new hello. Configuring is allowed while no audio of an
   utterance is pending: at the start, or right after an end.
3. Audio: binary messages, each a chunk of 16 kHz mono float32 little-endian PCM in [-1, 1], any
   length up to 30 s. A chunk that makes frames final is answered by one binary frames message;
   others get no answer.
4. {"end": true} (a text message) ends the utterance: the server answers with one frames message
   holding the remaining frames (possibly none) and "end": true in its header; the stream then
   starts over (frame indices from 0) and the connection stays open for the next utterance.

A frames message: a 4-byte little-endian uint32 N, then N bytes of UTF-8 JSON, the header
{"first_frame": index of the first frame in the utterance, "frames": n, "vertices": V, "end": bool},
padded with spaces so that the data starts at a multiple of 4 bytes (a browser's Float32Array can
view it in place), then n * V * 3 float32 little-endian: absolute vertex positions, frame by frame.

A malformed message closes only that client's connection, with a close code and a reason:
1003 a text message that is not a JSON object; 1007 audio that is not float32 (a byte count not a
multiple of 4), empty, NaN or too long, or text that is not JSON; 1008 unknown keys, bad values,
or configuring mid-utterance; 1009 (by the WebSocket layer) a message over 1.92 MB.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import struct

import numpy as np
import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.frames import CloseCode

from models.audio import SAMPLE_RATE

from .errors import UserError
from .inference import Animator
from .streaming import CONTEXT_MS, LOOKAHEAD_MS, MAX_CHUNK_SECONDS, SpeechStream, StreamError

DEFAULT_PORT = 8765
MAX_LOOKAHEAD_MS = 5000.0    # bounds what one client makes the server keep: audio and work per frame
MAX_CONTEXT_MS = 10000.0
# the longest chunk a stream takes, plus room for a text message of settings
MAX_MESSAGE_BYTES = 4 * int(MAX_CHUNK_SECONDS * SAMPLE_RATE) + 4096
SETTINGS = ("condition", "subject", "lookahead_ms", "context_ms")


class ProtocolError(Exception):
    """A client's message breaks the protocol: its connection is closed with `code` and `reason`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class ServerClosed(ConnectionError):
    """The server closed the connection before the frames were complete (`code`, `reason`: its why)."""

    def __init__(self, code: int | None, reason: str):
        super().__init__(f"the server closed the connection ({code}): {reason or 'no reason given'}")
        self.code, self.reason = code, reason


# ---------------------------------------------------------------------------------------------- messages

def encode_frames(frames: np.ndarray, first_frame: int, end: bool = False) -> bytes:
    """(n, V*3) vertices -> one frames message (see the module's docstring)."""
    frames = np.asarray(frames, dtype="<f4")
    header = json.dumps({"first_frame": first_frame, "frames": len(frames), "vertices": frames.shape[1] // 3,
                         "end": end}).encode()
    header += b" " * (-(4 + len(header)) % 4)   # the float data starts 4-byte aligned
    return struct.pack("<I", len(header)) + header + frames.tobytes()


def decode_frames(message: bytes) -> tuple[dict, np.ndarray]:
    """One frames message -> (its header, the vertices (n, V*3) float32)."""
    if not isinstance(message, bytes) or len(message) < 4:
        raise ValueError(f"expected a binary frames message, got {type(message).__name__} {message[:80]!r}")
    (size,) = struct.unpack_from("<I", message)
    header = json.loads(message[4: 4 + size])
    data = np.frombuffer(message, dtype="<f4", offset=4 + size)
    if data.size != header["frames"] * header["vertices"] * 3:
        raise ValueError(f"frames message holds {data.size} floats, its header announces "
                         f"{header['frames']} frames of {header['vertices']} vertices")
    return header, data.reshape(header["frames"], header["vertices"] * 3).astype(np.float32)


def audio_chunk(message: bytes) -> np.ndarray:
    """A binary message -> (n,) float32 samples, or ProtocolError when it cannot be float32 PCM."""
    if len(message) % 4:
        raise ProtocolError(CloseCode.INVALID_DATA, f"audio must be float32 PCM (4 bytes a sample), got a "
                                                    f"message of {len(message)} bytes")
    return np.frombuffer(message, dtype="<f4").astype(np.float32)


def text_request(message: str) -> dict:
    """A text message -> its JSON object, or ProtocolError."""
    try:
        request = json.loads(message)
    except ValueError as exc:
        raise ProtocolError(CloseCode.INVALID_DATA, f"text messages must be JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ProtocolError(CloseCode.UNSUPPORTED_DATA, f"text messages must be JSON objects, got "
                                                        f"{type(request).__name__}")
    return request


def close_reason(text: str) -> str:
    """A reason that fits a close frame (123 bytes of UTF-8)."""
    data = " ".join(text.split()).encode()
    return data[:123].decode(errors="ignore") if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


# ---------------------------------------------------------------------------------------------- server

class Client:
    """One connection's settings and its own SpeechStream."""

    def __init__(self, animator: Animator, request: dict):
        self.animator = animator
        self.settings = self.checked_settings(request)
        condition, subject = self.settings["condition"], self.settings["subject"]
        try:
            self.stream = SpeechStream(animator, animator.template(subject), condition,
                                       lookahead_ms=self.settings["lookahead_ms"],
                                       context_ms=self.settings["context_ms"])
        except (UserError, StreamError) as exc:   # an unknown condition or subject
            raise ProtocolError(CloseCode.POLICY_VIOLATION, str(exc)) from None

    def checked_settings(self, request: dict) -> dict:
        """A configure request -> every setting, the ones left out at their defaults."""
        unknown = sorted(set(request) - set(SETTINGS))
        if unknown:
            raise ProtocolError(CloseCode.POLICY_VIOLATION, f"unknown keys {', '.join(unknown)}: a configure "
                                                            f"message takes {', '.join(SETTINGS)}")
        animator = self.animator
        condition = request.get("condition", animator.train_subjects[0])
        if condition is not None and not isinstance(condition, str):
            raise ProtocolError(CloseCode.POLICY_VIOLATION, "condition must be a training subject's name or null")
        default_subject = condition if condition in animator.templates else next(iter(animator.templates))
        subject = request.get("subject", default_subject)
        if not isinstance(subject, str):
            raise ProtocolError(CloseCode.POLICY_VIOLATION, "subject must be the name of a stored face")
        return {"condition": condition, "subject": subject,
                "lookahead_ms": milliseconds(request, "lookahead_ms", LOOKAHEAD_MS, MAX_LOOKAHEAD_MS),
                "context_ms": milliseconds(request, "context_ms", CONTEXT_MS, MAX_CONTEXT_MS)}

    def hello(self) -> str:
        """The text message that tells the client what it will receive."""
        animator = self.animator
        return json.dumps({"sample_rate": SAMPLE_RATE, "fps": animator.fps, "vertices": animator.num_vertices,
                           "faces": np.asarray(animator.faces).tolist(), **self.settings,
                           "conditions": list(animator.train_subjects), "subjects": list(animator.templates)})

    @property
    def at_rest(self) -> bool:
        """No audio of an utterance is pending."""
        return self.stream.received == 0

    def push(self, pcm: np.ndarray) -> bytes | None:
        """Audio -> the frames message of the frames it made final, or None when there are none."""
        first = self.stream.done
        try:
            frames = self.stream.push(pcm)
        except StreamError as exc:
            raise ProtocolError(CloseCode.INVALID_DATA, str(exc)) from None
        return encode_frames(frames, first) if len(frames) else None

    def finish(self) -> bytes:
        """End the utterance -> the frames message of the rest, marked as the end."""
        first = self.stream.done
        return encode_frames(self.stream.finish(), first, end=True)


def milliseconds(request: dict, key: str, default: float, limit: float) -> float:
    """A duration setting, checked to lie in [0, limit]."""
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                               and 0 <= value <= limit):
        raise ProtocolError(CloseCode.POLICY_VIOLATION, f"{key} must be a number of ms in [0, {limit:g}], "
                                                        f"got {value!r}")
    return float(value)


class AnimationServer:
    """Serves one loaded model to any number of clients, each with its own stream."""

    def __init__(self, animator: Animator):
        self.animator = animator
        # Model work runs in a worker thread so that the event loop keeps every other connection
        # moving, one client's work at a time: on a few CPU cores concurrent forward passes only
        # contend, and serialising them keeps each stream's arithmetic independent of the others.
        self.lock = asyncio.Lock()

    async def compute(self, work, *args):
        """Run model work off the event loop, one piece at a time."""
        async with self.lock:
            return await asyncio.to_thread(work, *args)

    async def handle(self, connection) -> None:
        """One connection from hello to close."""
        try:
            client = await self.compute(Client, self.animator, {})
            await connection.send(client.hello())
            async for message in connection:
                client = await self.answer(connection, client, message)
        except ProtocolError as exc:
            await connection.close(exc.code, close_reason(exc.reason))
        except websockets.ConnectionClosed:
            pass   # the client left; its stream goes with it

    async def answer(self, connection, client: Client, message) -> Client:
        """Act on one message; returns the client's (possibly reconfigured) state."""
        if isinstance(message, bytes):
            reply = await self.compute(client.push, audio_chunk(message))
            if reply is not None:
                await connection.send(reply)
            return client
        request = text_request(message)
        if "end" in request:
            if request != {"end": True}:
                raise ProtocolError(CloseCode.POLICY_VIOLATION, 'an end message is exactly {"end": true}')
            await connection.send(await self.compute(client.finish))
            return client
        if not client.at_rest:
            raise ProtocolError(CloseCode.POLICY_VIOLATION, 'configure before sending audio or after {"end": true}')
        client = await self.compute(Client, self.animator, request)
        await connection.send(client.hello())
        return client


def open_server(animator: Animator, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
    """The server, not yet started: `async with open_server(...) as server:` serves until the block ends.
    Port 0 picks a free port; `server_url(server)` says which."""
    # float frames hardly compress; deflating them would only cost CPU
    return serve(AnimationServer(animator).handle, host, port, max_size=MAX_MESSAGE_BYTES, compression=None)


def server_url(server) -> str:
    """ws://host:port of a started server."""
    host, port = server.sockets[0].getsockname()[:2]
    return f"ws://{host}:{port}" if ":" not in host else f"ws://[{host}]:{port}"


async def serve_forever(animator: Animator, host: str, port: int) -> None:
    """Serve until interrupted, printing the address once listening."""
    try:
        server = await open_server(animator, host, port)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # explicit handlers: a process started in the background of a script inherits SIGINT ignored
        with contextlib.suppress(NotImplementedError):   # platforms without them stop on KeyboardInterrupt
            loop.add_signal_handler(signum, stop.set)
    async with server:
        print(f"listening on {server_url(server)} ({animator.path}, {animator.fps} fps, "
              f"{animator.num_vertices} vertices); Ctrl-C stops", flush=True)
        await stop.wait()


def run_server(args, bundled_model) -> int:
    """serve.py's work: its flags -> the checkpoint, loaded once, served until Ctrl-C."""
    import torch

    from .demo_cli import find_checkpoint
    from .device import pick_device
    from .inference import load_animator

    checkpoint = find_checkpoint(args.checkpoint, None, None, bundled_model)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    animator = load_animator(checkpoint, pick_device(args.device))
    try:
        asyncio.run(serve_forever(animator, args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------------------------------------- client

async def animate_over_websocket(url: str, pcm: np.ndarray, chunk_ms: float = 20.0, **settings) -> np.ndarray:
    """Send 16 kHz mono speech to a server in chunks of `chunk_ms`, as fast as it takes them, then end
    the utterance -> all its frames (T, V*3) float32, absolute vertex positions.

    settings: the configure keys (condition, subject, lookahead_ms, context_ms); ServerClosed when
    the server refuses something."""
    pcm = np.ascontiguousarray(pcm, dtype="<f4").reshape(-1)
    step = max(1, round(chunk_ms * SAMPLE_RATE / 1000))
    async with connect(url, max_size=None, compression=None) as connection:
        try:
            json.loads(await connection.recv())             # the hello
            if settings:
                await connection.send(json.dumps(settings))
                json.loads(await connection.recv())
            # send while receiving: frames come back during the upload, and a client that only
            # sends could stall both sides once their buffers are full
            sender = asyncio.create_task(_send_audio(connection, pcm, step))
            try:
                parts = await _receive_frames(connection)
            finally:   # the sender ends with the connection; its error, if any, is the one raised here
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        except websockets.ConnectionClosed as exc:
            close = exc.rcvd
            raise ServerClosed(close.code if close else None, close.reason if close else "") from None
    return np.concatenate(parts)


async def _send_audio(connection, pcm: np.ndarray, step: int) -> None:
    for start in range(0, len(pcm), step):
        await connection.send(pcm[start: start + step].tobytes())
    await connection.send(json.dumps({"end": True}))


async def _receive_frames(connection) -> list[np.ndarray]:
    """Frames messages up to the one marked as the end."""
    parts = []
    while True:
        header, frames = decode_frames(await connection.recv())
        parts.append(frames)
        if header["end"]:
            return parts


def stream_file(url: str, path, chunk_ms: float = 20.0, **settings) -> np.ndarray:
    """Animate an audio file (any format and rate ptalker.audio reads) on a server -> (T, V*3) float32."""
    from .audio import load_audio

    return asyncio.run(animate_over_websocket(url, load_audio(path), chunk_ms, **settings))
