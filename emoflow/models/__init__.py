from emoflow.models.emonet import EmoNet
from emoflow.models import priors
from emoflow.models.baselines import FeA, FeB
