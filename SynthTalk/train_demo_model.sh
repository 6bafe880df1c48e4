#!/usr/bin/env bash
# Rebuild the bundled demo model (demo/models/synthtalk.pth) from nothing, on a CPU:
# the SynthTalk corpus, a small wav2vec2-architecture speech encoder trained from scratch (no
# pretrained speech model is needed), and main.py on SynthTalk's seen-speaker protocol.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-60}
python SynthTalk/make_dataset.py
[ -d SynthTalk/speech_phonemes ] || python SynthTalk/pretrain_speech.py SynthTalk/speech_phonemes
python main.py --dataset SynthTalk --audio_model SynthTalk/speech_phonemes \
  --feature_dim 64 --period 30 --fps 30 --decoder_layers 2 --motion_layers 1 --motion_conv_layers 2 \
  --style_dim 32 --ablation no_spatial --loss_weight contrastive=1e-5 --batch_size 4 --lr 5e-4 --max_epoch "$EPOCHS" \
  --test_conditions all --model_name synthtalk
cp SynthTalk/save/synthtalk.pth demo/models/synthtalk.pth
