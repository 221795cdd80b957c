"""Small pre-LN transformers: a ViT for images and a character-level language model.

Block (pre-LN, as in GPT-2 and ViT): x = x + Attention(LN1(x)); x = x + MLP(LN2(x)), with
Attention = one fused q/k/v Linear, H heads of softmax(q kᵀ/√d) v
(``F.scaled_dot_product_attention``, causal for the language model), an output Linear; MLP =
Linear(dim, 4 dim) -> GELU -> Linear(4 dim, dim). ``qk_norm`` normalises q and k per head
(LayerNorm over the head dim) before the scores.

* :class:`ViT`: 4x4 patches embedded by a Conv2d, a class token and learned positions, the
  blocks, a final LayerNorm and a Linear head on the class token.
* :class:`CharTransformer`: token and position Embeddings, causal blocks, a final LayerNorm and
  a Linear head over the vocabulary at every position (logits [batch, T, vocab]).

Their symmetries (found by discovery): the residual stream's common scale (every writer:
embeddings, class token, positions, every attention and MLP output projection, absorbed by
every LayerNorm that reads the stream); each LayerNorm's affine channel with the column of the
Linear it feeds (rescale); the value channels with the output projection's columns (rescale);
the key bias (translation: identically zero gradient); the head's columns and bias under
softmax cross-entropy (translation). GELU leaves the MLP's hidden units without rescale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection."""

    def __init__(self, dim: int, heads: int, causal: bool, qk_norm: bool = False) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // heads
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q kᵀ/√d) v per head, projected: [batch, T, dim] -> [batch, T, dim]."""
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fc2(gelu(fc1(x)))."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + Attention(LN1(x)), then + MLP(LN2(x))."""

    def __init__(self, dim: int, heads: int, causal: bool, qk_norm: bool = False) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, causal, qk_norm)
        self.ln2, self.mlp = nn.LayerNorm(dim), MLP(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One pre-LN block."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def _init(module: nn.Module) -> None:
    """Linear weights and biases N(0, 0.02) (GPT-2's weights; biases not zero, so that a key
    bias, whose gradient is identically zero, carries a measurable value that weight decay
    moves); Embeddings keep torch's N(0, 1), so that the residual stream starts at unit scale
    and LayerNorm's ε (1e-5) breaks its scale invariance by ~1e-5 only (GPT-2's N(0, 0.02)
    embeddings give a stream variance of ~1e-3 and a 1 % violation)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.normal_(m.bias, 0.0, 0.02)


class ViT(nn.Module):
    """Vision transformer for [batch, 3, size, size] images (module docstring)."""

    def __init__(self, num_classes: int, image_size: int, dim: int = 64, depth: int = 2,
                 heads: int = 4, patch: int = 4, qk_norm: bool = False) -> None:  # fmt: skip
        super().__init__()
        tokens = (image_size // patch) ** 2
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, False, qk_norm) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [batch, num_classes]."""
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class CharTransformer(nn.Module):
    """Causal character-level language model (module docstring)."""

    def __init__(self, vocab: int, context: int, dim: int = 64, depth: int = 2, heads: int = 4,
                 qk_norm: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads, True, qk_norm) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        _init(self)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits [batch, T, vocab] of token ids [batch, T]."""
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(positions)
        return self.head(self.norm(self.blocks(x)))
