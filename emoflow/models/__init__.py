from emoflow.models.emonet import EmoNet
from emoflow.models.coupling import AffineCoupling
from emoflow.models.nvpf import NVPF
from emoflow.models import priors
from emoflow.models.baselines import FeA, FeB
from emoflow.models.tnvpf import TNVPF, count_params
