"""Seed 2 (PyTorch -> Keras): the Conv-TasNet style encoder from the second seed question.

mixture ``(B=4, K=10, L=128)`` -> divide by its L2 norm over L (+1e-8) -> view
``(B*K, L, 1)`` -> ``nn.Conv1d(L, N=64, kernel_size=1, bias=False)`` -> ReLU ->
view ``(B, K, N)``.  Note the Conv1d sees L as its *channels* and a length of 1.
"""

import torch
import torch.nn.functional as F
from torch import nn

INPUTS = {"mixture": (4, 10, 128)}


class Encoder(nn.Module):
    """Normalize each frame, then a 1x1 gated conv.

    Shapes: mixture (B, K, L) -> (B, K, N).
    """

    def __init__(self, L: int = 128, N: int = 64, eps: float = 1e-8):
        super().__init__()
        self.L, self.N, self.eps = L, N, eps
        self.conv1d_U = nn.Conv1d(L, N, kernel_size=1, stride=1, bias=False)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        B, K, L = mixture.shape
        norm_coef = torch.norm(mixture, p=2, dim=2, keepdim=True)  # B x K x 1
        norm_mixture = mixture / (norm_coef + self.eps)  # B x K x L
        norm_mixture = norm_mixture.view(-1, L).unsqueeze(2)  # B*K x L x 1
        conv_out = F.relu(self.conv1d_U(norm_mixture))  # B*K x N x 1
        return conv_out.view(B, K, self.N)  # B x K x N


def build():
    torch.manual_seed(0)
    return Encoder().eval()
