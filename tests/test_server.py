"""serve.py and ptalker/server.py: clients on 127.0.0.1 stream audio in and get the frames a local
SpeechStream gives for their audio; each has its own stream; a malformed message closes only its
sender's connection, with a reason."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import ROOT, make_model
from ptalker.server import (ServerClosed, animate_over_websocket, decode_frames, open_server, server_url,
                            stream_file)
from ptalker.streaming import SpeechStream
from synthetic import speech_like, tiny_mesh

RATE = 16000
TIMEOUT = 300   # seconds any one scenario may take before it fails instead of hanging (a busy CPU
                # makes a tiny model's seconds into minutes: only a hang should reach this)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; extra threads only contend on a shared machine."""
    from models.ptalker import at_most_threads

    with at_most_threads(1):
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_wav2vec2):
    """A tiny random model saved as a checkpoint: training subjects S1-S3, faces of S1 and S2."""
    from ptalker.checkpoint import save_checkpoint

    model, template = make_model(tiny_wav2vec2)
    face = template.numpy().reshape(-1, 3)
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    save_checkpoint(path, model, ["S1", "S2", "S3"], tiny_mesh()[1], {"S1": face, "S2": face * 1.1})
    return path


@pytest.fixture(scope="module")
def animator(checkpoint):
    from ptalker.inference import load_animator

    return load_animator(checkpoint)


def speech(seconds: float, seed: int) -> np.ndarray:
    return speech_like(seconds, RATE, seed)[0]


def chunks(pcm: np.ndarray, ms: float = 20.0) -> list[np.ndarray]:
    step = round(ms * RATE / 1000)
    return [pcm[i: i + step] for i in range(0, len(pcm), step)]


def local_frames(animator, pcm: np.ndarray, condition="S1", subject="S1", **stream) -> np.ndarray:
    """What a SpeechStream in this process gives for the audio, pushed in the clients' chunks."""
    s = SpeechStream(animator, animator.template(subject), condition, **stream)
    return np.concatenate([s.push(c) for c in chunks(pcm)] + [s.finish()])


def run(animator, scenario):
    """Run `scenario(url)` against a server on a free port of 127.0.0.1, in one event loop."""
    async def main():
        async with open_server(animator, "127.0.0.1", 0) as server:
            return await asyncio.wait_for(scenario(server_url(server)), TIMEOUT)

    return asyncio.run(main())


async def hello(connection) -> dict:
    message = await connection.recv()
    assert isinstance(message, str)
    return json.loads(message)


async def frames_until_end(connection) -> tuple[list[dict], np.ndarray]:
    headers, parts = [], []
    while not (headers and headers[-1]["end"]):
        header, frames = decode_frames(await connection.recv())
        headers.append(header)
        parts.append(frames)
    return headers, np.concatenate(parts)


