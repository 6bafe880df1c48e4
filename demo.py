"""Animate speech with a trained PTalker: any audio file (or a folder of them) -> predicted vertices
`<result_path>/<stem>.npy` (T, V*3) and a video with the speech `<output_path>/<stem>.mp4`.

    python demo.py                       # the bundled model and sample, when present
    python demo.py --model_name vocaset --wav_path demo/wav/test.wav --dataset vocaset \
        --condition FaceTalk_170913_03279_TA --subject FaceTalk_170809_00138_TA

The model's config comes from the checkpoint: --vertice_dim, --feature_dim, --period, --fps and
--train_subjects may be given (as in the training command) and must then agree with it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Threads that spin while waiting stall badly when the CPU is shared with other busy processes;
# passive waiting costs nothing measurable on an idle machine. Must be set before torch loads.
# --fused trades that safety (for the whole run) for speed: the fused step's second thread must
# spin between short parallel regions, else it runs on one (models/decoding.py, fused_cpu_threads).
if "--fused" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ptalker.errors import UserError, print_user_error
from ptalker.cli import parse_resolution

ROOT = Path(__file__).resolve().parent
# used when no model / no audio is named; relative to this folder
BUNDLED_MODEL = Path("demo/models/synthtalk.pth")
BUNDLED_WAV = Path("demo/wav/synthtalk_sample.wav")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="PTalker demo: speech -> 3D face animation (.npy and mp4).")
    p.add_argument("--wav_path", default=None,
                   help=f"audio file (wav, mp3, flac, ... any rate, mono or stereo) or a folder of them "
                        f"(default: {BUNDLED_WAV})")
    p.add_argument("--checkpoint", default=None,
                   help="model file (default: <dataset>/save/<model_name>.pth, then <dataset>/<model_name>.pth; "
                        f"with neither --dataset nor --model_name: {BUNDLED_MODEL})")
    p.add_argument("--dataset", default=None, help="vocaset, BIWI or a dataset folder: where the checkpoint is")
    p.add_argument("--model_name", default=None, help="checkpoint name (default: the dataset's name)")
    p.add_argument("--condition", default=None,
                   help="speaking style of a training subject; 'none' = unseen speaker (style from the audio); "
                        "default: the first training subject, or none with --reference_motion")
    p.add_argument("--unseen", action="store_true", help="same as --condition none")
    p.add_argument("--reference_motion", default=None,
                   help=".npy of absolute vertices (T, V*3) or (T, V, 3) whose motion style to copy")
    p.add_argument("--reference_subject", default=None,
                   help="the subject the reference motion was recorded on (its stored neutral face): its "
                        "offsets are moved onto the animated face; default: the clip is on that face already")
    p.add_argument("--subject", default=None,
                   help="whose face to animate: a template stored in the checkpoint "
                        "(default: the first --test_subjects, else the condition subject)")
    p.add_argument("--template", default=None, help=".ply/.obj neutral face with the checkpoint's vertex order")
    p.add_argument("--result_path", type=Path, default=ROOT / "demo" / "result", help="folder of the .npy outputs")
    p.add_argument("--output_path", type=Path, default=ROOT / "demo" / "output",
                   help="folder of the videos and exported meshes")
    p.add_argument("--no_render", action="store_true", help="write the vertices only, no video")
    p.add_argument("--export", nargs="+", choices=("ply", "obj", "glb", "html", "arkit"), default=None,
                   help="also write, to <output_path>: ply/obj: the meshes <stem>/frame_00000.<fmt> ...; "
                        "glb: <stem>.glb (glTF morph animation) + <stem>.wav; html: <stem>.html, a page that "
                        "plays it; arkit: ARKit blendshape weights <stem>_weights.csv + <stem>_rig.glb "
                        "(SynthTalk faces); several may be given")
    p.add_argument("--rig", default=None,
                   help="a .glb mesh with named morph targets on the animated face's vertices: write its weights "
                        "per frame, <stem>_weights.csv (Live Link Face layout) and <stem>_rig.glb")
    p.add_argument("--rig_smoothing", type=float, default=0.0,
                   help="temporal smoothing of the rig weights (0 = none; 0.1-1 calms jitter, adds lag)")
    p.add_argument("--export_tolerance_mm", type=float, default=0.1,
                   help="glb/html: the morph basis reproduces every vertex of every frame within this (mm)")
    p.add_argument("--fused", action="store_true",
                   help="run the decoder's one-frame step as a CUDA graph on a GPU, or compiled on a CPU (the "
                        "first clip then waits a minute or more for the compiler): pays on long speech")
    p.add_argument("--stream", action="store_true",
                   help="animate as live speech: push the audio in chunks through the streaming API, each frame "
                        "final once --lookahead_ms of speech after it has arrived; also writes "
                        "<result_path>/<stem>_latency.json and prints the latency figures")
    p.add_argument("--lookahead_ms", type=float, default=200.0,
                   help="--stream: speech after a frame the encoder may see before the frame is final "
                        "(default 200; 'inf': the whole clip, which gives the offline frames)")
    p.add_argument("--chunk_ms", type=float, default=20.0, help="--stream: audio per pushed chunk (default 20)")
    p.add_argument("--context_ms", type=float, default=1000.0,
                   help="--stream: past speech encoded with each frame (default 1000)")
    p.add_argument("--realtime", action="store_true",
                   help="--stream: push each chunk when a live source would deliver it (default: back to back, "
                        "the latency computed on the same timeline from the measured compute times)")
    p.add_argument("--resolution", type=parse_resolution, default=(800, 800), help="video size: N or WxH")
    p.add_argument("--batch_size", type=int, default=8, help="clips of equal length animated together")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch (default: torch's choice; 1 is often fastest on a busy machine)")
    # flags of the training command, checked against the checkpoint when given
    p.add_argument("--vertice_dim", type=int, default=None)
    p.add_argument("--feature_dim", type=int, default=None)
    p.add_argument("--period", type=int, default=None)
    p.add_argument("--fps", type=int, default=None, help="motion frame rate (default: the checkpoint's)")
    p.add_argument("--train_subjects", default=None, help="space-separated; must be the checkpoint's")
    p.add_argument("--test_subjects", default=None, help="space-separated; the first is the default --subject")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from ptalker.demo_cli import run_demo

        arkit_rig = None
        if args.export and "arkit" in args.export:   # the bundled face's rig: SynthTalk's analytic controls
            from SynthTalk.arkit_rig import rig_document as arkit_rig
        run_demo(args, ROOT / BUNDLED_MODEL, ROOT / BUNDLED_WAV, arkit_rig)
    except UserError as exc:
        return print_user_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
