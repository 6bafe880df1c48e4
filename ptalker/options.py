"""main.py's flags besides the training ones (ptalker.trainer.TrainConfig): what data to read and where
to write (RunConfig), and the flags that shape the network (ModelFlags, turned into a PTalkerConfig by
ptalker.experiment). Each field with help text is the flag of the same name (see ptalker.cli)."""
from __future__ import annotations

from dataclasses import dataclass

from models.config import ABLATIONS

from .cli import option
from .recipes import RECIPES


@dataclass
class RunConfig:
    """The dataset, its splits and files, the device, the recipe and what to run."""
    dataset: str = option("vocaset", "vocaset, BIWI, or a dataset folder in the standard layout")
    wav_path: str = option("wav", "speech folder, relative to the dataset folder")
    vertices_path: str = option("vertices_npy", "motion folder, relative to the dataset folder")
    template_file: str = option("templates.pkl", "templates pickle, relative to the dataset")
    save_path: str = option("save", "checkpoint folder, relative to the dataset folder")
    result_path: str = option("result", "prediction folder, relative to the dataset folder")
    device: str | None = option(None, "cuda or cpu (default: cuda when available)")
    train_subjects: str | None = option(None, "space-separated training subjects")
    val_subjects: str | None = option(None, "space-separated validation subjects")
    test_subjects: str | None = option(None, "space-separated test subjects")
    recipe: str = option("ptalker", "defaults of --lr, --max_epoch, --amp and --audio_model: "
                         + "; ".join(f"{name} = {recipe.describe()}" for name, recipe in RECIPES.items()),
                         choices=tuple(RECIPES))
    train_sentences: str | None = option(None, "sentence range of the training split, e.g. 1-40 "
                                               "(several: 1-32,41-72)")
    val_sentences: str | None = option(None, "sentence range of the validation split, e.g. 21-40")
    test_sentences: str | None = option(None, "sentence range of the test split, e.g. 21-40")
    model_name: str | None = option(None, "checkpoint name in --save_path (default: the dataset name)")
    test_only: bool = option(False, "skip training; test the saved best checkpoint")
    test_conditions: str = option("own", "seen test speakers: animate with their own condition only, "
                                         "or with every one", choices=("own", "all"))
    lip_mask: str | None = option(None, "lip region file (ids, or FILE.pkl:region)")
    upper_face_mask: str | None = option(None, "upper-face region file, as --lip_mask")


@dataclass
class ModelFlags:
    """The network's shape; the unset ones come from the dataset preset (or the recipe: audio_model).
    Their meaning is documented on models.config.PTalkerConfig's fields of the same name."""
    vertice_dim: int | None = option(None, "vertices*3 (VOCASET 15069, BIWI 70110; default: the template "
                                           "mesh's)", type=int)
    feature_dim: int | None = option(None, "model width F (default: the dataset preset's, VOCASET 64, "
                                           "BIWI 128)", type=int)
    period: int | None = option(None, "period of the positional encoding/bias (default: the dataset "
                                      "preset's)", type=int)
    fps: int | None = option(None, "motion frame rate (default: the dataset preset's, VOCASET 30, BIWI 25)",
                             type=int)
    audio_model: str | None = option(None, "HF speech SSL model (hub id or local folder): wav2vec2, HuBERT, ... "
                                           "(default: the recipe's)")
    ablation: list = option([], "switch off components: no_style no_spatial no_temporal no_feature; "
                                "faceformer = the FaceFormer-style baseline", nargs="*", choices=ABLATIONS)
    loss_weight: list = option([], "override loss weights: rec mouth vel contrastive orth_audio infonce_audio "
                                   "infonce_motion orth_motion topk kl adv (e.g. contrastive=1e-5)",
                               nargs="*", metavar="NAME=VALUE")
    decoder_layers: int = option(6, "transformer decoder layers", type=int)
    motion_layers: int = option(6, "transformer layers of each motion encoder", type=int)
    motion_conv_layers: int = option(6, "convolution layers of the motion encoders", type=int)
    style_dim: int = option(128, "width of the audio style code", type=int)
    gat_dim: int = option(8, "per-head width of the spatial GAT's hidden layer", type=int)
    gat_checkpoint: str = option("on", "recompute the spatial GAT in the backward pass (on: its activation "
                                       "memory stays bounded by 16 frames; off: faster steps, memory grows with "
                                       "batch x frames x vertices)", choices=("on", "off"))
