"""One dataclass describes a PTalker network; it travels inside every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

ABLATIONS = ("no_style", "no_spatial", "no_temporal", "no_feature", "faceformer")


@dataclass
class LossWeights:
    """total = rec + mouth*mouth + vel*vel + contrastive * (sum of the weighted alignment terms)."""
    rec: float = 1.0
    mouth: float = 1.2
    vel: float = 10.0
    contrastive: float = 0.01
    orth_audio: float = 1e-3
    infonce_audio: float = 1e-3
    infonce_motion: float = 1e-4
    orth_motion: float = 1e-4
    topk: float = 1e-3
    kl: float = 1e-3
    adv: float = 1e-3


@dataclass
class PTalkerConfig:
    vertice_dim: int                      # V*3
    feature_dim: int = 64                 # F
    period: int = 30                      # frames per period of the positional encoding and bias
    fps: int = 30                         # motion frame rate
    n_subjects: int = 8                   # width of the one-hot identity
    audio_model: str = "facebook/wav2vec2-base-960h"   # HF hub id or local folder
    audio_hidden: int = 768               # read from the speech model's config at build time
    audio_frames_per_frame: int = 1       # 1: features interpolated to the frame count; 2: BIWI pairs
    motion_scale: float = 1.0             # RMS of the training offsets, in mesh units: the network's unit
    decoder_layers: int = 6
    attention_window: int = 600           # frames each self-attention looks back (the query's own
                                          # included): bounds generation's memory at any length
    decoder_heads: int = 4
    motion_conv_layers: int = 6
    motion_layers: int = 6                # transformer layers of each motion encoder (width 2F)
    motion_heads: int = 2
    style_dim: int = 128                  # audio style code width
    gat_dim: int = 8                      # per-head width of the spatial GAT's hidden layer
    gat_heads: int = 2
    gat_chunk: int = 16                   # frames per GAT chunk (small chunks stay in cache)
    gat_checkpoint: bool = True           # recompute each chunk in the backward pass: activation memory
                                          # bounded by one chunk, at about a quarter more step time
    dropout: float = 0.1
    topk_ratio: float = 0.15
    infonce_queue: int = 16               # recent clips kept as InfoNCE negatives (other clips, at any batch size)
    # components (the paper's ablations switch these off)
    use_style: bool = True                # audio/motion style encoders + disentanglement losses
    use_spatial: bool = True              # spatial GAT over the template mesh graph
    use_alignment_mask: bool = True       # temporal alignment: frame t attends only its audio frames
    use_feature_alignment: bool = True    # top-k contrast + KL between audio and motion content
    use_motion_encoder: bool = True       # motion content encoder (off: a linear embedding, FaceFormer)
    losses: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self):
        if isinstance(self.losses, dict):
            self.losses = LossWeights(**self.losses)
        if self.vertice_dim % 3:
            raise ValueError(f"vertice_dim must be a multiple of 3, got {self.vertice_dim}")
        if self.audio_frames_per_frame not in (1, 2):
            raise ValueError("audio_frames_per_frame must be 1 or 2")

    @property
    def num_vertices(self) -> int:
        return self.vertice_dim // 3

    def with_ablations(self, names) -> "PTalkerConfig":
        """Switch components off by name; `faceformer` is the paper's main baseline:
        one-hot style, one decoder layer, linear motion embedding, no GAT, MSE only."""
        cfg = replace(self, losses=replace(self.losses))
        for name in names:
            if name not in ABLATIONS:
                raise ValueError(f"unknown ablation {name!r}; choose from {', '.join(ABLATIONS)}")
            if name in ("no_style", "faceformer"):
                cfg.use_style = False
            if name in ("no_spatial", "faceformer"):
                cfg.use_spatial = False
            if name == "no_temporal":
                cfg.use_alignment_mask = False
            if name in ("no_feature", "faceformer"):
                cfg.use_feature_alignment = False
            if name == "faceformer":
                cfg.use_motion_encoder = False
                cfg.decoder_layers = 1
                cfg.losses = LossWeights(mouth=0.0, vel=0.0, contrastive=0.0)
        return cfg

    def with_loss_weights(self, settings: list[str]) -> "PTalkerConfig":
        """Override loss weights from `name=value` strings, e.g. `contrastive=1e-5`."""
        weights = asdict(self.losses)
        for item in settings:
            name, sep, value = item.partition("=")
            if not sep or name not in weights:
                raise ValueError(f"loss weight must be NAME=VALUE with NAME one of {', '.join(weights)}; got {item!r}")
            try:
                weights[name] = float(value)
            except ValueError:
                raise ValueError(f"loss weight {name} needs a number, got {value!r}") from None
        return replace(self, losses=LossWeights(**weights))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PTalkerConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
