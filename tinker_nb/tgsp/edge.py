"""Edge loader and PEFT export: open a verified package and use its adapter without a training session.

Imports torch, transformers and peft (never opacus). ``open_package`` returns an ``EdgeModel`` with
``sample()``; ``export_peft`` writes a standard PEFT adapter folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from .package import VerifyReport, decrypt_weights

__all__ = ["EdgeModel", "open_package", "export_peft"]


@dataclass
class EdgeModel:
    model: Any
    tokenizer: Any
    manifest: dict
    report: VerifyReport
    device: Any

    def sample(self, prompts, *, max_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0,
               top_k: int | None = None, stop=None, seed: int | None = None, num_samples: int = 1):
        from ..engine.generation import generate

        max_pos = int(getattr(self.model.config, "max_position_embeddings", 10**9))
        return generate(self.model, self.tokenizer, prompts, max_tokens=max_tokens, temperature=temperature,
                        top_p=top_p, top_k=top_k, stop=stop, seed=seed, num_samples=num_samples, device=self.device,
                        max_positions=max_pos)


def _base(manifest: dict, base_model_path: str | None):
    from ..engine.assets import resolve_model_ref
    from .session import model_digests

    path = base_model_path or resolve_model_ref(manifest["base_model"]["ref"])
    want = manifest["base_model"].get("sha256")
    if want and Path(path).is_dir():
        have, _ = model_digests(path)
        if have["sha256"] != want:
            raise IntegrityError("the base model's weights differ from the ones the package was trained on "
                                 "(base_model.sha256 mismatch).")
    return path


def open_package(path: str | os.PathLike, *, identity: Any, trust: list, base_model_path: str | None = None,
                 device: str | None = None) -> EdgeModel:
    """Verify, unseal with ``identity``, decrypt, and load the adapter onto its base model."""
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load as st_load
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, manifest, report = decrypt_weights(path, identity=identity, trust=trust)
    base = _base(manifest, base_model_path)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok = AutoTokenizer.from_pretrained(base, local_files_only=Path(base).is_dir())
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=Path(base).is_dir()).to(dev)
    lc = manifest["lora_config"]
    model = get_peft_model(model, LoraConfig(r=lc["rank"], lora_alpha=lc["alpha"], lora_dropout=lc["dropout"],
                                             target_modules=list(lc["target_modules"]), bias="none",
                                             task_type="CAUSAL_LM"))
    res = set_peft_model_state_dict(model, st_load(adapter))
    if getattr(res, "unexpected_keys", None):
        raise IntegrityError(f"adapter has unexpected tensors: {res.unexpected_keys[:3]}")
    model.eval()
    return EdgeModel(model, tok, manifest, report, dev)


def export_peft(path: str | os.PathLike, out_dir: str | os.PathLike, *, identity: Any, trust: list,
                base_model_path: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` for ``peft.PeftModel.from_pretrained``."""
    from peft import LoraConfig

    adapter, manifest, _ = decrypt_weights(path, identity=identity, trust=trust)
    base = _base(manifest, base_model_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lc = manifest["lora_config"]
    cfg = LoraConfig(r=lc["rank"], lora_alpha=lc["alpha"], lora_dropout=lc["dropout"],
                     target_modules=list(lc["target_modules"]), bias="none", task_type="CAUSAL_LM",
                     base_model_name_or_path=str(base))
    cfg.save_pretrained(str(out))
    (out / "adapter_model.safetensors").write_bytes(adapter)
    (out / "tgsp_provenance.json").write_text(json.dumps({"package_id": manifest["package_id"],
                                                          "publisher": manifest["publisher"]}, indent=1))
    return out