async def closed_with(connection) -> tuple[int, str]:
    """Wait for the server to close the connection -> (code, reason)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await connection.recv()
    return closed.value.rcvd.code, closed.value.rcvd.reason


# ---------------------------------------------------------------------------------------------- streaming

def test_concurrent_clients_each_get_their_own_streams_frames(animator):
    audio = [speech(1.5, seed=1), speech(1.2, seed=2)]
    settings = [{}, {"condition": "S2", "subject": "S2", "lookahead_ms": 100}]

    async def scenario(url):
        return await asyncio.gather(*(animate_over_websocket(url, a, **s) for a, s in zip(audio, settings)))

    got = run(animator, scenario)
    expected = [local_frames(animator, audio[0]),
                local_frames(animator, audio[1], "S2", "S2", lookahead_ms=100)]
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.shape[1] == animator.num_vertices * 3
        np.testing.assert_allclose(g, e, atol=1e-5)
    assert len(got[0]) == 45 and len(got[1]) == 36            # 30 fps
    assert not np.allclose(got[0][:36], got[1])


def test_hello_frames_on_the_way_and_a_restart_after_the_end(animator):
    pcm = speech(1.0, seed=3)

    async def scenario(url):
        async with connect(url, max_size=None) as ws:
            first = await hello(ws)
            await ws.send(json.dumps({"lookahead_ms": 0}))
            configured = await hello(ws)
            await ws.send(pcm[:8000].tobytes())                        # 0.5 s: frames become final
            raw = await ws.recv()
            early = decode_frames(raw)[0]
            await ws.send(pcm[8000:].tobytes())
            await ws.send(json.dumps({"end": True}))
            headers, rest = await frames_until_end(ws)
            await ws.send(pcm.tobytes())                                # the same speech again
            await ws.send(json.dumps({"end": True}))
            again_headers, again = await frames_until_end(ws)
            return first, configured, raw, early, headers, rest, again_headers[0], again

    first, configured, raw, early, headers, rest, again_header, again = run(animator, scenario)
    assert first["fps"] == 30 and first["vertices"] == animator.num_vertices and first["sample_rate"] == RATE
    assert first["condition"] == "S1" and first["subject"] == "S1" and first["lookahead_ms"] == 200
    assert np.array_equal(first["faces"], animator.faces) and first["conditions"] == ["S1", "S2", "S3"]
    assert configured["lookahead_ms"] == 0 and configured["condition"] == "S1"
    header_size = int.from_bytes(raw[:4], "little")
    assert (4 + header_size) % 4 == 0                                  # data aligned for a Float32Array
    assert early["first_frame"] == 0 and 0 < early["frames"] < 30 and not early["end"]
    # each message continues where the last ended; the utterance has its 30 frames
    assert [h["first_frame"] for h in headers] == list(np.cumsum([early["frames"]] + [h["frames"] for h in
                                                                                      headers[:-1]]))
    assert early["frames"] + sum(h["frames"] for h in headers) == 30 and headers[-1]["end"]
    assert again_header["first_frame"] == 0 and len(again) == 30
    whole = local_frames(animator, pcm, lookahead_ms=0)
    np.testing.assert_allclose(again, whole, atol=1e-5)                # a fresh stream, not a continuation
    np.testing.assert_allclose(rest, whole[early["frames"]:], atol=1e-5)


# ---------------------------------------------------------------------------------------------- bad input

BAD = {
    "odd byte count": (b"\x00\x00\x80?\x00", 1007, "4 bytes a sample"),
    "NaN audio": (np.array([0.1, np.nan], "<f4").tobytes(), 1007, "NaN"),
    "empty audio": (b"", 1007, "empty audio chunk"),
    "not JSON": ("hello?", 1007, "must be JSON"),
    "not an object": ("[1, 2]", 1003, "JSON objects"),
    "unknown key": ('{"colour": "red"}', 1008, "unknown keys colour"),
    "unknown condition": ('{"condition": "nobody"}', 1008, "unknown condition 'nobody'"),
    "unknown face": ('{"subject": "S3"}', 1008, "unknown subject 'S3'"),
    "negative look-ahead": ('{"lookahead_ms": -5}', 1008, "lookahead_ms must be"),
    "bad end": ('{"end": "soon"}', 1008, '{"end": true}'),
}


def test_a_malformed_message_closes_only_its_senders_connection(animator):
    pcm = speech(1.0, seed=4)

    async def scenario(url):
        async with connect(url) as good:
            await hello(good)
            for c in chunks(pcm[:8000]):
                await good.send(c.tobytes())
            async with connect(url) as bad:                            # while the good stream is open
                await hello(bad)
                await bad.send(pcm[:800].tobytes())
                await bad.send(b"\x00\x00\x00")
                closed = await closed_with(bad)
            for c in chunks(pcm[8000:]):
                await good.send(c.tobytes())
            await good.send(json.dumps({"end": True}))
            parts = []
            while not parts or not parts[-1][0]["end"]:
                parts.append(decode_frames(await good.recv()))
            return closed, np.concatenate([f for _, f in parts])

    closed, frames = run(animator, scenario)
    assert closed[0] == 1007 and "4 bytes a sample" in closed[1]
    np.testing.assert_allclose(frames, local_frames(animator, pcm), atol=1e-5)


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_messages_are_closed_with_a_code_and_a_reason(animator, case):
    message, code, reason = BAD[case]

    async def scenario(url):
        async with connect(url) as ws:
            await hello(ws)
            await ws.send(message)
            return await closed_with(ws)

    got_code, got_reason = run(animator, scenario)
    assert got_code == code and reason in got_reason, (got_code, got_reason)


def test_configuring_mid_utterance_is_refused_and_the_client_is_told_why(animator):
    async def scenario(url):
        with pytest.raises(ServerClosed) as refused:
            await animate_over_websocket(url, speech(0.5, seed=5), condition="nobody")
        async with connect(url) as ws:
            await hello(ws)
            await ws.send(speech(0.2, seed=5).tobytes())
            await ws.send(json.dumps({"condition": "S2"}))
            return refused.value, await closed_with(ws)

    refused, (code, reason) = run(animator, scenario)
    assert refused.code == 1008 and "unknown condition 'nobody'" in str(refused)
    assert code == 1008 and "configure before sending audio" in reason


# ---------------------------------------------------------------------------------------------- serve.py

def serve_py(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "serve.py"), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_help_and_one_line_errors():
    done = subprocess.run([sys.executable, str(ROOT / "serve.py"), "--help"], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0 and "--port" in done.stdout and "WebSocket" in done.stdout
    for args, message in ((["--port", "70000"], "invalid port '70000'"),
                          (["--checkpoint", "no/such.pth"], "checkpoint not found: no/such.pth")):
        out, err = serve_py(*args).communicate(timeout=TIMEOUT)
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_serve_py_streams_a_file_to_a_client(checkpoint, animator, tmp_path):
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, speech(0.8, seed=6), RATE)
    server = serve_py("--checkpoint", str(checkpoint), "--port", "0", "--threads", "1")
    watchdog = threading.Timer(TIMEOUT, server.kill)   # a server that never starts fails the test, no hang
    watchdog.start()
    try:
        line = server.stdout.readline()
        watchdog.cancel()                                  # it started: from here each wait has its own bound
        assert line.startswith("listening on ws://127.0.0.1:"), line + server.stderr.read()
        url = line.split()[2]
        frames = stream_file(url, wav, condition="S2")          # the face follows: S2's
        server.send_signal(signal.SIGINT)                   # Ctrl-C stops it cleanly
        assert server.wait(TIMEOUT) == 0
    finally:
        watchdog.cancel()
        server.kill()
    from ptalker.audio import load_audio

    np.testing.assert_allclose(frames, local_frames(animator, load_audio(wav), "S2", "S2"), atol=1e-5)
