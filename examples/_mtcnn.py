"""MTCNN face detection (P-Net, R-Net, O-Net) as one torch module, exported to one ONNX graph.

The three networks are facenet-pytorch's (``facenet_pytorch/models/mtcnn.py``, MIT), copied
without its torchvision import; their REAL weights come from the facenet-pytorch wheel. The
cascade around them follows facenet-pytorch's ``detect_face`` for an image of a fixed size
(the pipeline resizes every image to it), with what an ONNX graph can do without loops:

1. P-Net over an image pyramid (faces of 20 pixels and up, factor 0.709); each resize is an
   exact area resize written as two matrix products (constants for the fixed size);
2. the ``candidates`` windows with the highest P-Net scores (facenet-pytorch thresholds at 0.6
   and suppresses overlaps instead), regressed and squared;
3. R-Net on 24x24 crops of each, regressed and squared again; O-Net on 48x48 crops;
4. the candidate with the best O-Net score among those that passed P-Net (0.6) and R-Net (0.7),
   as facenet-pytorch's thresholds, regressed a last time.

Outputs: ``box`` [1, 4], the face as (x1, y1, x2, y2) in fractions of the image's width and
height, and ``score`` [1], its O-Net face probability (0 when no candidate passed: no face;
MTCNN calls a face above 0.7). One face per image, the most confident: no non-maximum
suppression, so a picture of several people reports one of them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MtcnnDetector", "load_detector"]

STRIDE, CELL = 2, 12  # P-Net's windows: 12 pixels every 2, at each scale
THRESHOLDS = (0.6, 0.7)  # P-Net and R-Net scores a candidate must reach (facenet-pytorch's)


class PNet(nn.Module):
    """MTCNN's proposal network (fully convolutional)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """MTCNN's refinement network (24x24 crops)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).contiguous().view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """MTCNN's output network (48x48 crops): box regression, landmarks, face probability."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).contiguous().view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


def area_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[out, in]: each output pixel the mean of the input pixels it covers (torch's ``area``)."""
    a = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        lo, hi = (i * size_in) // size_out, -(-(i + 1) * size_in // size_out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def pyramid(size: int, min_face: int = 20, factor: float = 0.709) -> list[float]:
    """facenet-pytorch's scales: the smallest face maps to 12 pixels, down to a 12-pixel image."""
    scales, scale = [], 12.0 / min_face
    side = size * scale
    while side >= 12:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box made square around its centre (facenet-pytorch's ``rerec``)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1, y1 = boxes[:, 0] + (w - side) * 0.5, boxes[:, 1] + (h - side) * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], 1)


def _regressed(boxes: torch.Tensor, offsets: torch.Tensor, plus: float) -> torch.Tensor:
    """Boxes moved by the network's offsets, in units of the box's width and height."""
    wh = (boxes[:, 2:4] - boxes[:, 0:2] + plus).repeat(1, 2)
    return boxes + offsets * wh


class MtcnnDetector(nn.Module):
    """The cascade for a ``size`` x ``size`` image normalised as ``(pixel - 127.5) / 128``."""

    def __init__(self, size: int, candidates: int = 32) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.size, self.candidates = size, candidates
        self.scales = pyramid(size)
        windows = []
        for i, scale in enumerate(self.scales):
            side = int(size * scale + 1)
            self.register_buffer(f"area{i}", torch.from_numpy(area_matrix(size, side)))
            cells = math.ceil((side - 2) / 2) - 4  # P-Net's output side for this input side
            ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
            corners = [STRIDE * xs + 1, STRIDE * ys + 1, STRIDE * xs + CELL, STRIDE * ys + CELL]
            windows.append(np.stack([np.floor(c / scale) for c in corners], -1).reshape(-1, 4))
        self.register_buffer("windows", torch.from_numpy(np.concatenate(windows).astype("f4")))

    def _crops(self, image: torch.Tensor, boxes: torch.Tensor, side: int) -> torch.Tensor:
        """[k, 3, side, side]: each box resampled bilinearly at twice ``side``, then averaged
        2x2 (close to an area resize); outside the image is 0 (mid-grey once normalised)."""
        k, n = boxes.shape[0], 2 * side
        t = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        xs = boxes[:, 0:1] + t[None, :] * (boxes[:, 2:3] - boxes[:, 0:1])
        ys = boxes[:, 1:2] + t[None, :] * (boxes[:, 3:4] - boxes[:, 1:2])
        gx = (2 * xs / self.size - 1)[:, None, :].expand(k, n, n)
        gy = (2 * ys / self.size - 1)[:, :, None].expand(k, n, n)
        grid = torch.stack([gx, gy], -1).reshape(1, k * n, n, 2)  # the crops stacked in height
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return F.avg_pool2d(out.reshape(3, k, n, n).permute(1, 0, 2, 3), 2)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, offsets = [], []
        for i in range(len(self.scales)):
            area = getattr(self, f"area{i}")
            offset, prob = self.pnet(torch.matmul(torch.matmul(area, image), area.t()))
            probs.append(prob[0, 1].reshape(-1))
            offsets.append(offset[0].reshape(4, -1).t())
        p1, index = torch.topk(torch.cat(probs), self.candidates)
        boxes = _square(_regressed(self.windows[index], torch.cat(offsets)[index], 0.0))
        offset, p2 = self.rnet(self._crops(image, boxes, 24))
        boxes = _square(_regressed(boxes, offset, 1.0))
        offset, _, p3 = self.onet(self._crops(image, boxes, 48))
        passed = (p1 >= THRESHOLDS[0]) & (p2[:, 1] >= THRESHOLDS[1])
        score = p3[:, 1] * passed.to(p3.dtype)
        best = torch.argmax(score)
        box = _regressed(boxes, offset, 1.0)[best] / self.size
        return box.clamp(0.0, 1.0).reshape(1, 4), score[best].reshape(1)


def load_detector(size: int, weights: dict[str, Path]) -> MtcnnDetector:
    """The detector with the wheel's weights (``weights``: ``pnet``, ``rnet``, ``onet`` files);
    checks that the P-Net windows it precomputed match P-Net's real output sizes."""
    detector = MtcnnDetector(size).eval()
    for name in ("pnet", "rnet", "onet"):
        state = torch.load(weights[name], weights_only=True)
        getattr(detector, name).load_state_dict(state)
    with torch.no_grad():
        cells = sum(
            detector.pnet(torch.zeros(1, 3, int(size * s + 1), int(size * s + 1)))[1][0, 1].numel()
            for s in detector.scales
        )
    if cells != detector.windows.shape[0]:
        raise AssertionError(f"{cells} P-Net cells, {detector.windows.shape[0]} windows")
    return detector
