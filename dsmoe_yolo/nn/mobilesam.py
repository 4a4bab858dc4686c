"""Stage 3: the MobileSAM image encoder (TinyViT-5M) as a multi-scale YOLO backbone.

The encoder is Ultralytics' ``TinyViT`` (``ultralytics.models.sam.modules.tiny_encoder``), built with MobileSAM's
``vit_t`` configuration. It is state-dict identical to the ``mobile_sam`` package's ``vit_t`` (same keys, same
shapes) but needs no ``timm`` import, so building a model stays fast and dependency-free.

Departures from the stock encoder, all shape plumbing (no weight changes):

- The stock forward reads a fixed ``input_resolution`` stored at construction. Here every stage derives its height
  and width from the tensor, so any input whose sides are multiples of 32 works (Ultralytics dry-runs at 256x256,
  validates rectangular batches, predicts letterboxed non-square images) and ONNX export with ``dynamic=True`` keeps
  H and W symbolic.
- TinyViT has no stride-32 stage (its outputs are strides 4, 8, 16, 16, 16). P3 is the stride-8 stage, P4 the last
  stride-16 stage, and P5 comes from one extra stride-2 CBS. Each level is adapted to the YOLO width by CBS + C2f,
  as the paper describes. SAM's neck and TinyViT's classifier head are dropped after (optional) weight loading.
  With four output widths the backbone also returns P2 (stride 4) from the first (MobileNet) stage, for the
  small-object head of ``dsmoe-p2-yolov8.yaml`` (paper Tables 6-7).
- The paper's "anisotropic kernel factorisation" and "gradient-aware pooling" inside the encoder are not applied:
  they would change the pretrained encoder. The anisotropic factorisation lives in the local MoE expert instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import C2f, Conv

from dsmoe_yolo.nn.base import YAMLLayer, is_tracing

__all__ = (
    "MobileSAMBackbone",
    "build_tinyvit_5m",
    "load_mobilesam_encoder",
    "resolve_mobilesam_weights",
    "PretrainedBatchNorm2d",
)

TINYVIT_5M = dict(
    img_size=1024,
    in_chans=3,
    num_classes=1000,
    embed_dims=[64, 128, 160, 320],
    depths=[2, 2, 6, 2],
    num_heads=[2, 4, 5, 10],
    window_sizes=[7, 7, 14, 7],
    mlp_ratio=4.0,
    drop_rate=0.0,
    drop_path_rate=0.0,
    use_checkpoint=False,
    mbconv_expand_ratio=4.0,
    local_conv_size=3,
    layer_lr_decay=0.8,
)
UNUSED_ENCODER_PARTS = ("neck", "norm_head", "head")  # SAM neck and the ImageNet classifier


class PretrainedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that keeps the pretrained ``eps`` / ``momentum``.

    Ultralytics' ``initialize_weights`` resets every module whose type *is* ``nn.BatchNorm2d`` to eps 1e-3; a subclass
    is left alone, so the encoder computes exactly what MobileSAM computes.
    """


def _keep_batchnorm_settings(module: nn.Module) -> None:
    """Swap every plain ``nn.BatchNorm2d`` below ``module`` for ``PretrainedBatchNorm2d`` (same state-dict keys)."""
    for child in module.modules():
        if type(child) is nn.BatchNorm2d:
            child.__class__ = PretrainedBatchNorm2d


def build_tinyvit_5m() -> nn.Module:
    """Return a randomly initialised MobileSAM ``vit_t`` image encoder (TinyViT-5M, ~6.1 M parameters with head).

    Imported here, not at module level: ``ultralytics.models`` must not be imported while the plugin registers
    (registration runs inside the import of ``ultralytics.nn.tasks``, itself inside ``ultralytics.models``).
    """
    from ultralytics.models.sam.modules.tiny_encoder import TinyViT

    return TinyViT(**TINYVIT_5M)


