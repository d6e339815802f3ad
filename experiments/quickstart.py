"""The quickstart: every level of the method trained and evaluated in one workdir, then predict.

Stages, in order, each in WORKDIR/NAME (a run directory like any other):
- `emonet`: experiments.individual on config.emonet (the paper's Fig. 4);
- one per name in config.group_fusions (fea, feb, fec): experiments.group
  on config.group with that model.fusion, on the cached features of
  WORKDIR/emonet (Table 5);
- one per name in config.video_models (rnn, lstm, tnvpf): experiments.video
  on config.video with that model.cell, same features (Table 7); with
  config.video_on_fec they start from the fec stage's trained group flow and
  hold it (model.group_flow_from, train_group_flow False);
- `predict`: EmoNet, the last fusion and the last video model exported to
  WORKDIR/model (experiments.export_model), `emoflow predict` on the held-out
  video into WORKDIR/predict (predictions.json, annotated.mp4, timeline.png),
  scored against its annotation (experiments.score_video).
A stage writes NAME/stage.json with its results when it has finished; the
next run of the command reads it and skips the stage, and an unfinished
stage resumes from its last checkpoint. results_markdown prints the three
tables in the paper's formats; WORKDIR/plots/ holds them as pictures.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import annotations
from data_pipelines.builders import synthcrowd
from emoflow.fileio import atomic_open
from emoflow.models.emonet import count_macs
from emoflow.tasks import group as group_task
from emoflow.train import plots
from experiments import comparison, export_model, group, individual, score_video, sources, video
from experiments.workdir import save_or_check_config

def _stage_configs(config, workdir: str) -> list[tuple[str, object, object]]:
  """(name, experiment module, resolved config) of every training stage, in order."""
  unknown = [n for n in config.group_fusions if n not in group_task.known()]
  unknown += [n for n in config.video_models if n not in video.MODEL_NAMES]
  if unknown or len(set(config.group_fusions)) != len(config.group_fusions) or \
     len(set(config.video_models)) != len(config.video_models):
    raise ValueError(f"group_fusions must name distinct ones of "
                     f"{', '.join(group_task.known())} and video_models of "
                     f"{', '.join(video.MODEL_NAMES)}; got "
                     f"{tuple(config.group_fusions)}, {tuple(config.video_models)}")
  if config.video_on_fec and config.video_models and "fec" not in config.group_fusions:
    raise ValueError("video_on_fec: the video stages start from the fec stage's group flow, and "
                     "group_fusions has no fec (add it, or set video_on_fec=False)")
  stages = [("emonet", individual, config.emonet.copy_and_resolve_references())]
  emonet_workdir = os.path.join(workdir, "emonet")
  for level, names, key, module in (("group", config.group_fusions, "fusion", group),
                                    ("video", config.video_models, "cell", video)):
    for name in names:
      stage = config[level].copy_and_resolve_references()
      stage.model[key] = name
      stage.features.emonet_workdir = emonet_workdir
      if level == "video" and config.video_on_fec:
        stage.model.group_flow_from = os.path.join(workdir, "fec")
        stage.model.train_group_flow = False
      stages.append((name, module, stage))
  return stages


def _jsonable(x):
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, (str, bool, int, float)) or x is None:
    return x
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  return np.asarray(x).tolist()


def _load_done(directory: str) -> dict | None:
  path = os.path.join(directory, "stage.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _save_done(directory: str, results: dict) -> dict:
  results = _jsonable(results)
  with atomic_open(os.path.join(directory, "stage.json")) as f:
    json.dump(results, f, indent=1)
  return results


def _banner(index: int, total: int, name: str, text: str) -> None:
  print(f"\n[{index}/{total}] {name}: {text}", flush=True)


def _describe(name: str, config) -> str:
  if name == "emonet":
    return (f"EmoNet (width {config.model.width}, depth {config.model.depth}) on "
            f"{config.data.name}/{config.data.config}, "
            f"{config.num_steps} steps of {config.batch_size} faces")
  label = (video.MODEL_NAMES[name] if config.task == "video"
           else group_task.make_fusion(config.model).scheme)
  return (f"{label} on {config.data.source} (EmoNet features cached on first use), "
          f"{config.num_steps} steps of {config.batch_size}")


def _held_out_video(config) -> str:
  """The video predict labels: config.predict.video, else clip `video_index` of the video
  stages' SynthCrowd clips dataset, split `predict.split` (rendered if absent)."""
  if config.predict.video:
    return config.predict.video
  video_config = config.video.copy_and_resolve_references()
  name, _, data_config = video_config.data.source.partition("/")
  if name != "synthcrowd" or not data_config.startswith("clips"):
    raise ValueError(f"video.data.source {video_config.data.source!r} is not a SynthCrowd clips "
                     "dataset: give the video to label with --config.predict.video=FILE")
  builder = sources.source_builder(video_config)
  count = builder.info.splits[config.predict.split].num_examples
  if not 0 <= config.predict.video_index < count:
    raise ValueError(f"predict.video_index {config.predict.video_index} is not one of the "
                     f"{count} videos of {video_config.data.source} {config.predict.split}")
  return synthcrowd.rendered_video(video_config.data.data_dir, data_config, config.predict.split,
                                   config.predict.video_index)


