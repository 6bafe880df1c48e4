"""The SynthTalk face as a blendshape rig with ARKit's names: each analytic control of `face.py`
(linearised at full strength) becomes one or two morph targets, split into the subject's left (+x)
and right (-x) halves where ARKit names the sides.

    python -m SynthTalk.arkit_rig --out synthtalk_arkit.glb             # the default face
    python -m SynthTalk.arkit_rig --out rig.glb --checkpoint demo/models/synthtalk.pth --subject synth01

| ARKit target | SynthTalk control |
|---|---|
| jawOpen | jaw_open |
| mouthClose | lip_press with the jaw open (the lips meet while the jaw stays down) |
| mouthPucker / mouthFunnel | lip_round: the corners moving in / the lips moving forward and flaring |
| mouthStretchLeft / Right | lip_spread, per half |
| mouthUpperUpLeft / Right | upper_lip_raise, per half |
| mouthRollLower | lower_lip_tuck |
| mouthSmileLeft / Right | smile, per half |
| browInnerUp, browOuterUpLeft / Right | brow_raise: the middle of the brow, the outer parts |
| eyeBlinkLeft / Right | blink, per eye |
| mouthLeft / mouthRight | mouth_left at +1 / -1 |

Head rotation (head_pitch, head_yaw, head_roll) is a transform, not a blendshape: it stays out of the rig.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):   # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from SynthTalk.face import Face, build_face  # noqa: E402

SIDE_WIDTH = 0.004    # m: the left/right split blends over this half-width at the midline
INNER_BROW = 0.022    # m: half-width of browInnerUp's share of the brow raise


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _delta(face: Face, controls: dict[str, float], at: dict[str, float] | None = None) -> np.ndarray:
    """Offset (V, 3) of a pose from the pose `at` (default: neutral)."""
    at = at or {}
    return face.pose({**at, **controls})[0].astype(np.float64) - face.pose(at)[0]


def arkit_targets(face: Face) -> tuple[list[str], np.ndarray]:
    """A SynthTalk face -> (K ARKit names, (K, V, 3) float32 offsets from its neutral pose)."""
    x = face.vertices[:, 0].astype(np.float64)
    left = _smoothstep(-SIDE_WIDTH, SIDE_WIDTH, x)[:, None]   # the subject's left is +x (it faces +z)
    right = 1.0 - left
    inner = np.exp(-0.5 * (x / INNER_BROW) ** 2)[:, None]
    jaw_open = {"jaw_open": 1.0}
    rounding = _delta(face, {"lip_round": 1.0})
    brow = _delta(face, {"brow_raise": 1.0})
    targets = {
        "jawOpen": _delta(face, jaw_open),
        "mouthClose": _delta(face, {"lip_press": 1.0}, at=jaw_open),
        "mouthPucker": rounding * [1.0, 0.0, 0.0],
        "mouthFunnel": rounding * [0.0, 1.0, 1.0],
        "mouthRollLower": _delta(face, {"lower_lip_tuck": 1.0}),
        "browInnerUp": brow * inner,
        "browOuterUpLeft": brow * (1.0 - inner) * left,
        "browOuterUpRight": brow * (1.0 - inner) * right,
        "mouthLeft": _delta(face, {"mouth_left": 1.0}),
        "mouthRight": _delta(face, {"mouth_left": -1.0}),
    }
    for name, control in (("mouthStretch", "lip_spread"), ("mouthUpperUp", "upper_lip_raise"),
                          ("mouthSmile", "smile"), ("eyeBlink", "blink")):
        full = _delta(face, {control: 1.0})
        targets[f"{name}Left"] = full * left
        targets[f"{name}Right"] = full * right
    names = sorted(targets)
    return names, np.stack([targets[n] for n in names]).astype(np.float32)


def face_for_template(template: np.ndarray) -> Face | None:
    """The SynthTalk identity whose neutral face is `template` (V, 3): the default face or a corpus
    speaker's; None when the vertex count differs (not a SynthTalk face)."""
    template = np.asarray(template, np.float32).reshape(-1, 3)
    default = build_face()
    if len(template) != len(default.vertices):
        return None
    candidates = [default]
    try:
        from SynthTalk.corpus import make_speakers

        candidates += [build_face(s.shape) for s in make_speakers(8, 0)]
    except ImportError:   # the corpus needs the speech synthesiser's modules; the default face does not
        pass
    for face in candidates:
        if np.abs(face.vertices - template).max() < 1e-6:
            return face
    return default   # another identity on SynthTalk's topology: the default face's offsets fit it closely


def rig_document(template: np.ndarray, faces: np.ndarray) -> tuple[dict, bytes]:
    """A glTF rig: the template (V, 3) with the ARKit targets of its SynthTalk identity, no animation."""
    from ptalker.glb_animation import animation_document
    from ptalker.morph_basis import MorphBasis

    face = face_for_template(template)
    if face is None:
        from ptalker.errors import UserError

        raise UserError(f"the ARKit rig is made for SynthTalk faces ({len(build_face().vertices)} vertices); "
                        f"this face has {len(template)}: give a rig of your own with --rig RIG.glb")
    names, targets = arkit_targets(face)
    basis = MorphBasis(targets, np.zeros((0, len(names)), np.float32), 0.0)
    return animation_document(template, faces, basis, fps=30, name="synthtalk_arkit", target_names=names)


def main(argv: list[str] | None = None) -> int:
    from ptalker.errors import UserError, print_user_error
    from ptalker.gltf import write_glb

    p = argparse.ArgumentParser(description="Write the SynthTalk face as a glb rig with ARKit-named morph targets.")
    p.add_argument("--out", type=Path, required=True, help="the .glb to write")
    p.add_argument("--checkpoint", default=None, help="take the face from this checkpoint's templates")
    p.add_argument("--subject", default=None, help="the checkpoint's template to use (default: its first)")
    args = p.parse_args(argv)
    try:
        if args.checkpoint is None:
            face = build_face()
            template, faces = face.vertices, face.faces
        else:
            from ptalker.inference import load_animator

            animator = load_animator(args.checkpoint)
            template = animator.template(args.subject or next(iter(animator.templates)))
            faces = animator.faces
        doc, binary = rig_document(template, faces)
        write_glb(args.out, doc, binary)
    except UserError as exc:
        return print_user_error(exc)
    print(f"wrote {args.out} ({len(doc['meshes'][0]['extras']['targetNames'])} ARKit targets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
