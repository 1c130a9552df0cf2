"""The experiment spec tree: what a user writes in a config file.

An :class:`ExperimentSpec` ties the components (each a
:class:`~sharedattr.plugins.specs.ComponentSpec`, ``{name: ..., **params}``) together with the
data, the neuron selection, the attribution settings and the outputs. Its fixed parts are
pydantic models that refuse unknown keys; the components' params are validated against the
registry by :func:`sharedattr.config.validation.validate_experiment`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from sharedattr.plugins.params import InputPath, OutputPath, Seed
from sharedattr.plugins.specs import (
    BackboneSpec,
    ComponentSpec,
    MatcherSpec,
    MethodSpec,
    MetricSpec,
    ReadoutSpec,
    SynthesizerSpec,
)

BATCH_MAX = 2**31 - 1


class Strict(BaseModel):
    """Base of the fixed parts of a spec: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class DataSpec(Strict):
    """Stimuli and recorded responses."""

    stimuli: InputPath = Field(
        description="CSV manifest (columns stimulus_id, path, category, optional mask and mask:<part>), a BrainIO "
        "stimulus set CSV (stimulus_id, filename and metadata columns), or a folder with one sub-folder of images per "
        "category."
    )
    images: InputPath | None = Field(
        None,
        description="For a CSV stimulus set: where its image and mask paths lie, a folder or a ZIP archive (read "
        "without extracting; BrainIO ships its images zipped). Default: the CSV's folder.",
    )
    category_column: str = Field(
        "category",
        min_length=1,
        description="For a CSV stimulus set: the column holding each stimulus's category (e.g. BrainIO's "
        "object_name or category_name).",
    )
    responses: InputPath = Field(
        description="Responses: a CSV (column stimulus_id, one column per neuron, one row per trial), an NPY "
        "array [S, N] or [S, R, N] with response_ids, or a BrainIO-style NetCDF assembly (.nc)."
    )
    response_ids: InputPath | None = Field(
        None, description="For .npy responses: a text file of the S stimulus ids, one per line (required there)."
    )
    neuron_ids: InputPath | None = Field(
        None, description="For .npy responses: a text file of the N neuron ids (default: 0 .. N-1)."
    )
    preferred_category: str | None = Field(
        None,
        description="The neurons' preferred category (e.g. 'bodies'). Default: per neuron, "
        "the category with the highest mean response.",
    )
    categories: list[str] | None = Field(
        None, description="The allowed categories; a stimulus of any other category is an error (default: any)."
    )
    neuron_parts: InputPath | None = Field(
        None,
        description="JSON mapping neuron ids to the annotated parts (manifest mask:<part> columns) that drive "
        "them, as a list or {part: weight}. Localisation is then scored against the parts each driver/reference "
        "pair shares, instead of the mask column.",
    )
    time_window: tuple[float, float] | None = Field(
        None,
        description="[start_ms, end_ms] after stimulus onset: for time-binned responses (a NetCDF time_bin dim, PSTH "
        "arrays) the mean over the bins lying wholly inside it; for NWB spike times the counting window (spikes/s). "
        "Required when there is more than one bin, and for NWB.",
    )
    time_bins: InputPath | None = Field(
        None,
        description="For .npy PSTH arrays [S, R, T, N]: a text file with one line per time bin, its start in ms or "
        "its start and end ('70 80').",
    )
    nwb_table: str | None = Field(
        None,
        min_length=1,
        description="For .nwb responses: the intervals table of stimulus presentations (default: the trials table "
        "if it has a stimulus_id column, else the one intervals table that has one).",
    )
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Fraction of stimuli held out for scoring.")
    split_seed: Seed = Field(0, description="Seed of the train/test split.")

    @model_validator(mode="after")
    def _ids_go_with_npy(self) -> DataSpec:
        is_npy = self.responses.suffix.lower() == ".npy"
        if is_npy and self.response_ids is None:
            raise ValueError("responses is a .npy array: give response_ids, a text file of its stimulus ids")
        if not is_npy and (self.response_ids is not None or self.neuron_ids is not None or self.time_bins is not None):
            raise ValueError(
                "response_ids, neuron_ids and time_bins go with .npy responses only (the other formats name their "
                "ids and bins)"
            )
        if self.nwb_table is not None and self.responses.suffix.lower() != ".nwb":
            raise ValueError("nwb_table goes with .nwb responses only")
        return self

    @field_validator("time_window")
    @classmethod
    def _window_in_order(cls, window: tuple[float, float] | None) -> tuple[float, float] | None:
        if window is not None and not window[1] > window[0]:
            raise ValueError(f"the window must end after it starts (got [{window[0]:g}, {window[1]:g}])")
        return window


