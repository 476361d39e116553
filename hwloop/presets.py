"""Recipes per (task, neuron): hyperparameters known to train well, applied beneath the user's
own values (a config file, CLI options and overrides always win). Set ``presets=false`` to
start from the plain defaults. The resolved values are stored in every run file.

The cue × BRF recipe is the HYPR authors' cue configuration (exponential mode, exponential_b,
slayer_wide, ω ~ U(0.01, 10), b' ~ U(1e-9, 1e-4); hypr.md §8) with a smaller network, hence a
larger initial weight gain and learning rate.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("cue", "brf"): {
        "init_gain": 5.0,
        "lr": 0.05,
        "neuron_options": {
            "use_exponential": True,
            "exponential_b": True,
            "surrogate": "slayer_wide",
            "omega_range": [0.01, 10.0],
            "b_range": [1e-9, 1e-4],
        },
    },
    ("cue", "lif"): {"init_gain": 5.0},
    ("cue", "adlif"): {"init_gain": 2.0, "lr": 0.005},
    # e-prop's ALIF and loss (spec A3) with a slower membrane for the cue's 20-step delay
    ("cue", "eprop_alif"): {
        "init_gain": 10.0, "lr": 0.03, "loss": "mean_output_ce", "neuron_options": {"tau_m": 20.0},
    },
}


def preset_for(task: str, neuron: str) -> dict[str, Any]:
    """The recipe for (task, neuron); empty when there is none."""
    return PRESETS.get((task, neuron), {})
