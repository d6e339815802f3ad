from emoflow.models.emonet import EmoNet