class SelectionSpec(Strict):
    """Which neurons to explain, and which of their out-of-category drivers."""

    neurons: list[str] | None = Field(None, min_length=1, description="Explicit neuron ids (response column names).")
    top_k: int | None = Field(None, ge=1, description="The k neurons best predicted on held-out images.")
    min_r: float | None = Field(None, ge=-1.0, le=1.0, description="All neurons with held-out Pearson r ≥ min_r.")
    drivers_per_neuron: int = Field(2, ge=1, description="Out-of-category images with the highest response.")
    references_per_driver: int = Field(1, ge=1, description="Preferred-category references per driver (top-k).")
    match_on: Literal["dimensions", "channels"] = Field(
        "dimensions",
        description="What the matcher compares: each neuron's contribution vectors over the readout's dimensions, or "
        "summed within each latent channel (position-tolerant: where a channel is active does not matter).",
    )

    @field_validator("neurons")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        repeated = sorted({n for n in value or [] if value.count(n) > 1})
        if repeated:
            raise ValueError(f"each neuron once: {', '.join(map(repr, repeated))} appear more than once")
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> SelectionSpec:
        if self.neurons is not None and (self.top_k is not None or self.min_r is not None):
            raise ValueError("give either explicit 'neurons' or a 'top_k'/'min_r' rule, not both")
        if self.neurons is None and self.top_k is None and self.min_r is None:
            self.top_k = 5
        return self


class AttributionSpec(Strict):
    """How every method's maps are made comparable."""

    on_reference: bool = Field(
        True,
        description="Also run single-image methods on each driver's reference (same neuron), so both "
        "images of a pair are scored for every method; pairwise methods always explain both.",
    )
    reduce: Literal["sum", "abs_sum"] = Field(
        "sum", description="Channel reduction of every map [C, H, W] → [H, W] before scoring: signed sum or abs-sum."
    )
    memory_mb: int = Field(
        2048,
        ge=16,
        le=1 << 20,
        description="Memory budget of one attribution pass, in MiB: path methods (integrated gradients, the ig path "
        "of parallel_backprop, SmoothGrad and noise tunnels, GradientShap, occlusion) run their steps, copies and "
        "draws in chunks of as many images as fit, so memory does not grow with their counts.",
    )


class OutputSpec(Strict):
    """What a run writes besides its result tables."""

    save_maps: bool = Field(True, description="Write every attribution map (safetensors).")
    figures: bool = Field(True, description="Write matplotlib PNG figures.")
    dpi: int = Field(120, ge=30, le=600, description="Figure resolution.")


class EvaluatorSpec(Strict):
    """A model that scores synthesised images besides the one they were optimised on (the EGG protocol).

    ``val``: the same architecture (backbone and readout kinds) fitted with other seeds (data
    split, readout seed, a trainable core's seed); ``cross``: another backbone or readout; ``floor``: a
    random-feature model (another backbone with random weights, e.g. ``insilico_cnn`` or ``torchvision``
    with ``weights = null``), the level an image reaches on a model that shares nothing learnt. Every
    evaluator is fitted to the experiment's responses; unset fields default to the experiment's.
    """

    label: str = Field(description="A name for this model in scores.csv, e.g. 'val-split1' or 'cross-block4'.")
    role: Literal["val", "cross", "floor"] = Field(
        description="'val': same architecture, other seeds; 'cross': a different backbone or readout; 'floor': a "
        "random-feature backbone (weights = null), the floor of transfer."
    )
    backbone: BackboneSpec | None = Field(None, description="The evaluator's backbone (default: the experiment's).")
    readout: ReadoutSpec | None = Field(None, description="The evaluator's readout (default: the experiment's).")
    split_seed: Seed | None = Field(
        None, description="Seed of the evaluator's train/test split (default: the experiment's data.split_seed)."
    )

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value) or value == "train":
            raise ValueError(
                "use letters, digits, '_', '.' and '-' (a folder name), and not 'train' "
                "(the model the images were optimised on)"
            )
        return value


