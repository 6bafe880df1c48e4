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
# configs/synthtalk.json holds the recipe; a flag after it overrides the file
python main.py --config configs/synthtalk.json --max_epoch "$EPOCHS"
cp SynthTalk/save/synthtalk.pth demo/models/synthtalk.pth
