"""Training losses: reconstruction terms and the disentanglement / feature-alignment terms.

total = reconstruction + w_c * (w_oa*orth_audio + w_ia*infonce_audio + w_im*infonce_motion
        + w_om*orth_motion + w_topk*topk + w_kl*kl + w_adv*adv)
reconstruction = rec + w_mouth*mouth + w_vel*vel

The reconstruction terms are mean squared errors in the network's motion unit (mesh units divided
by config.motion_scale, the RMS of the training offsets), so their size, and their balance with
the auxiliary terms (which act on features, not vertices), is the same in metres, in BIWI's unit
area or in millimetres. Orthogonality is a per-step mean, so it does not grow with clip length.

With padded batches every term is computed per clip on its valid frames and averaged over clips,
so a batch of equal-length clips gives the mean of their single-clip losses (InfoNCE excepted:
other clips add negatives).

Every term is computed in float32, also under autocast: the orthogonality product sums over up to
2T steps without normalisation and the KL divides variances, both beyond float16's range or
bfloat16's precision. Frame lengths and subject ids are best given as CPU tensors: the per-clip
slicing reads them as Python ints, which for a GPU tensor would wait for the GPU.
"""
from __future__ import annotations

from dataclasses import fields, replace

import torch
import torch.nn.functional as F

from .config import PTalkerConfig
from .encoders import ClipSummaries
from .ptalker import PTalkerOutput


def _per_clip(lengths: torch.Tensor | None, batch: int, frames: int) -> list[int]:
    return [frames] * batch if lengths is None else lengths.tolist()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Mean over clips of the MSE over each clip's valid frames. pred/target (B, T, D).

    One masked reduction over the batch: per-clip slices would each make backward fill a
    gradient of the whole (B, T, D) batch, B times."""
    T = pred.shape[1]
    if all(t == T for t in lengths):
        return F.mse_loss(pred, target)
    # built on the host and copied without waiting: torch.tensor(..., device=gpu) would block
    counts = torch.tensor(lengths, dtype=pred.dtype)
    valid = torch.arange(T).unsqueeze(0) < counts.unsqueeze(1)                          # (B, T)
    counts, valid = (x.to(pred.device, non_blocking=True) for x in (counts, valid))
    per_frame = F.mse_loss(pred, target, reduction="none").mean(-1)                    # (B, T)
    return ((per_frame * valid).sum(1) / counts).mean()


def velocity(x: torch.Tensor) -> torch.Tensor:
    """Frame-to-frame differences (B, T, D) -> (B, T-1, D)."""
    return x[:, 1:] - x[:, :-1]


def orthogonality(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """||content^T style||_F / T for one clip, lengths matched by adaptive pooling: (T, D1), (T2, D2).
    The public code leaves out the 1/T, so there a long clip weighs more than a short one."""
    if content.shape[0] != style.shape[0]:
        style = F.adaptive_avg_pool1d(style.T.unsqueeze(0), content.shape[0])[0].T
    return torch.linalg.matrix_norm(content.T @ style) / content.shape[0]


def info_nce(a: torch.Tensor, b: torch.Tensor, negatives_a: torch.Tensor | None = None,
             negatives_b: torch.Tensor | None = None, valid: torch.Tensor | None = None,
             temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between clip summaries a, b (B, D): a_i's positive is b_i, its negatives the
    other clips' b_j and `negatives_b` (K, D) from earlier clips (the rows where `valid` (K,) is
    True, all without it); the same the other way round. Zero when there is no other clip."""
    if negatives_a is None:
        if a.shape[0] == 1:
            return a.new_zeros(())
        negatives_a = negatives_b = a[:0]
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    target = torch.arange(a.shape[0], device=a.device)

    def logits(x, partners, negatives):
        earlier = x @ F.normalize(negatives, dim=-1).T
        if valid is not None:   # an unfilled row weighs exp(-inf) = 0: as if it were not there
            earlier = earlier.masked_fill(~valid, float("-inf"))
        return torch.cat([x @ partners.T, earlier], dim=1) / temperature

    return 0.5 * (F.cross_entropy(logits(a, b, negatives_b), target) +
                  F.cross_entropy(logits(b, a, negatives_a), target))


