"""experiments/notebooks/swap_priors.ipynb runs top to bottom (nbclient), on the tiny quickstart."""

import os

import nbclient
import nbformat
import pytest
from assets.runner import ROOT

NOTEBOOK = os.path.join(ROOT, "experiments", "notebooks", "swap_priors.ipynb")


@pytest.mark.slow
def test_swap_priors_notebook_trains_what_it_lacks_and_compares_every_prior(tmp_path):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
  parameters.source += (f"\nWORKDIR = {str(tmp_path / 'run')!r}\nCONFIG = 'quickstart:tiny'"
                        f"\nDATA_DIR = {str(tmp_path / 'tfds')!r}\nREFIT_STEPS = 5\nBATCH = 8\n")
  nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  printed = "".join(o.get("text", "") for o in outputs)
  assert "| prior | retrained | mAC | UAR | F1 | ECE | NLL | T | ECE_T | NLL_T |" in printed
  for prior, retrained in (("class_gaussian", "the flow, 5 steps"),
                           ("learned_gaussian", "nothing (the run's prior)"),
                           ("student_t", "the prior, 5 steps"),
                           ("gaussian_mixture", "the prior, 5 steps")):
    assert f"| {prior} | {retrained} |" in printed, prior
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # features, reliability
  assert os.path.exists(tmp_path / "run" / "fec" / "stage.json")