def _encoder_state_dict(obj) -> dict[str, torch.Tensor]:
    """Extract TinyViT keys from a MobileSAM / Ultralytics SAM checkpoint object."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):  # Ultralytics SAM ('model') and common trainer layouts
            if isinstance(obj.get(key), (dict, nn.Module)):
                return _encoder_state_dict(obj[key])
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise TypeError(f"expected a state dict, got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    prefixed = {k[len("image_encoder.") :]: v for k, v in tensors.items() if k.startswith("image_encoder.")}
    return prefixed or tensors


DEFAULT_WEIGHTS = "mobile_sam.pt"  # the file name Ultralytics' asset release and MobileSAM's GitHub both use
_warned: set[str] = set()


def resolve_mobilesam_weights(spec: str | Path | None) -> Path | None:
    """Find MobileSAM encoder weights: a path as given, or a bare file name through Ultralytics' own asset lookup.

    A bare name (``mobile_sam.pt``) is looked up by ``attempt_download_asset``: the working directory, Ultralytics'
    ``weights_dir``, else downloaded from Ultralytics' asset release when online. Offline (or ``YOLO_OFFLINE=1``) or
    when the download fails, one warning says how to provide the file and None is returned (random initialisation).

    Raises:
        FileNotFoundError: For a path with folders that does not exist (a typo should not train from scratch).
    """
    if not spec:
        return None
    path = Path(str(spec)).expanduser()
    if path.is_file():
        return path
    if path.name != str(spec):
        raise FileNotFoundError(
            f"MobileSAM weights '{spec}' not found. Pass the path of mobile_sam.pt (https://github.com/ChaoningZhang/MobileSAM, "
            f"weights/mobile_sam.pt), the bare name '{DEFAULT_WEIGHTS}' to let Ultralytics fetch it, or null for random weights."
        )
    from ultralytics.utils import LOGGER, SETTINGS, is_online

    reason = "no network (YOLO_OFFLINE or no connection)"
    if is_online():
        try:
            from ultralytics.utils.downloads import attempt_download_asset

            found = Path(attempt_download_asset(str(spec)))
            if found.is_file():
                return found
        except Exception as e:  # a failed download must not stop a build; the warning below says what to do
            reason = f"download failed ({type(e).__name__}: {e})"
    else:
        local = Path(SETTINGS["weights_dir"]) / path.name
        if local.is_file():
            return local
    if str(spec) not in _warned:
        _warned.add(str(spec))
        LOGGER.warning(
            f"MobileSAM weights '{spec}' unavailable: {reason}. The encoder starts from RANDOM weights. Put "
            f"{path.name} in {SETTINGS['weights_dir']} or the working directory (from "
            f"https://github.com/ChaoningZhang/MobileSAM or Ultralytics' assets), or set backbone_weights to its path."
        )
    return None


def load_mobilesam_encoder(encoder: nn.Module, weights: str | Path) -> None:
    """Load MobileSAM encoder weights into ``encoder`` strictly.

    Accepts MobileSAM's ``mobile_sam.pt`` (a SAM state dict with ``image_encoder.*`` keys), Ultralytics' SAM format
    (the same dict, optionally under a ``model`` key), or a bare TinyViT state dict. Weights saved at 1024 px load into
    a model used at any size: the attention biases depend on the window size only.

    Raises:
        FileNotFoundError: If ``weights`` does not exist.
        ValueError: If keys are missing or unexpected, naming them.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"MobileSAM weights '{weights}' not found. Download mobile_sam.pt from "
            f"https://github.com/ChaoningZhang/MobileSAM (weights/mobile_sam.pt) and pass its path, or set weights to null."
        )
    try:
        state = _encoder_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:
        raise ValueError(f"MobileSAM weights '{weights}' could not be read as a state dict: {e}") from e
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:

        def show(keys):
            return f"{len(keys)} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"

        raise ValueError(
            f"MobileSAM weights '{weights}' do not match the TinyViT-5M (vit_t) encoder: missing keys {show(missing)}, "
            f"unexpected keys {show(unexpected)}, shape mismatches {show(mismatched)}. Expected MobileSAM's "
            f"mobile_sam.pt (keys 'image_encoder.*') or a TinyViT-5M state dict."
        )
    encoder.load_state_dict(state, strict=True)