def topk_contrast(audio: torch.Tensor, motion: torch.Tensor, scale: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per-frame contrast of one clip, audio (T, D) vs motion (T, D): each frame's positive is its own
    partner, negatives are the k = round(ratio*T) most similar other frames; both directions, 0.5 each."""
    T = audio.shape[0]
    k = min(max(1, round(ratio * T)), T - 1)
    if k < 1:
        return audio.new_zeros(())
    logits = scale.exp() * (F.normalize(audio, dim=-1) @ F.normalize(motion, dim=-1).T)
    eye = torch.eye(T, dtype=torch.bool, device=audio.device)

    def one_direction(m):
        negatives = m.masked_fill(eye, float("-inf")).topk(k, dim=1).values
        rows = torch.cat([m.diagonal().unsqueeze(1), negatives], dim=1)
        return F.cross_entropy(rows, torch.zeros(T, dtype=torch.long, device=m.device))

    return 0.5 * (one_direction(logits) + one_direction(logits.T))


def gaussian_kl(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """KL(N(mu_a, var_a) || N(mu_b, var_b)) from per-dimension temporal statistics of (T, D) clips, summed over D."""
    mu_a, var_a = a.mean(0), a.var(0, unbiased=False) + eps
    mu_b, var_b = b.mean(0), b.var(0, unbiased=False) + eps
    return 0.5 * (torch.log(var_b / var_a) + (var_a + (mu_a - mu_b) ** 2) / var_b - 1).sum()


def _float32(out: PTalkerOutput) -> PTalkerOutput:
    """`out` with its tensors in float32 (under autocast the features come in bf16/fp16)."""
    def cast(x):
        return x.float() if x is not None and x.is_floating_point() else x
    clips = out.clips if out.clips is None else replace(
        out.clips, **{f.name: cast(getattr(out.clips, f.name)) for f in fields(ClipSummaries)})
    return replace(out, **{f.name: cast(getattr(out, f.name)) for f in fields(PTalkerOutput) if f.name != "clips"},
                   clips=clips)


def compute_losses(out: PTalkerOutput, target: torch.Tensor, config: PTalkerConfig, subject_ids: torch.Tensor | None,
                   lip_ids: torch.Tensor | None, frame_lengths: torch.Tensor | None = None,
                   contrast_scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """out: PTalker.forward's output; target (B, T, V*3); subject_ids (B,) speaker index or -1 when
    not a training speaker; lip_ids (L,) vertex ids; frame_lengths (B,) of a padded batch. Returns
    every term in float32, `reconstruction` (the weighted rec + mouth + vel: what validation
    scores) and `total`."""
    with torch.autocast(out.vertices.device.type, enabled=False):
        return _terms(_float32(out), target.float(), config, subject_ids, lip_ids, frame_lengths, contrast_scale)


def _adversary(logits: torch.Tensor, subject_ids: torch.Tensor) -> torch.Tensor | None:
    """Speaker classification loss of the clips of training speakers; None when there is none.
    With host ids and every speaker known (training), nothing waits for the GPU."""
    known = subject_ids >= 0
    if bool(known.all()):
        return F.cross_entropy(logits, subject_ids.to(logits.device, non_blocking=True))
    if not bool(known.any()):
        return None
    return F.cross_entropy(logits[known.to(logits.device)], subject_ids[known].to(logits.device))


def _terms(out: PTalkerOutput, target: torch.Tensor, config: PTalkerConfig, subject_ids: torch.Tensor | None,
           lip_ids: torch.Tensor | None, frame_lengths: torch.Tensor | None,
           contrast_scale: torch.Tensor | None) -> dict[str, torch.Tensor]:
    w, pred = config.losses, out.vertices
    B, T, _ = pred.shape
    lengths = _per_clip(frame_lengths, B, T)
    unit = config.motion_scale ** 2   # mesh units^2 -> the network's motion unit
    terms = {"rec": masked_mse(pred, target, lengths) / unit}
    if lip_ids is not None and w.mouth:
        lips = lambda x: x.view(B, T, -1, 3)[:, :, lip_ids].reshape(B, T, -1)   # noqa: E731
        terms["mouth"] = masked_mse(lips(pred), lips(target), lengths) / unit
    if w.vel and T > 1:
        terms["vel"] = masked_mse(velocity(pred), velocity(target), [max(t - 1, 1) for t in lengths]) / unit
    r = config.audio_frames_per_frame
    audio = [out.audio_content[i, : r * t] for i, t in enumerate(lengths)]
    motion = [out.motion_content[i, :t] for i, t in enumerate(lengths)]
    if config.use_style and w.contrastive:
        a_style = [out.audio_frame_styles[i, : r * t] for i, t in enumerate(lengths)]
        m_style = [out.motion_style[i, :t] for i, t in enumerate(lengths)]
        terms["orth_audio"] = torch.stack([orthogonality(c, s) for c, s in zip(audio, a_style)]).mean()
        terms["orth_motion"] = torch.stack([orthogonality(c, s) for c, s in zip(motion, m_style)]).mean()
        clips = out.clips
        queued, valid = [None] * 4 if clips.negatives is None else clips.negatives, clips.negatives_valid
        terms["infonce_audio"] = info_nce(clips.audio_content, clips.audio_style, queued[0], queued[1], valid)
        terms["infonce_motion"] = info_nce(clips.motion_content, clips.motion_style, queued[2], queued[3], valid)
        adv = None if subject_ids is None else _adversary(out.speaker_logits, subject_ids)
        if adv is not None:
            terms["adv"] = adv
    if config.use_feature_alignment and w.contrastive:
        per_frame = [a.view(a.shape[0] // r, r, -1).mean(1) for a in audio]   # audio steps -> frames
        terms["topk"] = torch.stack([topk_contrast(a, m, contrast_scale, config.topk_ratio)
                                     for a, m in zip(per_frame, motion)]).mean()
        terms["kl"] = torch.stack([gaussian_kl(a, m) for a, m in zip(per_frame, motion)]).mean()
    weighted = {"rec": w.rec, "mouth": w.mouth, "vel": w.vel}
    reconstruction = sum(weighted[n] * terms[n] for n in weighted if n in terms)
    contrastive = [getattr(w, n) * terms[n] for n in
                   ("orth_audio", "infonce_audio", "infonce_motion", "orth_motion", "topk", "kl", "adv") if n in terms]
    terms["reconstruction"] = reconstruction
    terms["total"] = reconstruction + w.contrastive * sum(contrastive) if contrastive else reconstruction
    return terms
