"""The PTalker network: shapes, causality, masks, losses, learning, caching, inference modes."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import clip, make_model, shared_file, tiny_config
from models import PTalker
from models.audio import load_speech_model
from models.config import ABLATIONS
from models.layers import GraphAttention, MeshGraph, TransformerBlock, alignment_mask, alibi_slopes, periodic_causal_bias
from models.losses import compute_losses
from ptalker.mesh import mesh_edges, read_mesh
from synthetic import tiny_mesh



@pytest.mark.parametrize("ratio", [1, 2])
def test_output_shapes(tiny_wav2vec2, ratio):
    model, template = make_model(tiny_wav2vec2, ratio)
    audio, motion = clip(12, batch=2, template=template.repeat(2, 1), ratio=ratio)
    out = model(audio, motion, template.repeat(2, 1), torch.eye(3)[:2])
    assert out.vertices.shape == (2, 12, template.shape[1])
    assert out.audio_content.shape == (2, 12 * ratio, 16)
    assert out.motion_content.shape == (2, 12, 16)
    assert out.audio_frame_styles.shape == (2, 12 * ratio, 16)
    assert out.speaker_logits.shape == (2, 3)
    generated = model.generate(audio[:1], template, torch.eye(3)[:1])
    assert generated.shape == (1, 12, template.shape[1])


@pytest.mark.parametrize("ratio", [1, 2])
def test_future_motion_and_audio_features_never_change_earlier_frames(tiny_wav2vec2, ratio):
    model, template = make_model(tiny_wav2vec2, ratio)
    audio, motion = clip(20, template=template, ratio=ratio)
    features = model.audio(audio, 20)
    cut = 11
    changed_motion = motion.clone()
    changed_motion[:, cut:] += 0.05
    changed_features = features.clone()
    changed_features[:, ratio * cut:] = torch.randn_like(changed_features[:, ratio * cut:])

    def run(feats, verts):
        model.audio.forward = lambda a, frames, lengths=None: feats   # fix the speech features, vary what follows
        try:
            return model(audio, verts, template, torch.eye(3)[:1]).vertices
        finally:
            del model.audio.forward

    base = run(features, motion)
    # motion frame t is fed back as input of frame t+1: earlier frames (<= cut) must not move
    assert torch.equal(run(features, changed_motion)[:, : cut + 1], base[:, : cut + 1])
    assert torch.equal(run(changed_features, motion)[:, :cut], base[:, :cut])
    assert not torch.allclose(run(changed_features, motion)[:, cut:], base[:, cut:])


def test_alignment_mask_matches_formula():
    for frames, ratio in ((5, 1), (4, 2)):
        mask = alignment_mask(frames, ratio * frames, ratio)
        for t in range(frames):
            for s in range(ratio * frames):
                assert bool(mask[t, s]) == (ratio * t <= s <= ratio * t + ratio - 1)
    assert alignment_mask(3, 6, 2).sum(1).tolist() == [2, 2, 2]


def test_periodic_bias_matches_formula():
    slopes = alibi_slopes(4)
    assert slopes.tolist() == [1 / 4, 1 / 16, 1 / 64, 1 / 256]
    period, n = 3, 10
    bias = periodic_causal_bias(slopes, n, n, period)
    for h in range(4):
        for i in range(n):
            for j in range(n):
                expected = -slopes[h].item() * math.floor((i - j) / period) if j <= i else -math.inf
                assert bias[h, i, j].item() == pytest.approx(expected)
    # an offset query block equals the matching rows of the full mask (what the cache relies on)
    assert torch.equal(periodic_causal_bias(slopes, 2, n, period, t0=n - 2), bias[:, -2:])


def dense_graph_attention(layer: GraphAttention, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """The GAT formula with a dense (V, V) mask, adjacency[dst, src]: the reference."""
    N, V, _ = x.shape
    h = layer.lin(x).view(N, V, layer.heads, layer.out_dim)
    score_src, score_dst = (h * layer.att_src).sum(-1), (h * layer.att_dst).sum(-1)      # (N, V, H)
    logits = torch.nn.functional.leaky_relu(score_dst.unsqueeze(2) + score_src.unsqueeze(1), 0.2)
    alpha = logits.masked_fill(~adjacency.view(1, V, V, 1), float("-inf")).softmax(dim=2)  # (N, dst, src, H)
    out = torch.einsum("nvuh,nuhd->nvhd", alpha, h)
    return (out.reshape(N, V, -1) if layer.concat else out.mean(2)) + layer.bias


@pytest.mark.parametrize("heads,concat", [(2, True), (1, False)])
def test_sparse_graph_attention_equals_dense_formula_with_gradients(heads, concat):
    vertices, faces = tiny_mesh()
    V = len(vertices)
    edges = torch.from_numpy(mesh_edges(faces, V))
    adjacency = torch.eye(V, dtype=torch.bool)
    adjacency[edges[1], edges[0]] = True
    torch.manual_seed(0)
    layer = GraphAttention(5, 3, heads, concat=concat).double()
    x = torch.randn(3, V, 5, dtype=torch.float64, requires_grad=True)
    graph = MeshGraph(edges, V)
    sparse, dense = layer(x, graph), dense_graph_attention(layer, x, adjacency)
    assert torch.allclose(sparse, dense, atol=1e-10)
    weights = torch.randn_like(dense)
    inputs = [x, *layer.parameters()]
    for a, b in zip(torch.autograd.grad((sparse * weights).sum(), inputs),
                    torch.autograd.grad((dense * weights).sum(), inputs)):
        assert torch.allclose(a, b, atol=1e-9)


@pytest.mark.parametrize("in_dim,out_dim,heads,concat", [(3, 8, 2, True),    # the spatial encoder's first layer
                                                          (16, 3, 1, False),  # and its second
                                                          (16, 8, 2, True)])  # a shape without constant sizes
def test_the_compiled_steps_graph_kernel_equals_the_dense_formula(in_dim, out_dim, heads, concat):
    """graph_kernel.c through GraphAttention._forward_by_kernel, on a mesh with a hub vertex joined to
    every other one (a degree far above a mesh's usual six), two frames at once."""
    vertices, faces = tiny_mesh()
    V = len(vertices)
    hub = torch.stack([torch.zeros(V - 1, dtype=torch.long), torch.arange(1, V)])
    edges = torch.cat([torch.from_numpy(mesh_edges(faces, V)), hub, hub.flip(0)], dim=1)
    adjacency = torch.eye(V, dtype=torch.bool)
    adjacency[edges[1], edges[0]] = True
    torch.manual_seed(0)
    layer = GraphAttention(in_dim, out_dim, heads, concat=concat)
    torch.nn.init.normal_(layer.bias)
    x = 2 * torch.randn(2, V, in_dim)
    with torch.no_grad():
        fused, dense = layer._forward_by_kernel(x, MeshGraph(edges, V)), dense_graph_attention(layer, x, adjacency)
    assert fused.shape == dense.shape
    assert torch.allclose(fused, dense, atol=1e-5, rtol=1e-5)


def test_gathered_aggregation_equals_the_sparse_one():
    """The gathers a captured (or compiled, where graph_kernel.c cannot serve) step uses."""
    from models.layers import _GraphSoftmaxAggregate, _softmax_aggregate_gathered

    vertices, faces = tiny_mesh()
    V = len(vertices)
    graph = MeshGraph(torch.from_numpy(mesh_edges(faces, V)), V)
    torch.manual_seed(0)
    score_src, score_dst, h = 3 * torch.randn(V, 2, 3), 3 * torch.randn(V, 2, 3), torch.randn(2, 3, V, 4)
    gathered = _softmax_aggregate_gathered(score_src, score_dst, h, graph, 0.2)
    assert torch.allclose(gathered, _GraphSoftmaxAggregate.apply(score_src, score_dst, h, graph, 0.2), atol=1e-6)


def test_graph_kernel_refuses_what_it_cannot_compute():
    from models.graph_kernel import graph_softmax_aggregate

    rowptr, col = torch.tensor([0, 1]), torch.tensor([0])
    with pytest.raises(TypeError, match="float32"):
        graph_softmax_aggregate(torch.zeros(1, 1, 1, dtype=torch.float64), torch.zeros(1, 1, 1),
                                torch.zeros(1, 1, 1, 3), rowptr, col, 0.2)
    with pytest.raises(ValueError, match="unsupported sizes"):
        graph_softmax_aggregate(torch.zeros(1, 1, 17), torch.zeros(1, 1, 17), torch.zeros(1, 1, 1, 3), rowptr, col, 0.2)
    with pytest.raises(ValueError, match="mismatched shapes"):   # a graph of 2 vertices for scores of 1
        graph_softmax_aggregate(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1, 1, 3),
                                torch.tensor([0, 1, 2]), torch.tensor([0, 1]), 0.2)
    assert not GraphAttention(3, 8, 17)._kernel_serves()   # more heads than its accumulators: gathers instead
    # built without -ffast-math's start-up code: the process still computes with denormal numbers
    assert (torch.tensor([1e-39]) * 0.5).item() > 0


