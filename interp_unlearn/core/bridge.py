"""Boot a transformer_lens ``TransformerBridge`` around an in-memory HF causal LM, offline.

transformer_lens 4.x replaced ``HookedTransformer`` with
``transformer_lens.model_bridge.TransformerBridge``. Its HF entry point,
``TransformerBridge.boot_transformers``, is built for hub names; :func:`to_bridge`
is the one place this package calls it, with every hub access and every side
effect on the caller's objects removed. What it does, and why (measured with
transformer_lens 4.3.0, transformers 5.23, torch 2.13 CPU; see
``notes/bridge_findings.md``):

* **No hub call.** With ``hf_model=`` given, ``boot_transformers`` deep-copies
  ``hf_model.config`` instead of calling ``AutoConfig.from_pretrained`` and picks the
  adapter from ``config.architectures`` / ``config.model_type``, so ``model_name`` is
  only a label (it is recorded as ``bridge.cfg.model_name``; the architecture name is
  not needed). Booting with sockets disabled and a fake hub id as the name succeeds.
* **The tokenizer is the one hub trap.** ``setup_tokenizer`` calls
  ``get_tokenizer_with_bos``, which *re-loads* the tokenizer with
  ``AutoTokenizer.from_pretrained(init_kwargs["name_or_path"], add_bos_token=True)``
  unless ``init_kwargs["add_bos_token"]`` is truthy: an in-memory
  ``PreTrainedTokenizerFast`` crashes (``KeyError: 'name_or_path'``), a hub name means a
  hub call, and a local directory silently yields a *different* tokenizer (it then
  prepends BOS where ours did not: ``[1, 69, 70]`` vs ``[69, 70]``). The same function
  also sets ``padding_side`` / ``pad_token`` on the object it is given. So the bridge
  gets a deep copy whose ``init_kwargs`` say ``add_bos_token=True``: no reload, and the
  copy tokenizes exactly as the caller's tokenizer does (``bridge.cfg.tokenizer_prepends_bos``
  is then detected from real encodings).
* **The HF model is left untouched; the weights are shared.** Booting wraps the model's
  submodules *in place* (``model.layers[i]`` becomes a ``BlockBridge``; parameter names
  become ``model.layers.0._original_component.self_attn._original_component.q_proj
  ._original_component.weight``) and switches the config to eager attention. A wrapped
  model can no longer be ``save_pretrained``-ed (safetensors refuses the aliased
  tensors). By default :func:`to_bridge` therefore boots on a structural copy of the
  module tree made with ``copy.deepcopy`` whose memo maps every parameter and buffer to
  itself: the bridge holds the *same* ``nn.Parameter`` objects (all 39/39 ``data_ptr``
  equal for the 4-layer test model), so in-place updates of the HF weights (optimizer
  steps, ``p.data.copy_``, ``load_state_dict``) are seen by the bridge, gradients of a
  bridge forward land in ``hf_model``'s ``.grad``, and ``hf_model.save_pretrained``
  keeps working. Rebuild the bridge after anything that *replaces* parameter objects
  or modules (``resize_token_embeddings``, PEFT injection, ``load_state_dict(assign=True)``).
* **No weight processing.** ``boot_transformers`` returns raw HF weights; every hook
  name (``blocks.{l}.attn.hook_z`` ...) exists without ``enable_compatibility_mode()``.
  Do not call ``enable_compatibility_mode()`` / ``process_weights()`` on a bridge from
  here: with processing on (the default) they fold the norms into the next linear layers,
  centre the writing weights and install the results as *new* tensors, so the bridge
  stops sharing weights with the HF model (0/39 shared afterwards; with ``in_place=True``
  30/39 of the HF model's own parameters are replaced instead).
* **Numerics.** The bridge re-implements attention itself (eager matmul + softmax, with
  ``hook_z`` = input of ``o_proj`` reshaped to ``[batch, pos, n_heads, d_head]``), so its
  logits equal HF eager exactly (max abs diff 0.0) and HF sdpa to ~2e-7 in fp32, with or
  without a right-padding attention mask, GQA included.

Hooks: use ``bridge.hooks(fwd_hooks=[(name, fn)])`` (removes its hooks on exit, also on
an exception), ``bridge.run_with_cache(..., names_filter=[...])``, ``bridge.add_hook`` /
``bridge.reset_hooks()``. A hook ``fn(activation, hook)`` that returns a tensor replaces
the activation; returning ``None`` keeps it (in-place edits still apply).
``bridge(input_ids, stop_at_layer=k)`` returns the residual stream *entering* block ``k``;
use :func:`run_to_resid_post` to stop right after a block.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "HOOK_EMBED",
    "HOOK_FINAL_NORM",
    "TransformerBridge",
    "active_hook_count",
    "hf_model_of",
    "hook_z_name",
    "model_dims",
    "resid_post_name",
    "resid_pre_name",
    "run_to_resid_post",
    "to_bridge",
]

#: Token embedding output, ``[batch, pos, d_model]`` (equals ``blocks.0.hook_resid_pre``).
HOOK_EMBED = "hook_embed"
#: Output of the final RMSNorm/LayerNorm, ``[batch, pos, d_model]`` (= HF ``hidden_states[-1]``).
HOOK_FINAL_NORM = "ln_final.hook_out"

# Where to_bridge keeps the untouched HF model on the bridge. Written to the instance
# __dict__ so that nn.Module does not register it as a submodule.
_SOURCE_ATTR = "_interp_unlearn_hf_model"

HookFn = Callable[..., Any]


def _n_layers_of(model: nn.Module | TransformerBridge | int) -> int:
    if isinstance(model, bool):
        raise TypeError("expected a model, a bridge or an int number of layers, got a bool")
    if isinstance(model, int):
        if model < 1:
            raise ValueError(f"n_layers must be >= 1, got {model}")
        return model
    return model_dims(model)["n_layers"]


def _check_layer(layer: int, model: nn.Module | TransformerBridge | int) -> int:
    n_layers = _n_layers_of(model)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int in [0, {n_layers - 1}], got {layer!r}")
    if not 0 <= layer < n_layers:
        raise ValueError(
            f"layer {layer} is out of range: the model has {n_layers} layers, "
            f"valid layers are 0..{n_layers - 1} (inclusive)"
        )
    return layer


def hook_z_name(layer: int, model: nn.Module | TransformerBridge | int) -> str:
    """Name of the per-head attention output of ``layer``: ``blocks.{layer}.attn.hook_z``.

    Its activation is ``[batch, pos, n_heads, d_head]`` (query heads, also under GQA):
    the input of ``o_proj`` split into heads.

    Args:
        layer: Block index, ``0 <= layer < n_layers``.
        model: The HF model, the bridge, or the number of layers, to validate ``layer``.

    Raises:
        ValueError: ``layer`` is out of range (the message names the valid range).
        TypeError: ``layer`` is not an int.
    """
    return f"blocks.{_check_layer(layer, model)}.attn.hook_z"


def resid_post_name(layer: int, model: nn.Module | TransformerBridge | int) -> str:
    """Name of the residual stream after block ``layer``: ``blocks.{layer}.hook_resid_post``.

    ``[batch, pos, d_model]``; equals HF ``output_hidden_states`` entry ``layer + 1``
    (except for the last block, where HF reports the final-norm output instead).
    Raises like :func:`hook_z_name`.
    """
    return f"blocks.{_check_layer(layer, model)}.hook_resid_post"


def resid_pre_name(layer: int, model: nn.Module | TransformerBridge | int) -> str:
    """Name of the residual stream entering block ``layer``: ``blocks.{layer}.hook_resid_pre``.

    Raises like :func:`hook_z_name`.
    """
    return f"blocks.{_check_layer(layer, model)}.hook_resid_pre"


def model_dims(model_or_bridge: nn.Module | TransformerBridge) -> dict[str, int]:
    """``dict(n_layers, n_heads, d_head, d_model)`` of an HF causal LM or a bridge.

    ``n_heads`` counts query heads (GQA key/value heads are not counted); ``d_head`` is the
    config's ``head_dim`` when set, which can differ from ``d_model // n_heads`` (Qwen3).
    """
    if isinstance(model_or_bridge, TransformerBridge):
        cfg = model_or_bridge.cfg
        return {
            "n_layers": int(cfg.n_layers),
            "n_heads": int(cfg.n_heads),
            "d_head": int(cfg.d_head),
            "d_model": int(cfg.d_model),
        }
    config = getattr(model_or_bridge, "config", None)
    if config is None:
        raise TypeError(
            f"expected a transformers model or a TransformerBridge, got {type(model_or_bridge).__name__}"
        )
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    n_heads = int(config.num_attention_heads)
    d_model = int(config.hidden_size)
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    return {
        "n_layers": int(config.num_hidden_layers),
        "n_heads": n_heads,
        "d_head": int(d_head),
        "d_model": d_model,
    }


def _offline_tokenizer_copy(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A copy that ``get_tokenizer_with_bos`` keeps as is (no ``from_pretrained`` reload).

    Only the recorded ``init_kwargs`` change, never the tokenization itself.
    """
    tok = copy.deepcopy(tokenizer)
    tok.init_kwargs = dict(tok.init_kwargs)
    tok.init_kwargs["add_bos_token"] = True
    tok.init_kwargs.setdefault("name_or_path", getattr(tokenizer, "name_or_path", "") or "local")
    return tok