def _tinyvit_block(blk: nn.Module, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``TinyViTBlock.forward`` with the spatial size given, not read from ``blk.input_resolution``.

    Args:
        blk: A ``TinyViTBlock``.
        x: Tokens (B, h*w, C).
        h, w: Spatial size of the token grid.

    Returns:
        Tokens (B, h*w, C).
    """
    b, hw, c = x.shape
    ws = blk.window_size
    res_x = x
    x = x.view(b, h, w, c)
    pad_b = (ws - h % ws) % ws
    pad_r = (ws - w % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    ph, pw = h + pad_b, w + pad_r
    nh, nw = ph // ws, pw // ws
    x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)  # window partition
    x = blk.attn(x)
    x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)[:, :h, :w]  # window reverse
    x = res_x + blk.drop_path(x.reshape(b, hw, c))
    x = blk.local_conv(x.transpose(1, 2).reshape(b, c, h, w))
    x = x.view(b, c, hw).transpose(1, 2)
    return x + blk.drop_path(blk.mlp(x))


def _patch_merging(pm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``PatchMerging`` on an NCHW map, returning an NCHW map (the stock one returns tokens)."""
    x = pm.act(pm.conv1(x))
    x = pm.act(pm.conv2(x))
    return pm.conv3(x)


class MobileSAMBackbone(YAMLLayer):
    """MobileSAM's TinyViT-5M encoder returning YOLO-width P3/P4/P5 maps (or P2/P3/P4/P5 given four widths).

    YAML: ``[-1, 3, MobileSAMBackbone, [[256, 512, 1024], backbone_weights, freeze_backbone]]``, then
    ``Pick`` rows select each level. ``n`` (depth-scaled) is the number of bottlenecks in each adapter C2f.

    Args:
        c1 (int): Input channels; must be 3 (the encoder is an RGB model).
        c2 (list[int]): Output widths of P3, P4, P5, or of P2, P3, P4, P5 (width-scaled by the builder).
        weights (str, optional): MobileSAM checkpoint to load strictly into the encoder: a path, or the bare name
            ``mobile_sam.pt`` fetched through Ultralytics' asset download (random weights, with one warning, offline).
        freeze_epochs (int): Keep the encoder frozen (no gradients, BatchNorm in eval) for this many epochs.
        n (int): Bottlenecks per adapter C2f.

    Examples:
        >>> bb = MobileSAMBackbone(3, [64, 128, 256])
        >>> [f.shape[1:] for f in bb(torch.zeros(1, 3, 256, 320))]
        [torch.Size([64, 32, 40]), torch.Size([128, 16, 20]), torch.Size([256, 8, 10])]
    """

    yaml_channels = "declared_list"

    def __init__(self, c1: int, c2: list[int], weights: str | None = None, freeze_epochs: int = 0, n: int = 1):
        super().__init__()
        if c1 != 3:
            raise ValueError(f"MobileSAMBackbone needs 3 input channels (RGB), got {c1}; train with channels: 3")
        if len(c2) not in (3, 4):
            raise ValueError(f"MobileSAMBackbone needs 3 output widths [P3, P4, P5] or 4 [P2, P3, P4, P5], got {c2}")
        if int(freeze_epochs) < 0:
            raise ValueError(f"MobileSAMBackbone freeze_epochs must be >= 0, got {freeze_epochs}")
        self.encoder = build_tinyvit_5m()
        found = resolve_mobilesam_weights(weights)
        if found:
            load_mobilesam_encoder(self.encoder, found)
        for name in UNUSED_ENCODER_PARTS:
            delattr(self.encoder, name)
        _keep_batchnorm_settings(self.encoder)
        self.weights, self.freeze_epochs, self.frozen = str(found) if found else None, int(freeze_epochs), False
        dims = TINYVIT_5M["embed_dims"]
        self.p2 = nn.Sequential(Conv(dims[0], c2[0], 1), C2f(c2[0], c2[0], n)) if len(c2) == 4 else None
        c3, c4, c5 = c2[-3:]
        self.p3 = nn.Sequential(Conv(dims[1], c3, 1), C2f(c3, c3, n))
        self.p4 = nn.Sequential(Conv(dims[3], c4, 1), C2f(c4, c4, n))
        self.p5 = nn.Sequential(Conv(dims[3], c5, 3, 2), C2f(c5, c5, n))
        self.out_channels = list(c2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Map (B, 3, H, W), H and W multiples of 32, to [P3 (H/8), P4 (H/16), P5 (H/32)] ([P2 (H/4), ...] with p2)."""
        stride4, stride8, stride16 = self.encoder_maps(x)
        levels = [self.p3(stride8), self.p4(stride16), self.p5(stride16)]
        return [self.p2(stride4), *levels] if self.p2 is not None else levels

    def encoder_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TinyViT maps: (B, 128, H/8, W/8) after the first attention stage, (B, 320, H/16, W/16) at the end."""
        return self.encoder_maps(x)[1:]

    def encoder_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TinyViT maps at strides 4 (B, 64, H/4, W/4: after the MobileNet stage), 8 and 16 (``encoder_features``)."""
        enc = self.encoder
        channels_last = self.inference_path and not is_tracing()  # set up by fuse_inference()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = enc.patch_embed(x)  # (B, 64, H/4, W/4)
        for blk in enc.layers[0].blocks:
            x = blk(x)
        stride4 = x
        x = _patch_merging(enc.layers[0].downsample, x)  # (B, 128, H/8, W/8)
        stride8 = x
        for layer in enc.layers[1:]:
            b, c, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            for blk in layer.blocks:
                tokens = _tinyvit_block(blk, tokens, h, w)
            x = tokens.transpose(1, 2).reshape(b, c, h, w)
            if layer is enc.layers[1]:
                stride8 = x  # (B, 128, H/8, W/8) after the first attention stage
            if layer.downsample is not None:
                x = _patch_merging(layer.downsample, x)
        if channels_last:
            return stride4.contiguous(), stride8.contiguous(), x.contiguous()
        return stride4, stride8, x

    def fuse_inference(self) -> None:
        """Fold each TinyViT ``Conv2d_BN`` (conv + BatchNorm) into one conv, as ``yolo predict``'s ``fuse()`` does for
        Ultralytics' ``Conv``: same outputs to float rounding, ~10% less encoder time on a CPU; and store its weights
        channels-last, the layout ``encoder_maps`` then runs it in (its MobileNet stage ~20% faster). Inference only."""
        from ultralytics.utils.torch_utils import fuse_conv_and_bn

        super().fuse_inference()
        for parent in list(self.encoder.modules()):
            for name, child in list(parent.named_children()):
                if type(child).__name__ == "Conv2d_BN":
                    setattr(parent, name, fuse_conv_and_bn(child.c, child.bn))
        self.encoder.to(memory_format=torch.channels_last)  # eager inference runs it channels-last: ~20% faster

    def set_epoch(self, epoch: int) -> None:
        """Freeze the encoder while ``epoch < freeze_epochs`` (called by the plugin at each training epoch start)."""
        frozen = epoch < self.freeze_epochs
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        self.frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True):
        """Set train/eval mode, keeping the encoder's BatchNorm statistics fixed while it is frozen."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self
