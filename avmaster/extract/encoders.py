"""The encoders: any open_clip model (image + text towers), VGGish (torchvggish) and, for the
paper's Table XI, torchvision's ResNet-18 (images only) and CLAP's audio tower (transformers).

Weights come from the libraries' own download paths (cached), from local files
(``clip_weights`` / ``vggish_weights`` / ``vggish_pca_weights``), or are random
(``random_init``; for tests and demos only, and the files then say ``pretrained="random"``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from torch import nn
from torchvggish import torchvggish as tvg
from torchvggish import vggish_params

from avmaster.errors import ConfigError
from avmaster.extract.config import (
    CLAP_RATE,
    RANDOM_TAG,
    RESNET_SIZE,
    RESNET_TAG,
    TINY_MODEL,
    clap_tag,
)

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).with_name("model_configs")
VGGISH_DIM = vggish_params.EMBEDDING_SIZE
PCA_CLIP = (vggish_params.QUANTIZE_MIN_VAL, vggish_params.QUANTIZE_MAX_VAL)
QUANT_LEVELS = 255.0
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
OPEN_CLIP_PRECISION = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_registered = False


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could neither be loaded from a file nor downloaded."""


def register_model_configs() -> None:
    """Make the package's open_clip model configs (``avmaster-tiny``) known to open_clip."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but torch sees no CUDA GPU; use "
                          "--device cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on GPU, fp32 on CPU; fp16 on CPU falls back to fp32 (too slow there)."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type == "cpu":
        log.warning("fp16 is not supported well on the CPU; using fp32")
        return "fp32"
    return precision


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """open_clip logs its every step at INFO on the root logger: keep warnings only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def _random_warning(what: str) -> None:
    log.warning("!!! %s uses RANDOM weights: its features are meaningless and fit only for tests "
                "and demos; the files record pretrained=%r !!!", what, RANDOM_TAG)


# ----------------------------------------------------------------------------- CLIP


def build_clip(model_name: str, pretrained: str, *, weights_file: str | None = None,
               random_init: bool = False, seed: int = 0, device: torch.device | str = "cpu",
               precision: str = "fp32") -> nn.Module:
    """An open_clip model in eval mode: tag download, local file, or random weights.

    With a known tag the tag's settings are used even when the weights come from a file
    (QuickGELU for OpenAI's weights, mean/std/resize), so ``--clip-weights`` + ``--pretrained``
    gives the same model as the download.
    """
    register_model_configs()
    name = model_name.replace("/", "-")
    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower()[:5] in m.lower()][:12]
        raise ValueError(f"unknown open_clip model {model_name!r}; similar: {close}. "
                         "List all with `python -c 'import open_clip; "
                         "print(open_clip.list_models())'`")
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    if random_init:
        source = None
        _random_warning(f"CLIP {name}")
    elif weights_file:
        if not Path(weights_file).is_file():
            raise WeightsUnavailableError(f"--clip-weights {weights_file}: no such file")
        source = str(weights_file)
    else:
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(name)
            hint = (f"known tags: {tags}" if tags else "it has no published weights; use "
                    "--random-init (tests/demos) or --clip-weights FILE")
            raise ValueError(f"open_clip model {name!r} has no pretrained tag {pretrained!r}; "
                             f"{hint}")
        source = pretrained
    kwargs: dict[str, Any] = {
        "force_quick_gelu": bool(tag_cfg.get("quick_gelu", False)),
        "force_preprocess_cfg": {k: tag_cfg[k] for k in PREPROCESS_KEYS if k in tag_cfg},
        "precision": OPEN_CLIP_PRECISION[precision],
        "device": device,
    }
    try:
        with torch.random.fork_rng(devices=[]), _quiet_root_logger():
            torch.manual_seed(seed)
            model = open_clip.create_model(name, pretrained=source, **kwargs)
    except Exception as e:
        if random_init or weights_file:
            raise
        raise WeightsUnavailableError(
            f"CLIP weights {name}/{pretrained} could not be downloaded ({type(e).__name__}: {e}). "
            "Fix: run once on a machine with internet access (open_clip caches the weights in "
            "~/.cache/huggingface or ~/.cache/clip; copy that folder here), or download the "
            f"checkpoint ({tag_cfg.get('hf_hub') or tag_cfg.get('url')}) and pass "
            f"--clip-weights FILE --pretrained {pretrained}; --random-init runs without weights "
            "(tests/demos only)."
        ) from e
    return model.eval()