def test_gat_checkpointing_changes_no_gradient(tiny_wav2vec2):
    grads = []
    for checkpointed in (True, False):
        model, template = make_model(tiny_wav2vec2, gat_checkpoint=checkpointed, gat_chunk=3)
        assert model.spatial.checkpointed is checkpointed
        torch.manual_seed(1)
        offsets = 0.01 * torch.randn(2, 7, template.shape[1])       # 14 frames: chunks of 3 and a rest of 2
        model.spatial(offsets).square().sum().backward()
        grads.append([p.grad for p in model.spatial.parameters()])
    assert all(g is not None and g.abs().sum() > 0 for g in grads[0])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)


def test_mesh_graph_rejects_one_way_edges():
    with pytest.raises(ValueError, match="both directions"):
        MeshGraph(torch.tensor([[0, 1], [1, 2]]), 3)


def test_aligned_cross_attention_equals_masked_full_attention(tiny_wav2vec2):
    model, _ = make_model(tiny_wav2vec2, ratio=2)
    attn = model.decoder[0].cross_attn
    x, memory = torch.randn(1, 6, 16), torch.randn(1, 12, 16)
    kv = attn.project_memory(memory)
    gathered = attn(x, kv)
    q = attn.q(x).view(1, 6, 4, 4).transpose(1, 2)
    mask = alignment_mask(6, 12, 2)
    full = torch.nn.functional.scaled_dot_product_attention(q, *kv, attn_mask=mask)
    assert torch.allclose(gathered, attn.out(full.transpose(1, 2).reshape(1, 6, 16)), atol=1e-6)


