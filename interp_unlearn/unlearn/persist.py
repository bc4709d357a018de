"""What the trainer writes: the checkpoint, the resolved config, early stops (split out of
:mod:`.trainer`). Under several processes only the main one writes; the others wait at
a barrier so that nobody returns before the run directory is published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interp_unlearn.core.checkpoint import write_checksums, write_meta
from interp_unlearn.core.distributed import barrier
from interp_unlearn.unlearn.config import CONFIG_FILE
from interp_unlearn.unlearn.guards import DivergenceError, unusable_weights
from interp_unlearn.unlearn.lora import merge_lora
from interp_unlearn.unlearn.output import publish
from interp_unlearn.unlearn.sharded import full_state_dict
from interp_unlearn.unlearn.zero import full_state_dict as zero_state_dict

__all__ = ["RunFiles"]


class RunFiles:
    """Mixin of :class:`~.trainer.Trainer`: saving and stopping."""

    def merge_adapters(self) -> None:
        """Merge LoRA adapters into the weights (no-op without LoRA or when done)."""
        if getattr(self, "_lora_targets", None):
            merge_lora(self.model, self._lora_targets)
            self._lora_targets = []

    def save(self, status: str = "completed", extra: dict[str, Any] | None = None,
             steps_completed: int | None = None, weights: bool = True) -> Path:
        """Write the HF checkpoint (current weights; without ``weights`` only the model
        config, so that the directory names its status and nothing loads it) + meta +
        resolved config to out_dir (the main process only)."""
        self.merge_adapters()
        out = self.out_dir
        state = None  # FSDP/ZeRO-3: every process takes part in gathering the full weights
        if weights and getattr(self, "zero", None) is not None:
            state = zero_state_dict(self.model, self.dist)
        elif weights and self.dist.sharded:
            state = full_state_dict(self.model)
        if not self.dist.is_main:
            return out
        out.mkdir(parents=True, exist_ok=True)
        if weights:
            self.model.save_pretrained(out, safe_serialization=True, state_dict=state)
            self.tokenizer.save_pretrained(out)
        else:
            self.model.config.save_pretrained(out)
        meta = dict(self.lm.meta)
        if self.lm.world_dir is not None:
            meta["world_dir"] = str(self.lm.world_dir)
        meta["unlearn"] = {"method": self.config.method, "preset": self.config.preset,
                           "source_model": str(self.lm.path or self.lm.name),
                           "steps_completed": self.step if steps_completed is None
                           else steps_completed,
                           "status": status, "heads": self.heads, **(extra or {})}
        write_meta(out, meta)
        write_checksums(out)
        self._write_config()
        return out

    def _config_record(self) -> dict[str, Any]:
        return {**self.config.to_dict(), "model": str(self.lm.path or self.lm.name),
                "heads": self.heads}

    def _write_config(self) -> None:
        if not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / CONFIG_FILE).write_text(json.dumps(self._config_record(), indent=1))

    def _publish(self) -> Path:
        if self.dist.is_main:
            self.out_dir = publish(self.out_dir, self.final_dir)
        else:
            self.out_dir = self.final_dir
        barrier(self.dist)
        return self.out_dir

    def _unusable(self, before: dict[str, float | None]) -> str | None:
        """Why the current weights are not good enough to keep at an early stop."""
        return unusable_weights(self.model, self.tokenizer, self.evaluate, before, self.dist)

    def _stop(self, fh: Any, status: str, extra: dict[str, Any], record: dict[str, Any],
              steps_completed: int | None = None, keep_weights: bool = False) -> Path:
        """An early stop: save the run's record with ``status`` (the weights only when
        ``keep_weights``), log ``record``, publish the run directory; returns it."""
        self.save(status=status, extra={"stopped_at_step": self.step, **extra},
                  steps_completed=steps_completed, weights=keep_weights)
        self._log({"step": self.step, **record})
        fh.close()
        return self._publish()

    def _stop_diverged(self, fh: Any, reason: str) -> None:
        """Save the run's record (not the diverged weights) with status ``diverged``,
        publish, raise."""
        ckpt = self._stop(fh, "diverged", {"reason": reason, "weights": "none kept: diverged"},
                          {"error": "diverged", "reason": reason})
        raise DivergenceError(self.config.method, self.step, reason, ckpt)

    def _diagnostics(self, final: bool = False) -> dict[str, Any]:
        """``{"diagnostics": method.diagnostics()}`` (empty for methods without any); at
        intermediate evaluations only when evaluation is on, at the end always."""
        if not (final or self.config.evaluate):
            return {}
        diag = self.method.diagnostics()
        return {"diagnostics": diag} if diag else {}

    def _restore_requires_grad(self) -> None:
        for n, p in self.model.named_parameters():
            p.requires_grad_(self._requires_grad.get(n, True))
