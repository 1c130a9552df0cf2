"""``sharedattr run``: data → encoding model → neuron/driver selection → matching → attribution → metrics.

Every stage uses the components named in the :class:`~sharedattr.specs.ExperimentSpec`,
built through the registry. Results are written atomically to the output folder:

- ``spec.json``: the validated spec with every default filled in, and its digest;
- ``scores.csv``, ``model/`` and ``figures/fit.png``: the fitted encoding model and its
  held-out Pearson r per neuron (as ``sharedattr fit`` writes them);
- ``pairs.csv``: per neuron, each out-of-category driver and its matched references;
- ``results.csv``: tidy, one row per neuron × driver × method × metric;
- ``summary.csv``: method × metric mean ± sem (also printed);
- ``maps.safetensors``: every attribution map, keyed by method;
- ``synthesis/``: ``scores.csv``, ``images.safetensors`` and ``images.png`` when synthesizers are configured;
- ``figures/``: PNGs (fit quality, one attribution grid per neuron);
- ``timings.json``: seconds spent in each stage.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .components import AttributionBatch, reduce_channels
from .data import StimulusSet
from .errors import UserError
from .fitting import fit_experiment, resolve_device
from .io import atomic_save_tensors, atomic_write_csv, atomic_write_json
from .methods.matchers import match_references
from .models.encoding import EncodingModel
from .registry import Registry, get_registry
from .specs import ExperimentSpec

RESULT_COLUMNS = ["neuron", "driver", "reference", "similarity", "method", "metric", "value", "higher_is_better"]
SUMMARY_COLUMNS = ["method", "metric", "mean", "sem", "n", "higher_is_better"]


@dataclass
class Pair:
    """One explained item: neuron ``neuron`` (output index), driver stimulus and matched reference."""

    neuron: int
    driver: int
    reference: int
    similarity: float
    rank: int


@dataclass
class RunResult:
    out_dir: Path
    neuron_ids: list[str]
    test_r: Tensor
    selected: list[int]
    pairs: list[Pair]
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)


def select_neurons(spec: ExperimentSpec, neuron_ids: list[str], test_r: Tensor) -> list[int]:
    sel = spec.selection
    if sel.neurons is not None:
        index = {n: i for i, n in enumerate(neuron_ids)}
        unknown = [n for n in sel.neurons if n not in index]
        if unknown:
            raise UserError(f"selection.neurons: unknown neuron id(s) {unknown}; the responses have {neuron_ids[:20]}")
        return [index[n] for n in sel.neurons]
    order = test_r.argsort(descending=True).tolist()
    if sel.min_r is not None:
        order = [i for i in order if float(test_r[i]) >= sel.min_r]
    if sel.top_k is not None:
        order = order[: sel.top_k]
    if not order:
        raise UserError(f"selection: no neuron has held-out r ≥ {sel.min_r}; best r = {float(test_r.max()):.3f}")
    return order


def preferred_categories(spec: ExperimentSpec, stimuli: StimulusSet, responses: Tensor, neurons: list[int]) -> list[str]:
    """Per neuron: the configured preferred category, or the one with the highest mean measured response."""
    names = stimuli.category_names
    if len(names) < 2:
        raise UserError(f"data.stimuli: shared-feature attribution needs ≥ 2 categories; found {names}")
    if spec.data.preferred_category is not None:
        if spec.data.preferred_category not in names:
            raise UserError(f"data.preferred_category: {spec.data.preferred_category!r} is not one of {names}")
        return [spec.data.preferred_category] * len(neurons)
    cats = torch.tensor([names.index(c) for c in stimuli.categories])
    means = torch.stack([responses[cats == k].nanmean(0) for k in range(len(names))])  # [K, N]
    return [names[int(means[:, n].nan_to_num(-math.inf).argmax())] for n in neurons]


@torch.inference_mode()
def contributions(readout: torch.nn.Module, latents: Tensor, rows: Tensor, neurons: Tensor, batch_size: int,
                  device: torch.device) -> Tensor:
    """``c_n(x) = w_n ⊙ z_n(x)`` for stimuli ``rows`` and ``neurons`` → ``[len(rows), len(neurons), D]`` on the CPU.

    Computed in batches of ``batch_size`` images, so memory stays bounded for any readout.
    """
    w = readout.weight[neurons.to(readout.weight.device)]  # [G, D]
    out = []
    for chunk in rows.split(batch_size):
        z = readout.pooled(latents[chunk].to(device))[:, neurons.to(device)]  # [b, G, D]
        out.append((z * w).cpu())
    return torch.cat(out)


def run_experiment(spec: ExperimentSpec, out_dir: str | Path, *, registry: Registry | None = None,
                   progress: bool = True) -> RunResult:
    """Run the whole experiment described by ``spec``; write the results to ``out_dir``."""
    registry = registry or get_registry()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    device = resolve_device(spec.device)
    timings: dict[str, float] = {}
    stages = tqdm(total=7, desc="run", disable=not progress, unit="stage")

    def stage(name: str) -> None:
        timings[name] = time.perf_counter()
        stages.set_postfix_str(name)

    # 1-2. data, features, readout fit and scores (shared with `sharedattr fit`) -----------------
    stage("fit")
    atomic_write_json(out / "spec.json", {"digest": spec.digest(), "spec": spec.model_dump(mode="json")})
    experiment = fit_experiment(spec, out, registry=registry, device=device, progress=progress)
    stimuli, responses, latents = experiment.stimuli, experiment.responses, experiment.latents
    model, readout = experiment.fit.model, experiment.fit.model.readout
    neuron_ids, predicted, test_r = experiment.fit.neuron_ids, experiment.fit.predicted, experiment.fit.test_r
    stages.update(2)

    # 3. neurons and drivers --------------------------------------------------------------
    stage("select")
    selected = select_neurons(spec, neuron_ids, test_r)
    preferred = preferred_categories(spec, stimuli, responses, selected)
    drive = torch.where(torch.isnan(responses), predicted, responses)  # measured, else predicted
    categories = list(stimuli.categories)
    stages.update()

    # 4. matching -------------------------------------------------------------------------
    stage("match")
    matcher = spec.matcher.build(registry=registry)
    pairs: list[Pair] = []
    for category in sorted(set(preferred)):
        group = [n for n, p in zip(selected, preferred) if p == category]
        cand = torch.tensor([i for i, c in enumerate(categories) if c == category])
        ooc = torch.tensor([i for i, c in enumerate(categories) if c != category])
        k_drivers = min(spec.selection.drivers_per_neuron, len(ooc))
        drivers = ooc[drive[ooc][:, group].topk(k_drivers, dim=0).indices.T]  # [G, Q]
        idx = torch.tensor(group)
        c_drv = contributions(readout, latents, drivers.flatten(), idx, spec.batch_size, device)  # [G*Q, G, D]
        g_, q_ = drivers.shape
        query = c_drv.view(g_, q_, g_, -1)[torch.arange(g_), :, torch.arange(g_)]  # [G, Q, D]: own neuron only
        candidates = contributions(readout, latents, cand, idx, spec.batch_size, device).transpose(0, 1)  # [G, K, D]
        scores, refs = match_references(matcher, query, candidates, spec.selection.references_per_driver)  # [G, Q, k]
        for g, n in enumerate(group):
            for q in range(drivers.shape[1]):
                for rank in range(refs.shape[-1]):
                    pairs.append(Pair(n, int(drivers[g, q]), int(cand[refs[g, q, rank]]),
                                      float(scores[g, q, rank]), rank))
    atomic_write_csv(
        out / "pairs.csv",
        ({"neuron": neuron_ids[p.neuron], "driver": stimuli.ids[p.driver], "driver_category": categories[p.driver],
          "reference": stimuli.ids[p.reference], "rank": p.rank, "similarity": p.similarity,
          "driver_response": float(drive[p.driver, p.neuron])} for p in pairs),
        ["neuron", "driver", "driver_category", "reference", "rank", "similarity", "driver_response"],
    )
    stages.update()

    # 5. attribution ----------------------------------------------------------------------
    stage("attribute")
    targets = torch.tensor([p.neuron for p in pairs])
    size, channels = model.input_size, model.in_channels
    x_drv = stimuli.load_images(size, channels, [p.driver for p in pairs])
    x_ref = stimuli.load_images(size, channels, [p.reference for p in pairs])
    maps: dict[str, Tensor] = {}
    for m_index, method_spec in enumerate(tqdm(spec.methods, desc="methods", disable=not progress, leave=False)):
        label = method_label(spec, m_index)
        method = method_spec.build(model, registry=registry)
        chunks = []
        for i in range(0, len(pairs), spec.batch_size):
            sl = slice(i, i + spec.batch_size)
            xd = x_drv[sl].to(device).requires_grad_(True)
            t = targets[sl].to(device)
            if getattr(method, "pairwise", False):
                result = method.attribute((xd, x_ref[sl].to(device).requires_grad_(True)), target=t)
                attr = result[0] if isinstance(result, (tuple, list)) else result
            else:
                attr = method.attribute(xd, target=t)
            chunks.append(reduce_channels(attr.detach()).cpu())
        maps[label] = torch.cat(chunks) if chunks else torch.empty(0, *size)
    stages.update()

    # 6. metrics --------------------------------------------------------------------------
    stage("score")
    metrics = [(metric_label(spec, i), s.build(registry=registry)) for i, s in enumerate(spec.metrics)]
    drv_masks = stimuli.load_masks(size, [p.driver for p in pairs])
    rows: list[dict[str, Any]] = []
    for label, method_maps in maps.items():
        for m_label, metric in metrics:
            if getattr(metric, "requires_masks", False) and drv_masks is None:
                continue  # no ground truth in this stimulus set
            values = []
            for i in range(0, len(pairs), spec.batch_size):
                sl = slice(i, i + spec.batch_size)
                batch = AttributionBatch(model, x_drv[sl].to(device), method_maps[sl].to(device), targets[sl].to(device),
                                         drv_masks[sl].to(device) if drv_masks is not None else None)
                values.append(metric(batch).detach().cpu())
            values = torch.cat(values)
            undefined = int((~torch.isfinite(values)).sum())
            if undefined:
                warnings.warn(f"metric {m_label} is undefined (NaN) for {undefined} of {len(values)} {label} maps "
                              "(e.g. a deletion/insertion curve of a driver whose clean response is not positive); "
                              "summary.csv averages the finite values and counts them in n", stacklevel=2)
            for p, v in zip(pairs, values.tolist()):
                rows.append({"neuron": neuron_ids[p.neuron], "driver": stimuli.ids[p.driver],
                             "reference": stimuli.ids[p.reference], "similarity": p.similarity, "method": label,
                             "metric": m_label, "value": v, "higher_is_better": bool(metric.higher_is_better)})
    atomic_write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    summary = summarise(rows)
    atomic_write_csv(out / "summary.csv", summary, SUMMARY_COLUMNS)
    if spec.output.save_maps and maps:
        atomic_save_tensors(out / "maps.safetensors", maps,
                            {"pairs": ";".join(f"{neuron_ids[p.neuron]}|{stimuli.ids[p.driver]}|"
                                               f"{stimuli.ids[p.reference]}" for p in pairs)})
    stages.update()

    # 7. synthesis and figures ------------------------------------------------------------
    stage("synthesize")
    if spec.synthesis:
        run_synthesis(spec, model, selected, neuron_ids, drive, out, registry, progress)
    if spec.output.figures:
        from .figures import attribution_grids

        attribution_grids(pairs, x_drv, x_ref, maps, neuron_ids, stimuli.ids, out / "figures", spec.output.dpi)
    stages.update()
    stages.close()
    timings["end"] = time.perf_counter()
    names = list(timings)
    durations = {names[i]: timings[names[i + 1]] - timings[names[i]] for i in range(len(names) - 1)}
    atomic_write_json(out / "timings.json", durations)
    return RunResult(out, neuron_ids, test_r, selected, pairs, rows, summary, durations)


def _labels(specs: list) -> list[str]:
    counts: dict[str, int] = {}
    labels = []
    for s in specs:
        counts[s.name] = counts.get(s.name, 0) + 1
        labels.append(s.name if counts[s.name] == 1 else f"{s.name}#{counts[s.name]}")
    return labels


def method_label(spec: ExperimentSpec, index: int) -> str:
    """The method's name, made unique when the same method is configured twice (``saliency#2``)."""
    return _labels(spec.methods)[index]