class ExperimentSpec(Strict):
    """A whole experiment: data → backbone + readout → selection → matching → attribution → metrics."""

    name: str = Field("experiment", description="A label for the run.")
    seed: Seed = Field(0, description="Global random seed.")
    device: str = Field("auto", description="'cpu', 'cuda', 'cuda:N', 'mps', or 'auto' (CUDA when available).")
    batch_size: int = Field(32, ge=1, le=BATCH_MAX, description="Images per forward/backward batch.")
    cache: bool = Field(True, description="Cache backbone features on disk, keyed by backbone spec and image content.")
    cache_dir: OutputPath | None = Field(
        None, description="Feature cache folder (default: $SHAREDATTR_CACHE, else ~/.cache/sharedattr)."
    )
    model: InputPath | None = Field(
        None,
        description="A model saved by `sharedattr fit` for `run` and `synthesize` to reuse instead of fitting one: the "
        "fit's --out folder or its model folder (as the --model option). It must have been fitted on this config's "
        "data, backbone, readout and seed; the run only reads it.",
    )
    data: DataSpec
    backbone: BackboneSpec
    readout: ReadoutSpec = Field(default_factory=lambda: ReadoutSpec(name="ridge"))
    matcher: MatcherSpec = Field(default_factory=lambda: MatcherSpec(name="cosine"))
    methods: list[MethodSpec] = Field(
        default_factory=lambda: [MethodSpec(name="saliency")], description="Attribution methods to compare."
    )
    metrics: list[MetricSpec] = Field(
        default_factory=lambda: [MetricSpec(name="gini")], description="Metrics scored on every map."
    )
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    attribution: AttributionSpec = Field(default_factory=AttributionSpec)
    synthesis: list[SynthesizerSpec] = Field(
        default_factory=list, description="Stimulus synthesizers run on every selected neuron."
    )
    evaluators: list[EvaluatorSpec] = Field(
        default_factory=list,
        description="Other models that score the synthesised images (val: other seeds; "
        "cross: another backbone or readout; floor: random features).",
    )
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="after")
    def _evaluators(self) -> ExperimentSpec:
        labels = [e.label for e in self.evaluators]
        if len(set(labels)) != len(labels):
            raise ValueError(f"evaluators: labels must be unique, got {labels}")
        for i, e in enumerate(self.evaluators):
            backbone, readout = e.backbone or self.backbone, e.readout or self.readout
            split = e.split_seed if e.split_seed is not None else self.data.split_seed
            same_kinds = backbone.name == self.backbone.name and readout.name == self.readout.name
            if e.role == "val" and not same_kinds:
                raise ValueError(
                    f"evaluators[{i}] ({e.label}): a 'val' evaluator keeps the experiment's backbone "
                    f"({self.backbone.name}) and readout ({self.readout.name}) kinds and changes seeds; "
                    "use role = 'cross' for another architecture"
                )
            if (
                e.role == "val"
                and backbone == self.backbone
                and readout == self.readout
                and split == self.data.split_seed
            ):
                raise ValueError(
                    f"evaluators[{i}] ({e.label}): this is the training model itself; give another "
                    "split_seed, a readout seed or a trainable core's seed"
                )
            if e.role == "cross" and same_kinds and backbone == self.backbone:
                raise ValueError(
                    f"evaluators[{i}] ({e.label}): a 'cross' evaluator needs another backbone (or "
                    "layer) or another readout kind"
                )
            if e.role == "floor" and (e.backbone is None or backbone == self.backbone):
                raise ValueError(
                    f"evaluators[{i}] ({e.label}): a 'floor' evaluator needs a backbone of its own with random "
                    'features, e.g. backbone = {name = "insilico_cnn", weights = null}'
                )
        return self

    @model_serializer(mode="wrap")
    def _without_unset_model(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The dump leaves ``model`` out when it is None: a spec that reuses no model dumps (``spec.json``) and digests
        as before the field existed."""
        dumped = handler(self)
        if self.model is None:
            dumped.pop("model", None)
        return dumped

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError("use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return value

    def component_specs(self) -> list[tuple[str, ComponentSpec]]:
        """Every component spec with its field path, e.g. ``("methods[1]", MethodSpec(...))``."""
        return _component_specs(self)

    def digest(self) -> str:
        """A short content hash of the spec: the identity of a run and its cached artefacts."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _component_specs(model: BaseModel, prefix: str = "") -> list[tuple[str, ComponentSpec]]:
    """Component specs in ``model``'s fields, recursing into nested fixed models and lists of them."""
    out: list[tuple[str, ComponentSpec]] = []
    for field_name in type(model).model_fields:
        loc = f"{prefix}.{field_name}" if prefix else field_name
        value = getattr(model, field_name)
        items = [(f"{loc}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [(loc, value)]
        for item_loc, item in items:
            if isinstance(item, ComponentSpec):
                out.append((item_loc, item))
            elif isinstance(item, Strict):
                out.extend(_component_specs(item, item_loc))
    return out
