"""The SynthTalk corpus's splits under their short names; they are defined, and documented, with the
dataset presets in `ptalker/datasets.py` (`SYNTHTALK_*`)."""
from ptalker.datasets import (SYNTHTALK_CROSS_VOICE_SENTENCES as CROSS_VOICE_SENTENCES,
                              SYNTHTALK_DEVELOPMENT_SENTENCES as DEVELOPMENT_SENTENCES,
                              SYNTHTALK_EXTRA_SENTENCES as EXTRA_SENTENCES,
                              SYNTHTALK_HELDOUT_TEST_SENTENCES as HELDOUT_TEST_SENTENCES,
                              SYNTHTALK_HELDOUT_TRAIN_SENTENCES as HELDOUT_TRAIN_SENTENCES,
                              SYNTHTALK_HELDOUT_VAL_SENTENCES as HELDOUT_VAL_SENTENCES,
                              SYNTHTALK_TEST_SENTENCES as TEST_SENTENCES,
                              SYNTHTALK_TEST_SUBJECTS as TEST_SUBJECTS,
                              SYNTHTALK_TRAIN_SENTENCES as TRAIN_SENTENCES,
                              SYNTHTALK_TRAIN_SUBJECTS as TRAIN_SUBJECTS,
                              SYNTHTALK_UNSEEN_SUBJECTS as UNSEEN_SUBJECTS,
                              SYNTHTALK_VAL_SENTENCES as VAL_SENTENCES,
                              SYNTHTALK_VAL_SUBJECTS as VAL_SUBJECTS)

__all__ = ["CROSS_VOICE_SENTENCES", "DEVELOPMENT_SENTENCES", "EXTRA_SENTENCES", "HELDOUT_TEST_SENTENCES",
           "HELDOUT_TRAIN_SENTENCES", "HELDOUT_VAL_SENTENCES", "TEST_SENTENCES", "TEST_SUBJECTS",
           "TRAIN_SENTENCES", "TRAIN_SUBJECTS", "UNSEEN_SUBJECTS", "VAL_SENTENCES", "VAL_SUBJECTS"]