def _project(x: torch.Tensor, proj: nn.Module | torch.Tensor | None) -> torch.Tensor:
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Module) else x @ proj


class ClipEncoder:
    """Image and text features from one open_clip model.

    Images: ``encode_image`` output (the projected class embedding; L2-normalised only with
    ``normalize=True``), optionally the projected patch tokens. Texts: the sentence vector
    (``encode_text`` output: the EOT token's final layer-normed state, projected) and the
    layer-normed, projected states of every token up to and including EOT.
    """

    def __init__(self, model_name: str, pretrained: str, *, weights_file: str | None = None,
                 random_init: bool = False, seed: int = 0, device: torch.device | str = "cpu",
                 precision: str = "fp32", normalize: bool = False, patch_tokens: bool = False):
        self.device = torch.device(device)
        self.model_name, self.normalize = model_name.replace("/", "-"), normalize
        self.pretrained = RANDOM_TAG if random_init else pretrained
        self.model = build_clip(model_name, pretrained, weights_file=weights_file,
                                random_init=random_init, seed=seed, device=self.device,
                                precision=precision)
        with _quiet_root_logger():
            self.tokenizer = open_clip.get_tokenizer(self.model_name)
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = cfg["size"]
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.preprocess = {k: cfg.get(k) for k in ("interpolation", "resize_mode", "fill_color")}
        self.dtype = next(self.model.visual.parameters()).dtype
        self._mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1) * 255
        self.patch_tokens = patch_tokens
        if patch_tokens:
            if not hasattr(self.model.visual, "output_tokens"):
                raise ValueError(f"{self.model_name}: its image tower cannot return patch tokens")
            self.model.visual.output_tokens = True
        self.dim = int(self.model.text_projection.shape[-1]
                       if isinstance(self.model.text_projection, torch.Tensor)
                       else self._probe_dim())

    def _probe_dim(self) -> int:
        with torch.inference_mode():
            return int(self.encode_images(torch.zeros((1, *self.image_size, 3),
                                                      dtype=torch.uint8))[0].shape[-1])

    @torch.inference_mode()
    def encode_images(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 [B, H, W, 3] images -> (float32 [B, D], projected patch tokens [B, P, D] or
        ``None``), on the CPU."""
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = ((x - self._mean) / self._std).to(self.dtype)
        out = self.model.visual(x)
        tokens = None
        if isinstance(out, tuple):
            out, tokens = out
            tokens = _project(tokens, getattr(self.model.visual, "proj", None))
            tokens = tokens.float().cpu()
        out = out.float()
        if self.normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        return out.cpu(), tokens

    def _text_tower(self) -> tuple[Any, ...]:
        m = self.model
        if isinstance(m, open_clip.CLIP):
            return ("clip", m.text_pool_type, getattr(m, "text_eos_id", None), m.text_projection)
        text = getattr(m, "text", None)
        if isinstance(text, open_clip.transformer.TextTransformer) and text.cls_emb is None:
            return ("custom", text.pool_type, getattr(text, "eos_id", None),
                    text.text_projection)
        raise NotImplementedError(f"{self.model_name}: token states are supported for open_clip's "
                                  "own text transformer only; choose another model")

    @torch.inference_mode()
    def _text_batch(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kind, pool_type, eos_id, proj = self._text_tower()
        m = self.model
        if kind == "clip":
            cast = m.transformer.get_cast_dtype()
            x = m.token_embedding(ids).to(cast) + m.positional_embedding.to(cast)
            x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        else:
            x, attn_mask = m.text._embeds(ids)
            x = m.text.ln_final(m.text.transformer(x, attn_mask=attn_mask))
        rows = torch.arange(ids.shape[0], device=ids.device)
        if pool_type == "argmax":
            idx = ids.argmax(dim=-1)
        elif pool_type == "eos":
            idx = (ids == eos_id).int().argmax(dim=-1)
        elif pool_type == "first":
            idx = torch.zeros_like(rows)
        else:
            idx = torch.full_like(rows, ids.shape[1] - 1)
        lengths = idx + 1 if pool_type in ("argmax", "eos") else (ids != 0).sum(dim=-1)
        states = _project(x, proj)
        pooled = states[rows, idx]
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return pooled.float(), states.float(), lengths

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
        """(sentence float32 [N, D], token states: N arrays [L_i, D], L_i = tokens up to EOT)."""
        sentences, tokens = [], []
        for s in range(0, len(texts), batch_size):
            ids = self.tokenizer(list(texts[s : s + batch_size])).to(self.device)
            pooled, states, lengths = self._text_batch(ids)
            states, lengths = states.cpu().numpy(), lengths.cpu().numpy()
            sentences.append(pooled.cpu().numpy())
            tokens.extend(states[i, : int(n)].copy() for i, n in enumerate(lengths))
        if not sentences:
            return np.zeros((0, self.dim), np.float32), []
        return np.concatenate(sentences), tokens


# ----------------------------------------------------------------------------- VGGish


class VGGishPCA(nn.Module):
    """AudioSet's PCA (with whitening), optionally clipped to [-2, 2] and quantised to 0..255
    (torchvggish's ``Postprocessor``, which makes the released AudioSet embeddings)."""

    def __init__(self, eigen_vectors: torch.Tensor, means: torch.Tensor, quantize: bool):
        super().__init__()
        self.register_buffer("matrix", torch.as_tensor(eigen_vectors, dtype=torch.float32))
        self.register_buffer("means", torch.as_tensor(means, dtype=torch.float32).reshape(1, -1))
        self.quantize = quantize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.means) @ self.matrix.T
        if self.quantize:
            lo, hi = PCA_CLIP
            y = torch.round((y.clamp(lo, hi) - lo) * (QUANT_LEVELS / (hi - lo)))
        return y


def _load_file(path: str, what: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailableError(f"{what} {path}: no such file")
    if p.suffix == ".npz":
        with np.load(p) as z:
            return {k: z[k] for k in z.files}
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # torchvggish's PCA file pickles numpy arrays
        log.info("%s: loading a pickled checkpoint (numpy arrays inside)", path)
        return torch.load(p, map_location="cpu", weights_only=False)


def _download(url: str, flag: str, what: str = "VGGish") -> dict[str, Any]:
    try:
        return torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
    except Exception as e:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        raise WeightsUnavailableError(
            f"{what} weights could not be downloaded from {url} ({type(e).__name__}: {e}). Fix: "
            f"download that file on a machine with internet access and pass {flag} FILE, or put "
            f"it at {cache} (torch.hub's cache); --random-init runs without weights (tests/demos "
            "only)."
        ) from e


def _he_init(net: nn.Module) -> None:
    """He-normal weights, zero biases: random activations keep their scale through the ReLUs
    (PyTorch's default initialisation shrinks them layer by layer to near zero)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


class VGGishEncoder:
    """VGGish embeddings [B, 128] of log-mel examples [B, 96, 64].

    ``postprocess``: ``none`` (default: the raw 128-D embedding, ReLU'd, as MUSIC-AVQA's
    released features), ``pca`` (PCA + whitening), ``pca-quantized`` (+ clip and 8-bit
    quantisation: the AudioSet release format, values 0..255).
    """

    def __init__(self, *, weights_file: str | None = None, pca_file: str | None = None,
                 postprocess: str = "none", random_init: bool = False, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.postprocess = postprocess
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = tvg.VGG(tvg.make_layers(), postprocess=False)
            if random_init:
                _random_warning("VGGish")
                _he_init(net)
        if not random_init:
            state = (_load_file(weights_file, "--vggish-weights") if weights_file
                     else _download(tvg.VGGISH_WEIGHTS, "--vggish-weights"))
            net.load_state_dict(state)
        self.net = net.eval().to(self.device)
        self.pca: VGGishPCA | None = None
        if postprocess != "none":
            if random_init:
                params = {"pca_eigen_vectors": np.eye(VGGISH_DIM),
                          "pca_means": np.zeros(VGGISH_DIM)}
            elif pca_file:
                params = _load_file(pca_file, "--vggish-pca-weights")
            else:
                params = _download(tvg.PCA_PARAMS, "--vggish-pca-weights")
            self.pca = VGGishPCA(torch.as_tensor(np.asarray(params["pca_eigen_vectors"])),
                                 torch.as_tensor(np.asarray(params["pca_means"])),
                                 quantize=postprocess == "pca-quantized").to(self.device)

    @torch.inference_mode()
    def encode(self, log_mel: torch.Tensor) -> torch.Tensor:
        """float32 [B, 96, 64] -> float32 [B, 128] on the CPU (computed in fp32)."""
        x = log_mel.to(self.device, non_blocking=True).float()[:, None]
        y = self.net(x)
        if self.pca is not None:
            y = self.pca(y)
        return y.float().cpu()


# ----------------------------------------------------------------------------- ResNet-18


class ResNetEncoder:
    """ResNet-18 image features as the MUSIC-AVQA release stores them: the 512-d average-pooled
    output (the classifier removed) of 224 x 224 frames, ImageNet mean/std.

    Weights: torchvision's ``IMAGENET1K_V1`` (downloaded once into torch.hub's cache), a local
    state dict (``weights_file``, offline), or random (``random_init``: torchvision's He-normal
    initialisation, seeded).
    Same image interface as :class:`ClipEncoder` (``encode_images``, ``image_size``,
    ``preprocess``, ``dim``).
    """

    dim = 512

    def __init__(self, *, weights_file: str | None = None, random_init: bool = False,
                 seed: int = 0, device: torch.device | str = "cpu", precision: str = "fp32"):
        from torchvision.models import ResNet18_Weights, resnet18

        self.device = torch.device(device)
        self.pretrained = RANDOM_TAG if random_init else RESNET_TAG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = resnet18(weights=None)  # torchvision's init is He-normal already
        if random_init:
            _random_warning("ResNet-18")
        if not random_init:
            weights = ResNet18_Weights.IMAGENET1K_V1
            state = (_load_file(weights_file, "--resnet-weights") if weights_file
                     else _download(weights.url, "--resnet-weights", "ResNet-18"))
            net.load_state_dict(state)
        net.fc = nn.Identity()
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        self.model = net.eval().to(self.device, self.dtype)
        self.image_size = (RESNET_SIZE, RESNET_SIZE)
        self.preprocess = {"interpolation": "bilinear", "resize_mode": "squash", "fill_color": 0}
        mean, std = IMAGENET_MEAN_STD
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255

    @torch.inference_mode()
    def encode_images(self, frames: torch.Tensor) -> tuple[torch.Tensor, None]:
        """uint8 [B, H, W, 3] images -> (float32 [B, 512] on the CPU, ``None``)."""
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = ((x - self._mean) / self._std).to(self.dtype)
        return self.model(x).float().cpu(), None


# ----------------------------------------------------------------------------- CLAP

# A tiny HTSAT audio tower for tests and demos (``clap_model=avmaster-tiny`` with random_init).
TINY_CLAP = {"depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1], "hidden_size": 128,
             "patch_embeds_hidden_size": 16, "projection_dim": 32, "window_size": 8,
             "enable_fusion": False}


class ClapEncoder:
    """CLAP audio embeddings, one per second: each second of 48 kHz mono audio is encoded on its
    own (CLAP's feature extractor repeat-pads it to its 10-s window), giving the projected
    ``audio_embeds`` (not L2-normalised, like the stored CLIP vectors).

    transformers' ``ClapAudioModelWithProjection`` (the optional extra ``avmaster[clap]``) loads
    ``model`` by Hugging Face id (cached download) or from a local directory (offline: a copy
    of ``laion/clap-htsat-unfused``); ``random_init`` builds it with random weights (the
    ``avmaster-tiny`` size or the default HTSAT), for tests and demos only.
    """

    def __init__(self, model: str, *, random_init: bool = False, seed: int = 0,
                 device: torch.device | str = "cpu"):
        try:
            from transformers import (
                ClapAudioConfig,
                ClapAudioModelWithProjection,
                ClapFeatureExtractor,
            )
        except ImportError as e:
            raise ImportError("the CLAP audio encoder needs transformers: "
                              'pip install "avmaster[clap]"') from e
        self.device = torch.device(device)
        self.pretrained = RANDOM_TAG if random_init else clap_tag(model)
        if random_init:
            _random_warning(f"CLAP {model}")
            config = ClapAudioConfig(**(TINY_CLAP if model == TINY_MODEL else {}))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = ClapAudioModelWithProjection(config)
            self.features = ClapFeatureExtractor(truncation="rand_trunc")
        else:
            try:
                net = ClapAudioModelWithProjection.from_pretrained(model)
                self.features = ClapFeatureExtractor.from_pretrained(model)
            except OSError as e:
                raise WeightsUnavailableError(
                    f"CLAP {model!r} could not be loaded ({e}). Fix: download it on a machine "
                    "with internet access (huggingface-cli download laion/clap-htsat-unfused "
                    "--local-dir DIR) and pass --clap-model DIR") from e
        self.model = net.eval().to(self.device)
        self.dim = int(net.config.projection_dim)

    @torch.inference_mode()
    def encode(self, waves: torch.Tensor) -> torch.Tensor:
        """float32 [B, 48000] one-second waveforms -> float32 [B, D] on the CPU."""
        inputs = self.features(list(waves.numpy()), sampling_rate=CLAP_RATE,
                               return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.model(**inputs).audio_embeds.float().cpu()
