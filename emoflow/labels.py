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