def _weight_sharing_clone(model: PreTrainedModel) -> PreTrainedModel:
    """New module objects and config, the very same ``nn.Parameter`` and buffer objects."""
    memo: dict[int, Any] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


def _is_bridge_wrapped(model: nn.Module) -> bool:
    return any(name.endswith("_original_component") for name, _ in model.named_modules())


def to_bridge(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    in_place: bool = False,
) -> TransformerBridge:
    """Boot a ``TransformerBridge`` around ``hf_model`` with no hub access, sharing its weights.

    Args:
        hf_model: A text-only causal LM (e.g. ``LlamaForCausalLM`` built from a config, or a
            checkpoint loaded from a local directory: Llama, Mistral/Zephyr, Qwen2/3).
        tokenizer: Its tokenizer. The bridge gets a copy; ``tokenizer`` is not modified.
        in_place: If False (default), the bridge wraps a weight-sharing structural copy of
            ``hf_model``, which stays a plain, saveable HF model with its own attention
            implementation. If True, ``hf_model`` itself is wrapped (its submodules are
            replaced by bridge components, its parameter names gain ``_original_component``
            segments and ``save_pretrained`` stops working); only for models that
            ``copy.deepcopy`` cannot handle (e.g. accelerate-dispatched ones).

    Returns:
        The bridge, in the same train/eval mode as ``hf_model``, on its device and dtype.
        ``hf_model_of(bridge)`` returns ``hf_model``.

    Raises:
        TypeError: ``hf_model`` is not a ``transformers.PreTrainedModel`` or ``tokenizer``
            is not a ``PreTrainedTokenizerBase``.
        ValueError: ``hf_model`` is multimodal (the bridge would try to load a processor and
            may pip-install torchvision), has no parameters, or is already wrapped in place.
    """
    if not isinstance(hf_model, PreTrainedModel):
        raise TypeError(
            f"hf_model must be a transformers PreTrainedModel, got {type(hf_model).__name__}"
        )
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(
            "tokenizer must be a transformers tokenizer (without one the bridge would call "
            f"AutoTokenizer.from_pretrained), got {type(tokenizer).__name__}"
        )
    config = hf_model.config
    for sub in ("vision_config", "audio_config", "text_config"):
        if getattr(config, sub, None) is not None:
            raise ValueError(
                f"{type(hf_model).__name__} has a {sub}: multimodal models are not supported "
                "by to_bridge (boot_transformers would load a processor from the hub and may "
                "pip-install torchvision)"
            )
    if _is_bridge_wrapped(hf_model):
        raise ValueError(
            "hf_model is already wrapped in place by a TransformerBridge; pass the original "
            "model (hf_model_of(bridge)) or reuse that bridge"
        )
    try:
        first = next(hf_model.parameters())
    except StopIteration:
        raise ValueError("hf_model has no parameters") from None

    target = hf_model if in_place else _weight_sharing_clone(hf_model)
    # Only a label here: with hf_model= the config comes from the model, never the hub.
    model_name = getattr(hf_model, "name_or_path", "") or type(hf_model).__name__
    bridge = TransformerBridge.boot_transformers(
        model_name,
        hf_model=target,
        tokenizer=_offline_tokenizer_copy(tokenizer),
        device=str(first.device),
        dtype=first.dtype,
    )
    bridge.__dict__[_SOURCE_ATTR] = hf_model
    return bridge


