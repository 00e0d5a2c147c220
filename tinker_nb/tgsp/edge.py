"""Edge loader and PEFT export: use a package's adapter without a training session.

``open_package`` verifies the package, unseals it with a recipient identity, checks the local base
model against the signed digests, and loads the adapter with peft, returning an ``EdgeModel`` with
``sample()``. ``export_peft`` writes a standard PEFT adapter folder. Imports torch, transformers and
peft, never opacus, and never writes decrypted weights anywhere except the export folder.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, IntegrityError
from .container import fail
from .package import PackageReport, unseal_adapter
from .session import file_sha256, resolve_base_model

if TYPE_CHECKING:
    from peft import LoraConfig

    from ..engine.generation import SampleResult

__all__ = ["EdgeModel", "check_base_model", "export_peft", "open_package"]


@dataclass
class EdgeModel:
    """A base model with a package's adapter loaded, ready to sample (no optimizer, no DP machinery)."""

    model: Any
    tokenizer: Any
    manifest: dict[str, Any]
    report: PackageReport
    device: Any

    def sample(self, prompts: str | Sequence[str], *, max_tokens: int = 32, temperature: float = 0.0,
               top_p: float = 1.0, top_k: int | None = None, stop: str | Sequence[str] | None = None,
               seed: int | None = None, num_samples: int = 1) -> SampleResult:
        """Generate completions exactly like ``TrainingClient.sample`` (temperature 0 = greedy)."""
        from ..engine.generation import generate

        max_pos = int(getattr(self.model.config, "max_position_embeddings", 0) or 10**9)
        return generate(self.model, self.tokenizer, prompts, max_tokens=max_tokens, temperature=temperature,
                        top_p=top_p, top_k=top_k, stop=stop, seed=seed, num_samples=num_samples, device=self.device,
                        max_positions=max_pos, limit_name="the base model's max_position_embeddings")

    def __repr__(self) -> str:
        return (f"EdgeModel(package={self.manifest['package_id']}, base={self.manifest['base_model']['ref']!r}, "
                f"rank={self.manifest['lora_config']['rank']})")


def check_base_model(manifest: dict[str, Any], base_model_path: str | os.PathLike[str] | None = None) -> Path:
    """The local base model folder, after checking its weights and tokenizer against the signed digests."""
    bm = manifest["base_model"]
    folder = Path(base_model_path) if base_model_path is not None else resolve_base_model(bm["ref"])
    if folder is None or not folder.is_dir():
        raise ConfigError(f"base model {bm['ref']!r} is not available locally; give the folder of that model "
                          "(Python: base_model_path=...; CLI: --base-model DIR).")
    for name, want in sorted((bm.get("weights") or {}).items()):
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") \
                or name.startswith("."):
            raise fail(IntegrityError, "manifest.json", f"base model file name {name!r} is not a plain file name.")
        p = folder / name
        if not p.is_file() or file_sha256(p) != want:
            raise fail(IntegrityError, "manifest.json", f"base model file {name} in {folder} is missing or differs "
                                                        "from the one the adapter was trained on.")
    tok = manifest.get("tokenizer_sha256")
    if tok and (not (folder / "tokenizer.json").is_file() or file_sha256(folder / "tokenizer.json") != tok):
        raise fail(IntegrityError, "manifest.json", f"tokenizer.json in {folder} differs from the training tokenizer.")
    return folder


def _peft_config(manifest: dict[str, Any], base: Path | None = None) -> LoraConfig:
    """The adapter's LoraConfig. For an export (``base=None``) ``base_model_name_or_path`` is the signed
    model ref from the manifest (e.g. ``tinker-nb/tiny-llama`` or a hub id), never a local path of the
    machine that opened it; in memory (``open_package``) it is the checked local folder."""
    from peft import LoraConfig

    lc = manifest["lora_config"]
    return LoraConfig(r=int(lc["rank"]), lora_alpha=lc["alpha"], lora_dropout=float(lc.get("dropout", 0.0)),
                      target_modules=list(lc["target_modules"]), bias="none", task_type="CAUSAL_LM",
                      base_model_name_or_path=str(base) if base is not None else str(manifest["base_model"]["ref"]))


def open_package(path: str | os.PathLike[str], *, identity: Any, trust: Any,
                 base_model_path: str | os.PathLike[str] | None = None, device: str | None = None) -> EdgeModel:
    """Verify, unseal with ``identity``, decrypt, and load the adapter onto its (checked) base model."""
    adapter, manifest, report = unseal_adapter(path, identity=identity, trust=trust)
    base = check_base_model(manifest, base_model_path)
    import torch
    from peft import get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load as st_load
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    loaded: Any = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True)
    model = loaded.to(dev)
    with warnings.catch_warnings():
        # peft asks transformers 5 for `is_gradient_checkpointing` (a FutureWarning there); nothing to act on here.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        model = get_peft_model(model, _peft_config(manifest, base))
    tensors = st_load(adapter)
    res = set_peft_model_state_dict(model, tensors)
    unexpected = list(getattr(res, "unexpected_keys", []) or [])
    missing = [k for k in (getattr(res, "missing_keys", []) or []) if "lora_" in k]
    if unexpected or missing:
        raise fail(IntegrityError, "weights.enc", f"the adapter does not fit the LoRA config "
                                                  f"(unexpected {unexpected[:2]}, missing {missing[:2]}).")
    model.eval()
    return EdgeModel(model, tok, manifest, report, dev)


def export_peft(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, identity: Any, trust: Any,
                base_model_path: str | os.PathLike[str] | None = None, overwrite: bool = False) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` for ``peft.PeftModel.from_pretrained``.

    ``adapter_config.json``'s ``base_model_name_or_path`` is the signed model ref of the manifest, never a
    path on this machine.

    Also writes ``tgsp_provenance.json`` (package id, manifest digest, publisher, DP statement). The
    adapter file is created with mode 0600: it is the decrypted model.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise ConfigError(f"{out} exists and is not an empty folder; choose another folder or allow writing into it "
                          "(Python: overwrite=True; CLI: --force).")
    adapter, manifest, report = unseal_adapter(path, identity=identity, trust=trust)
    check_base_model(manifest, base_model_path)  # the adapter is only exported for the base it was trained on
    out.mkdir(parents=True, exist_ok=True)
    _peft_config(manifest).save_pretrained(str(out))
    fd = os.open(out / "adapter_model.safetensors", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(adapter)
    prov = {"package_id": manifest["package_id"], "manifest_sha256": report.manifest_sha256,
            "publisher_key_id": report.publisher_key_id, "base_model": manifest["base_model"]["ref"],
            "adapter_sha256": manifest["adapter"]["sha256"], "dp_statement": report.certificate.get("statement")}
    (out / "tgsp_provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True) + "\n")
    return out
