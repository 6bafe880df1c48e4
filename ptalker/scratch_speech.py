"""Small speech encoders with random weights, for training from scratch where no pretrained model
can be downloaded (the bundled demo model, offline tests).

    python -m ptalker.scratch_speech OUT_DIR [--kind wav2vec2|hubert] [--hidden 96] [--layers 3]
"""
from __future__ import annotations

import argparse
from pathlib import Path


def save_scratch_speech_model(folder: str | Path, kind: str = "wav2vec2", hidden: int = 32, layers: int = 2,
                              heads: int = 2, intermediate: int | None = None, conv_dim: int = 32,
                              seed: int = 0) -> Path:
    """Write a randomly initialised wav2vec2 or HuBERT (HF format) to `folder`; loadable with
    `from_pretrained(folder)` and so usable as `--audio_model folder`."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    settings = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=intermediate or 2 * hidden, conv_dim=(conv_dim,) * 7,
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    builders = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel)}
    if kind not in builders:
        raise ValueError(f"kind must be one of {', '.join(builders)}")
    config_class, model_class = builders[kind]
    folder = Path(folder)
    model_class(config_class(**settings)).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--kind", default="wav2vec2", choices=("wav2vec2", "hubert"))
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--conv_dim", type=int, default=64)
    args = parser.parse_args()
    save_scratch_speech_model(args.out, args.kind, args.hidden, args.layers, args.heads, conv_dim=args.conv_dim)
    print(f"wrote a randomly initialised {args.kind} to {args.out}")


if __name__ == "__main__":
    main()
