"""Compare shared-feature attribution with Captum baselines on the same neurons, in a few lines.

Writes the offline in-silico data set (stick-figure bodies and objects with ground-truth
part masks, simulated neurons tuned to body parts), fits a ridge readout on the shipped
``insilico_cnn`` backbone, then calls ``sharedattr.compare`` on the recorded responses (so that it explains the
drivers ``sharedattr run`` would) and prints the method × image × metric means. Localisation is scored against
the parts each driver/reference pair shares. Run it with::

    uv run python examples/compare_methods.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import sharedattr
from sharedattr.experiment.demo import make_demo_data
from sharedattr.experiment.stages import fit_experiment


def main(out: Path) -> None:
    config = make_demo_data(out / "data", n_per_category=60, size=64)
    spec = sharedattr.load_experiment(config)
    model = fit_experiment(spec, out / "fit", progress=False).fit.model  # or sharedattr.load_model(folder)
    stimuli = sharedattr.load_stimuli(out / "data" / "stimuli" / "manifest.csv")
    table = sharedattr.compare(
        model,
        stimuli,
        responses=sharedattr.load_responses(out / "data" / "responses.csv"),  # drivers ranked as `sharedattr run` does
        neurons=["limbs", "head"],
        preferred_category="bodies",
        methods=[
            "parallel_backprop",  # the default: product weighting on the layer path
            {"name": "parallel_backprop", "variant": "own"},  # its control: the neuron's own map, same path
            "saliency",
            {"name": "integrated_gradients", "n_steps": 16, "baseline": 0.0},  # the same black baseline
            "grad_cam",
        ],
        metrics=[
            "shared_part_selectivity",
            "reference_sensitivity",
            {"name": "deletion", "steps": 10, "baseline": 0.5},
            "relevance_mass",
            "pointing_game",
            "gini",
        ],
        drivers_per_neuron=3,
        neuron_parts=out / "data" / "neuron_parts.json",
    )
    table.to_csv(out / "comparison.csv", index=False)
    summary = table.groupby(["metric", "image", "method"])["value"].agg(["mean", "sem", "count"])
    print(summary.round(3).to_string())
    print(f"\n{len(table)} rows; the tidy table is in {out / 'comparison.csv'}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
