"""Subject and sentence splits of the default SynthTalk corpus (8 speakers x 40 sentences).

Two protocols, like the two public benchmarks:
- VOCASET-like (unseen speakers): train synth01-06 on sentences 1-40, validate on synth07 and test on
  synth08, both on sentences 21-40.
- BIWI-like (seen speakers, unseen sentences): synth01-06 train on 1-32 and on the further texts
  73-104, validate on 33-36, test on 37-40 (Test-A); Test-B is the unseen speakers synth07-08 on 37-40.

Sentences 41-104 of synth01-06 are spoken in another of these six speakers' voices and moved with the
speaker's own style (see corpus.py): with one voice per speaker, the speech alone would tell the
style, and a model could learn to ignore the speaker condition. 41-72 repeat the texts of 1-32;
73-104 are further texts. 105-120, in the speaker's own voice, are held out as a development set.
"""
TRAIN_SUBJECTS = ("synth01", "synth02", "synth03", "synth04", "synth05", "synth06")
VAL_SUBJECTS = ("synth07",)
TEST_SUBJECTS = ("synth08",)
UNSEEN_SUBJECTS = VAL_SUBJECTS + TEST_SUBJECTS

# VOCASET-like
TRAIN_SENTENCES = range(1, 41)
VAL_SENTENCES = range(21, 41)
TEST_SENTENCES = range(21, 41)

# BIWI-like, on TRAIN_SUBJECTS (Test-B: UNSEEN_SUBJECTS on HELDOUT_TEST_SENTENCES)
HELDOUT_TRAIN_SENTENCES = range(1, 33)
HELDOUT_VAL_SENTENCES = range(33, 37)
HELDOUT_TEST_SENTENCES = range(37, 41)
CROSS_VOICE_SENTENCES = range(41, 73)    # sentence 40 + k: the text of sentence k, another voice
EXTRA_SENTENCES = range(73, 105)         # further texts (corpus.EXTRA_TEXTS), another voice
DEVELOPMENT_SENTENCES = range(105, 121)  # held-out texts (corpus.DEVELOPMENT_TEXTS), own voice