def test_every_loss_term_finite_and_nonzero_at_batch_size_one(tiny_wav2vec2):
    model, template = make_model(tiny_wav2vec2)
    model.train()
    audio, motion = clip(24, template=template)
    model(*clip(24, seed=5, template=template), template, torch.eye(3)[1:2])   # queues a clip: a negative
    out = model(audio, motion, template, torch.eye(3)[:1])
    lips = torch.arange(0, 10)
    terms = compute_losses(out, motion, model.config, torch.tensor([1]), lips, None, model.contrast_scale)
    expected = {"rec", "mouth", "vel", "orth_audio", "orth_motion", "infonce_audio", "infonce_motion",
                "adv", "topk", "kl", "reconstruction", "total"}
    assert set(terms) == expected
    for name, value in terms.items():
        assert torch.isfinite(value), name
        assert value.item() > 0, name
    w = model.config.losses
    reconstruction = terms["rec"] + w.mouth * terms["mouth"] + w.vel * terms["vel"]
    contrast = sum(getattr(w, n) * terms[n] for n in expected - {"rec", "mouth", "vel", "reconstruction", "total"})
    assert torch.allclose(terms["reconstruction"], reconstruction)
    assert torch.allclose(terms["total"], reconstruction + w.contrastive * contrast)


def test_padded_batch_gives_the_mean_of_single_clip_losses(tiny_wav2vec2):
    model, template = make_model(tiny_wav2vec2)
    (a1, m1), (a2, m2) = clip(10, 1, template=template), clip(14, 2, template=template)
    singles = [compute_losses(model(a, m, template, torch.eye(3)[:1]), m, model.config, torch.tensor([0]),
                              None, None, model.contrast_scale) for a, m in ((a1, m1), (a2, m2))]
    audio = torch.zeros(2, a2.shape[1])
    audio[0, : a1.shape[1]], audio[1] = a1[0], a2[0]
    motion = torch.zeros(2, 14, m1.shape[2])
    motion[0, :10], motion[1] = m1[0], m2[0]
    lengths = torch.tensor([10, 14])
    out = model(audio, motion, template.repeat(2, 1), torch.eye(3)[[0, 0]],
                torch.tensor([a1.shape[1], a2.shape[1]]), lengths)
    batched = compute_losses(out, motion, model.config, torch.tensor([0, 0]), None, lengths, model.contrast_scale)
    for name in ("rec", "vel", "orth_audio", "orth_motion", "topk", "kl"):
        assert batched[name].item() == pytest.approx((singles[0][name] + singles[1][name]).item() / 2, rel=1e-4)
    assert torch.allclose(out.vertices[0, :10], model(a1, m1, template, torch.eye(3)[:1]).vertices[0], atol=1e-5)