def hf_model_of(bridge: TransformerBridge) -> PreTrainedModel:
    """The HF model given to :func:`to_bridge` (unwrapped unless ``in_place=True``).

    Save the bridge's weights with ``hf_model_of(bridge).save_pretrained(path)``.

    Raises:
        ValueError: ``bridge`` was not made by :func:`to_bridge`.
    """
    model = bridge.__dict__.get(_SOURCE_ATTR)
    if model is None:
        raise ValueError("this bridge was not created by interp_unlearn.core.bridge.to_bridge")
    return model


def active_hook_count(bridge: TransformerBridge) -> int:
    """Number of forward/backward hook functions currently attached to the bridge's hook points."""
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in set(bridge.hook_dict.values()))


def run_to_resid_post(
    bridge: TransformerBridge,
    input_ids: Int[Tensor, "batch pos"],
    layer: int,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
) -> Float[Tensor, "batch pos d_model"]:
    """Residual stream after block ``layer``, skipping the blocks above it when possible.

    Equals the ``blocks.{layer}.hook_resid_post`` activation (exactly) and keeps the
    autograd graph. Uses ``stop_at_layer=layer + 1``; for the last block, where
    ``stop_at_layer=n_layers`` would silently return logits, it runs the full forward and
    captures the hook instead. ``fwd_hooks`` are active during the call and removed after.
    """
    n_layers = model_dims(bridge)["n_layers"]
    name = resid_post_name(layer, n_layers)
    with bridge.hooks(fwd_hooks=list(fwd_hooks)):
        if layer + 1 < n_layers:
            return bridge(input_ids, attention_mask=attention_mask, stop_at_layer=layer + 1)
        captured: dict[str, Tensor] = {}

        def grab(resid: Tensor, hook: Any) -> None:
            captured["resid"] = resid

        with bridge.hooks(fwd_hooks=[(name, grab)]):
            bridge(input_ids, attention_mask=attention_mask)
        return captured["resid"]
