"""Private, hook-safe copies of models for Captum's module-hook methods, and Grad-CAM layers.

Captum's GuidedBackprop, Deconvolution, DeepLift and GuidedGradCam attach hooks to
``nn.ReLU`` (DeepLift: every nonlinearity it supports) *modules*, and store per-module
state between the forward and backward pass. torchvision networks break both assumptions:
ResNet's ``BasicBlock`` calls one ``nn.ReLU(inplace=True)`` twice (a DeepLift error, and
hooks that see two calls as one), and in-place activations overwrite the tensors the
hooks read. :func:`hook_safe_copy` returns a private deep copy in which

- every module with an ``inplace`` flag computes out of place;
- functional ReLUs of FX graphs (``F.relu``, ``torch.relu``, ``x.relu()``) become
  ``nn.ReLU`` module calls (see :func:`modularise_relus`);
- every call site has its own module instance: ``call_module`` nodes of FX graphs
  (torchvision feature extractors) that share a module get a fresh copy each, and any
  other module called more than once per forward (found by a probe forward) is replaced
  by a :class:`CallSiteRouter` that sends the k-th call to the k-th copy;
- copies share parameters and buffers with the original (no extra weight memory).

The user's model is never modified. Outside FX graphs, functional activations
(``F.relu``, ``torch.relu``, ``x.relu()``) stay invisible to module hooks: the methods
that override ReLU gradients backpropagate through them with their plain gradient, as
Captum itself does, and DeepLift's rescale rule does not reach them.

:func:`resolve_layer` finds a Grad-CAM layer by name, including container modules of
FX graphs (e.g. torchvision's ``layer1``), which never run as modules: a hook on them
never fires, so an ``nn.Identity`` tap is inserted after the graph's last node of that
module (torchvision's naming rule: a node belongs to ``layer`` if its qualified name is
``layer`` or starts with ``layer + "."``).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from sharedattr.runtime.errors import UserError, closest

SPLIT_MARK = "__call"
TAP_NAME = "sharedattr_tap"
MAX_SPLIT_ROUNDS = 8


# -- copies ------------------------------------------------------------------------------
def example_input(model: nn.Module) -> Tensor:
    """A fixed random image batch ``[1, C, H, W]`` in [0, 1] for an encoding model, on its device."""
    try:
        shape = (1, int(model.in_channels), *model.input_size)
    except AttributeError:
        raise TypeError("an encoding model with in_channels and input_size is needed to probe the network") from None
    generator = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=generator).to(_device_of(model))


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every module's train/eval mode restored.

    ``copy.deepcopy`` of a torchvision feature extractor re-runs its constructor, which
    switches it (and its BatchNorms) to training mode.
    """
    modes = {name: module.training for name, module in model.named_modules()}
    clone = copy.deepcopy(model)
    for name, module in clone.named_modules():  # parents first: a child's own mode wins
        if name in modes and module.training != modes[name]:
            module.train(modes[name])
    return clone