def _predict(config, workdir: str) -> dict:
  """Exports the trained stages, labels the held-out video, scores it if annotated."""
  from emoflow import cli  # noqa: PLC0415 - the console script's own code path
  fusion = config.group_fusions[-1] if config.group_fusions else None
  if fusion is None:
    raise ValueError("predict needs a group fusion: group_fusions is empty")
  model_dir = os.path.join(workdir, "model")
  temporal = config.video_models[-1] if config.video_models else None
  export_model.export(os.path.join(workdir, "emonet"), os.path.join(workdir, fusion),
                      temporal and os.path.join(workdir, temporal), model_dir,
                      config.predict.detector_workdir or None)
  path = _held_out_video(config)
  out = os.path.join(workdir, "predict")
  start = time.perf_counter()
  cli.predict(cli.parse_args(["predict", path, "--model", model_dir, "--out", out]
                             + ([] if config.predict.write_video else ["--no-video"])))
  results = {"video": path, "out": out, "model": model_dir, "group_model": fusion,
             "video_model": temporal, "seconds_predict": time.perf_counter() - start,
             "faces_from": (f"the RetinaFace of {config.predict.detector_workdir}"
                            if config.predict.detector_workdir else "the annotation file")}
  truth = os.path.splitext(path)[0] + ".json"
  if os.path.exists(truth):
    predicted = score_video.load_predictions(os.path.join(out, "predictions.json"))
    results["score"] = score_video.score(predicted, annotations.load(truth))
  return results


def _emonet_size(config) -> dict:
  """Parameters and multiply-accumulates per face of the stage's EmoNet (Fig. 4's size axis)."""
  model = individual.make_model(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 112, 112, 3)),
                                             train=False))
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  return {"parameters": params, "macs": count_macs(config.model.embed_dim, config.model.num_classes,
                                                   config.model.width, config.model.depth)}


def _run(config, workdir: str, evaluate_only: bool) -> dict:
  if jax.process_count() > 1:  # its feature caches and predict stage are single-process
    raise ValueError("the quickstart runs on one host; run its stand-alone configs multi-host")
  stages = _stage_configs(config, workdir)
  total = len(stages) + int(config.predict.enabled)
  results, seconds = {}, {}
  for index, (name, module, stage) in enumerate(stages, 1):
    directory = os.path.join(workdir, name)
    os.makedirs(directory, exist_ok=True)
    start = time.perf_counter()
    if evaluate_only:
      _banner(index, total, name, f"evaluating the best checkpoint of {directory}")
      results[name] = _jsonable(module.evaluate(stage, directory))
    else:
      save_or_check_config(stage, directory)
      done = _load_done(directory)
      if done is not None:
        _banner(index, total, name, f"finished earlier, skipped ({directory}/stage.json)")
        results[name] = done
        continue
      _banner(index, total, name, _describe(name, stage))
      outcome = module.train(stage, directory)
      with atomic_open(os.path.join(directory, "results.md")) as f:
        f.write(module.results_markdown(outcome, title=f"{name} (train, validation split)"))
      results[name] = _save_done(directory, outcome)
    seconds[name] = time.perf_counter() - start
  results["emonet"] = {**results["emonet"], **_emonet_size(stages[0][2])}
  directory = os.path.join(workdir, "predict")
  done = _load_done(directory) if config.predict.enabled else None
  if done is None and config.predict.enabled and not evaluate_only:
    _banner(total, total, "predict", "export the model, label a held-out video, score it")
    start = time.perf_counter()
    os.makedirs(directory, exist_ok=True)
    done = _save_done(directory, _predict(config, workdir))
    seconds["predict"] = time.perf_counter() - start
  elif done is not None:
    _banner(total, total, "predict", f"finished earlier, skipped ({directory}/stage.json)")
  results["predict"] = done
  results["seconds"] = seconds
  results["stages"] = {"group": list(config.group_fusions), "video": list(config.video_models)}
  _plot(results, os.path.join(workdir, "plots"))
  return results


