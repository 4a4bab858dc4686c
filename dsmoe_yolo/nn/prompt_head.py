"""Open-vocabulary detection head: the class prompts are the classifier.

``PromptDetect`` is Ultralytics' ``WorldDetect`` (stock box branch ``cv2``, DFL, anchors, decoding; class branch
``cv3`` ending in a ``c_text``-wide embedding per anchor, scored by ``BNContrastiveHead``/``ContrastiveHead``) fed by
the model's own ``ClassText`` row instead of CLIP features held by a ``WorldModel``:

    score[b, c, a] = exp(s_l) * <norm_l(e_l[b, :, a]), T[c] / |T[c]|> + b_l      per level l

with ``e_l = cv3_l(P_l)`` (B, c_text, H_l, W_l), ``T`` the refined class text (nc, c_text) that the DS-MoE stages
(hyperbolic alignment, space broadcasting, the gate) also read, and ``norm_l`` BatchNorm (``with_bn``, YOLO-World v2's
choice) or L2 normalisation. No weight of the head depends on the class count: the number and identity of the classes
come from the prompts bound to ``ClassText`` at run time (``set_classes``), and a checkpoint's head transfers whole to a
dataset with other classes. Not in the paper (its head is a closed-set YOLOv8 ``Detect``): a project extension.
"""

from __future__ import annotations

from ultralytics.nn.modules.head import WorldDetect

from dsmoe_yolo.nn.base import YAMLLayer, is_tracing

__all__ = ("PromptDetect",)


class PromptDetect(WorldDetect, YAMLLayer):
    """Detect head whose class scores are similarities of per-anchor embeddings with the class text.

    YAML: ``[[P3, P4, P5, t], 1, PromptDetect, [nc]]`` with ``t`` the ``ClassText`` row; its width is the embedding
    width of the head.

    Args:
        c1 (list[int]): Channels of the detection levels, then of the class text (its width ``c_text``).
        nc (int): Number of classes at build time (the prompts decide it afterwards).
        with_bn (bool): BatchNorm contrastive head (True) or L2-normalised cosine (False).
        reg_max (int): DFL bins, as ``Detect``.

    Examples:
        >>> head = PromptDetect([32, 64, 128, 16], nc=3)
        >>> x = [torch.randn(1, 32, 8, 8), torch.randn(1, 64, 4, 4), torch.randn(1, 128, 2, 2), torch.randn(5, 16)]
        >>> head.train()(x)["scores"].shape  # five prompts: five classes
        torch.Size([1, 5, 84])
    """

    multi_input = True
    text_inputs = (3,)

    def __init__(self, c1: list[int], nc: int = 80, with_bn: bool = True, reg_max: int = 16):
        if len(c1) < 2:
            raise ValueError(f"PromptDetect takes the detection levels then the ClassText row, got {len(c1)} input(s)")
        *ch, c_text = c1
        # built for one class so that no layer width depends on the class count (stock sizes cv3 by nc up to 100)
        super().__init__(nc=1, embed=c_text, with_bn=with_bn, reg_max=reg_max, ch=tuple(ch))
        self.nc, self.no = nc, nc + reg_max * 4

    def forward(self, x: list):
        """Levels ``x[:-1]`` (B, C_l, H_l, W_l) and class text ``x[-1]`` (nc, c_text) -> ``WorldDetect`` outputs."""
        *feats, text = x
        if text.ndim != 2:
            raise ValueError(f"PromptDetect expects class text of shape (nc, dim), got {tuple(text.shape)}")
        if not is_tracing():  # exported graphs keep the prompts they were traced with
            self.nc = int(text.shape[0])
        return super().forward(feats, text[None].expand(feats[0].shape[0], -1, -1))