def metric_label(spec: ExperimentSpec, index: int) -> str:
    return _labels(spec.metrics)[index]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Method × metric mean ± standard error over the finite values (``n`` counts them)."""
    groups: dict[tuple[str, str], list[float]] = {}
    better: dict[str, bool] = {}
    for r in rows:
        groups.setdefault((r["method"], r["metric"]), [])
        better[r["metric"]] = r["higher_is_better"]
        if math.isfinite(r["value"]):
            groups[(r["method"], r["metric"])].append(r["value"])
    out = []
    for (method, metric), vals in groups.items():
        n = len(vals)
        mean = sum(vals) / n if n else math.nan
        sem = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) / math.sqrt(n)) if n > 1 else math.nan
        out.append({"method": method, "metric": metric, "mean": mean, "sem": sem, "n": n,
                    "higher_is_better": better[metric]})
    return out


def run_synthesis(spec: ExperimentSpec, model: EncodingModel, selected: list[int], neuron_ids: list[str],
                  drive: Tensor, out: Path, registry: Registry, progress: bool) -> list[dict[str, Any]]:
    """Run every configured synthesizer on every selected neuron; write images and ``synthesis/scores.csv``."""
    rows = []
    tensors: dict[str, Tensor] = {}
    labels = _labels(spec.synthesis)
    for label, s_spec in zip(labels, spec.synthesis):
        synth = s_spec.build(registry=registry)
        for n in tqdm(selected, desc=f"synthesis {label}", disable=not progress, leave=False):
            result = synth.synthesize(model, n)
            best_natural = float(drive[:, n].max())
            tensors[f"{label}/{neuron_ids[n]}"] = result.images
            for seed, value in enumerate(result.responses.tolist()):
                rows.append({"neuron": neuron_ids[n], "synthesizer": label, "seed": seed, "response": value,
                             "best_natural": best_natural,
                             "relative": value / best_natural if best_natural > 0 else math.nan, **result.cost})
    cost_cols = sorted({k for r in rows for k in r} - {"neuron", "synthesizer", "seed", "response", "best_natural",
                                                          "relative"})
    atomic_write_csv(out / "synthesis" / "scores.csv", rows,
                     ["neuron", "synthesizer", "seed", "response", "best_natural", "relative", *cost_cols])
    atomic_save_tensors(out / "synthesis" / "images.safetensors", tensors)
    if spec.output.figures:
        from .figures import image_grid

        image_grid(tensors, out / "synthesis" / "images.png", spec.output.dpi)
    return rows


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The summary as an aligned text table (arrows show each metric's better direction)."""
    if not summary:
        return "(no results)"
    header = ["method", "metric", "mean ± sem", "n"]
    lines = [[r["method"], f"{r['metric']} {'↑' if r['higher_is_better'] else '↓'}",
              f"{r['mean']:.4f} ± {r['sem']:.4f}" if math.isfinite(r["sem"]) else f"{r['mean']:.4f}", str(r["n"])]
             for r in summary]
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*l) for l in lines)])