def train(config, workdir: str) -> dict:
  """Runs (or skips, when finished) every stage; returns {stage: results} for results_markdown."""
  return _run(config, workdir, evaluate_only=False)


def evaluate(config, workdir: str) -> dict:
  """Re-evaluates every trained stage's best checkpoint; predict's results are read back."""
  return _run(config, workdir, evaluate_only=True)


def _accuracies(results: dict, prefix: str) -> dict[str, float]:
  return {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}


def _plot(results: dict, directory: str) -> None:
  """fig4_emonet.png, table5_fusions.png and fig5_confusion.png (the video models' matrices)."""
  emonet = results["emonet"]
  plots.plot_bars({"EmoNet: accuracy per emotion": {"EmoNet": _accuracies(emonet, "acc/")},
                   "per face height": {"EmoNet": _accuracies(emonet, "acc@")}},
                  os.path.join(directory, "fig4_emonet.png"))
  fusions = results["stages"]["group"]
  if fusions:
    plots.plot_bars({"group level (Table 5)": {
        results[n]["table_row"]["fusion"]: {"mAC": results[n]["mAC"],
                                            **_accuracies(results[n], "acc/")}
        for n in fusions}}, os.path.join(directory, "table5_fusions.png"))
  models = results["stages"]["video"]
  if models:
    names = list(_accuracies(results[models[0]], "acc/"))
    plots.plot_confusions([(results[n]["confusion_matrix"], f"{results[n]['model_name']}, video")
                           for n in models], names, os.path.join(directory, "fig5_confusion.png"))


def _fig4_lines(emonet: dict) -> list[str]:
  return ["| network | parameters | size (float32) | MACs per face | mAC | UAR | F1 |",
          "|---|---|---|---|---|---|---|",
          f"| EmoNet | {emonet['parameters']:,} | {emonet['parameters'] * 4 / 1e6:.1f} MB | "
          f"{emonet['macs'] / 1e6:.1f} M | {emonet['mAC']:.2%} | {emonet['UAR']:.4f} | "
          f"{emonet['F1']:.4f} |", "", *individual.detail_tables(emonet)]


def _predict_lines(done: dict) -> list[str]:
  lines = [f"`emoflow predict {done['video']} --model {done['model']}` "
           f"({done['seconds_predict']:.1f} s; group model {done['group_model']}, video model "
           f"{done['video_model']}) wrote {done['out']}/: predictions.json, timeline.png"
           + (", annotated.mp4" if os.path.exists(os.path.join(done["out"], "annotated.mp4"))
              else "") + "."]
  if "score" in done:
    lines += ["", f"Against its annotation (faces from {done['faces_from']}):", "",
              score_video.markdown(done["score"]).rstrip()]
  return lines


def _reference(results: dict, stages: list[str], level: str) -> dict:
  """The stage whose results a level's table takes its paired differences to (FeA, FeC + RNN)."""
  name = comparison.REFERENCES[level].value
  if name not in stages:
    return {"missing": f"no {comparison.REFERENCES[level].label} stage in this run"}
  return results[name]


def results_markdown(results: dict, title: str) -> str:
  """The paper's three tables (Fig. 4's EmoNet row, Table 5, Table 7), the held-out video's
  labelling, and the time per stage."""
  lines = [f"## {title}", "", "### Faces (paper Fig. 4): EmoNet, 8 emotions", "",
           *_fig4_lines(results["emonet"])]
  fusions = results["stages"]["group"]
  if fusions:
    lines += ["", "### Groups (paper Tables 5 and 6): fusions of EmoNet's features", "",
              *group.table([results[n] for n in fusions], _reference(results, fusions, "group"))]
  models = results["stages"]["video"]
  if models:
    lines += ["", "### Videos (paper Table 7): FeC over time", "",
              *video.table([results[n] for n in models], _reference(results, models, "video"))]
  if results.get("predict"):
    lines += ["", "### A held-out video", "", *_predict_lines(results["predict"])]
  if results["seconds"]:
    lines += ["", "| stage | seconds (this run) |", "|---|---|",
              *[f"| {name} | {s:.0f} |" for name, s in results["seconds"].items()],
              f"| all | {sum(results['seconds'].values()):.0f} |"]
  return "\n".join(lines) + "\n"
