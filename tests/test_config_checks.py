"""Config validation: every shipped config passes; impossible values, wrong types and unknown
names stop `experiments.run` before any work, in one line naming the key."""

import ml_collections
import pytest
from assets.runner import run_experiment

from experiments import config_checks, configs

SHIPPED = ["emonet_affectnet", "emonet_affectnet:classes8", "emonet_synthcrowd",
           "emonet_synthcrowd:tiny", "nvpf_emotiw:fea", "nvpf_gecv:feb", "nvpf_synthcrowd:fec,tiny",
           "nvpf_synthcrowd:fec,e2e", "quickstart", "quickstart:tiny", "retinaface_synthcrowd:tiny",
           "rpn_gecv", "rpn_synthcrowd", "rpn_synthcrowd:tiny", "tnvpf_gecv", "tnvpf_synthcrowd:lstm,tiny",
           "tnvpf_vgaf:rnn"]


@pytest.mark.parametrize("spec", SHIPPED)
def test_shipped_configs_pass(spec):
  path, arg, _ = configs.resolve(spec)
  config_checks.check(configs.load(path, arg))


# (config, dotted key, value, the error after "--config.KEY=VALUE: ")
CASES = [
    ("emonet_synthcrowd", "batch_size", 0, "must be at least 1"),
    ("nvpf_synthcrowd", "model.max_faces", 0, "must be at least 1"),
    ("quickstart", "group.model.flow_units", -2, "must be at least 1"),
    ("tnvpf_synthcrowd", "optimizer.warmup_steps", -1, "must be at least 0"),
    ("emonet_synthcrowd", "optimizer.learning_rate", 0.0, "must be above 0"),
    ("rpn_synthcrowd", "model.scales", (32.0, 0.0, 80.0), "must be above 0"),
    ("retinaface_synthcrowd", "eval.nms_threshold", 1.5, "must lie in [0, 1]"),
    ("nvpf_synthcrowd", "model.prior", "cauchy",
     "unknown; known: class_gaussian, gaussian_mixture, learned_gaussian, student_t"),
    ("nvpf_synthcrowd", "model.fusion", "fed", "unknown; known: fea, feb, fec"),
    ("tnvpf_synthcrowd", "model.cell", "gru", "unknown; known: lstm, rnn, tnvpf"),
    ("emonet_synthcrowd", "optimizer.name", "lamb", "unknown; known: adam, adamw, sgd"),
    ("rpn_synthcrowd", "model.dtype", "float33", "is not a dtype name (e.g. float32, bfloat16)"),
    ("retinaface_synthcrowd", "checkpoint.best_mode", "maximum", "unknown; known: max, min"),
]


@pytest.mark.parametrize("name,key,value,problem", CASES)
def test_impossible_values_name_the_key(name, key, value, problem):
  path, arg, _ = configs.resolve(name)
  config = configs.load(path, arg)
  node = config
  *parents, leaf = key.split(".")
  for parent in parents:
    node = node[parent]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(ValueError) as error:
    config_checks.check(config)
  assert str(error.value) == f"--config.{key}={value!r}: {problem}"


def test_every_rule_names_a_field_some_config_has():
  fields = set()
  for name in configs.known():
    path, arg, _ = configs.resolve(name)
    stack = [configs.load(path, arg)]
    while stack:
      node = stack.pop()
      for key in node.keys():
        (stack.append(node[key]) if isinstance(node[key], ml_collections.ConfigDict)
         else fields.add(key))
  rules = (config_checks.AT_LEAST_ONE | config_checks.AT_LEAST_ZERO | config_checks.ABOVE_ZERO
           | config_checks.FRACTIONS)
  assert rules <= fields, rules - fields  # a misspelt rule would check nothing


@pytest.mark.parametrize("override,message", [
    ("--config.model.max_faces=0", "error: --config.model.max_faces=0: must be at least 1"),
    ("--config.model.prior=cauchy", "error: --config.model.prior='cauchy': unknown; known: "
     "class_gaussian, gaussian_mixture, learned_gaussian, student_t"),
    ("--config.batch_size=eight",
     "error: flag --config.batch_size=eight: invalid literal for int() with base 10: 'eight'"),
])
def test_the_runner_stops_before_any_work(tmp_path, override, message):
  result = run_experiment("--config=nvpf_synthcrowd:fec,tiny", override,
                          f"--workdir={tmp_path}/run", f"--config.data.data_dir={tmp_path}/tfds")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [message]
  assert not (tmp_path / "run").exists() and not (tmp_path / "tfds").exists()
