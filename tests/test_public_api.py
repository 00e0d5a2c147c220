"""The public surface is pinned (as httpx does): ``tinker_nb.__all__``, each subpackage's ``__all__`` and, for
the packages whose ``__init__`` is empty (``security``, ``engine``), each public module's ``__all__``.

Adding, removing or renaming a public name fails here on purpose: update the list in the same change,
and say so in the changelog / docs.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PUBLIC: dict[str, list[str] | None] = {
    "tinker_nb": [
        "BudgetExceededError", "ConfigError", "DPConfig", "DataError", "IntegrityError", "KeyAccessError",
        "LoRAConfig", "PackageError", "ServiceClient", "SignatureError", "StateError", "TinkerError",
        "TrainingClient", "TrainingConfig", "TrustError", "Workspace", "__version__",
    ],
    "tinker_nb.ledger": [
        "AuditLedger", "Entry", "SIGNED_AFTER", "SignedCheckpoint", "VerifyReport", "checkpoint_message",
        "load_checkpoint_file", "verify_consistency", "verify_inclusion",
    ],
    "tinker_nb.tgsp": [
        "EdgeModel", "PackageReport", "build_package", "export_peft", "inspect_package", "load_trust",
        "open_package", "package_checkpoint", "unseal_adapter", "verify_package",
    ],
    "tinker_nb.privacy": [
        "CALLER_POOL", "Composition", "PrivacyAccountant", "PrivacyOdometer", "StepCharge", "dataset_pool",
    ],
    "tinker_nb.privacy_audit": [
        "Canary", "CanarySet", "OneRunBound", "PrivacyAudit", "PrivacyAuditResult", "SealedCoins", "auc",
        "audit_privacy", "ceiling_epsilon", "epsilon_lower_bound", "exposure_extrapolation",
        "exposure_interpolation", "one_run_audit", "one_run_p_value", "roc", "tpr_at_fpr",
    ],
    "tinker_nb.notebook": ["BudgetPlanner", "Dashboard", "plan"],
    "tinker_nb.server": ["create_app"],
    "tinker_nb.remote": [
        "AuthenticationError", "NotFoundError", "RemoteServiceClient", "RemoteTrainingClient", "ServerBusyError",
    ],
    # security/ and engine/ have an empty __init__: their modules are the surface.
    "tinker_nb.security.aead": [
        "NONCE_LEN", "READ_CHUNK", "decrypt_stream", "encrypt_stream", "new_key", "open_sealed", "seal",
    ],
    "tinker_nb.security.identity": ["IDENTITY_FILE", "read_workspace_identity", "workspace_signer"],
    "tinker_nb.security.kem": [
        "RecipientIdentity", "RecipientPublicKey", "SUITE_NAME", "load_identity", "load_recipient", "seal",
    ],
    "tinker_nb.security.keys": [
        "BACKUP_FILE", "ENV_VAR", "KEYSTORE_FILE", "Keystore", "KeystoreInfo", "WrappedKey", "atomic_write",
        "keystore_info", "read_keystore",
    ],
    "tinker_nb.security.passphrase": [
        "ARGON2_FLOOR", "ARGON2_MAX", "ARGON2_PARAMS", "check_argon2_params", "derive_key", "protect", "unprotect",
    ],
    "tinker_nb.security.signing": [
        "ALGORITHM", "HybridPublicKey", "HybridSigner", "LABEL", "PREFIX", "load_public_key", "load_signer",
        "message_representative",
    ],
    "tinker_nb.engine.assets": None,  # no __all__: internal helpers for the bundled model
    "tinker_nb.engine.batches": ["Batch", "IGNORE_INDEX", "collate", "to_batch"],
    "tinker_nb.engine.checkpoint": ["CHECKPOINT_KIND", "restore_session", "session_to_blobs"],
    "tinker_nb.engine.data_source": ["DataSource", "Draw", "dataset_digest"],
    "tinker_nb.engine.demo_data": ["demo_records", "health_leaflets", "story_corpus"],
    "tinker_nb.engine.dp": ["ClipStats", "GradientAccumulator"],
    "tinker_nb.engine.generation": ["Sample", "SampleResult", "generate"],
    "tinker_nb.engine.loss": ["per_sequence_loss"],
    "tinker_nb.engine.model": [
        "BASE_DTYPE_ENV", "LoadedModel", "add_lora", "load_base_model", "pick_device", "resolve_base_dtype",
        "resolve_model_ref",
    ],
    "tinker_nb.engine.noise": ["GaussianNoise", "KeyStream", "SecureBernoulli", "derive_key"],
    "tinker_nb.engine.per_sample": [
        "LinearPerExampleGrads", "LinearPerSampleHooks", "attach_per_sample_hooks", "ghost_norm_saves_memory",
    ],
    "tinker_nb.engine.session": [
        "DPMetrics", "ForwardBackwardResult", "ForwardResult", "OptimStepResult", "TrainingSession",
    ],
    "tinker_nb.engine.tokenize": ["FALLBACK_CHAT_FORMAT", "IGNORE_INDEX", "encode_prompt", "encode_record"],
}

# Packages whose __init__ exports nothing: the pinned surface is their public modules, all of them.
MODULE_PACKAGES = ["tinker_nb.security", "tinker_nb.engine"]


def test_pinned_lists_are_sorted():
    for module, names in PUBLIC.items():
        if names is not None:
            assert names == sorted(names), f"keep the pinned list of {module} sorted"


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names(module):
    mod = importlib.import_module(module)
    expected = PUBLIC[module]
    if expected is None:
        assert not hasattr(mod, "__all__"), f"{module} now has __all__: pin it here"
        return
    assert sorted(mod.__all__) == expected
    assert len(set(mod.__all__)) == len(mod.__all__), f"{module}.__all__ lists a name twice"


@pytest.mark.parametrize("module", sorted(m for m, names in PUBLIC.items() if names))
def test_every_public_name_is_importable(module):
    mod = importlib.import_module(module)
    for name in mod.__all__:  # lazy names (module __getattr__) included
        assert getattr(mod, name) is not None, f"{module}.{name}"
    ns: dict[str, object] = {}
    exec(f"from {module} import *", ns)  # what a user's star import does
    assert set(mod.__all__) <= set(ns)


@pytest.mark.parametrize("package", MODULE_PACKAGES)
def test_packages_without_all_export_only_their_pinned_modules(package):
    pkg = importlib.import_module(package)
    assert not hasattr(pkg, "__all__"), f"{package} now has __all__: pin it in PUBLIC"
    modules = sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    assert modules == sorted(m for m in PUBLIC if m.startswith(package + "."))
