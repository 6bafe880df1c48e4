#!/usr/bin/env bash
# Rebuild the bundled demo model (demo/models/synthtalk.pth) from nothing, on a CPU:
# the SynthTalk corpus, a small wav2vec2-architecture speech encoder pretrained from scratch on
# SynthTalk-style phoneme labels (no downloaded speech model), and main.py on SynthTalk's
# seen-speaker protocol. About 30 minutes on a 2-core CPU (6 for the encoder, 23 for the model).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-45}
# One thread: as fast as two on this small model, and the run repeats bit for bit on a machine.
export OMP_NUM_THREADS=1
python SynthTalk/make_dataset.py
[ -d SynthTalk/speech_phonemes ] || python SynthTalk/pretrain_speech.py SynthTalk/speech_phonemes
python main.py --dataset SynthTalk --audio_model SynthTalk/speech_phonemes \
  --feature_dim 128 --period 30 --fps 30 --decoder_layers 3 --motion_layers 1 --motion_conv_layers 2 \
  --style_dim 32 --ablation no_spatial --identity_dropout 0.2 \
  --self_feed 0.95 --ema 0.999 --seed 8 --val_metric lve --batch_size 4 --lr 5e-4 --lr_schedule cosine \
  --warmup_steps 100 --max_epoch "$EPOCHS" --test_conditions all --model_name synthtalk
cp SynthTalk/save/synthtalk.pth demo/models/synthtalk.pth
