"""Auto-checks for the notebooks' exercises: ``msp.checks.<exercise>(fn)``.

Each check prints one line per property and raises ``CheckFailed`` (an AssertionError) on the
first failure, naming the case, where the output differs, yours vs expected, and a hint.
``EXERCISES`` is the one list of exercises: the checks, the solutions, the README's syllabus and
``msp.course.progress()`` all read it.
"""

import importlib

from .core import CheckFailed

# Every exercise and the notebook it belongs to. Its check lives in minisoftpick.checks.<module> and its
# reference solution in minisoftpick.solutions.<module>, <module> being the notebook's name without its number.
EXERCISES = {
    "softpick": "01_softpick_math",
    "softpick_jacobian": "01_softpick_math",
    "softpick_vjp": "01_softpick_math",
    "causal_mask": "02_naive_attention",
    "masked_softpick": "02_naive_attention",
    "naive_attention": "02_naive_attention",
    "merge_partials": "03_online_softpick",
    "block_update": "03_online_softpick",
    "online_softpick_attention": "03_online_softpick",
    "softpick_rows": "04_triton_primer",
    "score_tile": "04_triton_primer",
    "attention_weights": "04_triton_primer",
    "flash_forward": "05_flash_forward",
    "flash_forward_state": "05_flash_forward",
    "flash_forward_blocks": "05_flash_forward",
    "softpick_score_grad": "06_flash_backward",
    "flash_dq": "06_flash_backward",
    "flash_dkdv": "06_flash_backward",
    "attention_roofline": "06_flash_backward",
    "count_params": "07_training",
    "learning_rate": "07_training",
    "clip_grad_norm": "07_training",
    "bos_attention": "08_sinks_and_activations",
    "first_token_norm_ratio": "08_sinks_and_activations",
    "sink_rate": "08_sinks_and_activations",
    "kurtosis": "08_sinks_and_activations",
    "quantize_rtn": "09_quantization",
    "quantize_activations": "09_quantization",
    "hqq_zero_step": "09_quantization",
    "passkey_exact_match": "10_long_context",
    "log_position_scale": "10_long_context",
    "learnable_sink": "10_long_context",
}


def module_of(exercise: str) -> str:
    """The module name, in checks/ and in solutions/, of ``exercise``'s notebook."""
    return EXERCISES[exercise][3:]


def load_exercise(name: str, package: str, namespace: dict):
    """``name`` from ``package``'s module of its notebook (checks or solutions), loaded on first use;
    every exercise of that notebook is put into ``namespace`` (one may share the module's name)."""
    if name not in EXERCISES:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module = importlib.import_module(f".{module_of(name)}", package)
    for other, notebook in EXERCISES.items():
        if notebook == EXERCISES[name]:
            namespace[other] = getattr(module, other)
    return namespace[name]


def __getattr__(name: str):
    return load_exercise(name, __name__, globals())


def __dir__() -> list[str]:
    return sorted([*globals(), *EXERCISES])


__all__ = ["EXERCISES", "CheckFailed", *EXERCISES]