def test_training_one_clip_lowers_the_loss_tenfold(tiny_wav2vec2):
    model, template = make_model(tiny_wav2vec2, randomize=False)
    model.train()
    audio, motion = clip(15, template=template)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(150):
        terms = compute_losses(model(audio, motion, template, torch.eye(3)[:1]), motion, model.config,
                               torch.tensor([0]), None, None, model.contrast_scale)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(terms["total"].item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.parametrize("ratio", [1, 2])
def test_cached_generation_equals_full_recompute_in_every_mode(tiny_wav2vec2, ratio):
    model, template = make_model(tiny_wav2vec2, ratio)
    audio, reference = clip(25, template=template, ratio=ratio)
    modes = {"seen": dict(one_hot=torch.eye(3)[1:2]), "unseen": {},
             "reference": dict(one_hot=torch.eye(3)[1:2], reference=reference[:, :12])}
    outputs = {}
    for mode, kwargs in modes.items():
        fast = model.generate(audio, template, **kwargs)
        slow = model.generate(audio, template, use_cache=False, **kwargs)
        assert fast.shape == (1, 25, template.shape[1])
        assert (fast - slow).abs().max().item() <= 1e-5, mode
        outputs[mode] = fast
    assert not torch.allclose(outputs["seen"], outputs["unseen"])
    assert not torch.allclose(outputs["seen"], outputs["reference"])
    # teacher forcing on the model's own output reproduces it: training and inference agree
    seen = model(audio, outputs["seen"], template, torch.eye(3)[1:2]).vertices
    assert torch.allclose(seen, outputs["seen"], atol=1e-5)
    # style from a reference clip replaces the style heard in the speech
    with torch.no_grad():
        model.audio_style.to_decoder.bias.add_(0.5)
    assert torch.equal(model.generate(audio, template, **modes["reference"]), outputs["reference"])
    assert not torch.allclose(model.generate(audio, template, **modes["seen"]), outputs["seen"])


def test_frame_by_frame_attention_in_a_ring_of_its_window_equals_one_pass():
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32, period=30, dropout=0.0, window=40).eval()
    x = torch.randn(2, 150, 16)                         # the ring of 40 slots wraps around three times
    cache = {}
    steps = torch.cat([block(x[:, t: t + 1], torch.tensor(t), cache) for t in range(150)], dim=1)
    assert torch.allclose(steps, block(x), atol=1e-5)
    assert cache["ring"].k.shape == (2, 4, 40, 4)      # memory of the window, not of the sequence
    # the window is what limits the past: a block that sees everything differs after 40 frames
    block.self_attn.window = 1000
    wide = block(x)
    assert torch.allclose(wide[:, :40], steps[:, :40], atol=1e-5)
    assert not torch.allclose(wide[:, 40:], steps[:, 40:], atol=1e-4)


def test_sequences_longer_than_600_frames(tiny_wav2vec2):
    model, template = make_model(tiny_wav2vec2, decoder_layers=1)
    audio, _ = clip(650, template=template)
    out = model.generate(audio, template, torch.eye(3)[:1])
    assert out.shape == (1, 650, template.shape[1]) and torch.isfinite(out).all()


def test_hubert_encoder_and_width_from_its_config(tiny_hubert):
    model, template = make_model(tiny_hubert, ratio=2)
    assert model.config.audio_hidden == 32
    audio, motion = clip(8, template=template, ratio=2)
    assert model(audio, motion, template, None).vertices.shape == motion.shape
    assert not any(p.requires_grad for p in model.audio.model.feature_extractor.parameters())


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_ablations_build_and_train(tiny_wav2vec2, ablation):
    vertices, faces = tiny_mesh()
    config = tiny_config(vertices, tiny_wav2vec2).with_ablations([ablation])
    model = PTalker(config, load_speech_model(str(tiny_wav2vec2)), torch.from_numpy(mesh_edges(faces, len(vertices))))
    template = torch.from_numpy(vertices.reshape(1, -1))
    audio, motion = clip(10, template=template)
    terms = compute_losses(model(audio, motion, template, torch.eye(3)[:1]), motion, config, torch.tensor([0]),
                           torch.arange(5), None, model.contrast_scale)
    terms["total"].backward()
    assert torch.isfinite(terms["total"])
    if ablation == "faceformer":
        assert len(model.decoder) == 1 and model.spatial.gat is None and model.content_encoder is None
        assert set(terms) == {"rec", "reconstruction", "total"}
    if ablation == "no_style":
        assert "orth_audio" not in terms and "topk" in terms
    if ablation == "no_feature":
        assert "topk" not in terms and "kl" not in terms and "orth_audio" in terms
    if ablation == "no_spatial":
        assert model.spatial.gat is None
    if ablation == "no_temporal":
        assert not model.decoder[0].cross_attn.aligned


@pytest.mark.parametrize("mesh_file,ratio", [("flame/FLAME_sample.ply", 1), ("biwi/BIWI.ply", 2)])
def test_real_templates(tiny_wav2vec2, mesh_file, ratio):
    vertices, faces = read_mesh(shared_file(mesh_file))
    model, template = make_model(tiny_wav2vec2, ratio, mesh=(vertices, faces), decoder_layers=1)
    model.train()
    audio, motion = clip(6, template=template, ratio=ratio)
    out = model(audio, motion, template, torch.eye(3)[:1])
    assert out.vertices.shape == (1, 6, vertices.size)
    out.vertices.pow(2).mean().backward()
    assert model.spatial.gat[0].lin.weight.grad.abs().sum() > 0