def twin(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its own hooks and state, sharing its parameters and buffers."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


def hook_safe_copy(model: nn.Module, example: Tensor | None = None) -> nn.Module:
    """A private copy of ``model`` with out-of-place activations and one module per call site.

    ``example``: an input to probe the forward pass with (default :func:`example_input`); the
    probes run on the copy only. Raises ``RuntimeError`` if the edited copy does not compute
    the model's outputs on ``example``.
    """
    example = example_input(model) if example is None else example
    safe = private_copy(model)
    with torch.no_grad():
        reference = safe(example)
    disable_inplace(safe)
    for graph_module in [m for m in safe.modules() if isinstance(m, fx.GraphModule)]:
        modularise_relus(graph_module)
        split_graph_calls(graph_module)
    split_shared_modules(safe, example)
    with torch.no_grad():
        result = safe(example)
    try:
        torch.testing.assert_close(result, reference, rtol=1e-4, atol=1e-5)
    except AssertionError as err:
        raise RuntimeError(
            f"the hook-safe copy of {type(model).__name__} computes different outputs; its forward may rely on "
            f"an in-place activation ({' '.join(str(err).split())[:300]})"
        ) from None
    return safe


def disable_inplace(model: nn.Module) -> None:
    """Make every module with an ``inplace`` flag (ReLU, ELU, LeakyReLU, Hardtanh, Dropout, …) out of place."""
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False


# -- FX graphs: one module per call_module node ------------------------------------------------
def split_graph_calls(graph_module: fx.GraphModule) -> int:
    """Give each ``call_module`` node of the graph its own module; returns how many copies were added.

    Every call of module ``a.b`` after its first is retargeted to a new twin ``a.b__call<k>``.
    """
    seen: set[str] = set()
    added = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_module":
            continue
        if node.target not in seen:
            seen.add(node.target)
            continue
        added += 1
        name = f"{node.target}{SPLIT_MARK}{added}"
        graph_module.add_submodule(name, twin(graph_module.get_submodule(node.target)))
        node.target = name
    if added:
        _recompile(graph_module)
    return added


def modularise_relus(graph_module: fx.GraphModule) -> int:
    """Turn functional ReLU nodes into calls of fresh ``nn.ReLU`` modules, so module hooks see them.

    Covers ``F.relu``, ``torch.relu``, ``torch.relu_``, ``x.relu()`` and ``x.relu_()``; an
    in-place one is left alone where its input has other users (they see the mutation).
    Node names are kept. Returns how many nodes were turned into modules.
    """
    added = 0
    for node in graph_module.graph.nodes:
        if not _is_functional_relu(node):
            continue
        source = node.args[0]
        if _relu_in_place(node) and len(source.users) > 1:
            continue
        name = _free_name(graph_module, "sharedattr_relu")
        graph_module.add_submodule(name, nn.ReLU())
        node.op, node.target = "call_module", name
        node.args, node.kwargs = (source,), {}
        added += 1
    if added:
        _recompile(graph_module)
    return added


def _is_functional_relu(node: fx.Node) -> bool:
    functional = node.op == "call_function" and node.target in (F.relu, torch.relu, torch.relu_)
    method = node.op == "call_method" and node.target in ("relu", "relu_")
    return (functional or method) and bool(node.args) and isinstance(node.args[0], fx.Node)


def _relu_in_place(node: fx.Node) -> bool:
    flag = node.kwargs.get("inplace", node.args[1] if len(node.args) > 1 else False)
    return node.target in (torch.relu_, "relu_") or bool(flag)


def _recompile(graph_module: fx.GraphModule) -> None:
    """Regenerate the code, and pin a torchvision DualGraphModule to the edited graph in both modes."""
    graph_module.recompile()
    for attr in ("train_graph", "eval_graph"):
        if hasattr(graph_module, attr):
            setattr(graph_module, attr, graph_module.graph)


# -- any module: route repeated calls to copies -------------------------------------------------
class CallSiteRouter(nn.Module):
    """Stands in for a module called ``n`` times per forward: call ``k`` goes to ``copies[k mod n]``.

    The count restarts at every forward of the model that owns the router (see
    :func:`split_shared_modules`). It assumes the calls happen in the same order in every
    forward (static control flow); extra calls cycle through the copies again.
    """

    def __init__(self, module: nn.Module, calls: int) -> None:
        super().__init__()
        self.copies = nn.ModuleList([module, *(twin(module) for _ in range(calls - 1))])
        self.count = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        module = self.copies[self.count % len(self.copies)]
        self.count += 1
        return module(*args, **kwargs)


def split_shared_modules(model: nn.Module, example: Tensor) -> None:
    """Replace every module that one forward of ``model`` on ``example`` calls more than once by a router.

    Outermost shared modules are routed first; a probe forward is repeated until no module is
    shared (a module called twice inside a shared block is found in the next round).
    """
    reset = None
    for _ in range(MAX_SPLIT_ROUNDS):
        shared = {module: n for module, n in calls_per_module(model, example).items() if n > 1}
        if not shared:
            return
        inner = {id(d) for module in shared for d in module.modules() if d is not module}
        for module, n in shared.items():
            if id(module) not in inner:
                _replace(model, module, CallSiteRouter(module, n))
        if reset is None:
            reset = model.register_forward_pre_hook(_reset_routers)
    raise RuntimeError(
        f"modules of {type(model).__name__} are still shared after {MAX_SPLIT_ROUNDS} rounds of splitting"
    )


def calls_per_module(model: nn.Module, example: Tensor) -> dict[nn.Module, int]:
    """How often one forward of ``model`` on ``example`` calls each submodule (routers excluded)."""
    counts: dict[nn.Module, int] = {}

    def count(module: nn.Module, _inputs: object) -> None:
        counts[module] = counts.get(module, 0) + 1

    handles = [
        m.register_forward_pre_hook(count)
        for m in model.modules()
        if m is not model and not isinstance(m, CallSiteRouter)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return counts


def _reset_routers(model: nn.Module, _inputs: object) -> None:
    for module in model.modules():
        if isinstance(module, CallSiteRouter):
            module.count = 0


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``old`` is registered as a child in ``model``."""
    for parent in list(model.modules()):
        if parent is new:
            continue
        for name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, name, new)


# -- Grad-CAM layers ----------------------------------------------------------------------------
def resolve_layer(model: nn.Module, layer: str | None) -> nn.Module:
    """The module of ``model`` (an encoding model) whose output Grad-CAM uses.

    ``None``: the backbone (its output, the latents). Otherwise a dotted path inside the
    backbone, with or without a leading ``body.`` (``"layer1"`` or ``"body.layer1"``). A
    path inside an FX graph gets an ``nn.Identity`` tap inserted after the graph's last
    node of that module or node, so call it on a private copy. Raises :class:`UserError`
    naming the available modules if nothing matches.
    """
    backbone = model.backbone
    if layer is None:
        return backbone
    path = layer.removeprefix("backbone.")
    candidates = [path, f"body.{path}"] if isinstance(getattr(backbone, "body", None), nn.Module) else [path]
    for candidate in candidates:
        module = _find(backbone, candidate)
        if module is not None:
            return module
    raise UserError(_unknown_layer_message(backbone, layer))


def _find(root: nn.Module, path: str) -> nn.Module | None:
    """The module at ``path`` under ``root``, a tap into the FX graph holding it, or None."""
    graphs = [(name, m) for name, m in root.named_modules() if isinstance(m, fx.GraphModule) and name != path]
    inside = [(name, m) for name, m in graphs if name == "" or path.startswith(name + ".")]
    if inside:
        name, graph_module = max(inside, key=lambda item: len(item[0]))
        return tap_graph(graph_module, path[len(name) + 1 :] if name else path, root)
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def tap_graph(graph_module: fx.GraphModule, path: str, owner: nn.Module | None = None) -> nn.Module | None:
    """Insert an ``nn.Identity`` after the last node of module or node ``path`` in the graph; None if absent.

    ``owner``: the backbone holding ``graph_module``, used to recover torchvision's
    qualified node names (see :func:`node_scopes`).
    """
    scopes = node_scopes(graph_module, owner)
    owned = [n for n in graph_module.graph.nodes if _within(scopes.get(n.name), path)]
    if not owned:
        return None
    last = owned[-1]
    tap = nn.Identity()
    name = _free_name(graph_module, TAP_NAME)
    graph_module.add_submodule(name, tap)
    with graph_module.graph.inserting_after(last):
        tapped = graph_module.graph.call_module(name, (last,))
    last.replace_all_uses_with(tapped, delete_user_cb=lambda user: user is not tapped)
    _recompile(graph_module)
    return tap


def node_scopes(graph_module: fx.GraphModule, owner: nn.Module | None = None) -> dict[str, str]:
    """Node name → qualified name (module path, plus the op for functional nodes, e.g. ``layer1.0.add``).

    Exact where the backbone ``owner`` can name the nodes of its ``body`` graph: it has
    ``qualified_node_names() -> {node name: qualified name} | None`` (the torchvision backbone
    re-traces its architecture on the meta device); otherwise only ``call_module`` and
    ``get_attr`` nodes are named, by their module path.
    """
    nodes = list(graph_module.graph.nodes)
    structural = {n.name: str(n.target) for n in nodes if n.op in ("call_module", "get_attr")}
    name_nodes = getattr(owner, "qualified_node_names", None)
    if not callable(name_nodes) or getattr(owner, "body", None) is not graph_module:
        return structural
    traced = name_nodes()
    names = [n.name for n in nodes if n.op not in ("output", "get_attr")]
    if traced is None or not all(name in traced for name in names):
        return structural
    return {**structural, **{name: traced[name] for name in names}}


def _within(qualname: str | None, path: str) -> bool:
    return qualname is not None and (qualname == path or qualname.startswith(path + "."))


def _free_name(module: nn.Module, stem: str) -> str:
    names = (f"{stem}{i}" if i else stem for i in itertools.count())
    return next(name for name in names if not hasattr(module, name))


def _unknown_layer_message(backbone: nn.Module, layer: str) -> str:
    root = backbone.body if isinstance(getattr(backbone, "body", None), nn.Module) else backbone
    modules = [name for name in _public_module_names(root) if name]
    nodes = []
    if isinstance(root, fx.GraphModule):
        nodes = list(node_scopes(root, backbone).values())
    hint = closest(layer.removeprefix("backbone.").removeprefix("body."), modules + nodes)
    shown = ", ".join(m for m in modules if m.count(".") < 2)
    return (
        f"layer {layer!r} is not a module or graph node of the {type(backbone).__name__} "
        "(modules past the backbone's cut layer are not part of it)"
        + (f"; did you mean {hint!r}?" if hint else ".")
        + f" Modules: {shown[:600]}"
    )


def _public_module_names(root: nn.Module) -> Iterator[str]:
    for name, _ in root.named_modules():
        if SPLIT_MARK not in name and TAP_NAME not in name and ".copies." not in f".{name}.":
            yield name


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
